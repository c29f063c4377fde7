"""Corpus readers. Each yields, in input order, one item per utterance that came in:
a `Candidate` to check and keep, or a `Rejection` with the file, line and reason.
Checks common to every format (duplicate ids, empty transcripts, audio) are ingest's.

Formats: Kaldi dir (wav.scp + text [+ utt2spk]), a folder of audio with same-stem .txt,
CSV/TSV with path and text columns, a Fun-ASR ChatML jsonl. (The demo source is in demo_corpus.py.)
"""

from __future__ import annotations

import csv
import io
import json
import re
import sqlite3
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from asrtune.errors import UserError
from asrtune.timestamps import read_ctm

AUDIO_SUFFIXES = {".wav", ".flac", ".ogg", ".mp3", ".opus", ".aiff", ".aif", ".au"}
SPEECH_PATH = re.compile(r"<\|startofspeech\|>!?(.*?)<\|endofspeech\|>", re.S)


@dataclass
class Candidate:
    id: str
    audio: str | Path | tuple[np.ndarray, int]  # local path, http(s) URL, or (samples, sample rate)
    text: str
    speaker: str | None
    origin: str  # "file:line" where it came from
    timestamps: list | None = None  # reference [start, end] per unit of the text (asrtune.timestamps), checked by ingest


@dataclass
class Rejection:
    id: str
    origin: str
    reason: str
    detail: str


Item = Candidate | Rejection


def _lines(path: Path) -> Iterator[tuple[int, str | None, bytes]]:
    """(line number, decoded text or None if not UTF-8, raw bytes) for each non-blank line."""
    with open(path, "rb") as f:
        for number, raw in enumerate(f, start=1):
            if number == 1 and raw.startswith(b"\xef\xbb\xbf"):
                raw = raw[3:]
            if not raw.strip():
                continue
            try:
                yield number, raw.decode("utf-8").rstrip("\r\n"), raw
            except UnicodeDecodeError:
                yield number, None, raw


def _undecodable(path: Path, number: int, raw: bytes) -> Rejection:
    guess = raw.split(maxsplit=1)[0].decode("utf-8", errors="replace") if raw.split() else "?"
    return Rejection(guess, f"{path}:{number}", "bad_encoding", "line is not valid UTF-8")


def _resolve(path_text: str, *bases: Path) -> str | Path:
    """URLs stay as they are; relative paths resolve against the first base where they exist."""
    if re.match(r"^https?://", path_text):
        return path_text
    p = Path(path_text).expanduser()
    if p.is_absolute():
        return p
    for base in bases:
        if (base / p).exists():
            return (base / p).resolve()
    return (bases[0] / p).resolve()


def _load_keyed(db: sqlite3.Connection, table: str, path: Path) -> list[Rejection]:
    """Read a Kaldi `id value` file into `table` (utt, value, origin, number); duplicates and bad
    lines come back as rejections."""
    rejected = []
    for number, line, raw in _lines(path):
        origin = f"{path}:{number}"
        if line is None:
            rejected.append(_undecodable(path, number, raw))
            continue
        utt, value = _split_id(line)
        first = db.execute(f"SELECT origin FROM {table} WHERE utt = ?", (utt,)).fetchone()
        if first:
            rejected.append(Rejection(utt, origin, "duplicate_id", f"{utt} already on {first[0]}"))
            continue
        db.execute(f"INSERT INTO {table} (utt, value, origin, number) VALUES (?, ?, ?, ?)", (utt, value, origin, number))
    return rejected


def _split_id(line: str) -> tuple[str, str]:
    """Kaldi line `utt_id rest-of-line` (any whitespace after the id)."""
    parts = line.strip().split(maxsplit=1)
    return parts[0], parts[1].strip() if len(parts) > 1 else ""


