"""asrtune transcribe FILE_OR_DIR...: long recordings in any container to text, subtitles or JSON.

Not a pipeline stage (dvc.yaml never runs it). Each file is decoded to 16 kHz mono (asrtune.transcription.media), cut into
speech segments of at most 30 s by Silero VAD (asrtune.transcription.vad), and the segments are transcribed in batches by
the decode stage's own code (decode.transcriber, decode.decode_all: the family's transcribe, float32 weights
under the precision's autocast, the repetition guard). docs/transcribe.md is the user's page.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

import typer

from asrtune import params, paths
from asrtune.errors import UserError

FORMATS = ("txt", "srt", "vtt", "json")


@dataclass
class Piece:
    """One VAD segment's transcript: start and end in milliseconds, units as (unit, start s, end s) in the file's time."""

    start_ms: int
    end_ms: int
    text: str
    units: list | None = None
    capped: bool = False


@dataclass
class Result:
    path: Path
    duration: float
    pieces: list[Piece] = field(default_factory=list)
    probs: list[float] = field(default_factory=list, repr=False)  # Silero VAD's speech probability per 32 ms frame


def settings(language: str | None) -> tuple[params.Params, str]:
    """(params, where they came from): params.yaml in the working directory when there is one (model.language,
    model.task, model.precision and decode.* apply), else the schema's defaults; --language over either."""
    if params.PARAMS_FILE.is_file():
        p, source = params.load(), str(params.PARAMS_FILE)
    else:  # only model.* and decode.* are read by decoding: the pipeline's sections stay unset
        p, source = params.Params.model_construct(model=params.Model(), decode=params.Decode()), "defaults (no params.yaml here)"
    if language is not None:
        p = p.model_copy(update={"model": p.model.model_copy(update={"language": language})})
    return p, source


def formats_of(spec: str) -> list[str]:
    chosen = [f.strip().lower() for f in spec.split(",") if f.strip()]
    unknown = [f for f in chosen if f not in FORMATS]
    if unknown or not chosen:
        raise UserError(f"--format: {', '.join(unknown) or spec!r}: choose from {', '.join(FORMATS)} (several: srt,json)")
    return list(dict.fromkeys(chosen))


def gather(args: list[Path]) -> list[tuple[Path, Path | None]]:
    """(file, the folder it was found in or None for a file named) for each argument: a folder gives its media files
    (asrtune.transcription.media.EXTENSIONS, searched recursively, in name order); anything else is taken as a file, read or not."""
    from asrtune.transcription.media import EXTENSIONS

    found: list[tuple[Path, Path | None]] = []
    for arg in args:
        if arg.is_dir():
            found += [(f, arg) for f in sorted(arg.rglob("*")) if f.is_file() and f.suffix.lower() in EXTENSIONS]
        else:
            found.append((arg, None))
    return list({f.resolve(): (f, d) for f, d in found}.values())  # a file named twice is transcribed once


def destinations(files: list[tuple[Path, Path | None]], out: Path | None) -> dict[Path, Path]:
    """file -> its output path without the format's suffix: beside the file, or under --out (a folder's files keep
    their place below that folder). Two files that would share one (talk.wav, talk.mp3) keep their whole names."""
    bases = {}
    for f, root in files:
        folder = f.parent if out is None else out / (f.parent.relative_to(root) if root is not None else Path())
        bases[f] = folder / f.stem
    taken: dict[Path, int] = {}
    for base in bases.values():
        taken[base.resolve()] = taken.get(base.resolve(), 0) + 1
    return {f: (base.parent / f.name if taken[base.resolve()] > 1 else base) for f, base in bases.items()}


def clock(ms: int, sep: str) -> str:
    h, rest = divmod(ms, 3_600_000)
    m, rest = divmod(rest, 60_000)
    s, milli = divmod(rest, 1000)
    return f"{h:02d}:{m:02d}:{s:02d}{sep}{milli:03d}"


def _cue_text(text: str) -> str:
    return " ".join(text.split()).replace("-->", "->")  # no blank line, no cue-timing arrow inside a cue


def to_txt(r: Result) -> str:
    return "".join(f"{p.text}\n" for p in r.pieces if p.text)


