"""The `whisper` family: any Hugging Face Whisper checkpoint. Components: encoder, and the text
decoder, which the `llm` freeze flag names. Whisper has no adaptor."""

from __future__ import annotations

import itertools
import re
from pathlib import Path

import numpy as np
import torch
from torch.nn.utils.rnn import pad_sequence
from transformers.modeling_outputs import BaseModelOutput

from asrtune.corpus import timestamps
from asrtune.corpus.chatml import Example
from asrtune.families.shared import (check_targets, freeze_parts, max_new_tokens, row_log_probs, token_loss, whisper_context,
                                     whisper_prompt)
from asrtune.families.shared import whisper_features as features

NAME = "whisper"
CACHE_TAG = ""  # the cache holds all 1500 frames per clip
HAS_ADAPTOR = False
FP16_OK = True  # trains in fp16 with loss scaling on GPUs without bf16
# suffixes inside decoder layers. Cross-attention k/v are left out on purpose: they run over all
# 1500 encoder frames (LoRA there made CPU steps 1.2-1.6x slower); out_proj and the MLP see text tokens only
DEFAULT_LORA_TARGETS = ["self_attn.q_proj", "self_attn.v_proj", "encoder_attn.q_proj", "encoder_attn.out_proj", "fc1", "fc2"]


def load_plain(path: Path):
    from transformers import WhisperForConditionalGeneration

    return WhisperForConditionalGeneration.from_pretrained(path, local_files_only=True, dtype=torch.float32)


def load_processor(path: Path):
    from transformers import WhisperProcessor

    return WhisperProcessor.from_pretrained(path, local_files_only=True)


def max_positions(model) -> int:
    """Decoder positions, prompt included (448 for every Whisper)."""
    return model.config.max_target_positions


def encoder(model):
    return model.get_encoder()


def freeze(model, freeze_encoder: bool, freeze_adaptor: bool, freeze_llm: bool) -> None:
    """A frozen component gets no gradients and stays in eval mode (no dropout) whenever the Trainer
    puts the model in training mode; the output projection is tied to the decoder embeddings.
    (Whisper has no adaptor: freeze_adaptor changes nothing.)"""
    freeze_parts(model, [([model.model.encoder], freeze_encoder), ([model.model.decoder], freeze_llm)])


def lora_config(r: int, alpha: float, dropout: float, target_modules: list[str] | None, train_encoder: bool,
                train_adaptor: bool, model=None):
    """LoRA on decoder layers only: each target is a module-name suffix inside a decoder layer
    (`q_proj` hits self- and cross-attention, `self_attn.q_proj` only the first). An unfrozen
    encoder trains fully alongside."""
    from peft import LoraConfig

    targets = target_modules or DEFAULT_LORA_TARGETS
    if model is not None:
        check_targets(targets, [n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear) and n.startswith("model.decoder.layers.")])
    names = "|".join(re.escape(t) for t in targets)
    return LoraConfig(
        r=r, lora_alpha=alpha, lora_dropout=dropout,
        target_modules=rf"^model\.decoder\.layers\.\d+\.(?:.*\.)?(?:{names})$",
        modules_to_save=["encoder"] if train_encoder else None,
    )


def context_ids(tokenizer, context: list[str] | None) -> list[int]:
    """A context list as Whisper's previous text (shared.whisper_context); [] for none."""
    return whisper_context(context, lambda text: tokenizer(text, add_special_tokens=False)["input_ids"],
                           tokenizer.convert_tokens_to_ids("<|startofprev|>"))


def prompt_ids(tokenizer, language: str, task: str, context: list[str] | None = None) -> list[int]:
    """The decoder prompt, training's and decoding's: a context list's previous text, then the task tokens."""
    return whisper_prompt(language, task, tokenizer.convert_tokens_to_ids, tokenizer.unk_token_id,  # unknown -> <|endoftext|>
                          context_ids(tokenizer, context))


def decoder_sequences(tokenizer, text: str, prompt: list[int]) -> tuple[list[int], list[int]]:
    """(decoder_input_ids, labels) of one transcript. The decoder reads exactly the prompt decode
    sends ([<|startofprev|> context list] <|startoftranscript|> <|lang|> <|task|> <|notimestamps|>), then the
    transcript; position i learns to predict labels[i]: the transcript and <|endoftext|>, never the prompt (-100)."""
    body = tokenizer(text, add_special_tokens=False)["input_ids"]
    return prompt + body, [-100] * (len(prompt) - 1) + body + [tokenizer.eos_token_id]


