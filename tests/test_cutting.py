"""Long recordings with plain transcripts cut into utterances (asrtune.corpus.cutting, `asrtune cut`).

The recording is eSpeak's speech of five sentences joined with pauses, over a low noise floor; where each unit is
spoken is known from eSpeak. The recognizer is an oracle that heard exactly what was said, with its unit times
moved by up to 0.15 s (cross-attention times are that rough): the test is of the aligning, cutting and checking,
with real Silero VAD on real speech. The transcript has one sentence wrong: it must be the one rejected."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import soundfile as sf

from conftest import ASRTUNE

SR = 16000
SAID = ("今天天气很好，我们去公园散步吧。", "医生说这个药每天吃三次。", "请把阿莫西林放在桌子上。", "明天上午九点开会。",
        "这条路晚上车很少。")
WRONG = "他昨天买了一台新电脑。"  # written in place of the third sentence, which was said
PAUSES = (0.6, 0.9, 0.5, 1.2)


@pytest.fixture(scope="module")
def joined():
    """(audio, the true units (unit, start, end) in recording time, the true pause between each two sentences)."""
    from asrtune.corpus.audio import to_16k_mono
    from asrtune.synth.espeak import Espeak

    engine = Espeak()
    rng = np.random.default_rng(0)
    parts, said, t = [np.zeros(int(0.5 * SR), np.float32)], [], 0.5
    for i, text in enumerate(SAID):
        s = engine.synth(text)
        clip = to_16k_mono(s.samples, engine.sample_rate)
        said.append([(u, t + a, t + b) for u, a, b in s.units])
        parts.append(clip)
        t += len(clip) / SR
        gap = PAUSES[i] if i < len(PAUSES) else 0.7
        parts.append(np.zeros(int(gap * SR), np.float32))
        t += gap
    audio = np.concatenate(parts)
    audio = audio + rng.normal(0, 0.003, len(audio)).astype(np.float32)
    pauses = [(a[-1][2], b[0][1]) for a, b in zip(said, said[1:])]  # last unit's end to the next sentence's first start
    units = [u for sentence in said for u in sentence]
    return audio, units, pauses


def oracle(units, seed=1):
    """What a recognizer that heard every unit right would give, its times moved by up to 0.15 s."""
    from asrtune.corpus.cutting import Heard

    rng = np.random.default_rng(seed)
    out = []
    for u, a, b in units:
        shift = rng.uniform(-0.15, 0.15)
        out.append(Heard(u, max(0.0, a + shift), max(0.0, b + shift)))
    return out


def test_a_wrong_sentence_is_rejected_and_the_rest_cut_at_the_true_pauses(joined):
    from asrtune.corpus import cutting
    from asrtune.transcription import vad

    audio, units, pauses = joined
    transcript = "".join(SAID[:2]) + "\n" + WRONG + "".join(SAID[3:])
    pieces, cuts = cutting.cut(transcript, oracle(units), vad.speech_probs(audio), len(audio), 30.0, 0.5)

    kept = [p for p in pieces if p.reason is None]
    rejected = [p for p in pieces if p.reason is not None]
    assert [p.text for p in kept] == [SAID[0], SAID[1], SAID[3], SAID[4]]
    assert [(p.text, p.reason, p.line) for p in rejected] == [(WRONG, "mismatch", 2)]
    assert sum(b - a for p in pieces for a, b in [p.units]) == len(cutting.spans(transcript))  # every unit accounted
    # each cut sits in the true pause between two sentences, within 100 ms of it
    assert len(cuts) == 4
    for c in cuts:
        assert any(lo - 0.1 <= c.time <= hi + 0.1 for lo, hi in pauses), (c, pauses)
    # each kept piece's audio holds its sentence whole, from before its first unit to after its last
    n = len(cutting.spans(SAID[0]))
    assert kept[0].first / SR <= units[0][1] and kept[0].last / SR >= units[n - 1][2]


def test_the_error_measure_is_zero_inside_the_true_gap():
    from asrtune.corpus.cutting import Cut, cut_errors

    gaps = [(1.0, 1.5), (3.0, 3.2)]
    cuts = [Cut(0, 1.2, 0.3, True), Cut(1, 3.35, 0.1, True), Cut(0, 0.9, 0.1, False)]
    assert cut_errors(cuts, gaps) == [0.0, 0.15, 0.1]


def test_a_long_stretch_without_sentence_ends_is_cut_at_pauses_under_the_limit(joined):
    from asrtune.corpus import cutting
    from asrtune.transcription import vad

    audio, units, _ = joined
    transcript = " ".join(s.rstrip("。") for s in SAID)  # no sentence end anywhere
    probs = vad.speech_probs(audio)
    whole, _ = cutting.cut(transcript, oracle(units), probs, len(audio), 60.0, 0.5)
    assert len(whole) == 1 and whole[0].reason is None
    pieces, cuts = cutting.cut(transcript, oracle(units), probs, len(audio), 6.0, 0.5)
    assert len(pieces) > 1 and cuts
    assert all(p.seconds <= 6.0 for p in pieces if p.reason is None)
    assert "".join(p.text.replace(" ", "") for p in pieces) == transcript.replace(" ", "")


def test_unmatched_speech_gives_no_cut_and_a_mismatch():
    from asrtune.corpus import cutting

    probs = [0.9] * 40 + [0.0] * 20 + [0.9] * 40
    heard = [cutting.Heard("你", 0.1, 0.3), cutting.Heard("好", 2.1, 2.3)]
    pieces, cuts = cutting.cut("再见。谢谢。", heard, probs, 100 * 512, 30.0, 0.5)
    assert cuts == [] and [p.reason for p in pieces] == ["mismatch"]
    assert "你好" in pieces[0].detail


def test_cli_accounts_for_every_piece_and_its_output_is_a_corpus(tmp_path, joined, tiny_whisper_dir):
    """`asrtune cut` over a folder: a recording with its transcript, one without, one whose transcript is not UTF-8.
    The tiny random Whisper hears nothing of the text: with the default --max-cer every piece is rejected as a
    mismatch, with its file:line; with --max-cer 100 the one piece is kept and ingest's table reader takes the csv."""
    import subprocess

    from asrtune.corpus.sources import Candidate, read_table
    from asrtune.corpus.timestamps import units

    audio, _, _ = joined
    folder = tmp_path / "in"
    folder.mkdir()
    sf.write(folder / "talk.wav", audio, SR, subtype="PCM_16")
    (folder / "talk.txt").write_text("".join(SAID[:2]) + "\n" + "".join(SAID[2:]) + "\n", encoding="utf-8")
    sf.write(folder / "alone.wav", audio[: SR * 2], SR, subtype="PCM_16")
    sf.write(folder / "latin1.wav", audio[: SR * 3], SR, subtype="PCM_16")
    (folder / "latin1.txt").write_bytes("第一行\n".encode() + "caf\xe9".encode("latin-1"))
    sf.write(folder / "blank.wav", audio[: SR * 2], SR, subtype="PCM_16")
    (folder / "blank.txt").write_text("。。\n", encoding="utf-8")

    def run(*extra):
        return subprocess.run([*ASRTUNE, "cut", str(folder), "--out", str(tmp_path / "out"), "--model", str(tiny_whisper_dir),
                               *extra], cwd=tmp_path, capture_output=True, text=True)

    proc = run()
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert "alone.wav: no transcript" in proc.stderr and "latin1.txt:2: not valid UTF-8" in proc.stderr
    assert "blank.txt: no words in the transcript" in proc.stderr
    summary = json.loads((tmp_path / "out/summary.json").read_text(encoding="utf-8"))
    talk = summary["recordings"][str(folder / "talk.wav")]
    assert talk["units"] == len(units("".join(SAID))) == talk["kept_units"] + talk["rejected_units"]
    assert talk["kept"] == 0 and talk["rejected"] == {"mismatch": talk["pieces"]} and len(summary["failed"]) == 3
    with open(tmp_path / "out/rejected.tsv", encoding="utf-8") as f:
        rejected = list(csv.DictReader(f, delimiter="\t"))
    assert len(rejected) == talk["pieces"] and rejected[0]["origin"] == f"{folder / 'talk.txt'}:1"
    assert (tmp_path / "out/utterances.csv").read_text(encoding="utf-8") == "id,audio,text,speaker,start,end,origin\n"

    inside = subprocess.run([*ASRTUNE, "cut", str(folder), "--out", str(folder / "cut"), "--model", str(tiny_whisper_dir)],
                            cwd=tmp_path, capture_output=True, text=True)
    assert inside.returncode == 2 and "inside" in inside.stderr and "Traceback" not in inside.stderr

    proc = run("--max-cer", "100")
    rows = [r for r in read_table(tmp_path / "out/utterances.csv", {}) if isinstance(r, Candidate)]
    assert [r.text for r in rows] == ["".join(SAID[:2]) + "".join(SAID[2:])]  # no cut: nothing the model heard matched
    assert sf.info(str(rows[0].audio)).duration <= len(audio) / SR and rows[0].speaker == "talk"