def to_srt(r: Result) -> str:
    cues = [p for p in r.pieces if p.text]
    return "\n".join(f"{i}\n{clock(p.start_ms, ',')} --> {clock(p.end_ms, ',')}\n{_cue_text(p.text)}\n" for i, p in enumerate(cues, 1))


def to_vtt(r: Result) -> str:
    def escape(text: str) -> str:
        return _cue_text(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")

    cues = "".join(f"\n{clock(p.start_ms, '.')} --> {clock(p.end_ms, '.')}\n{escape(p.text)}\n" for p in r.pieces if p.text)
    return "WEBVTT\n" + cues


def to_json(r: Result, model: Path, p: params.Params) -> str:
    def segment(piece: Piece) -> dict:
        out = {"start": piece.start_ms / 1000, "end": piece.end_ms / 1000, "text": piece.text}
        if piece.units is not None:
            out["units"] = piece.units
        if piece.capped:
            out["capped"] = True
        return out

    doc = {"file": str(r.path), "duration": round(r.duration, 3), "model": str(model), "language": p.model.language,
           "segments": [segment(piece) for piece in r.pieces]}
    return json.dumps(doc, ensure_ascii=False, indent=1) + "\n"


def render(fmt: str, r: Result, model: Path, p: params.Params) -> str:
    if fmt == "json":
        return to_json(r, model, p)
    return {"txt": to_txt, "srt": to_srt, "vtt": to_vtt}[fmt](r)


def transcribe_file(path: Path, transcribe, p: params.Params, terms: list[str] | None, audio=None) -> Result:
    """A file's segments and their transcripts; media.MediaError when its audio cannot be read. `audio`: its 16 kHz
    mono samples when the caller has them (not read again)."""
    from tqdm import tqdm

    from asrtune.corpus.chatml import Example
    from asrtune.evaluation import hotwords
    from asrtune.stages.decode import decode_all, list_pass
    from asrtune.transcription import media, vad

    if audio is None:
        audio = media.load(path)
    frames = -(-len(audio) // vad.FRAME)
    with tqdm(total=frames, desc=f"vad {path.name}", unit="frame", leave=False, disable=frames < 2000) as bar:
        probs = vad.speech_probs(audio, bar.update)
    segments = vad.segments(audio, max_seconds=params.WINDOW_SECONDS, probs=probs)
    result = Result(path, len(audio) / vad.SAMPLE_RATE, probs=probs)
    if not segments:
        return result
    keys = [f"{i:06d}" for i in range(len(segments))]
    clips = {k: audio[s.first : s.last] for k, s in zip(keys, segments)}
    items = [Example(key=k, audio=str(path), text="") for k in keys]

    hyps: dict[str, str] = {}
    capped: set[str] = set()
    select, bound = p.decode.hotwords_select, p.decode.hotwords_max_distance
    # decode.hotwords' rule: the whole list, or with hotwords_select k and a longer list, the k terms closest to a first
    # pass without it (within hotwords_max_distance); a segment whose list comes out empty keeps its first pass, and
    # with hotwords_bonus one whose gained terms the model, without the list, finds too unlikely against the first pass
    if not terms or hotwords.needs_first_pass(terms, select, bound, p.decode.hotwords_bonus):
        hyps = decode_all(transcribe, items, clips, p.decode.batch_size, f"decode {path.name}", capped)
    if terms:
        contexts = hotwords.for_decoding(terms, select, hyps or dict.fromkeys(keys, ""), bound)
        first_capped, capped = capped, set()
        hyps = list_pass(transcribe, items, clips, p.decode.batch_size, f"decode {path.name}", contexts, hyps, first_capped, capped,
                         p.decode.hotwords_bonus, terms)
    for k, s in zip(keys, segments):
        text, _, times = hyps[k].partition("\t")
        units = None
        if times:
            units = [[u, round(s.start + a, 3), round(s.start + b, 3)] for u, a, b in json.loads(times)]
        ms = vad.SAMPLE_RATE // 1000
        result.pieces.append(Piece(s.first // ms, s.last // ms, text, units, k in capped))
    return result


def _engine(p: params.Params, model_dir: Path) -> tuple[params.Params, Path | None]:
    """decode.engine ctranslate2 runs the convert stage's copy (models/ct2/<base|merged>) of models/base or
    models/merged; any other model directory runs through transformers."""
    if p.decode.engine != "ctranslate2":
        return p, None
    for name in paths.DECODED_MODELS:
        if model_dir.resolve() == paths.model_dir(name).resolve() and paths.ct2_dir(name).is_dir():
            return p, paths.ct2_dir(name)
    print(f"note: decode.engine ctranslate2: {model_dir} has no CTranslate2 copy in models/ct2/; running it through transformers",
          file=sys.stderr)
    return p.model_copy(update={"decode": p.decode.model_copy(update={"engine": "transformers"})}), None


def run(
    inputs: list[Path] = typer.Argument(..., metavar="FILE_OR_DIR", show_default=False,
                                     help="audio or video files, or folders (searched recursively for media files)"),
    model: Path = typer.Option(paths.MERGED_MODEL, "--model", help="a model directory: models/merged, models/base, a fine-tuned stage"),
    fmt: str = typer.Option("txt", "--format", help="txt, srt, vtt or json; several comma-separated (srt,json)"),
    hotwords_file: Path | None = typer.Option(None, "--hotwords", help="a term list (one per line) given to each segment as context"),
    out: Path | None = typer.Option(None, "--out", help="write <stem>.<format> here (default: beside each input)"),
    language: str | None = typer.Option(None, "--language", help="over model.language (params.yaml, default zh)"),
) -> None:
    """Transcribe recordings of any length (speech found by Silero VAD, segments of at most 30 s)."""
    from tqdm import tqdm

    from asrtune.evaluation.terms import read_terms
    from asrtune.stages.decode import transcriber
    from asrtune.transcription.media import MediaError
    from asrtune.weights import chain

    formats = formats_of(fmt)
    p, source = settings(language)
    terms = read_terms(hotwords_file, "--hotwords") if hotwords_file is not None else None
    files = gather(inputs)
    if not files:
        raise UserError(f"no media files in {', '.join(map(str, inputs))} (searched for: wav, flac, mp3, m4a, mp4, ...)")
    if not model.is_dir():
        raise UserError(f"--model {model}: not found (models/merged comes from `dvc repro`; or name a model directory)")
    family = chain.family_of(model)
    if family == "aligner":
        raise UserError(f"--model {model}: a forced aligner times a given transcript; it cannot transcribe")
    p, ct2 = _engine(p, model)
    transcribe, runtime = transcriber(p, model, ct2)
    print(f"transcribe: {model} ({family}; {runtime}), language {p.model.language}, params: {source}", file=sys.stderr)

    where = destinations(files, out)
    ok, failed = 0, []
    for path, _ in tqdm(files, desc="transcribe", unit="file", disable=len(files) < 2):
        try:
            result = transcribe_file(path, transcribe, p, terms)
        except MediaError as e:
            failed.append(path)
            tqdm.write(f"{path}: skipped: {e}", file=sys.stderr)
            continue
        except ValueError as e:  # as decode: a generation config without languages, or a language it lacks
            raise UserError(f"{model}: cannot decode with model.language={p.model.language!r}: {str(e).splitlines()[0]}") from None
        try:
            written = []
            for f in formats:
                target = where[path].with_name(f"{where[path].name}.{f}")
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_text(render(f, result, model, p), encoding="utf-8")
                written.append(str(target))
        except OSError as e:
            failed.append(path)
            tqdm.write(f"{path}: cannot write {e.filename}: {e.strerror}", file=sys.stderr)
            continue
        ok += 1
        speech = sum(x.end_ms - x.start_ms for x in result.pieces) / 1000
        capped = sum(x.capped for x in result.pieces)
        note = f", {capped} stopped at the max-new-tokens guard" if capped else ""
        tqdm.write(f"{path}: {result.duration:.1f} s, {len(result.pieces)} segments ({speech:.1f} s of speech){note} "
                   f"-> {', '.join(written)}")
    print(f"transcribe: {len(files)} files, {ok} ok, {len(failed)} failed" + (f" ({', '.join(map(str, failed))})" if failed else ""))
    if failed:
        raise typer.Exit(1)
