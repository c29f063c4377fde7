"""Error rates the compute-wer way: Chinese per character, English per word, on normalized text.
Reports in the Kaldi/WeNet style, term recall for a domain term list, bootstrap intervals, the
error rate per language, and degeneration: looping outputs, and what a test set without speech got."""

from __future__ import annotations

import re
import zlib
from dataclasses import dataclass, field

import jiwer
import numpy as np

from asrtune.evaluation.normalization import _CJK, tokens
from asrtune.evaluation.terms import occurrences

GAP = "***"  # the other side of an insertion or deletion in an alignment (never a token: tokens are one character or a word)
_CHINESE = re.compile(rf"[{_CJK}]")
_LATIN = re.compile(r"[A-Za-z\u00C0-\u024F]")
LANGUAGES = ("zh", "en", "other")


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
    ref: list[str] = field(default_factory=list)  # aligned, with GAP (***) for gaps
    hyp: list[str] = field(default_factory=list)
    missing: bool = False


def align(key: str, ref_text: str, hyp_text: str, missing: bool = False) -> Utterance:
    ref, hyp = tokens(ref_text), tokens(hyp_text)
    if not ref or not hyp:  # jiwer needs both sides; one empty side is all deletions or all insertions
        c = Counts(len(ref), 0, len(ref), len(hyp), 1, int(bool(ref or hyp)))
        return Utterance(key, c, ref + [GAP] * len(hyp), [GAP] * len(ref) + hyp, missing)
    out = jiwer.process_words(" ".join(ref), " ".join(hyp))
    c = Counts(len(ref), out.substitutions, out.deletions, out.insertions, 1, 0)
    c.sentence_errors = int(c.errors > 0)
    aligned_ref, aligned_hyp = [], []
    for chunk in out.alignments[0]:
        r, h = ref[chunk.ref_start_idx : chunk.ref_end_idx], hyp[chunk.hyp_start_idx : chunk.hyp_end_idx]
        if chunk.type == "insert":
            r = [GAP] * len(h)
        elif chunk.type == "delete":
            h = [GAP] * len(r)
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


def report(utterances: list[Utterance], total: Counts, title: str, extra: list[str] = ()) -> str:
    """Kaldi's compute-wer layout; `extra` lines (intervals, languages) follow the totals."""
    missing = sum(u.missing for u in utterances)
    lines = [title, wer_line(total),
             f"%SER {100 * total.sentence_errors / max(total.sentences, 1):.2f} [ {total.sentence_errors} / {total.sentences} ]",
             f"Scored {total.sentences} sentences, {missing} not present in hyp (scored as deletions).", *extra, ""]
    for u in utterances:
        ref, hyp = _pad(u.ref, u.hyp)
        lines += [f"{u.key}{'  (missing from hyp)' if u.missing else ''}", f"REF: {ref}", f"HYP: {hyp}", wer_line(u.counts), ""]
    return "\n".join(lines)


def count_occurrences(seq: list[str], term: list[str]) -> int:
    n = len(term)
    return sum(1 for i in range(len(seq) - n + 1) if seq[i : i + n] == term) if n else 0


def term_tokens(terms: list[str]) -> list[list[str]]:
    """The terms as token lists, each once (CT and ct are one term once normalized), none empty."""
    return [list(t) for t in dict.fromkeys(tuple(tokens(t)) for t in terms) if t]


def _per_term(occ: list[tuple[int, int, int]], n: int) -> list[int]:
    out = [0] * n
    for k, _, _ in occ:
        out[k] += 1
    return out


