"""ingest <corpus>: check every utterance, make audio 16 kHz mono, write manifest + rejected.tsv."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

from asrtune import params, paths
from asrtune.corpus.ingestion import Result, ingest
from asrtune.corpus.sources import Item, Reading, read_chatml, read_folder, read_kaldi, read_table
from asrtune.errors import UserError
from asrtune.params import Corpus


def detect_format(corpus: Corpus, name: str) -> str:
    src = Path(corpus.source)
    if not src.exists():
        raise UserError(f"data.corpora.{name}.source: {src} does not exist")
    if corpus.format != "auto":
        return corpus.format
    if src.is_dir():
        if (src / "wav.scp").exists():
            return "kaldi"
        from asrtune.corpus.subtitles import layout

        subtitled, transcribed = layout(src)
        if subtitled and transcribed:
            raise UserError(f"data.corpora.{name}.source: {src} holds media with subtitles ({subtitled}) and audio with .txt "
                            f"transcripts ({transcribed}): set data.corpora.{name}.format to subtitles or folder")
        return "subtitles" if subtitled else "folder"
    formats = {".yaml": "demo", ".yml": "demo", ".csv": "csv", ".tsv": "csv", ".jsonl": "chatml", ".json": "chatml"}
    if src.suffix.lower() not in formats:
        raise UserError(f"data.corpora.{name}.source: {src}: cannot tell the format from the name; set data.corpora.{name}.format")
    return formats[src.suffix.lower()]


def read_items(corpus: Corpus, fmt: str, name: str = "", max_duration: float = 30.0) -> Reading | Iterator[Item]:
    src = Path(corpus.source)
    if fmt == "demo":
        from asrtune.synth import nonspeech

        if nonspeech.is_spec(src):
            if corpus.role not in ("test", "nonspeech"):  # a domain_test corpus is the domain's speech
                raise UserError(f"data.corpora.{name}: {src} is a non-speech set: set role: test (evaluation only) or "
                                "role: nonspeech (trained on, mixed at mix.stages.<s>.nonspeech)")
            return nonspeech.read_nonspeech(src, corpus.seed, evaluation=corpus.role == "test")
        from asrtune.synth.demo_corpus import read_demo

        return read_demo(src, corpus.utterances, corpus.speakers, corpus.seed, corpus.voice,
                         heldout=corpus.heldout_speakers, test=corpus.evaluation_only)
    if fmt == "kaldi":
        return read_kaldi(src)
    if fmt == "folder":
        return read_folder(src)
    if fmt == "subtitles":
        from asrtune.corpus.subtitles import read_subtitles

        if not src.is_dir():
            raise UserError(f"data.corpora.{name}.source: {src}: a subtitles corpus is a folder of media with same-stem subtitles")
        return read_subtitles(src, max_duration, corpus.cue_gap)
    if fmt == "csv":
        columns = {"path": corpus.path_column, "text": corpus.text_column, "speaker": corpus.speaker_column, "id": corpus.id_column,
                   "split": corpus.split_column}
        return read_table(src, columns)
    return read_chatml(src)


def items_in(items: Reading | Iterator[Item], result: Result) -> int:
    """How many utterances came in: the reader's own count, checked against accepted + rejected.
    ingest makes exactly one outcome of every item it is given, so only a count taken apart from the
    items catches a reader that drops or doubles one: asrtune's bug, never the corpus's."""
    out = result.accepted + result.rejected
    seen = getattr(items, "seen", None)
    if seen is None:  # the demo: it makes its utterances, none come in
        return out
    if seen != out:
        raise RuntimeError(f"internal error: the {items.reader} reader saw {seen} utterances come in but passed on {out} "
                           f"({result.accepted} accepted + {result.rejected} rejected); please report this")
    return seen


def run(corpus: str) -> None:
    """Ingest one corpus of data.corpora."""
    p = params.load()
    if corpus not in p.data.corpora:
        raise UserError(f"data.corpora has no corpus '{corpus}' (have: {', '.join(p.data.corpora)})")
    spec = p.data.corpora[corpus]
    fmt = detect_format(spec, corpus)
    out = paths.ingest_dir(corpus)
    shutil.rmtree(out, ignore_errors=True)
    items = read_items(spec, fmt, corpus, p.data.max_duration)  # subtitles: merged cues stay within it
    result = ingest(items, paths.manifest(corpus), out / "rejected.tsv", out / "audio",
                    paths.cache_dir() / "http", p.data.min_duration, p.data.max_duration, progress=f"ingest {corpus}",
                    nonspeech=spec.role == "nonspeech")
    n_in = items_in(items, result)
    hours = result.seconds / 3600
    summary = {"corpus": corpus, "format": fmt, "source": spec.source, "in": n_in, "accepted": result.accepted,
               "rejected": result.rejected, "reasons": dict(sorted(result.reasons.items())),
               "converted": result.converted, "hours": round(hours, 4), "speakers": result.speakers}
    counts = getattr(items, "counts", None) or {}  # a reader's own tallies (subtitles: cues in = kept + merged + rejected)
    summary.update(counts)
    if fmt == "demo":
        from asrtune.synth import nonspeech
        from asrtune.synth.demo_corpus import load_topic

        terms = [] if nonspeech.is_spec(Path(spec.source)) else load_topic(Path(spec.source)).terms
        (out / "terms.txt").write_text("".join(t + "\n" for t in terms), encoding="utf-8")
    (out / "summary.json").write_text(json.dumps(summary, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")

    print(f"ingest {corpus} ({fmt}, {spec.source}): {n_in} in = {result.accepted} accepted + {result.rejected} rejected; "
          f"{hours:.3f} h, {summary['speakers']} speakers, {result.converted} converted to 16 kHz mono")
    if "cues" in counts:
        c = counts["cues"]
        print(f"  cues: {c['in']} in = {c['kept']} kept (one utterance each) + {c['merged']} merged into the utterance before + "
              f"{c['rejected']} rejected; {counts['files_rejected']} files rejected whole")
    for reason, count in sorted(result.reasons.items()):
        print(f"  rejected {reason:<18} {count:>6}   (see {out / 'rejected.tsv'})")
    if result.accepted == 0:
        raise UserError(f"{spec.source}: no usable utterances in corpus '{corpus}' (reasons in {out / 'rejected.tsv'})")
