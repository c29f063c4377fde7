"""Term list files: one term per line, blank lines and # comments skipped. Score reads them for term
recall (data.corpora.<c>.terms), decode for the audio LLMs' hotwords (decode.hotwords). And where terms occur in a
transcript's tokens (score's term measures, decode.hotwords_bonus' gained terms)."""

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


def occurrences(seq: list[str], terms: list[list[str]], maximal: bool = False) -> list[tuple[int, int, int]]:
    """(term index, start, end) of every occurrence of a term in the tokens. maximal: without those lying inside
    another term's occurrence (二聚体 inside D二聚体 is one term said, not two)."""
    found = [(k, i, i + len(t)) for k, t in enumerate(terms) for i in range(len(seq) - len(t) + 1) if seq[i : i + len(t)] == t]
    if maximal:
        found = [o for o in found if not any(p[1] <= o[1] and o[2] <= p[2] and p[2] - p[1] > o[2] - o[1] for p in found)]
    return found
