"""Pieces the finetune stage hands to the Hugging Face Trainer: a dataset of ChatML examples
(raw features or cached encoder outputs), device settings, and checkpoint lookup."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import time
from pathlib import Path

import soundfile as sf
import torch
from transformers import Trainer, TrainerCallback, TrainingArguments

from asrtune.corpus.chatml import Example


class SpeechDataset(torch.utils.data.Dataset):
    """Examples as model inputs: the family's text side, and log-mel features or cached encoder outputs."""

    def __init__(self, items: list[Example], make_item, featurize, cache=None, general: set[str] | None = None):
        self.items, self.make_item, self.featurize, self.cache = items, make_item, featurize, cache
        self.general = general  # train.distill: the keys of the general-role utterances (None: no distillation)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict:
        ex = self.items[i]
        role = {} if self.general is None else {"general": torch.tensor(ex.key in self.general)}
        if self.cache is not None:
            return {**self.make_item(ex, sf.info(ex.audio).frames), "encoder_hidden": self.cache.load(ex.audio), **role}
        audio = sf.read(ex.audio, dtype="float32")[0]
        return {**self.make_item(ex, len(audio)), "input_features": self.featurize([audio])[0], **role}


def with_roles(collate):
    """The family's collator, passing on each row's general flag (the family's own drops what it does not know)."""
    return lambda batch: {**collate(batch), "general": torch.stack([b["general"] for b in batch])}


def split_too_long(items: list[Example], make_item, limit: int, problem=None) -> tuple[list[Example], dict[str, str]]:
    """(the examples whose token sequence fits the model's `limit` positions, key -> reason for the
    rest). Checked before training: a longer one would stop training midway with an IndexError.
    `problem(example)`, where the family has one, gives any other reason an example cannot train it
    (e.g. the aligner's: no reference timestamps)."""
    kept, rejected = [], {}
    for ex in items:
        reason = problem(ex) if problem is not None else None
        if reason:
            rejected[ex.key] = reason
            continue
        n = len(make_item(ex, sf.info(ex.audio).frames)["labels"])
        if n > limit:
            rejected[ex.key] = f"too_long: {n} positions with the prompt, the model holds {limit}"
        else:
            kept.append(ex)
    return kept, rejected


class FamilyTrainer(Trainer):
    """The Trainer, with the family's own loss where it has one (`family_loss(model, base, inputs,
    num_items_in_batch)`, base = the model inside DDP and peft), in training and evaluation alike;
    with `distill` (a Distill), that loss plus distillation to the stage's init model on general utterances.

    The loss is summed over the learned tokens and divided by `num_items_in_batch`, the tokens of the
    whole accumulated (and, under DDP, global) batch, so gradient accumulation and several devices
    give the gradients of one big batch. One process never drives several GPUs: the Trainer would
    wrap the model in nn.DataParallel, whose replicas each get part of the batch (several GPUs = torchrun)."""

    def __init__(self, *args, family_loss=None, distill=None, **kwargs):
        training_args = kwargs["args"]
        if training_args.n_gpu > 1:
            training_args._n_gpu = 1
        super().__init__(*args, **kwargs)
        self.family_loss, self.distill = family_loss, distill
        if family_loss is not None:
            self.model_accepts_loss_kwargs = True  # the Trainer then counts the items and leaves the scaling to us

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if self.family_loss is None:
            return super().compute_loss(model, inputs, return_outputs=return_outputs, num_items_in_batch=num_items_in_batch)
        unwrapped = self.accelerator.unwrap_model(model)
        base = unwrapped.get_base_model() if hasattr(unwrapped, "get_base_model") else unwrapped
        if self.distill is not None:
            loss = self.distill.loss(model, unwrapped, base, inputs, num_items_in_batch)
        else:
            loss = self.family_loss(model, base, inputs, num_items_in_batch)
        if self.args.average_tokens_across_devices and num_items_in_batch is not None:
            loss = loss * self.accelerator.num_processes  # DDP averages over processes; the count is already global
        return (loss, {"loss": loss}) if return_outputs else loss


