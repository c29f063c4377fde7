"""finetune/merge on a tiny random Whisper: freeze flags freeze, LoRA merges exactly, the encoder
cache changes nothing, a killed run resumes."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from conftest import ASRTUNE, asrtune, assert_one_line_error, params_for

from asrtune.weights import chain


@pytest.fixture
def repo(data_repo, tmp_path) -> Path:
    """A private copy of the tiny data repo (base model + mixes)."""
    dst = tmp_path / "repo"
    shutil.copytree(data_repo, dst, ignore=shutil.ignore_patterns(".cache", "finetune", "plots"))
    return dst


def finetune(repo: Path, tiny_whisper_dir: Path, stage: str = "s1", **overrides) -> SimpleNamespace:
    """The finetune stage in this process (the subprocess would add seconds of imports per run)."""
    from conftest import in_process

    from asrtune.stages import finetune as finetune_stage

    params_for(repo, tiny_whisper_dir, **overrides)
    return SimpleNamespace(stdout=in_process(repo, finetune_stage, stage))


def state(model, prefix: str) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items() if k.startswith(prefix)}


def same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.fixture(scope="module")
def lora_run(data_repo, tiny_whisper_dir, tmp_path_factory):
    """The default flags (frozen encoder, LoRA decoder), with freeze_adaptor=false to see the note."""
    repo = tmp_path_factory.mktemp("lora") / "repo"
    shutil.copytree(data_repo, repo, ignore=shutil.ignore_patterns(".cache", "finetune", "plots"))
    proc = finetune(repo, tiny_whisper_dir, **{"train.stages.s1.learning_rate": 1e-2, "train.freeze_adaptor": False})
    return repo, proc


def test_frozen_encoder_is_bit_identical_and_decoder_learns(lora_run):
    repo, proc = lora_run
    assert proc.stdout.count("has no adaptor") == 1  # whisper says so once, and goes on
    base = chain.load(repo / "models/base")
    tuned = chain.load(repo / "models/finetune/s1")
    assert same(state(base, "model.encoder."), state(tuned, "model.encoder."))
    q = "model.decoder.layers.0.self_attn.q_proj"
    assert not same(state(base, q), state(tuned, q))
    assert json.loads((repo / "models/finetune/s1/asrtune.json").read_text()) == {"family": "whisper", "init": "../../base", "kind": "lora"}
    curves = repo / "plots/finetune/s1/plots/metrics"
    assert (curves / "loss.tsv").is_file() and (curves / "eval/loss.tsv").is_file() and (curves / "learning_rate.tsv").is_file()


@pytest.mark.parametrize("flags", [{"train.freeze_encoder": False, "train.freeze_llm": True},
                                   # a curriculum stage's own flags, against the global ones
                                   {"train.stages.s1.freeze_encoder": False, "train.stages.s1.freeze_llm": True}])
def test_frozen_decoder_is_bit_identical_and_encoder_learns(repo, tiny_whisper_dir, flags):
    finetune(repo, tiny_whisper_dir, **flags, **{"train.stages.s1.learning_rate": 1e-2})
    base = chain.load(repo / "models/base")
    tuned = chain.load(repo / "models/finetune/s1")
    assert same(state(base, "model.decoder."), state(tuned, "model.decoder."))
    assert same(state(base, "proj_out."), state(tuned, "proj_out."))
    assert not same(state(base, "model.encoder."), state(tuned, "model.encoder."))
    assert json.loads((repo / "models/finetune/s1/asrtune.json").read_text())["kind"] == "partial"


def test_unfrozen_encoder_trains_fully_beside_lora(repo, tiny_whisper_dir):
    finetune(repo, tiny_whisper_dir, **{"train.freeze_encoder": False, "train.stages.s1.learning_rate": 1e-2})
    base = chain.load(repo / "models/base")
    tuned = chain.load(repo / "models/finetune/s1")
    assert not same(state(base, "model.encoder.layers.0.fc1"), state(tuned, "model.encoder.layers.0.fc1"))
    assert not same(state(base, "model.decoder.layers.0.self_attn.q_proj"), state(tuned, "model.decoder.layers.0.self_attn.q_proj"))
    k = "model.decoder.layers.0.encoder_attn.k_proj"  # not a LoRA target
    assert same(state(base, k), state(tuned, k))
    positions = "model.encoder.embed_positions."  # sinusoidal, fixed: peft's modules_to_save must not train it
    assert same(state(base, positions), state(tuned, positions))


def test_everything_frozen_fails_before_loading_anything(repo, tiny_whisper_dir):
    params_for(repo, tiny_whisper_dir, **{"train.freeze_llm": True})
    (repo / "models/base/model.safetensors").unlink()  # proves no weights are loaded: the error comes first (the config names the family)
    proc = asrtune(repo, "finetune", "s1", ok=False)
    assert_one_line_error(proc, "every component is frozen")


def test_lora_merge_equals_adapter_outputs(lora_run):
    from peft import PeftModel

    repo, _ = lora_run
    base = chain.load(repo / "models/base").eval()
    adapter = PeftModel.from_pretrained(base, repo / "models/finetune/s1/adapter").eval()
    merged = chain.load(repo / "models/finetune/s1").eval()
    torch.manual_seed(0)
    features = torch.randn(2, 80, 3000)
    decoder_ids = torch.tensor([[50258, 50260, 50359, 50363, 1000, 2000]] * 2)
    with torch.no_grad():
        a = adapter(input_features=features, decoder_input_ids=decoder_ids).logits
        m = merged(input_features=features, decoder_input_ids=decoder_ids).logits
    plain = chain.load(repo / "models/base").eval()
    with torch.no_grad():
        b = plain(input_features=features, decoder_input_ids=decoder_ids).logits
    assert torch.allclose(a, m, atol=1e-4)
    assert not torch.allclose(a, b, atol=1e-4)  # the adapter did change the outputs


def test_encoder_cache_gives_the_same_training_as_recomputing(repo, tiny_whisper_dir):
    results = {}
    for cache in (True, False):
        shutil.rmtree(repo / ".cache", ignore_errors=True)
        proc = finetune(repo, tiny_whisper_dir, **{"train.cache_encoder": cache, "train.cache_dtype": "float32"})
        assert ("encoder outputs cached" in proc.stdout) == cache
        summary = json.loads((repo / "models/finetune/s1/summary.json").read_text())
        model = chain.load(repo / "models/finetune/s1")
        results[cache] = (summary["best_val_loss"], state(model, "model.decoder."))
    assert results[True][0] == pytest.approx(results[False][0], rel=1e-5)
    assert all(torch.allclose(results[True][1][k], results[False][1][k], atol=1e-6) for k in results[True][1])


def test_killed_training_resumes_from_its_last_checkpoint(repo, tiny_whisper_dir):
    params_for(repo, tiny_whisper_dir, **{"train.stages.s1.epochs": 4})
    proc = subprocess.Popen([*ASRTUNE, "finetune", "s1"], cwd=repo, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    checkpoints = repo / ".cache/asrtune/checkpoints"
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        done = [c for c in checkpoints.glob("*/checkpoint-*") if (c / "trainer_state.json").is_file() and (c / "rng_state.pth").is_file()]
        if done:
            time.sleep(0.2)
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.01)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "training ended before it could be killed"
    assert not (repo / "models/finetune/s1").exists()
    rerun = asrtune(repo, "finetune", "s1")
    assert "resuming from checkpoint-" in rerun.stdout
    summary = json.loads((repo / "models/finetune/s1/summary.json").read_text())
    assert 0 < summary["resumed_from_step"] < summary["steps"]
    assert not list(checkpoints.glob("*/checkpoint-*"))  # cleaned once the stage output is written
    # the curves go on from where the killed run's last checkpoint was: every step once, from the first
    steps = [int(line.split("\t")[0]) for line in (repo / "plots/finetune/s1/plots/metrics/loss.tsv").read_text().splitlines()[1:]]
    assert steps == list(range(1, summary["steps"] + 1))


def test_a_checkpoint_killed_while_saving_is_not_resumed_from(tmp_path):
    """The Trainer writes trainer_state.json last: a folder without it is half-written."""
    from asrtune.train.hf_trainer import last_checkpoint

    for step, complete in ((3, True), (6, False), (12, False)):
        (tmp_path / f"checkpoint-{step}").mkdir()
        if complete:
            (tmp_path / f"checkpoint-{step}/trainer_state.json").write_text("{}")
    assert last_checkpoint(tmp_path) == tmp_path / "checkpoint-3"
    (tmp_path / "checkpoint-3/trainer_state.json").unlink()
    assert last_checkpoint(tmp_path) is None and last_checkpoint(tmp_path / "absent") is None


def test_learned_positions_loss_equals_the_models_own(tiny_whisper_dir):
    """whisper's training loss projects to the vocabulary only where a label is learned: same
    loss and gradients as the model's own, with LoRA too."""
    from peft import get_peft_model

    from asrtune.families import whisper

    torch.manual_seed(0)
    plain = chain.load(tiny_whisper_dir).train()
    lora = get_peft_model(chain.load(tiny_whisper_dir), whisper.lora_config(4, 8, 0.0, None, False, False)).train()
    decoder_input_ids = torch.tensor([[50258, 50260, 50359, 50363, 1000, 2000], [50258, 50260, 50359, 50363, 3000, 0]])
    labels = torch.tensor([[-100, -100, -100, 1000, 2000, 50257], [-100, -100, -100, 3000, 50257, -100]])
    inputs = {"encoder_outputs": (torch.randn(2, 1500, 16),), "decoder_input_ids": decoder_input_ids, "labels": labels}
    for model, base in ((plain, plain), (lora, lora.get_base_model())):
        own = model(**inputs).loss
        own.backward()
        own_grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        model.zero_grad()
        ours = whisper.loss(model, base, inputs)
        ours.backward()
        assert torch.allclose(ours, own, rtol=1e-5)
        assert own_grads and all(torch.allclose(p.grad, own_grads[n], atol=1e-6) for n, p in model.named_parameters() if p.grad is not None)
        assert not base.proj_out._forward_pre_hooks  # the hook is gone after the step
        model.zero_grad()


