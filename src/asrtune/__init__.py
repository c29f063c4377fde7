"""asrtune: reproducible domain adaptation of speech recognition models."""
