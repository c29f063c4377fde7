"""The per-corpus manifest (jsonl: id, audio, text, speaker, duration) and rejected.tsv."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable, Iterator
from pathlib import Path

from asrtune.errors import UserError

REJECTED_HEADER = ["id", "origin", "reason", "detail"]


def write_jsonl(path: Path, records: Iterable[dict]) -> int:
    """Write one compact JSON object per line (UTF-8, no ASCII escapes); returns the count."""
    path.parent.mkdir(parents=True, exist_ok=True)
    n = 0
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        for record in records:
            f.write(json.dumps(record, ensure_ascii=False, separators=(",", ":")) + "\n")
            n += 1
    return n


def read_jsonl(path: Path, stage_hint: str = "") -> Iterator[dict]:
    """Stream records; a missing file names the stage that makes it."""
    if not path.is_file():
        hint = f" (run `dvc repro {stage_hint}` first)" if stage_hint else ""
        raise UserError(f"{path}: not found{hint}")
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            try:
                yield json.loads(line)
            except json.JSONDecodeError as e:
                raise UserError(f"{path}:{number}: not valid JSON ({e.msg})") from None


def write_rejected(path: Path, rows: Iterable) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f, delimiter="\t", lineterminator="\n")
        writer.writerow(REJECTED_HEADER)
        for r in rows:
            writer.writerow([r.id, r.origin, r.reason, r.detail.replace("\t", " ").replace("\n", " ")])
