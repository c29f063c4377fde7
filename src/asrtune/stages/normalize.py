"""normalize <model> <corpus>: references and hypotheses through the same normalizer.

A reference with no hypothesis line is kept with an empty hypothesis and flagged `missing`
(scored as deletions), never dropped; a hypothesis for a key not in the test set is an error.
Where decode recorded which utterances stopped at its max-new-tokens guard (data/decode/<m>/<c>.capped.txt),
every row says so in `capped`. Decode's second pass with decode.hotwords' list (<c>.hotwords.tsv) is normalized the
same way into <c>.hotwords.jsonl; an empty one (decode.hotwords null) gives an empty file.
"""

from __future__ import annotations

import json

from asrtune import params, paths
from asrtune.corpus.manifest import read_jsonl, write_jsonl
from asrtune.errors import UserError
from asrtune.evaluation.normalization import normalize


def read_hyps(path) -> tuple[dict[str, str], dict[str, list]]:
    """key -> transcript, and key -> [[unit, start, end], ...] where decode wrote times."""
    if not path.is_file():
        raise UserError(f"{path}: not found (run `dvc repro decode` first)")
    hyps: dict[str, str] = {}
    times: dict[str, list] = {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        key, _, rest = line.partition("\t")
        if key in hyps:
            raise UserError(f"{path}:{number}: duplicate key {key}")
        hyps[key], _, unit_times = rest.partition("\t")
        if unit_times:
            times[key] = json.loads(unit_times)
    return hyps, times


def normalized_times(unit_times, opts) -> list:
    """[unit, start, end] with each unit normalized as the transcripts are (CT -> ct, 三 -> 3); units that
    normalize to nothing are dropped."""
    out = []
    for unit, start, end in unit_times:
        unit = normalize(unit, opts)
        if unit:
            out.append([unit, start, end])
    return out


def run(model: str, corpus: str) -> None:
    """Write data/normalized/<model>/<corpus>.jsonl and <corpus>.hotwords.jsonl (see normalize_one)."""
    opts = params.load().normalize
    records = {r["key"]: r for r in read_jsonl(paths.split_dir(corpus) / "test.jsonl", stage_hint=f"split@{corpus}")}
    normalize_one(model, corpus, records, opts)
    listed = model + paths.HOTWORDS
    if paths.decode_file(listed, corpus).is_file() and paths.decode_file(listed, corpus).stat().st_size:
        normalize_one(listed, corpus, records, opts)
    else:  # decode.hotwords null: decode wrote no second pass
        paths.normalized_file(listed, corpus).write_bytes(b"")


def normalize_one(model: str, corpus: str, records: dict, opts) -> None:
    """Write data/normalized/<model>/<corpus>.jsonl: key, ref, hyp, missing, capped (where decode recorded its
    guard; a missing hypothesis is not capped); where decode wrote times, `times`
    and, where the test set has reference timestamps, `ref_times` (pseudo_timestamps instead where they are
    the base aligner's pseudo-labels, which are no reference)."""
    refs = {k: r["messages"][2]["content"] for k, r in records.items()}
    hyp_file = paths.decode_file(model, corpus)
    hyps, times = read_hyps(hyp_file)
    ref_times = {}
    if times:
        from asrtune.corpus.timestamps import units

        ref_times = {k: normalized_times([[u, s, e] for u, (s, e) in zip(units(refs[k]), r["timestamps"])], opts)
                     for k, r in records.items() if r.get("timestamps") is not None and not r.get("pseudo_timestamps")}
    pseudo = {k for k, r in records.items() if r.get("pseudo_timestamps")}  # the base aligner's: not references
    extra = sorted(set(hyps) - set(refs))
    if extra:
        raise UserError(f"{hyp_file}: {len(extra)} keys are not in the {corpus} test set, e.g. {extra[0]}")
    missing = sorted(set(refs) - set(hyps))
    capped_file = paths.capped_file(model, corpus)
    capped = set(capped_file.read_text(encoding="utf-8").split()) if capped_file.is_file() else None
    rows = ({"key": k, "ref": normalize(refs[k], opts), "hyp": normalize(hyps.get(k, ""), opts), "missing": k not in hyps}
            | ({"capped": k in capped} if capped is not None else {})
            | ({"ref_times": ref_times[k]} if k in ref_times else {})
            | ({"times": normalized_times(times.get(k, []), opts)} if times else {})
            | ({"pseudo_timestamps": True} if k in pseudo else {})
            for k in sorted(refs))
    n = write_jsonl(paths.normalized_file(model, corpus), rows)
    note = f", {len(missing)} missing from {hyp_file} (scored as deletions)" if missing else ""
    if pseudo:
        note += (f"; {len(pseudo)} with pseudo-label timestamps, not scored (agreement with the base aligner, "
                 "not accuracy)")
    print(f"normalize {model} {corpus}: {n} utterances{note}")
