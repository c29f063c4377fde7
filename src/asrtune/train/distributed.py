"""Several devices: one process per device under torchrun (DDP), launched by the finetune stage
itself so that `dvc repro` runs it as it runs everything else. Rank 0 alone writes outputs."""

from __future__ import annotations

import os
import subprocess
import sys

from asrtune.errors import UserError


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


def is_main() -> bool:
    return rank() == 0


def launched() -> bool:
    """True inside a torchrun process (ours, or the user's own torchrun)."""
    return "WORLD_SIZE" in os.environ


def devices(requested: int | str) -> int:
    """train.devices -> processes. auto = every visible GPU (1 without one). Without a GPU, N CPU
    processes talk over gloo: slower than one, and how the several-GPU path is tested."""
    import torch

    gpus = torch.cuda.device_count()
    if requested == "auto":
        return max(gpus, 1)
    if gpus and requested > gpus:
        raise UserError(f"train.devices: {requested} asked for, {gpus} GPU{'s' if gpus > 1 else ''} visible (CUDA_VISIBLE_DEVICES)")
    return requested


def total(count: int, device) -> int:
    """The sum of `count` over the processes (each process's own count without DDP); a barrier too."""
    import torch

    if not torch.distributed.is_available() or not torch.distributed.is_initialized():
        return count
    summed = torch.tensor([count], device=device)
    torch.distributed.all_reduce(summed)
    return int(summed.item())


def relaunch(n: int, argv: list[str]) -> int:
    """Run `asrtune <argv>` as n torchrun processes on this machine; returns their exit status."""
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // n)))  # n processes share the cores
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={n}", "-m", "asrtune", *argv]
    return subprocess.run(cmd, env=env).returncode
