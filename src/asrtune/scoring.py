"""Error rates the compute-wer way: Chinese per character, English per word, on normalized text.
Reports in the Kaldi/WeNet style, term recall for a domain term list."""

from __future__ import annotations

from dataclasses import dataclass, field

import jiwer

from asrtune.normalization import tokens


@dataclass
class Counts:
    n: int = 0  # reference tokens
    sub: int = 0
    dele: int = 0
    ins: int = 0
    sentences: int = 0
    sentence_errors: int = 0

    @property
    def errors(self) -> int:
        return self.sub + self.dele + self.ins

    @property
    def rate(self) -> float:
        return self.errors / self.n if self.n else float(self.ins > 0)

    def add(self, other: "Counts") -> None:
        for f in ("n", "sub", "dele", "ins", "sentences", "sentence_errors"):
            setattr(self, f, getattr(self, f) + getattr(other, f))


@dataclass
class Utterance:
    key: str
    counts: Counts
    ref: list[str] = field(default_factory=list)  # aligned, with *** for gaps
    hyp: list[str] = field(default_factory=list)
    missing: bool = False


def align(key: str, ref_text: str, hyp_text: str, missing: bool = False) -> Utterance:
    ref, hyp = tokens(ref_text), tokens(hyp_text)
    if not ref or not hyp:  # jiwer needs both sides; one empty side is all deletions or all insertions
        c = Counts(len(ref), 0, len(ref), len(hyp), 1, int(bool(ref or hyp)))
        return Utterance(key, c, ref + ["***"] * len(hyp), ["***"] * len(ref) + hyp, missing)
    out = jiwer.process_words(" ".join(ref), " ".join(hyp))
    c = Counts(len(ref), out.substitutions, out.deletions, out.insertions, 1, 0)
    c.sentence_errors = int(c.errors > 0)
    aligned_ref, aligned_hyp = [], []
    for chunk in out.alignments[0]:
        r, h = ref[chunk.ref_start_idx : chunk.ref_end_idx], hyp[chunk.hyp_start_idx : chunk.hyp_end_idx]
        if chunk.type == "insert":
            r = ["***"] * len(h)
        elif chunk.type == "delete":
            h = ["***"] * len(r)
        aligned_ref += r
        aligned_hyp += h
    return Utterance(key, c, aligned_ref, aligned_hyp, missing)


def _pad(a: list[str], b: list[str]) -> tuple[str, str]:
    """Columns padded to the wider token (CJK characters are two cells wide)."""
    def width(s: str) -> int:
        return sum(2 if ord(ch) > 0x2E80 else 1 for ch in s)

    top, bottom = [], []
    for x, y in zip(a, b):
        w = max(width(x), width(y))
        top.append(x + " " * (w - width(x)))
        bottom.append(y + " " * (w - width(y)))
    return " ".join(top), " ".join(bottom)


def wer_line(c: Counts) -> str:
    return f"%WER {100 * c.rate:.2f} [ {c.errors} / {c.n}, {c.ins} ins, {c.dele} del, {c.sub} sub ]"


def report(utterances: list[Utterance], total: Counts, title: str) -> str:
    missing = sum(u.missing for u in utterances)
    lines = [title, wer_line(total),
             f"%SER {100 * total.sentence_errors / max(total.sentences, 1):.2f} [ {total.sentence_errors} / {total.sentences} ]",
             f"Scored {total.sentences} sentences, {missing} not present in hyp (scored as deletions).", ""]
    for u in utterances:
        ref, hyp = _pad(u.ref, u.hyp)
        lines += [f"{u.key}{'  (missing from hyp)' if u.missing else ''}", f"REF: {ref}", f"HYP: {hyp}", wer_line(u.counts), ""]
    return "\n".join(lines)


def count_occurrences(seq: list[str], term: list[str]) -> int:
    n = len(term)
    return sum(1 for i in range(len(seq) - n + 1) if seq[i : i + n] == term) if n else 0


def term_recall(pairs: list[tuple[str, str]], terms: list[str]) -> tuple[int, int]:
    """(term occurrences found in hyps, occurrences in refs), counted per utterance and clipped:
    a term said twice and recognized once counts once."""
    term_tokens = [tokens(t) for t in terms]
    found = total = 0
    for ref, hyp in pairs:
        r, h = tokens(ref), tokens(hyp)
        for t in term_tokens:
            in_ref = count_occurrences(r, t)
            total += in_ref
            found += min(in_ref, count_occurrences(h, t))
    return found, total