def read_kaldi(folder: Path) -> Iterator[Item]:
    """wav.scp joined with text and utt2spk by id. The join tables live in a scratch SQLite file,
    not in memory: a Kaldi corpus can have millions of lines."""
    wav_scp, text_file = folder / "wav.scp", folder / "text"
    for needed in (wav_scp, text_file):
        if not needed.is_file():
            raise UserError(f"{needed}: not found (a Kaldi corpus needs wav.scp and text)")
    with tempfile.TemporaryDirectory(prefix="asrtune-kaldi-") as tmp:
        db = sqlite3.connect(Path(tmp) / "join.sqlite")
        try:
            db.executescript("PRAGMA journal_mode=OFF; PRAGMA synchronous=OFF;"
                             "CREATE TABLE text (utt TEXT PRIMARY KEY, value TEXT, origin TEXT, number INTEGER, seen INTEGER DEFAULT 0);"
                             "CREATE TABLE spk (utt TEXT PRIMARY KEY, value TEXT, origin TEXT, number INTEGER)")
            text_rejected = _load_keyed(db, "text", text_file)
            if (folder / "utt2spk").is_file():
                _load_keyed(db, "spk", folder / "utt2spk")
            ctm, ctm_bad = read_ctm(folder / "ctm") if (folder / "ctm").is_file() else ({}, {})
            for number, line, raw in _lines(wav_scp):
                origin = f"{wav_scp}:{number}"
                if line is None:
                    yield _undecodable(wav_scp, number, raw)
                    continue
                utt, location = _split_id(line)
                # a repeated id still comes through: ingest rejects it as duplicate_id
                text = db.execute("UPDATE text SET seen = 1 WHERE utt = ? RETURNING value", (utt,)).fetchone()
                if not location:
                    yield Rejection(utt, origin, "malformed_line", "expected `utt_id path`")
                elif location.endswith("|"):
                    yield Rejection(utt, origin, "unsupported_audio", "piped commands in wav.scp are not run; convert to files first")
                elif text is None:
                    yield Rejection(utt, origin, "no_transcript", f"no line for {utt} in {text_file}")
                elif utt in ctm_bad:
                    yield Rejection(utt, ctm_bad[utt][0], "bad_timestamps", ctm_bad[utt][1])
                else:
                    speaker = db.execute("SELECT value FROM spk WHERE utt = ?", (utt,)).fetchone()
                    yield Candidate(utt, _resolve(location, folder, Path.cwd()), text[0], speaker[0] if speaker else None, origin,
                                    ctm.get(utt))
            for utt, origin in db.execute("SELECT utt, origin FROM text WHERE seen = 0 ORDER BY number").fetchall():
                yield Rejection(utt, origin, "no_audio", f"transcript has no entry in {wav_scp}")
            yield from text_rejected
        finally:
            db.close()


def read_folder(folder: Path) -> Iterator[Item]:
    """Audio files with same-stem .txt transcripts; speaker = the parent folder when nested."""
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    audio_stems = {p.with_suffix("") for p in files if p.suffix.lower() in AUDIO_SUFFIXES}
    for path in files:
        rel = path.relative_to(folder)
        utt = "-".join(rel.with_suffix("").parts)
        if path.suffix.lower() in AUDIO_SUFFIXES:
            txt = path.with_suffix(".txt")
            speaker = rel.parent.name if len(rel.parts) > 1 else None
            if not txt.is_file():
                yield Rejection(utt, str(path), "no_transcript", f"no {txt.name} beside the audio")
                continue
            raw = txt.read_bytes()
            try:
                text = raw.decode("utf-8-sig").strip()
            except UnicodeDecodeError:
                yield Rejection(utt, f"{txt}:1", "bad_encoding", "transcript is not valid UTF-8")
                continue
            yield Candidate(utt, path, " ".join(text.split()), speaker, str(path))
        elif path.suffix.lower() == ".txt" and path.with_suffix("") not in audio_stems:
            yield Rejection(utt, str(path), "no_audio", "transcript has no audio file of the same name")


