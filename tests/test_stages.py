"""Stage commands end to end in a scratch repo: outputs, params validation, errors in one line."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import ASRTUNE, asrtune, assert_one_line_error, params_for, read_jsonl

from asrtune.corpus import chatml, mixing
from asrtune.corpus.splitting import assign
from asrtune.corpus.timestamps import units


def test_jsonl_records_are_funasr_chatml_sorted_by_key(data_repo, whisper_tokenizer):
    records = read_jsonl(data_repo / "data/jsonl/medical.jsonl")
    manifest = {r["id"]: r for r in read_jsonl(data_repo / "data/ingest/medical/manifest.jsonl")}
    assert len(records) == 12 and [r["key"] for r in records] == sorted(r["key"] for r in records)
    r = records[0]
    utt = manifest[r["key"].removeprefix("medical-")]
    assert list(r) == ["key", "messages", "speech_length", "text_length", "audio_sha256", "timestamps"]  # eSpeak's
    assert r["timestamps"] == utt["timestamps"] and len(r["timestamps"]) == len(units(utt["text"]))
    assert r["audio_sha256"] == utt["sha256"] == hashlib.sha256((data_repo / utt["audio"]).read_bytes()).hexdigest()
    assert [m["role"] for m in r["messages"]] == ["system", "user", "assistant"]
    assert r["messages"][0]["content"] == "You are a helpful assistant."
    assert r["messages"][1]["content"] == f"语音转写：<|startofspeech|>!{utt['audio']}<|endofspeech|>"
    assert r["messages"][2]["content"] == utt["text"]
    assert r["speech_length"] == (int(round(utt["duration"] * 1000)) - 25) // 10 + 1
    assert r["text_length"] == len(whisper_tokenizer(utt["text"], add_special_tokens=False)["input_ids"])
    assert (data_repo / utt["audio"]).is_file() and not Path(utt["audio"]).is_absolute()


def test_demo_ships_its_term_list(data_repo):
    terms = (data_repo / "data/ingest/medical/terms.txt").read_text(encoding="utf-8").split()
    assert "阿莫西林" in terms and "CT" in terms and len(terms) >= 80  # the topic's list, in its order
    assert (data_repo / "data/ingest/general/terms.txt").read_text() == ""


def test_split_is_speaker_disjoint_and_complete(data_repo):
    manifest = {f"general-{r['id']}": r["speaker"] for r in read_jsonl(data_repo / "data/ingest/general/manifest.jsonl")}
    speakers = {}
    for split in ("train", "val", "test"):
        keys = [r["key"] for r in read_jsonl(data_repo / f"data/split/general/{split}.jsonl")]
        speakers[split] = {manifest[k] for k in keys}
    assert sum(1 for s in ("train", "val", "test") for _ in read_jsonl(data_repo / f"data/split/general/{s}.jsonl")) == 24
    assert not (speakers["train"] & speakers["test"]) and not (speakers["train"] & speakers["val"])
    assert not (speakers["val"] & speakers["test"]) and all(speakers.values())


def test_mix_follows_the_general_share(data_repo):
    domain_train = len(read_jsonl(data_repo / "data/split/medical/train.jsonl"))
    shares = {stage: spec["general"] for stage, spec in yaml.safe_load((data_repo / "params.yaml").read_text())["mix"]["stages"].items()}
    assert shares == {"s1": 0.5, "s2": 0.3, "s3": 0.2}  # general speech in every stage, the last one too
    for stage, share in shares.items():
        keys = [r["key"] for r in read_jsonl(data_repo / f"data/mix/{stage}/train.jsonl")]
        general = [k for k in keys if k.startswith("general-")]
        assert len(keys) - len(general) == domain_train
        assert len(general) == mixing.pool_count(domain_train, share)
        assert keys == sorted(keys) and len(set(keys)) == len(keys)
    summary = json.loads((data_repo / "data/mix/s1/summary.json").read_text())
    assert summary["train"]["general"] == domain_train


def test_mix_warns_when_general_runs_short(data_repo, tiny_whisper_dir, tmp_path):
    shutil.copytree(data_repo / "data", tmp_path / "data")
    params_for(tmp_path, tiny_whisper_dir, **{"mix.stages": {"big": {"general": 0.95}},
                                              "train.stages": {"big": {"init": "models/base"}}})
    proc = asrtune(tmp_path, "mix", "big")
    assert "only" in proc.stderr and "using all of them" in proc.stderr
    n_general = len(read_jsonl(tmp_path / "data/split/general/train.jsonl"))
    assert json.loads((tmp_path / "data/mix/big/summary.json").read_text())["train"]["general"] == n_general


@pytest.mark.parametrize("override, fragments", [
    ({"split.ratios": [0.8, 0.3, 0.1]}, ["split.ratios", "summing to 1"]),
    ({"train.stages": {"s1": {"init": "models/finetune/s2"}}}, ["train.stages must name the mix.stages"]),
    ({"train.lora.r": -1}, ["train.lora.r", "greater than or equal to 0"]),
    ({"split.ratioz": [0.8, 0.1, 0.1]}, ["split.ratioz: unknown key"]),
    ({"mix.stages": {"s1": {"general": 1.0}}}, ["mix.stages.s1.general", "less than 1"]),
    ({"split.by": "room"}, ["split.by", "'speaker', 'speaker_text', 'text' or 'utterance'"]),
    ({"split.ratios": [0.9, 0.1, 0.0]}, ["split.ratios", "every share must be above 0"]),
    ({"data.max_duration": 40.0}, ["data.max_duration", "above 30 s"]),
    ({"data.min_duration": 5.0, "data.max_duration": 2.0}, ["data.min_duration (5.0) is above data.max_duration (2.0)"]),
    ({"train.lora.target_modules": []}, ["train.lora.target_modules", "empty list"]),
    ({"model.family": "speechllm", "model.llm": "Qwen/Qwen3-0.6B"}, ["model.family is gone", "the model's own config decides"]),
])
def test_bad_params_fail_in_one_line_naming_the_key(tmp_path, tiny_whisper_dir, override, fragments):
    params_for(tmp_path, tiny_whisper_dir, **override)
    assert_one_line_error(asrtune(tmp_path, "split", "general", ok=False), "params.yaml", *fragments)


def test_missing_source_names_the_path(tmp_path, tiny_whisper_dir):
    params_for(tmp_path, tiny_whisper_dir, **{"data.corpora.medical.source": "nowhere/corpus"})
    assert_one_line_error(asrtune(tmp_path, "ingest", "medical", ok=False), "data.corpora.medical.source", "nowhere/corpus")


def test_corpus_with_nothing_usable_stops_the_stage(tmp_path, tiny_whisper_dir):
    kaldi = tmp_path / "k"
    kaldi.mkdir()
    (kaldi / "wav.scp").write_text("a /no/such.wav\n", encoding="utf-8")
    (kaldi / "text").write_text("a 文本\n", encoding="utf-8")
    params_for(tmp_path, tiny_whisper_dir, **{"data.corpora.medical.source": str(kaldi)})
    proc = asrtune(tmp_path, "ingest", "medical", ok=False)
    assert_one_line_error(proc, str(kaldi), "no usable utterances")
    assert "missing_audio" in proc.stdout
    assert (tmp_path / "data/ingest/medical/rejected.tsv").read_text().count("\n") == 2


def test_missing_upstream_output_names_the_stage(tmp_path, tiny_whisper_dir):
    params_for(tmp_path, tiny_whisper_dir)
    assert_one_line_error(asrtune(tmp_path, "split", "general", ok=False), "dvc repro ingest@general")


def test_unreachable_hub_id_says_how_to_work_offline(tmp_path, tiny_whisper_dir, monkeypatch):
    params_for(tmp_path, tiny_whisper_dir, **{"model.base": "openai/whisper-nonexistent-xyz"})
    proc = subprocess.run([*ASRTUNE, "base"], cwd=tmp_path, capture_output=True, text=True,
                          env={**__import__("os").environ, "HF_HUB_OFFLINE": "1"})
    assert_one_line_error(proc, "openai/whisper-nonexistent-xyz", "local directory", "offline:whisper-base")


def test_speech_length_matches_funasr_fbank_frames():
    assert chatml.speech_length(1.0) == 98  # (1000 - 25) // 10 + 1
    assert chatml.speech_length(0.025) == 1
    assert chatml.speech_length(0.0) == 0


def test_split_assignment_is_seeded_and_near_the_ratios():
    groups = [(f"u{i:03d}", f"spk{i % 20}") for i in range(400)]
    a, b = assign(groups, (0.8, 0.1, 0.1), 42), assign(groups, (0.8, 0.1, 0.1), 42)
    assert a == b and a != assign(groups, (0.8, 0.1, 0.1), 7)
    counts = {s: sum(1 for v in a.values() if v == s) for s in ("train", "val", "test")}
    assert counts == {"train": 320, "val": 40, "test": 40}
    by_utt = assign([(f"u{i}", f"u{i}") for i in range(1000)], (0.7, 0.0, 0.3), 1)
    assert sum(v == "val" for v in by_utt.values()) == 0 and sum(v == "test" for v in by_utt.values()) == 300


def test_pool_count_is_the_forks_formula():
    assert mixing.pool_count(240, 0.5) == 240
    assert mixing.pool_count(240, 0.2) == 60
    assert mixing.pool_count(100, 0.3) == 42  # int(42.857...)
    assert mixing.pool_count(240, 0.0) == 0
    # a second pool: each is its share of the whole mix, domain the rest (300 / 0.4 = 750 in all)
    assert (mixing.pool_count(300, 0.5, 0.1), mixing.pool_count(300, 0.1, 0.5)) == (375, 75)
    assert mixing.choose(10, 20, "s") == (set(range(10)), True)
    assert mixing.choose(10, 3, "s") == mixing.choose(10, 3, "s")


def test_missing_hypotheses_are_scored_as_deletions_not_dropped(data_repo, tmp_path):
    shutil.copytree(data_repo, tmp_path / "r", ignore=shutil.ignore_patterns(".cache"))
    repo = tmp_path / "r"
    refs = read_jsonl(repo / "data/split/medical/test.jsonl")
    decode = repo / "data/decode/base/medical.tsv"
    decode.parent.mkdir(parents=True)
    decode.write_text("".join(f"{r['key']}\t{r['messages'][2]['content']}\n" for r in refs[1:]), encoding="utf-8")
    proc = asrtune(repo, "normalize", "base", "medical")
    assert "1 missing" in proc.stdout
    rows = read_jsonl(repo / "data/normalized/base/medical.jsonl")
    assert len(rows) == len(refs) and [r["missing"] for r in rows] == [True] + [False] * (len(refs) - 1)
    assert rows[0]["hyp"] == ""
    decode.write_text(decode.read_text(encoding="utf-8") + "stranger\ttext\n", encoding="utf-8")
    assert_one_line_error(asrtune(repo, "normalize", "base", "medical", ok=False), "medical.tsv", "not in the medical test set")


def test_ctranslate2_engine_converts_and_decodes(data_repo, tiny_whisper_dir, tmp_path):
    """decode.engine=ctranslate2 through the stage commands, on data_repo's tiny model and test split."""
    for link in ("models/base", "data/split"):
        (tmp_path / link).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / link).symlink_to(data_repo / link)
    (tmp_path / "data/ingest").symlink_to(data_repo / "data/ingest")
    params_for(tmp_path, tiny_whisper_dir, **{"decode.engine": "ctranslate2"})
    assert "CTranslate2, float16 weights" in asrtune(tmp_path, "convert", "base").stdout
    assert (tmp_path / "models/ct2/base/model.bin").is_file() and (tmp_path / "models/ct2/base/preprocessor_config.json").is_file()
    assert "(ctranslate2, cpu (float32))" in asrtune(tmp_path, "decode", "base", "medical").stdout
    keys = [r["key"] for r in read_jsonl(data_repo / "data/split/medical/test.jsonl")]
    lines = (tmp_path / "data/decode/base/medical.tsv").read_text(encoding="utf-8").splitlines()
    assert [line.split("\t")[0] for line in lines] == sorted(keys) and all(line.count("\t") == 1 for line in lines)


