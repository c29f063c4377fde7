"""Throughput and peak memory of the ingest + jsonl stages on the header-probe path.

Writes N tiny 16 kHz mono PCM clips as a Kaldi corpus, runs `asrtune ingest` and `asrtune jsonl`
as DVC would (one process each), and prints wall time, utterances per second and each process's
peak resident memory, for every N side by side, with the ratios between the largest and smallest N.

    uv run python benchmarks/data_stages.py            # 1k and 10k utterances
    uv run python benchmarks/data_stages.py --quick    # 200 and 1k: a smoke run, not a measurement
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import yaml

REPO = Path(__file__).resolve().parents[1]


def make_corpus(root: Path, n: int) -> Path:
    """n clips of 0.5-1.5 s (noise, so files differ), Kaldi wav.scp + text + utt2spk."""
    rng = np.random.default_rng(0)
    audio, kaldi = root / "audio", root / "kaldi"
    audio.mkdir(parents=True)
    kaldi.mkdir()
    with open(kaldi / "wav.scp", "w") as scp, open(kaldi / "text", "w", encoding="utf-8") as text, open(kaldi / "utt2spk", "w") as spk:
        for i in range(n):
            utt = f"utt{i:06d}"
            path = audio / f"{utt}.wav"
            sf.write(str(path), (rng.standard_normal(int(16000 * (0.5 + (i % 11) / 10))) * 0.1).astype(np.float32), 16000, subtype="PCM_16")
            scp.write(f"{utt} {path}\n")
            text.write(f"{utt} 今天天气很好我们去公园散步第{i}句\n")
            spk.write(f"{utt} spk{i % 50:02d}\n")
    return kaldi


# The child reports its own peak RSS (VmHWM) at exit. getrusage/wait4 would not do: a forked
# child's ru_maxrss starts from the parent's size at fork, so it would count this script's memory.
_REPORT_PEAK = (
    "import atexit, sys\n"
    "atexit.register(lambda: sys.stderr.write([l for l in open('/proc/self/status') if l.startswith('VmHWM')][0]))\n"
    "sys.argv = ['asrtune'] + sys.argv[1:]\n"
    "from asrtune.cli import main\n"
    "main()\n"
)


def run_measured(args: list[str], cwd: Path) -> tuple[float, float]:
    """(wall seconds, peak RSS MiB) of one `asrtune` stage process."""
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", _REPORT_PEAK, *args], cwd=cwd, stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, text=True)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"asrtune {' '.join(args)} failed:\n{proc.stderr}")
    peak_kib = int(re.search(r"VmHWM:\s+(\d+) kB", proc.stderr).group(1))
    return wall, peak_kib / 1024


def bench(n: int) -> dict:
    from asrtune.whisper_ct2 import build_tokenizer, offline_whisper_base_dir

    with tempfile.TemporaryDirectory(prefix="asrtune-bench-") as tmp:
        root = Path(tmp)
        kaldi = make_corpus(root, n)
        params = yaml.safe_load((REPO / "params.yaml").read_text(encoding="utf-8"))
        params["data"]["corpora"] = {"bench": {"role": "domain", "source": str(kaldi)}}
        (root / "params.yaml").write_text(yaml.safe_dump(params, allow_unicode=True), encoding="utf-8")
        build_tokenizer(offline_whisper_base_dir()[0] / "tokenizer.json").save_pretrained(root / "models/base")
        ingest_s, ingest_mb = run_measured(["ingest", "bench"], root)
        jsonl_s, jsonl_mb = run_measured(["jsonl", "bench"], root)
        accepted = sum(1 for _ in open(root / "data/jsonl/bench.jsonl"))
    assert accepted == n, f"{accepted} of {n} accepted"
    return {"n": n, "ingest_s": ingest_s, "jsonl_s": jsonl_s, "ingest_mb": ingest_mb, "jsonl_mb": jsonl_mb}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="200 and 1k utterances (smoke run)")
    args = parser.parse_args()
    sizes = [200, 1000] if args.quick else [1000, 10000]
    rows = [bench(n) for n in sizes]
    print(f"{'utterances':>10} {'ingest s':>9} {'jsonl s':>8} {'utt/s':>8} {'ingest MiB':>11} {'jsonl MiB':>10}")
    for r in rows:
        rate = r["n"] / (r["ingest_s"] + r["jsonl_s"])
        print(f"{r['n']:>10} {r['ingest_s']:>9.2f} {r['jsonl_s']:>8.2f} {rate:>8.0f} {r['ingest_mb']:>11.0f} {r['jsonl_mb']:>10.0f}")
    small, big = rows[0], rows[-1]
    # the marginal rate discounts process start-up (imports), which a larger corpus does not repeat
    marginal = (big["n"] - small["n"]) / ((big["ingest_s"] + big["jsonl_s"]) - (small["ingest_s"] + small["jsonl_s"]))
    print(f"marginal ingest+jsonl throughput ({small['n']}->{big['n']}): {marginal:.0f} utt/s")
    print(f"peak memory ratio {big['n']} vs {small['n']}: ingest {big['ingest_mb'] / small['ingest_mb']:.2f}x, "
          f"jsonl {big['jsonl_mb'] / small['jsonl_mb']:.2f}x (corpus {big['n'] / small['n']:.0f}x larger)")


if __name__ == "__main__":
    main()