def whisper_batch(repo: Path, language: str = "zh", n: int = 4) -> dict:
    """A real training batch: the first `n` examples of data/mix/s1, through the family's item maker and collator."""
    from asrtune import params
    from asrtune.corpus import chatml
    from asrtune.corpus.manifest import read_jsonl
    from asrtune.families import whisper

    p = params.load(repo / "params.yaml")
    p = p.model_copy(update={"model": p.model.model_copy(update={"language": language})})
    processor = whisper.load_processor(repo / "models/base")
    make = whisper.item_maker(None, processor, p)
    items = chatml.examples(read_jsonl(repo / "data/mix/s1/train.jsonl"))[:n]
    return whisper.collate([{**make(ex, 16000), "encoder_hidden": torch.randn(1500, 16)} for ex in items])


def test_training_feeds_the_decoder_the_prompt_decode_uses(data_repo):
    """The first four decoder inputs of a training batch are what generate() starts from."""
    model = chain.load(data_repo / "models/base").eval()
    decoded = model.generate(torch.randn(1, 80, 3000), language="zh", task="transcribe", max_new_tokens=1,
                             return_dict_in_generate=True).sequences  # with the decoder prompt it started from
    batch = whisper_batch(data_repo)
    assert decoded.shape[1] == 5 and (batch["decoder_input_ids"][:, :4] == decoded[0, :4]).all()
    learned = batch["labels"] != -100
    assert not learned[:, :3].any() and learned[:, 3].all()  # the prompt is given, the transcript learned
    eot = model.generation_config.eos_token_id
    assert all(row[row != -100][-1] == eot for row in batch["labels"])  # ... up to <|endoftext|>


