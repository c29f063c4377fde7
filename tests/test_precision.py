"""Decode runs the weights as they trained: float32 weights under autocast, never the merged model cast to bf16,
which rounds W + dW back to W wherever the update is under half a bf16 step (most of a LoRA update on
bf16-released weights). Built on the tiny Whisper with bf16-representable base weights, as released models are."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from conftest import REPO

from asrtune import params
from asrtune.families import whisper
from asrtune.stages import decode
from asrtune.weights import precision


WAVE = np.sin(np.linspace(0, 2000, 16000)).astype(np.float32) * 0.3


def _update(model, scale: float) -> None:
    """W -> W (1 + scale): with scale under 2^-9 every element rounds back to W in bf16."""
    with torch.no_grad():
        for p in model.parameters():
            p.add_(p * scale)


@pytest.fixture(scope="module")
def base_and_merged(tiny_whisper_dir, tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("precision")
    model = whisper.load_plain(tiny_whisper_dir)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(p.to(torch.bfloat16).to(torch.float32))  # released as bf16
    model.save_pretrained(root / "base")
    _update(model, 2.0**-10)
    model.save_pretrained(root / "merged")
    for d in ("base", "merged"):
        shutil.copy(tiny_whisper_dir / "generation_config.json", root / d)
        whisper.load_processor(tiny_whisper_dir).save_pretrained(root / d)
    return root / "base", root / "merged"


def _params(tmp: Path, prec: str) -> params.Params:
    p = yaml.safe_load((REPO / "params.yaml").read_text(encoding="utf-8"))
    p["model"]["precision"] = prec
    (tmp / "params.yaml").write_text(yaml.safe_dump(p, allow_unicode=True), encoding="utf-8")
    return params.load(tmp / "params.yaml")


def _decode_logits(p, model_dir: Path, monkeypatch) -> torch.Tensor:
    """The logits of the model decode builds, computed where decode's transcribe would run (its autocast too)."""
    seen = {}

    def probe(model, processor, batch, audio, p, contexts=None, encode=None):
        feats = whisper.features(processor, audio).to(model.device, model.dtype)
        prompt = torch.tensor([[50258, 50260, 50359, 50363]])
        seen["logits"] = model(input_features=feats, decoder_input_ids=prompt).logits.float()
        return ["" for _ in audio]

    monkeypatch.setattr(whisper, "transcribe", probe)
    transcribe, _ = decode.transcriber(p, model_dir, model_dir)
    transcribe([None], [WAVE])
    return seen["logits"]


def test_bf16_decode_keeps_the_update_that_bf16_weights_round_away(base_and_merged, tmp_path, monkeypatch):
    base, merged = base_and_merged
    assert torch.equal(*(  # the premise: the update vanishes in bf16 weights
        torch.cat([t.to(torch.bfloat16).flatten() for t in whisper.load_plain(d).state_dict().values()]) for d in base_and_merged))
    p = _params(tmp_path, "bf16")
    got_base, got_merged = _decode_logits(p, base, monkeypatch), _decode_logits(p, merged, monkeypatch)
    assert not torch.equal(got_base, got_merged)  # decoding in bf16 still sees what fine-tuning changed

    reference = whisper.load_plain(merged).eval()  # float32 weights under autocast, as training ran them
    feats = whisper.features(whisper.load_processor(merged), [WAVE])
    with precision.autocast("bf16", "cpu"):
        want = reference(input_features=feats, decoder_input_ids=torch.tensor([[50258, 50260, 50359, 50363]])).logits.float()
    assert torch.allclose(got_merged, want, atol=1e-6)


def test_fp32_decode_runs_without_autocast(base_and_merged, tmp_path, monkeypatch):
    _, merged = base_and_merged
    got = _decode_logits(_params(tmp_path, "fp32"), merged, monkeypatch)
    reference = whisper.load_plain(merged).eval()
    feats = whisper.features(whisper.load_processor(merged), [WAVE])
    with torch.no_grad():
        want = reference(input_features=feats, decoder_input_ids=torch.tensor([[50258, 50260, 50359, 50363]])).logits
    assert torch.equal(got, want)
