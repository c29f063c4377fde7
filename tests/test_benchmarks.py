"""Benchmark scripts run (--quick): a smoke test of their code paths, not a measurement."""

from __future__ import annotations

import subprocess
import sys

from conftest import REPO


def test_speechllm_memory_quick():
    proc = subprocess.run([sys.executable, "benchmarks/speechllm_memory.py", "--quick"], cwd=REPO,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "| tiny | tiny |" in proc.stdout
    assert proc.stdout.count("peak RSS") == 2 and "train step" in proc.stdout and "decode" in proc.stdout


def test_pipeline_overhead_quick():
    proc = subprocess.run([sys.executable, "benchmarks/pipeline_overhead.py", "--quick"], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "`dvc repro (no-op)`" in proc.stdout and "`dvc status`" in proc.stdout and "(1 stages)" in proc.stdout


def test_data_stages_quick():
    proc = subprocess.run([sys.executable, "benchmarks/data_stages.py", "--quick"], cwd=REPO,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "peak memory ratio 1000 vs 200" in proc.stdout and "mix MiB" in proc.stdout


def test_decode_speed_quick():
    proc = subprocess.run([sys.executable, "benchmarks/decode_speed.py", "--quick"], cwd=REPO,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("| asrtune decode,") == 2 and "faster-whisper, batch 1 |" in proc.stdout
    assert "CER of models/merged: transformers" in proc.stdout


def test_train_speed_quick():
    proc = subprocess.run([sys.executable, "benchmarks/train_speed.py", "--quick"], cwd=REPO,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "| LoRA r=16 on the decoder |" in proc.stdout and "x |" in proc.stdout


def test_stage_memory_quick():
    proc = subprocess.run([sys.executable, "benchmarks/stage_memory.py", "--quick"], cwd=REPO,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("GiB |") == 2 and "| finetune s1 |" in proc.stdout and "| decode merged quick" in proc.stdout
