"""The audiollm family (transformers' FunAsrNanoForConditionalGeneration and
Qwen3ASRForConditionalGeneration) on tiny random configs with the real feature extractors: base
keeps the checkpoint bit for bit and picks the family from its config, training sees exactly the
prompt decode sends and learns the transcript and <|im_end|> only (same loss on left and right
padding), each freeze flag freezes what it names, LoRA stays in the LLM and merges exactly, the
audio-tower cache changes nothing, batched decoding equals one clip at a time, and models/merged
loads with transformers alone."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import soundfile as sf
import torch
from conftest import asrtune, in_process, params_for

from asrtune.corpus.chatml import examples
from asrtune.corpus.manifest import read_jsonl
from asrtune.families import audiollm
from asrtune.weights import chain

PARTS = ("encoder", "adaptor", "llm")
ARCHS = ("fun_asr_nano", "qwen3_asr")


@pytest.fixture(scope="module", params=ARCHS)
def arch_data(request, data_repo, tiny_fun_asr_dir, tiny_qwen3_asr_dir, tmp_path_factory) -> tuple[Path, Path]:
    """(the tiny data repo with models/base rebuilt from a tiny audio LLM, that model's source dir)."""
    source = tiny_fun_asr_dir if request.param == "fun_asr_nano" else tiny_qwen3_asr_dir
    repo = tmp_path_factory.mktemp(request.param) / "repo"
    shutil.copytree(data_repo, repo, ignore=shutil.ignore_patterns(".cache", "finetune", "plots"))
    params_for(repo, source)
    assert "audiollm family" in asrtune(repo, "base").stdout
    return repo, source


def finetune(repo: Path, source: Path, **overrides) -> str:
    from asrtune.stages import finetune as finetune_stage

    params_for(repo, source, **{"train.stages.s1.learning_rate": 1e-2, **overrides})
    return in_process(repo, finetune_stage, "s1")


@pytest.fixture(scope="module")
def lora_run(arch_data, tmp_path_factory) -> Path:
    """Frozen audio tower (cached, float32), adaptor trained fully, LLM through LoRA."""
    data, source = arch_data
    repo = tmp_path_factory.mktemp("lora") / "repo"
    shutil.copytree(data, repo)
    assert "encoder outputs cached" in finetune(repo, source, **{"train.freeze_adaptor": False, "train.cache_dtype": "float32"})
    return repo


def part_state(model, part: str) -> dict[str, torch.Tensor]:
    return {f"{i}.{k}": v.clone() for i, m in enumerate(audiollm.parts(model)[part]) for k, v in m.state_dict().items()}


def same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def batch_of(repo: Path, model, n: int = 3, side: str = "right", cached: bool = False):
    processor = audiollm.load_processor(repo / "models/base")
    items = examples(read_jsonl(repo / "data/mix/s1/val.jsonl"))[:n]
    audio = [sf.read(repo / e.audio, dtype="float32")[0] for e in items]
    make = audiollm.item_maker(model, processor, SimpleParams())
    if cached:
        hidden = audiollm.encode(model, processor, audio)
        rows = [{**make(e, len(a)), "encoder_hidden": h} for e, a, h in zip(items, audio, hidden)]
    else:
        rows = [{**make(e, len(a)), "input_features": f} for e, a, f in zip(items, audio, audiollm.features(processor, audio))]
    return processor, items, audio, audiollm.collator(model, processor, side)(rows)


class SimpleParams:
    class model:  # noqa: N801 - stands in for params.model
        language = "zh"


def test_base_keeps_the_checkpoint_and_the_family_comes_from_its_config(arch_data):
    from transformers import AutoModelForSpeechSeq2Seq

    repo, source = arch_data
    ours, theirs = chain.load(repo / "models/base"), AutoModelForSpeechSeq2Seq.from_pretrained(source)
    assert same(ours.state_dict(), theirs.state_dict())
    assert ours.lm_head.weight is ours.model.language_model.embed_tokens.weight  # still tied
    assert chain.family_of(repo / "models/base") == "audiollm"
    assert (repo / "models/base/tokenizer.json").is_file() and (repo / "models/base/chat_template.jinja").is_file()


def test_training_sees_the_prompt_decode_sends_and_learns_only_the_transcript(arch_data):
    """The prompt ids come from the processor's own transcription request (the checkpoint's chat
    template, its audio placeholder expanded by the processor); labels cover `text<|im_end|>` only."""
    repo, _ = arch_data
    model = chain.load(repo / "models/base")
    processor = audiollm.load_processor(repo / "models/base")
    tok = processor.tokenizer
    audio = sf.read(repo / examples(read_jsonl(repo / "data/mix/s1/val.jsonl"))[0].audio, dtype="float32")[0]
    request = processor.apply_transcription_request([audio], language="zh")  # what a user of transformers decodes with
    from asrtune.corpus.chatml import Example

    item = audiollm.item_maker(model, processor, SimpleParams())(Example("k", "a.wav", "患者需要复查CT", "", ""), len(audio))
    ids, labels = item["input_ids"], item["labels"]
    head = int((labels == -100).sum())
    assert ids[:head].tolist() == request["input_ids"][0].tolist()
    learned = labels != -100
    assert tok.decode(ids[learned]) == "患者需要复查CT<|im_end|>" and torch.equal(labels[learned], ids[learned])
    assert learned.nonzero().min() == head  # nothing of the prompt is learned: not the system turn, not the assistant header
    rendered = tok.decode(ids[:head])
    if model.config.model_type == "fun_asr_nano":
        assert rendered.startswith("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n语音转写成中文：<|object_ref_start|>")
        assert rendered.endswith("<|object_ref_start|><|im_end|>\n<|im_start|>assistant\n")
    else:
        assert rendered.endswith("<|audio_end|><|im_end|>\n<|im_start|>assistant\nlanguage Chinese<asr_text>")  # forced language
    n_audio = int((ids == model.config.audio_token_id).sum())
    assert n_audio == int(request["input_features_mask"].sum()) if model.config.model_type == "fun_asr_nano" else n_audio > 0


class NoLanguage:
    class model:  # noqa: N801 - stands in for params.model
        language = None


def test_qwen3_asr_with_no_language_forced_learns_to_name_it(tiny_qwen3_asr_dir):
    """model.language null: the prompt ends at `assistant\\n` and Qwen3-ASR writes `language X<asr_text>`
    itself, so training learns that header before the transcript (else fine-tuning teaches the model to
    stop naming the language), tokenized as the processor forces it; exactly the prompt is masked; and
    decoding strips the header again."""
    from asrtune.corpus.chatml import Example
    from asrtune.errors import UserError

    processor = audiollm.load_processor(tiny_qwen3_asr_dir)
    tok, n = processor.tokenizer, 16000
    free, forced = audiollm.Prompt(processor, None).ids(n), audiollm.Prompt(processor, "zh").ids(n)
    assert tok.decode(free).endswith("<|im_start|>assistant\n")
    make = audiollm.item_maker(None, processor, NoLanguage())
    for text, language in (("患者需要复查CT", "Chinese"), ("take the CT scan", "English")):
        ids, labels = make(Example("k", "a.wav", text, "", ""), n).values()
        learned = labels != -100
        assert ids[~learned].tolist() == list(free) and learned.nonzero().min() == len(free)  # the prompt, all of it and only it
        assert torch.equal(labels[learned], ids[learned])
        assert tok.decode(ids[learned]) == f"language {language}<asr_text>{text}<|im_end|>"
        if language == "Chinese":  # the header's ids are those of the forced prompt's tail
            assert ids[: len(forced)].tolist() == list(forced)
        assert audiollm._parse(processor, ids[learned][None]) == [text]  # what decoding makes of it
    assert audiollm.problem(Example("k", "a.wav", "123", "", ""), processor, NoLanguage()) == audiollm.NO_LANGUAGE
    assert audiollm.problem(Example("k", "a.wav", "123", "", ""), processor, SimpleParams()) is None  # forced: no header to learn
    with pytest.raises(UserError, match="no_language"):
        make(Example("k", "a.wav", "こんにちは", "", ""), n)


def test_fun_asr_nano_with_no_language_learns_the_bare_transcript(tiny_fun_asr_dir):
    """Fun-ASR-Nano writes no language header: null only changes its prompt (语音转写：)."""
    from asrtune.corpus.chatml import Example

    processor = audiollm.load_processor(tiny_fun_asr_dir)
    ids, labels = audiollm.item_maker(None, processor, NoLanguage())(Example("k", "a.wav", "123", "", ""), 16000).values()
    assert processor.tokenizer.decode(ids[labels != -100]) == "123<|im_end|>"
    assert audiollm.problem(Example("k", "a.wav", "123", "", ""), processor, NoLanguage()) is None


@pytest.mark.parametrize(("text", "language"), [
    ("患者需要复查CT", "Chinese"), ("β受体阻滞剂", "Chinese"), ("ＣＴ检查", "Chinese"), ("Hello, world!", "English"),
    ("café", "English"), ("123", None), ("", None), ("こんにちは世界", None), ("日本語です", None), ("안녕하세요", None), ("Привет", None)])
def test_the_header_language_comes_from_the_transcripts_script(text, language):
    assert audiollm.header_language(text) == language


def test_left_and_right_padding_give_the_same_loss_as_the_models_own(arch_data):
    """Masking is by position (labels) and positions are counted over real tokens, so the padding
    side changes nothing; and our loss (vocabulary projection at learned positions only) equals
    the model's own cross-entropy on the same labels (the Qwen3-ASR SFT script's left-padding bug
    and Fun-ASR's context header are what this guards against)."""
    repo, _ = arch_data
    model = chain.load(repo / "models/base").eval()
    _, _, _, right = batch_of(repo, model, side="right")
    _, _, _, left = batch_of(repo, model, side="left")
    assert not torch.equal(right["attention_mask"], left["attention_mask"])  # rows of different lengths: padded
    with torch.no_grad():
        ours_right = audiollm.loss(model, model, right)
        ours_left = audiollm.loss(model, model, left)
        own = model(**{k: v for k, v in right.items()}).loss  # transformers' own shifted cross-entropy, full logits
    assert ours_right == pytest.approx(float(ours_left), rel=1e-5)
    assert ours_right == pytest.approx(float(own), rel=1e-5)


def test_a_clips_audio_embeddings_do_not_depend_on_its_batch(arch_data):
    """Padding must not leak into a shorter clip's audio embeddings. transformers 5.23 leaves Fun-ASR-Nano's
    adaptor config without an attention implementation and drops the adaptor's mask (0.0185 off here);
    family.load_plain sets it."""
    repo, _ = arch_data
    model = chain.load(repo / "models/base").eval()
    processor = audiollm.load_processor(repo / "models/base")
    arch = audiollm.arch_of(model)
    rng = torch.Generator().manual_seed(0)
    audio = [(torch.randn(n, generator=rng) * 0.1).numpy() for n in (16000, 40000)]

    def embeddings(clips):
        feats, mask = audiollm._pad_time(audiollm.features(processor, clips), arch.time_axis, arch.time_multiple)
        with torch.no_grad():
            return model.model.get_audio_features(feats, mask).pooler_output

    alone, both = embeddings(audio[:1]), embeddings(audio)
    assert torch.allclose(alone, both[: len(alone)], atol=1e-6)


def test_audio_tower_cache_gives_the_same_loss_as_recomputing(arch_data):
    repo, _ = arch_data
    model = chain.load(repo / "models/base").eval()
    _, _, _, raw = batch_of(repo, model)
    _, _, _, cached = batch_of(repo, model, cached=True)
    assert "input_features" not in cached and "encoder_hidden" in cached
    with torch.no_grad():
        assert audiollm.loss(model, model, cached) == pytest.approx(float(audiollm.loss(model, model, raw)), rel=1e-5)
    assert not hasattr(model.model.audio_tower, "forward") or "forward" not in vars(model.model.audio_tower)  # restored


def test_frozen_tower_is_bit_identical_while_adaptor_and_lora_learn(lora_run):
    base, tuned = chain.load(lora_run / "models/base"), chain.load(lora_run / "models/finetune/s1")
    assert same(part_state(base, "encoder"), part_state(tuned, "encoder"))
    assert not same(part_state(base, "adaptor"), part_state(tuned, "adaptor"))
    q = "model.language_model.layers.0.self_attn.q_proj.weight"
    assert not torch.equal(base.state_dict()[q], tuned.state_dict()[q])
    k_norm = "model.language_model.layers.0.self_attn.k_norm.weight"  # not a LoRA target: untouched
    assert torch.equal(base.state_dict()[k_norm], tuned.state_dict()[k_norm])
    meta = json.loads((lora_run / "models/finetune/s1/asrtune.json").read_text())
    assert meta == {"family": "audiollm", "init": "../../base", "kind": "lora"}
    adapter = json.loads((lora_run / "models/finetune/s1/adapter/adapter_config.json").read_text())
    from safetensors.torch import load_file

    lora_keys = [k for k in load_file(lora_run / "models/finetune/s1/adapter/adapter_model.safetensors") if "lora_" in k]
    assert lora_keys and all(".language_model.layers." in k for k in lora_keys)  # never in the audio tower's q/k/v
    assert adapter["modules_to_save"] == ["multi_modal_projector"]


@pytest.mark.parametrize("frozen", PARTS)
def test_each_freeze_flag_freezes_what_it_names(arch_data, tmp_path, frozen):
    data, source = arch_data
    repo = tmp_path / "repo"
    shutil.copytree(data, repo)
    flags = {f"train.freeze_{part}": part == frozen for part in PARTS}
    finetune(repo, source, **flags, **{"train.lora.r": 0})  # r=0: the unfrozen parts train fully
    base, tuned = chain.load(repo / "models/base"), chain.load(repo / "models/finetune/s1")
    for part in PARTS:
        assert same(part_state(base, part), part_state(tuned, part)) == (part == frozen), part
    from safetensors.torch import load_file

    saved = set(load_file(repo / "models/finetune/s1/trained.safetensors"))  # only what trained, never the frozen part
    prefix = {"encoder": "model.audio_tower.", "adaptor": "model.multi_modal_projector.", "llm": "model.language_model."}[frozen]
    assert saved and not any(name.startswith(prefix) for name in saved)


def test_frozen_parts_stay_in_eval_mode(arch_data):
    model = chain.load(arch_data[0] / "models/base")
    audiollm.freeze(model, True, False, True)
    model.train()
    assert not model.model.audio_tower.training and not model.model.language_model.training
    assert model.model.multi_modal_projector.training


def test_lora_merge_equals_adapter_outputs(lora_run):
    from peft import PeftModel

    adapter = PeftModel.from_pretrained(chain.load(lora_run / "models/base"), lora_run / "models/finetune/s1/adapter").eval()
    merged = chain.load(lora_run / "models/finetune/s1").eval()
    plain = chain.load(lora_run / "models/base").eval()
    _, _, _, batch = batch_of(lora_run, merged)
    batch.pop("labels")
    with torch.no_grad():
        a, m, b = (net(**batch).logits for net in (adapter, merged, plain))
    assert torch.allclose(a, m, atol=1e-4)
    assert not torch.allclose(a, b, atol=1e-4)  # the adapter did change the outputs


def test_cached_and_recomputed_tower_train_the_same(lora_run, arch_data, tmp_path):
    """lora_run trained on cached (float32) audio-tower outputs; the same run recomputing them every step."""
    repo = tmp_path / "repo"
    shutil.copytree(lora_run, repo, ignore=shutil.ignore_patterns(".cache", "finetune", "plots"))
    assert "encoder outputs cached" not in finetune(repo, arch_data[1], **{"train.freeze_adaptor": False, "train.cache_encoder": False})
    results = {}
    for name, root in (("cached", lora_run), ("recomputed", repo)):
        summary = json.loads((root / "models/finetune/s1/summary.json").read_text())
        results[name] = (summary["best_val_loss"], part_state(chain.load(root / "models/finetune/s1"), "adaptor"))
    assert results["cached"][0] == pytest.approx(results["recomputed"][0], rel=1e-5)
    worst = max(float((results["cached"][1][k] - results["recomputed"][1][k]).abs().max()) for k in results["cached"][1])
    # the tower's outputs differ by ~2e-7 between batch compositions (the cache is filled 16 clips at a
    # time, training recomputes 4), which Adam's per-weight normalization lifts to a few 1e-6 in 3 steps
    assert worst < 1e-5, worst


def test_batched_generation_equals_one_clip_at_a_time(lora_run):
    """Left padding, batched features and the audio splice must not change what a clip decodes to:
    the scores of the first generated tokens of each clip, batched and alone."""
    model = chain.load(lora_run / "models/finetune/s1").eval()
    processor, items, audio, _ = batch_of(lora_run, model)
    assert len({len(a) for a in audio}) > 1

    def scores(clips) -> torch.Tensor:
        inputs, prompt = audiollm.generation_inputs(model, processor, clips, "zh")
        with torch.no_grad():
            out = model.generate(**inputs, max_new_tokens=3, min_new_tokens=3, do_sample=False, output_scores=True,
                                 return_dict_in_generate=True, pad_token_id=prompt.pad)
        return torch.stack(out.scores, 1)

    together = scores(audio)
    for i, a in enumerate(audio):
        assert torch.allclose(together[i], scores([a])[0], atol=1e-4), i


def test_merged_model_loads_with_transformers_alone(lora_run, tmp_path):
    """No asrtune, no peft: AutoModelForSpeechSeq2Seq and AutoProcessor read models/merged, and it
    transcribes with the processor's own transcription request."""
    from asrtune.stages import merge

    params_for(lora_run, Path("unused"), **{"mix.stages": {"s1": {"general": 0.5}},
                                            "train.stages": {"s1": {"init": "models/base", "epochs": 1, "learning_rate": 1e-2}}})
    in_process(lora_run, merge)
    code = ("import sys, numpy as np\nfrom transformers import AutoModelForSpeechSeq2Seq, AutoProcessor\n"
            "m = AutoModelForSpeechSeq2Seq.from_pretrained(sys.argv[1]); p = AutoProcessor.from_pretrained(sys.argv[1])\n"
            "x = p.apply_transcription_request([np.zeros(16000, np.float32)], language='zh')\n"
            "print(type(m).__name__, m.generate(**x, max_new_tokens=3).shape[0])\n"
            "assert 'asrtune' not in sys.modules and 'peft' not in sys.modules\n")
    out = subprocess.run([sys.executable, "-c", code, str(lora_run / "models/merged")], capture_output=True, text=True, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split()[-1] == "1" and "ForConditionalGeneration" in out.stdout
    tuned = chain.load(lora_run / "models/finetune/s1")
    from transformers import AutoModelForSpeechSeq2Seq

    assert same(AutoModelForSpeechSeq2Seq.from_pretrained(lora_run / "models/merged").state_dict(), tuned.state_dict())


def test_hotwords_become_the_prompts_context(arch_data, tmp_path):
    from asrtune.errors import UserError

    processor = audiollm.load_processor(arch_data[0] / "models/base")
    terms = tmp_path / "terms.txt"
    terms.write_text("# comment\n阿莫西林\n\n胸部CT\n", encoding="utf-8")
    words = audiollm.read_hotwords(str(terms))
    assert words == ["阿莫西林", "胸部CT"]
    plain, biased = audiollm.Prompt(processor, "zh"), audiollm.Prompt(processor, "zh", words)
    assert "阿莫西林" in biased.text and "阿莫西林" not in plain.text
    if type(processor).__name__.startswith("FunAsrNano"):
        assert "热词列表：[阿莫西林, 胸部CT]" in biased.text
    with pytest.raises(UserError, match="not found"):
        audiollm.read_hotwords(str(tmp_path / "missing.txt"))


def test_lora_targets_that_the_llm_lacks_are_named(arch_data, tmp_path):
    from asrtune.errors import UserError

    data, source = arch_data
    repo = tmp_path / "repo"
    shutil.copytree(data, repo)
    with pytest.raises(UserError, match="'fc1' names no linear layer .*q_proj"):  # fc1 is in the audio tower only
        finetune(repo, source, **{"train.lora.target_modules": ["q_proj", "fc1"]})


def test_gradient_accumulation_gives_the_gradients_of_one_big_batch(arch_data):
    if "qwen" in arch_data[1].name:
        pytest.skip("the Trainer path this checks is the same for both architectures; Fun-ASR-Nano runs it")
    from conftest import assert_same_step, first_step

    repo = arch_data[0]
    assert_same_step(first_step(repo, 16, 1, freeze=(True, False, False)),
                     first_step(repo, 8, 2, freeze=(True, False, False)), "model.multi_modal_projector.", "model.language_model.")


def test_gradient_checkpointing_gives_the_same_gradients(arch_data):
    if "qwen" in arch_data[1].name:
        pytest.skip("the Trainer path this checks is the same for both architectures; Fun-ASR-Nano runs it")
    from conftest import assert_same_step, first_step

    plain = first_step(arch_data[0], 8, 1, freeze=(True, False, False), n=8)
    checkpointed = first_step(arch_data[0], 8, 1, freeze=(True, False, False), n=8, gradient_checkpointing=True)
    assert checkpointed[2] and not plain[2]
    assert_same_step(plain, checkpointed, "model.multi_modal_projector.", "model.language_model.")


@pytest.mark.slow  # two torchrun processes: `pytest -m slow` (.ci/run's second job)
def test_two_processes_train_as_one_with_the_same_global_batch(arch_data, tmp_path):
    """train.devices=2 on a CPU (two gloo processes under torchrun, batch 3 each; adaptor fully, LoRA on the
    LLM) gives the weights that one process gives with batch 6: the loss divides by the learned tokens of
    the whole global batch."""
    if "qwen" in arch_data[1].name:
        pytest.skip("the DDP path this checks is the same for both architectures; Fun-ASR-Nano runs it")
    from safetensors.torch import load_file

    data, source = arch_data
    runs = {}
    for name, batch in (("one", {"train.batch_size": 6}), ("two", {"train.batch_size": 3, "train.devices": 2})):
        repo = runs[name] = tmp_path / name
        shutil.copytree(data, repo, ignore=shutil.ignore_patterns(".cache", "finetune", "plots"))
        params_for(repo, source, **{"train.stages.s1.learning_rate": 1e-2, "train.freeze_adaptor": False, "train.lora.dropout": 0.0,
                                    **batch})
    finetune(runs["one"], source, **{"train.freeze_adaptor": False, "train.lora.dropout": 0.0, "train.batch_size": 6})
    out = asrtune(runs["two"], "finetune", "s1").stdout
    assert "2 processes under torchrun" in out and out.count("best val loss") == 1
    a, b = (load_file(runs[n] / "models/finetune/s1/adapter/adapter_model.safetensors") for n in ("one", "two"))
    assert a.keys() == b.keys() and any("multi_modal_projector" in k for k in a)  # the adaptor beside the LoRA weights
    # tolerance: the two processes sum the same gradients in another order. Not the adaptor's attention key
    # biases: a key bias shifts all of a query's scores alike, which softmax cancels, so their gradient is
    # rounding noise (1e-6 after Adam here), different in every summation order
    compared = [k for k in a if not k.endswith("k_proj.bias")]
    assert len(compared) > 50
    for k in compared:
        assert torch.allclose(a[k], b[k], rtol=1e-4, atol=1e-6), k


def test_bf16_trains_and_decodes_on_cpu(arch_data, tmp_path):
    """bf16 autocast through the finetune stage (cached tower, adaptor, LoRA: the splice and the
    learned-positions loss), then a bf16 decode."""
    if "qwen" in arch_data[1].name:
        pytest.skip("the Trainer path this checks is the same for both architectures; Fun-ASR-Nano runs it")
    from asrtune.stages import decode, finetune as finetune_stage, merge

    data, source = arch_data
    repo = tmp_path / "repo"
    shutil.copytree(data, repo)
    params_for(repo, source, **{"model.precision": "bf16", "train.freeze_adaptor": False, "mix.stages": {"s1": {"general": 0.5}},
                                "train.stages": {"s1": {"init": "models/base", "epochs": 1, "learning_rate": 1e-2}}})
    assert "cpu, bf16" in in_process(repo, finetune_stage, "s1")
    summary = json.loads((repo / "models/finetune/s1/summary.json").read_text())
    assert summary["steps"] > 0 and 0 < summary["best_val_loss"] < float("inf")
    in_process(repo, merge)
    assert "bfloat16" in in_process(repo, decode, "merged", "medical")
    assert (repo / "data/decode/merged/medical.tsv").read_text().count("\n") > 0


def test_the_family_table_names_every_architecture_the_families_know():
    from asrtune.families.registry import AUDIOLLM_TYPES

    assert set(audiollm.ARCHS) == set(AUDIOLLM_TYPES)  # registry.of() and the audiollm family agree