def test_convert_for_the_transformers_engine_writes_a_note(tmp_path, tiny_whisper_dir):
    params_for(tmp_path, tiny_whisper_dir)
    assert "nothing to convert" in asrtune(tmp_path, "convert", "merged").stdout
    assert "decode.engine is transformers" in (tmp_path / "models/ct2/merged/NOT_CONVERTED.txt").read_text()


def test_ctranslate2_engine_errors_name_the_problem(tmp_path, tiny_whisper_dir, tiny_fun_asr_dir):
    params_for(tmp_path, tiny_fun_asr_dir, **{"decode.engine": "ctranslate2"})
    shutil.copytree(tiny_fun_asr_dir, tmp_path / "models/base")
    assert_one_line_error(asrtune(tmp_path, "convert", "base", ok=False), "whisper family only", "an audiollm model")
    params_for(tmp_path, tiny_whisper_dir, **{"decode.engine": "ctranslate2"})
    shutil.rmtree(tmp_path / "models/base")
    shutil.copytree(tiny_whisper_dir, tmp_path / "models/base")
    (tmp_path / "data/split/medical").mkdir(parents=True)
    (tmp_path / "data/split/medical/test.jsonl").write_text(json.dumps(chatml.record("k", "a.wav", "文本", 1.0, 2, "", "")) + "\n")
    assert_one_line_error(asrtune(tmp_path, "decode", "base", "medical", ok=False), "models/ct2/base: not a CTranslate2 model")
    params_for(tmp_path, tiny_whisper_dir, **{"decode.compute_type": "float8"})
    assert_one_line_error(asrtune(tmp_path, "convert", "base", ok=False), "decode.compute_type")


