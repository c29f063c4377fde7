"""The `speechllm` family: Fun-ASR-Nano's architecture (Whisper encoder + adaptor + causal LM,
see asrtune.families.speechllm.model), trained on Fun-ASR's ChatML prompt:

    <|im_start|>system\\n{system}<|im_end|>\\n<|im_start|>user\\n{prompt}[N audio embeddings]<|im_end|>\\n
    <|im_start|>assistant\\n{text}<|im_end|>

with the loss on `{text}<|im_end|>` only. System message and prompt come from each ChatML record.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import torch
from torch.nn.utils.rnn import pad_sequence

from asrtune.chatml import Example
from asrtune.errors import UserError
from asrtune.families import check_targets, max_new_tokens
from asrtune.families import whisper_features as features

NAME = "speechllm"
MODEL_TYPE = "asrtune_speechllm"  # config.json model_type of a plain model directory
CACHE_TAG = "audio frames only"  # the cache holds only the frames that hold audio
HAS_ADAPTOR = True
FP16_OK = False  # LLMs overflow in fp16: fp32 on GPUs without bf16
PARTS = ("encoder", "adaptor", "llm")
DEFAULT_LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
END = "<|im_end|>"


loss = None  # SpeechLLM.forward already projects to the vocabulary only at the learned positions


def load_plain(path: Path):
    from asrtune.families.speechllm.model import SpeechLLM

    return SpeechLLM.from_pretrained(path, local_files_only=True, dtype=torch.float32)


def load_processor(path: Path):
    from asrtune.families.speechllm.model import SpeechLLMProcessor

    return SpeechLLMProcessor.from_pretrained(path)


def max_positions(model) -> int:
    """The LLM's positions: prompt, audio embeddings and transcript together."""
    return model.config.text_config.max_position_embeddings


def encoder(model):
    return model.encoder


def freeze(model, freeze_encoder: bool, freeze_adaptor: bool, freeze_llm: bool) -> None:
    """A frozen part gets no gradients and stays in eval mode (no dropout), as in Fun-ASR."""
    flags = dict(zip(PARTS, (freeze_encoder, freeze_adaptor, freeze_llm)))
    for part, frozen in flags.items():
        for p in getattr(model, part).parameters():
            p.requires_grad = not frozen
    model.frozen = {part for part, frozen in flags.items() if frozen}


def lora_config(r: int, alpha: float, dropout: float, target_modules: list[str] | None, train_encoder: bool,
                train_adaptor: bool, model=None):
    """LoRA inside the LLM's layers (module-name suffixes, e.g. q_proj); an unfrozen encoder or
    adaptor trains fully alongside."""
    from peft import LoraConfig

    targets = target_modules or DEFAULT_LORA_TARGETS
    names = "|".join(re.escape(t) for t in targets)
    layer = r"^llm\.(?:.*\.)?(?:layers|h)\.\d+\."  # decoder blocks: model.layers (Qwen, Llama, ...), transformer.h (GPT-2)
    pattern = rf"{layer}(?:.*\.)?(?:{names})$"
    if model is not None:
        check_targets(targets, [n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear) and re.match(layer, n)])
    return LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=pattern,
                      modules_to_save=[part for part, on in (("encoder", train_encoder), ("adaptor", train_adaptor)) if on] or None)