class Distill:
    """train.distill (learning without forgetting): the family's cross-entropy plus `weight` x KL(teacher || tuned)
    of the next-token (or, the aligner: time-bin) distributions at the learned positions of general-role
    utterances; domain ones get the cross-entropy alone. Both terms are summed over tokens and divided by the
    same count, so gradient accumulation and DDP stay one big batch. The teacher is the stage's init model:
    under LoRA the same network with its adapters (and modules_to_save) disabled, one extra forward without
    gradients and no second copy; without LoRA a frozen copy (`teacher`), as disabling nothing gives no base."""

    def __init__(self, weight: float, learned_logits, teacher=None):
        self.weight, self.learned_logits, self.teacher = weight, learned_logits, teacher

    @contextlib.contextmanager
    def teacher_of(self, unwrapped):
        """(the teacher, its model inside peft), in eval mode: it gives the base model's distributions, no dropout."""
        if self.teacher is not None:
            yield self.teacher, self.teacher
            return
        was = unwrapped.training
        unwrapped.eval()
        try:
            with unwrapped.disable_adapter():
                yield unwrapped, unwrapped.get_base_model()
        finally:
            unwrapped.train(was)

    def loss(self, model, unwrapped, base, inputs: dict, num_items_in_batch=None) -> torch.Tensor:
        import torch.nn.functional as F

        inputs = dict(inputs)
        general = inputs.pop("general")
        logits, targets, learned = self.learned_logits(model, base, inputs)
        total = F.cross_entropy(logits.float(), targets, reduction="sum")
        at = general[:, None].expand_as(learned)[learned]  # which learned positions are a general utterance's
        if at.any():
            with torch.no_grad(), self.teacher_of(unwrapped) as (teacher, teacher_base):
                reference = self.learned_logits(teacher, teacher_base, rows(inputs, general))[0]  # general rows only
            kl = F.kl_div(logits[at].float().log_softmax(-1), reference.float().log_softmax(-1), log_target=True, reduction="sum")
            total = total + self.weight * kl
        return total / (num_items_in_batch if num_items_in_batch is not None else learned.sum())


def rows(inputs: dict, keep: torch.Tensor) -> dict:
    """The batch's rows where `keep`, in every batched tensor (whisper's encoder_outputs is a tuple of one)."""
    if keep.all():
        return inputs

    def pick(v):
        return v[keep] if isinstance(v, torch.Tensor) else tuple(pick(x) for x in v) if isinstance(v, tuple) else v

    return {k: pick(v) for k, v in inputs.items()}


class StepTimer(TrainerCallback):
    """Seconds per training step (data loading included) after the first, leaving out the steps that
    an evaluation or a checkpoint save followed: the rate a longer run settles to."""

    def __init__(self):
        self.last, self.skip, self.intervals = None, False, []

    def on_step_end(self, *args, **kwargs):
        now = time.perf_counter()
        if self.last is not None and not self.skip:
            self.intervals.append(now - self.last)
        self.last, self.skip = now, False

    def on_evaluate(self, *args, **kwargs):
        self.skip = True

    def on_save(self, *args, **kwargs):
        self.skip = True

    @property
    def seconds_per_step(self) -> float | None:
        return sum(self.intervals) / len(self.intervals) if self.intervals else None


