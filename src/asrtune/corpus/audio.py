"""Audio I/O: header probes, conversion to 16 kHz mono PCM, fetching http(s) audio once."""

from __future__ import annotations

import hashlib
import os
import shutil
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

SAMPLE_RATE = 16000


class AudioError(Exception):
    """An utterance whose audio cannot be used; `reason` is a short stable code for rejected.tsv."""

    def __init__(self, reason: str, detail: str):
        super().__init__(detail)
        self.reason = reason


@dataclass(frozen=True)
class Probe:
    frames: int
    sample_rate: int
    channels: int
    ready: bool  # already 16 kHz mono PCM wav: reference it, no conversion

    @property
    def duration(self) -> float:
        return self.frames / self.sample_rate


def probe(path: Path) -> Probe:
    """Read the header only: no samples are decoded."""
    if not path.is_file():
        raise AudioError("missing_audio", f"no such file: {path}")
    try:
        info = sf.info(str(path))
    except Exception as e:  # libsndfile's own message says what is wrong
        raise AudioError("unreadable_audio", f"{path}: {str(e).splitlines()[0]}") from None
    ready = info.format == "WAV" and info.subtype == "PCM_16" and info.samplerate == SAMPLE_RATE and info.channels == 1
    return Probe(info.frames, info.samplerate, info.channels, ready)


def to_16k_mono(samples: np.ndarray, sample_rate: int) -> np.ndarray:
    """float32 mono at 16 kHz from any (frames[, channels]) array, int16 or float."""
    if samples.dtype == np.int16:
        samples = samples.astype(np.float32) / 32768.0
    samples = samples.astype(np.float32, copy=False)
    if samples.ndim == 2:
        samples = samples.mean(axis=1)
    if sample_rate != SAMPLE_RATE:
        import torch  # imported here: a CLI that only probes headers should not pay for torch
        import torchaudio.functional as AF

        samples = AF.resample(torch.from_numpy(samples), sample_rate, SAMPLE_RATE).numpy()
    return samples


def write_wav(path: Path, samples: np.ndarray) -> int:
    """Write 16 kHz mono PCM_16; returns the frame count."""
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), np.clip(samples, -1.0, 1.0), SAMPLE_RATE, subtype="PCM_16", format="WAV")
    return len(samples)


def convert_file(src: Path, dst: Path) -> int:
    """Decode `src`, convert to 16 kHz mono PCM wav at `dst`; returns the frame count."""
    try:
        samples, sr = sf.read(str(src), dtype="float32", always_2d=False)
    except Exception as e:
        raise AudioError("unreadable_audio", f"{src}: {str(e).splitlines()[0]}") from None
    return write_wav(dst, to_16k_mono(samples, sr))


def fetch(url: str, cache_dir: Path, timeout: float = 30.0) -> Path:
    """Download `url` once into `cache_dir` (keyed by the URL's hash); later calls reuse the file."""
    suffix = Path(url.split("?")[0]).suffix or ".audio"
    target = cache_dir / (hashlib.sha256(url.encode()).hexdigest()[:24] + suffix)
    if target.is_file():
        return target
    cache_dir.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + f".part{os.getpid()}")
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response, open(partial, "wb") as out:
            shutil.copyfileobj(response, out)
    except (urllib.error.URLError, OSError, ValueError) as e:
        partial.unlink(missing_ok=True)
        raise AudioError("fetch_failed", f"{url}: {getattr(e, 'reason', e)}") from None
    partial.replace(target)
    return target
