"""What the families share: Whisper's prompt and context list (both decode engines build it), the repetition
guard, LoRA target checks, freezing, the training loss."""

from __future__ import annotations

import math
import re

from asrtune.errors import UserError


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


def row_log_probs(logits, targets, learned) -> list[float]:
    """Each row's log-probability in nats, summed over its learned tokens, from a family's `learned_logits`
    (a teacher-forced transcript's score: decode.hotwords_bonus weighs two of them)."""
    import torch

    picked = torch.log_softmax(logits.float(), dim=-1).gather(-1, targets[:, None])[:, 0]
    # back to (rows, positions): the logits hold the learned positions in that order; a sum per row in a fixed
    # order (index_add_ on a GPU adds in any order, and a near-tie could then flip between runs)
    return torch.zeros(learned.shape, device=picked.device).masked_scatter_(learned, picked).sum(dim=1).tolist()