def test_a_sentence_never_said_is_rejected_and_opening_quotes_stay_with_their_sentence():
    from asrtune.corpus import cutting

    probs = [0.9] * 40 + [0.0] * 20 + [0.9] * 40  # speech, a 0.64 s pause, speech
    heard = [cutting.Heard(u, 0.2 + 0.3 * k, 0.4 + 0.3 * k) for k, u in enumerate("走吧")]
    heard += [cutting.Heard(u, 2.2 + 0.3 * k, 2.4 + 0.3 * k) for k, u in enumerate("好的")]
    pieces, _ = cutting.cut("走吧。没说过。“好的。”", heard, probs, 100 * 512, 30.0, 0.5)
    assert [(p.text, p.reason) for p in pieces] == [("走吧。", None), ("没说过。", "mismatch"), ("“好的。”", None)]
    assert "not heard" in pieces[1].detail


def test_units_heard_out_of_order_are_put_in_time_order_first():
    """甲 heard at 6 s, 乙 at 4 s, 丙 at 6.5 s, all in a long pause after 3 s of speech: taken in the order given, the
    cuts ran backwards and 甲。乙。 was kept over speech the model heard none of them in."""
    from asrtune.corpus import cutting

    probs = [0.9] * 94 + [0.0] * 156 + [0.9] * 60  # speech to 3 s, a pause to 8 s, speech
    heard = [cutting.Heard("甲", 5.9, 6.1), cutting.Heard("乙", 3.9, 4.1), cutting.Heard("丙", 6.4, 6.6)]
    pieces, cuts = cutting.cut("甲。乙。丙。", heard, probs, 310 * 512, 30.0, 0.5)
    assert [c.time for c in cuts] == sorted(c.time for c in cuts)
    assert all(p.cer == 0 for p in pieces if p.reason is None) and sum(b - a for p in pieces for a, b in [p.units]) == 3
    kept = sorted((p.first, p.last) for p in pieces if p.reason is None)
    assert all(a[1] <= b[0] for a, b in zip(kept, kept[1:]))


