"""sweep: with merge.scale auto, the trade-off between domain gain and general change that merge picks its scale from.

For 0 (models/base itself) and each scale of merge.sweep, the model base + scale x (tuned - base) (merge's
interpolation, built in memory: the tuned chain and models/base are loaded once) decodes the val split of every
corpus of role domain or general (never trained on, though finetune picks its best checkpoint on it; the demo's val
speakers have voices no training speaker has) through decode's own code (its plain pass, without decode.hotwords'
lists: the pass score compares base and merged on; transformers, float32 weights under the precision training
used; no timestamps: only the text is scored) and is scored as score scores: both sides normalized (normalize.*),
CER = errors / reference tokens, pooled over the utterances of each role's corpora. It writes
plots/merge_scale.csv (a row per scale: domain and general CER, domain_gain = base - scale on domain,
general_change = scale - base on general) and metrics/merge_scale.json (the same numbers per corpus and pooled,
and the chosen scale, which merge reads), and prints the table.

auto: the largest scale of merge.sweep whose general change (the pooled point estimate, rounded to 4 places as
printed) is at most merge.max_general_change; if none is, the smallest, with a warning; without a general corpus,
1.0, with a note. Val sets are small: the choice is noisy (score's intervals on the test sets say how much).

With a numeric merge.scale it loads nothing: a header-only plot and a metrics file that says so, in a second,
so numeric users pay nothing for it.
"""

from __future__ import annotations

import csv
import json
import time
from pathlib import Path

from asrtune import params, paths
from asrtune.stages.merge import SCALE_FILE

PLOT = Path("plots/merge_scale.csv")
COLUMNS = ["scale", "domain_cer", "general_cer", "domain_gain", "general_change", "chosen"]
ROLES = ("domain", "general")  # the roles with a val split (role test and domain_test corpora are all test)


def choose(general_change: dict[float, float] | None, bound: float) -> tuple[float, str, bool]:
    """(scale, why, warning) from each swept scale's general change (scale - base; None: no general corpus)."""
    if general_change is None:
        return 1.0, "no corpus of role general (with val speech) to bound the change on: 1.0, the tuned model as trained", False
    within = [s for s, change in general_change.items() if change <= bound]
    if within:
        best = max(within)
        return best, (f"the largest scale whose general change ({general_change[best]:+.4f}) is within "
                      f"merge.max_general_change ({bound:g})"), False
    smallest = min(general_change)
    return smallest, (f"no scale keeps the general change within merge.max_general_change ({bound:g}): the smallest, "
                      f"{smallest:g} (general change {general_change[smallest]:+.4f})"), True


def _key(scale: float) -> str:
    return f"{scale:g}"


def write_plot(rows: list[dict]) -> None:
    PLOT.parent.mkdir(parents=True, exist_ok=True)
    with open(PLOT, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)