def test_training_loss_equals_the_plain_models_loss_under_the_decode_prompt(data_repo):
    from asrtune.families import whisper

    torch.manual_seed(0)
    model = chain.load(data_repo / "models/base").train()
    batch = whisper_batch(data_repo)
    ours = whisper.loss(model, model, batch)
    plain = model(encoder_outputs=batch["encoder_outputs"], decoder_input_ids=batch["decoder_input_ids"], labels=batch["labels"]).loss
    assert torch.allclose(ours, plain, rtol=1e-5)
    items = (batch["labels"] != -100).sum()
    assert torch.allclose(whisper.loss(model, model, batch, num_items_in_batch=2 * items), plain / 2, rtol=1e-5)


@pytest.fixture(scope="module")
def language_runs(data_repo, tiny_whisper_dir, tmp_path_factory):
    """The same finetune stage (in-process) with model.language zh and en."""
    from conftest import in_process

    from asrtune.stages import finetune as stage

    runs = {}
    for language in ("zh", "en"):
        repo = tmp_path_factory.mktemp(f"lang-{language}") / "repo"
        shutil.copytree(data_repo, repo, ignore=shutil.ignore_patterns("finetune", "plots"))
        params_for(repo, tiny_whisper_dir, **{"model.language": language, "train.lora.dropout": 0.0})
        runs[language] = (repo, in_process(repo, stage, "s1"))
    return runs


