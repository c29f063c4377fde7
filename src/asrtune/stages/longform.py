"""longform: does the model hold on long audio, and what does cutting it into segments cost?

For each test set of longform.corpora, its test utterances are grouped by speaker (data/ingest/<c>/manifest.jsonl), in
key order, and joined with seeded pauses of digital silence (longform.pause seconds) into recordings of at most
longform.max_seconds (and at least longform.min_seconds where the speaker has that much): 16 kHz 16-bit WAV under
data/longform/audio/<c>/, listed in data/longform/manifest.jsonl (id, corpus, speaker, audio, duration, keys; offsets and
ends: where each clip lies in the recording, in seconds; spans: the part of each clip it holds; text: the clips'
transcripts joined in order). Each clip's silent edges are trimmed first (10 ms frames 40 dB under its loudest, 50 ms
kept): a recorded clip carries up to a second of silence at its edges, which would make every pause longer than VAD's
1 s and every segment one clip. Between the edges the clip's samples are unchanged.

models/base and models/merged transcribe each recording with `asrtune transcribe`'s own code
(transcribe.transcribe_file: Silero VAD segments of at most 30 s, decoded by decode.transcriber and decode.decode_all,
no term list), and the segments' texts, joined, are scored against the joined reference: both normalized by
normalize.* (asrtune.evaluation.normalization) and aligned by asrtune.evaluation.scoring, as score does. Beside it, the per-clip CER of the
very same clips from decode's hypotheses (data/decode/<m>/<c>.tsv, the plain pass, read as normalize reads it), and
long-form minus per-clip. Intervals: score.bootstrap resamples of each test set's recordings (seeded by score.seed and
the test set's name), a resampled recording bringing its clips along; every interval of a test set uses the same
resamples, so the differences are paired. Writes metrics/longform.json, data/longform/recordings.tsv (per recording and
model) and data/longform/transcripts.jsonl (each recording's segments as transcribed).
"""

from __future__ import annotations

import json
import re
import shutil
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import soundfile as sf
from tqdm import tqdm

from asrtune import params, paths
from asrtune.corpus.audio import SAMPLE_RATE
from asrtune.corpus.chatml import Example, examples, key_for
from asrtune.corpus.manifest import read_jsonl, write_jsonl
from asrtune.errors import UserError
from asrtune.evaluation.normalization import normalize, tokens
from asrtune.evaluation.scoring import Counts, align, bootstrap_rates, interval95, resample_seed, significant
from asrtune.stages.decode import transcriber
from asrtune.stages.normalize import read_hyps
from asrtune.transcription import transcribe
from asrtune.weights import chain

OUT = Path("data/longform")
AUDIO = OUT / "audio"
MANIFEST = OUT / "manifest.jsonl"
SCORES = OUT / "recordings.tsv"
TRANSCRIPTS = OUT / "transcripts.jsonl"
METRICS = Path("metrics/longform.json")
COLUMNS = ("corpus", "recording", "speaker", "seconds", "clips", "model", "segments", "ref_tokens", "errors", "cer",
           "clip_ref_tokens", "clip_errors", "clip_cer")


@dataclass
class Recording:
    id: str
    corpus: str
    speaker: str
    audio: Path
    clips: list[Example]
    offsets: list[int]  # samples: where each clip starts in the recording
    ends: list[int]
    spans: list[tuple[int, int]]  # samples: the part of each clip the recording holds (its silent edges trimmed)
    samples: int
    unit_times: list[tuple[float, float]] | None = None  # seconds: each unit of `text`, from the clips' reference timestamps
    text: str = field(init=False)

    def __post_init__(self):
        self.text = " ".join(e.text for e in self.clips)  # words of two clips never run together

    def record(self) -> dict:
        return {"id": self.id, "corpus": self.corpus, "speaker": self.speaker, "audio": self.audio.as_posix(),
                "duration": self.samples / SAMPLE_RATE, "keys": [e.key for e in self.clips],
                "offsets": [o / SAMPLE_RATE for o in self.offsets], "ends": [e / SAMPLE_RATE for e in self.ends],
                "spans": [[a / SAMPLE_RATE, b / SAMPLE_RATE] for a, b in self.spans], "text": self.text}


