"""Where each stage writes (relative to the repository root, where DVC runs the commands)."""

from __future__ import annotations

import os
from pathlib import Path

BASE_MODEL = Path("models/base")
MODEL_SOURCES = Path("models/sources")  # local checkpoints for model.base: base depends on the folder


def ingest_dir(corpus: str) -> Path:
    return Path("data/ingest") / corpus


def manifest(corpus: str) -> Path:
    return ingest_dir(corpus) / "manifest.jsonl"


def pseudo_labels(corpus: str) -> Path:
    return Path("data/pseudo") / f"{corpus}.jsonl"


def jsonl(corpus: str) -> Path:
    return Path("data/jsonl") / f"{corpus}.jsonl"


def split_dir(corpus: str) -> Path:
    return Path("data/split") / corpus


def mix_dir(stage: str) -> Path:
    return Path("data/mix") / stage


def cache_dir() -> Path:
    """Encoder outputs, checkpoints, downloads: re-creatable, never a DVC output. Outside the
    workspace by default (~/.cache/asrtune, or $XDG_CACHE_HOME/asrtune), so that `dvc exp run --temp`
    and `--queue`, which run in other directories, reuse it and resume; ASRTUNE_CACHE sets another
    place (a relative path is taken from the repository root)."""
    if "ASRTUNE_CACHE" in os.environ:
        return Path(os.environ["ASRTUNE_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "asrtune"


def finetune_dir(stage: str) -> Path:
    return Path("models/finetune") / stage


def train_plots_dir(stage: str) -> Path:
    return Path("plots/finetune") / stage


MERGED_MODEL = Path("models/merged")
EXPORT_DIR = Path("models/export")  # the merged model in other layouts (Fun-ASR's own)
DECODED_MODELS = ("base", "merged")  # what decode, normalize and score compare


def model_dir(name: str) -> Path:
    """Decode targets: `base` or `merged`."""
    return BASE_MODEL if name == "base" else MERGED_MODEL


def ct2_dir(name: str) -> Path:
    """decode.engine=ctranslate2: the CTranslate2 copy of `base` or `merged`."""
    return Path("models/ct2") / name


HOTWORDS = "+hotwords"  # <model>+hotwords: the model decoded with decode.hotwords' list, beside its plain decode


def _variant(model: str, corpus: str) -> tuple[str, str]:
    """(model directory name, file stem): base+hotwords -> (base, <corpus>.hotwords)."""
    name, listed, _ = model.partition(HOTWORDS)
    return name, corpus + (".hotwords" if listed else "")


def decode_file(model: str, corpus: str) -> Path:
    name, stem = _variant(model, corpus)
    return Path("data/decode") / name / f"{stem}.tsv"


def capped_file(model: str, corpus: str) -> Path:
    """Beside decode_file: the keys whose decoding stopped at the max-new-tokens guard, one a line."""
    name, stem = _variant(model, corpus)
    return Path("data/decode") / name / f"{stem}.capped.txt"


def normalized_file(model: str, corpus: str) -> Path:
    name, stem = _variant(model, corpus)
    return Path("data/normalized") / name / f"{stem}.jsonl"
