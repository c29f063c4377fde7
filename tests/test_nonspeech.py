"""Non-speech clips in training (role nonspeech, mixed at mix.stages.<s>.nonspeech): ingest keeps their
empty transcripts (and only theirs), mix adds them at their share, and training on them teaches a model to
write nothing where there is nothing to hear."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import REPO, in_process, params_for, read_jsonl

from asrtune.corpus.ingestion import ingest
from asrtune.corpus.sources import Candidate
from asrtune.errors import UserError

# silence and room noise only: no eSpeak babble, fast to make
QUIET = {"nonspeech": {"silence": 10, "noise": 10}}


def quiet_corpus(repo: Path, tiny_whisper_dir: Path, **overrides) -> dict:
    """params: the tiny demo plus `quiet`, a role nonspeech corpus (20 clips), ingested, jsonl'd and split."""
    from asrtune.stages import ingest as ingest_stage, jsonl, split

    spec = repo / "quiet.yaml"
    spec.write_text(yaml.safe_dump(QUIET), encoding="utf-8")
    corpora = yaml.safe_load((repo / "params.yaml").read_text(encoding="utf-8"))["data"]["corpora"]
    params = params_for(repo, tiny_whisper_dir, **{"data.corpora": {**corpora, "quiet": {"role": "nonspeech", "source": str(spec)}},
                                                   **overrides})
    for stage in (ingest_stage, jsonl, split):
        in_process(repo, stage, "quiet")
    return params


@pytest.fixture
def repo(data_repo, tmp_path) -> Path:
    repo = tmp_path / "repo"
    shutil.copytree(data_repo, repo, ignore=shutil.ignore_patterns(".cache"))
    return repo


def test_a_nonspeech_corpus_keeps_empty_transcripts_only_and_splits_by_clip(tmp_path):
    silence = (np.zeros(16000, dtype=np.float32), 16000)
    items = [Candidate("hum", silence, "", None, "t:1"), Candidate("said", silence, "你好", None, "t:2")]
    out = tmp_path / "out"
    result = ingest(items, out / "manifest.jsonl", out / "rejected.tsv", out / "audio", tmp_path / "cache", 0.1, 30.0,
                    root=tmp_path, nonspeech=True)
    assert (result.accepted, result.rejected, dict(result.reasons)) == (1, 1, {"not_empty": 1})
    assert "t:2\tnot_empty\trole nonspeech: the transcript must be empty, got '你好'" in (out / "rejected.tsv").read_text()

    from asrtune.synth.nonspeech import read_nonspeech

    spec = tmp_path / "quiet.yaml"
    spec.write_text(yaml.safe_dump(QUIET), encoding="utf-8")
    trained, tested = (list(read_nonspeech(spec, 0, evaluation=e, say=lambda _: None)) for e in (False, True))
    assert all(c.speaker == c.id and c.split is None for c in trained)  # each clip its own speaker: split.ratios place it
    assert all(c.speaker in ("silence", "noise") and c.split == "test" for c in tested)
    assert [c.audio[0].tobytes() for c in trained] == [c.audio[0].tobytes() for c in tested]


def test_mix_adds_nonspeech_at_its_share_and_a_zero_share_changes_nothing(repo, tiny_whisper_dir):
    from asrtune.stages import mix

    before = (repo / "data/mix/s1/train.jsonl").read_bytes()
    quiet_corpus(repo, tiny_whisper_dir)
    in_process(repo, mix, "s1")  # the demo's shares, nonspeech 0: the same bytes as without the corpus
    assert (repo / "data/mix/s1/train.jsonl").read_bytes() == before

    quiet_corpus(repo, tiny_whisper_dir, **{"mix.stages.s1.nonspeech": 0.2})
    printed = in_process(repo, mix, "s1")
    records = read_jsonl(repo / "data/mix/s1/train.jsonl")
    n = {role: sum(r["role"] == role for r in records) for role in ("domain", "general", "nonspeech")}
    pool = len(read_jsonl(repo / "data/split/quiet/train.jsonl"))
    assert n["nonspeech"] == min(pool, int(n["domain"] * 0.2 / 0.3)) and n["general"] == int(n["domain"] * 0.5 / 0.3)
    assert all(r["key"].startswith("quiet-") and r["messages"][-1]["content"] == "" for r in records if r["role"] == "nonspeech")
    assert "non-speech" in printed and [r["key"] for r in records] == sorted(r["key"] for r in records)

    params_for(repo, tiny_whisper_dir, **{"mix.stages.s1.nonspeech": 0.2})  # no role nonspeech corpus
    with pytest.raises(UserError, match=r"mix.stages.s1.nonspeech is 0.2 but no corpus has role: nonspeech"):
        in_process(repo, mix, "s1")
    from pydantic import ValidationError

    from asrtune.params import MixStage

    with pytest.raises(ValidationError, match=r"general \(0.5\) \+ nonspeech \(0.5\) must stay below 1"):
        MixStage(general=0.5, nonspeech=0.5)


