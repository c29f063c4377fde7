"""Check every utterance that came in, make its audio 16 kHz mono PCM, keep or reject it with a reason.

Audio already in 16 kHz mono PCM wav is referenced where it lies (header probe only, no decode);
anything else (other rates, stereo, flac/mp3, synthesized or downloaded audio) is converted into
the corpus's own audio folder. accepted + rejected == items in, always.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from asrtune import audio
from asrtune.sources import Candidate, Item, Rejection

_SAFE_ID = re.compile(r"^[\w.-]+$")


@dataclass
class Result:
    accepted: list[dict] = field(default_factory=list)
    rejected: list[Rejection] = field(default_factory=list)
    converted: int = 0

    @property
    def reasons(self) -> Counter:
        return Counter(r.reason for r in self.rejected)


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


def ingest(items: Iterable[Item], audio_dir: Path, cache_dir: Path, min_duration: float, max_duration: float,
           root: Path | None = None, progress: str = "ingest") -> Result:
    root = Path(os.path.abspath(root or Path.cwd()))
    result = Result()
    seen: dict[str, str] = {}
    for item in tqdm(items, desc=progress, unit="utt", mininterval=1.0):
        if isinstance(item, Rejection):
            result.rejected.append(item)
            continue
        c = item
        if c.id in seen:
            result.rejected.append(Rejection(c.id, c.origin, "duplicate_id", f"{c.id} already from {seen[c.id]}"))
            continue
        seen[c.id] = c.origin
        if not c.text.strip():
            result.rejected.append(Rejection(c.id, c.origin, "empty_transcript", "transcript is empty"))
            continue
        try:
            path, duration, converted = _materialize(c, audio_dir, cache_dir, root)
        except audio.AudioError as e:
            result.rejected.append(Rejection(c.id, c.origin, e.reason, str(e)))
            continue
        if duration < min_duration:
            result.rejected.append(Rejection(c.id, c.origin, "too_short", f"{duration:.3f} s < data.min_duration {min_duration} s"))
        elif duration > max_duration:
            result.rejected.append(Rejection(c.id, c.origin, "too_long", f"{duration:.2f} s > data.max_duration {max_duration} s"))
        else:
            result.converted += converted
            result.accepted.append({"id": c.id, "audio": path, "text": " ".join(c.text.split()),
                                    "speaker": c.speaker, "duration": round(duration, 4)})
            continue
        if converted:  # a rejected utterance leaves no audio behind
            Path(root / path if not os.path.isabs(path) else path).unlink(missing_ok=True)
    result.accepted.sort(key=lambda r: r["id"])
    return result
