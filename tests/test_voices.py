"""Voices the model never heard, evaluation-only corpora and the non-speech set: held-out demo voices never
reach train, fixed splits are honoured, a role: test corpus is all test and never mixed, non-speech clips
are reproducible and ingested with their empty transcripts."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import REPO, in_process, params_for, read_jsonl

from asrtune import params
from asrtune.corpus.ingestion import ingest
from asrtune.corpus.sources import Candidate, read_chatml, read_table
from asrtune.corpus.splitting import voice_parts
from asrtune.errors import UserError
from asrtune.synth.demo_corpus import ESPEAK_HELDOUT, ESPEAK_VOICES, KOKORO_HELDOUT, read_demo


def _parts(speaker) -> set[str]:
    return set(speaker.styles) if speaker.styles else {speaker.voice}


def test_shipped_demo_corpora_draw_val_and_test_voices_from_styles_training_never_uses():
    """The speaker lists read_demo builds for params.yaml's Kokoro corpora (nothing is synthesized): training
    speakers blend training styles only, every val and test speaker the held-out ones only."""
    corpora = params.load(REPO / "params.yaml").data.corpora
    demo = {name: c for name, c in corpora.items() if c.source.endswith(".yaml") and "nonspeech" not in c.source}
    assert set(demo) == {"general", "medical", "general_heldout", "medical_heldout"} and corpora["nonspeech"].role == "test"
    assert corpora["medical_heldout"].role == "domain_test"  # the domain's speech: domain_gain, not forgetting
    assert corpora["nonspeech_train"].role == "nonspeech"  # other clips than the test set's: trained on
    trained, tested = set(), set()
    for name, c in demo.items():
        said = []
        speakers = read_demo(REPO / c.source, c.utterances, c.speakers, c.seed, c.voice, say=said.append,
                             heldout=c.heldout_speakers, test=c.evaluation_only).speakers
        assert len(speakers) == c.speakers and all(s.styles for s in speakers) and "held out" in said[0]
        splits = [s.split for s in speakers]
        if c.evaluation_only:
            assert set(splits) == {"test"}
        else:  # 32 training speakers and 8 held out, 4 each in val and test: 8:1:1 by speakers
            assert (splits.count("train"), splits.count("val"), splits.count("test")) == (32, 4, 4)
        for s in speakers:
            (trained if s.split == "train" else tested).update(_parts(s))
            assert 0.2 <= min(s.styles.values()) and 0.9 <= s.rate <= 1.1
    assert tested == set(KOKORO_HELDOUT) and not trained & tested
    assert len(trained) == 3  # the three other styles: training blends vary over all of them


def test_espeak_demo_holds_out_voice_variants_likewise():
    for count, heldout in ((6, None), (10, 4), (3, 2)):
        speakers = read_demo(REPO / "demo/medical.yaml", 6, count, 0, "espeak", say=lambda _: None, heldout=heldout).speakers
        n = heldout or 2
        assert [s.split for s in speakers] == ["train"] * (count - n) + ["val", "test"] * (n // 2)
        assert all((s.voice in ESPEAK_HELDOUT) == (s.split != "train") for s in speakers)
    speakers = read_demo(REPO / "demo/medical.yaml", 6, 4, 0, "espeak", say=lambda _: None, test=True).speakers
    assert {s.split for s in speakers} == {"test"} and {s.voice for s in speakers} == set(ESPEAK_HELDOUT)
    assert set(ESPEAK_HELDOUT) < set(ESPEAK_VOICES)
    with pytest.raises(UserError, match=r"medical.yaml: 2 speakers cannot give 2 held-out speakers"):
        read_demo(REPO / "demo/medical.yaml", 6, 2, 0, "espeak", say=lambda _: None)


def test_split_keeps_every_held_out_voice_out_of_training(data_repo):
    """data_repo's eSpeak corpora through ingest and split: the summary states each split's speakers and
    voices; no variant a val or test speaker uses is any training speaker's."""
    for corpus in ("general", "medical"):
        manifest = {f"{corpus}-{r['id']}": r for r in read_jsonl(data_repo / f"data/ingest/{corpus}/manifest.jsonl")}
        summary = json.loads((data_repo / f"data/split/{corpus}/summary.json").read_text(encoding="utf-8"))
        parts = {}
        for split in ("train", "val", "test"):
            records = read_jsonl(data_repo / f"data/split/{corpus}/{split}.jsonl")
            assert records and all(manifest[r["key"]]["split"] == split for r in records)  # the fixed split, honoured
            parts[split] = {p for r in records for p in voice_parts(manifest[r["key"]]["voice"])}
            assert set(summary[split]["voice_parts"]) == parts[split]
            assert summary[split]["fixed"] == summary[split]["utterances"] == len(records)
            assert sum(summary[split]["by_speaker"].values()) == len(records)
            assert set(summary[split]["voices"]) == set(summary[split]["by_speaker"])
        assert not parts["train"] & (parts["val"] | parts["test"])
        assert parts["val"] | parts["test"] <= set(ESPEAK_HELDOUT)


