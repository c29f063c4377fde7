"""Subtitled media: cue text cleaning, the cut plan, line numbers, and the ingest stage on real SRT, WebVTT
and ASS files beside real media (AAC in .m4a and .mp4 made with PyAV, PCM in .wav): cut boundaries in
samples, merged spans, every rejection's reason and file:line, cues in = kept + merged + rejected."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from conftest import in_process, params_for

from asrtune.corpus import subtitles
from asrtune.corpus.ingestion import ingest
from asrtune.corpus.subtitles import Cue, Rejected, SubtitleError, decode, parse, plan, read_subtitles, shown_lines, spoken
from asrtune.errors import UserError
from asrtune.params import Corpus
from asrtune.stages import ingest as ingest_stage

RATE = 16000


@pytest.mark.parametrize(("written", "fmt", "said"), [
    (r"{\an8}{\i1}你好{\i0}\N世界", "ass", "你好世界"),  # ASS override tags, \N between wide characters: no space
    (r"Hello\Nworld\hagain", "ass", "Hello world again"),  # a space between Latin words; \h is a space
    (r"<i>张三：</i>今天<font color=red>天气</font>很好", "srt", "今天天气很好"),  # HTML-like tags, a speaker label
    (r"- 你去吗？\N- 我不去", "srt", "你去吗？我不去"),  # dialogue dashes
    (r">> 主持人：欢迎收看", "srt", "欢迎收看"),  # a change of speaker, then a role label
    (r"JOHN: see you &amp; me", "srt", "see you & me"),  # an English label; entities
    (r"[音乐] (笑声) 好的（笑）【掌声】", "srt", "好的"),  # sound tags, half- and full-width
    (r"♪ 月亮代表我的心 ♪ 谢谢", "srt", "谢谢"),  # sung between notes
    (r"开始了 ♪ 啦啦啦", "srt", "开始了"),  # a lone note: the rest of the line is sung
    (r"他说：好的", "srt", "他说：好的"),  # reported speech, not a label
    (r"注意：饭后服用", "srt", "注意：饭后服用"),
    (r"CT检查结果：正常", "srt", "CT检查结果：正常"),
    (r"诊断：肺炎", "srt", "诊断：肺炎"),
    (r"10:30 见", "srt", "10:30 见"),  # a time, not a label
    (r"-5度", "srt", "-5度"),  # a minus sign, not a dialogue dash
    (r"<v 李老师>同学们好</v>", "vtt", "同学们好"),
    (r"[音乐]", "srt", ""),
    (r"♪♪", "srt", ""),
])
def test_cue_text_is_cleaned_to_what_is_said(written, fmt, said):
    lines, _ = shown_lines(written, fmt)
    assert spoken(lines) == said


def test_a_webvtt_voice_and_an_ass_name_are_the_speaker():
    assert shown_lines("<v.loud 李老师>同学们好</v>", "vtt")[1] == "李老师"
    ass = ("[Script Info]\nScriptType: v4.00+\n\n[Events]\n"
           "Format: Layer, Start, End, Style, Name, MarginL, MarginR, MarginV, Effect, Text\n"
           "Dialogue: 0,0:00:00.50,0:00:01.20,Default,王五,0,0,0,,第一句, 有逗号\n"
           "Comment: 0,0:00:01.00,0:00:02.00,Default,,0,0,0,,not a cue\n"
           r"Dialogue: 0,0:00:01.50,0:00:02.00,Default,,0,0,0,,{\p1}m 0 0 l 100 0{\p0}" "\n"  # a drawing: not a cue
           "Dialogue: 0,0:00:02.50,0:00:03.00,Default,,0,0,0,,好\n")
    cues = parse(ass, "ass")
    assert [(c.index, c.line, c.start, c.end, c.said, c.speaker) for c in cues] == [
        (1, 6, 500, 1200, "第一句, 有逗号", "王五"), (2, 9, 2500, 3000, "好", None)]


def cue(index, start, end, said="字", shown=None, speaker=None):
    return Cue(index, index * 4 - 2, start, end, said if shown is None else shown, said, speaker)


def outcomes(units):
    return [(u.reason, u.cue.index) if isinstance(u, Rejected) else tuple(c.index for c in u.cues) for u in units]


def test_plan_merges_adjacent_cues_within_the_gap_and_max_duration():
    cues = [cue(1, 0, 1000), cue(2, 1500, 2500), cue(3, 3000, 4000),  # gaps 0.5 s: one utterance of 4 s
            cue(4, 4500, 5000),  # would make 5 s > 4 s: a new utterance
            cue(5, 6500, 7000),  # 1.5 s gap > cue_gap: a new utterance
            cue(6, 7200, 7500, speaker="张三"),  # another speaker: a new utterance
            cue(7, 7600, 8000, said="", shown="[音乐]"), cue(8, 8100, 8500, speaker="张三"),  # a rejected cue between: no merge
            cue(9, 9000, 14000)]  # alone longer than max_duration: still an utterance (ingest says too_long)
    units = plan(cues, 20.0, 4.0, 1.0)
    assert outcomes(units) == [(1, 2, 3), (4,), (5,), (6,), ("no_speech_cue", 7), (8,), (9,)]
    assert (units[0].start, units[0].end, units[0].text) == (0, 4000, "字字字")
    assert outcomes(plan(cues[:3], 20.0, 4.0, 0.4)) == [(1,), (2,), (3,)]  # cue_gap below the gaps: none merge


def test_plan_rejects_each_bad_cue_with_its_reason():
    cues = [cue(1, 500, 400), cue(2, 600, 600), cue(3, 1000, 2000, said="", shown=""), cue(4, 2000, 3000, said="", shown="(笑声)"),
            cue(5, 3000, 4000), cue(6, 3500, 4500), cue(7, 4200, 4300),  # 5 overlaps 6, 6 overlaps 5 and 7
            cue(8, 6000, 7000, said="", shown="[音乐]"), cue(9, 6200, 6800),  # a sound tag under speech is no overlap
            cue(10, 9000, 10_019), cue(11, 10_100, 10_500)]  # the audio is 10 s: 19 ms past it is within the tolerance
    units = plan(cues, 10.0, 30.0, 0.0)
    assert outcomes(units) == [("bad_cue_times", 1), ("bad_cue_times", 2), ("empty_cue", 3), ("no_speech_cue", 4),
                               ("overlapping_cue", 5), ("overlapping_cue", 6), ("overlapping_cue", 7), ("no_speech_cue", 8),
                               (9,), (10,), ("outside_audio", 11)]
    detail = {u.cue.index: u.detail for u in units if isinstance(u, Rejected)}
    assert "line 22" in detail[5] and "line 18" in detail[6] and "line 26" in detail[6] and "line 22" in detail[7]
    assert "ends before it starts" in detail[1] and "no duration" in detail[2] and "10.000 s" in detail[11]


def test_cue_lines_survive_crlf_a_bom_and_utf16():
    srt = "1\n00:00:00,500 --> 00:00:01,000\n你好\n\n\n\n2\n00:00:02,000 --> 00:00:03,000\n世界\n再见\n\n3\n00:00:04,000 --> 00:00:05,000\n好\n"
    for data in (srt.encode(), b"\xef\xbb\xbf" + srt.replace("\n", "\r\n").encode(), srt.encode("utf-16")):
        assert [(c.line, c.said) for c in parse(decode(data), "srt")] == [(2, "你好"), (8, "世界再见"), (13, "好")]
    with pytest.raises(SubtitleError) as bad:
        decode("1\n00:00:00,500 --> 00:00:01,000\n你好\n".encode("gbk"))
    assert (bad.value.reason, bad.value.line) == ("bad_encoding", 3)


# --- the reader and the ingest stage on real files -------------------------------------------------------------

def tones(*freqs: float, seconds: float = 2.0) -> np.ndarray:
    t = np.arange(int(seconds * RATE)) / RATE
    return np.concatenate([0.3 * np.sin(2 * np.pi * f * t) for f in freqs]).astype(np.float32)


def write_aac(path: Path, samples: np.ndarray) -> None:
    """AAC in an MP4 container (.m4a / .mp4), encoded by FFmpeg inside PyAV."""
    import av

    with av.open(str(path), "w") as out:
        stream = out.add_stream("aac", rate=RATE)
        stream.layout = "mono"
        for i in range(0, len(samples), 1024):
            frame = av.AudioFrame.from_ndarray(samples[None, i:i + 1024], format="fltp", layout="mono")
            frame.sample_rate, frame.pts = RATE, i
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))


TALK_SRT = r"""1
00:00:00,200 --> 00:00:01,000
<i>张三：</i>你好，

