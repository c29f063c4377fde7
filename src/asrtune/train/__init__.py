"""What the finetune stage runs: the Hugging Face Trainer's pieces, cached encoder outputs, several devices, the cache."""
