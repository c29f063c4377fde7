"""Reference timestamps: the aligner's units, ingest's checks (a reason for every rejection), the
aligner guide's jsonl and a Kaldi dir's CTM file, carried into the ChatML records; the demo's from Kokoro."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from conftest import REPO, in_process, params_for, read_jsonl, write_audio

from asrtune.corpus.timestamps import problem, read_ctm, units


def test_units_are_the_aligners():
    assert units("请把胸部CT报告送到ICU。") == ["请", "把", "胸", "部", "CT", "报", "告", "送", "到", "ICU"]
    assert units("打 8 折，OK") == ["打", "8", "折", "OK"]
    from transformers.models.qwen3_asr.processing_qwen3_asr import Qwen3ASRProcessor

    from asrtune.testing import demo_texts

    tricky = ["CT，12", "don't stop", "  D-二聚体 3.5mg/L ", "Ｈｅｌｌｏ　世界", "ｶﾀｶﾅ かな 한국어", "𠀀𪜀 é ß ½ ², ①", "", "。。", "a\tb\nc"]
    for text in demo_texts(REPO / "demo") + tricky:  # transformers' own splitter, without language
        assert units(text) == Qwen3ASRProcessor.split_words_for_alignment(None, text), text


def test_problems_name_the_reason():
    text = "复查CT"  # 3 units: 复 查 CT
    assert problem([[0.1, 0.3], [0.3, 0.5], [0.6, 1.0]], text, 1.2) is None
    assert problem([[0.1, 0.3], [0.3, 0.5]], text, 1.2).startswith("2 [start, end] pairs for 3 units of the transcript (one per")
    assert problem([[0.1, 0.3], [0.2, 0.5], [0.6, 1.0]], text, 1.2) == "not monotonic at unit 2 (查): 0.2 s after 0.3 s"
    assert problem([[0.1, 0.3], [0.3, 0.5], [0.6, 0.55]], text, 1.2) == "not monotonic at unit 3 (CT): 0.55 s after 0.6 s"
    assert problem([[0.1, 0.3], [0.3, 0.5], [0.6, 1.5]], text, 1.2) == "outside the audio: 0.1-1.5 s in 1.200 s"
    assert problem([[0.1, 0.3], [0.3, 0.5], [0.6, "x"]], text, 1.2) == "timestamps must be numbers (seconds)"
    assert problem([0.1, 0.3], text, 1.2) == "timestamps must be a list of [start, end] pairs"


def test_ctm_reads_both_layouts_and_names_a_bad_line(tmp_path):
    ctm = tmp_path / "ctm"
    ctm.write_text("a 0.10 0.20 复\na 0.30 0.2 查\nb 1 0.5 0.25 好 0.9\nc 0.1 x 坏\n", encoding="utf-8")
    pairs, bad = read_ctm(ctm)
    assert pairs == {"a": [[0.1, 0.3], [0.3, 0.5]], "b": [[0.5, 0.75]]}
    assert bad == {"c": (f"{ctm}:4", "expected `utt start duration unit` or `utt channel start duration unit [confidence]`")}


def test_ingest_checks_timestamps_and_jsonl_carries_them(tmp_path, tiny_whisper_dir):
    from asrtune.stages import ingest, jsonl

    repo = tmp_path / "repo"
    shutil.copytree(tiny_whisper_dir, repo / "models/base")
    for name in ("a", "b", "c", "d", "e"):
        write_audio(repo / f"corpus/{name}.wav", seconds=1.0)
    good = [[0.1, 0.3], [0.3, 0.5], [0.6, 0.9]]
    rows = [
        {"audio_path": "a.wav", "text": "复查CT", "timestamps": good},
        {"audio_path": "b.wav", "text": "复查CT", "timestamps": good[:2]},  # a pair short
        {"audio_path": "c.wav", "text": "复查CT", "timestamps": [[0.1, 0.3], [0.2, 0.5], [0.6, 0.9]]},  # goes back
        {"audio_path": "d.wav", "text": "复查CT", "timestamps": [[0.1, 0.3], [0.3, 0.5], [0.6, 1.4]]},  # past the end
        {"audio_path": "e.wav", "text": "复查CT"},  # none: kept, no reference
    ]
    source = repo / "corpus/aligner.jsonl"
    source.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    params_for(repo, tiny_whisper_dir, **{"data.corpora": {"k": {"role": "domain", "source": str(source)}}})
    printed = in_process(repo, ingest, "k")
    assert "5 in = 2 accepted + 3 rejected" in printed and "bad_timestamps" in printed
    rejected = {line.split("\t")[0]: line.split("\t") for line in (repo / "data/ingest/k/rejected.tsv").read_text(encoding="utf-8").splitlines()[1:]}
    assert set(rejected) == {"b", "c", "d"} and rejected["b"][1] == f"{source}:2" and rejected["b"][2] == "bad_timestamps"
    assert "2 [start, end] pairs for 3 units" in rejected["b"][3] and "not monotonic at unit 2" in rejected["c"][3]
    assert "outside the audio" in rejected["d"][3]
    manifest = {r["id"]: r for r in read_jsonl(repo / "data/ingest/k/manifest.jsonl")}
    assert manifest["a"]["timestamps"] == good and "timestamps" not in manifest["e"]
    in_process(repo, jsonl, "k")
    records = {r["key"]: r for r in read_jsonl(repo / "data/jsonl/k.jsonl")}
    assert records["k-a"]["timestamps"] == good and "timestamps" not in records["k-e"]


def test_kaldi_ctm_timestamps(tmp_path, tiny_whisper_dir):
    from asrtune.stages import ingest

    repo = tmp_path / "repo"
    shutil.copytree(tiny_whisper_dir, repo / "models/base")
    kaldi = repo / "kaldi"
    for name in ("u1", "u2", "u3"):
        write_audio(kaldi / f"{name}.wav", seconds=1.0)
    (kaldi / "wav.scp").write_text("".join(f"{n} {n}.wav\n" for n in ("u1", "u2", "u3")), encoding="utf-8")
    (kaldi / "text").write_text("u1 你好\nu2 你好\nu3 你好\n", encoding="utf-8")
    (kaldi / "ctm").write_text("u1 1 0.1 0.2 你\nu1 1 0.3 0.2 好\nu2 0.1 0.2 你\nu3 0.1 0.2 你\nu3 zero 0.2 好\n", encoding="utf-8")
    params_for(repo, tiny_whisper_dir, **{"data.corpora": {"k": {"role": "domain", "source": str(kaldi)}}})
    assert "3 in = 1 accepted + 2 rejected" in in_process(repo, ingest, "k")
    assert read_jsonl(repo / "data/ingest/k/manifest.jsonl")[0]["timestamps"] == [[0.1, 0.3], [0.3, 0.5]]
    reasons = {line.split("\t")[0]: line.split("\t")[1:] for line in (repo / "data/ingest/k/rejected.tsv").read_text(encoding="utf-8").splitlines()[1:]}
    assert reasons["u2"][1] == "bad_timestamps" and "1 [start, end] pairs for 2 units" in reasons["u2"][2]
    assert reasons["u3"][:2] == [f"{kaldi / 'ctm'}:5", "bad_timestamps"]


def test_kokoro_times_every_unit_from_its_durations(tmp_path):
    from asrtune.synth.kokoro import Kokoro

    text = "请把胸部CT报告送到ICU。"
    engine = Kokoro(tmp_path / "cache")
    speech = engine.synth(text, {"jf_alpha": 0.6, "jm_kumo": 0.4}, 1.1, "t")
    assert [u for u, _, _ in speech.units] == units(text)
    flat = [t for _, s, e in speech.units for t in (s, e)]
    assert flat == sorted(flat) and 0 < flat[0] and flat[-1] < len(speech.samples) / 24000
    assert all(e - s >= 0.075 for _, s, e in speech.units)  # a syllable is at least 3 frames of 25 ms
    again = engine.synth(text, {"jf_alpha": 0.6, "jm_kumo": 0.4}, 1.1, "t")  # from the cache
    assert len(list((tmp_path / "cache").glob("*.npz"))) == 1
    assert np.array_equal(again.samples, speech.samples) and again.units == speech.units
    with pytest.raises(Exception, match="no voice"):
        engine.synth(text, {"zf_nobody": 1.0}, 1.0, "t")


def test_espeak_times_every_unit_from_its_events():
    from asrtune.synth.espeak import Espeak

    text = "患者今天做了CT检查，血压120。"
    speech = Espeak().synth(text, "cmn+f1", 160, 50)
    duration = len(speech.samples) / 22050
    assert [u for u, _, _ in speech.units] == units(text)
    assert problem([[s, e] for _, s, e in speech.units], text, duration) is None  # monotonic, inside the audio
    times = {u: (s, e) for u, s, e in speech.units}
    assert times["患"][1] == times["者"][0]  # one dictionary word, spoken as one: its characters share its span
    assert times["血"][0] - times["查"][1] > 0.1  # the comma's pause belongs to no unit
    assert all(e - s > 0.05 for _, s, e in speech.units)


def test_espeak_word_events_to_unit_spans():
    """Hand-made events: a word that starts inside no unit, a dictionary word of two characters, a unit
    (a digit run) that eSpeak speaks as two words, pauses and a language switch that sound nothing."""
    from asrtune.synth.espeak import _PHONEME, _WORD, unit_times

    def word(pos):
        return (_WORD, pos, 0.0, b"")

    def phone(t, name):
        return (_PHONEME, 0, t, name)

    events = [word(1), phone(0.0, b"_"), phone(0.1, b"X"), phone(0.2, b"ua"), phone(0.5, b"_|"),  # 患者: 0.1-0.5
              word(3), phone(0.5, b"(en)"), phone(0.6, b"s"), phone(0.8, b"i:"), phone(0.9, b"_:"),  # CT: 0.6-0.9
              word(5), phone(1.2, b"_"),  # the comma: silent
              word(6), phone(1.3, b"j"), phone(1.5, b"_|"), word(7), phone(1.5, b"@r"), phone(1.7, b"_")]  # 12: 1.3-1.7
    assert unit_times("患者CT 12", events, 2.0) == [("患", 0.1, 0.3), ("者", 0.3, 0.5), ("CT", 0.6, 0.9), ("12", 1.3, 1.7)]
    # the aligner's splitter drops the comma without a break: CT，12 is one unit
    merged = [word(1), phone(0.1, b"s"), phone(0.3, b"_"), word(4), phone(0.5, b"j"), phone(0.7, b"_")]
    assert unit_times("CT，12", merged, 1.0) == [("CT12", 0.1, 0.7)]
    # a word that starts on an opening quote belongs to the unit after it, not to the one before
    quoted = [word(1), phone(0.1, b"s"), phone(0.3, b"_"), word(2), phone(0.4, b"n"), phone(0.6, b"_")]
    assert unit_times("说“你", quoted, 1.0) == [("说", 0.1, 0.3), ("你", 0.4, 0.6)]
    assert unit_times("。", [word(1), phone(0.1, b"a")], 1.0) is None  # nothing to time
    assert unit_times("患者", [word(2), phone(0.1, b"a")], 1.0) is None  # 患 gets no word: no timestamps


def test_whispers_first_unit_loses_the_leading_silence():
    """DTW starts Whisper's first unit at 0 s: it is cut to twice the median unit (capped at 0.7 s), from the start."""
    from asrtune.families.whisper import trim_first_unit

    units = [("复", 0.0, 0.9), ("查", 0.9, 1.1), ("CT", 1.1, 1.3), ("室", 1.3, 1.5)]
    assert trim_first_unit(units) == [("复", 0.5, 0.9), *units[1:]]  # median 0.2 s
    assert trim_first_unit(units[:1] + [("查", 0.9, 2.4), ("室", 2.4, 3.9)]) == [("复", 0.0, 0.9), ("查", 0.9, 2.4), ("室", 2.4, 3.9)]
    assert trim_first_unit([("复", 0.0, 3.0), ("查", 3.0, 5.0), ("室", 5.0, 7.0)])[0] == ("复", 1.6, 3.0)  # median capped at 0.7 s
    assert trim_first_unit(units[:1]) == units[:1]  # one unit: nothing to compare it with