def plan(durations: list[int], pauses: list[int], longest: int, shortest: int) -> list[list[int]]:
    """The clips (indices, in order) of each recording of one speaker: filled in order up to `longest` (pauses[i] is
    the silence before clip i unless it opens a recording; a clip longer than `longest` is a recording of its own);
    a last recording under `shortest` takes clips from the end of the one before while that one stays at least
    `shortest` and the last at most `longest`."""
    def length(group: list[int]) -> int:
        return sum(durations[i] for i in group) + sum(pauses[i] for i in group[1:])

    groups: list[list[int]] = []
    for i in range(len(durations)):
        if groups and length(groups[-1] + [i]) <= longest:
            groups[-1].append(i)
        else:
            groups.append([i])
    while len(groups) > 1 and length(groups[-1]) < shortest and len(groups[-2]) > 1:
        before, last = groups[-2][:-1], [groups[-2][-1], *groups[-1]]
        if length(last) > longest or length(before) < shortest:
            break
        groups[-2:] = [before, last]
    return groups


def _slug(speaker: str) -> str:
    if not speaker:
        return "nospeaker"
    return speaker if re.fullmatch(r"[A-Za-z0-9_.-]+", speaker) else f"spk{zlib.crc32(speaker.encode('utf-8')):08x}"


TRIM_FRAME = SAMPLE_RATE // 100  # 10 ms
TRIM_DB = 40.0  # a frame this far under the clip's loudest is silence
TRIM_KEEP = SAMPLE_RATE // 20  # 50 ms of the edge kept before the first and after the last frame over it


def speech_span(samples: np.ndarray) -> tuple[int, int]:
    """[first, last) of a clip without its silent edges: from TRIM_KEEP before its first 10 ms frame within TRIM_DB of its
    loudest frame's RMS to TRIM_KEEP after its last one. The whole clip where it is all silence."""
    n = len(samples) // TRIM_FRAME
    if not n:
        return 0, len(samples)
    rms = np.sqrt((samples[: n * TRIM_FRAME].astype(np.float64).reshape(n, TRIM_FRAME) ** 2).mean(axis=1))
    loud = np.flatnonzero(rms >= rms.max() * 10 ** (-TRIM_DB / 20)) if rms.max() > 0 else []
    if not len(loud):
        return 0, len(samples)
    return max(0, loud[0] * TRIM_FRAME - TRIM_KEEP), min(len(samples), (loud[-1] + 1) * TRIM_FRAME + TRIM_KEEP)


def _read_clip(e: Example, corpus: str) -> np.ndarray:
    """A clip's 16-bit samples as ingest wrote them (16 kHz mono)."""
    try:
        samples, rate = sf.read(e.audio, dtype="int16")
    except (sf.LibsndfileError, RuntimeError, OSError) as err:
        raise UserError(f"{e.audio}: cannot read the audio of {e.key} ({str(err).splitlines()[0]}) "
                        f"(run `dvc repro ingest@{corpus}` first)") from None
    if rate != SAMPLE_RATE or samples.ndim != 1:
        raise UserError(f"{e.audio}: {rate} Hz, {1 if samples.ndim == 1 else samples.shape[1]} channels; ingest writes "
                        f"{SAMPLE_RATE} Hz mono (run `dvc repro ingest@{corpus}`)")
    return samples


