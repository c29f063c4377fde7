"""ingest: every input format, every rejection reason, accepted + rejected == in."""

from __future__ import annotations

import csv
import http.server
import json
import threading
from collections import Counter
from functools import partial
from pathlib import Path
from types import SimpleNamespace

import pytest
import soundfile as sf
from conftest import in_process, params_for, write_audio

from asrtune.corpus import audio, sources
from asrtune.corpus.ingestion import ingest
from asrtune.corpus.manifest import read_jsonl
from asrtune.corpus.sources import Candidate, Rejection, read_chatml, read_folder, read_kaldi, read_table
from asrtune.errors import UserError


def run_ingest(items, tmp_path, min_d=0.1, max_d=30.0):
    """The manifest and rejected.tsv read back, beside the counts ingest returns."""
    out = tmp_path / "out"
    result = ingest(items, out / "manifest.jsonl", out / "rejected.tsv", out / "audio", tmp_path / "cache", min_d, max_d,
                    root=tmp_path)
    accepted = list(read_jsonl(out / "manifest.jsonl"))
    with open(out / "rejected.tsv", encoding="utf-8", newline="") as f:
        rows = list(csv.reader(f, delimiter="\t"))
    assert rows[0] == ["id", "origin", "reason", "detail"]
    rejected = [Rejection(*row) for row in rows[1:]]
    assert (result.accepted, result.rejected) == (len(accepted), len(rejected))
    assert result.reasons == Counter(r.reason for r in rejected)
    assert not (out / ".ingest.sqlite").exists()  # the scratch database is gone
    return SimpleNamespace(accepted=accepted, rejected=rejected, converted=result.converted)


def test_kaldi_every_reason_is_reported_and_nothing_is_lost(kaldi_corpus, tmp_path):
    items = list(read_kaldi(kaldi_corpus))
    result = run_ingest(items, tmp_path)
    assert len(result.accepted) + len(result.rejected) == len(items) == 12
    assert [r["id"] for r in result.accepted] == ["good1", "good2", "good3"]
    reasons = {r.id: r.reason for r in result.rejected}
    assert reasons == {
        "short": "too_short", "long": "too_long", "missing": "missing_audio", "corrupt": "unreadable_audio",
        "empty_text": "empty_transcript", "no_text": "no_transcript", "orphan": "no_audio",
        "bad\ufffd\ufffd": "bad_encoding",
    } | {"good1": "duplicate_id"}
    duplicate = next(r for r in result.rejected if r.reason == "duplicate_id")
    assert duplicate.origin == f"{kaldi_corpus / 'wav.scp'}:10" and "wav.scp:1" in duplicate.detail
    assert next(r for r in result.rejected if r.reason == "bad_encoding").origin.endswith("wav.scp:11")
    assert next(r for r in result.rejected if r.reason == "no_audio").origin.endswith("text:9")


def test_ready_audio_is_referenced_and_other_audio_converted(kaldi_corpus, tmp_path):
    result = run_ingest(read_kaldi(kaldi_corpus), tmp_path)
    by_id = {r["id"]: r for r in result.accepted}
    assert by_id["good1"]["audio"] == "audio/good1.wav"  # 16 kHz mono PCM: referenced where it lies
    assert result.converted == 2
    for utt, seconds in (("good2", 2.0), ("good3", 1.5)):
        info = sf.info(str(tmp_path / by_id[utt]["audio"]))
        assert (info.samplerate, info.channels, info.subtype) == (16000, 1, "PCM_16")
        assert by_id[utt]["duration"] == pytest.approx(seconds, abs=1e-3)
    assert by_id["good1"]["speaker"] == "A" and by_id["good2"]["text"] == "Hello world 你好"


def test_rejected_converted_audio_leaves_no_file(tmp_path):
    long_clip = write_audio(tmp_path / "long.wav", 3.0, sample_rate=8000)
    result = run_ingest([Candidate("x", long_clip, "文本", None, "t:1")], tmp_path, max_d=2.0)
    assert [r.reason for r in result.rejected] == ["too_long"]
    assert not list((tmp_path / "out" / "audio").glob("*.wav"))


def test_folder_source(tmp_path):
    root = tmp_path / "corpus"
    write_audio(root / "S01" / "a.wav", 1.0)
    (root / "S01" / "a.txt").write_text("你好\n", encoding="utf-8")
    write_audio(root / "S02" / "b.flac", 1.0, fmt="FLAC")
    (root / "S02" / "b.txt").write_text("世界", encoding="utf-8")
    write_audio(root / "c.wav", 1.0)  # no transcript
    (root / "d.txt").write_text("没有音频", encoding="utf-8")
    items = list(read_folder(root))
    result = run_ingest(items, tmp_path)
    assert [(r["id"], r["speaker"], r["text"]) for r in result.accepted] == [("S01-a", "S01", "你好"), ("S02-b", "S02", "世界")]
    assert sorted((r.id, r.reason) for r in result.rejected) == [("c", "no_transcript"), ("d", "no_audio")]


