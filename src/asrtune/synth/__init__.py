"""The demo corpora, made offline: sentences spoken by synthetic voices (kokoro, espeak), and non-speech clips."""
