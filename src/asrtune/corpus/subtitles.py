"""Subtitled media: a folder of media files (wav, flac, mp3, m4a, mp4, mkv, ...) with same-stem subtitles
(SRT, WebVTT, ASS/SSA), cut into utterances at the cues' times.

pysubs2 parses the subtitles, asrtune.transcription.media decodes each media file once (PyAV's FFmpeg; no system ffmpeg).
Each cue's text is cleaned to what is said (`spoken`), then `plan` sorts the cues by start and gives each
one outcome: it begins an utterance (kept), joins the utterance before it (merged: adjacent, same speaker,
the gap at most `cue_gap`, the merged span at most `data.max_duration`, no rejected cue between them), or
is rejected with its file:line and reason. A kept cue longer than `data.max_duration` is still an
utterance: ingest's own duration check rejects it (too_long).

Counting (ingest checks `in = accepted + rejected` against the reader's own count): the items are the
utterances, the rejected cues and the files rejected whole, so the reader's count is
cues in - cues merged + files rejected whole, where cues in = kept + merged + rejected. A file rejected
whole (media without subtitles, subtitles without media, several files of one stem, unreadable media or
subtitles) is one item and brings no cue in.

The speaker is the media file (its path under the folder, parts joined by `-`) unless the subtitles name
one: ASS's Name field, WebVTT's `<v name>`. A speaker label written into the text (`张三：`) is removed
but not trusted as a speaker. Cue times are not carried as reference timestamps: the manifest's are one
[start, end] per character or word (asrtune.corpus.timestamps), which cues do not give.
"""

from __future__ import annotations

import html
import re
import unicodedata
from collections import defaultdict
from collections.abc import Generator
from dataclasses import dataclass
from pathlib import Path

from asrtune.corpus.audio import SAMPLE_RATE
from asrtune.corpus.sources import Candidate, Item, Rejection, _counted
from asrtune.corpus.timestamps import TOLERANCE

SUBTITLE_SUFFIXES = {".srt": "srt", ".vtt": "vtt", ".ass": "ass", ".ssa": "ssa"}  # suffix -> pysubs2's format
TRANSCRIPT_SUFFIX = ".txt"  # a folder corpus's transcript: beside audio, it makes the folder a `folder` corpus

# markup: ASS override blocks {\i1} (and {comments}), HTML-like tags <i> <font ...> </c>, WebVTT's inline <00:00:01.500>
_OVERRIDE = re.compile(r"\{[^}]*\}")
_TAG = re.compile(r"<(?:/?[A-Za-z][^<>]*|\d[\d:.]*)>")
_VOICE = re.compile(r"<v(?:\.[^\s>]*)?\s+([^>]+)>")
_BLANK_LINE = re.compile(r"\\N\s*\\N")  # SRT/WebVTT: a cue's text ends at a blank line (pysubs2 reads on to the next cue's id)
# sounds and music: [音乐] 【掌声】 〔笑〕 (笑声) （笑） ♪ lyrics ♪; a lone ♪ marks the rest of the line sung
_NOTES = "♪♫♬♩"
_SOUND = re.compile(rf"[\[［][^\]］]*[\]］]|【[^】]*】|〔[^〕]*〕|[(（][^)）]*[)）]|[{_NOTES}][^{_NOTES}]*[{_NOTES}]|[{_NOTES}].*$")
# speaker labels at the start of a line: >> (a change of speaker in broadcast captions), a dialogue dash, a name and a colon
_CHEVRON = re.compile(r"^(?:>>+|»)\s*")
_DASH = re.compile(r"^[-‐–—]+\s*(?![\d.])")
_NAME = re.compile(r"^(?P<name>[\u3400-\u4dbf\u4e00-\u9fff]{1,4}(?:·[\u3400-\u4dbf\u4e00-\u9fff]{1,5})?"
                   r"|[A-Za-z][A-Za-z0-9.'’-]*(?: [A-Za-z0-9.'’-]+){0,2})\s*[:：]\s*(?!//)")
# how a phrase before a colon that is no name ends: 他说： 医生问： 原因是： 注意： 检查结果： 诊断：
_NOT_NAME_ENDS = (*"说问道讲答喊叫称是为有", "注意", "提示", "例如", "比如", "总之", "首先", "其次", "然后", "最后", "另外", "时间",
                  "地点", "结果", "结论", "原因", "如下", "问题", "答案", "诊断", "主诉", "医嘱", "建议", "处理", "用法", "备注")


class SubtitleError(Exception):
    """A subtitle file that cannot be read: a rejection reason, the line where known, and why."""

    def __init__(self, reason: str, line: int | None, detail: str):
        super().__init__(detail)
        self.reason, self.line, self.detail = reason, line, detail