def test_folder_speaker_is_the_top_level_folder_however_deep(tmp_path):
    """speaker/session/utt.wav is spoken by `speaker`, not by `session`: otherwise one speaker's sessions
    land in train and test alike. A file directly in the root has no known speaker."""
    root = tmp_path / "corpus"
    for rel, text in (("S01/day1/a", "你好"), ("S01/day2/b", "世界"), ("S02/c", "再见"), ("d", "根目录")):
        write_audio(root / f"{rel}.wav", 1.0)
        (root / f"{rel}.txt").write_text(text, encoding="utf-8")
    result = run_ingest(read_folder(root), tmp_path)
    assert [(r["id"], r["speaker"]) for r in result.accepted] == [("S01-day1-a", "S01"), ("S01-day2-b", "S01"), ("S02-c", "S02"),
                                                                   ("d", None)]


def test_folder_audio_in_an_unreadable_format_is_rejected_as_such(tmp_path):
    """An .m4a beside its .txt is one utterance, rejected for its audio and naming the file (not skipped,
    which left its transcript rejected as no_audio)."""
    root = tmp_path / "corpus"
    write_audio(root / "S01" / "a.wav", 1.0)
    (root / "S01" / "a.txt").write_text("你好", encoding="utf-8")
    (root / "S01" / "b.m4a").write_bytes(b"\x00\x00\x00\x20ftypM4A ")
    (root / "S01" / "b.txt").write_text("苹果格式", encoding="utf-8")
    (root / "S02" / "c.AMR").parent.mkdir()
    (root / "S02" / "c.AMR").write_bytes(b"#!AMR\n")  # no transcript: still its audio's reason
    (root / "notes.md").write_text("not an utterance", encoding="utf-8")
    reading = read_folder(root)
    result = run_ingest(reading, tmp_path)
    assert [r["id"] for r in result.accepted] == ["S01-a"]
    assert [(r.id, r.reason) for r in result.rejected] == [("S01-b", "unsupported_audio"), ("S02-c", "unsupported_audio")]
    assert "S01/b.m4a" in result.rejected[0].detail and result.rejected[0].origin.endswith("b.m4a")
    assert reading.seen == 3


def test_every_reader_counts_what_came_in(kaldi_corpus, tmp_path):
    """Each reader's own count of the utterances in its input (taken apart from what it yields) equals
    the items it yields: wav.scp and text lines less the joined ones, table rows, jsonl lines, folder files."""
    write_audio(tmp_path / "f" / "S01" / "a.wav", 1.0)
    (tmp_path / "f" / "S01" / "a.txt").write_text("你好", encoding="utf-8")
    (tmp_path / "f" / "orphan.txt").write_text("没有音频", encoding="utf-8")
    write_audio(tmp_path / "f" / "b.flac", 1.0, fmt="FLAC")
    (tmp_path / "t.csv").write_text("path,text\nf/S01/a.wav,你好\n\n,,\nf/b.flac\nf/none.wav,没有\n", encoding="utf-8")
    (tmp_path / "c.jsonl").write_text('{"audio_path": "f/S01/a.wav", "text": "你好"}\n\n{not json\n', encoding="utf-8")
    for reading, expected in ((read_kaldi(kaldi_corpus), 12), (read_folder(tmp_path / "f"), 3), (read_table(tmp_path / "t.csv", {}), 3),
                              (read_chatml(tmp_path / "c.jsonl"), 2)):
        assert reading.seen is None  # known once the items ran out
        items = list(reading)
        assert reading.seen == len(items) == expected, reading.reader


def test_a_reader_that_drops_an_utterance_fails_the_ingest_stage(tmp_path, monkeypatch):
    """ingest's `in = accepted + rejected` holds for whatever items it is given; the reader's own count of
    what came in is what catches a reader that loses one: an internal error naming the reader."""
    from asrtune.stages import ingest as ingest_stage

    root = tmp_path / "corpus"
    for name in ("a", "b"):
        write_audio(root / "S01" / f"{name}.wav", 1.0)
        (root / "S01" / f"{name}.txt").write_text("你好", encoding="utf-8")
    (root / "S01" / "c.aac").write_bytes(b"\xff\xf1")
    params_for(tmp_path, Path("unused"), **{"data.corpora.spk": {"role": "general", "source": str(root)}})
    assert "spk (folder" in (out := in_process(tmp_path, ingest_stage, "spk")) and "3 in = 2 accepted + 1 rejected" in out

    def dropping(folder):
        reading = sources.read_folder(folder)

        def items():
            yield from list(reading)[1:]  # the bug: the first utterance never comes out
            return reading.seen

        return sources.Reading("folder", items())

    monkeypatch.setattr(ingest_stage, "read_folder", dropping)
    with pytest.raises(RuntimeError, match=r"internal error: the folder reader saw 3 utterances come in but passed on 2"):
        in_process(tmp_path, ingest_stage, "spk")


