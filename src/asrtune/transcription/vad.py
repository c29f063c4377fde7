"""Voice activity detection for long recordings: Silero VAD (the `silero-vad` wheel's ONNX model, run with
onnxruntime) finds the speech, and the speech is cut into segments a model can take in one window.

1. Silero VAD gives a speech probability per 32 ms frame (512 samples at 16 kHz); silero-vad's own
   `get_speech_timestamps_from_probs` turns them into speech runs (threshold 0.5, a run ends after 100 ms
   under 0.35, runs under 250 ms dropped, 30 ms of padding).
2. A run longer than the limit (max_seconds less the padding on both sides) is cut at its quietest point: the
   frame of least energy (RMS smoothed over 160 ms) in the second half of the limit from the run's start, again
   until every piece fits. The speech never goes to the model in pieces longer than the window.
3. Neighbouring runs are merged while the silence between them is at most `max_gap` seconds and the merged span
   stays within the limit: fewer, longer segments give the model context, and a longer silence always
   separates two segments (a subtitle cue does not stretch over it).
4. Each segment gets `pad` seconds on both sides, never past the middle of the silence to its neighbour nor
   past the audio's ends: a segment is at most max_seconds long.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

SAMPLE_RATE = 16000
FRAME = 512  # samples per Silero VAD frame at 16 kHz (32 ms)
CONTEXT = 64  # samples of the previous frame the model sees before each frame
MAX_SECONDS = 30.0  # params.WINDOW_SECONDS: Whisper's encoder window, what the audio LLMs were trained on
PAD = 0.2
MAX_GAP = 1.0
THRESHOLD = 0.5


@dataclass(frozen=True)
class Segment:
    first: int  # samples at 16 kHz: audio[first:last]
    last: int

    @property
    def start(self) -> float:
        return self.first / SAMPLE_RATE

    @property
    def end(self) -> float:
        return self.last / SAMPLE_RATE

    @property
    def duration(self) -> float:
        return (self.last - self.first) / SAMPLE_RATE


def model_path() -> str:
    """The ONNX model inside the silero-vad wheel, found without importing the package (its __init__ imports torch
    and sets torch's thread count to 1 for the whole process)."""
    from importlib.metadata import PackageNotFoundError, distribution

    from asrtune.errors import UserError

    try:
        path = distribution("silero-vad").locate_file("silero_vad/data/silero_vad.onnx")
    except PackageNotFoundError:
        raise UserError("transcribe needs the silero-vad package: run `uv sync`") from None
    if not path.is_file():
        raise UserError(f"{path}: the silero-vad wheel has no silero_vad.onnx")
    return str(path)


@lru_cache(maxsize=1)
def _session():
    import onnxruntime

    opts = onnxruntime.SessionOptions()
    opts.inter_op_num_threads = 1  # one 32 ms frame a call: more threads only wait for each other
    opts.intra_op_num_threads = 1
    return onnxruntime.InferenceSession(model_path(), providers=["CPUExecutionProvider"], sess_options=opts)


def speech_probs(audio: np.ndarray, progress=None) -> list[float]:
    """Silero VAD's speech probability for each 512-sample frame of 16 kHz mono `audio` (the last one zero-padded),
    as silero-vad's OnnxWrapper computes them: each frame after the previous frame's last 64 samples, the model's
    state carried from frame to frame. `progress(frames)` is called now and then."""
    session = _session()
    n = -(-len(audio) // FRAME)
    padded = np.zeros(CONTEXT + n * FRAME, dtype=np.float32)
    padded[CONTEXT:CONTEXT + len(audio)] = audio
    state = np.zeros((2, 1, 128), dtype=np.float32)
    sr = np.array(SAMPLE_RATE, dtype=np.int64)
    probs = []
    for i in range(n):
        window = padded[i * FRAME : i * FRAME + CONTEXT + FRAME][None, :]
        out, state = session.run(None, {"input": window, "state": state, "sr": sr})
        probs.append(float(out[0, 0]))
        if progress is not None and (i + 1) % 1000 == 0:
            progress(1000)
    if progress is not None and n % 1000:
        progress(n % 1000)
    return probs


def speech_runs(probs: list[float], samples: int, threshold: float = THRESHOLD) -> list[tuple[int, int]]:
    """(start, end) in samples of each speech run, by silero-vad's own rules (its defaults but the threshold)."""
    import torch

    threads = torch.get_num_threads()
    try:  # silero_vad's __init__ sets torch's thread count to 1 for the process: give the model its threads back
        from silero_vad.utils_vad import get_speech_timestamps_from_probs
    finally:
        torch.set_num_threads(threads)
    runs = get_speech_timestamps_from_probs(probs, sampling_rate=SAMPLE_RATE, threshold=threshold, audio_length_samples=samples)
    return [(r["start"], r["end"]) for r in runs]


def frame_energy(audio: np.ndarray, frame: int = FRAME, smooth: int = 5) -> np.ndarray:
    """RMS per frame, averaged over `smooth` frames around it (160 ms): where a cut in speech hurts least."""
    n = -(-len(audio) // frame)
    padded = np.zeros(n * frame, dtype=np.float32)
    padded[: len(audio)] = audio
    rms = np.sqrt((padded.reshape(n, frame).astype(np.float64) ** 2).mean(axis=1))
    return np.convolve(rms, np.ones(smooth) / smooth, mode="same") if n >= smooth else rms


def split_long(run: tuple[int, int], limit: int, energy: np.ndarray) -> list[tuple[int, int]]:
    """A run cut into pieces of at most `limit` samples, each cut at the quietest frame boundary of the second
    half of the limit from the piece's start."""
    start, end = run
    pieces = []
    while end - start > limit:
        lo, hi = -(-(start + limit // 2) // FRAME), (start + limit) // FRAME  # frame indices whose start lies in the window
        if hi <= lo:  # a limit under two frames: cut where it says
            cut = start + limit
        else:
            cut = (lo + int(np.argmin(energy[lo:hi]))) * FRAME
        pieces.append((start, cut))
        start = cut
    pieces.append((start, end))
    return pieces


def merge(runs: list[tuple[int, int]], limit: int, max_gap: int) -> list[tuple[int, int]]:
    """Neighbouring runs joined while the silence between is at most `max_gap` samples and the span at most `limit`."""
    merged: list[tuple[int, int]] = []
    for start, end in runs:
        if merged and start - merged[-1][1] <= max_gap and end - merged[-1][0] <= limit:
            merged[-1] = (merged[-1][0], end)
        else:
            merged.append((start, end))
    return merged


def segments(audio: np.ndarray, max_seconds: float = MAX_SECONDS, pad: float = PAD, max_gap: float = MAX_GAP,
             threshold: float = THRESHOLD, progress=None, probs: list[float] | None = None) -> list[Segment]:
    """The speech segments of 16 kHz mono `audio` in time order (the module's docstring says how), each at most
    `max_seconds` long; none where there is no speech. `probs`: speech_probs(audio) when the caller has them."""
    if max_seconds <= 2 * pad:
        raise ValueError(f"max_seconds ({max_seconds}) must exceed twice the padding ({pad})")
    runs = speech_runs(speech_probs(audio, progress) if probs is None else probs, len(audio), threshold)
    limit = int((max_seconds - 2 * pad) * SAMPLE_RATE)
    energy = frame_energy(audio) if any(e - s > limit for s, e in runs) else None
    pieces = [p for run in runs for p in (split_long(run, limit, energy) if run[1] - run[0] > limit else [run])]
    spans = merge(pieces, limit, int(max_gap * SAMPLE_RATE))
    out, pad_n = [], int(pad * SAMPLE_RATE)
    for i, (start, end) in enumerate(spans):
        lo = 0 if i == 0 else (spans[i - 1][1] + start) // 2
        hi = len(audio) if i == len(spans) - 1 else (end + spans[i + 1][0]) // 2
        out.append(Segment(max(lo, start - pad_n), min(hi, end + pad_n)))
    return out