def test_a_split_left_without_val_or_test_is_an_error_before_writing(data_repo, tiny_whisper_dir, tmp_path):
    """One speaker cannot be split three ways by speaker: say so, rather than let finetune or decode fail later."""
    from conftest import in_process

    from asrtune.errors import UserError
    from asrtune.stages import split

    shutil.copytree(data_repo / "data/ingest/medical", tmp_path / "data/ingest/medical")
    shutil.copytree(data_repo / "data/jsonl", tmp_path / "data/jsonl")
    manifest = tmp_path / "data/ingest/medical/manifest.jsonl"
    unfixed = [{k: v for k, v in r.items() if k not in ("split", "voice")} for r in read_jsonl(manifest)]  # the demo fixes its splits
    manifest.write_text("".join(json.dumps({**r, "speaker": "A"}, ensure_ascii=False) + "\n" for r in unfixed), encoding="utf-8")
    params_for(tmp_path, tiny_whisper_dir)
    with pytest.raises(UserError, match=r"split.ratios: medical has 1 speakers, too few to give val and test any .*split.by: utterance"):
        in_process(tmp_path, split, "medical")
    assert not (tmp_path / "data/split/medical").exists()
    params_for(tmp_path, tiny_whisper_dir, **{"split.by": "utterance"})
    assert "test" in in_process(tmp_path, split, "medical")


