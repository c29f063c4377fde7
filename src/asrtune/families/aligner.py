"""The `aligner` family: Qwen3-ForcedAligner, transformers' `Qwen3ASRForTokenClassification` (model_type
`qwen3_asr`, like Qwen3-ASR, whose audio tower, projector and LLM it shares; `score` replaces `lm_head`).

The input is the processor's own `prepare_forced_aligner_inputs`: the audio span, then every unit of the
transcript (asrtune.corpus.timestamps.units: each Chinese character, each run of letters or digits) followed by two
`<timestamp>` slots, its start and its end. The head classifies each slot into a time bin of
`processor.timestamp_segment_time` ms (80). Training labels the slots with the record's reference
timestamps (bin = round(t / 80 ms), clipped to the head's bins) and nothing else; an utterance without
reference timestamps cannot teach the aligner and is rejected before training (or gets the base
aligner's pseudo-labels: align.pseudo_labels). Decoding aligns each clip's reference transcript and returns
its units' times (`decode_forced_alignment`, which repairs non-monotonic predictions), within the clip.

Training inputs, features, the collator and the frozen-tower cache are the audiollm family's, which
this family reuses (they are keyed by the Qwen3-ASR architecture both share).
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import numpy as np
import torch

from asrtune.corpus.chatml import Example
from asrtune.errors import UserError
from asrtune.families import audiollm

NAME = "aligner"
AUTO_MODEL = "AutoModelForTokenClassification"  # what `base` loads a checkpoint of this family with
CACHE_TAG = audiollm.CACHE_TAG  # the same audio tower, cached the same way (its frames that hold audio)
HAS_ADAPTOR = True
FP16_OK = False  # a Qwen3 LLM, as the audiollm family's


def load_plain(path: Path):
    from transformers import AutoConfig, AutoModelForTokenClassification

    config = AutoConfig.from_pretrained(path, local_files_only=True)
    config.classifier_dropout = 0.0  # the released head has no dropout (transformers' default would be 0.1)
    return AutoModelForTokenClassification.from_pretrained(path, config=config, local_files_only=True, dtype=torch.float32)


# the family interface where it is the audiollm family's own (the same Qwen3-ASR tower, projector, LLM and processor)
load_processor, max_positions, encoder, features = audiollm.load_processor, audiollm.max_positions, audiollm.encoder, audiollm.features
collator = audiollm.collator  # text right-padded (positions over real tokens), features padded in time, labels with -100
DEFAULT_LORA_TARGETS = audiollm.DEFAULT_LORA_TARGETS


def parts(model) -> dict[str, list[torch.nn.Module]]:
    """freeze flag -> the modules it names. The `score` head belongs to the LLM: it trains fully (peft's
    modules_to_save under LoRA) unless train.freeze_llm, which freezes it with the language model."""
    inner = model.model
    return {"encoder": [inner.audio_tower], "adaptor": [inner.multi_modal_projector], "llm": [inner.language_model, model.score]}


def freeze(model, freeze_encoder: bool, freeze_adaptor: bool, freeze_llm: bool) -> None:
    """A frozen part gets no gradients and stays in eval mode whenever the Trainer puts the model in training mode."""
    from asrtune.families.shared import freeze_parts

    flags = {"encoder": freeze_encoder, "adaptor": freeze_adaptor, "llm": freeze_llm}
    freeze_parts(model, [(modules, flags[part]) for part, modules in parts(model).items()])


def lora_config(r: int, alpha: float, dropout: float, target_modules: list[str] | None, train_encoder: bool,
                train_adaptor: bool, model=None):
    """LoRA on `model.language_model.layers.N` linear layers only (as audiollm); LoRA is used only with the
    LLM unfrozen, so the `score` head trains fully beside it, with any unfrozen tower or projector."""
    config = audiollm.lora_config(r, alpha, dropout, target_modules, train_encoder, train_adaptor, model)
    config.modules_to_save = list(config.modules_to_save or []) + ["score"]
    return config


def _language(language: str | None) -> str | None:
    """model.language as the processor's splitter reads it (a code or a full name)."""
    from transformers.models.qwen3_asr.processing_qwen3_asr import LANGUAGE_CODE_TO_NAME

    return LANGUAGE_CODE_TO_NAME.get(language, language) if language else None