def build(corpus: str, cfg: params.Longform, opts: params.Normalize) -> list[Recording]:
    """The test set's recordings, their WAV files written: each speaker's test clips in key order, with pauses."""
    test = paths.split_dir(corpus) / "test.jsonl"
    clips = sorted(examples(read_jsonl(test, stage_hint=f"split@{corpus}")), key=lambda e: e.key)
    if not clips:
        raise UserError(f"{test}: no test utterances (run `dvc repro split@{corpus}`)")
    records = {key_for(corpus, r["id"]): r for r in read_jsonl(paths.manifest(corpus), stage_hint=f"ingest@{corpus}")}
    speaker_of = {k: r.get("speaker") or "" for k, r in records.items()}
    strangers = [e.key for e in clips if e.key not in speaker_of]
    if strangers:
        raise UserError(f"{test}: {len(strangers)} keys are not in {paths.manifest(corpus)}, e.g. {strangers[0]} "
                        f"(run `dvc repro split@{corpus}`)")
    if not any(tokens(normalize(e.text, opts)) for e in clips):
        raise UserError(f"longform.corpora: {corpus}'s test references are all empty (a non-speech set): nothing to score "
                        "on long audio; leave it out")
    by_speaker: dict[str, list[Example]] = {}
    for e in clips:
        by_speaker.setdefault(speaker_of[e.key], []).append(e)
    lo, hi = cfg.pause
    out = []
    for speaker in sorted(by_speaker):
        mine = by_speaker[speaker]
        whole = [_read_clip(e, corpus) for e in mine]
        spans = [speech_span(a) for a in whole]
        audio = [a[first:last] for a, (first, last) in zip(whole, spans)]
        rng = np.random.default_rng([cfg.seed, zlib.crc32(corpus.encode("utf-8")), zlib.crc32(speaker.encode("utf-8"))])
        pauses = [int(round(x * SAMPLE_RATE)) for x in rng.uniform(lo, hi, size=len(mine))]
        groups = plan([len(a) for a in audio], pauses, int(round(cfg.max_seconds * SAMPLE_RATE)),
                      int(round(cfg.min_seconds * SAMPLE_RATE)))
        for n, group in enumerate(groups):
            parts, offsets, ends, t = [], [], [], 0
            for j, i in enumerate(group):
                if j:
                    parts.append(np.zeros(pauses[i], dtype=np.int16))
                    t += pauses[i]
                offsets.append(t)
                parts.append(audio[i])
                t += len(audio[i])
                ends.append(t)
            rec_id = f"{corpus}-{_slug(speaker)}-{n:02d}"
            path = AUDIO / corpus / f"{rec_id}.wav"
            path.parent.mkdir(parents=True, exist_ok=True)
            sf.write(str(path), np.concatenate(parts), SAMPLE_RATE, subtype="PCM_16")
            times = [records[mine[i].key].get("timestamps") for i in group]
            unit_times = None
            if all(x is not None for x in times):  # in the recording's time: the clip's offset, less its trimmed head
                unit_times = [((o - spans[i][0]) / SAMPLE_RATE + a, (o - spans[i][0]) / SAMPLE_RATE + b)
                              for i, o, clip in zip(group, offsets, times) for a, b in clip]
            out.append(Recording(rec_id, corpus, speaker, path, [mine[i] for i in group], offsets, ends, [spans[i] for i in group], t,
                                 unit_times))
    return out


def transcribe_all(p: params.Params, model: str, recordings: list[Recording]) -> dict[str, transcribe.Result]:
    """recording id -> its VAD segments as `model` transcribed them, through `asrtune transcribe`'s own code."""
    model_dir = paths.model_dir(model)
    run_model, runtime = transcriber(p, model_dir, paths.ct2_dir(model), reuse=True)
    seconds = sum(r.samples for r in recordings) / SAMPLE_RATE
    print(f"longform {model} ({runtime}): {len(recordings)} recordings, {seconds / 60:.1f} min")
    out = {}
    for rec in tqdm(recordings, desc=f"longform {model}", unit="recording"):
        try:
            out[rec.id] = transcribe.transcribe_file(rec.audio, run_model, p, None)
        except ValueError as e:  # as decode: a generation config without languages, or a language it lacks
            raise UserError(f"{model_dir}: cannot decode with model.language={p.model.language!r}: {str(e).splitlines()[0]}") from None
    return out


def _hyps(model: str, corpus: str, keys: set[str]) -> dict[str, str]:
    """decode's per-clip hypotheses, read as normalize reads them; a key decode lacks scores as deletions there too."""
    f = paths.decode_file(model, corpus)
    hyps, _ = read_hyps(f)
    extra = sorted(set(hyps) - keys)
    if extra:
        raise UserError(f"{f}: {len(extra)} keys are not in the {corpus} test set, e.g. {extra[0]} "
                        f"(run `dvc repro decode@{model}-{corpus}`)")
    return hyps


def _ci(values: np.ndarray) -> dict[str, float] | None:
    bounds = interval95(values)
    return None if bounds is None else {"lo": bounds[0], "hi": bounds[1]}


def _rates(c: Counts) -> dict[str, float | None]:
    return {k: round(v / c.n, 4) if c.n else None for k, v in (("sub", c.sub), ("del", c.dele), ("ins", c.ins))}


