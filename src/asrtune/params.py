"""params.yaml: load and validate, so a typo or a bad value fails in one line before any compute."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from asrtune.errors import UserError

PARAMS_FILE = Path("params.yaml")
WINDOW_SECONDS = 30.0  # Whisper's encoder window; the audio LLMs are trained by their makers on clips up to about 30 s too
Name = Annotated[str, Field(pattern=r"^[A-Za-z0-9_]+$")]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Model(Strict):
    # offline:whisper-base, a local model directory (transformers: whisper, fun_asr_nano, qwen3_asr; or
    # Fun-ASR's own layout: model.pt + config.yaml + Qwen3-0.6B/), or a hub id. Its config decides the family
    base: str = "offline:whisper-base"
    # the transcription language, training and decoding alike: whisper's language token; the audio LLMs'
    # prompt (Fun-ASR-Nano: 语音转写成中文：; Qwen3-ASR: the forced "language Chinese<asr_text>").
    # null: Fun-ASR's plain 语音转写： / Qwen3-ASR detects the language (whisper needs one)
    language: str | None = "zh"
    task: Literal["transcribe", "translate"] = "transcribe"
    # training and decoding alike. auto: bf16 on a GPU that has it; without (T4, V100) whisper fp16,
    # audio LLMs fp32; fp32 on a CPU. bf16 on a CPU runs too (slowly): how dtype bugs are caught without a GPU
    precision: Literal["auto", "bf16", "fp16", "fp32"] = "auto"

    @model_validator(mode="before")
    @classmethod
    def _retired(cls, raw):
        for key in ("family", "llm", "adaptor"):
            if isinstance(raw, dict) and key in raw:
                raise ValueError(f"model.{key} is gone: the model's own config decides the family (whisper, fun_asr_nano, "
                                 "qwen3_asr); the home-made speechllm was retired, use a Fun-ASR-Nano or Qwen3-ASR checkpoint as model.base")
        return raw


class Corpus(Strict):
    # general | domain: split into train/val/test, train and val mixed; test | domain_test: evaluation only (all of
    # it is the test set: never split into train or val, never mixed, never trained on), test's speech general (score
    # counts it as forgetting), domain_test's the domain's (score counts it in domain_gain); nonspeech: clips with
    # nothing to transcribe (every transcript empty), split like the others, mixed at mix.stages.<s>.nonspeech
    role: Literal["general", "domain", "test", "domain_test", "nonspeech"]
    # a demo topic (demo/<topic>.yaml; or a non-speech spec, demo/nonspeech.yaml), a Kaldi dir, a folder of
    # audio + .txt, a folder of media + same-stem subtitles (.srt .vtt .ass), a .csv/.tsv, or a Fun-ASR ChatML .jsonl
    source: str
    format: Literal["auto", "demo", "kaldi", "folder", "csv", "chatml", "subtitles"] = "auto"
    utterances: Annotated[int, Field(gt=0)] | None = None  # demo only: how many of the topic's sentences; None = all
    speakers: Annotated[int, Field(gt=0)] = 20  # demo only
    # demo only: how many of `speakers` have held-out voices (styles / eSpeak variants no training speaker uses);
    # they alternate val, test; the others are training speakers, all train. None = a fifth (at least 2).
    # role test or domain_test: every speaker is held out
    heldout_speakers: Annotated[int, Field(ge=2)] | None = None
    voice: Literal["kokoro", "espeak"] = "kokoro"  # demo only: kokoro (neural) | espeak (robotic, fast)
    seed: int = 0  # demo only
    path_column: str | None = None  # csv only: default path|audio|wav|file
    text_column: str | None = None  # csv only: default text|transcript|sentence
    speaker_column: str | None = None  # csv only: default speaker|spk|client_id when present
    id_column: str | None = None  # csv only: default id|utt_id|key when present, else the audio file stem
    split_column: str | None = None  # csv only: default split when present: train|val|dev|test fixes a row's split
    # subtitles only: cues at most this many seconds apart (and of one speaker) merge into one utterance while it
    # stays within data.max_duration; a longer gap always ends an utterance. 0: only cues that touch merge
    cue_gap: Annotated[float, Field(ge=0)] = 1.0
    # score: a term list file (one term per line, # comments) for term recall; null = the list ingest
    # wrote for a demo topic (data/ingest/<c>/terms.txt), else none
    terms: str | None = None

    @property
    def evaluation_only(self) -> bool:
        """All of it is the test set: never split into train or val, never mixed, never trained on."""
        return self.role in ("test", "domain_test")

    @model_validator(mode="after")
    def _heldout(self):
        if self.heldout_speakers is not None:
            if self.evaluation_only:
                raise ValueError(f"heldout_speakers: every speaker of a role: {self.role} corpus is held out; drop the key")
            if self.heldout_speakers >= self.speakers:
                raise ValueError(f"heldout_speakers ({self.heldout_speakers}) must be below speakers ({self.speakers}): "
                                 "the others are the training speakers")
        return self


class Data(Strict):
    corpora: dict[Name, Corpus]
    min_duration: Annotated[float, Field(ge=0)] = 0.1
    max_duration: Annotated[float, Field(gt=0)] = 30.0

    @field_validator("corpora")
    @classmethod
    def _roles(cls, corpora):
        if not corpora:
            raise ValueError("declare at least one corpus")
        return corpora


class Jsonl(Strict):
    system: str = "You are a helpful assistant."
    prompt: str = "语音转写："
    audio_paths: Literal["relative", "absolute"] = "relative"


class Split(Strict):
    ratios: tuple[float, float, float] = (0.8, 0.1, 0.1)
    # speaker: speakers disjoint; text: every copy of a (normalized) sentence in one split; speaker_text:
    # both (speakers and the sentences they share link into groups); utterance: each on its own
    by: Literal["speaker", "speaker_text", "text", "utterance"] = "speaker"
    seed: int = 42

    @field_validator("ratios")
    @classmethod
    def _ratios(cls, r):
        if any(x < 0 for x in r) or not math.isclose(sum(r), 1.0, abs_tol=1e-6):
            raise ValueError(f"must be three non-negative numbers (train, val, test) summing to 1, got {list(r)}")
        if min(r) == 0:
            raise ValueError("every share must be above 0 (train learns, val picks the best checkpoint, test is scored)")
        return r


class MixStage(Strict):
    general: Annotated[float, Field(ge=0, lt=1)]  # share of the mix from the role general corpora
    nonspeech: Annotated[float, Field(ge=0, lt=1)] = 0.0  # share from the role nonspeech corpora (empty transcripts)

    @model_validator(mode="after")
    def _shares(self):
        if self.general + self.nonspeech >= 1:
            raise ValueError(f"general ({self.general}) + nonspeech ({self.nonspeech}) must stay below 1: the rest is domain speech")
        return self


class Mix(Strict):
    seed: int = 42
    stages: dict[Name, MixStage]

    @field_validator("stages")
    @classmethod
    def _nonempty(cls, stages):
        if not stages:
            raise ValueError("declare at least one curriculum stage")
        return stages


class Lora(Strict):
    r: Annotated[int, Field(ge=0)] = 16  # 0 = full fine-tuning of the unfrozen decoder/LLM
    alpha: Annotated[float, Field(gt=0)] = 32
    dropout: Annotated[float, Field(ge=0, lt=1)] = 0.05
    target_modules: list[str] | None = None  # module-name suffixes inside decoder/LLM layers; None = the family's default

    @field_validator("target_modules")
    @classmethod
    def _targets(cls, targets):
        if targets is not None and not targets:
            raise ValueError("an empty list names no layer: give module names, or null for the family's default")
        return targets


class TrainStage(Strict):
    init: str  # models/base, or models/finetune/<an earlier stage>: where this stage starts from
    epochs: Annotated[float, Field(gt=0)] = 2
    learning_rate: Annotated[float, Field(gt=0)] = 1e-4
    # this stage's own freeze flags; unset = train.freeze_* (e.g. the adaptor alone first, LoRA on the LLM last)
    freeze_encoder: bool | None = None
    freeze_adaptor: bool | None = None
    freeze_llm: bool | None = None


class TrainHotwords(Strict):
    # contextual biasing: each training prompt carries a context list as decoding's decode.hotwords does, built per
    # utterance (seeded by `seed` and its key) from the term list `terms`: the terms its transcript holds, each
    # left out with probability `drop`, plus `distractors` other terms of the list, shuffled; a share `empty` of
    # the utterances gets no list. The loss never covers the list
    enabled: bool = False
    terms: str | None = None  # a term list file (one per line, # comments), e.g. data/hotwords/medical.txt
    distractors: Annotated[int, Field(ge=0)] = 10
    near: Annotated[int, Field(ge=0)] = 0  # of the distractors, the terms closest in pinyin to the transcript
    drop: Annotated[float, Field(ge=0, le=1)] = 0.2
    empty: Annotated[float, Field(ge=0, le=1)] = 0.5  # chosen on the demo's val splits against 0.2 (RESULTS.md)
    seed: int = 0

    @model_validator(mode="after")
    def _list(self):
        if self.enabled and self.terms is None:
            raise ValueError("train.hotwords.enabled: set train.hotwords.terms, the term list the context lists come from")
        return self


class Train(Strict):
    freeze_encoder: bool = True
    freeze_adaptor: bool = True
    freeze_llm: bool = False
    lora: Lora = Lora()
    batch_size: Annotated[int, Field(gt=0)] = 16
    grad_accum: Annotated[int, Field(gt=0)] = 1
    warmup: Annotated[float, Field(ge=0, lt=1)] = 0.1  # share of the steps
    weight_decay: Annotated[float, Field(ge=0)] = 0.0
    seed: int = 42
    cache_encoder: bool = True  # frozen encoder: compute its outputs once, reuse every epoch and stage
    cache_dtype: Literal["float16", "float32"] = "float16"
    save_steps: Annotated[int, Field(ge=0)] = 0  # evaluate and checkpoint every N steps; 0 = every epoch
    gradient_checkpointing: bool = False  # recompute activations in the backward pass: less memory, ~30% slower steps
    # loss = cross-entropy + distill x KL(teacher || tuned) at the learned positions of general-role utterances
    # (learning without forgetting); the teacher is the stage's init model. 0 = off
    distill: Annotated[float, Field(ge=0)] = 0.0
    # processes (one GPU each, DDP through torchrun); auto = every visible GPU. Without a GPU, N CPU
    # processes (gloo): how the several-GPU path is tested. The global batch is batch_size x grad_accum x devices
    devices: Annotated[int, Field(gt=0)] | Literal["auto"] = 1
    hotwords: TrainHotwords = TrainHotwords()
    stages: dict[Name, TrainStage]

    def frozen(self, stage: str) -> tuple[bool, bool, bool]:
        """(encoder, adaptor, llm) frozen in curriculum stage `stage`: its own flags, else the global ones."""
        s = self.stages[stage]
        flags = ("freeze_encoder", "freeze_adaptor", "freeze_llm")
        return tuple(getattr(self, k) if getattr(s, k) is None else getattr(s, k) for k in flags)


CT2_COMPUTE_TYPES = Literal["default", "int8", "int8_float32", "int8_float16", "int8_bfloat16", "int16",
                            "float16", "bfloat16", "float32"]


class Decode(Strict):
    engine: Literal["transformers", "ctranslate2"] = "transformers"  # ctranslate2: the whisper family only
    compute_type: CT2_COMPUTE_TYPES = "default"  # ctranslate2 only: the stored (and computed) type; default = float16 (float32 on a CPU)
    batch_size: Annotated[int, Field(gt=0)] = 16
    num_beams: Annotated[int, Field(gt=0)] = 1
    # repetition guard: at most this many new tokens per second of the batch's longest clip (+8),
    # and no repeated n-grams of this size (0 = off)
    max_tokens_per_second: Annotated[float, Field(gt=0)] = 8.0
    no_repeat_ngram_size: Annotated[int, Field(ge=0)] = 0
    # a term list file (one per line): a second decode pass puts it in the prompt as context (Whisper's previous
    # text, cut to its 224 tokens; Fun-ASR-Nano's 热词列表; Qwen3-ASR's system context), scored as <model>+hotwords
    # beside the plain pass; null = no second pass
    hotwords: str | None = None
    # with hotwords: each utterance gets only the N terms closest in pinyin to its first-pass hypothesis (a list
    # longer than a prompt holds); null = the whole list
    hotwords_select: Annotated[int, Field(gt=0)] | None = None
    # with hotwords: only terms at most this far in pinyin from the first pass (hotwords.distance: 0 = it heard the
    # term or a homophone, 1 = nothing like it); null = no bound
    hotwords_max_distance: Annotated[float, Field(ge=0)] | None = None
    # with hotwords: a second-pass transcript holding terms its first pass lacks stands only if the model, given the
    # plain prompt, finds it at most this many nats a gained term token less likely than the first pass
    # (hotwords.keeps), nor one that stopped at the max-new-tokens guard where the first did not; null = it always stands
    hotwords_bonus: Annotated[float, Field(ge=0)] | None = None
    # word timestamps beside the transcripts (whisper: transformers' cross-attention alignment), scored
    # against the test sets' reference timestamps into metrics/alignment.json
    timestamps: bool = False


class Align(Strict):
    # timestamps from the base aligner (model.base: a Qwen3-ForcedAligner) for utterances that have none, to
    # train on; never scored against (agreement with the base model, not accuracy)
    pseudo_labels: bool = False


class Normalize(Strict):
    traditional_to_simplified: bool = True
    numbers_to_arabic: bool = True
    remove_punctuation: bool = True
    lowercase: bool = True
    fullwidth_to_halfwidth: bool = True


class Score(Strict):
    bootstrap: Annotated[int, Field(gt=0)] = 1000  # resamples of the test utterances behind each 95% interval
    seed: int = 42


class Longform(Strict):
    # the long-form evaluation (stage longform): each listed corpus's test speakers' clips joined, with pauses, into
    # recordings, transcribed as `asrtune transcribe` does and scored against the joined references. [] = none
    corpora: list[Name] = []
    max_seconds: Annotated[float, Field(gt=0)] = 180.0  # a recording's length at most (a longer clip is one on its own)
    min_seconds: Annotated[float, Field(ge=0)] = 60.0  # at least, where the speaker has that much audio
    # [shortest, longest] seconds of silence between two clips, drawn uniformly
    pause: tuple[Annotated[float, Field(ge=0)], Annotated[float, Field(ge=0)]] = (0.3, 1.5)
    seed: int = 0  # the pauses (with the corpus's and speaker's names)

    @field_validator("corpora")
    @classmethod
    def _once(cls, corpora):
        if len(set(corpora)) != len(corpora):
            raise ValueError("a corpus is listed twice")
        return corpora

    @field_validator("pause")
    @classmethod
    def _pause(cls, pause):
        if pause[0] > pause[1]:
            raise ValueError(f"[shortest, longest] seconds, the shortest first, got {list(pause)}")
        return pause

    @model_validator(mode="after")
    def _lengths(self):
        if self.min_seconds > self.max_seconds:
            raise ValueError(f"longform.min_seconds ({self.min_seconds}) is above longform.max_seconds ({self.max_seconds})")
        return self


Scale = Annotated[float, Field(gt=0, le=1)]


class Merge(Strict):
    # models/merged = base + scale x (tuned - base), base = models/base (WiSE-FT weight interpolation); 1 = the tuned model.
    # auto: the sweep stage's choice, the largest of `sweep` whose general val CER change stays within max_general_change
    scale: Scale | Literal["auto"] = 1.0
    # scale auto: the scales the sweep stage decodes the val splits with (besides 0, models/base itself)
    sweep: list[Scale] = [0.25, 0.5, 0.75, 1.0]
    # scale auto: the bound you choose on the pooled general val CER change (scale - base; 0.005 = half a point)
    max_general_change: Annotated[float, Field(ge=0)] = 0.005

    @field_validator("sweep")
    @classmethod
    def _sweep(cls, scales):
        if not scales:
            raise ValueError("give at least one scale to try")
        if len(set(scales)) != len(scales):
            raise ValueError("a scale is listed twice")
        return sorted(scales)


class Params(Strict):
    model: Model = Model()
    data: Data
    jsonl: Jsonl = Jsonl()
    split: Split = Split()
    mix: Mix
    train: Train
    decode: Decode = Decode()
    align: Align = Align()
    normalize: Normalize = Normalize()
    score: Score = Score()
    merge: Merge = Merge()
    longform: Longform = Longform()

    @model_validator(mode="after")
    def _durations(self):
        if self.data.min_duration > self.data.max_duration:
            raise ValueError(f"data.min_duration ({self.data.min_duration}) is above data.max_duration "
                             f"({self.data.max_duration}): nothing would be accepted")
        if self.data.max_duration > WINDOW_SECONDS:
            raise ValueError(f"data.max_duration: {self.data.max_duration} s is above {WINDOW_SECONDS:g} s: a Whisper encoder would cut "
                             "longer clips silently, and the audio LLMs loop on them (Fun-ASR cuts audio at 30 s with VAD)")
        return self

    @model_validator(mode="after")
    def _longform_corpora(self):
        unknown = [c for c in self.longform.corpora if c not in self.data.corpora]
        if unknown:
            raise ValueError(f"longform.corpora: {', '.join(unknown)} is not a corpus of data.corpora "
                             f"({', '.join(self.data.corpora)})")
        return self

    @model_validator(mode="after")
    def _stages_agree(self):
        mix_names, train_names = list(self.mix.stages), list(self.train.stages)
        if mix_names != train_names:
            raise ValueError(f"train.stages must name the mix.stages in the same order: {mix_names}, got {train_names}")
        allowed = ["models/base"]
        for name, stage in self.train.stages.items():
            if stage.init.rstrip("/") not in allowed:
                raise ValueError(f"train.stages.{name}.init must be one of {allowed}, got {stage.init!r}")
            allowed.append(f"models/finetune/{name}")
        return self


def _describe(error: dict) -> str:
    key = ".".join(str(p) for p in error["loc"])
    message = error["msg"].removeprefix("Value error, ")
    if error["type"] == "extra_forbidden":
        return f"{key}: unknown key"
    if error["type"] == "missing":
        return f"{key}: required key is missing"
    if not key:  # a rule across keys: its message names them
        return message
    return f"{key}: {message} (got {error.get('input')!r})"


def load(path: Path = PARAMS_FILE) -> Params:
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"{path}: not found (run asrtune from the repository root)") from None
    except yaml.YAMLError as e:
        raise UserError(f"{path}: not valid YAML: {str(e).splitlines()[0]}") from None
    try:
        return Params.model_validate(raw or {})
    except ValidationError as e:
        raise UserError(f"{path}: " + "; ".join(_describe(err) for err in e.errors())) from None
