"""Forgetting control: train.distill (cross-entropy + weight x KL(teacher || tuned) on general-role
utterances, the teacher being the stage's init: LoRA's adapters disabled, or a frozen copy without LoRA)
and merge.scale (models/merged = base + scale x (tuned - base))."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
import yaml
from conftest import in_process, params_for, read_jsonl
from test_audiollm import arch_data  # noqa: F401 - the module-scoped fixture: a data repo whose models/base is a tiny audio LLM
from test_audiollm import batch_of
from test_training import whisper_batch

from asrtune.families import aligner, audiollm, whisper
from asrtune.train import hf_trainer
from asrtune.weights import chain


def lora(repo: Path, fam, train_encoder: bool = False, train_adaptor: bool = False, moved: bool = False):
    """models/base under LoRA (dropout off) as the finetune stage wraps it; `moved`: every trainable tensor
    (LoRA's B included, which starts at zero) pushed off its init, so the tuned model differs from the base."""
    from peft import get_peft_model

    torch.manual_seed(0)
    model = chain.load(repo / "models/base")
    fam.freeze(model, not train_encoder, not train_adaptor, False)
    peft = get_peft_model(model, fam.lora_config(4, 8, 0.0, None, train_encoder, train_adaptor, model=model)).train()
    if moved:
        with torch.no_grad():
            for p in peft.parameters():
                if p.requires_grad:
                    p.add_(torch.randn_like(p) * 0.05)
    return peft


def batches(repo: Path, family: str, model):
    """(family module, a batch with a general flag per row, every other one): whisper with raw features (its
    encoder runs), the audio LLMs and the aligner with cached audio-tower outputs (the teacher takes that path too)."""
    if family == "whisper":
        batch = whisper_batch(repo, n=3)
        batch["input_features"] = torch.randn(3, 80, 3000, generator=torch.Generator().manual_seed(0))
        del batch["encoder_outputs"]
        fam = whisper
    elif family == "aligner":
        from test_aligner import batch as aligner_batch

        fam, batch = aligner, aligner_batch(repo, model, aligner.load_processor(repo / "models/base"), cached=True)
    else:
        fam, batch = audiollm, batch_of(repo, model, n=3, cached=True)[3]
    return fam, {**batch, "general": torch.arange(len(batch["labels"])) % 2 == 0}


def reference_kl(tuned, base_model, fam, batch) -> torch.Tensor:
    """KL(base || tuned) summed over the learned positions of the general rows, from the two models' full logits."""
    inputs = {k: v for k, v in batch.items() if k != "general"}
    with torch.no_grad():
        t, _, learned = fam.learned_logits(tuned, tuned.get_base_model(), inputs)
        b = fam.learned_logits(base_model, base_model, inputs)[0]
    at = batch["general"][:, None].expand_as(learned)[learned]
    p = b[at].log_softmax(-1)
    return (p.exp() * (p - t[at].log_softmax(-1))).sum()


def test_the_teacher_is_the_base_model_and_the_loss_adds_its_kl_on_general_rows_only(data_repo):
    """Whisper: adapters and the encoder (modules_to_save) moved off the base; raw features."""
    check_teacher_and_loss("whisper", data_repo)


def test_the_audio_llms_teacher_is_the_base_model_on_the_cached_tower(arch_data):  # noqa: F811
    """Both audio LLMs: adapters and the adaptor (modules_to_save) moved off the base; cached tower outputs."""
    check_teacher_and_loss("audiollm", arch_data[0])


@pytest.fixture(scope="module")
def aligner_repo(tmp_path_factory, tiny_aligner_dir) -> Path:
    """models/base from the tiny aligner, and test_aligner's tiny corpus with timestamps."""
    from test_aligner import settings, write_corpus

    from asrtune.stages import base

    repo = tmp_path_factory.mktemp("aligner") / "repo"
    repo.mkdir()
    settings(repo, tiny_aligner_dir)
    in_process(repo, base)
    write_corpus(repo)
    return repo


def test_the_aligners_teacher_is_the_base_model(aligner_repo):
    """The aligner: LoRA and its `score` head (modules_to_save) moved off the base; KL over time bins."""
    check_teacher_and_loss("aligner", aligner_repo)


def check_teacher_and_loss(family: str, repo: Path) -> None:
    """The teacher forward (adapters disabled) gives models/base's logits, and the distilled loss is the
    cross-entropy plus weight x KL(base || tuned) over the general rows' learned positions, both divided
    by the batch's learned tokens."""
    fam = {"whisper": whisper, "audiollm": audiollm, "aligner": aligner}[family]
    tuned = lora(repo, fam, train_encoder=family == "whisper", train_adaptor=family == "audiollm", moved=True)
    _, batch = batches(repo, family, tuned)
    inputs = {k: v for k, v in batch.items() if k != "general"}
    base_model = chain.load(repo / "models/base").eval()
    distill = hf_trainer.Distill(0.7, fam.learned_logits)
    with torch.no_grad():
        want, _, learned = fam.learned_logits(base_model, base_model, inputs)
        with distill.teacher_of(tuned) as (teacher, teacher_base):
            assert not teacher.training
            got = fam.learned_logits(teacher, teacher_base, inputs)[0]
        moved = fam.learned_logits(tuned, tuned.get_base_model(), inputs)[0]
    assert tuned.training  # back in training mode, adapters on
    assert torch.allclose(got, want, atol=1e-5) and not torch.allclose(moved, want, atol=1e-3)
    with torch.no_grad():
        loss = distill.loss(tuned, tuned, tuned.get_base_model(), batch)
        ce = fam.loss(tuned, tuned.get_base_model(), inputs)
    kl = reference_kl(tuned, base_model, fam, batch)
    assert kl > 0 and float(loss) == pytest.approx(float(ce + 0.7 * kl / learned.sum()), rel=1e-5)


def test_kl_is_zero_at_init_and_a_batch_without_general_rows_is_todays_loss(data_repo):
    """LoRA's B starts at zero: the tuned model is the base model, the KL term is exactly 0 and so is its
    gradient. A batch of domain utterances alone gets the family's loss bit for bit."""
    tuned = lora(data_repo, whisper)
    _, batch = batches(data_repo, "whisper", tuned)
    inputs = {k: v for k, v in batch.items() if k != "general"}
    inner = tuned.get_base_model()

    def step(loss_fn):
        tuned.zero_grad()
        loss = loss_fn()
        loss.backward()
        return loss.detach(), {n: p.grad.clone() for n, p in tuned.named_parameters() if p.grad is not None}

    ce, ce_grads = step(lambda: whisper.loss(tuned, inner, inputs))
    distilled, grads = step(lambda: hf_trainer.Distill(10.0, whisper.learned_logits).loss(tuned, tuned, inner, batch))
    assert torch.equal(distilled, ce)
    assert grads.keys() == ce_grads.keys() and all(torch.allclose(grads[k], ce_grads[k], atol=1e-7) for k in grads)
    assert float(reference_kl(tuned, chain.load(data_repo / "models/base").eval(), whisper, batch)) == 0.0
    domain = {**batch, "general": torch.zeros_like(batch["general"])}
    alone, alone_grads = step(lambda: hf_trainer.Distill(10.0, whisper.learned_logits).loss(tuned, tuned, inner, domain))
    assert torch.equal(alone, ce) and all(torch.equal(alone_grads[k], ce_grads[k]) for k in ce_grads)


@pytest.fixture
def repo(data_repo, tmp_path) -> Path:
    dst = tmp_path / "repo"
    shutil.copytree(data_repo, dst, ignore=shutil.ignore_patterns(".cache", "finetune", "plots"))
    return dst


def finetune(repo: Path, tiny_whisper_dir: Path, drop: str | None = None, **overrides) -> str:
    """The finetune stage in this process; `drop`: a train key removed from params.yaml (absent, not set)."""
    from asrtune.stages import finetune as stage

    params = params_for(repo, tiny_whisper_dir, **{"train.stages.s1.learning_rate": 1e-2, **overrides})
    if drop:
        del params["train"][drop]
        (repo / "params.yaml").write_text(yaml.safe_dump(params, allow_unicode=True), encoding="utf-8")
    return in_process(repo, stage, "s1")


def outputs(repo: Path) -> tuple[dict, dict]:
    from safetensors.torch import load_file

    out = repo / "models/finetune/s1"
    weights = out / "adapter/adapter_model.safetensors"
    return json.loads((out / "summary.json").read_text()), load_file(weights if weights.is_file() else out / "trained.safetensors")


def test_distill_0_trains_as_without_the_key_and_distill_trains_only_what_trains(repo, tiny_whisper_dir, tmp_path):
    """train.distill absent and 0: the same training bit for bit (losses and weights). distill > 0 on the
    mix's general utterances (frozen, cached encoder; LoRA): it changes what LoRA learns and nothing else."""
    finetune(repo, tiny_whisper_dir, drop="distill")
    absent = outputs(repo)
    assert "distilled" not in finetune(repo, tiny_whisper_dir, **{"train.distill": 0})
    zero = outputs(repo)
    assert absent[0] == zero[0] and absent[1].keys() == zero[1].keys()
    assert all(torch.equal(absent[1][k], zero[1][k]) for k in zero[1])
    printed = finetune(repo, tiny_whisper_dir, **{"train.distill": 1.0})
    assert "distilled to models/base on general utterances (weight 1)" in printed and "encoder outputs cached" in printed
    summary, adapter = outputs(repo)
    assert adapter.keys() == zero[1].keys() and any(not torch.equal(adapter[k], zero[1][k]) for k in adapter)
    assert summary["best_val_loss"] > 0
    base, tuned = (chain.load(d).state_dict() for d in (repo / "models/base", repo / "models/finetune/s1"))
    moved = {k for k in base if not torch.equal(base[k], tuned[k])}
    assert moved and all(".decoder.layers." in k and k.endswith(("q_proj.weight", "v_proj.weight", "out_proj.weight", "fc1.weight",
                                                                 "fc2.weight")) for k in moved)  # LoRA's targets only


def test_distill_without_lora_keeps_a_frozen_copy_and_merge_scales_the_update(repo, tiny_whisper_dir):
    """lora.r 0 (the decoder trains fully): the teacher is a frozen copy of the init, the encoder stays
    bit-identical. Then merge.scale: 1 is the tuned model exactly, 1e-6 the base model, 0.5 the midpoint
    of every tensor, the output projection tied to the trained embeddings included (moved once, not twice)."""
    from safetensors.torch import load_file

    from asrtune.stages import merge

    printed = finetune(repo, tiny_whisper_dir, **{"train.distill": 1.0, "train.lora.r": 0})
    assert "full on the unfrozen parts" in printed and "distilled to models/base" in printed
    base = chain.load(repo / "models/base").state_dict()
    tuned = chain.load(repo / "models/finetune/s1").state_dict()
    assert all(torch.equal(base[k], tuned[k]) for k in base if k.startswith("model.encoder."))
    assert not torch.equal(base["model.decoder.embed_tokens.weight"], tuned["model.decoder.embed_tokens.weight"])
    one_stage = {"train.stages": {"s1": {"init": "models/base", "epochs": 1}}, "mix.stages": {"s1": {"general": 0.5}}}
    merged = {}
    for scale in (1.0, 1e-6, 0.5):  # 0.5 last: the one loaded below
        params_for(repo, tiny_whisper_dir, **one_stage, **{"merge.scale": scale})
        printed = in_process(repo, merge)
        assert ("base + " in printed) == (scale != 1)
        merged[scale] = load_file(repo / "models/merged/model.safetensors")
        assert all(t.dtype == torch.float32 for t in merged[scale].values())
    assert all(torch.equal(merged[1.0][k], tuned[k]) for k in merged[1.0])
    assert all(torch.allclose(merged[1e-6][k], base[k], atol=1e-6) for k in merged[1e-6])
    assert all(torch.allclose(merged[0.5][k], (base[k] + tuned[k]) / 2, atol=1e-6) for k in merged[0.5])
    halfway = chain.load(repo / "models/merged")
    assert torch.equal(halfway.proj_out.weight, halfway.model.decoder.embed_tokens.weight)
    assert torch.allclose(halfway.proj_out.weight, (base["proj_out.weight"] + tuned["proj_out.weight"]) / 2, atol=1e-6)


def test_lora_merge_scale_scales_the_summed_update(repo, tiny_whisper_dir):
    """A LoRA chain of two stages: merge.scale interpolates between models/base (the root) and s2's folded
    weights, not s1's."""
    from safetensors.torch import load_file

    from asrtune.stages import finetune as stage, merge

    two = {"train.stages": {"s1": {"init": "models/base", "epochs": 1, "learning_rate": 1e-2},
                            "s2": {"init": "models/finetune/s1", "epochs": 1, "learning_rate": 1e-2}},
           "mix.stages": {"s1": {"general": 0.5}, "s2": {"general": 0.2}}}
    params_for(repo, tiny_whisper_dir, **two)
    in_process(repo, stage, "s1")
    in_process(repo, stage, "s2")
    params_for(repo, tiny_whisper_dir, **two, **{"merge.scale": 0.25})
    in_process(repo, merge)
    base = chain.load(repo / "models/base").state_dict()
    s1, s2 = (chain.load(repo / f"models/finetune/{s}").state_dict() for s in ("s1", "s2"))
    merged = load_file(repo / "models/merged/model.safetensors")
    q = "model.decoder.layers.0.self_attn.q_proj.weight"
    assert not torch.allclose(s1[q], s2[q], atol=1e-6)
    assert all(torch.allclose(merged[k], base[k] + 0.25 * (s2[k] - base[k]), atol=1e-6) for k in merged)


def test_audio_llm_distills_through_the_stage(arch_data, tmp_path):  # noqa: F811
    """The finetune stage with train.distill on an audio LLM: cached tower, the adaptor trained fully (modules_to_save),
    LoRA on the LLM; the tower stays bit-identical."""
    if "qwen" in arch_data[1].name:
        pytest.skip("the stage path is the same for both architectures (the loss test covers both); Fun-ASR-Nano runs it")
    from asrtune.stages import finetune as stage

    repo = tmp_path / "repo"
    shutil.copytree(arch_data[0], repo, ignore=shutil.ignore_patterns(".cache", "finetune", "plots"))
    params_for(repo, arch_data[1], **{"train.distill": 1.0, "train.freeze_adaptor": False, "train.stages.s1.learning_rate": 1e-2})
    printed = in_process(repo, stage, "s1")
    assert "distilled to models/base" in printed and "encoder outputs cached" in printed
    base, tuned = (chain.load(repo / d) for d in ("models/base", "models/finetune/s1"))
    tower = zip(base.model.audio_tower.state_dict().values(), tuned.model.audio_tower.state_dict().values())
    assert all(torch.equal(a, b) for a, b in tower)
    assert not all(torch.equal(a, b) for a, b in zip(base.model.multi_modal_projector.state_dict().values(),
                                                     tuned.model.multi_modal_projector.state_dict().values()))


def test_mix_marks_each_record_with_its_corpus_role_and_distill_needs_it(data_repo, repo, tiny_whisper_dir):
    from asrtune.errors import UserError

    for split in ("train", "val"):
        records = read_jsonl(data_repo / f"data/mix/s1/{split}.jsonl")
        assert {r["role"] for r in records} == {"general", "domain"}
        assert all((r["role"] == "general") == r["key"].startswith("general-") for r in records)
        assert [r["key"] for r in records] == sorted(r["key"] for r in records)
    train = repo / "data/mix/s1/train.jsonl"
    records = read_jsonl(train)
    train.write_text("".join(json.dumps({k: v for k, v in r.items() if k != "role"}, ensure_ascii=False) + "\n" for r in records),
                     encoding="utf-8")
    with pytest.raises(UserError, match=r"train.distill: .* without a role"):
        finetune(repo, tiny_whisper_dir, **{"train.distill": 1.0})
