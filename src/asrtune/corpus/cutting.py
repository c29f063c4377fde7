"""A long recording with a plain transcript (no times) cut into utterances: align, cut in silences, check.

1. A model's transcript of the recording, with a time per unit (`asrtune transcribe`'s segments), is aligned to the
   reference transcript unit by unit (Chinese characters, Latin words: asrtune.corpus.timestamps.units) by edit
   distance (rapidfuzz's Levenshtein opcodes), compared in NFKC lower case.
2. A cut may go between two neighbouring reference units where either matches the model's: at the middle of the longest
   silence (Silero VAD speech probability under 0.35 for at least 96 ms) between where the model heard the one end and
   the other start (each widened by SLACK: cross-attention times run early or late). Cuts go at every sentence end of the
   transcript (。！？!?；;.… and line breaks); a piece still longer than max_seconds is cut again at its longest silence.
3. Each piece's audio is trimmed to its speech (VAD, PAD kept), and its reference is checked against the model's units
   inside it: above max_cer it is rejected as `mismatch` (the usual cause: a transcript error, words never said or
   speech never written). `too_long`: no silence to cut a piece under max_seconds at; `no_speech`: VAD heard none.
   Every unit of the transcript lands in exactly one piece, kept or rejected.
"""

from __future__ import annotations

import bisect
import unicodedata
from dataclasses import dataclass

import numpy as np

from asrtune.corpus.subtitles import join
from asrtune.corpus.timestamps import spans

SAMPLE_RATE = 16000
FRAME = 512  # Silero VAD's frame: 32 ms
SILENT = 0.35  # speech probability under which a frame is silence (silero-vad's end-of-speech threshold)
MIN_SILENCE = 3  # frames (96 ms): a shorter dip is not a pause to cut at
SLACK = 0.3  # seconds either side of the model's unit times searched for the silence
PAD = 0.2  # seconds of silence kept around a piece's speech
SENTENCE_END = frozenset("。！？!?；;.．…\n")  # between two units: a decimal point lies inside one (3.5 is one unit)
CLOSING = frozenset("”’」』）)】》\"'")  # after a sentence end, still its sentence's
MAX_SECONDS = 30.0  # `asrtune cut`'s defaults: Whisper's window
MAX_CER = 0.5  # a piece the model heard this differently is rejected: above the demo base model's CER on its domain


@dataclass(frozen=True)
class Heard:
    """One unit as the model transcribed it, with its time in the recording (seconds)."""

    unit: str
    start: float
    end: float
    segment: tuple[float, float] | None = None  # untimed: the VAD segment it was heard in (its time spread over it)


@dataclass
class Cut:
    gap: int  # the cut lies between reference units gap and gap + 1
    time: float  # seconds
    silence: float  # seconds of the silence it sits in
    sentence: bool  # the transcript ends a sentence there


@dataclass
class Piece:
    first: int  # samples: audio[first:last]
    last: int
    units: tuple[int, int]  # reference units [a, b)
    text: str  # the transcript's own words for it, punctuation kept, on one line
    line: int  # transcript line where it starts
    cer: float | None  # the reference against the model's units inside the piece
    reason: str | None = None  # None: kept
    detail: str = ""

    @property
    def seconds(self) -> float:
        return (self.last - self.first) / SAMPLE_RATE


def heard(pieces) -> list[Heard]:
    """The model's units in the recording's time from `asrtune transcribe`'s pieces: the family's own unit times where
    it gives them, else each piece's units spread evenly over it (the audio LLMs give no times: cuts then rest on the
    silences between two segments, never inside one)."""
    from asrtune.corpus.timestamps import units

    out = []
    for piece in pieces:
        if piece.units is not None:
            out += [Heard(u, a, b) for u, a, b in piece.units]
            continue
        words = units(piece.text)
        start, end = piece.start_ms / 1000, piece.end_ms / 1000
        step = (end - start) / max(1, len(words))
        out += [Heard(u, start + k * step, start + (k + 1) * step, (start, end)) for k, u in enumerate(words)]
    return out


def key(unit: str) -> str:
    return unicodedata.normalize("NFKC", unit).lower()


def matches(ref: list[str], hyp: list[str]) -> list[int | None]:
    """For each reference unit, the index of the hypothesis unit it is aligned to and equal to, else None."""
    from rapidfuzz.distance import Levenshtein

    out: list[int | None] = [None] * len(ref)
    for op in Levenshtein.opcodes([key(u) for u in ref], [key(u) for u in hyp]):
        if op.tag == "equal":
            for k in range(op.src_end - op.src_start):
                out[op.src_start + k] = op.dest_start + k
    return out


