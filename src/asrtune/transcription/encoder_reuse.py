"""Whisper encoder outputs kept on disk between decodes, on a CPU in float32. The encoder reads a full 30 s window
whatever the clip's length, so on a CPU it is most of decoding (about four fifths of a batch of short clips for
whisper-base). A frozen encoder is the same in models/base and models/merged, so the merged model's decode reads
what the base model's wrote; the hotword pass reads its plain pass's; the sweep encodes the val clips once for all
its scales, and longform each segment once for both models.

An entry is found by the encoder's weights (their digest, recomputed when they change in place, as the sweep's
interpolation changes them), what computes it (precision, attention implementation, torch and transformers
versions, threads, CPU) and the clip's log-mel features. It holds exactly the tensor the encoder gave, and a clip's
output does not depend on the batch it ran in (tests check both), so reuse changes no transcript. Elsewhere the
encoder runs every time: on a GPU it costs about what reading its output back would, and a bf16 autocast on a CPU
may choose other kernels for another batch size."""

from __future__ import annotations

import hashlib
import os
import platform
import tempfile
from functools import cache
from pathlib import Path

import torch

from asrtune import paths
from asrtune.weights.digest import weights_digest


def folder() -> Path:
    return paths.cache_dir() / "decode"


def applies(family: str, device: str, precision: str) -> bool:
    return family == "whisper" and device == "cpu" and precision == "fp32"


@cache
def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            return next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), platform.machine())
    except OSError:
        return platform.machine()


class EncoderOutputs:
    """encode(features) -> the encoder's last hidden state for the batch, each clip's from the store where it is
    there; what is missing runs through the encoder in one batch and is stored."""

    def __init__(self, encoder: torch.nn.Module, precision: str, root: Path | None = None):
        import transformers

        self.encoder = encoder
        attention = getattr(getattr(encoder, "config", None), "_attn_implementation", None)
        self.tag = (f"{precision}-{attention}-torch{torch.__version__}-transformers{transformers.__version__}"
                    f"-{torch.get_num_threads()}threads-{cpu_name()}")
        self.root = root or folder()
        self._state: tuple | None = None
        self._dir: Path | None = None
        self.hits = self.misses = 0
        self._writable = True

    def _folder(self) -> Path:
        # every in-place change bumps a tensor's version; a tensor swapped for another has another address
        state = tuple((t.data_ptr(), t._version) for t in self.encoder.state_dict().values())
        if state != self._state:
            self._dir = self.root / weights_digest(self.encoder, extra=self.tag)
            self._state = state
        return self._dir

    def __call__(self, features: torch.Tensor) -> torch.Tensor:
        where = self._folder()
        files = [where / f"{hashlib.sha256(f.numpy().tobytes()).hexdigest()[:32]}.pt" for f in features.cpu()]
        found = {i: torch.load(f, weights_only=True) for i, f in enumerate(files) if f.is_file()}
        missing = [i for i in range(len(files)) if i not in found]
        if missing:
            with torch.no_grad():
                hidden = self.encoder(input_features=features[missing]).last_hidden_state
            for i, h in zip(missing, hidden):
                found[i] = h
                self._store(files[i], h)
        self.hits += len(files) - len(missing)
        self.misses += len(missing)
        return torch.stack([found[i].to(features.device) for i in range(len(files))])

    def _store(self, file: Path, hidden: torch.Tensor) -> None:
        """Whole files only (a concurrent decode may read it); a full disk stops the storing, not the decoding."""
        if not self._writable:
            return
        partial = None
        try:
            file.parent.mkdir(parents=True, exist_ok=True)
            handle, partial = tempfile.mkstemp(dir=file.parent, suffix=".tmp")
            with os.fdopen(handle, "wb") as out:
                torch.save(hidden.detach().cpu().clone(), out)
            os.replace(partial, file)
        except OSError as e:
            self._writable = False
            if partial is not None:
                Path(partial).unlink(missing_ok=True)
            print(f"note: {file.parent}: cannot store encoder outputs ({e.strerror}); the encoder runs every time")
