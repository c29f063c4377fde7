"""jsonl <corpus>: Fun-ASR-Nano ChatML records (with speech_length and text_length), sorted by key."""

from __future__ import annotations

from collections.abc import Callable
from itertools import islice
from pathlib import Path

from asrtune import params, paths
from asrtune.corpus import chatml
from asrtune.corpus.manifest import read_jsonl, write_jsonl
from asrtune.errors import UserError

BATCH = 1024  # tokenize in batches: the Rust tokenizer is much quicker per batch than per text


def token_counter(model_dir: Path) -> Callable[[list[str]], list[int]]:
    """Counts transcript tokens under the base model's tokenizer.json (no special tokens), with the
    Rust `tokenizers` library alone: no torch or transformers import (seconds per stage). That one
    file is jsonl's dependency in dvc.yaml; base writes it for every model (fast tokenizers)."""
    from tokenizers import Tokenizer

    if not (model_dir / "tokenizer.json").is_file():
        raise UserError(f"{model_dir / 'tokenizer.json'}: not found (a model without a fast tokenizer; run `dvc repro base`)")
    tok = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    return lambda texts: [len(e.ids) for e in tok.encode_batch(texts, add_special_tokens=False)]


def records(corpus: str, count_tokens, cfg: params.Jsonl, pseudo: dict[str, list]):
    """ChatML records of the manifest; an utterance without timestamps takes its pseudo-label, if any."""
    manifest = read_jsonl(paths.manifest(corpus), stage_hint=f"ingest@{corpus}")
    while batch := list(islice(manifest, BATCH)):
        for r, n in zip(batch, count_tokens([r["text"] for r in batch])):
            own = r.get("timestamps")
            yield chatml.record(chatml.key_for(corpus, r["id"]), chatml.audio_path_for(r["audio"], cfg.audio_paths),
                                r["text"], r["duration"], n, cfg.system, cfg.prompt, r.get("sha256"),
                                own if own is not None else pseudo.get(r["id"]), pseudo=own is None)


def run(corpus: str) -> None:
    """Write data/jsonl/<corpus>.jsonl from the corpus manifest."""
    p = params.load()
    if not paths.BASE_MODEL.is_dir():
        raise UserError(f"{paths.BASE_MODEL}: not found (run `dvc repro base` first)")
    pseudo = {}
    if p.align.pseudo_labels:  # off, the stage writes an empty file, and an old one must not count
        pseudo = {r["id"]: r["timestamps"] for r in read_jsonl(paths.pseudo_labels(corpus), stage_hint=f"pseudo@{corpus}")}
    n = write_jsonl(paths.jsonl(corpus), records(corpus, token_counter(paths.BASE_MODEL), p.jsonl, pseudo))
    note = f" ({len(pseudo)} with the base aligner's pseudo-labels)" if pseudo else ""
    print(f"jsonl {corpus}: {n} records{note} -> {paths.jsonl(corpus)}")