def test_model_language_changes_what_is_learned(language_runs):
    from safetensors.torch import load_file

    zh, en = (load_file(repo / "models/finetune/s1/adapter/adapter_model.safetensors") for repo, _ in language_runs.values())
    assert zh.keys() == en.keys()
    assert any(not torch.allclose(zh[k], en[k], atol=1e-6) for k in zh)


def test_gradient_accumulation_gives_the_gradients_of_one_big_batch(data_repo):
    from conftest import assert_same_step, first_step

    assert_same_step(first_step(data_repo, 16, 1, freeze=(True, True, False)),
                     first_step(data_repo, 8, 2, freeze=(True, True, False)), "model.decoder.")


def test_bf16_trains_and_decodes_on_cpu(data_repo, tiny_whisper_dir, tmp_path):
    """The Trainer's bf16 autocast (use_cpu + bf16) through the finetune stage: cached encoder with
    LoRA, then raw features with the encoder training; decode runs in bf16 too."""
    from conftest import in_process

    from asrtune.stages import decode, finetune, merge

    repo = tmp_path / "repo"
    shutil.copytree(data_repo, repo, ignore=shutil.ignore_patterns("finetune", "plots"))
    params_for(repo, tiny_whisper_dir, **{"model.precision": "bf16"})
    printed = in_process(repo, finetune, "s1")
    assert "cpu, bf16" in printed
    params_for(repo, tiny_whisper_dir, **{"model.precision": "bf16", "train.freeze_encoder": False, "train.cache_encoder": False})
    printed = in_process(repo, finetune, "s1")
    summary = json.loads((repo / "models/finetune/s1/summary.json").read_text())
    assert summary["steps"] > 0 and 0 < summary["best_val_loss"] < float("inf")
    params_for(repo, tiny_whisper_dir, **{"model.precision": "bf16", "train.stages": {"s1": {"init": "models/base", "epochs": 1}},
                                          "mix.stages": {"s1": {"general": 0.5}}})
    in_process(repo, merge)
    assert "bfloat16" in in_process(repo, decode, "merged", "medical")
    assert (repo / "data/decode/merged/medical.tsv").read_text().count("\n") > 0


def test_frozen_whisper_parts_stay_in_eval_mode(tiny_whisper_dir):
    from peft import get_peft_model

    from asrtune.families import whisper

    model = chain.load(tiny_whisper_dir)
    whisper.freeze(model, True, True, False)
    lora = get_peft_model(model, whisper.lora_config(4, 8, 0.0, None, False, False))
    lora.train()  # what the Trainer does every step
    assert not model.model.encoder.training and model.model.decoder.training
    assert not any(p.requires_grad for p in model.model.encoder.parameters())


