"""The aligner family (Qwen3-ForcedAligner: transformers' Qwen3ASRForTokenClassification) on a tiny random
model: the family comes from the config's architecture, the reference times land as bins at the
<timestamp> slots and nowhere else, a frozen part stays bit-identical, LoRA merges exactly, decode returns
one monotonic (unit, start, end) per unit, and an utterance without timestamps is rejected with its reason."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from conftest import asrtune, in_process, params_for, write_audio

from asrtune.corpus.chatml import Example, examples, record
from asrtune.corpus.manifest import read_jsonl
from asrtune.corpus.timestamps import units
from asrtune.families import aligner, registry
from asrtune.weights import chain

SENTENCES = ["患者需要复查CT", "请把报告送到ICU。", "今天天气很好", "Hello world 你好", "血压正常", "明天再来复诊"]


def evenly(text: str, duration: float) -> list[list[float]]:
    """Reference times: the units one after another over the clip, 0.1 s in from either end."""
    n = len(units(text))
    step = (duration - 0.2) / n
    return [[round(0.1 + i * step, 3), round(0.1 + (i + 0.8) * step, 3)] for i in range(n)]


def write_corpus(repo: Path) -> None:
    """data/mix/s1/{train,val}.jsonl: tones with evenly spread reference times; one train record without any."""
    for split, n in (("train", 9), ("val", 4)):
        rows = []
        for i in range(n):
            text, seconds = SENTENCES[i % len(SENTENCES)], 1.0 + 0.25 * (i % 5)
            audio = f"audio/{split}{i}.wav"
            write_audio(repo / audio, seconds)
            times = None if (split, i) == ("train", n - 1) else evenly(text, seconds)
            rows.append(record(f"c-{split}{i}", audio, text, seconds, 0, "", "", timestamps=times))
        (repo / "data/mix/s1").mkdir(parents=True, exist_ok=True)
        (repo / f"data/mix/s1/{split}.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")


class P:  # stands in for params
    class model:  # noqa: N801
        language = "zh"


def settings(repo: Path, source: Path, **overrides) -> None:
    params_for(repo, source, **{"mix.stages": {"s1": {"general": 0.5}}, "train.cache_dtype": "float32",
                                "train.stages": {"s1": {"init": "models/base", "epochs": 2, "learning_rate": 1e-2}}, **overrides})


@pytest.fixture(scope="module")
def repo(tmp_path_factory, tiny_aligner_dir) -> Path:
    """models/base from the tiny aligner (the base stage), and a tiny corpus with timestamps."""
    from asrtune.stages import base

    repo = tmp_path_factory.mktemp("aligner") / "repo"
    repo.mkdir()
    settings(repo, tiny_aligner_dir)
    assert "aligner family" in in_process(repo, base)
    write_corpus(repo)
    return repo


@pytest.fixture(scope="module")
def tuned(repo, tiny_aligner_dir) -> tuple[Path, str]:
    """finetune s1 with the default flags: audio tower and projector frozen (the tower cached), LoRA on the LLM, score fully."""
    from asrtune.stages import finetune

    return repo, in_process(repo, finetune, "s1")


def clips(repo: Path, split: str = "val") -> tuple[list[Example], list[np.ndarray]]:
    items = examples(read_jsonl(repo / f"data/mix/s1/{split}.jsonl"))
    return items, [sf.read(repo / e.audio, dtype="float32")[0] for e in items]


def batch(repo: Path, model, processor, cached: bool = False) -> dict:
    items, audio = clips(repo)
    make = aligner.item_maker(model, processor, P)
    rows = [make(e, len(a)) for e, a in zip(items, audio)]
    if cached:
        rows = [{**r, "encoder_hidden": h} for r, h in zip(rows, aligner.encode(model, processor, audio))]
    else:
        rows = [{**r, "input_features": f} for r, f in zip(rows, aligner.features(processor, audio))]
    return aligner.collator(model, processor)(rows)


def test_the_family_comes_from_the_architecture(repo, tiny_aligner_dir, tiny_qwen3_asr_dir):
    assert registry.of(tiny_aligner_dir) == "aligner" and registry.of(tiny_qwen3_asr_dir) == "audiollm"  # both model_type qwen3_asr
    assert chain.family_of(repo / "models/base") == "aligner"
    model = chain.load(repo / "models/base")
    assert type(model).__name__ == "Qwen3ASRForTokenClassification" and model.dropout.p == 0.0
    from transformers import AutoModelForTokenClassification

    theirs = AutoModelForTokenClassification.from_pretrained(tiny_aligner_dir)
    assert all(torch.equal(v, theirs.state_dict()[k]) for k, v in model.state_dict().items())  # base kept it bit for bit


def test_slot_labels_land_exactly_at_the_timestamp_tokens(repo):
    model = chain.load(repo / "models/base")
    processor = aligner.load_processor(repo / "models/base")
    text, times = "患者需要复查CT，好。", [[0.1, 0.2], [0.2, 0.35], [0.4, 0.5], [0.5, 0.6], [0.6, 0.7], [0.7, 0.8], [0.8, 1.3], [1.5, 40.0]]
    item = aligner.item_maker(model, processor, P)(Example("k", "a.wav", text, timestamps=tuple(map(tuple, times))), 32000)
    ids, labels = item["input_ids"], item["labels"]
    slots = ids == model.config.timestamp_token_id
    assert int(slots.sum()) == 2 * len(units(text)) == 16
    assert torch.equal(labels != -100, slots)  # the slots, and nothing else (not the audio, not the units)
    assert labels[slots].tolist() == [1, 2, 2, 4, 5, 6, 6, 8, 8, 9, 9, 10, 10, 16, 19, 399]  # round(t / 80 ms), 40 s clipped to 399
    rendered = processor.tokenizer.decode(ids[~slots][-8:])  # the units, in order, between the slots
    assert rendered.replace("<|audio_end|>", "").endswith("复查CT好")


def test_seconds_to_bins_and_back_within_half_a_bin():
    t = np.random.default_rng(0).uniform(0, 31.9, 1000)
    back = np.array(aligner.to_seconds(aligner.to_bins(t, 80, 400), 80))
    assert np.abs(back - t).max() <= 0.040 + 1e-9
    assert aligner.to_bins([-0.5, 0.039, 0.041, 99.0], 80, 400) == [0, 0, 1, 399]


def test_our_loss_is_the_models_own_cross_entropy_and_the_cached_tower_changes_nothing(repo):
    """Without num_items_in_batch our loss is the model's own mean over the slots; with it, the sum over
    the count (what makes gradient accumulation exact). The frozen tower's cached outputs give the same loss."""
    model = chain.load(repo / "models/base").eval()
    processor = aligner.load_processor(repo / "models/base")
    raw = batch(repo, model, processor)
    slots = int((raw["labels"] != -100).sum())
    with torch.no_grad():
        ours, own = aligner.loss(model, model, raw), model(**raw).loss
        assert float(ours) == pytest.approx(float(own), rel=1e-5)
        assert float(aligner.loss(model, model, raw, num_items_in_batch=torch.tensor(3 * slots))) == pytest.approx(float(own) / 3, rel=1e-5)
        assert float(aligner.loss(model, model, batch(repo, model, processor, cached=True))) == pytest.approx(float(ours), rel=1e-5)


