"""Whisper encoder outputs kept on disk between decodes, on a CPU. The encoder reads a full 30 s window
whatever the clip's length, so on a CPU it is most of decoding (about four fifths of a batch of short clips
for whisper-base). A frozen encoder is the same in models/base and models/merged (and at every scale the
sweep tries), and the hotword pass decodes clips the plain pass has just encoded: each window is then
encoded once, not up to five times.

An entry is found by the encoder's weights (their digest, recomputed when they change in place, as the
sweep's interpolation changes them), the precision, the torch version and the clip's log-mel features; it
holds exactly the tensor the encoder gave, so reuse changes no transcript (the encoder's output for a clip
does not depend on the batch it ran in; tests check both). On a GPU the encoder costs about what reading
its output back would: it runs every time there, and nothing is stored."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import torch

from asrtune import paths
from asrtune.weights.digest import weights_digest


def folder() -> Path:
    return paths.cache_dir() / "decode"


class EncoderOutputs:
    """encode(features) -> the encoder's last hidden state for the batch, each clip's from the cache where it
    is there; what is missing runs through the encoder in one batch and is stored."""

    def __init__(self, encoder: torch.nn.Module, precision: str, root: Path | None = None):
        self.encoder = encoder
        self.tag = f"{precision}-torch{torch.__version__}"
        self.root = root or folder()
        self._versions: tuple | None = None
        self._dir: Path | None = None
        self.hits = self.misses = 0

    def _folder(self) -> Path:
        versions = tuple(t._version for t in self.encoder.state_dict().values())  # bumped by every in-place change
        if versions != self._versions:
            self._dir = self.root / weights_digest(self.encoder, extra=self.tag)
            self._versions = versions
        return self._dir

    def __call__(self, features: torch.Tensor) -> torch.Tensor:
        where = self._folder()
        files = [where / f"{hashlib.sha256(f.numpy().tobytes()).hexdigest()[:32]}.pt" for f in features.cpu()]
        found = {i: torch.load(f, weights_only=True) for i, f in enumerate(files) if f.is_file()}
        missing = [i for i in range(len(files)) if i not in found]
        if missing:
            with torch.no_grad():
                hidden = self.encoder(input_features=features[missing]).last_hidden_state
            where.mkdir(parents=True, exist_ok=True)
            for i, h in zip(missing, hidden):
                found[i] = h
                partial = files[i].with_suffix(f".{os.getpid()}.tmp")  # whole files only: a concurrent decode may read it
                torch.save(h.detach().cpu().clone(), partial)
                partial.replace(files[i])
        self.hits += len(files) - len(missing)
        self.misses += len(missing)
        return torch.stack([found[i].to(features.device) for i in range(len(files))])