def _tiny_nonspeech(path: Path) -> Path:
    spec = yaml.safe_load((REPO / "demo/nonspeech.yaml").read_text(encoding="utf-8"))
    spec["nonspeech"] = {"silence": 2, "noise": 1, "tones": 1, "babble": 2}
    path.write_text(yaml.safe_dump(spec, allow_unicode=True), encoding="utf-8")
    return path


def test_nonspeech_clips_are_the_same_bytes_every_time_with_empty_transcripts():
    from asrtune.synth.nonspeech import read_nonspeech

    runs = [list(read_nonspeech(REPO / "demo/nonspeech.yaml", 0, say=lambda _: None)) for _ in range(2)]
    counts = yaml.safe_load((REPO / "demo/nonspeech.yaml").read_text(encoding="utf-8"))["nonspeech"]
    assert len(runs[0]) == sum(counts.values()) == 80
    for a, b in zip(*runs):
        assert (a.id, a.audio[1], a.audio[0].tobytes()) == (b.id, b.audio[1], b.audio[0].tobytes())
    for kind, n in counts.items():
        clips = [c for c in runs[0] if c.speaker == kind]
        assert len(clips) == n and all(c.id.startswith(kind) for c in clips)
    for c in runs[0]:
        samples, rate = c.audio
        assert c.text == "" and c.nonspeech and c.split == "test" and c.timestamps is None
        assert 1.0 <= len(samples) / rate <= 8.0 + 1e-6 and rate == (16000 if c.speaker != "babble" else 22050)
        assert np.abs(samples).max() < 1.0
    silent = [c for c in runs[0] if c.speaker == "silence"]
    assert any(not c.audio[0].any() for c in silent) and any(c.audio[0].any() for c in silent)  # digital and near silence
    other_seed = list(read_nonspeech(REPO / "demo/nonspeech.yaml", 1, say=lambda _: None))
    assert other_seed[20].audio[0].tobytes() != runs[0][20].audio[0].tobytes()


def test_nonspeech_spec_errors_name_the_file_and_line(tmp_path):
    from asrtune.synth.nonspeech import load_spec

    spec = tmp_path / "n.yaml"
    cases = {"nonspeech: {silence: 2, hum: 3}\n": r"n.yaml:1: unknown kind `hum`",
             "nonspeech:\n  babble: 2\n": r"n.yaml:2: babble needs `babble_sentences`",
             "nonspeech: {noise: -1}\n": r"n.yaml:1: `noise` must be a count",
             "nonspeech: {noise: 0}\n": r"asks for no clip"}
    for text, message in cases.items():
        spec.write_text(text, encoding="utf-8")
        with pytest.raises(UserError, match=message):
            load_spec(spec)


