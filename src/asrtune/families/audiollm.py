"""The `audiollm` family: the speech LLMs transformers ships, loaded and trained through its own
classes (`AutoModelForSpeechSeq2Seq`, `AutoProcessor`): Fun-ASR-Nano (`fun_asr_nano`) and Qwen3-ASR
(`qwen3_asr`). Both are `model.audio_tower` + `model.multi_modal_projector` + `model.language_model`
(+ `lm_head`): the audio tower's outputs, projected, replace the audio placeholder tokens of a chat
prompt, and the LLM writes the transcript.

The prompt is the checkpoint's own chat template (`processor.apply_transcription_request`), in
training and decoding alike; the loss covers the transcript and `<|im_end|>` only, chosen by position
(labels), so left and right padding give the same loss. Another architecture with the same three
parts is one more entry in ARCHS.

Qwen3-ASR with `model.language: null` gets no forced `language X<asr_text>` in its prompt: it writes
that header itself, and decoding strips it. Training then learns the header too (as Qwen's own SFT
recipe does), or fine-tuning would teach the model to stop naming the language; X is told from the
transcript's script (`header_language`), and a transcript whose script cannot tell it does not train.
"""

from __future__ import annotations

import contextlib
import re
import unicodedata
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from asrtune.corpus.chatml import Example
from asrtune.corpus.timestamps import _cjk
from asrtune.errors import UserError
from asrtune.families.registry import AUDIOLLM_TYPES
from asrtune.families.shared import check_targets, context_text, freeze_parts, max_new_tokens, row_log_probs, token_loss

NAME = "audiollm"
CACHE_TAG = "audio frames only"  # the cache holds the audio tower's frames that hold audio
HAS_ADAPTOR = True
FP16_OK = False  # LLMs overflow in fp16 (Fun-ASR's own issue tracker: "!!!!" output): fp32 on GPUs without bf16
END = "<|im_end|>"
DEFAULT_LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


@dataclass(frozen=True)
class Arch:
    """What differs between the architectures: how hotwords reach the prompt, and where the time axis
    of the features is (Fun-ASR: (frames, 560) stacked fbank; Qwen3-ASR: (128 mels, frames), padded
    to a multiple of `time_multiple` frames)."""

    processor: str  # its processor class (a Prompt or features() only has the processor in hand)
    hotwords_as: str  # the apply_transcription_request argument that takes them
    time_axis: int
    time_multiple: int = 1
    names_language: bool = False  # with no language forced, it writes `language X<asr_text>` before the transcript


ARCHS = {  # one per registry.AUDIOLLM_TYPES
    "fun_asr_nano": Arch(processor="FunAsrNanoProcessor", hotwords_as="keywords", time_axis=0),
    "qwen3_asr": Arch(processor="Qwen3ASRProcessor", hotwords_as="prompt", time_axis=1, time_multiple=100, names_language=True),
}


def arch_of(model) -> Arch:
    return ARCHS[model.config.model_type]


def load_plain(path: Path):
    from transformers import AutoModelForSpeechSeq2Seq

    model = AutoModelForSpeechSeq2Seq.from_pretrained(path, local_files_only=True, dtype=torch.float32)
    adaptor = getattr(model.config, "adaptor_config", None)
    if adaptor is not None and adaptor._attn_implementation is None:
        # transformers 5.23 leaves Fun-ASR-Nano's adaptor config without an attention implementation, and
        # its mask is then dropped: padded frames leak into every shorter clip's audio embeddings (a clip
        # decodes differently by what shares its batch). With the model's own implementation the mask holds.
        adaptor._attn_implementation = model.config._attn_implementation
    return model


def load_processor(path: Path):
    from transformers import AutoProcessor

    return AutoProcessor.from_pretrained(path, local_files_only=True)


def max_positions(model) -> int:
    """The LLM's positions: prompt, audio tokens and transcript together."""
    return model.config.text_config.max_position_embeddings


def _unwrap(model):
    return model.get_base_model() if hasattr(model, "get_base_model") else model  # peft


def encoder(model):
    return _unwrap(model).model.audio_tower


def parts(model) -> dict[str, list[torch.nn.Module]]:
    """freeze flag -> the modules it names (the LM head is tied to the LLM's embeddings)."""
    inner = model.model
    return {"encoder": [inner.audio_tower], "adaptor": [inner.multi_modal_projector], "llm": [inner.language_model, model.lm_head]}


