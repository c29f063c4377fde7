"""Throughput and peak memory of the data stages: ingest + jsonl + split + mix.

Writes N tiny 16 kHz mono PCM clips as two Kaldi corpora (N/2 domain, N/2 general; the header-probe
path: nothing to convert), runs every data stage as DVC would (one process each: ingest, jsonl,
split per corpus, mix per curriculum stage of params.yaml), and prints wall time, utterances per
second and the largest peak resident memory of each kind of stage, for every N side by side, with
the ratios between the largest and smallest N.

    uv run python benchmarks/data_stages.py            # 1k, 10k and 50k utterances
    uv run python benchmarks/data_stages.py --quick    # 200 and 1k: a smoke run, not a measurement
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf
import yaml
from common import REPO, run_stage, with_corpora


def make_corpus(root: Path, n: int, seed: int) -> Path:
    """n clips of 0.5-1.5 s (noise, so files differ), Kaldi wav.scp + text + utt2spk."""
    rng = np.random.default_rng(seed)
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


STAGES = ("ingest", "jsonl", "split", "mix")


def bench(n: int) -> dict:
    from asrtune.weights.ct2_to_transformers import build_tokenizer, offline_whisper_base_dir

    with tempfile.TemporaryDirectory(prefix="asrtune-bench-") as tmp:
        root = Path(tmp)
        params = yaml.safe_load((REPO / "params.yaml").read_text(encoding="utf-8"))
        with_corpora(params, {name: {"role": name, "source": str(make_corpus(root / name, n // 2, seed))}
                              for seed, name in enumerate(("domain", "general"))})
        (root / "params.yaml").write_text(yaml.safe_dump(params, allow_unicode=True), encoding="utf-8")
        build_tokenizer(offline_whisper_base_dir()[0] / "tokenizer.json").save_pretrained(root / "models/base")
        row = {"n": n, **{f"{s}_s": 0.0 for s in STAGES}, **{f"{s}_mb": 0.0 for s in STAGES}}
        runs = [(stage, corpus) for stage in STAGES[:3] for corpus in params["data"]["corpora"]]
        runs += [("mix", s) for s in params["mix"]["stages"]]
        for stage, arg in runs:
            run = run_stage([stage, arg], root)
            row[f"{stage}_s"] += run.wall
            row[f"{stage}_mb"] = max(row[f"{stage}_mb"], run.peak_mib)
        accepted = sum(1 for c in ("domain", "general") for _ in open(root / f"data/jsonl/{c}.jsonl"))
    assert accepted == n // 2 * 2, f"{accepted} of {n} accepted"
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="200 and 1k utterances (smoke run)")
    args = parser.parse_args()
    sizes = [200, 1000] if args.quick else [1000, 10000, 50000]
    rows = [bench(n) for n in sizes]
    print("wall seconds per kind of stage (all its processes), utterances per second of the four together,")
    print("and the largest peak RSS of one process of each kind:\n")
    print(f"{'utterances':>10} " + " ".join(f"{s + ' s':>8}" for s in STAGES) + f" {'utt/s':>7} "
          + " ".join(f"{s + ' MiB':>10}" for s in STAGES))
    for r in rows:
        total = sum(r[f"{s}_s"] for s in STAGES)
        print(f"{r['n']:>10} " + " ".join(f"{r[s + '_s']:>8.2f}" for s in STAGES) + f" {r['n'] / total:>7.0f} "
              + " ".join(f"{r[s + '_mb']:>10.0f}" for s in STAGES))
    small, big = rows[0], rows[-1]
    # the marginal rate discounts process start-up (imports), which a larger corpus does not repeat
    marginal = (big["n"] - small["n"]) / (sum(big[f"{s}_s"] for s in STAGES) - sum(small[f"{s}_s"] for s in STAGES))
    print(f"\nmarginal throughput, all four stages ({small['n']}->{big['n']}): {marginal:.0f} utt/s")
    print(f"peak memory ratio {big['n']} vs {small['n']} (corpus {big['n'] / small['n']:.0f}x larger): "
          + ", ".join(f"{s} {big[s + '_mb'] / small[s + '_mb']:.2f}x" for s in STAGES))


if __name__ == "__main__":
    main()
