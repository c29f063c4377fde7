"""Peak memory of the model stages on the finished demo, each run as its own process as DVC runs
it, in a scratch repository linked to the demo's models and data (nothing of the demo is written):

- finetune s1 as committed (whisper-base, batch 16, frozen encoder with its outputs cached, LoRA
  on the decoder, 2 epochs with evaluation); the demo's encoder cache is reused, so this is the
  training's memory, not the cache fill's;
- convert merged (decode.engine=ctranslate2: CTranslate2's converter);
- decode merged on the medical test set with each engine (batch 16, greedy).

    uv run --extra demo dvc repro                        # the finished demo
    uv run python benchmarks/stage_memory.py             # about 4 minutes on 2 cores
    uv run python benchmarks/stage_memory.py --quick     # a tiny random Whisper: a smoke run
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

import yaml
from common import REPO, run_stage, scratch_repo, write_params

from asrtune import paths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny random Whisper, 16 noise clips, one decode (smoke run)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="asrtune-memory-bench-") as tmp_name:
        tmp = Path(tmp_name)
        repo = scratch_repo(tmp / "repo", args.quick, clips=16)
        cache = tmp / "cache"
        cache.mkdir()
        if args.quick:
            (repo / "models/merged").symlink_to(repo / "models/base")
        elif (REPO / paths.cache_dir() / "encoder").is_dir():  # the demo's (REPO / an absolute path = that path)
            (cache / "encoder").symlink_to(REPO / paths.cache_dir() / "encoder")  # read; checkpoints stay in tmp
        env = {"ASRTUNE_CACHE": str(cache)}
        params = yaml.safe_load((repo / "params.yaml").read_text(encoding="utf-8"))
        stage = next(iter(params["train"]["stages"]))
        params["mix"]["stages"] = {stage: params["mix"]["stages"][stage]}
        params["train"]["stages"] = {stage: params["train"]["stages"][stage]}
        corpus = "quick" if args.quick else "medical"
        runs = []
        stages = [(f"finetune {stage}", ["finetune", stage], "transformers"),
                  ("convert merged (CTranslate2)", ["convert", "merged"], "ctranslate2"),
                  (f"decode merged {corpus}, ctranslate2", ["decode", "merged", corpus], "ctranslate2"),
                  (f"decode merged {corpus}, transformers", ["decode", "merged", corpus], "transformers")]
        for what, args_, engine in stages[-1:] if args.quick else stages:  # quick: one stage (train_speed runs finetune)
            params["decode"]["engine"] = engine
            write_params(repo, params)
            runs.append((what, run_stage(args_, repo, env)))
    print(f"\n{'tiny random Whisper, noise clips' if args.quick else 'the demo (whisper-base)'}, CPU ({os.cpu_count()} cores), "
          "one process per stage:\n")
    print("| stage | wall | peak RSS |")
    print("|---|---|---|")
    for what, run in runs:
        print(f"| {what} | {run.wall:.0f} s | {run.peak_mib / 1024:.2f} GiB |")


if __name__ == "__main__":
    main()
