"""The speechllm family (Whisper encoder + adaptor + causal LM) on a tiny random Whisper and a tiny
random Qwen3 with a ChatML tokenizer: the base assembles the parts bit for bit, the prompt masks
all but the transcript and <|im_end|>, each freeze flag freezes what it names, LoRA merges exactly,
the encoder cache changes nothing, and batched decoding equals one clip at a time."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
import soundfile as sf
import torch
from conftest import asrtune, assert_one_line_error, params_for, speechllm_overrides

from asrtune import checkpoint
from asrtune.chatml import Example, examples
from asrtune.manifest import read_jsonl

PARTS = ("encoder", "adaptor", "llm")


@pytest.fixture(scope="module")
def sllm_data(data_repo, tiny_whisper_dir, tiny_llm_dir, tmp_path_factory) -> Path:
    """The tiny data repo with models/base rebuilt as a speechllm."""
    repo = tmp_path_factory.mktemp("sllm") / "repo"
    shutil.copytree(data_repo, repo, ignore=shutil.ignore_patterns(".cache", "finetune", "plots"))
    params_for(repo, tiny_whisper_dir, **speechllm_overrides(tiny_llm_dir))
    proc = asrtune(repo, "base")
    assert "adaptor" in proc.stdout
    return repo


def finetune(repo: Path, tiny_whisper_dir: Path, tiny_llm_dir: Path, **overrides):
    """The finetune stage in this process (the subprocess would add seconds of imports per run)."""
    from types import SimpleNamespace

    from conftest import in_process

    from asrtune.stages import finetune as finetune_stage

    params_for(repo, tiny_whisper_dir, **{**speechllm_overrides(tiny_llm_dir), "train.stages.s1.learning_rate": 1e-2, **overrides})
    return SimpleNamespace(stdout=in_process(repo, finetune_stage, "s1"))


def part_state(model, part: str) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in getattr(model, part).state_dict().items()}


def same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.fixture(scope="module")
def lora_run(sllm_data, tiny_whisper_dir, tiny_llm_dir, tmp_path_factory) -> Path:
    """Frozen encoder, adaptor trained fully, LLM through LoRA (float32 encoder cache)."""
    repo = tmp_path_factory.mktemp("sllm-lora") / "repo"
    shutil.copytree(sllm_data, repo)
    proc = finetune(repo, tiny_whisper_dir, tiny_llm_dir, **{"train.freeze_adaptor": False, "train.cache_dtype": "float32"})
    assert "encoder outputs cached" in proc.stdout
    return repo


def test_base_holds_the_whisper_encoder_and_the_llm_bit_for_bit(sllm_data, tiny_whisper_dir, tiny_llm_dir):
    from transformers import AutoModelForCausalLM, WhisperForConditionalGeneration

    base = checkpoint.load(sllm_data / "models/base", "speechllm")
    whisper = WhisperForConditionalGeneration.from_pretrained(tiny_whisper_dir)
    llm = AutoModelForCausalLM.from_pretrained(tiny_llm_dir)
    assert same(part_state(base, "encoder"), {k: v for k, v in whisper.model.encoder.state_dict().items()})
    assert same(part_state(base, "llm"), llm.state_dict())
    assert base.llm.lm_head.weight is base.llm.model.embed_tokens.weight  # still tied after the round trip
    assert base.config.adaptor_stride == 4 and len(base.adaptor.blocks) == 1
    assert (sllm_data / "models/base/tokenizer.json").is_file() and (sllm_data / "models/base/preprocessor_config.json").is_file()


def test_prompt_is_chatml_and_only_the_transcript_and_end_token_are_learned(sllm_data):
    from asrtune.families.speechllm import Prompt, item_maker
    from asrtune.families.speechllm.model import audio_tokens

    model = checkpoint.load(sllm_data / "models/base", "speechllm")
    processor = checkpoint_processor(sllm_data)
    tok = processor.tokenizer
    ex = Example("k", "a.wav", "患者需要复查CT", "You are a helpful assistant.", "语音转写：")
    samples = int(2.3 * 16000)
    item = item_maker(model, processor, None)(ex, samples)
    ids, labels, audio = item["input_ids"], item["labels"], item["audio_mask"]
    assert len(ids) == len(labels) == len(audio)
    assert int(audio.sum()) == audio_tokens(samples, 4) == math.ceil(math.ceil(230 / 2) / 4)
    assert int(item["encoder_lengths"]) == 115  # 230 mel frames of 10 ms, halved by the encoder
    learned = labels != -100
    assert tok.decode(ids[learned]) == "患者需要复查CT<|im_end|>"
    assert torch.equal(labels[learned], ids[learned])  # the LM shifts them itself
    assert learned.nonzero().min() > audio.nonzero().max()  # nothing before the assistant's turn is learned
    text = tok.decode(ids[~audio])
    assert text == ("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n语音转写："
                    "<|im_end|>\n<|im_start|>assistant\n患者需要复查CT<|im_end|>")
    before = tok.decode(ids[: int(audio.nonzero().min())])
    assert before.endswith("user\n语音转写：")  # the audio sits right after the prompt
    assert Prompt(tok).end == tok.convert_tokens_to_ids("<|im_end|>")


def checkpoint_processor(repo: Path):
    from asrtune.families import speechllm

    return speechllm.load_processor(repo / "models/base")


def test_frozen_parts_stay_in_eval_mode(sllm_data):
    from asrtune.families import speechllm

    model = checkpoint.load(sllm_data / "models/base", "speechllm")
    speechllm.freeze(model, True, False, True)
    model.train()
    assert not model.encoder.training and not model.llm.training and model.adaptor.training
    assert not any(p.requires_grad for p in model.encoder.parameters())
    assert all(p.requires_grad for p in model.adaptor.parameters())


def test_frozen_encoder_is_bit_identical_while_adaptor_and_llm_learn(lora_run):
    base = checkpoint.load(lora_run / "models/base", "speechllm")
    tuned = checkpoint.load(lora_run / "models/finetune/s1", "speechllm")
    assert same(part_state(base, "encoder"), part_state(tuned, "encoder"))
    assert not same(part_state(base, "adaptor"), part_state(tuned, "adaptor"))
    q = "model.layers.0.self_attn.q_proj.weight"
    assert not torch.equal(base.llm.state_dict()[q], tuned.llm.state_dict()[q])
    k_norm = "model.layers.0.self_attn.k_norm.weight"  # not a LoRA target: untouched
    assert torch.equal(base.llm.state_dict()[k_norm], tuned.llm.state_dict()[k_norm])
    meta = json.loads((lora_run / "models/finetune/s1/asrtune.json").read_text())
    assert meta == {"family": "speechllm", "init": "../../base", "kind": "lora"}


@pytest.mark.parametrize("frozen", ["adaptor", "llm"])
def test_each_freeze_flag_freezes_what_it_names(sllm_data, tiny_whisper_dir, tiny_llm_dir, tmp_path, frozen):
    repo = tmp_path / "repo"
    shutil.copytree(sllm_data, repo)
    flags = {f"train.freeze_{part}": part == frozen for part in PARTS}
    proc = finetune(repo, tiny_whisper_dir, tiny_llm_dir, **flags, **{"train.lora.r": 0})  # r=0: the LLM trains fully
    assert ("adaptor in models/base starts from random weights" in proc.stdout) == (frozen == "adaptor")  # a frozen new adaptor is useless
    base = checkpoint.load(repo / "models/base", "speechllm")
    tuned = checkpoint.load(repo / "models/finetune/s1", "speechllm")
    for part in PARTS:
        assert same(part_state(base, part), part_state(tuned, part)) == (part == frozen), part
    positions = "embed_positions.weight"  # Whisper's sinusoidal table stays fixed in a trained encoder
    assert torch.equal(part_state(base, "encoder")[positions], part_state(tuned, "encoder")[positions])
    # no LoRA: the stage output holds only what trained, never a copy of the frozen part
    saved = set(__import__("safetensors.torch", fromlist=["load_file"]).load_file(repo / "models/finetune/s1/trained.safetensors"))
    assert saved and not any(name.startswith(f"{frozen}.") for name in saved)


def test_everything_frozen_is_an_error_before_loading(sllm_data, tiny_whisper_dir, tiny_llm_dir, tmp_path):
    repo = tmp_path / "repo"
    shutil.copytree(sllm_data, repo, ignore=shutil.ignore_patterns("models"))
    params_for(repo, tiny_whisper_dir, **speechllm_overrides(tiny_llm_dir), **{"train.freeze_llm": True})
    assert_one_line_error(asrtune(repo, "finetune", "s1", ok=False), "every component is frozen")


def test_lora_targets_that_the_llm_lacks_are_named(sllm_data, tiny_whisper_dir, tiny_llm_dir, tmp_path):
    repo = tmp_path / "repo"
    shutil.copytree(sllm_data, repo)
    params_for(repo, tiny_whisper_dir, **speechllm_overrides(tiny_llm_dir), **{"train.lora.target_modules": ["q_proj", "fc1"]})
    assert_one_line_error(asrtune(repo, "finetune", "s1", ok=False), "'fc1' names no linear layer", "q_proj")


def test_a_model_of_the_other_family_is_a_clear_error(lora_run, data_repo):
    from asrtune.errors import UserError

    with pytest.raises(UserError, match="trained as model.family=speechllm"):
        checkpoint.load(lora_run / "models/finetune/s1", "whisper")
    with pytest.raises(UserError, match="holds a whisper model"):
        checkpoint.load(data_repo / "models/base", "speechllm")


def test_speechllm_without_an_llm_is_an_error(sllm_data, tiny_whisper_dir, tmp_path):
    repo = tmp_path / "repo"
    shutil.copytree(sllm_data, repo, ignore=shutil.ignore_patterns("models"))
    params_for(repo, tiny_whisper_dir, **{"model.family": "speechllm"})
    assert_one_line_error(asrtune(repo, "base", ok=False), "model.llm", "Qwen/Qwen3-0.6B")


def batch_of(repo: Path, model, n: int = 3):
    from asrtune.families import speechllm

    processor = speechllm.load_processor(repo / "models/base")
    items = examples(read_jsonl(repo / "data/mix/s1/val.jsonl"))[:n]
    audio = [sf.read(repo / e.audio, dtype="float32")[0] for e in items]
    make = speechllm.item_maker(model, processor, None)
    rows = [{**make(e, len(a)), "input_features": speechllm.features(processor, [a])[0]} for e, a in zip(items, audio)]
    return processor, items, audio, speechllm.collate(rows)


def test_lora_merge_equals_adapter_outputs(lora_run):
    from peft import PeftModel

    base = checkpoint.load(lora_run / "models/base", "speechllm").eval()
    adapter = PeftModel.from_pretrained(base, lora_run / "models/finetune/s1/adapter").eval()
    merged = checkpoint.load(lora_run / "models/finetune/s1", "speechllm").eval()
    plain = checkpoint.load(lora_run / "models/base", "speechllm").eval()
    _, _, _, batch = batch_of(lora_run, merged)
    with torch.no_grad():
        a, m, b = (net(**batch).logits for net in (adapter, merged, plain))
    assert torch.allclose(a, m, atol=1e-4)
    assert not torch.allclose(a, b, atol=1e-4)  # the adapter did change the outputs


def test_loss_on_learned_positions_only_equals_the_llms_own_loss(lora_run):
    """forward projects to the vocabulary only where a token is learned; the loss must not change."""
    model = checkpoint.load(lora_run / "models/finetune/s1", "speechllm").eval()
    _, _, _, batch = batch_of(lora_run, model)
    with torch.no_grad():
        ours = model(**batch)
        embeds = model.input_embeddings(batch["input_ids"], batch["audio_mask"], batch["encoder_lengths"], batch["input_features"])
        full = model.llm(inputs_embeds=embeds, attention_mask=batch["attention_mask"], labels=batch["labels"])
    assert ours.logits.shape[0] == int((batch["labels"] != -100).sum())
    assert torch.allclose(ours.loss, full.loss, rtol=1e-5)


def test_batched_generation_equals_one_clip_at_a_time(lora_run):
    """Left padding and the audio splice must not change what a clip decodes to."""
    from asrtune.families import speechllm

    model = checkpoint.load(lora_run / "models/finetune/s1", "speechllm").eval()
    processor, items, audio, _ = batch_of(lora_run, model)
    assert len({len(a) for a in audio}) > 1  # clips of different lengths, so rows are padded

    def first_scores(idx: list[int]) -> torch.Tensor:
        embeds, mask = speechllm.prompt_embeddings(model, processor, [items[i] for i in idx], [audio[i] for i in idx])
        with torch.no_grad():
            out = model.llm.generate(inputs_embeds=embeds, attention_mask=mask, max_new_tokens=2, do_sample=False,
                                     output_scores=True, return_dict_in_generate=True, pad_token_id=0)
        return torch.stack(out.scores, 1)

    together = first_scores(list(range(len(items))))
    for i in range(len(items)):
        assert torch.allclose(together[i], first_scores([i])[0], atol=1e-4), i


def test_encoder_cache_gives_the_same_training_as_recomputing(lora_run, tiny_whisper_dir, tiny_llm_dir, tmp_path):
    """lora_run trained on cached (float32) encoder outputs; the same run recomputing them every step."""
    repo = tmp_path / "repo"
    shutil.copytree(lora_run, repo, ignore=shutil.ignore_patterns(".cache", "finetune", "plots"))
    proc = finetune(repo, tiny_whisper_dir, tiny_llm_dir, **{"train.freeze_adaptor": False, "train.cache_encoder": False})
    assert "encoder outputs cached" not in proc.stdout
    results = {}
    for name, root in (("cached", lora_run), ("recomputed", repo)):
        summary = json.loads((root / "models/finetune/s1/summary.json").read_text())
        results[name] = (summary["best_val_loss"], part_state(checkpoint.load(root / "models/finetune/s1", "speechllm"), "adaptor"))
    assert results["cached"][0] == pytest.approx(results["recomputed"][0], rel=1e-5)
    assert all(torch.allclose(results["cached"][1][k], results["recomputed"][1][k], atol=1e-6) for k in results["cached"][1])


def test_gradient_accumulation_gives_the_gradients_of_one_big_batch(sllm_data):
    from conftest import assert_same_step, first_step

    assert_same_step(first_step(sllm_data, "speechllm", 16, 1, freeze=(True, False, False)),
                     first_step(sllm_data, "speechllm", 8, 2, freeze=(True, False, False)), "adaptor.", "llm.")


def test_bf16_trains_and_decodes_on_cpu(sllm_data, tiny_whisper_dir, tiny_llm_dir, tmp_path):
    """bf16 autocast through the finetune stage (cached encoder, adaptor, LoRA on the LLM: the audio
    splice and the learned-positions loss), then a bf16 decode."""
    from conftest import in_process

    from asrtune.stages import decode, finetune, merge

    repo = tmp_path / "repo"
    shutil.copytree(sllm_data, repo)
    overrides = {**speechllm_overrides(tiny_llm_dir), "model.precision": "bf16", "train.freeze_adaptor": False,
                 "train.stages": {"s1": {"init": "models/base", "epochs": 1, "learning_rate": 1e-2}}, "mix.stages": {"s1": {"general": 0.5}}}
    params_for(repo, tiny_whisper_dir, **overrides)
    assert "cpu, bf16" in in_process(repo, finetune, "s1")
    summary = json.loads((repo / "models/finetune/s1/summary.json").read_text())
    assert summary["steps"] > 0 and 0 < summary["best_val_loss"] < float("inf")
    in_process(repo, merge)
    assert "bfloat16" in in_process(repo, decode, "merged", "medical")
    assert (repo / "data/decode/merged/medical.tsv").read_text().count("\n") > 0


def test_gradient_checkpointing_gives_the_same_gradients(sllm_data):
    from conftest import assert_same_step, first_step

    plain = first_step(sllm_data, "speechllm", 8, 1, freeze=(True, False, False), n=8)
    checkpointed = first_step(sllm_data, "speechllm", 8, 1, freeze=(True, False, False), n=8, gradient_checkpointing=True)
    assert checkpointed[2] and not plain[2]  # the layers did recompute their activations
    assert_same_step(plain, checkpointed, "adaptor.", "llm.")