def test_gradient_accumulation_gives_the_gradients_of_one_big_batch(repo):
    """The model's own loss is a per-batch mean that ignores num_items_in_batch (the Trainer then skips its
    own division): ours sums over the slots and divides by the accumulated count."""
    from conftest import assert_same_step, first_step

    assert_same_step(first_step(repo, 8, 1, freeze=(True, False, False), n=8),
                     first_step(repo, 4, 2, freeze=(True, False, False), n=8), "model.multi_modal_projector.", "model.language_model.", "score.")


def test_finetune_rejects_an_utterance_without_timestamps_and_trains(tuned):
    repo, printed = tuned
    assert "1 utterances rejected before training" in printed
    assert "c-train8: no_timestamps: the aligner learns from reference timestamps" in printed
    assert "encoder outputs cached" in printed and "LoRA r=16" in printed
    summary = json.loads((repo / "models/finetune/s1/summary.json").read_text())
    assert list(summary["rejected"]) == ["c-train8"] and summary["steps"] > 0 and summary["best_val_loss"] < float("inf")


def test_frozen_parts_stay_bit_identical_while_lora_and_the_head_learn(tuned):
    repo, _ = tuned
    base, new = chain.load(repo / "models/base"), chain.load(repo / "models/finetune/s1")
    b, n = base.state_dict(), new.state_dict()
    for prefix in ("model.audio_tower.", "model.multi_modal_projector."):
        assert all(torch.equal(b[k], n[k]) for k in b if k.startswith(prefix)), prefix
    assert not torch.equal(b["score.weight"], n["score.weight"])
    q = "model.language_model.layers.0.self_attn.q_proj.weight"
    assert not torch.equal(b[q], n[q])
    adapter = json.loads((repo / "models/finetune/s1/adapter/adapter_config.json").read_text())
    assert adapter["modules_to_save"] == ["score"]
    from safetensors.torch import load_file

    lora = [k for k in load_file(repo / "models/finetune/s1/adapter/adapter_model.safetensors") if "lora_" in k]
    assert lora and all(".language_model.layers." in k for k in lora)


