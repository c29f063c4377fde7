"""jsonl <corpus>: Fun-ASR-Nano ChatML records (with speech_length and text_length), sorted by key."""

from __future__ import annotations

from itertools import islice

from asrtune import chatml, params, paths
from asrtune.manifest import read_jsonl, write_jsonl

BATCH = 1024  # tokenize in batches: the fast tokenizer is much quicker per batch than per text


def records(corpus: str, tokenizer, cfg: params.Jsonl):
    manifest = read_jsonl(paths.manifest(corpus), stage_hint=f"ingest@{corpus}")
    while batch := list(islice(manifest, BATCH)):
        lengths = [len(ids) for ids in tokenizer([r["text"] for r in batch], add_special_tokens=False)["input_ids"]]
        for r, n in zip(batch, lengths):
            yield chatml.record(chatml.key_for(corpus, r["id"]), chatml.audio_path_for(r["audio"], cfg.audio_paths),
                                r["text"], r["duration"], n, cfg.system, cfg.prompt)


def run(corpus: str) -> None:
    """Write data/jsonl/<corpus>.jsonl from the corpus manifest."""
    from transformers import AutoTokenizer

    p = params.load()
    if not paths.BASE_MODEL.is_dir():
        from asrtune.errors import UserError

        raise UserError(f"{paths.BASE_MODEL}: not found (run `dvc repro base` first)")
    tokenizer = AutoTokenizer.from_pretrained(paths.BASE_MODEL)
    n = write_jsonl(paths.jsonl(corpus), records(corpus, tokenizer, p.jsonl))
    print(f"jsonl {corpus}: {n} records -> {paths.jsonl(corpus)}")