def term_counts(pairs: list[tuple[str, str]], terms: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Per utterance: (term occurrences found in the hyp, occurrences in the ref), clipped: a term
    said twice and recognized once counts once. A reference occurrence inside a longer term's (二聚体 in
    D二聚体) is not one of its own; in the hypothesis any occurrence finds the term."""
    tt = term_tokens(terms)
    found, total = [], []
    for ref, hyp in pairs:
        in_ref = _per_term(occurrences(tokens(ref), tt, maximal=True), len(tt))
        in_hyp = _per_term(occurrences(tokens(hyp), tt), len(tt))
        total.append(sum(in_ref))
        found.append(sum(min(r, h) for r, h in zip(in_ref, in_hyp)))
    return np.array(found, dtype=np.int64), np.array(total, dtype=np.int64)


def term_recall(pairs: list[tuple[str, str]], terms: list[str]) -> tuple[int, int]:
    """(term occurrences found in hyps, occurrences in refs) over the whole test set."""
    found, total = term_counts(pairs, terms)
    return int(found.sum()), int(total.sum())


def false_alarms(pairs: list[tuple[str, str]], terms: list[str]) -> np.ndarray:
    """Per utterance: the term occurrences of the hyp that the ref does not have (per term, hyp's occurrences
    beyond the ref's), counted as term_counts counts: the hyp's D二聚体 where the ref says 二聚体 is one
    false alarm; the hyp's 二聚体 where the ref says D二聚体 is a miss (recall), not a false alarm."""
    tt = term_tokens(terms)
    out = []
    for ref, hyp in pairs:
        in_ref = _per_term(occurrences(tokens(ref), tt), len(tt))
        in_hyp = _per_term(occurrences(tokens(hyp), tt, maximal=True), len(tt))
        out.append(sum(max(0, h - r) for r, h in zip(in_ref, in_hyp)))
    return np.array(out, dtype=np.int64)


def term_mask(ref: list[str], terms: list[list[str]]) -> list[int]:
    """Per reference token, the span of term occurrences it lies in (overlapping occurrences joined into one
    span, numbered from 0), -1 outside every term."""
    inside = [-1] * len(ref)
    for _, start, end in sorted(occurrences(ref, terms), key=lambda o: o[1]):
        span = inside[start] if inside[start] != -1 else max(inside) + 1  # an overlap joins the span it starts in
        inside[start:end] = [span] * (end - start)
    return inside


def biased(u: Utterance, terms: list[list[str]]) -> tuple[Counts, Counts]:
    """(B, U): the utterance's counts inside term spans and outside them, on the CER's alignment. A substitution
    or deletion counts where its reference token lies; an insertion counts to B when the reference tokens on
    both sides of it lie in the same term span (阿莫西*林 -> 阿莫西X林), else to U (one at a term's edge too)."""
    ref = [t for t in u.ref if t != GAP]
    span = term_mask(ref, terms)
    b, rest = Counts(), Counts()
    i = 0  # the next reference token
    for r, h in zip(u.ref, u.hyp):
        if r == GAP:
            (b if 0 < i < len(ref) and span[i - 1] == span[i] != -1 else rest).ins += 1
            continue
        c = b if span[i] != -1 else rest
        c.n += 1
        c.dele += h == GAP
        c.sub += h not in (GAP, r)
        i += 1
    return b, rest


def language(token: str) -> str:
    """zh for a Chinese character, en for a word with a Latin letter, other for the rest (numbers in
    digits, which numbers_to_arabic makes of Chinese numerals too, and symbols): a Chinese sentence
    with a number is not mixed speech."""
    return "zh" if _CHINESE.match(token) else "en" if _LATIN.search(token) else "other"


def by_language(u: Utterance) -> dict[str, Counts]:
    """The utterance's counts per language. Each aligned pair counts for the language of its reference
    token (a substitution or deletion); an insertion, which has none, for its hypothesis token's."""
    out = {lang: Counts() for lang in LANGUAGES}
    for r, h in zip(u.ref, u.hyp):
        c = out[language(h if r == GAP else r)]
        if r == GAP:
            c.ins += 1
            continue
        c.n += 1
        if h == GAP:
            c.dele += 1
        elif h != r:
            c.sub += 1
    return out


def resample_seed(seed: int, test_set: str) -> list[int]:
    """Each test set draws its own resamples (from score.seed and its name): adding or reordering test
    sets never changes another one's intervals."""
    return [seed, zlib.crc32(test_set.encode("utf-8"))]


def bootstrap_rates(errors: np.ndarray, ref_tokens: np.ndarray, resamples: int, seed: int | list[int]) -> np.ndarray:
    """Error rates of `resamples` bootstrap resamples of the utterances (drawn with replacement), for
    every row (model) of `errors` on the SAME resamples, so two rows compare paired.

    errors: models x utterances; ref_tokens: utterances. A resample's rate is its errors over its
    reference tokens, pooled as the CER itself is, not a mean of per-utterance rates; NaN where the
    resample holds no reference token (see resample_rates)."""
    errors = np.atleast_2d(np.asarray(errors, dtype=np.int64))
    ref_tokens = np.asarray(ref_tokens, dtype=np.int64)
    n = ref_tokens.shape[0]
    rng = np.random.default_rng(seed)
    rows = max(1, 2_000_000 // max(n, 1))  # resamples per chunk: index memory stays ~16 MB on large test sets
    out = []
    for start in range(0, resamples, rows):
        idx = rng.integers(0, n, size=(min(rows, resamples - start), n))
        out.append(resample_rates(errors, ref_tokens, idx))
    return np.concatenate(out, axis=1)


def resample_rates(errors: np.ndarray, ref_tokens: np.ndarray, indices: np.ndarray) -> np.ndarray:
    """Error rates of the resamples given as rows of utterance indices (models x resamples). A resample
    with nothing to count (no reference token, no term, no timed boundary) has no rate: NaN, never 0,
    which would read as a perfect score (recall 1 - 0, an MAE of 0 ms) and widen the interval with it.
    The denominator is shared by every row, so paired differences are NaN on the same resamples."""
    errors = np.atleast_2d(np.asarray(errors, dtype=np.int64))
    e = errors[:, indices].sum(axis=2)
    n = np.asarray(ref_tokens, dtype=np.int64)[indices].sum(axis=1)
    return np.where(n > 0, e / np.maximum(n, 1), np.nan)


def interval95(values: np.ndarray, digits: int = 4) -> tuple[float, float] | None:
    """The percentile 95% interval (2.5th and 97.5th percentiles, numpy's linear interpolation) of the
    resamples that have a value, rounded as the metrics are; None when none has one."""
    values = np.asarray(values, dtype=np.float64)
    values = values[~np.isnan(values)]
    if not values.size:
        return None
    lo, hi = np.percentile(values, [2.5, 97.5])
    return round(float(lo), digits), round(float(hi), digits)


def significant(lo: float, hi: float) -> bool:
    """A change whose interval excludes zero; one that touches or crosses zero is not significant."""
    return lo > 0 or hi < 0


def boundary_errors(ref_times: list, hyp_times: list) -> list[int]:
    """|hyp - ref| in ms at the start and at the end of each unit both sides share: [unit, start, end] lists,
    matched in order (difflib's matching blocks over the two unit sequences; a unit the recognizer got
    wrong has no counterpart and is not timed)."""
    from difflib import SequenceMatcher

    a, b = [u for u, _, _ in ref_times], [u for u, _, _ in hyp_times]
    out = []
    for block in SequenceMatcher(None, a, b, autojunk=False).get_matching_blocks():
        for k in range(block.size):
            r, h = ref_times[block.a + k], hyp_times[block.b + k]
            out += [round(abs(h[1] - r[1]) * 1000), round(abs(h[2] - r[2]) * 1000)]
    return out


# Degeneration: a loop is a run of 1..LOOP_MAX_N tokens repeated back to back at least LOOP_MIN_REPEATS
# times over at least LOOP_MIN_SPAN tokens. Counted on the tokens the CER counts (a Chinese character, an
# English word), so it works on Chinese, where gzip's compression ratio (Whisper's test) is unreliable on
# short texts. The span floor keeps speech out: 谢谢谢谢 or "no no no no" repeat one token 4 times, 8 do not.
LOOP_MAX_N, LOOP_MIN_REPEATS, LOOP_MIN_SPAN = 4, 4, 8


def loops(toks: list[str]) -> bool:
    """Whether the tokens hold a loop (好的好的好的好的, ct检查ct检查ct检查ct检查); see LOOP_MIN_SPAN."""
    for n in range(1, LOOP_MAX_N + 1):
        for i in range(len(toks) - n * LOOP_MIN_REPEATS + 1):
            k = 1
            while toks[i + k * n : i + (k + 1) * n] == toks[i : i + n]:
                k += 1
            if k >= LOOP_MIN_REPEATS and k * n >= LOOP_MIN_SPAN:
                return True
    return False


def nonspeech_report(keys: list[str], hyps: list[str], title: str) -> str:
    """A test set without words (every reference empty): which clips got output, and what. No %WER: with no
    reference token it would be 100% for one inserted token as for a hundred."""
    said = [(k, h) for k, h in zip(keys, hyps) if tokens(h)]
    lines = [title, f"%HALLUCINATION {100 * len(said) / max(len(keys), 1):.2f} [ {len(said)} / {len(keys)} clips with output ]", ""]
    return "\n".join(lines + [f"{k}\nHYP: {h}\n" for k, h in said])