class Prompt:
    """Token ids of the ChatML pieces around the audio and the transcript."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        ids = tokenizer.convert_tokens_to_ids(["<|im_start|>", END])
        if None in ids or tokenizer.unk_token_id is not None and tokenizer.unk_token_id in ids:
            raise UserError("model.llm: the tokenizer has no ChatML tokens <|im_start|> and <|im_end|>")
        self.end = ids[1]
        self.pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else self.end
        self._cache: dict[tuple[str, str], tuple[list[int], list[int]]] = {}

    def _encode(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def around_audio(self, system: str, prompt: str) -> tuple[list[int], list[int]]:
        """(before the audio, after the audio up to the assistant's turn)."""
        if (system, prompt) not in self._cache:
            before = self._encode(f"<|im_start|>system\n{system}{END}\n<|im_start|>user\n{prompt}")
            after = self._encode(f"{END}\n<|im_start|>assistant\n")
            self._cache[(system, prompt)] = (before, after)
        return self._cache[(system, prompt)]

    def inputs(self, ex: Example, num_samples: int, stride: int, with_text: bool = True) -> dict:
        """input_ids, audio_mask, labels (the transcript and <|im_end|> only) and encoder_lengths."""
        from asrtune.families.speechllm.model import audio_tokens, encoder_frames

        before, after = self.around_audio(ex.system, ex.prompt)
        n_audio = audio_tokens(num_samples, stride)
        target = self._encode(ex.text) + [self.end] if with_text else []
        ids = before + [self.pad] * n_audio + after + target
        audio_mask = [False] * len(before) + [True] * n_audio + [False] * (len(after) + len(target))
        labels = [-100] * (len(ids) - len(target)) + target
        return {"input_ids": torch.tensor(ids), "audio_mask": torch.tensor(audio_mask), "labels": torch.tensor(labels),
                "encoder_lengths": torch.tensor(encoder_frames(num_samples))}


def item_maker(model, processor, p):
    """example, num_samples -> the text-side training inputs of one utterance."""
    prompt, stride = Prompt(processor.tokenizer), model.config.adaptor_stride
    return lambda ex, num_samples: prompt.inputs(ex, num_samples, stride)


def collate(batch: list[dict]) -> dict:
    """Right-padded text side (pad id 0: masked out and never learned); encoder outputs padded to
    the longest clip (or raw features)."""
    out = {
        "input_ids": pad_sequence([b["input_ids"] for b in batch], batch_first=True),
        "attention_mask": pad_sequence([torch.ones_like(b["input_ids"]) for b in batch], batch_first=True),
        "audio_mask": pad_sequence([b["audio_mask"] for b in batch], batch_first=True),
        "labels": pad_sequence([b["labels"] for b in batch], batch_first=True, padding_value=-100),
        "encoder_lengths": torch.stack([b["encoder_lengths"] for b in batch]),
    }
    if "encoder_hidden" in batch[0]:
        out["encoder_hidden"] = pad_sequence([b["encoder_hidden"] for b in batch], batch_first=True)
    else:
        out["input_features"] = torch.stack([b["input_features"] for b in batch])
    return out


def encode(model, processor, audio: list[np.ndarray]) -> list[torch.Tensor]:
    """Encoder outputs of the frames that hold audio (what the cache keeps: 1500 frames would be 30 s)."""
    from asrtune.families.speechllm.model import encoder_frames

    with torch.no_grad():
        hidden = model.encode(features(processor, audio).to(model.device, model.dtype))
    return [h[: encoder_frames(len(a))] for h, a in zip(hidden, audio)]


def prompt_embeddings(model, processor, batch: list[Example], audio: list[np.ndarray], prompt: Prompt | None = None):
    """The LLM's input embeddings up to the assistant's turn, left-padded so every row ends there,
    and their attention mask."""
    prompt = prompt or Prompt(processor.tokenizer)
    rows = [prompt.inputs(ex, len(a), model.config.adaptor_stride, with_text=False) for ex, a in zip(batch, audio)]
    width = max(len(r["input_ids"]) for r in rows)
    device = model.device

    def left(values: list[torch.Tensor], fill) -> torch.Tensor:
        return torch.stack([torch.cat([torch.full((width - len(v),), fill, dtype=v.dtype), v]) for v in values]).to(device)

    input_ids = left([r["input_ids"] for r in rows], prompt.pad)
    attention_mask = left([torch.ones_like(r["input_ids"]) for r in rows], 0)
    audio_mask = left([r["audio_mask"] for r in rows], False)
    lengths = torch.stack([r["encoder_lengths"] for r in rows]).to(device)
    with torch.no_grad():
        embeds = model.input_embeddings(input_ids, audio_mask, lengths,
                                        input_features=features(processor, audio).to(device, model.dtype))
    return embeds, attention_mask


def transcribe(model, processor, batch: list[Example], audio: list[np.ndarray], p) -> list[str]:
    """Greedy (or beam) generation after the ChatML prompt, with the whisper family's repetition
    guard: at most max_tokens_per_second per second of the longest clip (+8) new tokens."""
    from transformers import GenerationConfig

    prompt = Prompt(processor.tokenizer)
    embeds, attention_mask = prompt_embeddings(model, processor, batch, audio, prompt)
    d = p.decode
    config = GenerationConfig(do_sample=False, num_beams=d.num_beams, max_new_tokens=max_new_tokens(audio, d), eos_token_id=prompt.end,
                              pad_token_id=prompt.pad, no_repeat_ngram_size=d.no_repeat_ngram_size or None)
    with torch.no_grad():
        out = model.llm.generate(inputs_embeds=embeds, attention_mask=attention_mask, generation_config=config)
    return processor.tokenizer.batch_decode(out, skip_special_tokens=True)
