"""Corpus readers. Each yields, in input order, one item per utterance that came in:
a `Candidate` to check and keep, or a `Rejection` with the file, line and reason.
Checks common to every format (duplicate ids, empty transcripts, audio) are ingest's.

Each reader also counts what came in, apart from what it yields (`Reading.seen`): ingest's
`in = accepted + rejected` holds for any items by construction, so only this count can catch a
reader that drops (or doubles) an utterance.

Formats: Kaldi dir (wav.scp + text [+ utt2spk]), a folder of audio with same-stem .txt,
CSV/TSV with path and text columns, a Fun-ASR ChatML jsonl. (The demo source is in synth/demo_corpus.py; a
folder of media with same-stem subtitles, cut at the cues, in corpus/subtitles.py.)
A table's `split` column (train | val | dev | test; blank: none) and a jsonl record's
`split` key fix an utterance's split (a corpus's official test set, say): the split stage honours it.

A folder: every audio file is an utterance, id = its path under the folder (without suffix, parts
joined by `-`), transcript = the `.txt` of the same stem beside it. Speaker = the top-level folder
under the corpus root, however deep the file lies (`spk/session/utt.wav` is spoken by `spk`), so a
speaker split keeps all of a speaker's sessions on one side; a file directly in the root has no
known speaker (null: split places each such utterance on its own). Audio in a format libsndfile
cannot read (`.m4a`, `.aac`, `.amr`, ...) is rejected as `unsupported_audio`, naming the file; a
`.txt` without any audio of its stem is `no_audio`; other files (README, metadata) are not utterances.
"""

from __future__ import annotations

import csv
import io
import json
import re
import sqlite3
import tempfile
import functools
from collections.abc import Generator, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from asrtune.corpus.timestamps import read_ctm
from asrtune.errors import UserError

AUDIO_SUFFIXES = {".wav", ".flac", ".ogg", ".mp3", ".opus", ".aiff", ".aif", ".au"}
# audio (or audio-in-video) formats libsndfile cannot read: in a folder, such a file is an utterance
# to reject with its own reason, not a stray file to pass over (its .txt would then look orphaned)
UNSUPPORTED_AUDIO = {".m4a", ".m4b", ".mp4", ".aac", ".amr", ".awb", ".3gp", ".wma", ".webm", ".mka", ".ac3", ".ape", ".wv",
                     ".spx", ".silk"}
SPEECH_PATH = re.compile(r"<\|startofspeech\|>!?(.*?)<\|endofspeech\|>", re.S)


@dataclass
class Candidate:
    id: str
    audio: str | Path | tuple[np.ndarray, int]  # local path, http(s) URL, or (samples, sample rate)
    text: str
    speaker: str | None
    origin: str  # "file:line" where it came from
    timestamps: list | None = None  # reference [start, end] per unit of the text (asrtune.corpus.timestamps), checked by ingest
    split: str | None = None  # a split the corpus fixes (train | val | dev | test): the split stage honours it
    voice: dict | None = None  # the demo's synthetic voice (styles and speed, or an eSpeak variant): split's summary shows it
    nonspeech: bool = False  # a clip with no speech in it (the demo's non-speech set): its empty transcript is expected


@dataclass
class Rejection:
    id: str
    origin: str
    reason: str
    detail: str


Item = Candidate | Rejection


class Reading:
    """One reader's items (iterate once), and `seen`: how many utterances it saw come in (lines of
    wav.scp and text, rows of a table, files of a folder), counted apart from what it yields and set
    once the items run out. A reader may return (seen, counts) instead: `counts`, a dict of its own
    tallies (the subtitles reader's cues: in = kept + merged + rejected), goes into ingest's summary."""

    def __init__(self, reader: str, items: Generator[Item, None, int | tuple[int, dict]]):
        self.reader, self._items, self.seen, self.counts = reader, items, None, None

    def __iter__(self) -> Iterator[Item]:
        returned = yield from self._items
        self.seen, self.counts = returned if isinstance(returned, tuple) else (returned, None)


def _counted(reader):
    """A reader written as a generator that returns its count -> a function that returns a Reading."""

    @functools.wraps(reader)
    def read(*args, **kwargs) -> Reading:
        return Reading(reader.__name__.removeprefix("read_"), reader(*args, **kwargs))

    return read


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


