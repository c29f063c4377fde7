"""Term list files: one term per line, blank lines and # comments skipped. Score reads them for term
recall (data.corpora.<c>.terms), decode for the audio LLMs' hotwords (decode.hotwords)."""

from __future__ import annotations

from pathlib import Path

from asrtune.errors import UserError


def read_terms(path: Path, key: str) -> list[str]:
    """The terms of `path`; `key` names the param that gave it, in the error when it is missing or empty."""
    if not path.is_file():
        raise UserError(f"{key}: {path}: not found (a text file, one term per line)")
    terms = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip() and not line.lstrip().startswith("#")]
    if not terms:
        raise UserError(f"{key}: {path}: holds no term (one term per line)")
    return terms
