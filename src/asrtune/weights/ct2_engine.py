"""decode.engine=ctranslate2: Whisper through CTranslate2, the runtime faster-whisper is built on.

`convert` writes a model directory with CTranslate2's own converter, in the layout faster-whisper
reads (model.bin, config.json, vocabulary.json, tokenizer.json, preprocessor_config.json), so
`faster_whisper.WhisperModel("models/ct2/merged")` loads it too. Decoding is batched, with the same
features, prompt, greedy/beam setting and repetition guard as the transformers engine.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from asrtune.errors import UserError
from asrtune.families.shared import max_new_tokens, whisper_context, whisper_prompt

# by default weights are stored in float16, as faster-whisper's published models are (half the size of
# float32; CTranslate2 computes them as float32 on a CPU); decode.compute_type stores them in another type
QUANTIZATION = "float16"


def stored_type(compute_type: str) -> str:
    """decode.compute_type -> the type the convert stage stores the weights in (and decode computes in)."""
    return QUANTIZATION if compute_type == "default" else compute_type
# CTranslate2's Whisper generates at most max_length / 2 new tokens (OpenAI's sample_len = n_text_ctx // 2),
# so max_length is twice the repetition guard's budget, and at most Whisper's 448 positions
MAX_LENGTH = 448
MODEL_FILES = ("model.bin", "config.json", "tokenizer.json", "preprocessor_config.json")


def check_family(family: str) -> None:
    """CTranslate2 has a Whisper model, not the audio LLMs."""
    if family != "whisper":
        raise UserError(f"decode.engine=ctranslate2: CTranslate2 runs the whisper family only, and model.base is an "
                        f"{family} model (use decode.engine=transformers)")


def convert(model_dir: Path, out: Path, quantization: str = QUANTIZATION) -> None:
    """A transformers Whisper directory -> a CTranslate2 one, its weights stored as `quantization`."""
    from ctranslate2.converters import TransformersConverter
    from transformers import WhisperFeatureExtractor

    TransformersConverter(str(model_dir), copy_files=["tokenizer.json"]).convert(str(out), quantization=quantization, force=True)
    # transformers 5 keeps the feature settings in processor_config.json; faster-whisper reads preprocessor_config.json
    WhisperFeatureExtractor.from_pretrained(model_dir, local_files_only=True).save_pretrained(out)


def new_tokens(max_length: int, prompt: list[int]) -> int:
    """How many tokens CTranslate2's Whisper generates at most after `prompt` (measured on CTranslate2 4.8)."""
    return min(max_length // 2, max_length - len(prompt) + 1)


class Engine:
    """A loaded CTranslate2 Whisper with its feature extractor and tokenizer."""

    def __init__(self, ct2_dir: Path, compute_type: str = "default"):
        missing = [f for f in MODEL_FILES if not (ct2_dir / f).is_file()]
        if missing:
            raise UserError(f"{ct2_dir}: not a CTranslate2 model (no {', '.join(missing)}); "
                            "run `dvc repro` so the convert stage writes it with decode.engine=ctranslate2")
        import logging

        import ctranslate2
        from tokenizers import Tokenizer
        from transformers import WhisperFeatureExtractor

        ctranslate2.set_log_level(logging.ERROR)  # "float16 computes as float32 on this CPU": we print the compute type
        device = "cuda" if ctranslate2.get_cuda_device_count() > 0 else "cpu"
        self.model = ctranslate2.models.Whisper(str(ct2_dir), device=device, compute_type=compute_type)
        self.features = WhisperFeatureExtractor.from_pretrained(ct2_dir, local_files_only=True)
        self.tokenizer = Tokenizer.from_file(str(ct2_dir / "tokenizer.json"))
        self.device = f"{device} ({self.model.compute_type})"

    def prompt(self, language: str, task: str, context: list[str] | None = None) -> list[int]:
        """The transformers engine's prompt (whisper.prompt_ids), a context list's previous text first."""
        prev = whisper_context(context, lambda text: self.tokenizer.encode(text, add_special_tokens=False).ids,
                               self.tokenizer.token_to_id("<|startofprev|>"))
        return whisper_prompt(language, task, self.tokenizer.token_to_id, context=prev)  # unknown -> None

    def transcribe(self, audio: list[np.ndarray], p, contexts: list[list[str] | None] | None = None) -> list[str]:
        """`contexts`: a context list per clip (None: none); each run of clips with the same list is one call."""
        import itertools

        contexts = contexts or [None] * len(audio)
        out = []
        for context, run in itertools.groupby(range(len(audio)), key=lambda i: tuple(contexts[i] or ())):
            out += self._transcribe([audio[i] for i in run], p, list(context))
        return out

    def _transcribe(self, audio: list[np.ndarray], p, context: list[str]) -> list[str]:
        import ctranslate2

        d = p.decode
        feats = self.features(audio, sampling_rate=16000, return_tensors="np").input_features
        prompt = self.prompt(p.model.language, p.model.task, context)
        # CTranslate2 generates min(max_length // 2, max_length - len(prompt) + 1) new tokens (see new_tokens): the
        # max_length that allows max_new of them after a context list's previous text too, within Whisper's 448
        max_new = min(MAX_LENGTH // 2, max_new_tokens(audio, d), MAX_LENGTH - len(prompt) + 1)
        results = self.model.generate(ctranslate2.StorageView.from_array(np.ascontiguousarray(feats, dtype=np.float32)),
                                      [prompt] * len(audio), beam_size=d.num_beams, max_length=max(2 * max_new, max_new + len(prompt) - 1),
                                      no_repeat_ngram_size=d.no_repeat_ngram_size,
                                      suppress_blank=False)  # an empty transcript may come first (whisper.begin_suppress)
        return [self.tokenizer.decode(r.sequences_ids[0], skip_special_tokens=True) for r in results]
