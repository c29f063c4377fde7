"""split <corpus>: train/val/test (split.ratios, default 8:1:1), seeded, speaker-disjoint by default;
split.by: text or speaker_text keeps every copy of a sentence in one split. Every mode reports the
test utterances whose normalized transcript also occurs in train or val.

An utterance whose manifest record has a `split` (the corpus fixes it: an official test set, the demo's
held-out voices) goes there, and so does the rest of its split.by group; split.ratios and split.seed
place the others (the ratios are the whole corpus's, the fixed utterances counted). A group fixed to two
splits is an error naming both utterances. A role: test or domain_test corpus is all test (train and val empty files).
The summary states who is in each split: every speaker with its utterance count and, for the demo, its
voice, and the demo's voice parts (Kokoro styles, eSpeak variants) per split."""

from __future__ import annotations

import json
import shutil
from collections import Counter
from contextlib import ExitStack

from asrtune import params, paths
from asrtune.corpus import chatml
from asrtune.corpus.manifest import read_jsonl
from asrtune.corpus.splitting import SPLITS, Conflict, assign, groups_for, overlap, voice_parts
from asrtune.errors import UserError
from asrtune.evaluation.normalization import normalize

UNITS = {"speaker": "speakers", "utterance": "utterances", "text": "distinct sentences (after normalization)",
         "speaker_text": "groups of speakers and the sentences they share"}
LINKS = {"speaker": "both spoken by speaker {}", "text": "both the sentence {!r} (normalized)",
         "speaker_text": "linked by the speakers and sentences they share", "utterance": "one utterance"}
HINTS = {"speaker": " (split.by: utterance splits utterances instead)",
         "text": " (split.by: utterance splits the copies of a sentence too)",
         "speaker_text": " (split.by: text keeps sentences apart but lets speakers straddle; speaker keeps speakers apart only)"}


def run(corpus: str) -> None:
    """Write data/split/<corpus>/{train,val,test}.jsonl and summary.json (counts and the test overlap)."""
    all_params = params.load()
    p = all_params.split
    spec = all_params.data.corpora.get(corpus)
    test_only = spec is not None and spec.evaluation_only
    # pass 1: only (key, speaker, normalized transcript, duration, fixed split, voice) in memory, from the manifest
    records, durations, no_speaker, fixed, voices = [], {}, 0, {}, {}
    for r in read_jsonl(paths.manifest(corpus), stage_hint=f"ingest@{corpus}"):
        key = chatml.key_for(corpus, r["id"])
        records.append((key, r["speaker"] or "", normalize(r["text"], all_params.normalize)))
        durations[key] = r["duration"]
        no_speaker += not r["speaker"]
        if r.get("split") is not None:
            fixed[key] = r["split"]
        if r.get("voice") is not None and r["speaker"]:
            voices[r["speaker"]] = r["voice"]
    speaker_of = {key: speaker for key, speaker, _ in records}
    text_of = {key: text for key, _, text in records}
    if test_only:  # evaluation only: all of it is the test set
        trained = sorted(k for k, s in fixed.items() if s != "test")
        if trained:
            raise UserError(f"data.corpora.{corpus}.role is {spec.role} (all of it is tested), but {paths.manifest(corpus)} fixes "
                            f"{len(trained)} utterances to train or val, e.g. {trained[0]} ({fixed[trained[0]]}): "
                            "give the corpus role domain or general to train on them")
        where = {key: "test" for key, _, _ in records}
        n_groups = None
    else:
        groups = groups_for(records, p.by)
        try:
            where = assign(groups, p.ratios, p.seed, fixed)
        except Conflict as e:
            (a, split_a), (b, split_b) = e.first, e.second
            link = LINKS[p.by].format(speaker_of[a] if p.by == "speaker" else text_of[a])
            raise UserError(f"split.by: {p.by}: {paths.manifest(corpus)} fixes {a} to {split_a} and {b} to {split_b}, "
                            f"{link}: one would be trained on with the other tested; fix the manifest's `split`"
                            + (" (split.by: utterance honours the fixed splits as they are)" if p.by != "utterance" else "")) from None
        n_groups = len({g for _, g in groups})
        del groups
        empty = [s for s in SPLITS if s not in set(where.values())]
        if empty:  # finetune needs val (best checkpoint), decode and score need test
            note = f" ({len(fixed)} utterances' split fixed by the manifest)" if fixed else ""
            raise UserError(f"split.ratios: {corpus} has {n_groups} {UNITS[p.by]}{note}, too few to give "
                            f"{' and '.join(empty)} any with ratios {list(p.ratios)}" + HINTS.get(p.by, ""))
    del records
    shared = overlap(where, text_of)

    # pass 2: stream the ChatML records into their split files (input order = sorted by key)
    out = paths.split_dir(corpus)
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    counts = {s: {"utterances": 0, "hours": 0.0, "speakers": Counter(), "fixed": 0} for s in SPLITS}
    with ExitStack() as stack:
        files = {s: stack.enter_context(open(out / f"{s}.jsonl", "w", encoding="utf-8", newline="\n")) for s in SPLITS}
        for record in read_jsonl(paths.jsonl(corpus), stage_hint=f"jsonl@{corpus}"):
            key = record["key"]
            split = where[key]
            files[split].write(json.dumps(record, ensure_ascii=False, separators=(",", ":")) + "\n")
            c = counts[split]
            c["utterances"] += 1
            c["hours"] += durations[key] / 3600
            c["speakers"][speaker_of[key]] += 1
            c["fixed"] += key in fixed

    summary = {}
    for s, c in counts.items():
        named = {spk: n for spk, n in sorted(c["speakers"].items()) if spk}
        summary[s] = {"utterances": c["utterances"], "hours": round(c["hours"], 4), "speakers": len(named),
                      "fixed": c["fixed"], "no_speaker": c["speakers"][""], "by_speaker": named}
        if voices:  # the demo: each speaker's synthetic voice, and what the split's voices are made of
            summary[s]["voices"] = {spk: voices[spk] for spk in named if spk in voices}
            summary[s]["voice_parts"] = sorted({part for spk in named if spk in voices for part in voice_parts(voices[spk])})
    summary["role"] = spec.role if spec is not None else None
    summary["overlap"] = shared
    (out / "summary.json").write_text(json.dumps(summary, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    how = f"role {spec.role}: all of it" if test_only else f"by {p.by}, ratios {list(p.ratios)}, seed {p.seed}"
    print(f"split {corpus} ({how}" + (f"; {len(fixed)} utterances' split fixed by the manifest" if fixed else "") + "):")
    for s in SPLITS:
        print(f"  {s:<5} {summary[s]['utterances']:>7} utt  {summary[s]['hours']:>8.3f} h  {summary[s]['speakers']:>4} speakers"
              + (f"  voices of {', '.join(summary[s]['voice_parts'])}" if summary[s].get("voice_parts") else ""))
    print(f"  overlap: {shared['test_utterances']} of {summary['test']['utterances']} test utterances ({100 * shared['share']:.1f}%) "
          "have a transcript (normalized) that also occurs in train or val" + ("" if shared["test_utterances"] else ": none"))
    if shared["test_utterances"] and p.by in ("speaker", "utterance"):
        print("  (split.by: text or speaker_text keeps every copy of a sentence in one split)")
    if no_speaker and p.by in ("speaker", "speaker_text"):
        print(f"  warning: {no_speaker} utterances have no speaker; each was split on its own"
              + (" (linked by its sentence only)" if p.by == "speaker_text" else ""))