def problem(ex: Example, processor, p) -> str | None:
    """Why `ex` cannot train the aligner (checked before training, like a too-long transcript); None when it can."""
    from asrtune.corpus.timestamps import units

    if ex.timestamps is None:
        return "no_timestamps: the aligner learns from reference timestamps, and this record has none"
    words = processor.split_words_for_alignment(ex.text, _language(p.model.language))
    if words != units(ex.text):
        return (f"units: the processor splits the transcript into {len(words)} units under model.language="
                f"{p.model.language!r}, the references time {len(units(ex.text))} (asrtune.corpus.timestamps.units)")
    if not words:
        return "no_units: the transcript has nothing to align (no letter, digit or Chinese character)"
    if len(ex.timestamps) != len(words):
        return f"timestamps: {len(ex.timestamps)} [start, end] pairs for {len(words)} units of the transcript"
    return None


def to_bins(seconds, segment_ms: float, num_labels: int) -> list[int]:
    """Times in seconds -> the head's classes: the nearest bin (decode reads bin k as k x segment_ms), clipped."""
    return [min(max(round(float(t) * 1000 / segment_ms), 0), num_labels - 1) for t in seconds]


def to_seconds(bins, segment_ms: float) -> list[float]:
    return [b * segment_ms / 1000 for b in bins]


def clip_inputs(processor, audio: np.ndarray, text: str, language: str | None) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """(input_ids, features trimmed to the frames that hold audio, units) of one clip, from one
    prepare_forced_aligner_inputs call (one clip: no padding)."""
    try:
        out, words = processor.prepare_forced_aligner_inputs([audio], [text], language=language)
    except (ValueError, ImportError) as e:  # a language the aligner does not know, or Japanese/Korean without their splitter
        raise UserError(f"model.language={language!r}: {str(e).splitlines()[0]}") from None
    return out["input_ids"][0], audiollm._valid_frames(out, axis=1), words[0]


def item_maker(model, processor, p):
    """example, num_samples -> input_ids (audio span, units and their <timestamp> slots) and labels: -100
    everywhere but at the slots, which hold the reference start and end bins of each unit in turn."""
    config = audiollm._unwrap(model).config
    slot, segment, n_labels = config.timestamp_token_id, processor.timestamp_segment_time, config.num_labels
    language = p.model.language
    clip_inputs(processor, np.zeros(16000, np.float32), "a", language)  # model.language checked before anything else runs
    known: dict[tuple[int, str], tuple[torch.Tensor, list[str]]] = {}  # a processor call runs the feature extractor: once per clip

    def make(ex: Example, num_samples: int) -> dict:
        if (num_samples, ex.text) not in known:  # the ids depend on the clip's length, not on its audio
            ids, _, words = clip_inputs(processor, np.zeros(num_samples, np.float32), ex.text, language)
            known[num_samples, ex.text] = ids, words
        ids, words = known[num_samples, ex.text]
        reason = problem(ex, processor, p)
        if reason:
            raise UserError(f"{ex.key}: cannot train the aligner: {reason}")
        at = (ids == slot).nonzero().squeeze(-1)
        if len(at) != 2 * len(words):
            raise UserError(f"the chat template gives {len(at)} <timestamp> slots for {len(words)} units: not a forced-aligner template")
        labels = torch.full_like(ids, -100)
        labels[at] = torch.tensor(to_bins([t for pair in ex.timestamps for t in pair], segment, n_labels))
        return {"input_ids": ids, "labels": labels}

    return make