@dataclass(frozen=True)
class Cue:
    index: int  # its place among the file's cues, from 1
    line: int | None  # the line of its timing line (SRT, WebVTT) or Dialogue line (ASS); None where not found
    start: int  # ms
    end: int  # ms
    shown: str  # the text without markup, lines joined
    said: str  # `shown` without sound tags and speaker labels: what is said ("" when nothing)
    speaker: str | None = None  # named by the file (ASS Name, WebVTT <v>), else None


@dataclass(frozen=True)
class Utterance:
    cues: tuple[Cue, ...]  # one kept cue, then the cues merged into it

    @property
    def start(self) -> int:
        return self.cues[0].start

    @property
    def end(self) -> int:
        return self.cues[-1].end

    @property
    def text(self) -> str:
        return join([c.said for c in self.cues])

    @property
    def speaker(self) -> str | None:
        return self.cues[0].speaker


@dataclass(frozen=True)
class Rejected:
    cue: Cue
    reason: str
    detail: str


def clock(ms: int) -> str:
    sign, ms = ("-", -ms) if ms < 0 else ("", ms)
    return f"{sign}{ms // 3_600_000:02d}:{ms // 60_000 % 60:02d}:{ms // 1000 % 60:02d}.{ms % 1000:03d}"


def has_words(text: str) -> bool:
    """Any letter or digit (any script)."""
    return any(unicodedata.category(ch)[0] in "LN" for ch in text)


def _wide(ch: str) -> bool:
    return unicodedata.east_asian_width(ch) in "WF"


def join(parts: list[str]) -> str:
    """Lines or cues as one line: whitespace collapsed; a space between two parts unless either side is a
    wide (CJK) character: 你好 + 世界 = 你好世界, see + you = see you."""
    out = ""
    for part in parts:
        part = " ".join(part.split())
        if part:
            out += (" " if out and not (_wide(out[-1]) or _wide(part[0])) else "") + part
    return out


def shown_lines(text: str, fmt: str) -> tuple[list[str], str | None]:
    """A cue's text as pysubs2 gives it (ASS: with override tags; SRT and WebVTT: HTML-like tags kept) ->
    its lines without markup, and the speaker WebVTT's <v name> names."""
    if fmt in ("srt", "vtt"):
        text = _BLANK_LINE.split(text, maxsplit=1)[0]
    voice = _VOICE.search(text)
    text = text.replace("\\h", " ")
    lines = []
    for line in re.split(r"\\[Nn]", text):
        line = _TAG.sub("", _OVERRIDE.sub("", line))
        lines.append(html.unescape(line) if fmt in ("srt", "vtt") else line)
    return lines, (voice.group(1).strip() or None) if voice else None


def _label(line: str) -> str:
    """The line without a leading speaker label (>>, a dialogue dash, `张三：`)."""
    line = _DASH.sub("", _CHEVRON.sub("", line.strip()), count=1)
    m = _NAME.match(line)
    if m and len(name := m.group("name")) <= 24 and not name.endswith(_NOT_NAME_ENDS):
        return line[m.end():]
    return line


def spoken(lines: list[str]) -> str:
    """What is said in a cue's lines: sound and music tags removed ([音乐] (笑声) 【掌声】 ♪...♪), then speaker
    labels (>>, a dialogue dash, `张三：`), lines joined."""
    return join([_label(" ".join(_SOUND.sub(" ", line).split())) for line in lines])


def decode(data: bytes) -> str:
    """A subtitle file's text: UTF-8 (a BOM allowed), or UTF-16 with its BOM; newlines made \\n."""
    try:
        text = data.decode("utf-16") if data.startswith((b"\xff\xfe", b"\xfe\xff")) else data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        if data.startswith((b"\xff\xfe", b"\xfe\xff")):
            raise SubtitleError("bad_encoding", None, "not valid UTF-16 (save the subtitles as UTF-8)") from None
        line = data[: e.start].count(b"\n") + 1
        raise SubtitleError("bad_encoding", line, "not valid UTF-8 (save the subtitles as UTF-8, e.g. "
                                                  "`iconv -f GB18030 -t UTF-8`)") from None
    return text.replace("\r\n", "\n").replace("\r", "\n")