def test_unit_times_from_byte_level_tokens():
    from asrtune.corpus.timestamps import unit_times

    # 鹦 takes two tokens (its 3 bytes split 2 + 1); 今天 is one token of two characters; CT one word
    ying = "鹦".encode()
    pieces = [(ying[:2], 0.0, 0.2), (ying[2:] + "鹉".encode(), 0.2, 0.5), ("今天".encode(), 0.5, 0.9), (b" CT", 0.9, 1.2), ("。".encode(), 1.2, 1.3)]
    assert unit_times(pieces) == [("鹦", 0.0, 0.5), ("鹉", 0.2, 0.5), ("今", 0.5, 0.7), ("天", 0.7, 0.9), ("CT", 0.9, 1.2)]
    # the splitter drops punctuation without a break: CT，12 is one unit, from CT's start to 12's end
    assert unit_times([(b"CT", 0.0, 0.3), ("，".encode(), 0.3, 0.4), (b"12", 0.5, 0.8)]) == [("CT12", 0.0, 0.8)]


def test_boundary_errors_time_only_the_units_both_sides_share():
    from asrtune.evaluation.scoring import boundary_errors

    ref = [["复", 0.1, 0.3], ["查", 0.3, 0.5], ["ct", 0.6, 0.9]]
    hyp = [["复", 0.12, 0.3], ["差", 0.3, 0.5], ["ct", 0.5, 1.0]]  # 查 misrecognized: not timed
    assert boundary_errors(ref, hyp) == [20, 0, 100, 100]
    assert boundary_errors(ref, []) == []


