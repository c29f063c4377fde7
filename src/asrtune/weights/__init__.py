"""Model directories: Fun-ASR's and CTranslate2's layouts, a fine-tuned stage's chain of inits, the precision weights run in."""