def _cue_lines(text: str, fmt: str, events: list) -> list[int | None]:
    """The line of each event pysubs2 read (it keeps none): pysubs2 makes one event per SRT/WebVTT line with
    two timestamps and per ASS Dialogue/Comment line, in file order. Those lines are matched to the events in
    order and by their times; an event with no matching line gets None (its origin then names the cue's
    place in the file instead)."""
    from pysubs2.formats import get_format_class
    from pysubs2.time import TIMESTAMP, timestamp_to_ms

    lines = text.split("\n")
    if fmt in ("srt", "vtt"):
        cls = get_format_class(fmt)
        found = [(n, stamps) for n, line in enumerate(lines, 1) if len(stamps := cls.TIMESTAMP.findall(line)) == 2]
        to_ms = cls.timestamp_to_ms
    else:
        found = [(n, TIMESTAMP.findall(line)[:2]) for n, line in enumerate(lines, 1)
                 if line.strip().startswith(("Dialogue:", "Comment:"))]
        to_ms = timestamp_to_ms
    out: list[int | None] = []
    i = 0
    for event in events:
        for j in range(i, len(found)):
            n, stamps = found[j]
            if len(stamps) == 2 and [to_ms(s) for s in stamps] == [event.start, event.end]:
                out.append(n)
                i = j + 1
                break
        else:
            out.append(None)
    return out


def parse(text: str, fmt: str) -> list[Cue]:
    """The cues of a subtitle file's text (`fmt`: srt, vtt, ass or ssa), in file order. ASS comments and
    drawings are not cues. SubtitleError when pysubs2 cannot read it or it holds no cue."""
    import pysubs2

    try:
        subs = pysubs2.SSAFile.from_string(text, format_=fmt, keep_html_tags=True)
    except Exception as e:  # noqa: BLE001 (pysubs2 raises ValueError, its own errors, ...: a reason, not a stack trace)
        raise SubtitleError("unreadable_subtitles", None, f"pysubs2 cannot read it as {fmt} ({type(e).__name__}: {e})") from None
    events = list(subs.events)
    lines = _cue_lines(text, fmt, events)
    cues = []
    for event, line in zip(events, lines):
        try:
            is_text = event.is_text
        except Exception:  # noqa: BLE001 (pysubs2's tag parser on odd markup: then it is text)
            is_text = True
        if not is_text:
            continue
        shown, voice = shown_lines(event.text, fmt)
        named = getattr(event, "name", "").strip() or voice
        cues.append(Cue(len(cues) + 1, line, int(event.start), int(event.end), join(shown), spoken(shown), named or None))
    if not cues:
        raise SubtitleError("unreadable_subtitles", None, f"no cue in it (is it {fmt}?)")
    return cues


def read_cues(path: Path) -> list[Cue]:
    fmt = SUBTITLE_SUFFIXES[path.suffix.lower()]
    return parse(decode(path.read_bytes()), fmt)


def plan(cues: list[Cue], audio_seconds: float, max_duration: float, cue_gap: float) -> list[Utterance | Rejected]:
    """Each cue's outcome, in order of start: rejected (bad_cue_times, empty_cue, no_speech_cue,
    outside_audio, overlapping_cue: the first that applies), or in an utterance, merged into the one before
    while it is adjacent (no rejected cue between), of the same speaker, at most `cue_gap` s after it, and
    the merged span stays within `max_duration` s. Overlaps are checked among cues with speech only: a long
    [音乐] cue under dialogue is no overlap."""
    order = sorted(cues, key=lambda c: (c.start, c.end, c.index))
    why: dict[int, tuple[str, str]] = {}
    speech: list[Cue] = []
    for c in order:
        if c.start < 0 or c.end <= c.start:
            why[c.index] = ("bad_cue_times", f"{clock(c.start)} --> {clock(c.end)}: "
                                             + ("starts before 0" if c.start < 0 else "ends before it starts" if c.end < c.start
                                                else "no duration"))
        elif not has_words(c.shown):
            why[c.index] = ("empty_cue", "the cue has no text")
        elif not has_words(c.said):
            why[c.index] = ("no_speech_cue", f"only sound tags or speaker labels: {c.shown}")
        else:
            speech.append(c)
            if c.end / 1000 > audio_seconds + TOLERANCE:
                why[c.index] = ("outside_audio", f"{clock(c.start)} --> {clock(c.end)} ends past the audio ({audio_seconds:.3f} s)")
    others: dict[int, list[Cue]] = defaultdict(list)
    running: list[Cue] = []  # speech cues not yet ended at the current start
    for c in speech:
        running = [r for r in running if r.end > c.start]
        for r in running:
            others[r.index].append(c)
            others[c.index].append(r)
        running.append(c)
    for c in speech:
        if c.index not in why and others[c.index]:
            named = sorted(others[c.index], key=lambda o: o.index)
            why[c.index] = ("overlapping_cue", "overlaps " + ", ".join(
                f"the cue on line {o.line} ({clock(o.start)} --> {clock(o.end)})" if o.line else
                f"cue {o.index} ({clock(o.start)} --> {clock(o.end)})" for o in named))
    out: list[Utterance | Rejected] = []
    group: list[Cue] = []
    gap_ms, max_ms = round(cue_gap * 1000), round(max_duration * 1000)
    for c in order:
        if c.index in why:
            if group:
                out.append(Utterance(tuple(group)))
                group = []
            out.append(Rejected(c, *why[c.index]))
        elif group and c.speaker == group[-1].speaker and c.start - group[-1].end <= gap_ms and c.end - group[0].start <= max_ms:
            group.append(c)
        else:
            if group:
                out.append(Utterance(tuple(group)))
            group = [c]
    if group:
        out.append(Utterance(tuple(group)))
    return out