def test_without_unit_times_cuts_fall_only_between_segments():
    """An audio LLM gives a segment's text, no unit times: its units are spread over the segment, and a cut inside
    one segment would be a guess; cuts go in the pause between two segments only."""
    from types import SimpleNamespace

    from asrtune.corpus import cutting

    probs = [0.9] * 60 + [0.0] * 10 + [0.9] * 60 + [0.0] * 30 + [0.9] * 60  # two pauses; the first inside segment one
    segments = [SimpleNamespace(start_ms=0, end_ms=4200, text="一二三。四五六七八九十。", units=None),
                SimpleNamespace(start_ms=5100, end_ms=7000, text="好的。", units=None)]
    heard = cutting.heard(segments)
    assert all(h.segment is not None for h in heard)
    pieces, cuts = cutting.cut("一二三。四五六七八九十。好的。", heard, probs, 220 * 512, 30.0, 0.5)
    assert [p.text for p in pieces] == ["一二三。四五六七八九十。", "好的。"]
    assert len(cuts) == 1 and 4.2 <= cuts[0].time <= 5.1


def test_recordings_pair_with_one_transcript_each(tmp_path):
    from asrtune.transcription.cut import recordings

    for name in ("a.wav", "a.txt", "b.wav", "b.txt", "b.TXT", "c.wav", "c.mp3", "c.txt", "d.wav", "e.txt"):
        (tmp_path / name).write_bytes(b"")
    pairs, problems = recordings(tmp_path)
    assert pairs == [(tmp_path / "a.wav", tmp_path / "a.txt")]
    said = "\n".join(problems)
    assert "2 transcripts share its name (b.TXT, b.txt)" in said and "2 recordings share its name" in said
    assert "d.wav: no transcript" in said and "e.txt: no recording" in said and len(problems) == 4
