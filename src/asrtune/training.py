"""Pieces the finetune stage hands to the Hugging Face Trainer: a dataset of ChatML examples, a
collator for raw features or cached encoder outputs, device settings, and checkpoint lookup."""

from __future__ import annotations

import re
from pathlib import Path

import soundfile as sf
import torch
from torch.nn.utils.rnn import pad_sequence

from asrtune.chatml import Example


class SpeechDataset(torch.utils.data.Dataset):
    """Examples as model inputs: labels, and either log-mel features or cached encoder outputs."""

    def __init__(self, items: list[Example], make_labels, featurize, cache=None):
        self.items, self.make_labels, self.featurize, self.cache = items, make_labels, featurize, cache

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict:
        ex = self.items[i]
        item = {"labels": torch.tensor(self.make_labels(ex.text))}
        if self.cache is not None:
            item["encoder_hidden"] = self.cache.load(ex.audio)
        else:
            item["input_features"] = self.featurize([sf.read(ex.audio, dtype="float32")[0]])[0]
        return item


def collate(batch: list[dict]) -> dict:
    out = {"labels": pad_sequence([b["labels"] for b in batch], batch_first=True, padding_value=-100)}
    if "encoder_hidden" in batch[0]:
        out["encoder_outputs"] = (torch.stack([b["encoder_hidden"] for b in batch]),)
    else:
        out["input_features"] = torch.stack([b["input_features"] for b in batch])
    return out


def device_settings() -> dict:
    """CUDA with bf16 when there is a GPU, else CPU in float32. Never assumes a GPU."""
    if torch.cuda.is_available():
        return {"bf16": torch.cuda.is_bf16_supported(), "use_cpu": False}
    return {"bf16": False, "use_cpu": True}


def last_checkpoint(output_dir: Path) -> Path | None:
    from transformers.trainer_utils import get_last_checkpoint

    if not output_dir.is_dir():
        return None
    found = get_last_checkpoint(str(output_dir))
    return Path(found) if found else None


def checkpoint_step(path: Path) -> int:
    return int(re.search(r"checkpoint-(\d+)$", str(path)).group(1))