def test_lora_merge_gives_the_adapters_logits(tuned):
    from peft import PeftModel

    repo, _ = tuned
    adapter = PeftModel.from_pretrained(chain.load(repo / "models/base"), repo / "models/finetune/s1/adapter").eval()
    merged = chain.load(repo / "models/finetune/s1").eval()
    inputs = batch(repo, merged, aligner.load_processor(repo / "models/base"))
    inputs.pop("labels")
    with torch.no_grad():
        a, m, b = (net(**inputs).logits for net in (adapter, merged, chain.load(repo / "models/base").eval()))
    assert torch.allclose(a, m, atol=1e-4) and not torch.allclose(a, b, atol=1e-3)


def test_decode_gives_one_monotonic_time_pair_per_unit(tuned):
    """Through merge and decode's own transcriber: the reference transcript, and one (unit, start, end) per
    unit, monotonic after decode_forced_alignment's repair; a clip aligns the same in a batch and alone."""
    from asrtune import params
    from asrtune.stages import decode, merge

    repo, _ = tuned
    in_process(repo, merge)
    assert registry.of(repo / "models/merged") == "aligner"
    items, audio = clips(repo)
    transcribe, runtime = decode.transcriber(params.load(repo / "params.yaml"), repo / "models/merged", repo / "unused")
    out = transcribe(items, audio)
    for e, (text, times) in zip(items, out):
        assert text == e.text and [u for u, _, _ in times] == units(e.text)
        flat = [t for _, s, end in times for t in (s, end)]
        assert flat == sorted(flat) and all(0 <= t <= 399 * 0.08 for t in flat)
    assert transcribe(items[1:2], audio[1:2])[0] == out[1]
    from transformers import AutoModelForTokenClassification, AutoProcessor

    plain = AutoModelForTokenClassification.from_pretrained(repo / "models/merged")  # transformers alone
    assert type(plain).__name__ == "Qwen3ASRForTokenClassification"
    inputs, words = AutoProcessor.from_pretrained(repo / "models/merged").prepare_forced_aligner_inputs(audio[:1], items[0].text)
    assert int((inputs["input_ids"] == plain.config.timestamp_token_id).sum()) == 2 * len(words[0])


