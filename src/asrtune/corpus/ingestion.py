"""Check every utterance that came in, make its audio 16 kHz mono PCM, keep or reject it with a reason.

Audio already in 16 kHz mono PCM wav is referenced where it lies (header probe only, no decode);
anything else (other rates, stereo, flac/mp3, synthesized or downloaded audio) is converted into
the corpus's own audio folder. accepted + rejected == items in, always. An empty transcript is rejected
(empty_transcript) except on a clip marked non-speech (the demo's non-speech sets) or in a role nonspeech
corpus, whose empty transcript is its reference (there a non-empty one is rejected: not_empty). A fixed split (train | val | dev | test) is kept as the manifest's `split`
(dev written val); any other value is rejected (bad_split).

Streaming, so memory stays flat however large the corpus: rejections go to rejected.tsv as they
come (input order); accepted records wait in a SQLite file beside the manifest, whose primary key
also finds duplicate ids, and leave it sorted by id.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sqlite3
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from asrtune.corpus import audio, timestamps
from asrtune.corpus.manifest import write_jsonl, write_rejected
from asrtune.corpus.sources import Candidate, Item, Rejection

_SAFE_ID = re.compile(r"^[\w.-]+$")
SPLIT_NAMES = {"train": "train", "val": "val", "dev": "val", "test": "test"}  # an utterance's fixed split, as the manifest writes it


@dataclass
class Result:
    accepted: int = 0
    reasons: Counter = field(default_factory=Counter)
    converted: int = 0
    seconds: float = 0.0  # of accepted audio
    speakers: int = 0  # distinct, among the accepted

    @property
    def rejected(self) -> int:
        return sum(self.reasons.values())


def portable_path(path: Path, root: Path) -> str:
    """Repository-relative when inside the repository (same bytes on every clone), else absolute."""
    path = Path(os.path.abspath(path))
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return path.as_posix()


def audio_file_name(utt_id: str) -> str:
    if _SAFE_ID.match(utt_id):
        return utt_id + ".wav"
    return hashlib.sha1(utt_id.encode()).hexdigest()[:16] + ".wav"


def _materialize(c: Candidate, audio_dir: Path, cache_dir: Path, root: Path) -> tuple[str, float, bool]:
    """(audio path for the manifest, duration in seconds, converted?)"""
    target = audio_dir / audio_file_name(c.id)
    if isinstance(c.audio, tuple):  # synthesized samples
        samples, rate = c.audio
        frames = audio.write_wav(target, audio.to_16k_mono(samples, rate))
        return portable_path(target, root), frames / audio.SAMPLE_RATE, True
    source = audio.fetch(c.audio, cache_dir) if isinstance(c.audio, str) else Path(c.audio)
    info = audio.probe(source)
    if info.ready and not isinstance(c.audio, str):
        return portable_path(source, root), info.duration, False
    frames = audio.convert_file(source, target)
    return portable_path(target, root), frames / audio.SAMPLE_RATE, True


def ingest(items: Iterable[Item], manifest: Path, rejected_tsv: Path, audio_dir: Path, cache_dir: Path,
           min_duration: float, max_duration: float, root: Path | None = None, progress: str = "ingest",
           nonspeech: bool = False) -> Result:
    """Write the manifest (accepted, sorted by id) and rejected.tsv (id, origin, reason, detail).
    nonspeech: a role nonspeech corpus, whose transcripts must all be empty (not_empty otherwise)."""
    root = Path(os.path.abspath(root or Path.cwd()))
    result = Result()
    manifest.parent.mkdir(parents=True, exist_ok=True)
    db_path = manifest.parent / ".ingest.sqlite"
    db_path.unlink(missing_ok=True)
    db = sqlite3.connect(db_path)
    try:  # a scratch file: no journal, no fsync
        db.executescript("PRAGMA journal_mode=OFF; PRAGMA synchronous=OFF;"
                         "CREATE TABLE utt (id TEXT PRIMARY KEY, origin TEXT NOT NULL, record TEXT, speaker TEXT, duration REAL)")
        write_rejected(rejected_tsv, _check(items, db, result, audio_dir, cache_dir, min_duration, max_duration, root, progress,
                                            nonspeech))
        # ids compare as UTF-8 bytes in SQLite, which is code point order: the order Python's sort gives
        rows = db.execute("SELECT record FROM utt WHERE record IS NOT NULL ORDER BY id")
        result.accepted = write_jsonl(manifest, (json.loads(record) for (record,) in rows))
        result.seconds, result.speakers = db.execute(
            "SELECT TOTAL(duration), COUNT(DISTINCT NULLIF(speaker, '')) FROM utt WHERE record IS NOT NULL").fetchone()
    finally:
        db.close()
        db_path.unlink(missing_ok=True)
    return result


def _check(items: Iterable[Item], db: sqlite3.Connection, result: Result, audio_dir: Path, cache_dir: Path,
           min_duration: float, max_duration: float, root: Path, progress: str, nonspeech: bool) -> Iterator[Rejection]:
    """Yields each rejection; stores each accepted record in `db`."""
    for item in tqdm(items, desc=progress, unit="utt", mininterval=1.0):
        rejection = item if isinstance(item, Rejection) else _accept(item, db, result, audio_dir, cache_dir, min_duration,
                                                                     max_duration, root, nonspeech)
        if rejection is not None:
            result.reasons[rejection.reason] += 1
            yield rejection


def audio_sha256(path: Path) -> str:
    """The audio's content: new samples under the same id, text and duration still change the
    manifest, so DVC reruns what depends on it."""
    with open(path, "rb") as stream:
        return hashlib.file_digest(stream, "sha256").hexdigest()


def _accept(c: Candidate, db: sqlite3.Connection, result: Result, audio_dir: Path, cache_dir: Path, min_duration: float,
            max_duration: float, root: Path, nonspeech: bool = False) -> Rejection | None:
    first = db.execute("SELECT origin FROM utt WHERE id = ?", (c.id,)).fetchone()
    if first:
        return Rejection(c.id, c.origin, "duplicate_id", f"{c.id} already from {first[0]}")
    db.execute("INSERT INTO utt (id, origin) VALUES (?, ?)", (c.id, c.origin))
    if nonspeech and c.text.strip():
        return Rejection(c.id, c.origin, "not_empty", f"role nonspeech: the transcript must be empty, got {c.text.strip()[:40]!r}")
    if not c.text.strip() and not (c.nonspeech or nonspeech):
        return Rejection(c.id, c.origin, "empty_transcript", "transcript is empty")
    if c.split is not None and c.split.strip().lower() not in SPLIT_NAMES:
        return Rejection(c.id, c.origin, "bad_split", f"split {c.split!r} is none of {', '.join(SPLIT_NAMES)}")
    try:
        path, duration, converted = _materialize(c, audio_dir, cache_dir, root)
    except audio.AudioError as e:
        return Rejection(c.id, c.origin, e.reason, str(e))
    why = timestamps.problem(c.timestamps, c.text, duration) if c.timestamps is not None else None
    if min_duration <= duration <= max_duration and why is None:
        result.converted += converted
        record = {"id": c.id, "audio": path, "text": " ".join(c.text.split()), "speaker": c.speaker, "duration": round(duration, 4),
                  "sha256": audio_sha256(Path(root / path if not os.path.isabs(path) else path))}
        if c.timestamps is not None:
            record["timestamps"] = timestamps.rounded(c.timestamps)
        if c.split is not None:
            record["split"] = SPLIT_NAMES[c.split.strip().lower()]
        if c.voice is not None:
            record["voice"] = c.voice
        db.execute("UPDATE utt SET record = ?, speaker = ?, duration = ? WHERE id = ?",
                   (json.dumps(record, ensure_ascii=False), c.speaker, record["duration"], c.id))
        return None
    if converted:  # a rejected utterance leaves no audio behind
        Path(root / path if not os.path.isabs(path) else path).unlink(missing_ok=True)
    if duration < min_duration:
        return Rejection(c.id, c.origin, "too_short", f"{duration:.3f} s < data.min_duration {min_duration} s")
    if duration > max_duration:
        return Rejection(c.id, c.origin, "too_long", f"{duration:.2f} s > data.max_duration {max_duration} s")
    return Rejection(c.id, c.origin, "bad_timestamps", why)
