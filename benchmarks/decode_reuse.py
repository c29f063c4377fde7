"""What keeping Whisper's encoder outputs between decodes saves on a CPU, side by side in one run, on the same clips:
the demo's decodes of one test set (models/base, then models/merged, each a plain pass and decode.hotwords'
pass), once with the encoder run every time and once through transcription.encoder_reuse (an empty store at
the start, as on a fresh machine). Prints each decode's time, the ratio, and whether every transcript is the same.

    uv run --extra demo dvc repro                                     # the finished demo: models and test sets
    uv run python benchmarks/decode_reuse.py                          # the medical and general test sets (about 5 min)
    uv run python benchmarks/decode_reuse.py --corpus general_heldout # 400 clips (about 25 min)
    uv run python benchmarks/decode_reuse.py --quick                  # a tiny random Whisper, 3 clips: a smoke run
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
import warnings
from pathlib import Path

import soundfile as sf
from decode_speed import demo_clips, quick_setup

from asrtune import params, paths

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny random Whisper, 3 clips (smoke run)")
    parser.add_argument("--corpus", action="append", help="a test set (repeatable; default: medical and general)")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    import torch

    from asrtune.evaluation import hotwords
    from asrtune.evaluation.terms import read_terms
    from asrtune.stages.decode import decode_all, list_pass, transcriber

    p = params.load(REPO / "params.yaml")
    with tempfile.TemporaryDirectory(prefix="asrtune-reuse-bench-") as tmp_name:
        tmp = Path(tmp_name)
        os.environ["ASRTUNE_CACHE"] = str(tmp / "cache")  # an empty store, as on a fresh machine
        if args.quick:
            base, merged, items = quick_setup(tmp)
            terms = ["阿莫西林", "布洛芬", "CT"]
        else:
            base, merged, items = REPO / paths.BASE_MODEL, REPO / paths.MERGED_MODEL, demo_clips(p, args.corpus or ["medical", "general"])
            terms = read_terms(REPO / p.decode.hotwords, "decode.hotwords") if p.decode.hotwords else []
        audio = {e.key: sf.read(e.audio, dtype="float32")[0] for e in items}
        seconds = sum(len(a) for a in audio.values()) / 16000
        b = p.decode.batch_size

        def decodes(reuse: bool) -> tuple[dict, dict]:
            """Each model's plain pass, then its hotword pass, as the decode stages run them (base first)."""
            hyps, times = {}, {}
            for name, src in (("base", base), ("merged", merged)):
                run, _ = transcriber(p, src, None, reuse=reuse)
                start = time.perf_counter()
                first = decode_all(run, items, audio, b, name)
                times[name] = time.perf_counter() - start
                contexts = hotwords.for_decoding(terms, p.decode.hotwords_select, first, p.decode.hotwords_max_distance)
                start = time.perf_counter()
                listed = list_pass(run, items, audio, b, f"{name}+hotwords", contexts, first, set())
                times[name + "+hotwords"] = time.perf_counter() - start
                hyps[name], hyps[name + "+hotwords"] = first, listed
            return hyps, times

        warm, _ = transcriber(p, base, None)
        warm(items[:1], [audio[items[0].key]])  # lazy initialisation is not decoding speed
        plain, plain_t = decodes(reuse=False)
        reused, reused_t = decodes(reuse=True)

    print(f"\n{len(items)} clips, {seconds:.1f} s of audio, CPU ({torch.get_num_threads()} torch threads), "
          f"{'a tiny random Whisper' if args.quick else 'models/base and models/merged (whisper-base)'}, "
          f"decode.timestamps {p.decode.timestamps}:\n")
    print("| decode | encoder every time (s) | encoder outputs reused (s) | ratio | transcripts |")
    print("|---|---|---|---|---|")
    for name in plain_t:
        same = "the same" if plain[name] == reused[name] else "DIFFER"
        print(f"| {name} | {plain_t[name]:.1f} | {reused_t[name]:.1f} | {plain_t[name] / reused_t[name]:.2f}x | {same} |")
    total, total_reused = sum(plain_t.values()), sum(reused_t.values())
    print(f"| all four | {total:.1f} | {total_reused:.1f} | {total / total_reused:.2f}x | "
          f"{'the same' if plain == reused else 'DIFFER'} |")


if __name__ == "__main__":
    main()