2
00:00:01,300 --> 00:00:01,900
- 今天{\an8}天气
- 很好

3
00:00:02,100 --> 00:00:02,900
[音乐]

4
00:00:03,000 --> 00:00:03,800
>> 医生：请坐 (笑声)

5
00:00:05,000 --> 00:00:05,600
♪ 啦啦啦 ♪ 谢谢

6
00:00:06,200 --> 00:00:06,800
再见
"""

LESSON_VTT = """WEBVTT

1
00:00:00.100 --> 00:00:00.900
<v 李老师>同学们好</v>

2
00:00:01.000 --> 00:00:01.500
<c.yellow>上课</c>

00:00:01.500 --> 00:00:02.000

00:00:02.000 --> 00:00:03.000
第一个问题

00:00:02.500 --> 00:00:03.500
第二个问题

00:00:04.000 --> 00:00:05.010
下课
"""

EP1_ASS = r"""[Script Info]
ScriptType: v4.00+

[Events]
Format: Layer, Start, End, Style, Name, MarginL, MarginR, MarginV, Effect, Text
Dialogue: 0,0:00:00.00,0:00:04.50,Default,,0,0,0,,{\i1}这是一段很长的独白{\i0}
Comment: 0,0:00:01.00,0:00:02.00,Default,,0,0,0,,a comment is no cue
Dialogue: 0,0:00:04.60,0:00:05.00,Default,主持人,0,0,0,,Hello\Nworld
Dialogue: 0,0:00:05.10,0:00:05.50,Default,主持人,0,0,0,,again
"""


@pytest.fixture
def subtitled(tmp_path: Path) -> tuple[Path, np.ndarray]:
    """A folder of media with subtitles: .m4a + .srt, .wav + .vtt (CRLF, BOM), .mp4 + .ass in a subfolder, and
    one file of each whole-file reason. Returns the folder and the .wav's samples (16-bit)."""
    root = tmp_path / "media"
    (root / "show").mkdir(parents=True)
    write_aac(root / "talk.m4a", tones(440, 880, 1320))  # 6 s: 440 Hz, 880 Hz, 1320 Hz, 2 s each
    (root / "talk.srt").write_text(TALK_SRT, encoding="utf-8")
    lesson = (np.random.default_rng(0).uniform(-0.5, 0.5, 5 * RATE) * 32767).astype(np.int16)  # exactly 5 s of noise
    sf.write(str(root / "lesson.wav"), lesson, RATE, subtype="PCM_16")
    (root / "lesson.vtt").write_bytes(b"\xef\xbb\xbf" + LESSON_VTT.replace("\n", "\r\n").encode())
    write_aac(root / "show" / "ep1.mp4", tones(440, 880, 1320))
    (root / "show" / "ep1.ass").write_text(EP1_ASS, encoding="utf-8")
    (root / "orphan.srt").write_text("1\n00:00:00,000 --> 00:00:01,000\n没有媒体\n", encoding="utf-8")
    sf.write(str(root / "silent.wav"), np.zeros(RATE, dtype=np.int16), RATE, subtype="PCM_16")
    (root / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42 not a movie")
    (root / "broken.srt").write_text("1\n00:00:00,000 --> 00:00:01,000\n坏的\n", encoding="utf-8")
    sf.write(str(root / "gbk.wav"), np.zeros(RATE, dtype=np.int16), RATE, subtype="PCM_16")
    (root / "gbk.srt").write_bytes("1\n00:00:00,000 --> 00:00:01,000\n你好\n".encode("gbk"))
    (root / "README.md").write_text("not media", encoding="utf-8")
    return root, lesson


def dominant(path: Path) -> float:
    samples, rate = sf.read(str(path))
    middle = samples[len(samples) // 2 - 2000: len(samples) // 2 + 2000]
    return float(np.argmax(np.abs(np.fft.rfft(middle))) * rate / len(middle))


def test_ingest_cuts_subtitled_media_and_accounts_for_every_cue(subtitled, tmp_path):
    root, lesson = subtitled
    params_for(tmp_path, Path("unused"), **{"data.corpora.subs": {"role": "domain", "source": str(root)}, "data.max_duration": 4.0})
    printed = in_process(tmp_path, ingest_stage, "subs")
    out = tmp_path / "data/ingest/subs"
    manifest = [json.loads(line) for line in (out / "manifest.jsonl").read_text(encoding="utf-8").splitlines()]
    by_id = {r["id"]: r for r in manifest}
    assert {i: (r["text"], r["speaker"], r["duration"]) for i, r in by_id.items()} == {
        "talk-00000200": ("你好，今天天气很好", "talk", 1.7),  # cues 1 and 2 merged: 0.2 s to 1.9 s
        "talk-00003000": ("请坐", "talk", 0.8),
        "talk-00005000": ("谢谢", "talk", 0.6),
        "lesson-00000100": ("同学们好", "李老师", 0.8),
        "lesson-00001000": ("上课", "lesson", 0.5),  # another speaker than the cue before: not merged
        "lesson-00004000": ("下课", "lesson", 1.0),  # ends 10 ms past the audio: cut at its end
        "show-ep1-00004600": ("Hello world again", "主持人", 0.9),  # two cues of 主持人 merged
    }
    assert all("timestamps" not in r for r in manifest)  # cue times are no per-unit reference timestamps

    # cut boundaries in samples: the .wav's cuts are its very samples; the AAC cuts lie in the right tone
    for utt, (start, end) in {"lesson-00000100": (100, 900), "lesson-00001000": (1000, 1500), "lesson-00004000": (4000, 5000)}.items():
        cut, rate = sf.read(str(tmp_path / by_id[utt]["audio"]), dtype="int16")
        assert rate == RATE and np.array_equal(cut, lesson[start * 16: end * 16]), utt
    for utt, freq in {"talk-00000200": 440, "talk-00003000": 880, "talk-00005000": 1320, "show-ep1-00004600": 1320}.items():
        info = sf.info(str(tmp_path / by_id[utt]["audio"]))
        assert info.frames == round(by_id[utt]["duration"] * RATE) and dominant(tmp_path / by_id[utt]["audio"]) == pytest.approx(freq, abs=5)

    with open(out / "rejected.tsv", encoding="utf-8", newline="") as f:
        rows = list(csv.reader(f, delimiter="\t"))[1:]
    rejected = {utt: (origin.removeprefix(f"{root}/"), reason) for utt, origin, reason, _ in rows}
    assert rejected == {
        "talk-00002100": ("talk.srt:11", "no_speech_cue"),
        "talk-00006200": ("talk.srt:23", "outside_audio"),
        "lesson-00001500": ("lesson.vtt:11", "empty_cue"),
        "lesson-00002000": ("lesson.vtt:13", "overlapping_cue"),
        "lesson-00002500": ("lesson.vtt:16", "overlapping_cue"),
        "show-ep1-00000000": ("show/ep1.ass:6", "too_long"),  # one cue of 4.5 s: ingest's own check
        "orphan": ("orphan.srt", "no_media"),
        "silent": ("silent.wav", "no_subtitles"),
        "broken": ("broken.mp4", "unreadable_audio"),
        "gbk": ("gbk.srt:3", "bad_encoding"),
    }
    details = {utt: detail for utt, _, _, detail in rows}
    assert "line 16" in details["lesson-00002000"] and "line 13" in details["lesson-00002500"]

    # the count: cues in = kept + merged + rejected; items in = cues - merged + files rejected whole = accepted + rejected
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    assert summary["format"] == "subtitles"
    assert summary["cues"] == {"in": 15, "kept": 8, "merged": 2, "rejected": 5} and summary["files_rejected"] == 4
    cues = summary["cues"]
    assert cues["in"] == cues["kept"] + cues["merged"] + cues["rejected"]
    assert summary["in"] == cues["in"] - cues["merged"] + summary["files_rejected"] == summary["accepted"] + summary["rejected"] == 17
    assert (summary["accepted"], summary["rejected"]) == (7, 10)
    assert "cues: 15 in = 8 kept (one utterance each) + 2 merged into the utterance before + 5 rejected; 4 files rejected whole" in printed

    # a second run gives the same bytes
    first = {name: (out / name).read_bytes() for name in ("manifest.jsonl", "rejected.tsv", "summary.json")}
    first_audio = {p.name: p.read_bytes() for p in (out / "audio").iterdir()}
    in_process(tmp_path, ingest_stage, "subs")
    assert {name: (out / name).read_bytes() for name in first} == first
    assert {p.name: p.read_bytes() for p in (out / "audio").iterdir()} == first_audio


def test_a_planner_that_loses_a_cue_fails_the_count(subtitled, tmp_path, monkeypatch):
    """The reader counts cues apart from the plan: an outcome lost between them is an internal error."""
    root, _ = subtitled
    real = subtitles.plan
    monkeypatch.setattr(subtitles, "plan", lambda *args: real(*args)[1:])
    reading = read_subtitles(root, 4.0, 1.0)
    out = tmp_path / "out"
    result = ingest(reading, out / "manifest.jsonl", out / "rejected.tsv", out / "audio", tmp_path / "cache", 0.1, 4.0, root=tmp_path)
    with pytest.raises(RuntimeError, match=r"the subtitles reader saw 18 utterances come in but passed on 14"):
        ingest_stage.items_in(reading, result)


def test_format_detection(subtitled, tmp_path):
    root, _ = subtitled
    assert ingest_stage.detect_format(Corpus(role="domain", source=str(root)), "subs") == "subtitles"
    plain = tmp_path / "plain"
    plain.mkdir()
    sf.write(str(plain / "a.wav"), np.zeros(RATE, dtype=np.int16), RATE)
    (plain / "a.txt").write_text("你好", encoding="utf-8")
    (plain / "b.srt").write_text("1\n00:00:00,000 --> 00:00:01,000\n孤立\n", encoding="utf-8")  # no media: still a folder corpus
    assert ingest_stage.detect_format(Corpus(role="domain", source=str(plain)), "p") == "folder"
    (root / "lesson.txt").write_text("一个转写", encoding="utf-8")
    with pytest.raises(UserError, match=r"holds media with subtitles .* and audio with .txt transcripts .*set data.corpora.subs.format"):
        ingest_stage.detect_format(Corpus(role="domain", source=str(root)), "subs")
    assert ingest_stage.detect_format(Corpus(role="domain", source=str(root), format="subtitles"), "subs") == "subtitles"
    with pytest.raises(UserError, match=r"a subtitles corpus is a folder"):
        ingest_stage.read_items(Corpus(role="domain", source=str(root / "talk.srt"), format="subtitles"), "subtitles", "subs")