def arguments(t, stage, output_dir: Path, precision: str, **overrides) -> TrainingArguments:
    """The Trainer's settings for a curriculum stage (t = params.train, stage = its train.stages entry).
    Under torchrun this also joins the process group."""
    from asrtune.weights.precision import trainer_settings

    return TrainingArguments(**{**dict(
        output_dir=str(output_dir), num_train_epochs=stage.epochs, learning_rate=stage.learning_rate,
        per_device_train_batch_size=t.batch_size, per_device_eval_batch_size=t.batch_size,
        gradient_accumulation_steps=t.grad_accum, warmup_steps=t.warmup, weight_decay=t.weight_decay,
        lr_scheduler_type="linear", logging_steps=1,
        # evaluate and checkpoint every train.save_steps steps (0: every epoch): a kill loses at most one interval
        eval_strategy="steps" if t.save_steps else "epoch", save_strategy="steps" if t.save_steps else "epoch",
        eval_steps=t.save_steps or None, save_steps=t.save_steps or 500,
        save_total_limit=2, load_best_model_at_end=True, metric_for_best_model="eval_loss", greater_is_better=False,
        prediction_loss_only=True, label_names=["labels"], remove_unused_columns=False, report_to=[],
        seed=t.seed, data_seed=t.seed, dataloader_num_workers=0, activation_checkpointing=t.gradient_checkpointing,
        activation_checkpointing_kwargs={"use_reentrant": False},  # the reentrant kind loses the gradients of LoRA behind frozen inputs
        ddp_backend="gloo" if "WORLD_SIZE" in os.environ and not torch.cuda.is_available() else None,  # CPU processes
        **trainer_settings(precision, torch.cuda.is_available()),
    ), **overrides})


TIMINGS = ("runtime", "samples_per_second", "steps_per_second")  # vary run to run: printed, never in git-tracked files


class Curves(TrainerCallback):
    """dvclive curves keyed by the optimizer step (train loss, learning rate, grad norm, val loss),
    without the timings. A resumed run continues the curves of the run it resumes."""

    def __init__(self, live_dir: Path, resume_step: int | None):
        from dvclive import Live

        if resume_step is None:
            shutil.rmtree(live_dir, ignore_errors=True)
        else:
            trim_curves(live_dir, resume_step)
        self.live = Live(dir=str(live_dir), resume=resume_step is not None, dvcyaml=None, save_dvc_exp=False, report=None)

    def on_train_begin(self, args, state, control, **kwargs):
        kept = {k: v for k, v in args.to_dict().items() if k not in ("output_dir", "logging_dir")}  # paths, not settings
        self.live.log_params(kept)

    def on_log(self, args, state, control, logs=None, **kwargs):
        self.live.step = state.global_step
        logs = dict(logs or {})
        if "loss" not in logs:  # evaluation and end-of-training logs repeat the step's epoch
            logs.pop("epoch", None)
        for key, value in logs.items():
            name = next((f"{p}/{key[len(p) + 1:]}" for p in ("eval", "train") if key.startswith(p + "_")), key)
            if isinstance(value, (int, float)) and not name.endswith(TIMINGS):
                self.live.log_metric(name, value)
        self.live.next_step()

    def on_train_end(self, args, state, control, **kwargs):
        self.live.end()


def trim_curves(live_dir: Path, step: int) -> None:
    """Keep the points up to `step`, where the run resumes: a killed run logged past its last
    checkpoint, and may have died mid-write (a cut row, an empty summary, which dvclive's own
    resume would fail to read: the summary and params are written anew)."""
    for summary in ("metrics.json", "params.yaml"):
        (live_dir / summary).unlink(missing_ok=True)
    for tsv in live_dir.rglob("*.tsv"):
        header, *rows = tsv.read_text().splitlines() or [""]
        names = header.split("\t")
        if "step" not in names:
            tsv.unlink()
            continue
        at = names.index("step")
        whole = [r for r in rows if len(r.split("\t")) == len(names) and r.split("\t")[at].isdigit()]
        tsv.write_text("\n".join([header] + [r for r in whole if int(r.split("\t")[at]) <= step]) + "\n")


def last_checkpoint(output_dir: Path) -> Path | None:
    """The newest complete checkpoint. A run killed while saving leaves a checkpoint folder without
    trainer_state.json (the Trainer writes it last); resuming from that one would fail."""
    if not output_dir.is_dir():
        return None
    complete = [c for c in output_dir.glob("checkpoint-*")
                if re.fullmatch(r"checkpoint-\d+", c.name) and (c / "trainer_state.json").is_file()]
    return max(complete, key=checkpoint_step, default=None)


def checkpoint_step(path: Path) -> int:
    return int(re.search(r"checkpoint-(\d+)$", str(path)).group(1))
