"""asrtune cache: what the cache folder holds (encoder outputs, resume checkpoints, downloads), and
a way to drop the checkpoints of runs that were abandoned (a finished finetune removes its own)."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import typer

from asrtune import paths


def lock(folder: Path, say=print):
    """Hold `folder` (a run's checkpoints) for this process's lifetime. Two runs of the very same
    training (dvc queue workers, say) get the same folder: the second waits for the first, instead
    of both writing, resuming from and deleting the same checkpoints. Returns the open lock file."""
    import fcntl

    folder.parent.mkdir(parents=True, exist_ok=True)
    held = open(folder.with_suffix(".lock"), "w")
    try:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        say(f"note: another run of this very training holds {folder}; waiting for it to end")
        fcntl.flock(held, fcntl.LOCK_EX)
    return held


def size_of(folder: Path) -> tuple[int, int, float]:
    """(files, bytes, newest modification time) under a folder."""
    files = [f for f in folder.rglob("*") if f.is_file()]
    return len(files), sum(f.stat().st_size for f in files), max((f.stat().st_mtime for f in files), default=folder.stat().st_mtime)


def run(clear_checkpoints: bool = typer.Option(False, "--clear-checkpoints",
                                               help="remove every run's checkpoints (while no finetune is running)"),
        clear_decode: bool = typer.Option(False, "--clear-decode",
                                          help="remove the encoder outputs decode keeps (while nothing decodes)")) -> None:
    """List the asrtune cache (ASRTUNE_CACHE, default ~/.cache/asrtune): checkpoints, encoder (training's frozen
    encoder outputs), decode (whisper's encoder outputs, kept between decodes on a CPU), http (downloads)."""
    root = paths.cache_dir()
    print(f"asrtune cache: {root.resolve()}")
    for kind in ("checkpoints", "encoder", "decode", "http"):
        entries = sorted(p for p in (root / kind).glob("*")) if (root / kind).is_dir() else []
        for entry in entries:
            n, size, newest = size_of(entry) if entry.is_dir() else (1, entry.stat().st_size, entry.stat().st_mtime)
            detail = ", ".join(sorted(c.name for c in entry.glob("checkpoint-*"))) if kind == "checkpoints" else f"{n} files"
            print(f"  {kind}/{entry.name}  {size / 2**20:.1f} MiB  {detail}  last written {time.strftime('%Y-%m-%d %H:%M', time.localtime(newest))}")
        if entries and ((kind == "checkpoints" and clear_checkpoints) or (kind == "decode" and clear_decode)):
            for entry in entries:
                shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
            print(f"  removed {len(entries)} {kind} folders")