def test_csv_and_tsv_sources(tmp_path):
    write_audio(tmp_path / "clips" / "one.wav", 1.0)
    write_audio(tmp_path / "clips" / "two.wav", 1.0, sample_rate=22050)
    rows = [["path", "sentence", "client_id"], ["clips/one.wav", "第一句", "spk1"], ["clips/two.wav", "第二句", "spk2"],
            ["clips/none.wav", "没有", "spk3"], ["clips/one.wav", "重复"], ["clips/two.wav", "", "spk2"]]
    for name, delimiter in (("t.csv", ","), ("t.tsv", "\t")):
        with open(tmp_path / name, "w", newline="", encoding="utf-8") as f:
            csv.writer(f, delimiter=delimiter).writerows(rows)
        items = list(read_table(tmp_path / name, {}))
        result = run_ingest(items, tmp_path)
        assert [(r["id"], r["speaker"]) for r in result.accepted] == [("one", "spk1"), ("two", "spk2")]
        assert [(r.origin.rsplit(":", 1)[1], r.reason) for r in result.rejected] == [
            ("4", "missing_audio"), ("5", "malformed_line"), ("6", "duplicate_id")]


def test_csv_without_a_text_column_is_one_clear_error(tmp_path):
    (tmp_path / "t.csv").write_text("path,words\na.wav,x\n", encoding="utf-8")
    with pytest.raises(UserError, match=r"t.csv:1: no transcript column"):
        list(read_table(tmp_path / "t.csv", {}))


def test_chatml_source_round_trips_funasr_records(tmp_path):
    clip = write_audio(tmp_path / "a.wav", 1.2)
    good = {"key": "k1", "messages": [{"role": "system", "content": "You are a helpful assistant."},
                                      {"role": "user", "content": f"语音转写：<|startofspeech|>!{clip}<|endofspeech|>"},
                                      {"role": "assistant", "content": "你好世界"}], "speech_length": 118, "text_length": 3}
    lines = [json.dumps(good, ensure_ascii=False), "{not json", json.dumps({"key": "k2", "messages": []})]
    (tmp_path / "in.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    items = list(read_chatml(tmp_path / "in.jsonl"))
    result = run_ingest(items, tmp_path)
    assert [(r["id"], r["text"]) for r in result.accepted] == [("k1", "你好世界")]
    assert [(r.origin.rsplit(":", 1)[1], r.reason) for r in result.rejected] == [("2", "malformed_line"), ("3", "malformed_line")]


class _CountingHandler(http.server.SimpleHTTPRequestHandler):
    requests: Counter = Counter()

    def do_GET(self):
        _CountingHandler.requests[self.path] += 1
        super().do_GET()

    def log_message(self, *args):
        pass


def test_http_audio_is_fetched_once_into_the_cache(tmp_path):
    served = tmp_path / "www"
    write_audio(served / "a.wav", 1.0, sample_rate=16000)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), partial(_CountingHandler, directory=str(served)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        base = f"http://127.0.0.1:{server.server_address[1]}"
        kaldi = tmp_path / "kaldi"
        kaldi.mkdir()
        (kaldi / "wav.scp").write_text(f"u1 {base}/a.wav\nu2 {base}/missing.wav\n", encoding="utf-8")
        (kaldi / "text").write_text("u1 网络音频\nu2 不存在\n", encoding="utf-8")
        for _ in range(2):
            result = run_ingest(read_kaldi(kaldi), tmp_path)
            assert [r["id"] for r in result.accepted] == ["u1"]
            assert [(r.id, r.reason) for r in result.rejected] == [("u2", "fetch_failed")]
            assert result.accepted[0]["audio"] == "out/audio/u1.wav"  # materialized: the cache is not an output
        assert _CountingHandler.requests["/a.wav"] == 1
    finally:
        server.shutdown()


def test_probe_reads_header_only_and_names_the_problem(tmp_path):
    clip = write_audio(tmp_path / "a.wav", 2.0)
    p = audio.probe(clip)
    assert p.ready and p.duration == pytest.approx(2.0)
    with pytest.raises(audio.AudioError) as e:
        audio.probe(tmp_path / "nope.wav")
    assert e.value.reason == "missing_audio" and "nope.wav" in str(e.value)


def test_rejection_items_pass_through(tmp_path):
    r = Rejection("x", "f:1", "malformed_line", "bad")
    result = run_ingest([r], tmp_path)
    assert result.rejected == [r] and result.accepted == []