def freeze(model, freeze_encoder: bool, freeze_adaptor: bool, freeze_llm: bool) -> None:
    """A frozen part gets no gradients and stays in eval mode (no dropout) whenever the Trainer puts
    the model in training mode (Fun-ASR's own trainer lets dropout run in its frozen encoder)."""
    flags = {"encoder": freeze_encoder, "adaptor": freeze_adaptor, "llm": freeze_llm}
    freeze_parts(model, [(modules, flags[part]) for part, modules in parts(model).items()])


LAYER = r"^model\.language_model\.layers\.\d+\."  # the LLM's decoder blocks (the audio tower has q/k/v projections too)


def lora_config(r: int, alpha: float, dropout: float, target_modules: list[str] | None, train_encoder: bool,
                train_adaptor: bool, model=None):
    """LoRA on the language model's linear layers only; an unfrozen audio tower or projector trains fully alongside."""
    from peft import LoraConfig

    targets = target_modules or DEFAULT_LORA_TARGETS
    if model is not None:
        check_targets(targets, [n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear) and re.match(LAYER, n)])
    names = "|".join(re.escape(t) for t in targets)
    trained = [name for name, on in (("audio_tower", train_encoder), ("multi_modal_projector", train_adaptor)) if on]
    return LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=rf"{LAYER}(?:.*\.)?(?:{names})$",
                      modules_to_save=trained or None)


class Prompt:
    """The checkpoint's transcription prompt as token ids, its audio placeholder expanded to a clip's
    number of audio tokens, exactly as the processor expands it for decoding; with a context list
    (`hotwords`: decode.hotwords' in decoding, train.hotwords' in training, built here for both), Fun-ASR-Nano's
    热词列表：[...] header, Qwen3-ASR's system context. An empty list is no list: the plain prompt."""

    def __init__(self, processor, language: str | None, hotwords: list[str] | None = None):
        self.processor, self.tokenizer = processor, processor.tokenizer
        self.arch = arch = _arch_of_processor(processor)
        extra = {arch.hotwords_as: hotwords if arch.hotwords_as == "keywords" else context_text(hotwords)} if hotwords else {}
        try:
            self.text = processor.apply_transcription_request([np.zeros(1, np.float32)], language=language, tokenize=False, **extra)[0]
        except ValueError as e:  # e.g. a language the checkpoint was not trained with
            raise UserError(f"model.language={language!r}: {str(e).splitlines()[0]}") from None
        self.end = self.tokenizer.convert_tokens_to_ids(END)
        self.pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.end
        self._by_length: dict[int, tuple[int, ...]] = {}  # the ids depend on the clip's length only

    def clip(self, audio: np.ndarray) -> tuple[tuple[int, ...], torch.Tensor]:
        """(prompt ids, features) of one clip, from one processor call: the processor itself decides how
        many audio tokens a clip of this length gets."""
        out = self.processor(text=[self.text], audio=[audio], return_tensors="pt")
        self._by_length[len(audio)] = tuple(out["input_ids"][0].tolist())
        return self._by_length[len(audio)], _valid_frames(out, self.arch.time_axis)

    def ids(self, num_samples: int) -> tuple[int, ...]:
        """The prompt ids for a clip of `num_samples` (training knows the length; the audio may be cached)."""
        if num_samples not in self._by_length:
            self.clip(np.zeros(num_samples, np.float32))
        return self._by_length[num_samples]

    def target(self, text: str, header: str = "") -> list[int]:
        """The transcript as generation produces it (tokenized on its own, after the prompt and any
        `header`), then <|im_end|>. The header ends in `<asr_text>`, a token of its own, so the ids are
        those of the forced prompt's tail followed by the transcript's."""
        tokens = self.tokenizer([header, text], add_special_tokens=False)["input_ids"]
        return tokens[0] + tokens[1] + [self.end]


def _arch_of_processor(processor) -> Arch:
    name = type(processor).__name__
    for arch in ARCHS.values():
        if arch.processor == name:
            return arch
    raise UserError(f"the audiollm family has no prompt for a {name} (known: {', '.join(AUDIOLLM_TYPES)})")


