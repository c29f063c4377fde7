"""Two runs of the pipeline compared on the same test utterances, paired: `dvc metrics diff` gives the point
difference of two experiments' CERs; this gives its paired bootstrap 95% interval, from each workspace's
data/normalized/<model>/<corpus>.jsonl (the same utterances in both: the same data, another param).

    git clone . ../other && cd ../other && dvc checkout && dvc exp apply EXP && cd -   # or any other workspace
    uv run python benchmarks/compare_runs.py . ../other                 # merged, every scored test set with text
    uv run python benchmarks/compare_runs.py . ../other --model merged+hotwords --corpora medical
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from asrtune import paths
from asrtune.evaluation.scoring import align, bootstrap_rates, interval95, resample_seed


def errors(repo: Path, model: str, corpus: str) -> dict[str, tuple[int, int]]:
    """key -> (errors, reference tokens) of one run's normalized transcripts of a test set."""
    f = repo / paths.normalized_file(model, corpus)  # merged+hotwords: data/normalized/merged/<corpus>.hotwords.jsonl
    if not f.is_file() or not f.stat().st_size:
        sys.exit(f"{f}: not found or empty: run the pipeline there first (`dvc repro` or `dvc checkout`)")
    out = {}
    for line in f.read_text(encoding="utf-8").splitlines():
        r = json.loads(line)
        c = align(r["key"], r["ref"], r["hyp"], r["missing"]).counts
        out[r["key"]] = (c.errors, c.n)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("first", type=Path, help="a workspace: the run compared against")
    parser.add_argument("second", type=Path, help="another workspace: its change is second - first")
    parser.add_argument("--model", default="merged", help="base, merged, merged+hotwords, ... (default merged)")
    parser.add_argument("--corpora", nargs="+", help="test sets (default: every one the first run normalized)")
    parser.add_argument("--resamples", type=int, default=1000)
    args = parser.parse_args()
    # default: every corpus whose transcripts of this model normalize wrote (the plain and the list pass share a folder)
    folder = (args.first / paths.normalized_file(args.model, "_")).parent
    names = {f.name.split(".")[0] for f in folder.glob("*.jsonl")}
    corpora = args.corpora or sorted(c for c in names if (args.first / paths.normalized_file(args.model, c)).is_file())
    if not corpora:
        sys.exit(f"{args.first}: no normalized transcripts of {args.model}: run the pipeline there first")
    print(f"{args.model}: {args.second} - {args.first}, paired 95% intervals ({args.resamples} resamples)\n")
    print("| test set | utterances | CER first | CER second | second − first [95%] |")
    print("|---|---|---|---|---|")
    for corpus in corpora:
        a, b = errors(args.first, args.model, corpus), errors(args.second, args.model, corpus)
        if set(a) != set(b):
            sys.exit(f"{corpus}: the two runs scored different utterances ({len(set(a) ^ set(b))} differ): not the same test set")
        keys = sorted(a)
        n = np.array([a[k][1] for k in keys])
        if not n.sum():
            continue  # no reference text (a non-speech set): nothing to compare by CER
        ea, eb = np.array([a[k][0] for k in keys]), np.array([b[k][0] for k in keys])
        boot = bootstrap_rates([eb, ea], n, args.resamples, resample_seed(42, corpus))
        lo, hi = interval95(boot[0] - boot[1])
        ra, rb = ea.sum() / n.sum(), eb.sum() / n.sum()
        print(f"| {corpus} | {len(keys)} | {ra:.4f} | {rb:.4f} | {rb - ra:+.4f} [{lo:+.4f}, {hi:+.4f}] |")


if __name__ == "__main__":
    main()