def item_maker(model, processor, p, context=None):
    """example, num_samples -> the text-side training inputs of one utterance; `context(example)`, where given,
    is its context list (train.hotwords), put in the prompt as decoding puts decode.hotwords'."""
    tok = processor.tokenizer
    prompt = prompt_ids(tok, p.model.language, p.model.task)

    def make(ex: Example, num_samples: int) -> dict:
        ids, labels = decoder_sequences(tok, ex.text, prompt_ids(tok, p.model.language, p.model.task, context(ex)) if context else prompt)
        return {"decoder_input_ids": torch.tensor(ids), "labels": torch.tensor(labels)}

    return make


def collator(model, processor):
    return collate


def collate(batch: list[dict]) -> dict:
    """Right-padded text. The pad id is arbitrary: the decoder is causal, so later positions never
    change earlier ones, and padded positions have label -100."""
    out = {"decoder_input_ids": pad_sequence([b["decoder_input_ids"] for b in batch], batch_first=True, padding_value=0),
           "labels": pad_sequence([b["labels"] for b in batch], batch_first=True, padding_value=-100)}
    if "encoder_hidden" in batch[0]:
        out["encoder_outputs"] = (torch.stack([b["encoder_hidden"] for b in batch]),)
    else:
        out["input_features"] = torch.stack([b["input_features"] for b in batch])
    return out


def learned_logits(model, base, inputs: dict) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(logits where a label is learned, those labels, the (batch, positions) mask of where they are), with the
    vocabulary projection (vocab x d_model) run only there, not at padding or at the given prompt. The forward
    goes through `model` (peft, DDP); a hook on `base`'s output projection picks the positions."""
    labels = inputs["labels"]
    learned = labels != -100
    hook = base.proj_out.register_forward_pre_hook(lambda module, args: (args[0][learned],))
    try:
        logits = model(**{k: v for k, v in inputs.items() if k != "labels"}).logits
    finally:
        hook.remove()
    return logits, labels[learned], learned


def loss(model, base, inputs: dict, num_items_in_batch=None) -> torch.Tensor:
    """The model's cross-entropy over the learned tokens (shared.token_loss of learned_logits)."""
    return token_loss(*learned_logits(model, base, inputs), num_items_in_batch)


def encode(model, processor, audio: list[np.ndarray]) -> list[torch.Tensor]:
    """Encoder outputs, all 1500 frames: Whisper's decoder was trained to attend over the whole 30 s window."""
    with torch.no_grad():
        return list(model.get_encoder()(input_features=features(processor, audio).to(model.device, model.dtype)).last_hidden_state)


def transcribe(model, processor, batch: list[Example], audio: list[np.ndarray], p,
               contexts: list[list[str] | None] | None = None, encode=None) -> list[str] | list[tuple[str, list]]:
    """Transcripts; with decode.timestamps, (transcript, [(unit, start, end), ...]) from transformers'
    cross-attention alignment (DTW over the alignment heads the generation config holds). `contexts`: a
    context list per clip (None: none), Whisper's previous text. generate() takes one prompt per call: each
    run of clips with the same list is one call, in order (decode sorts by length, not list: mostly one clip a call).
    `encode`: features -> encoder outputs (transcription.encoder_reuse's, which keeps them); None: the encoder."""
    contexts = contexts or [None] * len(audio)
    encode = encode or (lambda feats: model.get_encoder()(input_features=feats).last_hidden_state)
    out = []
    for context, run in itertools.groupby(range(len(audio)), key=lambda i: tuple(contexts[i] or ())):
        out += _transcribe(model, processor, [audio[i] for i in run], p, list(context), encode)
    return out


def score(model, processor, audio: list[np.ndarray], texts: list[str], p, encode=None) -> list[float]:
    """Each text's log-probability given its clip after the plain prompt (no context list), teacher-forced as
    training reads a transcript: its tokens and the end token (decode.hotwords_bonus compares two transcripts so).
    A text longer than the decoder's positions (a loop, re-tokenized) gets -inf. A clip given twice (the same array)
    is encoded once. `encode` as transcribe's."""
    tok = processor.tokenizer
    prompt = prompt_ids(tok, p.model.language, p.model.task)
    rows = [decoder_sequences(tok, text, prompt) for text in texts]
    fits = [i for i, (ids, _) in enumerate(rows) if len(ids) <= model.config.max_target_positions]
    out = [float("-inf")] * len(rows)
    if not fits:
        return out
    clips = {id(audio[i]): audio[i] for i in fits}  # in first-seen order
    where = {key: n for n, key in enumerate(clips)}
    encode = encode or (lambda feats: model.get_encoder()(input_features=feats).last_hidden_state)
    with torch.no_grad():
        hidden = encode(features(processor, list(clips.values())).to(model.device, model.dtype))
        inputs = collate([{"decoder_input_ids": torch.tensor(rows[i][0]), "labels": torch.tensor(rows[i][1]),
                           "encoder_hidden": hidden[where[id(audio[i])]]} for i in fits])  # training's own batching
        inputs = {k: v.to(model.device) if torch.is_tensor(v) else v for k, v in inputs.items()}
        for i, value in zip(fits, row_log_probs(*learned_logits(model, model, inputs))):
            out[i] = value
    return out