def test_score_writes_timestamp_mae_with_intervals(tmp_path):
    """Two utterances of 2 units; base is off by 40 ms at every boundary, merged by 0 or 200 ms."""
    from asrtune.stages import score

    def write(model: str, corpus: str, shift: list[float]) -> None:
        out = tmp_path / f"data/normalized/{model}/{corpus}.jsonl"
        out.parent.mkdir(parents=True, exist_ok=True)
        rows = []
        for i, d in enumerate(shift):
            ref = [["复", 0.1, 0.3], ["查", 0.3, 0.5]]
            rows.append({"key": f"{corpus}-{i}", "ref": "复查", "hyp": "复查", "missing": False, "ref_times": ref,
                         "times": [[u, round(s + d, 3), round(e + d, 3)] for u, s, e in ref]})
        out.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")

    for corpus in ("general", "medical"):
        write("base", corpus, [0.04, 0.04])
        write("merged", corpus, [0.0, 0.2])
    params_for(tmp_path, tmp_path / "no-model-needed")
    printed = in_process(tmp_path, score)
    m = json.loads((tmp_path / "metrics/alignment.json").read_text(encoding="utf-8"))
    assert m["mae_ms"]["medical"] == {"base": 40.0, "merged": 100.0} and m["boundaries"]["medical"] == {"base": 8, "merged": 8}
    assert m["within_50ms"]["medical"] == {"base": 1.0, "merged": 0.5} and m["within_20ms"]["medical"]["base"] == 0.0
    assert m["mae_ms_ci95"]["medical"]["base"] == {"lo": 40.0, "hi": 40.0}  # every resample: 40 ms
    assert m["mae_ms_ci95"]["medical"]["merged"]["lo"] == 0.0 and m["mae_ms_ci95"]["medical"]["merged"]["hi"] == 200.0
    assert m["units_timed"]["medical"] == {"base": 1.0, "merged": 1.0} and "timestamps medical: MAE base 40.0 ms" in printed
    plot = (tmp_path / "plots/alignment.csv").read_text(encoding="utf-8").splitlines()
    assert plot[0] == "test_set,corpus,model,mae_ms,mae_ms_lo,mae_ms_hi" and "medical / merged,medical,merged,100.0,0.0,200.0" in plot