def test_new_audio_under_the_same_id_text_and_length_changes_every_data_stage(kaldi_corpus, tiny_whisper_dir, tmp_path):
    """The manifest and the ChatML records carry each clip's sha256: changed samples change ingest's,
    jsonl's and split's outputs, so DVC reruns them and everything after (mix, finetune, ...)."""
    import numpy as np
    import soundfile as sf
    from conftest import in_process

    from asrtune.stages import ingest, jsonl, split

    repo = tmp_path / "repo"
    shutil.copytree(tiny_whisper_dir, repo / "models/base")
    params_for(repo, tiny_whisper_dir, **{"data.corpora": {"k": {"role": "domain", "source": str(kaldi_corpus)}}, "split.by": "utterance",
                                          "split.ratios": [0.34, 0.33, 0.33]})
    outputs = [repo / "data/ingest/k/manifest.jsonl", repo / "data/jsonl/k.jsonl", repo / "data/split/k/train.jsonl",
               repo / "data/split/k/val.jsonl", repo / "data/split/k/test.jsonl"]

    def run_stages() -> list[bytes]:
        for stage in (ingest, jsonl, split):
            in_process(repo, stage, "k")
        return [f.read_bytes() for f in outputs]

    before = run_stages()
    assert run_stages() == before  # same audio, same bytes
    clip = kaldi_corpus.parent / "audio/good1.wav"  # 16 kHz mono PCM: referenced where it lies
    samples, rate = sf.read(clip, dtype="int16")
    sf.write(clip, np.roll(samples, 100), rate, subtype="PCM_16")  # other samples, same length
    after = run_stages()
    changed = [f.name for f, a, b in zip(outputs, before, after) if a != b]
    assert changed[:2] == ["manifest.jsonl", "k.jsonl"] and len(changed) == 3  # and the split file holding good1


def test_the_cli_starts_without_torch():
    """Every stage runs as `asrtune <stage>` in a fresh process: the data stages (ingest, jsonl, split,
    mix, normalize, score) must not pay torch's import (2-3 s each here); stages import it when they need it."""
    code = "import sys, asrtune.cli; heavy = {'torch', 'transformers'} & set(sys.modules); assert not heavy, heavy"
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)


