"""pseudo <corpus>: timestamps from the base aligner for the corpus's utterances that have none
(align.pseudo_labels: true, with a Qwen3-ForcedAligner as model.base), so the aligner can be fine-tuned on
speech that has transcripts only. jsonl merges them in, marked `pseudo_timestamps`; score never scores
against them: they measure agreement with the base aligner, not accuracy. Off: an empty file.
"""

from __future__ import annotations

import time

from asrtune import params, paths
from asrtune.corpus.manifest import read_jsonl, write_jsonl
from asrtune.errors import UserError
from asrtune.weights import chain


def run(corpus: str) -> None:
    """Write data/pseudo/<corpus>.jsonl: {id, timestamps} for each manifest utterance without timestamps."""
    p = params.load()
    out = paths.pseudo_labels(corpus)
    if not p.align.pseudo_labels:
        write_jsonl(out, [])
        print(f"pseudo {corpus}: align.pseudo_labels is false: none made")
        return
    family = chain.family_of(paths.BASE_MODEL)
    if family != "aligner":
        raise UserError(f"align.pseudo_labels: models/base is a {family} model; pseudo-labels come from a "
                        "Qwen3-ForcedAligner as model.base (e.g. Qwen/Qwen3-ForcedAligner-0.6B-hf)")
    todo = [r for r in read_jsonl(paths.manifest(corpus), stage_hint=f"ingest@{corpus}") if r.get("timestamps") is None]
    start = time.perf_counter()
    labels = label(p, todo) if todo else {}
    n = write_jsonl(out, ({"id": k, "timestamps": labels[k]} for k in sorted(labels)))
    untimed = len(todo) - n
    note = f"; {untimed} with no unit to time (left without: the aligner's training rejects them with the reason)" if untimed else ""
    print(f"pseudo {corpus}: {n} of {len(todo)} utterances without timestamps labelled by {paths.BASE_MODEL} "
          f"in {time.perf_counter() - start:.1f} s{note} -> {out}")


def label(p: params.Params, records: list[dict]) -> dict[str, list[list[float]]]:
    """id -> [start, end] per unit, from the base aligner, longest clips first (less padding)."""
    import soundfile as sf
    from tqdm import tqdm

    from asrtune.corpus import timestamps
    from asrtune.families import aligner
    from asrtune.weights import precision

    model, _ = precision.load_for_inference(p, paths.BASE_MODEL)  # as decode runs it
    processor = aligner.load_processor(paths.BASE_MODEL)
    records = [r for r in records if timestamps.units(r["text"])]  # nothing to time: no pseudo-label
    audio = {r["id"]: sf.read(r["audio"], dtype="float32")[0] for r in records}
    order = sorted(records, key=lambda r: (-len(audio[r["id"]]), r["id"]))
    out = {}
    size = p.decode.batch_size
    for i in tqdm(range(0, len(order), size), desc="pseudo-labels", unit="batch"):
        batch = order[i : i + size]
        times = aligner.align(model, processor, [r["text"] for r in batch], [audio[r["id"]] for r in batch], p.model.language)
        for r, units in zip(batch, times):
            out[r["id"]] = timestamps.rounded([(s, e) for _, s, e in units])
    return out
