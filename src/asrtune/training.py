"""Pieces the finetune stage hands to the Hugging Face Trainer: a dataset of ChatML examples
(raw features or cached encoder outputs), device settings, and checkpoint lookup."""

from __future__ import annotations

import re
import time
from pathlib import Path

import soundfile as sf
import torch
from transformers import Trainer, TrainerCallback

from asrtune.chatml import Example


class SpeechDataset(torch.utils.data.Dataset):
    """Examples as model inputs: the family's text side, and log-mel features or cached encoder outputs."""

    def __init__(self, items: list[Example], make_item, featurize, cache=None):
        self.items, self.make_item, self.featurize, self.cache = items, make_item, featurize, cache

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict:
        ex = self.items[i]
        if self.cache is not None:
            return {**self.make_item(ex, sf.info(ex.audio).frames), "encoder_hidden": self.cache.load(ex.audio)}
        audio = sf.read(ex.audio, dtype="float32")[0]
        return {**self.make_item(ex, len(audio)), "input_features": self.featurize([audio])[0]}


class FamilyTrainer(Trainer):
    """The Trainer, with the family's own training loss where it has one (`family_loss(model, base,
    inputs)`, base = the model inside DDP and peft). Evaluation keeps the model's own loss."""

    def __init__(self, *args, family_loss=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.family_loss = family_loss

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if self.family_loss is None or return_outputs:
            return super().compute_loss(model, inputs, return_outputs=return_outputs, num_items_in_batch=num_items_in_batch)
        base = self.accelerator.unwrap_model(model)
        return self.family_loss(model, base.get_base_model() if hasattr(base, "get_base_model") else base, inputs)


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


def device_settings() -> dict:
    """CUDA with bf16 when there is a GPU, else CPU in float32. Never assumes a GPU."""
    if torch.cuda.is_available():
        return {"bf16": torch.cuda.is_bf16_supported(), "use_cpu": False}
    return {"bf16": False, "use_cpu": True}


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