def score(p: params.Params, corpus: str, recs: list[Recording], results: dict[str, dict[str, transcribe.Result]],
          metrics: dict) -> list[dict]:
    """The test set's metrics into `metrics`; its recordings.tsv rows."""
    opts, models = p.normalize, list(results)
    keys = {e.key for r in recs for e in r.clips}
    rows, long_err, clip_err, totals = [], {}, {}, {}
    long_n = np.array([len(tokens(normalize(r.text, opts))) for r in recs])
    clip_n = np.array([sum(len(tokens(normalize(e.text, opts))) for e in r.clips) for r in recs])
    for m in models:
        hyps = _hyps(m, corpus, keys)
        long_total, clip_total, long_err[m], clip_err[m] = Counts(), Counts(), [], []
        for r in recs:
            said = " ".join(piece.text for piece in results[m][r.id].pieces if piece.text)
            u = align(r.id, normalize(r.text, opts), normalize(said, opts))
            c = Counts()
            for e in r.clips:
                c.add(align(e.key, normalize(e.text, opts), normalize(hyps.get(e.key, ""), opts), e.key not in hyps).counts)
            long_total.add(u.counts)
            clip_total.add(c)
            long_err[m].append(u.counts.errors)
            clip_err[m].append(c.errors)
            rows.append({"corpus": corpus, "recording": r.id, "speaker": r.speaker, "seconds": round(r.samples / SAMPLE_RATE, 3),
                         "clips": len(r.clips), "model": m, "segments": len(results[m][r.id].pieces), "ref_tokens": u.counts.n,
                         "errors": u.counts.errors, "cer": round(u.counts.rate, 4), "clip_ref_tokens": c.n,
                         "clip_errors": c.errors, "clip_cer": round(c.rate, 4)})
        totals[m] = (long_total, clip_total)
    seed = resample_seed(p.score.seed, f"longform/{corpus}")  # the same resamples for every interval below: paired
    long_boot = dict(zip(models, bootstrap_rates([long_err[m] for m in models], long_n, p.score.bootstrap, seed)))
    clip_boot = dict(zip(models, bootstrap_rates([clip_err[m] for m in models], clip_n, p.score.bootstrap, seed)))
    first = results[models[0]]
    durations = [r.samples / SAMPLE_RATE for r in recs]
    metrics["recordings"][corpus] = len(recs)
    metrics["clips"][corpus] = len(keys)
    metrics["seconds"][corpus] = {"total": round(sum(durations), 1), "min": round(min(durations), 1), "max": round(max(durations), 1)}
    metrics["segments"][corpus] = sum(len(first[r.id].pieces) for r in recs)  # VAD's: the same for every model
    metrics["segment_seconds"][corpus] = round(sum(x.end_ms - x.start_ms for r in recs for x in first[r.id].pieces) / 1000, 1)
    metrics["n"][corpus] = int(long_n.sum())
    metrics["n_clip"][corpus] = int(clip_n.sum())
    for m in models:
        long_total, clip_total = totals[m]
        for key, value in (("cer", round(long_total.rate, 4)), ("cer_ci95", _ci(long_boot[m])),
                           ("clip_cer", round(clip_total.rate, 4)), ("clip_cer_ci95", _ci(clip_boot[m])),
                           ("difference", round(long_total.rate - clip_total.rate, 4)),
                           ("difference_ci95", _ci(long_boot[m] - clip_boot[m])),
                           ("capped", sum(x.capped for r in recs for x in results[m][r.id].pieces)),
                           ("breakdown", {"longform": _rates(long_total), "clip": _rates(clip_total)})):
            metrics[key].setdefault(corpus, {})[m] = value
    if {"base", "merged"} <= set(models):
        for prefix, table, boot in (("", "cer", long_boot), ("clip_", "clip_cer", clip_boot)):
            metrics[f"{prefix}change"][corpus] = round(metrics[table][corpus]["merged"] - metrics[table][corpus]["base"], 4)
            ci = metrics[f"{prefix}change_ci95"][corpus] = _ci(boot["merged"] - boot["base"])
            metrics[f"{prefix}change_significant"][corpus] = significant(**ci) if ci else None
    return rows


