"""Model families behind one interface: load (a base dir or a fine-tuned chain), name components,
freeze, add LoRA, make training inputs, encode, transcribe. `whisper` (encoder-decoder), `audiollm`
(transformers' speech LLMs: Fun-ASR-Nano, Qwen3-ASR) and `aligner` (Qwen3-ForcedAligner: a Qwen3-ASR
with a classification head over time bins). The family of a model directory is read from its config's
model_type and architectures: models/base decides, params do not repeat it."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

from asrtune.errors import UserError

NAMES = ("whisper", "audiollm", "aligner")


def get(name: str):
    if name == "whisper":
        from asrtune.families import whisper

        return whisper
    if name == "audiollm":
        from asrtune.families import audiollm

        return audiollm
    if name == "aligner":
        from asrtune.families import aligner

        return aligner
    raise UserError(f"unknown model family {name!r} (known: {', '.join(NAMES)})")


AUDIOLLM_TYPES = ("fun_asr_nano", "qwen3_asr")  # the audiollm family's architectures (its ARCHS)
# (model_type, architectures[0]) of the aligner family: Qwen3-ForcedAligner shares Qwen3-ASR's model_type and
# config class and differs by its architecture (a `score` head over time bins instead of `lm_head`)
ALIGNER_ARCHS = {("qwen3_asr", "Qwen3ASRForTokenClassification")}


def name_for(model_type: str | None, where: str, architectures: list[str] | None = None) -> str:
    """The family that runs a model of this config model_type and architectures; `where` names it in the error."""
    if model_type == "whisper":
        return "whisper"
    if (model_type, (architectures or [None])[0]) in ALIGNER_ARCHS:
        return "aligner"
    if model_type in AUDIOLLM_TYPES:
        return "audiollm"
    raise UserError(f"{where}: a {model_type or 'non-transformers'} model; asrtune fine-tunes whisper, "
                    f"{', '.join(AUDIOLLM_TYPES)}, Qwen3-ForcedAligner (and Fun-ASR's own layout: model.pt + config.yaml)")


def _config(model_dir: Path) -> dict:
    config = Path(model_dir) / "config.json"
    return json.loads(config.read_text()) if config.is_file() else {}


def model_type(model_dir: Path) -> str | None:
    return _config(model_dir).get("model_type")


def of(model_dir: Path) -> str:
    """The family of a plain model directory (e.g. models/base), from its config.json."""
    if not (Path(model_dir) / "config.json").is_file():
        raise UserError(f"{model_dir}: no config.json (run `dvc repro base` first)")
    config = _config(model_dir)
    return name_for(config.get("model_type"), str(model_dir), config.get("architectures"))


def whisper_features(processor, audio):
    """Log-mel features of 16 kHz waveforms, padded to Whisper's 30 s window."""
    return processor.feature_extractor(audio, sampling_rate=16000, return_tensors="pt").input_features


def max_new_tokens(audio, decode) -> int:
    """The repetition guard every family uses: greedy decoding loops on some clips, so new tokens are
    capped at decode.max_tokens_per_second per second of the batch's longest clip, plus 8."""
    return math.ceil(max(len(a) for a in audio) / 16000 * decode.max_tokens_per_second) + 8


def whisper_prompt(language: str, task: str, token_to_id, unknown=None, context: list[int] = ()) -> list[int]:
    """Whisper's decoder prompt as token ids, for training and both decode engines alike, after `context`
    (whisper_context's previous text, where a context list is given); `unknown` is what token_to_id gives a token it lacks."""
    tokens = ["<|startoftranscript|>", f"<|{language}|>", f"<|{task}|>", "<|notimestamps|>"]
    ids = [token_to_id(t) for t in tokens]
    if unknown in ids:
        raise UserError(f"model.language/model.task: the tokenizer has no {tokens[1]} or {tokens[2]} token")
    return [*context, *ids]


# Whisper's previous text: <|startofprev|> and at most 223 tokens (openai-whisper keeps the last n_text_ctx // 2 - 1;
# its decoder holds 448 positions, the prompt's and the transcript's together)
WHISPER_CONTEXT_TOKENS = 224


def context_text(terms: list[str]) -> str:
    """A context list as one line (Whisper's previous text, Qwen3-ASR's system context): terms joined by a comma."""
    return "，".join(terms)


def whisper_context(terms: list[str] | None, encode, prev_id: int) -> list[int]:
    """A context list as Whisper's previous text: <|startofprev|> + the tokens of " " + context_text (what
    transformers' get_prompt_ids gives generate(prompt_ids=...)); [] for no list. A list longer than
    WHISPER_CONTEXT_TOKENS is cut, deterministically: the terms in list order, as many as fit."""
    terms = list(terms or [])

    def ids(k: int) -> list[int]:
        return [prev_id, *encode(" " + context_text(terms[:k]))] if k else []

    fits, over = 0, len(terms) + 1  # the first k terms fit; k = over do not (a longer prefix never has fewer tokens)
    while over - fits > 1:
        mid = (fits + over) // 2
        fits, over = (mid, over) if len(ids(mid)) <= WHISPER_CONTEXT_TOKENS else (fits, mid)
    return ids(fits)


def check_targets(targets: list[str], linear_names: list[str]) -> None:
    """Every LoRA target must name a linear layer where LoRA goes, or peft's error would be a stack trace."""
    for t in targets:
        if not any(re.search(rf"(?:^|\.){re.escape(t)}$", n) for n in linear_names):
            have = sorted({n.split(".")[-1] for n in linear_names})
            raise UserError(f"train.lora.target_modules: {t!r} names no linear layer of this model's "
                            f"LoRA part (it has: {', '.join(have)})")


def freeze_parts(model, parts: list[tuple[list, bool]]) -> None:
    """(modules, frozen) pairs: a frozen part gets no gradients and stays in eval mode (no dropout)
    whenever the Trainer puts the model in training mode."""
    import types

    frozen = [m for modules, flag in parts if flag for m in modules]
    for modules, flag in parts:
        for module in modules:
            for p in module.parameters():
                p.requires_grad = not flag

    def train(self, mode: bool = True):
        type(self).train(self, mode)
        for module in frozen:
            module.eval()
        return self

    model.train = types.MethodType(train, model)  # peft and DDP reach it through Module.train's recursion


# Whisper's encoder position table is sinusoidal and fixed (transformers never trains it): it stays
# so even when the encoder is unfrozen or wrapped by peft's modules_to_save, which re-enables all.
FIXED = re.compile(r"encoder\.(?:.*\.)?embed_positions\.")


def keep_fixed(model) -> None:
    for name, p in model.named_parameters():
        if FIXED.search(name):
            p.requires_grad = False


def token_loss(logits, targets, learned, num_items_in_batch=None):
    """Every family's training loss from its `learned_logits` (logits and labels at the learned positions,
    and the (batch, positions) mask of where they are): cross-entropy summed over the learned tokens and
    divided by num_items_in_batch (the whole accumulated batch's count; this batch's when None)."""
    import torch.nn.functional as F

    total = F.cross_entropy(logits.float(), targets, reduction="sum")
    return total / (num_items_in_batch if num_items_in_batch is not None else learned.sum())
