"""Model families behind one interface: load (a base dir or a fine-tuned chain), name components,
freeze, add LoRA, make training inputs, encode, transcribe. `whisper` (encoder-decoder), `audiollm`
(transformers' speech LLMs: Fun-ASR-Nano, Qwen3-ASR) and `aligner` (Qwen3-ForcedAligner: a Qwen3-ASR
with a classification head over time bins). The family of a model directory is read from its config's
model_type and architectures: models/base decides, params do not repeat it."""

from __future__ import annotations

import json
from pathlib import Path

from asrtune.errors import UserError


NAMES = ("whisper", "audiollm", "aligner")


def get(name: str):
    if name == "whisper":
        from asrtune.families import whisper

        return whisper
    if name == "audiollm":
        from asrtune.families import audiollm

        return audiollm
    if name == "aligner":
        from asrtune.families import aligner

        return aligner
    raise UserError(f"unknown model family {name!r} (known: {', '.join(NAMES)})")


AUDIOLLM_TYPES = ("fun_asr_nano", "qwen3_asr")  # the audiollm family's architectures (its ARCHS)
# (model_type, architectures[0]) of the aligner family: Qwen3-ForcedAligner shares Qwen3-ASR's model_type and
# config class and differs by its architecture (a `score` head over time bins instead of `lm_head`)
ALIGNER_ARCHS = {("qwen3_asr", "Qwen3ASRForTokenClassification")}


def name_for(model_type: str | None, where: str, architectures: list[str] | None = None) -> str:
    """The family that runs a model of this config model_type and architectures; `where` names it in the error."""
    if model_type == "whisper":
        return "whisper"
    if (model_type, (architectures or [None])[0]) in ALIGNER_ARCHS:
        return "aligner"
    if model_type in AUDIOLLM_TYPES:
        return "audiollm"
    raise UserError(f"{where}: a {model_type or 'non-transformers'} model; asrtune fine-tunes whisper, "
                    f"{', '.join(AUDIOLLM_TYPES)}, Qwen3-ForcedAligner (and Fun-ASR's own layout: model.pt + config.yaml)")


def _config(model_dir: Path) -> dict:
    config = Path(model_dir) / "config.json"
    return json.loads(config.read_text()) if config.is_file() else {}


def model_type(model_dir: Path) -> str | None:
    return _config(model_dir).get("model_type")


def of(model_dir: Path) -> str:
    """The family of a plain model directory (e.g. models/base), from its config.json."""
    if not (Path(model_dir) / "config.json").is_file():
        raise UserError(f"{model_dir}: no config.json (run `dvc repro base` first)")
    config = _config(model_dir)
    return name_for(config.get("model_type"), str(model_dir), config.get("architectures"))