def cutting_report(corpus: str, recs: list[Recording], results: dict[str, dict[str, transcribe.Result]]) -> dict:
    """What `asrtune cut` (its defaults) makes of these recordings, each with its joined reference as a plain transcript
    and each model's transcript as it already has it: the share of audio kept, the pieces rejected and why, and where
    the cuts sit: each cut's distance from the true silence between the two units it separates (from the clips'
    reference timestamps; without them, only cuts at the joins of two clips are measured)."""
    from asrtune.corpus import cutting
    from asrtune.corpus.timestamps import units

    out = {}
    for m, by_id in results.items():
        seconds = kept_seconds = 0.0
        counts = {"pieces": 0, "kept": 0, "units": 0, "kept_units": 0, "joins": 0, "joins_cut": 0, "cuts": 0}
        reasons: dict[str, int] = {}
        errors: list[float] = []
        for r in recs:
            res = by_id[r.id]
            pieces, cuts = cutting.cut(r.text, cutting.heard(res.pieces), res.probs, r.samples, cutting.MAX_SECONDS,
                                       cutting.MAX_CER)
            clip_of = [k for k, e in enumerate(r.clips) for _ in units(e.text)]
            n = len(cutting.spans(r.text))
            timed = r.unit_times is not None and len(r.unit_times) == n
            gaps: list = [None] * max(0, n - 1)
            if len(clip_of) == n:
                for i in range(n - 1):
                    if timed:
                        gaps[i] = (r.unit_times[i][1], r.unit_times[i + 1][0])
                    elif clip_of[i] != clip_of[i + 1]:
                        gaps[i] = (r.ends[clip_of[i]] / SAMPLE_RATE, r.offsets[clip_of[i + 1]] / SAMPLE_RATE)
                counts["joins"] += len(r.clips) - 1
                counts["joins_cut"] += sum(clip_of[c.gap] != clip_of[c.gap + 1] for c in cuts)
            errors += cutting.cut_errors([c for c in cuts if gaps[c.gap] is not None], gaps)
            counted = cutting.tally(pieces)
            seconds += r.samples / SAMPLE_RATE
            kept_seconds += counted["kept_seconds"]
            for k in ("pieces", "kept", "units", "kept_units"):
                counts[k] += counted[k]
            counts["cuts"] += len(cuts)
            for reason, k in counted["rejected"].items():
                reasons[reason] = reasons.get(reason, 0) + k
        e = np.array(errors)
        out[m] = {"kept_share": round(kept_seconds / seconds, 4) if seconds else None, "kept_seconds": round(kept_seconds, 1),
                  **counts, "rejected": dict(sorted(reasons.items())), "measured_cuts": len(e),
                  "cut_error_median": round(float(np.median(e)), 3) if len(e) else None,
                  "cut_error_p90": round(float(np.percentile(e, 90)), 3) if len(e) else None,
                  "cut_error_max": round(float(e.max()), 3) if len(e) else None,
                  "cuts_within_100ms": round(float((e <= 0.1).mean()), 4) if len(e) else None}
    return out


KEYS = ("recordings", "clips", "seconds", "segments", "segment_seconds", "n", "n_clip", "cer", "cer_ci95", "clip_cer",
        "clip_cer_ci95", "difference", "difference_ci95", "change", "change_ci95", "change_significant", "clip_change",
        "clip_change_ci95", "clip_change_significant", "capped", "breakdown", "cutting")
NOTE = ("cer: the recording's transcript (transcribe's VAD segments, joined) against its joined reference; clip_cer: decode's "
        "per-clip transcripts of the same clips; difference: cer - clip_cer (positive: the long-form path loses accuracy); "
        "change: merged - base; intervals: bootstrap over recordings, paired; cutting: `asrtune cut` (its defaults) on each "
        "recording with its joined reference as a plain transcript: kept_share of the audio, rejected pieces by reason, "
        "cut_error: seconds from each cut to the true silence between the units it separates (reference timestamps), "
        "joins_cut: the joins of two clips cut at, of joins")


