"""split <corpus>: train/val/test (split.ratios, default 8:1:1), seeded, speaker-disjoint by default;
split.by: text or speaker_text keeps every copy of a sentence in one split. Every mode reports the
test utterances whose normalized transcript also occurs in train or val."""

from __future__ import annotations

import json
import shutil
from contextlib import ExitStack

from asrtune import chatml, params, paths
from asrtune.errors import UserError
from asrtune.manifest import read_jsonl
from asrtune.normalization import normalize
from asrtune.splitting import SPLITS, assign, groups_for, overlap

UNITS = {"speaker": "speakers", "utterance": "utterances", "text": "distinct sentences (after normalization)",
         "speaker_text": "groups of speakers and the sentences they share"}
HINTS = {"speaker": " (split.by: utterance splits utterances instead)",
         "text": " (split.by: utterance splits the copies of a sentence too)",
         "speaker_text": " (split.by: text keeps sentences apart but lets speakers straddle; speaker keeps speakers apart only)"}


def run(corpus: str) -> None:
    """Write data/split/<corpus>/{train,val,test}.jsonl and summary.json (counts and the test overlap)."""
    all_params = params.load()
    p = all_params.split
    # pass 1: only (key, speaker, normalized transcript, duration) in memory, from the manifest
    records, durations, no_speaker = [], {}, 0
    for r in read_jsonl(paths.manifest(corpus), stage_hint=f"ingest@{corpus}"):
        key = chatml.key_for(corpus, r["id"])
        records.append((key, r["speaker"] or "", normalize(r["text"], all_params.normalize)))
        durations[key] = r["duration"]
        no_speaker += not r["speaker"]
    groups = groups_for(records, p.by)
    speaker_of = {key: speaker for key, speaker, _ in records}
    text_of = {key: text for key, _, text in records}
    del records
    where = assign(groups, p.ratios, p.seed)
    empty = [s for s in SPLITS if s not in set(where.values())]
    if empty:  # finetune needs val (best checkpoint), decode and score need test
        raise UserError(f"split.ratios: {corpus} has {len({g for _, g in groups})} {UNITS[p.by]}, too few to give "
                        f"{' and '.join(empty)} any with ratios {list(p.ratios)}" + HINTS.get(p.by, ""))
    shared = overlap(where, text_of)

    # pass 2: stream the ChatML records into their split files (input order = sorted by key)
    out = paths.split_dir(corpus)
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    counts = {s: {"utterances": 0, "hours": 0.0, "speakers": set()} for s in SPLITS}
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
                   "speakers": len(c["speakers"] - {""})} for s, c in counts.items()}
    summary["overlap"] = shared
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    print(f"split {corpus} (by {p.by}, ratios {list(p.ratios)}, seed {p.seed}):")
    for s in SPLITS:
        print(f"  {s:<5} {summary[s]['utterances']:>7} utt  {summary[s]['hours']:>8.3f} h  {summary[s]['speakers']:>4} speakers")
    print(f"  overlap: {shared['test_utterances']} of {summary['test']['utterances']} test utterances ({100 * shared['share']:.1f}%) "
          "have a transcript (normalized) that also occurs in train or val" + ("" if shared["test_utterances"] else ": none"))
    if shared["test_utterances"] and p.by in ("speaker", "utterance"):
        print("  (split.by: text or speaker_text keeps every copy of a sentence in one split)")
    if no_speaker and p.by in ("speaker", "speaker_text"):
        print(f"  warning: {no_speaker} utterances have no speaker; each was split on its own"
              + (" (linked by its sentence only)" if p.by == "speaker_text" else ""))