def header_language(text: str) -> str | None:
    """The language Qwen3-ASR is to name for a transcript when none is forced, told by its script
    (asrtune's corpora are Mandarin, some with English in it): any Chinese character -> Chinese, the
    label the default `model.language: zh` already puts before every utterance, code-switched ones
    included; Latin letters only -> English. None where the script cannot tell: kana or hangul
    (Japanese and Korean write Chinese characters too), another script, no letter at all.
    Cantonese is written in Chinese characters too: its corpora set model.language: yue."""
    letters = [c for c in text if c.isalpha()]
    names = [unicodedata.name(c, "") for c in letters]
    if any(script in name for name in names for script in ("HIRAGANA", "KATAKANA", "HANGUL")):
        return None
    if any(_cjk(c) for c in letters):
        return "Chinese"
    if letters and all("LATIN" in name for name in names):
        return "English"
    return None


NO_LANGUAGE = ("no_language: with model.language null, Qwen3-ASR learns to name the language before the transcript, told "
               "from its script (Chinese characters: Chinese; Latin letters only: English), and this one's does not tell; "
               "set model.language to force one")


def _names_language(processor, p) -> bool:
    """Training must teach the `language X<asr_text>` header: no language is forced and the model writes it."""
    return p.model.language is None and _arch_of_processor(processor).names_language


def problem(ex: Example, processor, p) -> str | None:
    """Why `ex` cannot train the model (checked before training, like a too-long transcript); None when it can."""
    return NO_LANGUAGE if _names_language(processor, p) and header_language(ex.text) is None else None


def item_maker(model, processor, p, context=None):
    """example, num_samples -> the text-side training inputs: input_ids = prompt + target, labels = -100
    over the prompt (system and its context, user, audio, assistant header, Qwen3-ASR's forced `language X<asr_text>`),
    then the target: the transcript and <|im_end|>, after Qwen3-ASR's own `language X<asr_text>` when
    none is forced (what it generates then, and decoding strips). `context(example)`, where given, is its
    context list (train.hotwords): the prompt is then the one decoding sends with that list."""
    prompts = {(): Prompt(processor, p.model.language)}  # one per list: a Prompt keeps its ids per clip length
    names_language = _names_language(processor, p)

    def make(ex: Example, num_samples: int) -> dict:
        header = ""
        if names_language:
            if (language := header_language(ex.text)) is None:
                raise UserError(f"{ex.key}: {NO_LANGUAGE}")
            header = f"language {language}<asr_text>"  # as the processor writes a forced one
        words = tuple(context(ex)) if context else ()
        if words not in prompts:
            prompts[words] = Prompt(processor, p.model.language, list(words))
        prompt = prompts[words]
        head, target = list(prompt.ids(num_samples)), prompt.target(ex.text, header)
        return {"input_ids": torch.tensor(head + target), "labels": torch.tensor([-100] * len(head) + target)}

    return make


def features(processor, audio: list[np.ndarray]) -> list[torch.Tensor]:
    """Each clip's features on its own, trimmed to the frames that hold audio: the same values whatever
    else is in the batch (a batched extractor pads the waveform, which changes the last frames)."""
    axis = _arch_of_processor(processor).time_axis
    return [_valid_frames(processor.feature_extractor([a], sampling_rate=16000, padding=True, return_tensors="pt",
                                                      return_attention_mask=True), axis) for a in audio]


def _valid_frames(one_clip, axis: int) -> torch.Tensor:
    """The features of a one-clip extractor (or processor) output, trimmed to its mask: (frames, d) or (mels, frames)."""
    mask = one_clip.get("input_features_mask", one_clip.get("attention_mask"))
    x, valid = one_clip["input_features"][0], int(mask[0].sum())
    return x[:valid] if axis == 0 else x[:, :valid]