def test_pseudo_labels_time_what_has_no_timestamps_and_jsonl_marks_them(repo, tmp_path, tiny_whisper_dir):
    """align.pseudo_labels: the base aligner times each utterance without timestamps (one pair per unit,
    inside the clip, the same bytes again), jsonl takes them marked as pseudo; off: an empty file and
    no timestamps; a base model that is no aligner: a one-line error."""
    from asrtune.corpus.timestamps import problem
    from asrtune.errors import UserError
    from asrtune.stages import ingest, jsonl, pseudo

    work = tmp_path / "work"
    (work / "models").mkdir(parents=True)
    (work / "models/base").symlink_to(repo / "models/base")
    texts = {"a": "患者需要复查CT", "b": "Hello world 你好", "c": "……"}  # c: nothing the aligner times
    for i, (name, text) in enumerate(texts.items()):
        write_audio(work / f"corpus/{name}.wav", 1.0 + 0.5 * i)
        (work / f"corpus/{name}.txt").write_text(text, encoding="utf-8")
    corpora = {"c": {"role": "domain", "source": str(work / "corpus")}}
    settings(work, repo / "models/base", **{"data.corpora": corpora, "align.pseudo_labels": True})
    in_process(work, ingest, "c")
    printed = in_process(work, pseudo, "c")
    assert "2 of 3 utterances without timestamps labelled" in printed and "1 with no unit to time" in printed
    labels = (work / "data/pseudo/c.jsonl").read_bytes()
    durations = {r["id"]: r["duration"] for r in read_jsonl(work / "data/ingest/c/manifest.jsonl")}
    for r in read_jsonl(work / "data/pseudo/c.jsonl"):
        assert problem(r["timestamps"], texts[r["id"]], durations[r["id"]]) is None
    in_process(work, pseudo, "c")
    assert (work / "data/pseudo/c.jsonl").read_bytes() == labels  # same model and audio, same bytes
    assert "2 with the base aligner's pseudo-labels" in in_process(work, jsonl, "c")
    records = {r["key"]: r for r in read_jsonl(work / "data/jsonl/c.jsonl")}
    assert records["c-a"]["pseudo_timestamps"] and len(records["c-a"]["timestamps"]) == len(units(texts["a"]))
    assert "timestamps" not in records["c-c"] and "pseudo_timestamps" not in records["c-c"]

    settings(work, repo / "models/base", **{"data.corpora": corpora, "align.pseudo_labels": False})
    in_process(work, pseudo, "c")
    assert (work / "data/pseudo/c.jsonl").read_bytes() == b""
    in_process(work, jsonl, "c")
    assert not any("timestamps" in r for r in read_jsonl(work / "data/jsonl/c.jsonl"))

    (work / "models/base").unlink()
    (work / "models/base").symlink_to(tiny_whisper_dir)
    settings(work, tiny_whisper_dir, **{"data.corpora": corpora, "align.pseudo_labels": True})
    with pytest.raises(UserError, match="models/base is a whisper model; pseudo-labels come from a Qwen3-ForcedAligner"):
        in_process(work, pseudo, "c")


@pytest.mark.slow  # two torchrun processes: `pytest -m slow` (.ci/run's second job)
def test_two_processes_train_the_aligner_as_one_with_the_same_global_batch(repo, tmp_path, tiny_aligner_dir):
    """train.devices=2 on a CPU (two gloo processes under torchrun, batch 2 each) gives the LoRA weights and
    the score head that one process gives with batch 4: the aligner's loss divides by the slots of the
    whole global batch, and rank 0 alone writes."""
    from safetensors.torch import load_file

    from asrtune.stages import finetune

    common = {"train.lora.dropout": 0.0}
    runs = {}
    for name, batch in (("one", {"train.batch_size": 4}), ("two", {"train.batch_size": 2, "train.devices": 2})):
        work = runs[name] = tmp_path / name
        shutil.copytree(repo, work, ignore=shutil.ignore_patterns("finetune", "merged", "plots", ".cache"))
        settings(work, tiny_aligner_dir, **common, **batch)
    in_process(runs["one"], finetune, "s1")
    out = asrtune(runs["two"], "finetune", "s1").stdout
    assert "2 processes under torchrun" in out and out.count("best val loss") == 1
    a, b = (load_file(runs[n] / "models/finetune/s1/adapter/adapter_model.safetensors") for n in ("one", "two"))
    assert a.keys() == b.keys() and any("score" in k for k in a)  # the head is saved beside the adapter
    for k in a:  # tolerance: the two processes sum the same gradients in another order
        assert torch.allclose(a[k], b[k], rtol=1e-4, atol=1e-6), k