def _count_lines(path: Path) -> int:
    """Non-blank lines: the utterances a line-per-utterance file brings in, counted on their own pass."""
    return sum(1 for _ in _lines(path))


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


@_counted
def read_kaldi(folder: Path) -> Generator[Item, None, int]:
    """wav.scp joined with text and utt2spk by id. The join tables live in a scratch SQLite file,
    not in memory: a Kaldi corpus can have millions of lines. Utterances in: the lines of wav.scp and
    of text, less the text lines a wav.scp line joined (those two lines are one utterance)."""
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
            joined = db.execute("SELECT COUNT(*) FROM text WHERE seen = 1").fetchone()[0]
            return _count_lines(wav_scp) + _count_lines(text_file) - joined
        finally:
            db.close()


@_counted
def read_folder(folder: Path) -> Generator[Item, None, int]:
    """Audio files with same-stem .txt transcripts (the module docstring says what is an utterance
    and who its speaker is). Utterances in: the audio files, readable or not, and the .txt files with
    no audio of their stem."""
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    audio = [p for p in files if p.suffix.lower() in AUDIO_SUFFIXES | UNSUPPORTED_AUDIO]
    transcripts = {p.with_suffix(""): p for p in files if p.suffix.lower() == ".txt"}
    audio_stems = {p.with_suffix("") for p in audio}
    for path in files:
        rel = path.relative_to(folder)
        utt = "-".join(rel.with_suffix("").parts)
        suffix = path.suffix.lower()
        if suffix in AUDIO_SUFFIXES:
            yield _folder_utterance(utt, path, transcripts.get(path.with_suffix("")), rel.parts[0] if len(rel.parts) > 1 else None)
        elif suffix in UNSUPPORTED_AUDIO:
            yield Rejection(utt, str(path), "unsupported_audio", f"{rel}: {suffix} audio cannot be read (convert it to .wav or .flac; "
                                                                 f"readable: {' '.join(sorted(AUDIO_SUFFIXES))})")
        elif suffix == ".txt" and path.with_suffix("") not in audio_stems:
            yield Rejection(utt, str(path), "no_audio", "transcript has no audio file of the same name")
    return len(audio) + sum(1 for stem in transcripts if stem not in audio_stems)


def _folder_utterance(utt: str, path: Path, txt: Path | None, speaker: str | None) -> Item:
    """One readable audio file of a folder corpus, with its transcript beside it."""
    if txt is None:
        return Rejection(utt, str(path), "no_transcript", f"no {path.with_suffix('.txt').name} beside the audio")
    try:
        text = txt.read_bytes().decode("utf-8-sig").strip()
    except UnicodeDecodeError:
        return Rejection(utt, f"{txt}:1", "bad_encoding", "transcript is not valid UTF-8")
    return Candidate(utt, path, " ".join(text.split()), speaker, str(path))


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


@_counted
def read_table(path: Path, columns: dict[str, str | None]) -> Generator[Item, None, int]:
    """CSV or TSV with a header row; audio paths resolve against the table's folder. Utterances in:
    the non-blank rows after the header."""
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
    split_col = _pick_column(header, columns.get("split"), ("split",), path, "split", False)
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
        split = row[split_col].strip() or None if split_col is not None else None
        yield Candidate(utt, _resolve(audio, path.parent, Path.cwd()), row[text_col].strip(), speaker, origin, split=split)
    return _count_rows(text, delimiter) - 1  # the header


def _count_rows(text: str, delimiter: str) -> int:
    """Non-blank rows of a table, counted on their own pass."""
    return sum(1 for row in csv.reader(io.StringIO(text, newline=""), delimiter=delimiter) if any(cell.strip() for cell in row))


@_counted
def read_chatml(path: Path) -> Generator[Item, None, int]:
    """A Fun-ASR ChatML jsonl: key, messages (user holds the speech path, assistant the transcript).
    Utterances in: its non-blank lines."""
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
                                record.get("timestamps"), split=_split_of(record))
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
                        record.get("timestamps"), split=_split_of(record))
    return _count_lines(path)


def _split_of(record: dict) -> str | None:
    """A jsonl record's own `split` (train | val | dev | test; ingest checks the value), if it has one."""
    split = record.get("split")
    return None if split is None or str(split).strip() == "" else str(split)