def test_empty_transcripts_are_accepted_for_nonspeech_clips_only(tmp_path):
    silence = (np.zeros(16000, dtype=np.float32), 16000)
    items = [Candidate("speech", silence, "", "A", "t:1"), Candidate("quiet", silence, "", "silence", "t:2", split="test", nonspeech=True),
             Candidate("blank", silence, "  ", None, "t:3", split="val")]
    out = tmp_path / "out"
    result = ingest(items, out / "manifest.jsonl", out / "rejected.tsv", out / "audio", tmp_path / "cache", 0.1, 30.0, root=tmp_path)
    assert (result.accepted, result.rejected) == (1, 2) and result.reasons == {"empty_transcript": 2}
    [kept] = read_jsonl(out / "manifest.jsonl")
    assert (kept["id"], kept["text"], kept["split"]) == ("quiet", "", "test")
    rejected = (out / "rejected.tsv").read_text(encoding="utf-8").splitlines()[1:]
    assert [line.split("\t")[::2] for line in rejected] == [["speech", "empty_transcript"], ["blank", "empty_transcript"]]
    assert all(line.endswith("transcript is empty") for line in rejected)


def test_a_fixed_split_comes_from_a_table_column_or_a_jsonl_key_and_is_checked(tmp_path):
    from conftest import write_audio

    for name in ("a", "b", "c", "d"):
        write_audio(tmp_path / f"{name}.wav", 1.0)
    (tmp_path / "t.csv").write_text("path,text,split\na.wav,一,test\nb.wav,二,\nc.wav,三,Dev\nd.wav,四,holdout\n", encoding="utf-8")
    (tmp_path / "t.jsonl").write_text(json.dumps({"audio_path": "a.wav", "text": "一", "split": "train"}) + "\n"
                                      + json.dumps({"audio_path": "b.wav", "text": "二"}) + "\n", encoding="utf-8")
    assert [c.split for c in read_chatml(tmp_path / "t.jsonl")] == ["train", None]
    out = tmp_path / "out"
    result = ingest(read_table(tmp_path / "t.csv", {}), out / "manifest.jsonl", out / "rejected.tsv", out / "audio",
                    tmp_path / "cache", 0.1, 30.0, root=tmp_path)
    assert result.reasons == {"bad_split": 1} and "'holdout' is none of train, val, dev, test" in (out / "rejected.tsv").read_text()
    assert [(r["id"], r.get("split")) for r in read_jsonl(out / "manifest.jsonl")] == [("a", "test"), ("b", None), ("c", "val")]


@pytest.fixture(scope="module")
def roles_repo(data_repo, tmp_path_factory) -> Path:
    """data_repo's data plus two role: test corpora (a few held-out eSpeak speakers; a small non-speech set) and a
    role: domain_test one, through ingest, jsonl and split, then the curriculum's mix, all in this process."""
    from asrtune.stages import ingest, jsonl, mix, split

    repo = tmp_path_factory.mktemp("roles")
    shutil.copytree(data_repo / "data", repo / "data")
    shutil.rmtree(repo / "data/mix")
    (repo / "models").mkdir()
    (repo / "models/base").symlink_to(data_repo / "models/base")
    base = yaml.safe_load((data_repo / "params.yaml").read_text(encoding="utf-8"))
    corpora = {**base["data"]["corpora"],
               "heard_never": {"role": "test", "source": str(REPO / "demo/general_heldout.yaml"), "utterances": 6, "speakers": 3,
                               "voice": "espeak"},
               "quiet": {"role": "test", "source": str(_tiny_nonspeech(repo / "nonspeech.yaml"))},
               "clinic_never": {"role": "domain_test", "source": str(REPO / "demo/medical.yaml"), "utterances": 4, "speakers": 2,
                                "voice": "espeak"}}
    params_for(repo, Path(base["model"]["base"]), **{"data.corpora": corpora})
    for corpus in ("heard_never", "quiet", "clinic_never"):
        for stage in (ingest, jsonl, split):
            in_process(repo, stage, corpus)
    for stage in base["mix"]["stages"]:
        in_process(repo, mix, stage)
    return repo