def write_summary(summary: dict) -> None:
    SCALE_FILE.parent.mkdir(parents=True, exist_ok=True)
    SCALE_FILE.write_text(json.dumps(summary, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def run() -> None:
    """Write plots/merge_scale.csv and metrics/merge_scale.json."""
    p = params.load()
    if p.merge.scale != "auto":
        write_plot([])
        write_summary({"scale": p.merge.scale, "chosen_by": "params",
                       "note": f"merge.scale is {p.merge.scale:g}: nothing swept (merge.scale auto decodes the val sets at each "
                               "scale of merge.sweep and picks one)"})
        print(f"sweep: merge.scale={p.merge.scale:g}, nothing to sweep")
        return
    sets = _val_sets(p)
    scales = [0.0, *p.merge.sweep]
    start = time.perf_counter()
    counts, runtime = _decode(p, sets, scales) if sets else ({}, "nothing to decode")
    wall = time.perf_counter() - start
    pooled = {role: {s: _pooled([counts[c][s] for c, (r, _) in sets.items() if r == role]) for s in scales} for role in ROLES}
    general_change = ({s: round(pooled["general"][s] - pooled["general"][0.0], 4) for s in p.merge.sweep}
                      if pooled["general"][0.0] is not None else None)
    scale, why, warn = choose(general_change, p.merge.max_general_change)
    rows = []
    for s in scales:
        d, g = pooled["domain"][s], pooled["general"][s]
        rows.append({"scale": s, "domain_cer": d, "general_cer": g,
                     "domain_gain": None if d is None else round(pooled["domain"][0.0] - d, 4),
                     "general_change": None if g is None else round(g - pooled["general"][0.0], 4),
                     "chosen": s == scale})
    write_plot(rows)
    names = {role: [c for c, (r, _) in sets.items() if r == role] for role in ROLES}
    summary = {"scale": scale, "chosen_by": "auto", "why": why, "max_general_change": p.merge.max_general_change,
               **{k: {_key(r["scale"]): r[k] for r in rows} for k in ("domain_cer", "general_cer", "domain_gain", "general_change")},
               "cer": {c: {_key(s): _rate(counts[c][s]) for s in scales} for c in sets},
               "utterances": {c: len(items) for c, (_, items) in sets.items()},
               "n": {c: counts[c][0.0].n for c in sets},
               "note": ("val CER of base + scale x (tuned - base), 0 being models/base, pooled over the val utterances of the "
                        f"domain corpora ({', '.join(names['domain']) or 'none'}) and of the general ones "
                        f"({', '.join(names['general']) or 'none'}); domain_gain: base - scale, general_change: scale - base. "
                        "Val sets are small: the choice is noisy")}
    write_summary(summary)
    _print(rows, sets, runtime, wall)
    if warn:
        print(f"warning: merge.scale auto: {why}")
    print(f"sweep: merge.scale auto -> {scale:g}: {why}. Val is small: the choice is noisy (-> {SCALE_FILE}, {PLOT})")


def _val_sets(p: params.Params) -> dict:
    """corpus -> (role, its val examples), for the corpora of role domain or general, in params order."""
    from asrtune.corpus.chatml import examples
    from asrtune.corpus.manifest import read_jsonl

    return {c: (spec.role, examples(read_jsonl(paths.split_dir(c) / "val.jsonl", stage_hint=f"split@{c}")))
            for c, spec in p.data.corpora.items() if spec.role in ROLES}


def _decode(p: params.Params, sets: dict, scales: list[float]) -> tuple[dict, str]:
    """corpus -> scale -> pooled Counts over its val utterances, and what ran the decoding."""
    import soundfile as sf
    import torch

    from asrtune.evaluation.normalization import normalize
    from asrtune.evaluation.scoring import Counts, align
    from asrtune.stages.decode import decode_all, transcriber
    from asrtune.stages.merge import interpolate
    from asrtune.weights import chain

    if p.decode.engine != "transformers":
        print(f"note: sweep: the interpolated models decode in memory with transformers (decode.engine {p.decode.engine} is decode's)")
    # only the text is scored: no timestamps; an in-memory model runs through transformers
    q = p.model_copy(update={"decode": p.decode.model_copy(update={"engine": "transformers", "timestamps": False})})
    source = paths.finetune_dir(list(p.train.stages)[-1])
    net = chain.load(source).to(torch.float32)  # takes each scale in turn (on the GPU if any)
    tuned, copies = {}, {}  # the tuned weights, kept on the CPU; tied tensors share storage: one copy each
    for k, t in net.state_dict().items():
        if t.is_floating_point():
            if t.data_ptr() not in copies:
                copies[t.data_ptr()] = t.detach().clone()
            tuned[k] = copies[t.data_ptr()]
    base = chain.load(chain.root_of(source)).to(torch.float32)  # models/base, as merge interpolates from it
    transcribe, runtime = transcriber(q, source, None, net=net, reuse=True)
    audio = {c: {e.key: sf.read(e.audio, dtype="float32")[0] for e in items} for c, (_, items) in sets.items()}
    counts: dict[str, dict[float, Counts]] = {c: {} for c in sets}
    for scale in scales:
        interpolate(net, base, scale, tuned)  # lerp on the CPU, as merge: scale 0 is models/base's weights, 1 the tuned ones
        for c, (_, items) in sets.items():
            hyps = decode_all(transcribe, items, audio[c], q.decode.batch_size, f"sweep {scale:g} {c}")
            total = Counts()
            for e in items:
                total.add(align(e.key, normalize(e.text, p.normalize), normalize(hyps[e.key].partition("\t")[0], p.normalize)).counts)
            counts[c][scale] = total
    return counts, runtime


def _rate(c) -> float | None:
    """The CER rounded as score rounds it; None without a reference token (a val set without speech)."""
    return round(c.errors / c.n, 4) if c.n else None


def _pooled(counts: list) -> float | None:
    """errors / reference tokens over the val sets with a reference token (as score, a set without speech has no CER)."""
    from asrtune.evaluation.scoring import Counts

    total = Counts()
    for c in counts:
        if c.n:
            total.add(c)
    return _rate(total)


def _print(rows: list[dict], sets: dict, runtime: str, wall: float) -> None:
    def cell(v) -> str:
        return "-" if v is None else f"{v:.4f}"

    def signed(v) -> str:
        return "-" if v is None else f"{v:+.4f}"

    n = sum(len(items) for _, items in sets.values())
    print(f"sweep: {n} val utterances ({', '.join(f'{c} {len(items)}' for c, (_, items) in sets.items()) or 'none'}) "
          f"x {len(rows)} scales in {wall:.1f} s ({runtime})")
    print(f"{'scale':>6}  {'domain CER':>10}  {'general CER':>11}  {'domain gain':>11}  {'general change':>14}")
    for r in rows:
        print(f"{r['scale']:>6g}  {cell(r['domain_cer']):>10}  {cell(r['general_cer']):>11}  {signed(r['domain_gain']):>11}  "
              f"{signed(r['general_change']):>14}" + ("  <- chosen" if r["chosen"] else ""))
