"""Model families behind one interface (whisper, audiollm, aligner): registry picks one, shared holds what they share."""