def _pad_time(clips: list[torch.Tensor], axis: int, multiple: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Zero-pad clips along their time axis to the longest (rounded up to `multiple`): (batch, mask)."""
    lengths = [c.shape[axis] for c in clips]
    width = -(-max(lengths) // multiple) * multiple
    padded = [torch.nn.functional.pad(c, (0, 0, 0, width - n) if axis == 0 else (0, width - n)) for c, n in zip(clips, lengths)]
    mask = torch.tensor([[1] * n + [0] * (width - n) for n in lengths], dtype=torch.long)
    return torch.stack(padded), mask


def text_batch(rows: list[torch.Tensor], pad: int, side: str = "right") -> dict:
    """Padded input_ids, attention_mask, and position_ids counted over real tokens only, so that a row
    gets the same positions whichever side it is padded on."""
    width = max(len(r) for r in rows)

    def place(r, fill):
        gap = torch.full((width - len(r),), fill, dtype=r.dtype)
        return torch.cat([r, gap] if side == "right" else [gap, r])

    ids = torch.stack([place(r, pad) for r in rows])
    mask = torch.stack([place(torch.ones_like(r), 0) for r in rows])
    return {"input_ids": ids, "attention_mask": mask, "position_ids": (mask.cumsum(-1) - 1).clamp(min=0)}


def collator(model, processor, side: str = "right"):
    """batch of items -> model inputs: text padded on `side`, features (or cached audio-tower frames) padded in time."""
    tokenizer = processor.tokenizer
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.convert_tokens_to_ids(END)
    arch = arch_of(model)

    def collate(batch: list[dict]) -> dict:
        out = text_batch([b["input_ids"] for b in batch], pad, side)
        labels = text_batch([b["labels"] for b in batch], -100, side)["input_ids"]
        out["labels"] = labels
        if "encoder_hidden" in batch[0]:  # (frames, d) each
            out["encoder_hidden"], out["input_features_mask"] = _pad_time([b["encoder_hidden"] for b in batch], 0, 1)
        else:
            out["input_features"], out["input_features_mask"] = _pad_time([b["input_features"] for b in batch], arch.time_axis, arch.time_multiple)
        return out

    return collate


@contextlib.contextmanager
def cached_tower(base, hidden: torch.Tensor, mask: torch.Tensor):
    """The audio tower hands back cached outputs instead of running: Fun-ASR's projector takes them
    padded (batch, frames, d) with the mask; Qwen3-ASR's, packed (all valid frames, d)."""
    from transformers.modeling_outputs import BaseModelOutput

    tower = base.model.audio_tower
    packed = hidden[mask.bool()] if base.config.model_type == "qwen3_asr" else hidden
    tower.forward = lambda *args, **kwargs: BaseModelOutput(last_hidden_state=packed)
    try:
        yield
    finally:
        del tower.forward


def learned_logits(model, base, inputs: dict) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(logits where a token is learned, those tokens, the (batch, positions) mask of where they are), the
    vocabulary projection run only there. The forward goes through `model` (peft, DDP); a hook on `base`'s
    head picks the positions."""
    inputs = dict(inputs)
    labels = inputs.pop("labels")
    targets = labels[:, 1:]
    learned = targets != -100
    hook = base.lm_head.register_forward_pre_hook(lambda module, args: (args[0][:, :-1][learned],))
    hidden = inputs.pop("encoder_hidden", None)
    cached = contextlib.nullcontext()
    if hidden is not None:  # the tower is frozen and its outputs cached: they stand in for the features
        cached, inputs["input_features"] = cached_tower(base, hidden, inputs["input_features_mask"]), hidden
    try:
        with cached:
            logits = model(**inputs, use_cache=False).logits
    finally:
        hook.remove()
    return logits, targets[learned], learned


def loss(model, base, inputs: dict, num_items_in_batch=None) -> torch.Tensor:
    """Cross-entropy over the learned tokens (shared.token_loss of learned_logits)."""
    return token_loss(*learned_logits(model, base, inputs), num_items_in_batch)


def encode(model, processor, audio: list[np.ndarray]) -> list[torch.Tensor]:
    """The audio tower's outputs at the frames that hold audio, one (frames, d) tensor per clip."""
    model = _unwrap(model)
    arch = arch_of(model)
    feats, mask = _pad_time(features(processor, audio), arch.time_axis, arch.time_multiple)
    tower = encoder(model)
    with torch.no_grad():
        hidden = tower(input_features=feats.to(model.device, model.dtype), input_features_mask=mask.to(model.device)).last_hidden_state
    if hidden.dim() == 2:  # packed: Qwen3-ASR returns every clip's valid frames in one sequence
        prompt = Prompt(processor, None)
        counts = [sum(1 for t in prompt.ids(len(a)) if t == model.config.audio_token_id) for a in audio]
        return list(torch.split(hidden, counts))
    return [h[: int(m.sum())] for h, m in zip(hidden, mask)]


def _parse(processor, ids) -> list[str]:
    """Generated ids -> transcripts, with the processor's own parser where it has one (Qwen3-ASR: the
    text after `<asr_text>`, should the model still write a language header)."""
    if hasattr(processor, "extract_transcription"):
        return [processor.decode(row, return_format="transcription_only") for row in ids]
    return processor.tokenizer.batch_decode(ids, skip_special_tokens=True)


def read_hotwords(path: str | None) -> list[str] | None:
    """decode.hotwords: a term list file, as score's term lists (asrtune.evaluation.terms)."""
    from asrtune.evaluation.terms import read_terms

    return read_terms(Path(path), "decode.hotwords") if path else None


def generation_inputs(model, processor, audio: list[np.ndarray], language: str | None,
                      contexts: list[list[str] | None] | None = None):
    """(inputs for generate(), the prompt): the checkpoint's prompt per clip (with its context list, where
    `contexts` gives one), left-padded, and the clips' features."""
    arch = arch_of(model)
    contexts = contexts or [None] * len(audio)
    prompts = {words: Prompt(processor, language, list(words)) for words in dict.fromkeys(tuple(c or ()) for c in contexts)}
    prompt = next(iter(prompts.values()))  # every one has the same end and pad tokens
    clips = [prompts[tuple(c or ())].clip(a) for c, a in zip(contexts, audio)]  # ids and features from one processor call per clip
    inputs = text_batch([torch.tensor(ids) for ids, _ in clips], prompt.pad, side="left")
    inputs.pop("position_ids")  # generate() counts them from the attention mask
    inputs["input_features"], inputs["input_features_mask"] = _pad_time([f for _, f in clips], arch.time_axis, arch.time_multiple)
    inputs = {k: v.to(model.device) for k, v in inputs.items()}
    inputs["input_features"] = inputs["input_features"].to(model.dtype)
    return inputs, prompt


def transcribe(model, processor, batch: list[Example], audio: list[np.ndarray], p,
               contexts: list[list[str] | None] | None = None) -> list[str]:
    """Greedy (or beam) generation after the checkpoint's prompt (with each clip's context list from `contexts`:
    decode.hotwords'), with the repetition guard: at most max_tokens_per_second per second of the longest clip (+8) new tokens."""
    from transformers import GenerationConfig

    inputs, prompt = generation_inputs(model, processor, audio, p.model.language, contexts)
    d = p.decode
    config = GenerationConfig(do_sample=False, num_beams=d.num_beams, max_new_tokens=max_new_tokens(audio, d), eos_token_id=prompt.end,
                              pad_token_id=prompt.pad, no_repeat_ngram_size=d.no_repeat_ngram_size or None)
    with torch.no_grad():
        out = model.generate(**inputs, generation_config=config)
    return _parse(processor, out[:, inputs["input_ids"].shape[1]:])


def score(model, processor, audio: list[np.ndarray], texts: list[str], p) -> list[float]:
    """Each text's log-probability given its clip after the plain prompt (no context list), teacher-forced as
    training reads a transcript: its tokens and <|im_end|> (decode.hotwords_bonus compares two transcripts so).
    Qwen3-ASR naming the language itself: after the header training teaches for the text (an empty or
    script-less one: `language None`, what it writes for no speech)."""
    prompt = Prompt(processor, p.model.language)
    names_language = _names_language(processor, p)
    items = []
    for clip, text, feats in zip(audio, texts, features(processor, audio)):
        header = f"language {header_language(text)}<asr_text>" if names_language else ""
        head, target = list(prompt.ids(len(clip))), prompt.target(text, header)
        items.append({"input_ids": torch.tensor(head + target), "labels": torch.tensor([-100] * len(head) + target),
                      "input_features": feats})
    inputs = {k: v.to(model.device) for k, v in collator(model, processor)(items).items()}
    inputs["input_features"] = inputs["input_features"].to(model.dtype)
    with torch.no_grad():
        return row_log_probs(*learned_logits(model, _unwrap(model), inputs))
