"""asrtune cut SOURCE --out DIR: long recordings with plain transcripts (no times) cut into utterances for training.

SOURCE is a folder of recordings (any container asrtune.transcription.media reads), each with a same-stem UTF-8 .txt
transcript beside it. Each recording is transcribed by `asrtune transcribe`'s own code (Silero VAD segments, the model's
unit times: models/base by default), and asrtune.corpus.cutting aligns that to the transcript, cuts it in silences at
sentence ends, and rejects pieces the model heard too differently. DIR gets:

- audio/<stem>/<stem>-NNNN.wav: the kept pieces (16 kHz mono 16-bit);
- utterances.csv: id, audio, text, speaker (the recording's stem), start, end, origin (transcript file:line): a corpus
  source as it is (data.corpora.<c>.source: DIR/utterances.csv);
- rejected.tsv: every rejected piece with its transcript file:line, times, reason and detail;
- summary.json: per recording and in all: seconds of audio and of kept pieces, transcript units in = kept + rejected.

Not a pipeline stage in the demo; docs/data.md shows the dvc.yaml stage that runs it before ingest.
"""

from __future__ import annotations

import csv
import io
import json
import sys
from pathlib import Path

import typer

from asrtune import paths
from asrtune.corpus import cutting
from asrtune.errors import UserError

FILES = ("audio", "utterances.csv", "rejected.tsv", "summary.json")


def recordings(source: Path) -> tuple[list[tuple[Path, Path]], list[str]]:
    """(media file, its transcript) pairs in name order, and what cannot pair: a recording without a transcript, a
    transcript without a recording, two recordings for one transcript."""
    from asrtune.transcription.media import EXTENSIONS

    if not source.is_dir():
        raise UserError(f"{source}: not a folder (give a folder of recordings, each with a same-stem .txt transcript)")
    media: dict[Path, list[Path]] = {}
    texts: dict[Path, list[Path]] = {}
    for f in sorted(source.rglob("*")):
        if not f.is_file():
            continue
        if f.suffix.lower() == ".txt":
            texts.setdefault(f.with_suffix(""), []).append(f)
        elif f.suffix.lower() in EXTENSIONS:
            media.setdefault(f.with_suffix(""), []).append(f)
    pairs, problems = [], []
    for stem in sorted(set(media) | set(texts)):
        found = media.get(stem, [])
        written = texts.get(stem, [])
        if not written:
            problems += [f"{f}: no transcript ({f.with_suffix('.txt').name} beside it)" for f in found]
        elif len(written) > 1:
            problems.append(f"{written[0]}: {len(written)} transcripts share its name ({', '.join(f.name for f in written)})")
        elif not found:
            problems.append(f"{written[0]}: no recording of the same name beside it")
        elif len(found) > 1:
            problems.append(f"{written[0]}: {len(found)} recordings share its name ({', '.join(f.name for f in found)})")
        else:
            pairs.append((found[0], written[0]))
    return pairs, problems


def read_transcript(path: Path) -> str:
    data = path.read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise ValueError(f"{path}:{line}: not valid UTF-8 (save the transcript as UTF-8)") from None


def _stem(audio: Path, source: Path) -> str:
    """A recording's name in the output: its path below SOURCE without the suffix, folders joined with '-'."""
    return audio.relative_to(source).with_suffix("").as_posix().replace("/", "-")


def _clear(out: Path) -> None:
    import shutil

    if (out / "audio").is_dir():
        shutil.rmtree(out / "audio")
    for name in FILES[1:]:
        (out / name).unlink(missing_ok=True)


