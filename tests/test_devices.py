"""Precision and devices: what model.precision resolves to on every kind of machine, one process
never drives several GPUs through nn.DataParallel, and two CPU processes (gloo, through the stage's
own torchrun launch) train as one process with the same global batch, resuming after a kill."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from types import SimpleNamespace

import psutil
import pytest
import torch
from conftest import ASRTUNE, asrtune, in_process, params_for

from asrtune.errors import UserError
from asrtune.train import distributed, hf_trainer
from asrtune.weights import chain, precision

WHISPER = SimpleNamespace(NAME="whisper", FP16_OK=True)
LLM = SimpleNamespace(NAME="audiollm", FP16_OK=False)


def test_precision_auto_follows_the_machine_and_the_family():
    said = []
    assert precision.resolve("auto", WHISPER, gpu=False, gpu_bf16=False) == "fp32"
    assert precision.resolve("auto", LLM, gpu=True, gpu_bf16=True) == "bf16"
    assert precision.resolve("auto", WHISPER, gpu=True, gpu_bf16=False, say=said.append) == "fp16"  # T4, V100: loss scaling
    assert said == []
    assert precision.resolve("auto", LLM, gpu=True, gpu_bf16=False, say=said.append) == "fp32"
    assert len(said) == 1 and said[0].startswith("warning: ") and "fp32" in said[0]
    assert precision.resolve("bf16", LLM, gpu=False, gpu_bf16=False) == "bf16"  # a CPU runs bf16 autocast too
    assert precision.trainer_settings("fp16", gpu=True) == {"bf16": False, "fp16": True, "use_cpu": False}
    assert precision.torch_dtype("bf16") is torch.bfloat16


@pytest.mark.parametrize("requested, fam, gpu, gpu_bf16, says", [
    ("fp16", WHISPER, False, False, "needs a GPU"),
    ("fp16", LLM, True, False, "not safe for the audiollm family"),
    ("bf16", WHISPER, True, False, "has no bf16"),
])
def test_precision_that_cannot_run_is_a_one_line_error(requested, fam, gpu, gpu_bf16, says):
    with pytest.raises(UserError, match=says) as e:
        precision.resolve(requested, fam, gpu=gpu, gpu_bf16=gpu_bf16)
    assert str(e.value).startswith("model.precision: ") and "\n" not in str(e.value)


def test_devices(monkeypatch):
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    assert distributed.devices("auto") == 1 and distributed.devices(2) == 2  # CPU processes over gloo
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    assert distributed.devices("auto") == 4
    with pytest.raises(UserError, match="train.devices: 5 asked for, 4 GPUs visible"):
        distributed.devices(5)


def test_one_process_never_wraps_the_model_in_data_parallel(tiny_whisper_dir, tmp_path):
    """On a host with several GPUs one process sees them all (n_gpu > 1) and the Trainer would use
    nn.DataParallel, splitting the batch our loss hook selects positions in. Simulated here."""
    from asrtune import params

    t = params.Train(stages={"s1": params.TrainStage(init="models/base")})
    args = hf_trainer.arguments(t, t.stages["s1"], tmp_path, "fp32", eval_strategy="no", load_best_model_at_end=False)
    args._n_gpu = 2  # what TrainingArguments finds on a 2-GPU host without torchrun
    model = chain.load(tiny_whisper_dir)
    trainer = hf_trainer.FamilyTrainer(model=model, args=args, family_loss=None)
    assert trainer.args.n_gpu == 1
    assert not isinstance(trainer._wrap_model(trainer.model), torch.nn.DataParallel)


@pytest.mark.slow  # two torchrun processes: `pytest -m slow` (.ci/run's second job)
def test_two_processes_train_as_one_with_the_same_global_batch_and_resume(data_repo, tiny_whisper_dir, tmp_path):
    """train.devices=2 on a CPU: the stage launches itself under torchrun (two gloo processes, batch
    3 each) and gives the model that one process gives with batch 6; killed after its first
    checkpoint, it resumes; rank 0 alone writes."""
    from asrtune.stages import finetune

    common = {"train.lora.dropout": 0.0, "train.stages.s1.epochs": 8, "train.stages.s1.learning_rate": 1e-2}
    one, two = tmp_path / "one", tmp_path / "two"
    for repo in (one, two):
        shutil.copytree(data_repo, repo, ignore=shutil.ignore_patterns("finetune", "plots"))
    params_for(one, tiny_whisper_dir, **common, **{"train.batch_size": 6})
    in_process(one, finetune, "s1")
    params_for(two, tiny_whisper_dir, **common, **{"train.batch_size": 3, "train.devices": 2})

    proc = subprocess.Popen([*ASRTUNE, "finetune", "s1"], cwd=two, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)
    checkpoints = two / ".cache/asrtune/checkpoints"
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        if [c for c in checkpoints.glob("*/checkpoint-*") if (c / "trainer_state.json").is_file() and (c / "rng_state_1.pth").is_file()]:
            for child in psutil.Process(proc.pid).children(recursive=True):  # torchrun starts each rank in a session of its own
                child.kill()
            os.killpg(proc.pid, signal.SIGKILL)
            break
        time.sleep(0.01)
    first = proc.communicate()[0]
    assert proc.returncode == -signal.SIGKILL, "training ended before it could be killed:\n" + first
    assert "2 processes under torchrun" in first
    assert not (two / "models/finetune/s1").exists(), first

    rerun = asrtune(two, "finetune", "s1")
    assert "resuming from checkpoint-" in rerun.stdout and "x 2 processes (DDP)" in rerun.stdout
    assert rerun.stdout.count("best val loss") == 1 and rerun.stdout.count("encoder outputs cached") == 1  # rank 0 alone speaks
    assert not list((two / ".cache/asrtune/encoder").glob("*/*.tmp.npy"))
    summaries = [json.loads((repo / "models/finetune/s1/summary.json").read_text()) for repo in (one, two)]
    assert summaries[0]["steps"] == summaries[1]["steps"] and 0 < summaries[1]["resumed_from_step"] < summaries[1]["steps"]
    from safetensors.torch import load_file

    a, b = (load_file(repo / "models/finetune/s1/adapter/adapter_model.safetensors") for repo in (one, two))
    assert a.keys() == b.keys()
    for k in a:  # tolerance: the two processes sum the same gradients in another order
        assert torch.allclose(a[k], b[k], rtol=1e-4, atol=1e-6), k
    assert not list(checkpoints.glob("*/checkpoint-*"))


def test_a_gpu_that_only_emulates_bf16_gets_fp16_or_fp32(monkeypatch):
    """T4 and V100 have no bf16 units, though torch emulates it (is_bf16_supported() says True there
    by default): auto must still pick fp16 for whisper and fp32 for an LLM."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: including_emulation)
    assert precision.resolve("auto", WHISPER) == "fp16"
    assert precision.resolve("auto", LLM, say=lambda line: None) == "fp32"


def test_two_runs_of_the_same_training_take_turns(tmp_path):
    """The second waits for the first to let go of the checkpoint folder (then goes on)."""
    import sys

    from asrtune.train import cache

    folder = tmp_path / "checkpoints/finetune-s1-0123"
    held = cache.lock(folder)
    code = f"from pathlib import Path; from asrtune.train import cache; cache.lock(Path({str(folder)!r})); print('got it')"
    second = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        second.wait(timeout=3)
        raise AssertionError("the second run did not wait")
    except subprocess.TimeoutExpired:
        pass
    held.close()
    out = second.communicate(timeout=30)[0]
    assert "waiting for it to end" in out and out.strip().endswith("got it")


def test_the_curves_survive_dvc_between_runs_so_a_resumed_run_continues_them():
    """DVC deletes a stage's outputs before it runs, unless they persist: the curves must."""
    import yaml
    from conftest import REPO

    stage = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]["finetune"]["do"]
    curves = [entry for kind in ("outs", "metrics", "plots") for entry in stage[kind] if isinstance(entry, dict)]
    assert len(curves) == 3 and all(next(iter(entry.values()))["persist"] for entry in curves)