def _read_corpus(repo: Path, corpus: str, rows: list[tuple]) -> None:
    """A corpus as ingest and jsonl leave it, written by hand: (id, speaker, transcript[, fixed split]) per utterance."""
    ingest = repo / "data/ingest" / corpus
    ingest.mkdir(parents=True, exist_ok=True)
    (ingest / "manifest.jsonl").write_text("".join(
        json.dumps({"id": i, "audio": f"data/ingest/{corpus}/audio/{i}.wav", "text": t, "speaker": s, "duration": 1.0}
                   | ({"split": fixed[0]} if fixed and fixed[0] else {}), ensure_ascii=False) + "\n" for i, s, t, *fixed in rows),
        encoding="utf-8")
    (repo / "data/jsonl").mkdir(parents=True, exist_ok=True)
    records = sorted((chatml.record(chatml.key_for(corpus, i), f"{i}.wav", t, 1.0, len(t), "", "") for i, _, t, *_ in rows),
                     key=lambda r: r["key"])
    (repo / f"data/jsonl/{corpus}.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records),
                                                    encoding="utf-8")


def _team_readers() -> list[tuple[str, str, str]]:
    """12 speakers in 4 teams of 3; a team's speakers all read the same 5 sentences (with punctuation or
    without: the same sentence once normalized), no sentence is read outside its team. A speaker split
    (about one speaker in test) always puts a test sentence's other copies in train or val."""
    rows = []
    for spk in range(12):
        for j in range(5):
            text = f"第{spk // 3}组的第{j}句话"
            rows.append((f"s{spk:02d}-{j}", f"spk{spk:02d}", text + "，好吗？" if spk % 2 else text + "好吗"))
    return rows


def _splits(repo: Path, corpus: str) -> dict[str, list[dict]]:
    return {s: read_jsonl(repo / f"data/split/{corpus}/{s}.jsonl") for s in ("train", "val", "test")}


def test_text_disjoint_split_leaves_no_test_sentence_in_training(tmp_path, tiny_whisper_dir):
    from conftest import in_process

    from asrtune.evaluation.normalization import normalize
    from asrtune.params import Normalize
    from asrtune.stages import split

    _read_corpus(tmp_path, "c", _team_readers())
    speaker_of = {chatml.key_for("c", i): s for i, s, _ in _team_readers()}

    def texts(records):
        return {normalize(r["messages"][2]["content"], Normalize()) for r in records}

    params_for(tmp_path, tiny_whisper_dir, **{"split.by": "speaker"})
    printed = in_process(tmp_path, split, "c")
    by_speaker = json.loads((tmp_path / "data/split/c/summary.json").read_text())["overlap"]
    assert by_speaker["test_utterances"] > 0 and f"overlap: {by_speaker['test_utterances']} of " in printed  # a pair straddles
    for by in ("speaker_text", "text"):
        params_for(tmp_path, tiny_whisper_dir, **{"split.by": by})
        printed = in_process(tmp_path, split, "c")
        summary = json.loads((tmp_path / "data/split/c/summary.json").read_text())
        assert summary["overlap"] == {"test_utterances": 0, "share": 0.0} and "overlap: 0 of" in printed
        got = _splits(tmp_path, "c")
        assert all(got.values()) and sum(map(len, got.values())) == 60
        assert not texts(got["test"]) & (texts(got["train"]) | texts(got["val"]))  # no test sentence is trained on
        assert not texts(got["val"]) & texts(got["train"])  # a sentence's copies never straddle
        if by == "speaker_text":
            speakers = {s: {speaker_of[r["key"]] for r in rs} for s, rs in got.items()}
            assert not speakers["test"] & (speakers["train"] | speakers["val"]) and not speakers["val"] & speakers["train"]
    # seeded: the same params give the same bytes, another seed another split
    first = {s: (tmp_path / f"data/split/c/{s}.jsonl").read_bytes() for s in ("train", "val", "test")}
    in_process(tmp_path, split, "c")
    assert {s: (tmp_path / f"data/split/c/{s}.jsonl").read_bytes() for s in ("train", "val", "test")} == first
    params_for(tmp_path, tiny_whisper_dir, **{"split.by": "text", "split.seed": 7})
    in_process(tmp_path, split, "c")
    assert (tmp_path / "data/split/c/test.jsonl").read_bytes() != first["test"]