def run(
    source: Path = typer.Argument(..., show_default=False, help="a folder of recordings, each with a same-stem .txt transcript"),
    out: Path = typer.Option(..., "--out", help="write audio/, utterances.csv, rejected.tsv and summary.json here"),
    model: Path = typer.Option(paths.BASE_MODEL, "--model", help="the model whose transcript is aligned to the text"),
    max_seconds: float = typer.Option(cutting.MAX_SECONDS, "--max-seconds", help="longest piece (a longer one is cut again at a pause)"),
    max_cer: float = typer.Option(cutting.MAX_CER, "--max-cer", help="a piece whose text the model heard with a higher CER is rejected"),
    language: str | None = typer.Option(None, "--language", help="over model.language (params.yaml, default zh)"),
) -> None:
    """Cut long recordings with plain transcripts into utterances: align the model's transcript, cut in pauses, check."""
    import numpy as np
    import soundfile as sf
    from tqdm import tqdm

    from asrtune.stages.decode import transcriber
    from asrtune.transcription import media, transcribe
    from asrtune.weights import chain

    if not 0 < max_seconds:
        raise UserError(f"--max-seconds {max_seconds}: must be positive")
    if not 0 <= max_cer:
        raise UserError(f"--max-cer {max_cer}: must be at least 0")
    src, dst = source.resolve(), out.resolve()
    if dst == src or src in dst.parents or dst in src.parents:
        raise UserError(f"--out {out}: inside {source} (or holding it): its output would be read as recordings, or the "
                        "recordings cleared with it; write it elsewhere (e.g. data/raw/<name>)")
    pairs, problems = recordings(source)
    stems: dict[str, Path] = {}
    for pair in list(pairs):  # a/b-c.wav and a-b/c.wav would write the same ids
        stem = _stem(pair[0], source)
        if stem in stems:
            problems.append(f"{pair[0]}: its output name {stem} is {stems[stem]}'s too (rename one)")
            pairs.remove(pair)
        else:
            stems[stem] = pair[0]
    if not pairs and not problems:
        raise UserError(f"{source}: no recordings with transcripts (e.g. talk.mp3 with talk.txt)")
    if not model.is_dir():
        raise UserError(f"--model {model}: not found (models/base comes from `dvc repro base`; or name a model directory)")
    if chain.family_of(model) == "aligner":
        raise UserError(f"--model {model}: a forced aligner cannot transcribe; give a recognizer (models/base)")
    p, where = transcribe.settings(language)
    p = p.model_copy(update={"decode": p.decode.model_copy(update={"timestamps": True})})  # the units' times
    p, ct2 = transcribe._engine(p, model)
    run_model, runtime = transcriber(p, model, ct2)
    print(f"cut: {len(pairs)} recordings, {model} ({runtime}), params: {where}", file=sys.stderr)
    for problem in problems:
        print(f"{problem}: skipped", file=sys.stderr)

    _clear(out)
    rows, rejected, summary = [], [], {}
    failed = list(problems)
    for audio_path, text_path in tqdm(pairs, desc="cut", unit="recording", disable=len(pairs) < 2):
        try:
            text = read_transcript(text_path)
            audio = media.load(audio_path)
        except (ValueError, media.MediaError) as e:
            failed.append(str(e) if isinstance(e, ValueError) else f"{audio_path}: {e}")
            tqdm.write(f"{failed[-1]}: skipped", file=sys.stderr)
            continue
        if not cutting.spans(text):
            failed.append(f"{text_path}: no words in the transcript")
            tqdm.write(f"{failed[-1]}: skipped", file=sys.stderr)
            continue
        result = transcribe.transcribe_file(audio_path, run_model, p, None, audio)
        pieces, _ = cutting.cut(text, cutting.heard(result.pieces), result.probs, len(audio), max_seconds, max_cer)
        stem = _stem(audio_path, source)
        for n, piece in enumerate(pieces):
            utt = f"{stem}-{n:04d}"
            origin = f"{text_path}:{piece.line}"
            if piece.reason is not None:
                rejected.append([origin, utt, f"{piece.first / 16000:.3f}", f"{piece.last / 16000:.3f}", piece.reason,
                                 piece.detail, piece.text])
                continue
            wav = out / "audio" / stem / f"{utt}.wav"
            wav.parent.mkdir(parents=True, exist_ok=True)
            clip = np.clip(audio[piece.first : piece.last], -1.0, 1.0)
            sf.write(str(wav), clip, 16000, subtype="PCM_16")
            rows.append([utt, wav.relative_to(out).as_posix(), piece.text, stem, f"{piece.first / 16000:.3f}",
                         f"{piece.last / 16000:.3f}", origin])
        counted = cutting.tally(pieces)
        reasons = counted["rejected"]
        summary[str(audio_path)] = {"transcript": str(text_path), "seconds": round(len(audio) / 16000, 3),
                                    **counted, "kept_seconds": round(counted["kept_seconds"], 3)}
        kept_seconds = counted["kept_seconds"]
        share = kept_seconds / (len(audio) / 16000) if len(audio) else 0.0
        why = ", ".join(f"{k} {v}" for k, v in reasons.items())
        tqdm.write(f"{audio_path}: {len(audio) / 16000:.1f} s, {len(pieces)} pieces: {summary[str(audio_path)]['kept']} kept "
                   f"({kept_seconds:.1f} s, {share:.0%} of the audio), {sum(reasons.values())} rejected" + (f" ({why})" if why else ""))

    out.mkdir(parents=True, exist_ok=True)
    table = io.StringIO(newline="")
    csv.writer(table, lineterminator="\n").writerows([["id", "audio", "text", "speaker", "start", "end", "origin"], *rows])
    (out / "utterances.csv").write_text(table.getvalue(), encoding="utf-8")
    table = io.StringIO(newline="")
    csv.writer(table, delimiter="\t", lineterminator="\n").writerows([["origin", "id", "start", "end", "reason", "detail", "text"],
                                                                      *rejected])
    (out / "rejected.tsv").write_text(table.getvalue(), encoding="utf-8")
    totals = {k: sum(s[k] for s in summary.values()) for k in ("seconds", "kept_seconds", "pieces", "kept", "units", "kept_units",
                                                                "rejected_units")}
    totals = {k: round(v, 3) if isinstance(v, float) else v for k, v in totals.items()}
    doc = {"model": str(model), "max_seconds": max_seconds, "max_cer": max_cer, "total": totals, "recordings": summary,
           "failed": failed}
    (out / "summary.json").write_text(json.dumps(doc, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    share = totals["kept_seconds"] / totals["seconds"] if totals["seconds"] else 0.0
    print(f"cut: {len(summary)} recordings, {totals['kept']} of {totals['pieces']} pieces kept ({totals['kept_seconds']:.1f} s, "
          f"{share:.0%} of the audio; {totals['kept_units']} of {totals['units']} transcript units), "
          f"{len(failed)} failed -> {out}/utterances.csv")
    if failed:
        raise typer.Exit(1)
