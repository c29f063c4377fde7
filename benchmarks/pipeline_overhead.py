"""Pipeline overhead: wall time of a no-op `dvc repro` and of `dvc status` on a finished pipeline,
side by side with `dvc --version` (DVC's own start-up, the floor any dvc command pays).

    uv run python benchmarks/pipeline_overhead.py           # on this checkout, after `dvc repro` (goal: repro < 3 s)
    uv run python benchmarks/pipeline_overhead.py --quick   # a scratch repo with one tiny stage: a smoke run
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

DVC = str(Path(sys.executable).parent / "dvc")
ENV = {**os.environ, "DVC_NO_ANALYTICS": "1"}
GOAL_S = 3.0


def run(cwd: Path, *args: str) -> str:
    proc = subprocess.run(args, cwd=cwd, capture_output=True, text=True, env=ENV)
    if proc.returncode != 0:
        sys.exit(f"error: `{' '.join(args)}` failed in {cwd}: {proc.stderr.strip().splitlines()[-1:]}")
    return proc.stdout + proc.stderr


def timed(cwd: Path, runs: int, *args: str) -> list[float]:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        out = run(cwd, *args)
        times.append(time.perf_counter() - start)
        if args[1] == "repro" and "Running stage" in out:
            sys.exit(f"error: `dvc repro` in {cwd} ran stages: run it to completion first, then measure the no-op")
    return times


def scratch_repo(root: Path) -> Path:
    """git + dvc repo with one tiny stage, already run."""
    repo = root / "repo"
    repo.mkdir()
    (repo / "dvc.yaml").write_text("stages:\n  hello:\n    cmd: python -c \"open('out.txt','w').write('hi')\"\n    outs: [out.txt]\n")
    run(repo, "git", "init", "-q")
    run(repo, DVC, "init", "-q")
    run(repo, DVC, "repro")
    return repo


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a scratch repo with one stage, 2 runs each (smoke run)")
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp()) if args.quick else None
    try:
        repo = scratch_repo(tmp) if args.quick else Path(__file__).resolve().parents[1]
        runs = 2 if args.quick else args.runs
        stages = len(run(repo, DVC, "stage", "list").splitlines())
        results = {name: timed(repo, runs, DVC, *cmd) for name, cmd in
                   (("dvc --version", ["--version"]), ("dvc status", ["status"]), ("dvc repro (no-op)", ["repro"]))}
    finally:
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)
    floor = statistics.median(results["dvc --version"])
    print(f"{repo} ({stages} stages), median of {runs} runs:\n")
    print("| command | median | min | x dvc start-up |")
    print("|---|---|---|---|")
    for name, times in results.items():
        print(f"| `{name}` | {statistics.median(times):.2f} s | {min(times):.2f} s | {statistics.median(times) / floor:.2f} |")
    verdict = "meets" if statistics.median(results["dvc repro (no-op)"]) < GOAL_S else "misses"
    print(f"\nno-op `dvc repro` {verdict} the {GOAL_S:g} s goal")


if __name__ == "__main__":
    main()
