"""What the benchmark scripts share: running a stage as DVC does while reading its peak memory,
and a scratch repository that holds just what the finetune and decode stages read."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import yaml

REPO = Path(__file__).resolve().parents[1]

# The child reports its own peak RSS (VmHWM) at exit. getrusage/wait4 would not do: a forked
# child's ru_maxrss starts from the parent's size at fork, so it would count this script's memory.
_REPORT_PEAK = (
    "import atexit, sys\n"
    "atexit.register(lambda: sys.stderr.write([l for l in open('/proc/self/status') if l.startswith('VmHWM')][0]))\n"
    "sys.argv = ['asrtune'] + sys.argv[1:]\n"
    "from asrtune.cli import main\n"
    "main()\n"
)


@dataclass
class Run:
    wall: float  # seconds, process start-up included
    peak_mib: float  # peak resident memory of the stage process
    stdout: str


def run_stage(args: list[str], cwd: Path, env: dict | None = None) -> Run:
    """One `asrtune` stage in its own process, as `dvc repro` runs it."""
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", _REPORT_PEAK, *args], cwd=cwd, capture_output=True, text=True,
                          env={**os.environ, **(env or {})})
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"asrtune {' '.join(args)} failed:\n{proc.stderr[-3000:]}")
    peak_kib = int(re.search(r"VmHWM:\s+(\d+) kB", proc.stderr).group(1))
    return Run(wall, peak_kib / 1024, proc.stdout)


def write_params(repo: Path, params: dict) -> None:
    (repo / "params.yaml").write_text(yaml.safe_dump(params, allow_unicode=True, sort_keys=False), encoding="utf-8")


def demo_params() -> dict:
    return yaml.safe_load((REPO / "params.yaml").read_text(encoding="utf-8"))


def with_corpora(params: dict, corpora: dict) -> dict:
    """The demo's params over other corpora: the keys that name the demo's corpora follow (longform.corpora keeps
    the ones still there; without a nonspeech corpus the mix adds no non-speech share)."""
    params["data"]["corpora"] = corpora
    params["longform"]["corpora"] = [c for c in params["longform"]["corpora"] if c in corpora]
    if not any(c["role"] == "nonspeech" for c in corpora.values()):
        for stage in params["mix"]["stages"].values():
            stage.pop("nonspeech", None)
    return params


def scratch_repo(repo: Path, quick: bool, train_rows: int | None = None, val_rows: int | None = None, clips: int = 0) -> Path:
    """A repository holding what finetune s1 and decode read: the finished demo's params.yaml,
    models and data (linked, never written; data/mix/s1 copied, cut to the first train_rows and
    val_rows), or, quick, a tiny random Whisper and `clips` noise clips as data/mix/s1 and as the
    test split of a corpus named `quick`."""
    (repo / "data").mkdir(parents=True)
    (repo / "models").mkdir()
    (repo / "data/hotwords").symlink_to(REPO / "data/hotwords")  # decode.hotwords' term lists
    params = demo_params()
    if not quick:
        missing = [p for p in ("models/base/config.json", "models/merged/config.json", "data/mix/s1/train.jsonl") if not (REPO / p).is_file()]
        if missing:
            sys.exit(f"{', '.join(missing)} not found: run the demo first (`uv run --extra demo dvc repro`)")
        for link in ("models/base", "models/merged", "data/ingest", "data/split"):
            (repo / link).symlink_to(REPO / link)
        for name, n in (("train", train_rows), ("val", val_rows)):
            rows = [json.loads(line) for line in (REPO / f"data/mix/s1/{name}.jsonl").read_text(encoding="utf-8").splitlines()]
            if n is not None and len(rows) < n:
                sys.exit(f"data/mix/s1/{name}.jsonl has {len(rows)} utterances, fewer than the {n} asked for")
            write_jsonl(repo / f"data/mix/s1/{name}.jsonl", rows[:n])
        write_params(repo, params)
        return repo
    from asrtune.corpus.chatml import record
    from asrtune.testing import write_tiny_whisper

    write_tiny_whisper(repo / "models/base")
    rng = np.random.default_rng(0)
    (repo / "audio").mkdir()
    records = []
    for i in range(clips):
        seconds = 1.0 + (i % 3) / 2
        sf.write(str(repo / f"audio/{i}.wav"), (rng.standard_normal(int(16000 * seconds)) * 0.1).astype(np.float32), 16000)
        records.append(record(f"quick-{i:03d}", f"audio/{i}.wav", "今天天气很好", seconds, 7, "", ""))
    write_jsonl(repo / "data/mix/s1/train.jsonl", records[: clips - clips // 4])
    write_jsonl(repo / "data/mix/s1/val.jsonl", records[clips - clips // 4 :])
    write_jsonl(repo / "data/split/quick/test.jsonl", records[: clips // 4])
    with_corpora(params, {"quick": {"role": "domain", "source": "audio"}})
    write_params(repo, params)
    return repo


def write_jsonl(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