def silences(probs: list[float] | np.ndarray) -> list[tuple[float, float]]:
    """(start, end) in seconds of every run of at least MIN_SILENCE frames under SILENT."""
    quiet = np.concatenate([[False], np.asarray(probs) < SILENT, [False]])
    edges = np.flatnonzero(np.diff(quiet.astype(np.int8)))
    step = FRAME / SAMPLE_RATE
    return [(float(a * step), float(b * step)) for a, b in zip(edges[::2], edges[1::2]) if b - a >= MIN_SILENCE]


def cut_points(text: str, heard: list[Heard], probs, duration: float) -> tuple[list[tuple[str, int, int]], list[Cut]]:
    """(the transcript's units with their character spans, every place it may be cut). A gap may be cut when the
    unit on either side of it matches the model's: a sentence the model heard differently (a transcript error) is
    still cut off from its neighbours, between the last unit it heard of the one and the first it heard of the next."""
    ref = spans(text)
    match = matches([u for u, _, _ in ref], [h.unit for h in heard])
    quiet = silences(probs)
    starts, ends = [s for s, _ in quiet], [e for _, e in quiet]

    def mid(j: int) -> float:
        return (heard[j].start + heard[j].end) / 2

    cuts = []
    for i in range(len(ref) - 1):
        a, b = match[i], match[i + 1]
        if a is None and b is None:
            continue
        if a is None:
            a = b - 1  # the model's unit before the matched one, whatever it heard there (-1: none)
        if b is None:
            b = a + 1
        left = heard[a] if a >= 0 else None
        right = heard[b] if b < len(heard) else None
        if left is not None and right is not None and (left.segment or right.segment):
            if left.segment == right.segment:
                continue  # untimed units of one segment: where between them the pause lies is not known
            lo, hi = (left.segment or (left.end, 0))[1] - SLACK, (right.segment or (right.start, 0))[0] + SLACK
            inside = (lo, hi)
        else:
            lo = left.end - SLACK if left is not None else 0.0
            hi = right.start + SLACK if right is not None else duration
            inside = (mid(a) if left is not None else 0.0, mid(b) if right is not None else duration)  # never past a middle
        best = None
        for s, e in quiet[bisect.bisect_right(ends, lo) : bisect.bisect_left(starts, hi)]:  # the runs overlapping (lo, hi)
            s, e = max(s, inside[0]), min(e, inside[1])
            if e - s > 0 and (best is None or e - s > best[1] - best[0]):
                best = (s, e)
        if best is None:
            continue
        between = text[ref[i][2] + 1 : ref[i + 1][1]]
        if cuts and round(float(best[0] + best[1]) / 2, 3) < cuts[-1].time:
            continue  # never before the cut before it (units heard out of order). Two gaps in one pause (a sentence
            # the model heard none of) cut at one time: the sentence is a piece of no audio, rejected as not heard
        cuts.append(Cut(i, round(float(best[0] + best[1]) / 2, 3), round(float(best[1] - best[0]), 3), any(c in SENTENCE_END for c in between)))
    return ref, cuts


def _split(bounds: list[tuple[float, int]], inner: list[Cut], max_seconds: float) -> list[tuple[float, int]]:
    """bounds (time, gap) of consecutive pieces; any piece over max_seconds split at its longest-silence inner cut."""
    out = [bounds[0]]
    for end in bounds[1:]:
        stack = [end]
        while stack:
            start, right = out[-1], stack[-1]
            if right[0] - start[0] <= max_seconds:
                out.append(stack.pop())
                continue
            between = [c for c in inner if start[1] < c.gap < right[1]]
            if not between:
                out.append(stack.pop())
                continue
            best = max(between, key=lambda c: (c.silence, -c.gap))
            stack.append((best.time, best.gap))
    return out


def _trim(first: int, last: int, probs) -> tuple[int, int] | None:
    """[first, last) narrowed to its speech frames with PAD kept; None when it holds none."""
    a, b = first // FRAME, -(-last // FRAME)
    loud = np.flatnonzero(np.asarray(probs[a:b]) >= SILENT)
    if not len(loud):
        return None
    pad = int(PAD * SAMPLE_RATE)
    return max(first, (a + loud[0]) * FRAME - pad), min(last, (a + loud[-1] + 1) * FRAME + pad)


