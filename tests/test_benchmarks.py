"""Benchmark scripts run (--quick): a smoke test of their code paths, not a measurement."""

from __future__ import annotations

import subprocess
import sys

import pytest
from conftest import REPO

# smoke runs of the benchmark scripts: `pytest -m slow` (.ci/run's second job)
pytestmark = pytest.mark.slow


def quick(script: str, *args: str) -> str:
    proc = subprocess.run([sys.executable, f"benchmarks/{script}", "--quick", *args], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_audiollm_memory_quick():
    out = quick("audiollm_memory.py")
    assert "| Fun-ASR-Nano-2512 | 221.1 M | 12.6 M | 596.0 M | 829.8 M |" in out  # (i): real shapes, meta device
    assert "| Qwen3-ASR-1.7B |" in out and "| encoder + adaptor |" in out
    assert out.count("| LoRA r=16 on the LLM (asrtune default) |") == 2 and "tiny Fun-ASR-Nano" in out
    assert "| Qwen3-ForcedAligner-0.6B | 314.3 M | 2.1 M | 601.3 M | 917.7 M |" in out  # 1.84 GB in bf16, as released


def test_audiollm_memory_quick_at_the_aligners_shapes():
    out = subprocess.run([sys.executable, "benchmarks/audiollm_memory.py", "--quick", "--model", "aligner"], cwd=REPO,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.count("| LoRA r=16 on the LLM (asrtune default) |") == 2 and "tiny aligner" in out.stdout


def test_audiollm_speed_quick():
    out = quick("audiollm_speed.py")
    assert "| (a) funasr FunASRNano, own loop |" in out and "| (c) asrtune FamilyTrainer + encoder cache |" in out
    assert "(a)/(c) = " in out and "Encoder cache fill" in out
    rows = [line.split("|") for line in out.splitlines() if line.startswith("| (")]
    assert len(rows) == 3 and len({r[4] for r in rows}) == 1  # the same trainable parameters in all three systems


def test_pipeline_overhead_quick():
    out = quick("pipeline_overhead.py")
    assert "`dvc repro (no-op)`" in out and "`dvc status`" in out and "(1 stages)" in out


def test_data_stages_quick():
    out = quick("data_stages.py")
    assert "peak memory ratio 1000 vs 200" in out and "mix MiB" in out


def test_decode_speed_quick():
    out = quick("decode_speed.py")
    assert out.count("| asrtune decode,") == 2 and "faster-whisper, batch 1 |" in out
    assert "CER of models/merged: transformers" in out


def test_decode_reuse_quick():
    out = quick("decode_reuse.py")
    assert "| base | " in out and "| merged+hotwords | " in out and "| all four | " in out
    assert "DIFFER" not in out and out.count("| the same |") == 5


def test_transcribe_speed_quick():
    out = quick("transcribe_speed.py")
    assert out.count("| asrtune transcribe,") == 2 and "| faster-whisper transcribe(vad_filter=True) |" in out
    assert out.count("x the time of faster-whisper") == 4


def test_hotwords_val_quick():
    out = quick("hotwords_val.py", "--bonus", "none", "0")
    assert out.count("| 12 |") == 8 and "general CER change [95%]" in out and "domain U-CER change [95%]" in out
    assert "| 12 | none | none | 6.0 | 0 | 0.0 |" in out  # select, max distance, bonus (none: no check), mean list, sent back, check s
    assert "| 12 | none | 0.0 | 6.0 |" in out


def test_train_speed_quick():
    out = quick("train_speed.py")
    assert "| LoRA r=16 on the decoder |" in out and "x |" in out


def test_stage_memory_quick():
    out = quick("stage_memory.py")
    assert out.count("GiB |") == 1 and "| decode merged quick, transformers |" in out


def test_compare_runs_pairs_two_workspaces(tmp_path):
    import json

    def workspace(name, hyps):
        f = tmp_path / name / "data/normalized/merged/medical.jsonl"
        f.parent.mkdir(parents=True)
        f.write_text("".join(json.dumps({"key": f"k{i}", "ref": "阿莫西林", "hyp": h, "missing": False}) + "\n"
                             for i, h in enumerate(hyps)), encoding="utf-8")
        return tmp_path / name

    a = workspace("a", ["阿莫西林", "阿莫西", "阿莫西林", "莫西林"])
    b = workspace("b", ["阿莫西林", "阿莫西林", "阿莫西林", "阿莫西林"])
    out = subprocess.run([sys.executable, "benchmarks/compare_runs.py", str(a), str(b)], cwd=REPO, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "| medical | 4 | 0.1250 | 0.0000 | -0.1250 [" in out.stdout
    for ws in (a, b):  # the second pass with the list sits beside the plain one: data/normalized/merged/<c>.hotwords.jsonl
        (ws / "data/normalized/merged/medical.hotwords.jsonl").write_bytes((b / "data/normalized/merged/medical.jsonl").read_bytes())
    out = subprocess.run([sys.executable, "benchmarks/compare_runs.py", str(a), str(b), "--model", "merged+hotwords"], cwd=REPO,
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "| medical | 4 | 0.0000 | 0.0000 | +0.0000 [" in out.stdout
