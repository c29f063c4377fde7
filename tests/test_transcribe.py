"""asrtune transcribe: media decoding (any container), Silero VAD segments, the outputs, failures per file.

The tiny random Whisper transcribes garbage: these tests check structure (segments, times, formats, exit
status), never words. The speech is eSpeak's, with silence and a low noise floor put around it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from conftest import ASRTUNE, params_for

SR = 16000
SENTENCES = ("今天天气很好，我们去公园散步吧。医生说这个药每天吃三次。", "请把阿莫西林放在桌子上，谢谢。")
TOLERANCE = 0.3  # seconds between a segment's edge and the padded speech edge


@pytest.fixture(scope="module")
def speech() -> list[tuple[np.ndarray, float, float]]:
    """Each sentence spoken by eSpeak at 16 kHz, with where its speech starts and ends (its first and last unit)."""
    from asrtune.corpus.audio import to_16k_mono
    from asrtune.synth.espeak import Espeak

    engine = Espeak()
    out = []
    for text in SENTENCES:
        s = engine.synth(text)
        out.append((to_16k_mono(s.samples, engine.sample_rate), s.units[0][1], s.units[-1][2]))
    return out


def silence(seconds: float) -> np.ndarray:
    return np.zeros(int(seconds * SR), dtype=np.float32)


def noisy(audio: np.ndarray) -> np.ndarray:
    return audio + np.random.default_rng(0).normal(0, 0.003, len(audio)).astype(np.float32)


@pytest.fixture(scope="module")
def recording(speech) -> tuple[np.ndarray, list[tuple[float, float]]]:
    """Over 30 s: 2 s of silence, sentence one, 14 s of silence, sentence two, 5 s of silence; and where the speech is."""
    parts, spans, t = [silence(2.0)], [], 2.0
    for (clip, first, last), gap in zip(speech, (14.0, 5.0)):
        spans.append((t + first, t + last))
        parts += [clip, silence(gap)]
        t += len(clip) / SR + gap
    audio = noisy(np.concatenate(parts))
    assert len(audio) / SR > 30
    return audio, spans


def test_vad_finds_the_speech_and_nothing_in_the_silence(recording):
    from asrtune.transcription import vad

    audio, spans = recording
    segments = vad.segments(audio)
    assert len(segments) == len(spans), [(s.start, s.end) for s in segments]
    for seg, (first, last) in zip(segments, spans):
        assert seg.start == pytest.approx(first - vad.PAD, abs=TOLERANCE)
        assert seg.end == pytest.approx(last + vad.PAD, abs=TOLERANCE)
    # nothing starts or ends inside the 14 s of silence
    assert not any(spans[0][1] + 0.5 < t < spans[1][0] - 0.5 for s in segments for t in (s.start, s.end))


def test_segments_never_exceed_the_window(speech):
    from asrtune.transcription import vad

    clip = speech[0][0]
    long = noisy(np.concatenate([silence(1.0), *[clip] * 9, silence(1.0)]))  # 65 s of speech, pauses under a second
    for max_seconds in (30.0, 3.0):  # 3 s: single speech runs are longer, and are cut
        segments = vad.segments(long, max_seconds=max_seconds)
        assert all(s.duration <= max_seconds for s in segments), [s.duration for s in segments]
        assert all(a.last <= b.first for a, b in zip(segments, segments[1:])), "segments overlap or are out of order"
        covered = sum(s.duration for s in segments)
        assert covered > 0.9 * (len(long) / SR - 2.0), f"max {max_seconds}: only {covered:.1f} s of the speech in segments"
    assert max(s.duration for s in vad.segments(long)) > 20  # merged up towards the window, not left in pieces


def test_a_long_run_is_cut_at_its_quietest_frame():
    from asrtune.transcription import vad

    energy = np.ones(100)
    energy[30] = 0.1  # the quietest frame in the second half of the limit (frames 20..40)
    energy[10] = 0.0  # quieter, but a cut there would leave a piece under half the limit
    assert vad.split_long((0, 100 * vad.FRAME), 40 * vad.FRAME, energy)[0] == (0, 30 * vad.FRAME)
    pieces = vad.split_long((0, 100 * vad.FRAME), 40 * vad.FRAME, np.ones(100))
    assert all(b - a <= 40 * vad.FRAME for a, b in pieces) and pieces[0][0] == 0 and pieces[-1][1] == 100 * vad.FRAME
    assert vad.merge([(0, 10), (15, 30), (100, 120)], limit=40, max_gap=10) == [(0, 30), (100, 120)]
    assert vad.merge([(0, 10), (15, 30), (35, 50)], limit=40, max_gap=10) == [(0, 30), (35, 50)]  # the window caps it


def write_m4a(path: Path, audio: np.ndarray, rate: int = 44100) -> Path:
    """AAC in an MP4 container at 44.1 kHz stereo (the second channel at half level), written with PyAV."""
    import av
    import torch
    import torchaudio.functional as AF

    mono = AF.resample(torch.from_numpy(audio), SR, rate).numpy()
    stereo = np.ascontiguousarray(np.stack([mono, 0.5 * mono]).astype(np.float32))
    with av.open(str(path), "w") as container:
        stream = container.add_stream("aac", rate=rate, layout="stereo")
        for i in range(0, stereo.shape[1], 4096):
            frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(stereo[:, i : i + 4096]), format="fltp", layout="stereo")
            frame.rate = rate
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return path


def test_a_non_wav_container_decodes(tmp_path, speech):
    from asrtune.transcription import media

    clip = speech[1][0]
    path = write_m4a(tmp_path / "talk.m4a", clip)
    audio = media.load(path)
    assert audio.dtype == np.float32 and audio.ndim == 1
    assert len(audio) / SR == pytest.approx(len(clip) / SR, abs=0.1)  # AAC adds a frame or two of priming and padding
    rms = lambda x: float(np.sqrt(np.mean(x**2)))  # noqa: E731
    assert rms(audio) == pytest.approx(0.75 * rms(clip), rel=0.1)  # the two channels averaged


def test_unreadable_media_says_why(tmp_path):
    from asrtune.transcription import media

    (tmp_path / "broken.mp3").write_bytes(b"not audio at all " * 64)
    for name, why in (("broken.mp3", "not a media file"), ("missing.wav", "no such file")):
        with pytest.raises(media.MediaError, match=why):
            media.load(tmp_path / name)


def test_settings_from_params_yaml_or_defaults(tmp_path, monkeypatch, tiny_whisper_dir):
    from asrtune.transcription import transcribe

    monkeypatch.chdir(tmp_path)
    p, source = transcribe.settings(None)
    assert "defaults" in source and p.model.language == "zh" and p.decode.batch_size == 16
    params_for(tmp_path, tiny_whisper_dir, **{"model.language": "en"})  # decode.batch_size 8
    p, source = transcribe.settings(None)
    assert source == "params.yaml" and p.model.language == "en" and p.decode.batch_size == 8
    assert transcribe.settings("ja")[0].model.language == "ja"


def test_cli_writes_every_format_and_skips_an_unreadable_file(tmp_path, recording, speech, tiny_whisper_dir):
    """One run over a folder: a long wav, an m4a and a broken file. The broken one is named with its reason, the
    others are written, the exit status is 1, and no stack trace."""
    import subprocess

    import pysubs2

    from asrtune.transcription import vad

    audio, _ = recording
    folder = tmp_path / "in"
    folder.mkdir()
    sf.write(folder / "meeting.wav", audio, SR, subtype="PCM_16")
    write_m4a(folder / "talk.m4a", noisy(np.concatenate([silence(1.0), speech[1][0], silence(1.0)])))
    (folder / "broken.mp3").write_bytes(b"not audio at all " * 64)
    (folder / "notes.txt").write_text("not media: not a file to transcribe")
    proc = subprocess.run([*ASRTUNE, "transcribe", str(folder), "--model", str(tiny_whisper_dir), "--format", "txt,srt,vtt,json",
                           "--out", str(tmp_path / "out")], cwd=tmp_path, capture_output=True, text=True)
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    assert any("broken.mp3" in line and "skipped" in line for line in proc.stderr.splitlines()), proc.stderr
    assert "3 files, 2 ok, 1 failed" in proc.stdout

    out = tmp_path / "out"
    assert sorted(f.name for f in out.iterdir()) == sorted(f"{stem}.{fmt}" for stem in ("meeting", "talk")
                                                           for fmt in ("txt", "srt", "vtt", "json"))
    for stem, name, duration, count in (("meeting", "meeting.wav", len(audio) / SR, 2), ("talk", "talk.m4a", None, 1)):
        doc = json.loads((out / f"{stem}.json").read_text(encoding="utf-8"))
        assert set(doc) == {"file", "duration", "model", "language", "segments"} and doc["file"].endswith(name)
        if duration is not None:
            assert doc["duration"] == pytest.approx(duration, abs=0.01)
        segments = doc["segments"]
        assert len(segments) == count
        for s in segments:
            assert set(s) <= {"start", "end", "text", "units", "capped"} and isinstance(s["text"], str)
            assert 0 <= s["start"] < s["end"] <= doc["duration"] + 1e-3 and s["end"] - s["start"] <= vad.MAX_SECONDS
        spoken = [s for s in segments if s["text"]]
        txt = (out / f"{stem}.txt").read_text(encoding="utf-8")
        assert txt.splitlines() == [s["text"] for s in spoken]
        for fmt in ("srt", "vtt"):
            subs = pysubs2.load(str(out / f"{stem}.{fmt}"), format_=fmt)
            assert [(e.start, e.end) for e in subs] == [(round(s["start"] * 1000), round(s["end"] * 1000)) for s in spoken]
        assert (out / f"{stem}.vtt").read_text(encoding="utf-8").startswith("WEBVTT\n")


def test_timestamps_and_hotwords_reach_the_family(tmp_path, recording, tiny_whisper_dir):
    """decode.timestamps: units in the file's time, inside their segment; --hotwords: every segment's context list."""
    from asrtune import params
    from asrtune.stages.decode import transcriber
    from asrtune.transcription import transcribe

    audio, _ = recording
    path = tmp_path / "meeting.flac"
    sf.write(path, audio, SR, format="FLAC")
    p = params.Params.model_construct(model=params.Model(), decode=params.Decode(timestamps=True, batch_size=4))
    run, _ = transcriber(p, tiny_whisper_dir, None)
    seen = []

    def spy(batch, clips, contexts=None):
        seen.extend(contexts or [None] * len(clips))
        return run(batch, clips, contexts)

    spy.guard = run.guard
    result = transcribe.transcribe_file(path, spy, p, ["阿莫西林", "布洛芬"])
    assert len(result.pieces) == 2 and seen == [["阿莫西林", "布洛芬"]] * 2
    for piece in result.pieces:
        assert piece.units is not None
        for _, start, end in piece.units:
            assert piece.start_ms / 1000 - 1e-3 <= start <= end <= piece.end_ms / 1000 + 1e-3
    doc = json.loads(transcribe.to_json(result, tiny_whisper_dir, p))
    assert all(isinstance(s["units"], list) for s in doc["segments"])

    # decode.hotwords_select 1 with two terms: a first pass without a list, then each segment with its closest term
    p = p.model_copy(update={"decode": params.Decode(batch_size=4, hotwords_select=1)})
    seen.clear()
    transcribe.transcribe_file(path, spy, p, ["阿莫西林", "布洛芬"])
    assert seen[:2] == [None, None] and len(seen) == 4 and all(len(c) == 1 for c in seen[2:])

    # with a distance bound 0 the tiny random model heard no term: no segment gets a list, none is decoded again
    p = p.model_copy(update={"decode": params.Decode(batch_size=4, hotwords_select=1, hotwords_max_distance=0.0)})
    seen.clear()
    bounded = transcribe.transcribe_file(path, spy, p, ["阿莫西林", "布洛芬"])
    plain = transcribe.transcribe_file(path, spy, p, [])
    assert seen == [None, None] * 2
    assert [(x.text, x.capped) for x in bounded.pieces] == [(x.text, x.capped) for x in plain.pieces]