def test_the_resume_fingerprint_covers_the_code(data_repo, tmp_path):
    """A rerun after a code change must not resume from checkpoints the old code wrote."""
    from asrtune import params
    from asrtune.stages import finetune

    files = {f.name for f in finetune.code_files("whisper")}
    assert {"finetune.py", "hf_trainer.py", "chain.py", "encoder_cache.py", "registry.py", "shared.py", "whisper.py"} <= files
    assert all(f.is_file() for f in finetune.code_files("audiollm"))
    p = params.load(data_repo / "params.yaml")
    code = tmp_path / "training.py"
    code.write_text("x = 1\n")
    data = [data_repo / "data/mix/s1/train.jsonl"]
    before = finetune.fingerprint(p, "s1", data, data_repo / "models/base", "whisper", code=[code])
    code.write_text("x = 2\n")
    assert finetune.fingerprint(p, "s1", data, data_repo / "models/base", "whisper", code=[code]) != before


def test_gradient_checkpointing_gives_the_same_gradients(data_repo):
    from conftest import assert_same_step, first_step

    plain = first_step(data_repo, 8, 1, freeze=(False, True, False), n=8)
    checkpointed = first_step(data_repo, 8, 1, freeze=(False, True, False), n=8, gradient_checkpointing=True)
    assert checkpointed[2] and not plain[2]  # the layers did recompute their activations
    assert_same_step(plain, checkpointed, "model.encoder.", "model.decoder.")


def test_transcripts_longer_than_the_decoder_are_rejected_before_training(repo, tiny_whisper_dir):
    """Whisper's decoder holds 448 positions with the prompt: a longer transcript is listed with its
    reason and left out, instead of an IndexError midway (a device-side assert on a GPU)."""
    from conftest import in_process

    from asrtune.stages import finetune as stage

    train = repo / "data/mix/s1/train.jsonl"
    records = [json.loads(line) for line in train.read_text(encoding="utf-8").splitlines()]
    records[0]["messages"][2]["content"] = "长" * 500
    train.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    params_for(repo, tiny_whisper_dir)
    printed = in_process(repo, stage, "s1")
    assert "1 utterances rejected before training" in printed and records[0]["key"] in printed
    summary = json.loads((repo / "models/finetune/s1/summary.json").read_text())
    assert list(summary["rejected"]) == [records[0]["key"]] and "the model holds 448" in summary["rejected"][records[0]["key"]]


def test_save_steps_checkpoints_and_evaluates_within_an_epoch_and_no_timings_are_tracked(repo, tiny_whisper_dir):
    from conftest import in_process

    from asrtune.stages import finetune as stage

    params_for(repo, tiny_whisper_dir, **{"train.save_steps": 1})
    in_process(repo, stage, "s1")
    summary = json.loads((repo / "models/finetune/s1/summary.json").read_text())
    curves = repo / "plots/finetune/s1"
    evaluated = [int(line.split("\t")[0]) for line in (curves / "plots/metrics/eval/loss.tsv").read_text().splitlines()[1:]]
    assert summary["steps"] > 1 and evaluated == list(range(1, summary["steps"] + 1))  # one epoch, a val loss every step
    epochs = [line.split("\t")[0] for line in (curves / "plots/metrics/epoch.tsv").read_text().splitlines()[1:]]
    assert len(epochs) == len(set(epochs)) == summary["steps"]  # one point per step, not one per log line
    tracked = [f.name for f in curves.rglob("*")] + list(json.loads((curves / "metrics.json").read_text()).get("eval", {}))
    assert not [n for n in tracked if "runtime" in n or "per_second" in n]  # they differ run to run: printed, not tracked


