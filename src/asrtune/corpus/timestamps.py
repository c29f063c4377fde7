"""Reference timestamps: one [start, end] pair in seconds per unit of a transcript, the units being those
Qwen3-ForcedAligner times (each Chinese character; each run of letters or digits; punctuation dropped),
from transformers' own splitter. ingest checks them; jsonl, split and mix carry them.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

TOLERANCE = 0.02  # s: an end may pass the audio's end by this much (rounding, a resampled length)


@dataclass(frozen=True)
class Speech:
    """A synthesizer's output: its samples and, where it can tell, when each unit of the text is spoken."""
    samples: np.ndarray
    units: list[tuple[str, float, float]] | None  # (unit, start s, end s) per aligner unit; None: not known


# CJK ideographs, each a unit of its own: the ranges of transformers' qwen3_asr `_is_cjk_char`
_CJK = ((0x4E00, 0x9FFF), (0x3400, 0x4DBF), (0x20000, 0x2A6DF), (0x2A700, 0x2B73F), (0x2B740, 0x2B81F),
        (0x2B820, 0x2CEAF), (0xF900, 0xFAFF), (0x2F800, 0x2FA1F))


def _cjk(char: str) -> bool:
    return any(lo <= ord(char) <= hi for lo, hi in _CJK)


def units(text: str) -> list[str]:
    """The aligner's units of `text`: transformers' `Qwen3ASRProcessor.split_words_for_alignment` for every
    language but Japanese and Korean (each CJK ideograph alone; runs of letters, digits and apostrophes
    between spaces; anything else dropped without a break), written out here because importing the
    processor's module costs 8 s of transformers in every stage that checks timestamps (ingest, normalize).
    tests/test_timestamps.py checks it against transformers' own on every demo sentence."""
    import unicodedata

    out: list[str] = []
    run: list[str] = []
    for char in text.strip():
        if _cjk(char) or char.isspace():
            if run:
                out.append("".join(run))
                run = []
            if not char.isspace():
                out.append(char)
        elif char == "'" or unicodedata.category(char)[0] in "LN":
            run.append(char)
    if run:
        out.append("".join(run))
    return out


def spans(text: str) -> list[tuple[str, int, int]]:
    """Each unit of `text` with the index of its first and its last character in `text`. The splitter only
    drops characters (punctuation, spaces), and not always between units: "CT，12" is one unit, CT12."""
    out, i = [], 0
    for unit in units(text):
        first = text.index(unit[0], i)
        for ch in unit:
            i = text.index(ch, i) + 1
        out.append((unit, first, i - 1))
    return out


def problem(pairs, text: str, duration: float) -> str | None:
    """Why `pairs` cannot be `text`'s timestamps in `duration` seconds of audio; None when they can."""
    if not isinstance(pairs, list) or not all(isinstance(p, (list, tuple)) and len(p) == 2 for p in pairs):
        return "timestamps must be a list of [start, end] pairs"
    try:
        flat = [float(x) for p in pairs for x in p]
    except (TypeError, ValueError):
        return "timestamps must be numbers (seconds)"
    want = units(text)
    if len(pairs) != len(want):
        return (f"{len(pairs)} [start, end] pairs for {len(want)} units of the transcript "
                f"(one per Chinese character or word, punctuation dropped: {' '.join(want[:12])}{' ...' if len(want) > 12 else ''})")
    for i in range(1, len(flat)):
        if flat[i] < flat[i - 1]:
            unit = want[i // 2]
            return f"not monotonic at unit {i // 2 + 1} ({unit}): {flat[i]:g} s after {flat[i - 1]:g} s"
    if flat and (flat[0] < 0 or flat[-1] > duration + TOLERANCE):
        return f"outside the audio: {flat[0]:g}-{flat[-1]:g} s in {duration:.3f} s"
    return None


def rounded(pairs) -> list[list[float]]:
    return [[round(float(s), 3), round(float(e), 3)] for s, e in pairs]


def read_ctm(path: Path) -> tuple[dict[str, list[list[float]]], dict[str, tuple[str, str]]]:
    """A CTM-style file: `utt start duration unit` or NIST's `utt channel start duration unit [confidence]`,
    an utterance's lines in time order. Returns (utt -> pairs, utt -> (file:line, why) for a line it cannot read)."""
    pairs: dict[str, list[list[float]]] = defaultdict(list)
    bad: dict[str, tuple[str, str]] = {}
    with open(path, encoding="utf-8", errors="replace") as f:
        for number, line in enumerate(f, start=1):
            fields = line.split()
            if not fields or fields[0].startswith(";;"):
                continue
            try:
                if len(fields) not in (4, 5, 6):
                    raise ValueError
                start, dur = (fields[1], fields[2]) if len(fields) == 4 else (fields[2], fields[3])
                pair = [round(float(start), 3), round(float(start) + float(dur), 3)]
                pairs[fields[0]].append(pair)
            except ValueError:
                bad.setdefault(fields[0], (f"{path}:{number}", "expected `utt start duration unit` or "
                                                                "`utt channel start duration unit [confidence]`"))
    return dict(pairs), bad


def unit_times(pieces: list[tuple[bytes, float, float]]) -> list[tuple[str, float, float]]:
    """(unit, start, end) for each unit of the text that `pieces` spell: one (bytes, start, end) per token, in
    order. With byte-level BPE a character may take several tokens (its span runs from the first one's start
    to the last one's end) and a token several characters (which share its span evenly)."""
    import codecs

    data = b"".join(b for b, _, _ in pieces)
    owner = [i for i, (b, _, _) in enumerate(pieces) for _ in b]
    decoder = codecs.getincrementaldecoder("utf-8")("replace")
    chars: list[tuple[str, int, int]] = []  # (character, its first byte's token, its last byte's token)
    first = 0
    for j in range(len(data)):
        out = decoder.decode(data[j:j + 1])
        chars += [(c, owner[first], owner[j]) for c in out]
        first = j + 1 if out else first
    chars += [(c, owner[first], owner[-1]) for c in decoder.decode(b"", final=True)] if first < len(data) else []
    sharing: dict[int, list[int]] = defaultdict(list)  # token -> the characters that lie wholly inside it (not spaces)
    for n, (c, a, b) in enumerate(chars):
        if a == b and not c.isspace():
            sharing[a].append(n)
    times = []  # (start, end) per character
    for n, (c, a, b) in enumerate(chars):
        if c.isspace():
            times.append((pieces[a][1], pieces[a][1]))  # never a unit's own
        elif a == b:
            r, k = sharing[a].index(n), len(sharing[a])
            s, e = pieces[a][1], pieces[a][2]
            times.append((s + (e - s) * r / k, s + (e - s) * (r + 1) / k))
        else:
            times.append((pieces[a][1], pieces[b][2]))
    text = "".join(c for c, _, _ in chars)
    return [(unit, round(times[first][0], 3), round(times[last][1], 3)) for unit, first, last in spans(text)]