def split_at(text: str, ref: list[tuple[str, int, int]], i: int) -> int:
    """Where in `text` the piece that starts with unit i starts: after the last sentence end between unit i - 1 and
    unit i (an opening quote goes with the sentence it opens), else at unit i; 0 and len(text) at the ends."""
    if i <= 0:
        return 0
    if i >= len(ref):
        return len(text)
    lo, hi = ref[i - 1][2] + 1, ref[i][1]
    ends = [k for k in range(lo, hi) if text[k] in SENTENCE_END or text[k] in CLOSING]
    return ends[-1] + 1 if ends else hi


def cut(text: str, heard: list[Heard], probs, samples: int, max_seconds: float, max_cer: float) -> tuple[list[Piece], list[Cut]]:
    """The transcript `text` of a recording of `samples` samples, cut into pieces (kept: reason None), and the cuts made.

    `heard`: the model's units (put in time order here); `probs`: Silero VAD's speech probability per 512-sample frame."""
    from rapidfuzz.distance import Levenshtein

    duration = samples / SAMPLE_RATE
    heard = sorted(heard, key=lambda h: (h.start + h.end) / 2)  # stable: units of equal times keep their order
    ref, cuts = cut_points(text, heard, probs, duration)
    if not ref:
        return [], []
    outer = [(0.0, -1)] + [(c.time, c.gap) for c in cuts if c.sentence] + [(duration, len(ref) - 1)]
    bounds = _split(outer, [c for c in cuts if not c.sentence], max_seconds)
    mids = [(h.start + h.end) / 2 for h in heard]
    pieces = []
    for (t0, g0), (t1, g1) in zip(bounds, bounds[1:]):
        a, b = g0 + 1, g1 + 1
        start, end = split_at(text, ref, a), split_at(text, ref, b)
        words = join(text[start:end].splitlines())
        line = text.count("\n", 0, ref[a][1]) + 1
        first, last = int(round(t0 * SAMPLE_RATE)), int(round(t1 * SAMPLE_RATE))
        inside = [h.unit for h in heard[bisect.bisect_left(mids, t0) : bisect.bisect_left(mids, t1)]]
        refs = [u for u, _, _ in ref[a:b]]
        cer = round(Levenshtein.distance([key(u) for u in refs], [key(u) for u in inside]) / len(refs), 4)
        piece = Piece(first, last, (a, b), words, line, cer)
        trimmed = _trim(first, last, probs)
        if last <= first:  # a stretch the model heard none of, between two cuts in one pause
            piece.reason, piece.detail = "mismatch", f"not heard: the model heard {join(inside)!r}"
        elif trimmed is None:
            piece.reason, piece.detail = "no_speech", "voice activity detection heard no speech here"
        else:
            piece.first, piece.last = trimmed
            if piece.seconds > max_seconds:
                piece.reason, piece.detail = "too_long", (f"{piece.seconds:.1f} s with no pause between matched words to cut "
                                                          f"under {max_seconds:g} s at")
            elif cer > max_cer:
                piece.reason, piece.detail = "mismatch", (f"CER {cer:.2f} against the model's transcript (over {max_cer:g}): "
                                                          f"it heard {join(inside)!r}")
        pieces.append(piece)
    inner = set(bounds[1:-1])
    return pieces, [c for c in cuts if (c.time, c.gap) in inner]


def tally(pieces: list[Piece]) -> dict:
    """A recording's pieces counted: pieces, kept, kept_seconds, the transcript's units (= kept_units + rejected_units)
    and the rejected pieces by reason."""
    kept = [x for x in pieces if x.reason is None]
    units = sum(b - a for x in pieces for a, b in [x.units])
    kept_units = sum(b - a for x in kept for a, b in [x.units])
    reasons: dict[str, int] = {}
    for x in pieces:
        if x.reason is not None:
            reasons[x.reason] = reasons.get(x.reason, 0) + 1
    return {"pieces": len(pieces), "kept": len(kept), "kept_seconds": sum(x.seconds for x in kept), "units": units,
            "kept_units": kept_units, "rejected_units": units - kept_units, "rejected": dict(sorted(reasons.items()))}


def cut_errors(cuts: list[Cut], gaps: list[tuple[float, float]]) -> list[float]:
    """Each cut's distance in seconds from the true silence between the two units it separates (0 inside it);
    gaps[i]: the true end of reference unit i and start of unit i + 1."""
    out = []
    for c in cuts:
        lo, hi = gaps[c.gap]
        out.append(round(max(0.0, lo - c.time, c.time - hi), 3))
    return out