def test_the_cache_lives_outside_the_workspace_and_can_be_listed_and_cleared(monkeypatch, tmp_path, capsys):
    from asrtune import paths
    from asrtune.train import cache

    monkeypatch.delenv("ASRTUNE_CACHE")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    assert paths.cache_dir() == tmp_path / "home/.cache/asrtune"  # shared by dvc exp run --temp / --queue workspaces
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert paths.cache_dir() == tmp_path / "xdg/asrtune"
    monkeypatch.setenv("ASRTUNE_CACHE", str(tmp_path / "mine"))
    (tmp_path / "mine/checkpoints/finetune-s1-0123/checkpoint-6").mkdir(parents=True)
    (tmp_path / "mine/checkpoints/finetune-s1-0123/checkpoint-6/trainer_state.json").write_text("{}")
    (tmp_path / "mine/encoder/abc-float16").mkdir(parents=True)
    (tmp_path / "mine/encoder/abc-float16/x.npy").write_bytes(b"0" * 2048)
    (tmp_path / "mine/decode/def").mkdir(parents=True)
    (tmp_path / "mine/decode/def/y.pt").write_bytes(b"0" * 2048)
    cache.run(clear_checkpoints=False, clear_decode=False)
    listed = capsys.readouterr().out
    assert "checkpoints/finetune-s1-0123" in listed and "checkpoint-6" in listed and "encoder/abc-float16" in listed
    assert "decode/def" in listed
    cache.run(clear_checkpoints=True, clear_decode=False)
    assert "removed 1 checkpoints folders" in capsys.readouterr().out
    assert not (tmp_path / "mine/checkpoints/finetune-s1-0123").exists() and (tmp_path / "mine/encoder/abc-float16/x.npy").exists()
    cache.run(clear_checkpoints=False, clear_decode=True)
    assert "removed 1 decode folders" in capsys.readouterr().out
    assert not (tmp_path / "mine/decode/def").exists() and (tmp_path / "mine/encoder/abc-float16/x.npy").exists()


def test_curves_of_a_run_killed_mid_write_are_trimmed_to_the_resumed_step(tmp_path):
    from asrtune.train.hf_trainer import Curves

    live = tmp_path / "plots"
    (live / "plots/metrics/eval").mkdir(parents=True)
    (live / "plots/metrics/loss.tsv").write_text("step\tloss\n1\t3.0\n2\t2.5\n3\t2.2\n4\t2.")
    (live / "plots/metrics/eval/loss.tsv").write_text("step\tloss\n2\t2.6\n4\t2.3\n")
    (live / "plots/metrics/epoch.tsv").write_text("")  # killed before its header was out
    (live / "metrics.json").write_text("")  # killed mid-write: dvclive's own resume fails to read it
    Curves(live, resume_step=2)
    assert (live / "plots/metrics/loss.tsv").read_text() == "step\tloss\n1\t3.0\n2\t2.5\n"
    assert (live / "plots/metrics/eval/loss.tsv").read_text() == "step\tloss\n2\t2.6\n"
    assert not (live / "plots/metrics/epoch.tsv").exists()


def test_a_failed_run_lets_go_of_its_checkpoint_folder(repo, tiny_whisper_dir):
    """An error after the lock is taken (here: no val utterance fits the decoder) must release it,
    or the next run of the same training in this process (or a queue worker) would wait forever."""
    import fcntl

    from conftest import in_process

    from asrtune.errors import UserError
    from asrtune.stages import finetune as stage

    val = repo / "data/mix/s1/val.jsonl"
    records = [json.loads(line) for line in val.read_text(encoding="utf-8").splitlines()]
    for r in records:
        r["messages"][2]["content"] = "长" * 500
    val.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    params_for(repo, tiny_whisper_dir)
    with pytest.raises(UserError, match="no utterance fits the model") as failed:
        in_process(repo, stage, "s1")
    assert failed.value  # the traceback (and the failed run's frames) are still alive here
    locks = list((repo / ".cache/asrtune/checkpoints").glob("*.lock"))
    assert len(locks) == 1
    with open(locks[0], "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)  # free: raises BlockingIOError while still held
