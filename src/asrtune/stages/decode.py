"""decode <model> <corpus>: transcribe a corpus's test split with `base` or `merged`.

Batched and sorted by length (less padding), greedy unless decode.num_beams > 1, with a
repetition guard; writes `key<TAB>text` in key order and prints the real-time factor.
"""

from __future__ import annotations

import time

import soundfile as sf
from tqdm import tqdm

from asrtune import checkpoint, families, params, paths
from asrtune.chatml import examples
from asrtune.errors import UserError
from asrtune.manifest import read_jsonl


def run(model: str, corpus: str) -> None:
    """Write data/decode/<model>/<corpus>.tsv."""
    p = params.load()
    if model not in paths.DECODED_MODELS:
        raise UserError(f"decode: model must be one of {', '.join(paths.DECODED_MODELS)}, got {model!r}")
    test = paths.split_dir(corpus) / "test.jsonl"
    items = examples(read_jsonl(test, stage_hint=f"split@{corpus}"))
    model_dir = paths.model_dir(model)
    if not model_dir.is_dir():
        raise UserError(f"{model_dir}: not found (run `dvc repro {'base' if model == 'base' else 'merge'}` first)")

    import torch
    import transformers

    transformers.logging.set_verbosity_error()  # generate() warns per batch about settings we chose on purpose
    fam = families.get(p.model.family)
    net = checkpoint.load(model_dir, p.model.family).eval()
    if torch.cuda.is_available():
        net = net.to("cuda", dtype=torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16)
    processor = fam.load_processor(checkpoint.root_of(model_dir))
    audio = {e.key: sf.read(e.audio, dtype="float32")[0] for e in items}
    order = sorted(items, key=lambda e: (-len(audio[e.key]), e.key))  # longest first: similar lengths batch together
    d = p.decode
    hyps: dict[str, str] = {}
    start = time.perf_counter()
    for i in tqdm(range(0, len(order), d.batch_size), desc=f"decode {model} {corpus}", unit="batch"):
        batch = order[i : i + d.batch_size]
        try:
            texts = fam.transcribe(net, processor, batch, [audio[e.key] for e in batch], p)
        except ValueError as e:  # e.g. a generation config without languages, or a language it lacks
            setting = f"model.language={p.model.language!r}" if p.model.family == "whisper" else f"model.family={p.model.family}"
            raise UserError(f"{model_dir}: cannot decode with {setting}: {str(e).splitlines()[0]}") from None
        hyps.update({e.key: " ".join(t.split()) for e, t in zip(batch, texts)})  # one line per utterance, no tabs
    wall = time.perf_counter() - start
    out = paths.decode_file(model, corpus)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("".join(f"{e.key}\t{hyps[e.key]}\n" for e in sorted(items, key=lambda e: e.key)), encoding="utf-8")
    seconds = sum(len(a) for a in audio.values()) / 16000
    print(f"decode {model} {corpus}: {len(items)} utterances, {seconds:.1f} s of audio in {wall:.1f} s, "
          f"RTF {wall / seconds:.3f} -> {out}")
