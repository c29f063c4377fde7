"""Corpora in: format readers, ingest's checks and audio, manifests, ChatML records, reference timestamps, splits, mixing."""