def _write(metrics: dict, rows: list[dict], transcripts: list[dict]) -> None:
    METRICS.parent.mkdir(parents=True, exist_ok=True)
    METRICS.write_text(json.dumps(metrics, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    SCORES.parent.mkdir(parents=True, exist_ok=True)
    SCORES.write_text("".join("\t".join(str(r[c]) for c in COLUMNS) + "\n" for r in [dict(zip(COLUMNS, COLUMNS)), *rows]),
                      encoding="utf-8")
    write_jsonl(TRANSCRIPTS, transcripts)


def _bounds(ci: dict | None) -> str:
    return "[none]" if ci is None else f"[{ci['lo']:.4f}, {ci['hi']:.4f}]"


def _print(metrics: dict, p: params.Params) -> None:
    print(f"longform: 95% intervals from {p.score.bootstrap} bootstrap resamples of each test set's recordings "
          f"(seed {p.score.seed}), paired; * = the interval excludes zero")
    print(f"{'test set':<16}{'recs':>5}{'clips':>6}{'min':>6}  {'model':<8}{'long-form CER [95%]':<28}{'per-clip CER [95%]':<28}"
          "long - clip [95%]")
    for corpus in metrics["cer"]:
        for m, cer in metrics["cer"][corpus].items():
            diff, diff_ci = metrics["difference"][corpus][m], metrics["difference_ci95"][corpus][m]
            flag = "*" if diff_ci and significant(**diff_ci) else " "
            print(f"{corpus:<16}{metrics['recordings'][corpus]:>5}{metrics['clips'][corpus]:>6}"
                  f"{metrics['seconds'][corpus]['total'] / 60:>6.1f}  {m:<8}{cer:.4f} {_bounds(metrics['cer_ci95'][corpus][m]):<22}"
                  f"{metrics['clip_cer'][corpus][m]:.4f} {_bounds(metrics['clip_cer_ci95'][corpus][m]):<22}"
                  f"{diff:+.4f}{flag} {_bounds(diff_ci)}")
        if corpus in metrics.get("change", {}):
            parts = []
            for prefix, label in (("", "long-form"), ("clip_", "per-clip")):
                flag = "*" if metrics[f"{prefix}change_significant"][corpus] else ""
                parts.append(f"{label} {metrics[f'{prefix}change'][corpus]:+.4f}{flag} {_bounds(metrics[f'{prefix}change_ci95'][corpus])}")
            print(f"{'':<16}merged - base: " + ", ".join(parts))
        for m, c in metrics.get("cutting", {}).get(corpus, {}).items():
            why = ", ".join(f"{k} {v}" for k, v in c["rejected"].items()) or "none"
            error = (f"cut error median {c['cut_error_median']:.3f} s, p90 {c['cut_error_p90']:.3f} s, "
                     f"{c['cuts_within_100ms']:.0%} within 100 ms" if c["measured_cuts"] else "no cut measured")
            print(f"{'':<16}asrtune cut, {m}: kept {c['kept_share']:.0%} of the audio ({c['kept']} of {c['pieces']} pieces; "
                  f"rejected: {why}); {c['joins_cut']} of {c['joins']} joins cut; {error}")


def run() -> None:
    """Write data/longform/ (audio/, manifest.jsonl, recordings.tsv, transcripts.jsonl) and metrics/longform.json."""
    p = params.load()
    cfg = p.longform
    if OUT.exists():
        shutil.rmtree(OUT)
    OUT.mkdir(parents=True)
    if not cfg.corpora:
        note = "longform.corpora is empty: no long-form evaluation (list test sets there, e.g. [medical, general_heldout])"
        print(f"longform: {note}")
        write_jsonl(MANIFEST, [])
        _write({"note": note}, [], [])
        return
    for m in paths.DECODED_MODELS:
        if not paths.model_dir(m).is_dir():
            raise UserError(f"{paths.model_dir(m)}: not found (run `dvc repro {'base' if m == 'base' else 'merge'}` first)")
    for corpus in cfg.corpora:
        for m in paths.DECODED_MODELS:
            if not paths.decode_file(m, corpus).is_file():
                raise UserError(f"{paths.decode_file(m, corpus)}: not found (run `dvc repro decode@{m}-{corpus}` first)")
    if chain.family_of(paths.model_dir("base")) == "aligner":
        note = "a forced aligner times a given transcript; it cannot transcribe: no long-form evaluation"
        print(f"longform: {note}")
        write_jsonl(MANIFEST, [])
        _write({"note": note}, [], [])
        return

    recordings = {corpus: build(corpus, cfg, p.normalize) for corpus in cfg.corpora}
    every = [r for recs in recordings.values() for r in recs]
    write_jsonl(MANIFEST, (r.record() for r in every))
    print(f"longform: {len(every)} recordings of " + ", ".join(
        f"{c} ({len(rs)}, {sum(r.samples for r in rs) / SAMPLE_RATE / 60:.1f} min)" for c, rs in recordings.items()) + f" -> {AUDIO}/")
    results = {m: transcribe_all(p, m, every) for m in paths.DECODED_MODELS}

    metrics: dict = {k: {} for k in KEYS}
    rows = []
    for corpus, recs in recordings.items():
        rows += score(p, corpus, recs, {m: results[m] for m in paths.DECODED_MODELS}, metrics)
        metrics["cutting"][corpus] = cutting_report(corpus, recs, {m: results[m] for m in paths.DECODED_MODELS})
    metrics["note"] = NOTE
    transcripts = [{"recording": r.id, "model": m, "text": " ".join(x.text for x in results[m][r.id].pieces if x.text),
                    "segments": [[x.start_ms / 1000, x.end_ms / 1000, x.text] for x in results[m][r.id].pieces],
                    "capped": [i for i, x in enumerate(results[m][r.id].pieces) if x.capped]}
                   for m in paths.DECODED_MODELS for r in every]
    _write(metrics, rows, transcripts)
    _print(metrics, p)
    print(f"-> {METRICS}, {SCORES}, {TRANSCRIPTS}")