def test_a_test_role_corpus_is_all_test_and_never_mixed(roles_repo):
    repo = roles_repo
    for corpus, n, role in (("heard_never", 6, "test"), ("quiet", 6, "test"), ("clinic_never", 4, "domain_test")):
        assert [len(read_jsonl(repo / f"data/split/{corpus}/{s}.jsonl")) for s in ("train", "val", "test")] == [0, 0, n]
        summary = json.loads((repo / f"data/split/{corpus}/summary.json").read_text(encoding="utf-8"))
        assert summary["role"] == role and summary["test"]["utterances"] == n
    for corpus in ("heard_never", "clinic_never"):
        voices = json.loads((repo / f"data/split/{corpus}/summary.json").read_text(encoding="utf-8"))["test"]["voice_parts"]
        assert set(voices) <= set(ESPEAK_HELDOUT)  # a test corpus speaks with held-out voices only
    mixed = [r["key"] for stage in ("s1", "s2", "s3") for s in ("train", "val") for r in read_jsonl(repo / f"data/mix/{stage}/{s}.jsonl")]
    assert mixed and not [k for k in mixed if k.startswith(("heard_never-", "quiet-", "clinic_never-"))]
    assert {k.split("-")[0] for k in mixed} == {"general", "medical"}
    for stage in ("s1", "s2", "s3"):  # general speech in every curriculum stage
        summary = json.loads((repo / f"data/mix/{stage}/summary.json").read_text())
        assert summary["general_share"] > 0 and summary["train"]["general"] > 0


def test_nonspeech_flows_through_ingest_jsonl_split_and_normalize(roles_repo):
    from asrtune.stages import normalize

    repo = roles_repo
    summary = json.loads((repo / "data/ingest/quiet/summary.json").read_text(encoding="utf-8"))
    assert summary["in"] == summary["accepted"] + summary["rejected"] == 6 and summary["rejected"] == 0
    assert (repo / "data/ingest/quiet/terms.txt").read_text() == ""
    manifest = read_jsonl(repo / "data/ingest/quiet/manifest.jsonl")
    assert all(r["text"] == "" and r["split"] == "test" and 1.0 <= r["duration"] <= 8.0 for r in manifest)
    records = read_jsonl(repo / "data/split/quiet/test.jsonl")
    assert [r["text_length"] for r in records] == [0] * 6 and all(r["messages"][2]["content"] == "" for r in records)
    decoded = repo / "data/decode/base/quiet.tsv"
    decoded.parent.mkdir(parents=True, exist_ok=True)
    decoded.write_text("".join(f"{r['key']}\t{'嗯' if i == 0 else ''}\n" for i, r in enumerate(records)), encoding="utf-8")
    in_process(repo, normalize, "base", "quiet")
    rows = read_jsonl(repo / "data/normalized/base/quiet.jsonl")
    assert [(r["ref"], r["hyp"], r["missing"]) for r in rows] == [("", "嗯", False)] + [("", "", False)] * 5


@pytest.mark.parametrize("role", ["general", "domain_test"])  # domain_test: the domain's speech, never silence
def test_a_nonspeech_source_must_be_a_test_or_nonspeech_corpus(tmp_path, role):
    from asrtune.stages import ingest

    params_for(tmp_path, Path("unused"), **{"data.corpora.quiet": {"role": role, "source": str(_tiny_nonspeech(tmp_path / "n.yaml"))}})
    with pytest.raises(UserError, match=r"data.corpora.quiet: .*n.yaml is a non-speech set: set role: test \(evaluation only\) or role: nonspeech"):
        in_process(tmp_path, ingest, "quiet")


@pytest.mark.parametrize("corpus, message", [
    ({"role": "domain", "source": "x", "speakers": 4, "heldout_speakers": 4}, "heldout_speakers (4) must be below speakers (4)"),
    ({"role": "test", "source": "x", "heldout_speakers": 2}, "every speaker of a role: test corpus is held out"),
    ({"role": "domain_test", "source": "x", "heldout_speakers": 2}, "every speaker of a role: domain_test corpus is held out"),
    ({"role": "evaluation", "source": "x"}, "'general', 'domain', 'test', 'domain_test' or 'nonspeech'"),
])
def test_bad_corpus_params_name_the_key(tmp_path, corpus, message):
    params_for(tmp_path, Path("unused"), **{"data.corpora.c": corpus})
    with pytest.raises(UserError, match=r"data.corpora.c.*" + message.replace("(", r"\(").replace(")", r"\)")):
        params.load(tmp_path / "params.yaml")