def learned_logits(model, base, inputs: dict) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(the head's logits over time bins at the labelled slots, their labels, the (batch, positions) mask of the slots)."""
    inputs = dict(inputs)
    labels = inputs.pop("labels")
    hidden = inputs.pop("encoder_hidden", None)
    cached = contextlib.nullcontext()
    if hidden is not None:  # the tower is frozen and its outputs cached: they stand in for the features
        cached, inputs["input_features"] = audiollm.cached_tower(base, hidden, inputs["input_features_mask"]), hidden
    with cached:
        logits = model(**inputs, use_cache=False).logits
    learned = labels != -100
    return logits[learned], labels[learned], learned


def loss(model, base, inputs: dict, num_items_in_batch=None) -> torch.Tensor:
    """Cross-entropy over the labelled slots (shared.token_loss of learned_logits). The model's own loss is a
    per-batch mean that ignores num_items_in_batch, so under gradient accumulation the Trainer (which then
    skips its own division) would get gradients grad_accum times too large."""
    from asrtune.families.shared import token_loss

    return token_loss(*learned_logits(model, base, inputs), num_items_in_batch)


def encode(model, processor, audio: list[np.ndarray]) -> list[torch.Tensor]:
    """The audio tower's outputs at the frames that hold audio, one (frames, d) tensor per clip (the tower
    returns them packed; each clip's share is its number of audio tokens in the processor's input)."""
    model = audiollm._unwrap(model)
    feats, mask = audiollm._pad_time(features(processor, audio), 1, audiollm.ARCHS["qwen3_asr"].time_multiple)
    with torch.no_grad():
        hidden = encoder(model)(input_features=feats.to(model.device, model.dtype), input_features_mask=mask.to(model.device)).last_hidden_state
    counts = [int((clip_inputs(processor, np.zeros(len(a), np.float32), "a", None)[0] == model.config.audio_token_id).sum()) for a in audio]
    return list(torch.split(hidden, counts))


def align(model, processor, texts: list[str], audio: list[np.ndarray], language: str | None) -> list[list[tuple[str, float, float]]]:
    """(unit, start s, end s) per unit of each clip's `text`: one clip's inputs as training builds them,
    right-padded into a batch (a clip aligns the same whatever shares its batch), then the processor's
    decode_forced_alignment (argmax bin per slot, non-monotonic runs repaired)."""
    clips = [clip_inputs(processor, a, t, language) for a, t in zip(audio, texts)]
    pad = processor.tokenizer.pad_token_id if processor.tokenizer.pad_token_id is not None else processor.tokenizer.eos_token_id
    inputs = audiollm.text_batch([ids for ids, _, _ in clips], pad, side="right")
    inputs["input_features"], inputs["input_features_mask"] = audiollm._pad_time([f for _, f, _ in clips], 1, audiollm.ARCHS["qwen3_asr"].time_multiple)
    inputs = {k: v.to(model.device) for k, v in inputs.items()}
    inputs["input_features"] = inputs["input_features"].to(model.dtype)
    with torch.no_grad():
        logits = model(**inputs, use_cache=False).logits
    out = processor.decode_forced_alignment(logits.float(), inputs["input_ids"], [w for _, _, w in clips], model.config.timestamp_token_id)
    # a bin may lie past the clip's end (the head has bins for long audio): no time outside the audio
    return [[(w["text"], min(w["start_time"], len(a) / 16000), min(w["end_time"], len(a) / 16000)) for w in words]
            for words, a in zip(out, audio)]


def transcribe(model, processor, batch: list[Example], audio: list[np.ndarray], p, contexts=None) -> list[tuple[str, list]]:
    """(the reference transcript, its units' times) per clip. The aligner is given the transcript, so the
    CER decode/score compute for it is meaningless: its times are the result (metrics/alignment.json).
    `contexts` (context lists) are ignored: there is nothing to recognize (decode runs no list pass for it)."""
    texts = [e.text for e in batch]
    return list(zip(texts, align(model, processor, texts, audio, p.model.language)))