def _pick_column(header: list[str], wanted: str | None, defaults: tuple[str, ...], path: Path, what: str, required: bool):
    if wanted is not None:
        if wanted not in header:
            raise UserError(f"{path}:1: no column '{wanted}' for the {what} (columns: {', '.join(header)})")
        return header.index(wanted)
    lower = [h.strip().lower() for h in header]
    for name in defaults:
        if name in lower:
            return lower.index(name)
    if required:
        raise UserError(f"{path}:1: no {what} column (looked for {', '.join(defaults)}; set it in params)")
    return None


def read_table(path: Path, columns: dict[str, str | None]) -> Iterator[Item]:
    """CSV or TSV with a header row; audio paths resolve against the table's folder."""
    delimiter = "\t" if path.suffix.lower() == ".tsv" else ","
    with open(path, "rb") as f:
        data = f.read()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise UserError(f"{path}:{line}: not valid UTF-8 (save the table as UTF-8)") from None
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    header = next(reader, None)
    if not header:
        raise UserError(f"{path}: empty table (expected a header row)")
    path_col = _pick_column(header, columns.get("path"), ("path", "audio", "wav", "file", "audio_path", "filename"),
                            path, "audio path", True)
    text_col = _pick_column(header, columns.get("text"), ("text", "transcript", "sentence", "transcription"), path, "transcript", True)
    spk_col = _pick_column(header, columns.get("speaker"), ("speaker", "spk", "speaker_id", "client_id"), path, "speaker", False)
    id_col = _pick_column(header, columns.get("id"), ("id", "utt_id", "utt", "key"), path, "id", False)
    while True:
        row = next(reader, None)
        if row is None:
            break
        origin = f"{path}:{reader.line_num}"
        if not any(cell.strip() for cell in row):
            continue
        if len(row) != len(header):
            yield Rejection(row[0] if row else "?", origin, "malformed_line", f"{len(row)} fields, header has {len(header)}")
            continue
        audio = row[path_col].strip()
        utt = row[id_col].strip() if id_col is not None else Path(audio).stem
        if not audio:
            yield Rejection(utt, origin, "missing_audio", "empty audio path")
            continue
        speaker = row[spk_col].strip() or None if spk_col is not None else None
        yield Candidate(utt, _resolve(audio, path.parent, Path.cwd()), row[text_col].strip(), speaker, origin)


def read_chatml(path: Path) -> Iterator[Item]:
    """A Fun-ASR ChatML jsonl: key, messages (user holds the speech path, assistant the transcript)."""
    for number, line, raw in _lines(path):
        origin = f"{path}:{number}"
        if line is None:
            yield _undecodable(path, number, raw)
            continue
        try:
            record = json.loads(line)
            if "messages" not in record and "audio_path" in record:  # the aligner guide's {audio_path, text, timestamps}
                audio_path, text = str(record["audio_path"]), str(record["text"])
                utt = str(record.get("key") or record.get("id") or Path(audio_path).stem)
                yield Candidate(utt, _resolve(audio_path, path.parent, Path.cwd()), text.strip(), record.get("speaker"), origin,
                                record.get("timestamps"))
                continue
            utt = str(record["key"])
            messages = {m["role"]: m["content"] for m in record["messages"]}
            match = SPEECH_PATH.search(messages["user"])
            text = messages["assistant"]
        except (json.JSONDecodeError, KeyError, TypeError, AttributeError) as e:
            yield Rejection("?", origin, "malformed_line", f"neither a ChatML record nor {{audio_path, text}} ({type(e).__name__}: {e})")
            continue
        if not match:
            yield Rejection(utt, origin, "malformed_line", "user message has no <|startofspeech|>...<|endofspeech|>")
            continue
        yield Candidate(utt, _resolve(match.group(1).strip(), path.parent, Path.cwd()), text.strip(), None, origin,
                        record.get("timestamps"))