def begin_suppress(model) -> list[int]:
    """The generation config's begin-suppressed tokens without the end token: an empty transcript is a legal
    answer (a clip with nothing to hear; training's non-speech clips teach it). OpenAI's decoding forbids it
    first and relies on its no-speech rule instead, which a forced language token skips."""
    eos = model.generation_config.eos_token_id
    return [t for t in (model.generation_config.begin_suppress_tokens or []) if t != eos]


def _transcribe(model, processor, audio: list[np.ndarray], p, context: list[str], encode):
    d = p.decode
    prev = context_ids(processor.tokenizer, context)
    max_new = min(model.config.max_target_positions - 8 - len(prev), max_new_tokens(audio, d))
    options = dict(language=p.model.language, task=p.model.task, num_beams=d.num_beams, max_new_tokens=max_new,
                   no_repeat_ngram_size=d.no_repeat_ngram_size or None, begin_suppress_tokens=begin_suppress(model))
    if prev:  # generate() puts it before its own <|startoftranscript|> <|lang|> <|task|> <|notimestamps|>
        options["prompt_ids"] = torch.tensor(prev, device=model.device)
    if d.timestamps and not getattr(model.generation_config, "alignment_heads", None):
        raise ValueError("decode.timestamps: the model's generation config has no alignment_heads")
    fe = processor.feature_extractor(audio, sampling_rate=16000, return_tensors="pt", return_attention_mask=True)
    with torch.no_grad():
        # the encoder runs first, on its own (through `encode`, which may have its outputs already): inside generate()
        # with timestamps it would keep its self-attention weights too (batch x heads x 1500 x 1500 per layer: 6.9 GB
        # for whisper-base at batch 16), which the alignment never reads
        encoded = BaseModelOutput(last_hidden_state=encode(fe.input_features.to(model.device, dtype=model.dtype)))
        if not d.timestamps:
            return processor.batch_decode(model.generate(encoder_outputs=encoded, **options), skip_special_tokens=True)
        attn = model.config._attn_implementation
        # the attention mask tells the alignment where each clip's audio ends
        out = model.generate(encoder_outputs=encoded, attention_mask=fe.attention_mask.to(model.device),
                             return_token_timestamps=True, **options)
    model.set_attn_implementation(attn)  # generate() switched it to eager to read the attention weights
    texts = processor.batch_decode(out["sequences"], skip_special_tokens=True)
    return list(zip(texts, (token_unit_times(processor.tokenizer, ids, ends) for ids, ends in zip(out["sequences"].tolist(),
                                                                                                   out["token_timestamps"].tolist()))))


def token_unit_times(tokenizer, ids: list[int], starts: list[float]) -> list[tuple[str, float, float]]:
    """Units from generated tokens and their times. `token_timestamps[i]` is where token i starts (the DTW
    jump into its row; the first is always 0, where the path starts: trim_first_unit), and it ends where the
    next one starts (the last: the final jump). Read the other way round (i ends at [i]) the demo's MAE was
    220 ms, not 148."""
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    to_byte = {c: b for b, c in bytes_to_unicode().items()}
    first_special = tokenizer.convert_tokens_to_ids("<|endoftext|>")  # specials and <|t.tt|> come after the text tokens
    pieces = []
    for i, (token, start) in enumerate(zip(ids, starts)):
        if token < first_special:
            pieces.append((bytes(to_byte[c] for c in tokenizer.convert_ids_to_tokens(token)), start,
                           starts[i + 1] if i + 1 < len(starts) else start))
    return trim_first_unit(timestamps.unit_times(pieces))


def trim_first_unit(units: list[tuple[str, float, float]]) -> list[tuple[str, float, float]]:
    """The DTW path starts at 0 s, so the first unit takes in the clip's leading silence (0.4 s on the
    demo's clips). openai-whisper's rule for its first word: no longer than twice the median unit
    (the median capped at 0.7 s), cut from the start."""
    if len(units) < 2:
        return units
    longest = 2 * min(float(np.median([e - s for _, s, e in units])), 0.7)
    unit, start, end = units[0]
    if longest > 0 and end - start > longest:
        units = [(unit, round(max(start, end - longest), 3), end), *units[1:]]
    return units
