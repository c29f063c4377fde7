"""Model families behind one interface: load (a base dir or a fine-tuned chain), name components,
freeze, add LoRA, make training examples, encode, transcribe, save a plain merged model."""

from __future__ import annotations

from asrtune.errors import UserError


def get(name: str):
    if name == "whisper":
        from asrtune.families import whisper

        return whisper
    raise UserError(f"model.family: unknown family {name!r} (allowed: whisper)")