HELLO = [f"你好，{who}{what}。" for who in ("老师", "小王", "妈妈", "同学们", "李经理", "大家", "师傅", "阿姨", "先生", "朋友们")
         for what in ("今天很忙", "明天见", "吃饭了吗", "早上好", "请坐吧", "辛苦了")]  # 60 sentences


def test_training_on_nonspeech_clips_teaches_an_empty_output(data_repo, tmp_path, tiny_whisper_dir):
    """Speech (every sentence opens with 你好: a first token the tiny model learns fast) and non-speech clips,
    trained through mix and finetune: the tuned model writes nothing for the non-speech clips it never trained
    on and still writes something for speech; the base model wrote text for every one (the test can fail)."""
    import os

    import soundfile as sf

    from asrtune import params
    from asrtune.corpus.chatml import examples
    from asrtune.stages import decode, finetune, ingest, jsonl, merge, mix, split

    repo = tmp_path / "repo"
    repo.mkdir()
    shutil.copytree(data_repo / "models/base", repo / "models/base")
    (repo / "hello.yaml").write_text(yaml.safe_dump({"sentences": HELLO}, allow_unicode=True), encoding="utf-8")
    (repo / "quiet.yaml").write_text(yaml.safe_dump({"nonspeech": {"silence": 20, "noise": 20}}), encoding="utf-8")
    params_for(repo, tiny_whisper_dir, **{
        "data.corpora": {"hello": {"role": "domain", "source": str(repo / "hello.yaml"), "speakers": 10, "voice": "espeak"},
                         "quiet": {"role": "nonspeech", "source": str(repo / "quiet.yaml")}},
        "mix.stages": {"s1": {"general": 0.0, "nonspeech": 0.4}},
        "train.stages": {"s1": {"init": "models/base", "epochs": 6, "learning_rate": 3e-2}},
        "train.lora.r": 0, "train.freeze_encoder": False, "train.cache_encoder": False, "decode.timestamps": False,
        "merge.scale": 1.0})
    for corpus in ("hello", "quiet"):
        for stage in (ingest, jsonl, split):
            in_process(repo, stage, corpus)
    in_process(repo, mix, "s1")
    in_process(repo, finetune, "s1")

    def hear(model_dir: str, corpus: str, ct2: Path | None = None) -> list[str]:
        items = examples(read_jsonl(repo / f"data/split/{corpus}/test.jsonl"))
        cwd = os.getcwd()
        os.chdir(repo)
        try:
            p = params.load()
            if ct2 is not None:
                p = p.model_copy(update={"decode": p.decode.model_copy(update={"engine": "ctranslate2", "compute_type": "float32"})})
            transcribe, _ = decode.transcriber(p, Path(model_dir), ct2)
            return transcribe(items, [sf.read(ex.audio, dtype="float32")[0] for ex in items])
        finally:
            os.chdir(cwd)

    base = hear("models/base", "quiet")
    assert base and all(h.strip() for h in base)
    assert hear("models/finetune/s1", "quiet") == [""] * len(base)
    assert all(h.strip() for h in hear("models/finetune/s1", "hello"))
    # the ctranslate2 engine too may end at the first token (suppress_blank=False): the same empty outputs
    from asrtune.weights.ct2_engine import convert

    in_process(repo, merge)  # scale 1: the tuned model as a plain transformers directory, as convert takes it
    convert(repo / "models/merged", repo / "ct2", "float32")
    assert hear("models/merged", "quiet", repo / "ct2") == [""] * len(base)
    assert all(h.strip() for h in hear("models/merged", "hello", repo / "ct2"))
