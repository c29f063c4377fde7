"""Which weights a module holds, as a short digest: the name of the folders that keep its encoder's outputs
(training's encoder cache, decode's reuse), so that other weights never read them."""

from __future__ import annotations

import hashlib

import torch


def weights_digest(module: torch.nn.Module, extra: str = "") -> str:
    """Same weights (and `extra`: feature settings, precision), same digest."""
    h = hashlib.sha256(extra.encode())
    for name, tensor in sorted(module.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:20]
