"""Frozen-encoder outputs, computed once per (encoder weights, audio) and reused every epoch and
every curriculum stage. Lives under the asrtune cache (not a DVC output): it is re-creatable, and
big (the whisper family keeps all 1500 x d_model frames per clip whatever its length, the audio LLMs
only the frames that hold audio; float16 halves it).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
from tqdm import tqdm


def audio_digest(path: str) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:24]


class EncoderCache:
    def __init__(self, root: Path, encoder_id: str, dtype: str):
        self.dir = root / f"{encoder_id}-{dtype}"
        self.dtype = np.float16 if dtype == "float16" else np.float32
        self._names: dict[str, Path] = {}

    def path(self, audio: str) -> Path:
        if audio not in self._names:
            self._names[audio] = self.dir / f"{audio_digest(audio)}.npy"
        return self._names[audio]

    def fill(self, audio_paths: list[str], encode, batch_size: int, rank: int = 0, world: int = 1) -> int:
        """Compute what is missing (`encode`: list of waveforms -> one tensor per clip); returns how
        many clips this process encoded. Several processes (DDP) share the work: process `rank` of
        `world` takes every world-th clip of the sorted list, so no two write the same file."""
        missing = [a for a in sorted(set(audio_paths))[rank::world] if not self.path(a).is_file()]
        self.dir.mkdir(parents=True, exist_ok=True)
        for start in tqdm(range(0, len(missing), batch_size), desc="encoder cache", unit="batch", mininterval=2.0, disable=not missing):
            chunk = missing[start : start + batch_size]
            hidden = encode([sf.read(a, dtype="float32")[0] for a in chunk])
            for audio, h in zip(chunk, hidden):
                tmp = self.path(audio).with_suffix(f".{os.getpid()}.tmp.npy")  # the cache may be shared by concurrent runs
                np.save(tmp, h.cpu().numpy().astype(self.dtype))
                tmp.replace(self.path(audio))  # whole files only, even if killed mid-write
        return len(missing)

    def load(self, audio: str) -> torch.Tensor:
        return torch.from_numpy(np.load(self.path(audio)).astype(np.float32))