def test_score_never_scores_against_pseudo_labels(tmp_path):
    """general's test utterances all carry pseudo-labels, medical's one of three: MAE over medical's two
    independent references only, and the metrics say what was left out and why."""
    from asrtune.stages import score

    ref = [["复", 0.1, 0.3], ["查", 0.3, 0.5]]
    timed = {"ref": "复查", "hyp": "复查", "missing": False, "ref_times": ref, "times": [[u, s + 0.04, e + 0.04] for u, s, e in ref]}
    pseudo = {"ref": "复查", "hyp": "复查", "missing": False, "pseudo_timestamps": True, "times": timed["times"]}
    for model in ("base", "merged"):
        for corpus, rows in (("general", [pseudo, pseudo]), ("medical", [timed, pseudo, timed])):
            out = tmp_path / f"data/normalized/{model}/{corpus}.jsonl"
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text("".join(json.dumps({"key": f"{corpus}-{i}"} | r, ensure_ascii=False) + "\n" for i, r in enumerate(rows)),
                           encoding="utf-8")
    params_for(tmp_path, tmp_path / "no-model-needed")
    printed = in_process(tmp_path, score)
    m = json.loads((tmp_path / "metrics/alignment.json").read_text(encoding="utf-8"))
    assert m["mae_ms"] == {"medical": {"base": 40.0, "merged": 40.0}} and m["utterances"]["medical"] == {"base": 2, "merged": 2}
    assert m["pseudo_labelled_not_scored"] == {"general": 2, "medical": 1}
    assert "agreement with the base aligner, not accuracy" in m["pseudo_labels"]
    cer = json.loads((tmp_path / "metrics/cer.json").read_text(encoding="utf-8"))
    assert "these CERs say nothing" in cer["note"] and "forced aligner" in printed  # every hypothesis is its reference
    medical = tmp_path / "data/normalized/base/medical.jsonl"
    medical.write_text(medical.read_text(encoding="utf-8").replace('"hyp": "复查"', '"hyp": "复差"', 1), encoding="utf-8")
    in_process(tmp_path, score)
    assert "note" not in json.loads((tmp_path / "metrics/cer.json").read_text(encoding="utf-8"))  # one real hypothesis