def test_text_disjoint_split_that_cannot_give_val_and_test_is_an_error(tmp_path, tiny_whisper_dir):
    """Every speaker reads every sentence: speakers and sentences link into one group."""
    from conftest import in_process

    from asrtune.errors import UserError
    from asrtune.stages import split

    _read_corpus(tmp_path, "c", [(f"s{spk}-{j}", f"spk{spk}", f"第{j}句") for spk in range(6) for j in range(4)])
    params_for(tmp_path, tiny_whisper_dir, **{"split.by": "speaker_text"})
    with pytest.raises(UserError, match=r"^split.ratios: c has 1 groups of speakers and the sentences they share, too few to give "
                                        r"val and test any .*split.by: text"):
        in_process(tmp_path, split, "c")
    assert not (tmp_path / "data/split/c").exists()
    params_for(tmp_path, tiny_whisper_dir, **{"split.by": "text", "split.ratios": [0.5, 0.25, 0.25]})
    assert "overlap: 0 of 6 test utterances" in in_process(tmp_path, split, "c")  # 4 sentences: 2 / 1 / 1, 6 copies each
    _read_corpus(tmp_path, "two", [(f"s{spk}-{j}", f"spk{spk}", f"第{j}句。") for spk in range(6) for j in range(2)])
    with pytest.raises(UserError, match=r"^split.ratios: two has 2 distinct sentences \(after normalization\), too few to give test any"):
        in_process(tmp_path, split, "two")


def test_linked_groups_join_speakers_through_shared_sentences():
    from asrtune.corpus.splitting import groups_for, overlap

    records = [("a1", "A", "x"), ("b1", "B", "x"), ("b2", "B", "y"), ("c1", "C", "z"), ("d1", "", "z"), ("e1", "", "w")]
    assert groups_for(records, "speaker_text") == [("a1", "grp:a1"), ("b1", "grp:a1"), ("b2", "grp:a1"), ("c1", "grp:c1"),
                                                    ("d1", "grp:c1"), ("e1", "grp:e1")]
    assert groups_for(list(reversed(records)), "speaker_text") == list(reversed(groups_for(records, "speaker_text")))
    assert [g for _, g in groups_for(records, "text")] == ["txt:x", "txt:x", "txt:y", "txt:z", "txt:z", "txt:w"]
    assert [g for _, g in groups_for(records, "speaker")] == ["spk:A", "spk:B", "spk:B", "spk:C", "utt:d1", "utt:e1"]
    where = {"a1": "train", "b1": "test", "b2": "test", "c1": "val", "d1": "test", "e1": "test"}
    assert overlap(where, {k: t for k, _, t in records}) == {"test_utterances": 2, "share": 0.5}  # b1 (x in train), d1 (z in val)


def test_fixed_splits_are_honoured_and_the_rest_follow_the_ratios(tmp_path, tiny_whisper_dir):
    """An official test set (speaker T) and validation speaker (V) fixed by the manifest; one of T's
    utterances unfixed follows its speaker; the other 8 speakers are placed by split.ratios, the fixed
    utterances counted: test is full already, so none of them goes there."""
    from conftest import in_process

    from asrtune.stages import split

    rows = [(f"t{j}", "T", f"测试{j}", "test" if j else None) for j in range(10)] + [(f"v{j}", "V", f"验证{j}", "val") for j in range(10)]
    rows += [(f"s{spk}-{j}", f"S{spk}", f"训练{spk}之{j}") for spk in range(8) for j in range(10)]
    _read_corpus(tmp_path, "c", rows)
    for by in ("speaker", "speaker_text", "text", "utterance"):
        params_for(tmp_path, tiny_whisper_dir, **{"split.by": by})
        printed = in_process(tmp_path, split, "c")
        assert "19 utterances' split fixed by the manifest" in printed
        got = {s: {r["key"].removeprefix("c-") for r in rs} for s, rs in _splits(tmp_path, "c").items()}
        assert {f"t{j}" for j in range(1, 10)} <= got["test"] and {f"v{j}" for j in range(10)} <= got["val"]
        if by != "text" and by != "utterance":
            assert "t0" in got["test"]  # its speaker's split
        if by == "speaker":
            assert got["test"] == {f"t{j}" for j in range(10)} and len(got["train"]) == 80
        summary = json.loads((tmp_path / "data/split/c/summary.json").read_text())
        assert summary["test"]["fixed"] == 9 and summary["val"]["fixed"] == 10 and summary["test"]["by_speaker"]["T"] >= 9
        assert "voices" not in summary["train"]  # no demo voices: speakers and their counts only


