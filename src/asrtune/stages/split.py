"""split <corpus>: train/val/test (split.ratios, default 8:1:1), seeded, speaker-disjoint by default."""

from __future__ import annotations

import json
import shutil
from contextlib import ExitStack

from asrtune import chatml, params, paths
from asrtune.errors import UserError
from asrtune.manifest import read_jsonl
from asrtune.splitting import SPLITS, assign


def run(corpus: str) -> None:
    """Write data/split/<corpus>/{train,val,test}.jsonl."""
    p = params.load().split
    # pass 1: only (key, group, duration) in memory, from the manifest
    groups, durations, no_speaker = [], {}, 0
    for r in read_jsonl(paths.manifest(corpus), stage_hint=f"ingest@{corpus}"):
        key = chatml.key_for(corpus, r["id"])
        if p.by == "speaker" and r["speaker"]:
            group = "spk:" + r["speaker"]
        else:
            no_speaker += p.by == "speaker"
            group = "utt:" + key
        groups.append((key, group))
        durations[key] = r["duration"]
    where = assign(groups, p.ratios, p.seed)
    empty = [s for s in SPLITS if s not in set(where.values())]
    if empty:  # finetune needs val (best checkpoint), decode and score need test
        unit = f"{len({g for _, g in groups})} speakers" if p.by == "speaker" else f"{len(groups)} utterances"
        raise UserError(f"split.ratios: {corpus} has {unit}, too few to give {' and '.join(empty)} any with ratios {list(p.ratios)}"
                        + (" (split.by: utterance splits utterances instead)" if p.by == "speaker" else ""))

    # pass 2: stream the ChatML records into their split files (input order = sorted by key)
    out = paths.split_dir(corpus)
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    counts = {s: {"utterances": 0, "hours": 0.0, "speakers": set()} for s in SPLITS}
    speaker_of = dict(groups)
    with ExitStack() as stack:
        files = {s: stack.enter_context(open(out / f"{s}.jsonl", "w", encoding="utf-8", newline="\n")) for s in SPLITS}
        for record in read_jsonl(paths.jsonl(corpus), stage_hint=f"jsonl@{corpus}"):
            key = record["key"]
            split = where[key]
            files[split].write(json.dumps(record, ensure_ascii=False, separators=(",", ":")) + "\n")
            c = counts[split]
            c["utterances"] += 1
            c["hours"] += durations[key] / 3600
            c["speakers"].add(speaker_of[key])

    summary = {s: {"utterances": c["utterances"], "hours": round(c["hours"], 4),
                   "speakers": sum(g.startswith("spk:") for g in c["speakers"])} for s, c in counts.items()}
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    print(f"split {corpus} (by {p.by}, ratios {list(p.ratios)}, seed {p.seed}):")
    for s in SPLITS:
        print(f"  {s:<5} {summary[s]['utterances']:>7} utt  {summary[s]['hours']:>8.3f} h  {summary[s]['speakers']:>4} speakers")
    if no_speaker:
        print(f"  warning: {no_speaker} utterances have no speaker; each was split on its own")