def test_whisper_decode_writes_unit_times_and_normalize_carries_them(tmp_path, tiny_whisper_dir):
    """The tiny random Whisper's times mean nothing; what is checked is the plumbing: every unit of each
    transcript gets [unit, start, end] with start <= end, in order, within the clip."""
    from asrtune.stages import decode, normalize

    repo = tmp_path / "repo"
    shutil.copytree(tiny_whisper_dir, repo / "models/base")
    params_for(repo, tiny_whisper_dir, **{"decode.timestamps": True, "decode.max_tokens_per_second": 3.0})
    test = repo / "data/split/medical/test.jsonl"
    test.parent.mkdir(parents=True)
    records = []
    for i in range(3):
        write_audio(repo / f"audio/{i}.wav", seconds=1.0 + i / 2)
        records.append({"key": f"medical-{i}", "messages": [{"role": "system", "content": ""},
                        {"role": "user", "content": f"<|startofspeech|>!audio/{i}.wav<|endofspeech|>"},
                        {"role": "assistant", "content": "复查CT"}], "timestamps": [[0.1, 0.3], [0.3, 0.5], [0.6, 0.9]]}
                       | ({"pseudo_timestamps": True} if i == 2 else {}))  # the base aligner's: no reference
    test.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    in_process(repo, decode, "base", "medical")
    lines = (repo / "data/decode/base/medical.tsv").read_text(encoding="utf-8").splitlines()
    assert len(lines) == 3
    for line in lines:
        key, text, times = line.split("\t")
        times = json.loads(times)
        assert [u for u, _, _ in times] == units(text)
        flat = [t for _, s, e in times for t in (s, e)]
        assert flat == sorted(flat) and all(0 <= t <= 30 for t in flat)
    in_process(repo, normalize, "base", "medical")
    rows = read_jsonl(repo / "data/normalized/base/medical.jsonl")
    assert rows[0]["ref_times"] == [["复", 0.1, 0.3], ["查", 0.3, 0.5], ["ct", 0.6, 0.9]] and "times" in rows[0]
    assert "ref_times" not in rows[2] and rows[2]["pseudo_timestamps"] and "times" in rows[2]
