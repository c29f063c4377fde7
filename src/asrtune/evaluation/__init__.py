"""Judging transcripts: normalization, error rates and their intervals, term lists, the hotword lists prompts carry."""
