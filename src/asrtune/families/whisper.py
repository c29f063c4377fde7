"""The `whisper` family: any Hugging Face Whisper checkpoint. Components: encoder, and the text
decoder, which the `llm` freeze flag names. Whisper has no adaptor."""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import torch

from asrtune.errors import UserError

NAME = "whisper"
HAS_ADAPTOR = False


def load_plain(path: Path):
    from transformers import WhisperForConditionalGeneration

    return WhisperForConditionalGeneration.from_pretrained(path, local_files_only=True, dtype=torch.float32)


def load_processor(path: Path):
    from transformers import WhisperProcessor

    return WhisperProcessor.from_pretrained(path, local_files_only=True)


def encoder(model):
    return model.get_encoder()


def freeze(model, freeze_encoder: bool, freeze_llm: bool) -> None:
    """A frozen component gets no gradients; the output projection is tied to the decoder embeddings."""
    for p in model.model.encoder.parameters():
        p.requires_grad = not freeze_encoder
    for p in model.model.decoder.parameters():
        p.requires_grad = not freeze_llm


def lora_config(r: int, alpha: float, dropout: float, target_modules: list[str], train_encoder: bool):
    """LoRA on decoder layers only: each target is a module-name suffix inside a decoder layer
    (`q_proj` hits self- and cross-attention, `self_attn.q_proj` only the first). An unfrozen
    encoder trains fully alongside."""
    from peft import LoraConfig

    names = "|".join(re.escape(t) for t in target_modules)
    return LoraConfig(
        r=r, lora_alpha=alpha, lora_dropout=dropout,
        target_modules=rf"^model\.decoder\.layers\.\d+\.(?:.*\.)?(?:{names})$",
        modules_to_save=["encoder"] if train_encoder else None,
    )


def prompt_ids(tokenizer, language: str, task: str) -> list[int]:
    tokens = ["<|startoftranscript|>", f"<|{language}|>", f"<|{task}|>", "<|notimestamps|>"]
    ids = tokenizer.convert_tokens_to_ids(tokens)
    if tokenizer.unk_token_id in ids:  # an unknown token maps to <|endoftext|>
        raise UserError(f"model.language/model.task: the tokenizer has no {tokens[1]} or {tokens[2]} token")
    return ids


def labels(tokenizer, text: str, prompt: list[int]) -> list[int]:
    """Decoder targets: the prompt after <|startoftranscript|> (masked: it is given, not learned),
    the transcript, then <|endoftext|>. The model shifts them right behind the start token."""
    body = tokenizer(text, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    return [-100] * (len(prompt) - 1) + body


def features(processor, audio: list[np.ndarray]) -> torch.Tensor:
    return processor.feature_extractor(audio, sampling_rate=16000, return_tensors="pt").input_features


def encode(model, input_features: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model.get_encoder()(input_features=input_features).last_hidden_state


def transcribe(model, processor, audio: list[np.ndarray], durations: list[float], language: str, task: str,
               num_beams: int, max_tokens_per_second: float, no_repeat_ngram_size: int) -> list[str]:
    device = next(model.parameters()).device
    feats = features(processor, audio).to(device, dtype=next(model.parameters()).dtype)
    # repetition guard: greedy decoding loops on some clips; cap new tokens by the audio's length
    max_new = min(model.config.max_target_positions - 8, math.ceil(max(durations) * max_tokens_per_second) + 8)
    with torch.no_grad():
        out = model.generate(feats, language=language, task=task, num_beams=num_beams, max_new_tokens=max_new,
                             no_repeat_ngram_size=no_repeat_ngram_size or None)
    return processor.batch_decode(out, skip_special_tokens=True)