def _media_suffixes() -> frozenset[str]:
    from asrtune.transcription.media import EXTENSIONS

    return EXTENSIONS


def _stems(folder: Path) -> dict[Path, tuple[list[Path], list[Path], list[Path]]]:
    """Path without suffix -> (media files, subtitle files, .txt files) of that stem, in name order."""
    groups: dict[Path, tuple[list[Path], list[Path], list[Path]]] = defaultdict(lambda: ([], [], []))
    media = _media_suffixes()
    for p in sorted(p for p in folder.rglob("*") if p.is_file()):
        suffix = p.suffix.lower()
        kind = 0 if suffix in media else 1 if suffix in SUBTITLE_SUFFIXES else 2 if suffix == TRANSCRIPT_SUFFIX else None
        if kind is not None:
            groups[p.with_suffix("")][kind].append(p)
    return dict(groups)


def layout(folder: Path) -> tuple[Path | None, Path | None]:
    """(a subtitle file beside media of its stem, a .txt beside media of its stem): which reader a folder is for."""
    subtitled = transcribed = None
    for medias, subs, txts in _stems(folder).values():
        if medias:
            subtitled = subtitled or (subs[0] if subs else None)
            transcribed = transcribed or (txts[0] if txts else None)
    return subtitled, transcribed


def _origin(path: Path, cue: Cue) -> str:
    return f"{path}:{cue.line}" if cue.line is not None else f"{path} (cue {cue.index})"


@_counted
def read_subtitles(folder: Path, max_duration: float, cue_gap: float) -> Generator[Item, None, tuple[int, dict]]:
    """Media files with same-stem subtitles, cut at the cues (the module docstring says how, and what counts).
    Utterance id: `<media>-<start ms, 8 digits>`, media being the file's path under the folder without suffix,
    parts joined by `-`. Other files (.txt, README) are not read."""
    from asrtune.transcription import media

    kept = merged = rejected = files = cues_in = 0  # files: rejected whole, each one item that brings no cue in
    for stem, (medias, subs, _) in _stems(folder).items():
        key = "-".join(stem.relative_to(folder).parts)
        if not medias and not subs:
            continue
        whole = None
        if len(medias) > 1 or len(subs) > 1:
            names = ", ".join(p.name for p in medias + subs)
            whole = Rejection(key, str((medias + subs)[0]), "ambiguous_files",
                              f"one stem, {len(medias)} media and {len(subs)} subtitle files ({names}): keep one of each")
        elif not subs:
            whole = Rejection(key, str(medias[0]), "no_subtitles", f"no subtitles ({' '.join(SUBTITLE_SUFFIXES)}) of the same name")
        elif not medias:
            whole = Rejection(key, str(subs[0]), "no_media", "subtitles with no media file of the same name")
        else:
            try:
                cues = read_cues(subs[0])
                samples = media.load(medias[0])
            except SubtitleError as e:
                whole = Rejection(key, f"{subs[0]}:{e.line}" if e.line else str(subs[0]), e.reason, e.detail)
            except media.MediaError as e:
                whole = Rejection(key, str(medias[0]), "unreadable_audio", f"{medias[0].name}: {e}")
        if whole is not None:
            files += 1
            yield whole
            continue
        cues_in += len(cues)
        per_ms = SAMPLE_RATE // 1000
        for unit in plan(cues, len(samples) / SAMPLE_RATE, max_duration, cue_gap):
            if isinstance(unit, Rejected):
                rejected += 1
                yield Rejection(f"{key}-{unit.cue.start:08d}", _origin(subs[0], unit.cue), unit.reason, unit.detail)
                continue
            kept += 1
            merged += len(unit.cues) - 1
            cut = samples[unit.start * per_ms: unit.end * per_ms]
            yield Candidate(f"{key}-{unit.start:08d}", (cut, SAMPLE_RATE), unit.text, unit.speaker or key, _origin(subs[0], unit.cues[0]))
    return cues_in - merged + files, {"cues": {"in": cues_in, "kept": kept, "merged": merged, "rejected": rejected},
                                      "files_rejected": files}