def test_a_group_fixed_to_two_splits_is_an_error_naming_both_utterances(tmp_path, tiny_whisper_dir):
    from conftest import in_process

    from asrtune.errors import UserError
    from asrtune.stages import split

    rows = [(f"s{spk}-{j}", f"S{spk}", f"第{spk}人第{j}句") for spk in range(6) for j in range(4)]
    # the same sentence (once normalized) fixed to test for one speaker, to train for another
    rows += [("x1", "X", "今天开会。", "test"), ("y1", "Y", "今天开会", "train"), ("x2", "X", "明天见", "train")]
    _read_corpus(tmp_path, "c", rows)
    params_for(tmp_path, tiny_whisper_dir, **{"split.by": "text"})
    with pytest.raises(UserError, match=r"^split.by: text: .*manifest.jsonl fixes c-x1 to test and c-y1 to train, both the sentence "
                                        r"'今天开会' \(normalized\): one would be trained on with the other tested"):
        in_process(tmp_path, split, "c")
    params_for(tmp_path, tiny_whisper_dir, **{"split.by": "speaker"})
    with pytest.raises(UserError, match=r"^split.by: speaker: .*fixes c-x1 to test and c-x2 to train, both spoken by speaker X"):
        in_process(tmp_path, split, "c")
    params_for(tmp_path, tiny_whisper_dir, **{"split.by": "speaker_text"})
    with pytest.raises(UserError, match=r"fixes c-x1 to test and c-x2 to train, linked by the speakers and sentences"):
        in_process(tmp_path, split, "c")
    assert not (tmp_path / "data/split/c").exists()
    params_for(tmp_path, tiny_whisper_dir, **{"split.by": "utterance"})  # each utterance alone: no conflict, each as fixed
    in_process(tmp_path, split, "c")
    got = {s: {r["key"] for r in rs} for s, rs in _splits(tmp_path, "c").items()}
    assert "c-x1" in got["test"] and {"c-y1", "c-x2"} <= got["train"]
    summary = json.loads((tmp_path / "data/split/c/summary.json").read_text())
    assert summary["overlap"]["test_utterances"] >= 1  # x1's sentence is y1's: the overlap report says so


def test_a_test_role_corpus_fixed_to_train_is_an_error(tmp_path, tiny_whisper_dir):
    from conftest import in_process

    from asrtune.errors import UserError
    from asrtune.stages import split

    _read_corpus(tmp_path, "ev", [("a", "A", "一", "test"), ("b", "A", "二", None), ("c", "B", "三", "train")])
    params_for(tmp_path, tiny_whisper_dir, **{"data.corpora.ev": {"role": "test", "source": "x"}})
    with pytest.raises(UserError, match=r"data.corpora.ev.role is test .* fixes 1 utterances to train or val, e.g. ev-c \(train\)"):
        in_process(tmp_path, split, "ev")
    _read_corpus(tmp_path, "ev", [("a", "A", "一", "test"), ("b", "A", "二", None), ("c", "B", "三")])
    assert "role test: all of it" in in_process(tmp_path, split, "ev")
    assert [len(rs) for rs in _splits(tmp_path, "ev").values()] == [0, 0, 3]
    # role domain_test (the domain's speech, evaluation only): split the same way
    params_for(tmp_path, tiny_whisper_dir, **{"data.corpora.ev": {"role": "domain_test", "source": "x"}})
    assert "role domain_test: all of it" in in_process(tmp_path, split, "ev")
    assert [len(rs) for rs in _splits(tmp_path, "ev").values()] == [0, 0, 3]


def test_fixed_assignment_without_fixed_keys_is_the_old_assignment():
    groups = [(f"u{i:03d}", f"spk{i % 20}") for i in range(400)]
    assert assign(groups, (0.8, 0.1, 0.1), 42, {}) == assign(groups, (0.8, 0.1, 0.1), 42)
    fixed = {f"u{i:03d}": "test" for i in range(400) if i % 20 == 3}  # one speaker's 20: half the test target
    got = assign(groups, (0.8, 0.1, 0.1), 42, fixed)
    assert all(got[k] == "test" for k in fixed)
    assert {s: sum(v == s for v in got.values()) for s in ("train", "val", "test")} == {"train": 320, "val": 40, "test": 40}
