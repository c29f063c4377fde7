"""Fun-ASR-Nano's official checkpoint layout <-> a transformers `FunAsrNanoForConditionalGeneration` directory.

The official layout (what FunASR trains, saves and decodes) is a directory with `model.pt` (every tensor of the
model: `audio_encoder.*`, `audio_adaptor.*`, `llm.*` and optionally the CTC head `ctc_decoder.*` + `ctc.ctc_lo.*`),
`config.yaml`, and `Qwen3-0.6B/` (the LLM's config.json and tokenizer; no weights). transformers >= 5.17 ships
the model natively under other names (`model.audio_tower.*`, `model.multi_modal_projector.*`,
`model.language_model.*`). Both directions go through one name rule, `_funasr_name`, and are strict: every
tensor mapped, every target filled, shapes equal, dtypes kept (bf16 stays bf16) so that a round trip is
bit-identical. What transformers has no place for (the CTC head, FunASR's own config.yaml) is carried beside
the model (`funasr_ctc.safetensors`, `funasr_config.yaml`) and written back by `to_funasr`.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import torch
import yaml

from asrtune.errors import UserError

AUDIO_TOKEN = "<|object_ref_start|>"  # Fun-ASR's audio placeholder in the Qwen3 vocabulary
CTC_PREFIXES = ("ctc_decoder.", "ctc.")  # the CTC head: no counterpart in transformers' model
CTC_FILE, CONFIG_FILE = "funasr_ctc.safetensors", "funasr_config.yaml"
LLM_DIR = "Qwen3-0.6B"

# The chat template a converted directory's processor gets (Fun-ASR's layout has none: FunASR builds its prompt in
# code), rendering that prompt for a transcription request: a default system turn; the user turn is [a context
# header with the text context and hotwords] + 语音转写[成<language>]： + the audio placeholder. The tiny test
# model (asrtune.testing) uses it too.
FUN_ASR_TEMPLATE = (
    "{% for m in messages %}"
    "{% if loop.first and m.role != 'system' %}<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ m.role }}\n"
    "{% if m.content is string %}{{ m.content }}"
    "{% else %}"
    "{% set texts = m.content | selectattr('type', 'equalto', 'text') | map(attribute='text') | list %}"
    "{% set words = namespace(all=[]) %}"
    "{% for c in m.content if c.type == 'keywords' %}{% set words.all = words.all + c.keywords %}{% endfor %}"
    "{% set language = m.content | selectattr('type', 'equalto', 'language') | map(attribute='language') | first %}"
    "{% if m.role == 'user' and (texts or words.all) %}"
    "请结合上下文信息，更加准确地完成语音转写任务。如果没有相关信息，我们会留空。\n\n\n**上下文信息：**\n\n\n"
    "{% for t in texts %}{{ t }}\n{% endfor %}"
    "{% if words.all %}热词列表：[{{ words.all | join(', ') }}]\n{% endif %}"
    "{% endif %}"
    "{% if m.role == 'user' %}语音转写{% if language %}成{{ language }}{% endif %}：{% endif %}"
    "{% for c in m.content if c.type == 'audio' %}<|object_ref_start|>{% endfor %}"
    "{% endif %}<|im_end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

# Per-layer module names: transformers -> FunASR (encoder layers and adaptor blocks share them).
_LAYER_NAMES = {
    "self_attn.q_proj": "self_attn.linear_q", "self_attn.k_proj": "self_attn.linear_k",
    "self_attn.v_proj": "self_attn.linear_v", "self_attn.o_proj": "self_attn.linear_out",
    "self_attn.fsmn.conv": "self_attn.fsmn_block", "mlp.fc1": "feed_forward.w_1", "mlp.fc2": "feed_forward.w_2",
    "input_layernorm": "norm1", "post_attention_layernorm": "norm2",
}
_QKV = {"self_attn.q_proj": 0, "self_attn.k_proj": 1, "self_attn.v_proj": 2}  # rows of the encoder's fused linear_q_k_v


def is_funasr_dir(path: Path) -> bool:
    """A Fun-ASR layout directory: what FunASR's `AutoModel(model=<dir>)` needs first."""
    return (path / "model.pt").is_file() and (path / "config.yaml").is_file()


def _funasr_name(hf: str, num_blocks: int, num_layers: int) -> tuple[str, int | None]:
    """THE key map, used both ways: a transformers key -> (FunASR key, third of the fused q|k|v tensor it
    holds, or None). The encoder's layers 0 / 1..num_blocks-1 / num_blocks.. are FunASR's encoders0.0 /
    encoders.i / tp_encoders.j; the final layer norms of layers num_blocks-1 and num_layers-1 are its
    after_norm and tp_norm."""
    if hf == "lm_head.weight":
        return "llm.lm_head.weight", None
    if hf.startswith("model.language_model."):
        return "llm.model." + hf.removeprefix("model.language_model."), None
    if m := re.fullmatch(r"model\.multi_modal_projector\.linear_([12])\.(weight|bias)", hf):
        return f"audio_adaptor.linear{m[1]}.{m[2]}", None
    if m := re.fullmatch(r"model\.multi_modal_projector\.layers\.(\d+)\.(.+)\.(weight|bias)", hf):
        if m[2] in _LAYER_NAMES:
            return f"audio_adaptor.blocks.{m[1]}.{_LAYER_NAMES[m[2]]}.{m[3]}", None
    if m := re.fullmatch(r"model\.audio_tower\.layers\.(\d+)\.(.+)\.(weight|bias)", hf):
        i, module, param = int(m[1]), m[2], m[3]
        if module == "final_layernorm" and i in (num_blocks - 1, num_layers - 1):
            return f"audio_encoder.{'after_norm' if i == num_blocks - 1 else 'tp_norm'}.{param}", None
        layer = "encoders0.0" if i == 0 else f"encoders.{i - 1}" if i < num_blocks else f"tp_encoders.{i - num_blocks}"
        if module in _QKV:
            return f"audio_encoder.{layer}.self_attn.linear_q_k_v.{param}", _QKV[module]
        if module in _LAYER_NAMES:
            return f"audio_encoder.{layer}.{_LAYER_NAMES[module]}.{param}", None
    raise UserError(f"transformers tensor {hf} has no Fun-ASR counterpart (is this a Fun-ASR-Nano model?)")


def _targets(config) -> dict[str, tuple[str, int | None, torch.Size]]:
    """transformers key -> (FunASR key, q|k|v third, shape) for every tensor of the model `config` describes
    (built on the meta device: no memory, no init)."""
    from transformers import FunAsrNanoForConditionalGeneration

    with torch.device("meta"):
        model = FunAsrNanoForConditionalGeneration(config)
    audio = config.audio_config
    num_blocks = audio.num_hidden_layers - audio.num_timestamp_prediction_layers
    return {k: (*_funasr_name(k, num_blocks, audio.num_hidden_layers), v.shape) for k, v in model.state_dict().items()}


def _offenders(kind: str, keys) -> str:
    keys = sorted(keys)
    return f"{len(keys)} {kind} ({', '.join(keys[:4])}{', ...' if len(keys) > 4 else ''})"


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """model.pt as FunASR saves it: a bare state dict, or wrapped in {"state_dict"} / {"model"} (training
    checkpoints carry optimizer state beside it), keys maybe prefixed `module.` (DDP)."""
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unpickling failure is a bad file for the user
        raise UserError(f"{path}: not a loadable PyTorch checkpoint ({type(e).__name__}: {e})") from e
    for wrapper in ("state_dict", "model"):
        if isinstance(obj, dict) and isinstance(obj.get(wrapper), dict):
            obj = obj[wrapper]
            break
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise UserError(f"{path}: expected a state dict of tensors (bare, or under 'state_dict' or 'model')")
    return {k.removeprefix("module."): v for k, v in obj.items()}


def _llm_dir(src: Path, cfg: dict) -> Path:
    """The Qwen3 config + tokenizer directory: `Qwen3-0.6B/`, else `llm_conf.init_param_path` (relative to
    the model directory; a training run's absolute path is tried as given, then by its last component)."""
    given = Path(str((cfg.get("llm_conf") or {}).get("init_param_path") or LLM_DIR))
    for candidate in (src / LLM_DIR, src / given, given, src / given.name):
        if (candidate / "config.json").is_file():
            return candidate
    raise UserError(f"{src}: no LLM config directory ({LLM_DIR}/ or llm_conf.init_param_path {given}) with config.json")


def build_config(cfg: dict, text_config: dict, audio_token_id: int):
    """FunAsrNanoConfig from FunASR's config.yaml (missing keys take FunASR's class defaults) and the Qwen3
    config.json. The adaptor's LayerNorm eps stays transformers' 1e-5 (FunASR's adaptor uses 1e-12; the
    official -hf conversion and the C++ port use 1e-5; the parity test measures the difference)."""
    from transformers import FunAsrNanoConfig

    enc, adp, fe = cfg.get("audio_encoder_conf") or {}, cfg.get("audio_adaptor_conf") or {}, cfg.get("frontend_conf") or {}
    if enc.get("sanm_shfit", 0) != 0 or adp.get("downsample_rate", 1) != 1 or fe.get("cmvn_file"):
        raise UserError("config.yaml: sanm_shfit != 0, adaptor downsample_rate != 1 or a cmvn_file: transformers' "
                        "FunAsrNano supports none of them")
    num_blocks, tp_blocks = enc.get("num_blocks", 6), enc.get("tp_blocks", 0)
    if tp_blocks < 1:
        raise UserError("config.yaml: audio_encoder_conf.tp_blocks must be >= 1 (transformers' FunAsrNano always has timestamp layers)")
    hidden = text_config["hidden_size"]  # FunASR overrides llm_dim with the LLM's hidden size
    config = FunAsrNanoConfig(
        audio_config={"model_type": "fun_asr_nano_encoder", "num_mel_bins": fe.get("n_mels", 80),
                      "num_stacked_frames": fe.get("lfr_m", 7), "hidden_size": enc.get("output_size", 256),
                      "num_attention_heads": enc.get("attention_heads", 4), "intermediate_size": enc.get("linear_units", 2048),
                      "num_hidden_layers": num_blocks + tp_blocks, "num_timestamp_prediction_layers": tp_blocks,
                      "fsmn_kernel_size": enc.get("kernel_size", 11), "hidden_dropout": enc.get("dropout_rate", 0.1),
                      "attention_dropout": enc.get("attention_dropout_rate", 0.0)},
        adaptor_config={"hidden_size": hidden, "intermediate_size": hidden // 4, "num_attention_heads": adp.get("attention_heads", 8),
                        "num_hidden_layers": adp.get("n_layer", 2), "projector_hidden_size": adp.get("ffn_dim", 2048),
                        "hidden_dropout": adp.get("dropout_rate", 0.0), "attention_dropout": adp.get("attention_dropout_rate", 0.0)},
        text_config=text_config, audio_token_id=audio_token_id,
        tie_word_embeddings=text_config.get("tie_word_embeddings", True))
    config.eos_token_id, config.pad_token_id = config.text_config.eos_token_id, config.text_config.pad_token_id
    return config


def to_transformers(src: Path, out: Path) -> str:
    """Convert a Fun-ASR layout directory into a transformers directory (model + processor), loadable offline
    with `AutoModelForSpeechSeq2Seq` / `AutoProcessor`. Returns a one-line summary."""
    from safetensors.torch import save_file
    from transformers import AutoTokenizer, FunAsrNanoFeatureExtractor, FunAsrNanoProcessor, GenerationConfig

    if not is_funasr_dir(src):
        raise UserError(f"{src}: not a Fun-ASR model directory (needs model.pt and config.yaml)")
    cfg = yaml.safe_load((src / "config.yaml").read_text(encoding="utf-8")) or {}
    llm_dir = _llm_dir(src, cfg)
    state = _read_state_dict(src / "model.pt")
    if not any(k.startswith("llm.") for k in state):
        raise UserError(f"{src / 'model.pt'}: no llm.* tensors. FunASR training drops them when config.yaml has "
                        "train_conf.effective_save_name_excludes: [llm.]; merge the base model's llm.* weights "
                        "into this checkpoint (or retrain with effective_save_name_excludes: []) and convert again")
    ctc = {k: v for k, v in state.items() if k.startswith(CTC_PREFIXES)}
    core = {k: v for k, v in state.items() if k not in ctc}

    tokenizer = AutoTokenizer.from_pretrained(llm_dir, padding_side="left")
    audio_token_id = tokenizer.convert_tokens_to_ids(AUDIO_TOKEN)
    if audio_token_id is None or audio_token_id == tokenizer.unk_token_id:
        raise UserError(f"{llm_dir}: tokenizer has no {AUDIO_TOKEN} token (Fun-ASR's audio placeholder)")
    config = build_config(cfg, json.loads((llm_dir / "config.json").read_text(encoding="utf-8")), audio_token_id)
    targets = _targets(config)

    used = {fa for fa, _, _ in targets.values()}
    missing = {hf for hf, (fa, _, _) in targets.items() if fa not in core}
    tensors, bad_shapes = {}, {}
    for hf, (fa, third, shape) in targets.items():
        if fa in core:
            whole = core[fa]
            t = whole if third is None or whole.shape[0] % 3 else whole.chunk(3)[third]  # fused q|k|v: row thirds
            tensors[hf] = t.contiguous()
            if t.shape != shape:
                bad_shapes[fa] = f"{fa} {tuple(whole.shape)}"
    problems = [_offenders("missing tensors", {targets[h][0] for h in missing}) if missing else "",
                _offenders("unknown tensors", core.keys() - used) if core.keys() - used else "",
                f"{len(bad_shapes)} shapes unlike config.yaml ({', '.join(list(bad_shapes.values())[:4])})" if bad_shapes else ""]
    if any(problems):
        raise UserError(f"{src / 'model.pt'}: " + "; ".join(p for p in problems if p))

    if config.tie_word_embeddings:
        if torch.equal(tensors["lm_head.weight"], tensors["model.language_model.embed_tokens.weight"]):
            del tensors["lm_head.weight"]  # tied: transformers restores it from the embeddings
        else:  # a checkpoint whose head drifted from its embeddings: keep both, untied
            config.tie_word_embeddings = config.text_config.tie_word_embeddings = False
    dtypes = {t.dtype for t in tensors.values()}
    config.dtype = str(next(iter(dtypes)) if len(dtypes) == 1 else torch.float32).removeprefix("torch.")

    out.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(out / "model.safetensors"), metadata={"format": "pt"})
    config.save_pretrained(out)
    GenerationConfig.from_model_config(config).save_pretrained(out)
    fe = cfg.get("frontend_conf") or {}
    feature_extractor = FunAsrNanoFeatureExtractor(
        feature_size=fe.get("n_mels", 80), sampling_rate=fe.get("fs", 16000), frame_length=fe.get("frame_length", 25),
        frame_shift=fe.get("frame_shift", 10), num_frames_lfr=fe.get("lfr_m", 7), stride_lfr=fe.get("lfr_n", 6),
        window=fe.get("window", "hamming"), return_attention_mask=True)
    FunAsrNanoProcessor(feature_extractor, tokenizer, chat_template=FUN_ASR_TEMPLATE).save_pretrained(out)
    shutil.copyfile(src / "config.yaml", out / CONFIG_FILE)
    if ctc:
        save_file({k: v.contiguous() for k, v in ctc.items()}, str(out / CTC_FILE), metadata={"format": "pt"})
    n_params = sum(v.numel() for v in core.values())
    return (f"{src}: {len(core)} tensors mapped ({n_params:,} parameters, {'/'.join(sorted(str(d)[6:] for d in dtypes))}); "
            + (f"CTC head ({len(ctc)} tensors) kept aside in {CTC_FILE}" if ctc else "no CTC head"))


def carry_beside(src: Path, out: Path) -> list[str]:
    """Copy what a converted directory carries beside its model (the CTC head, FunASR's config.yaml) from
    `src` to `out`; returns the names copied."""
    copied = [name for name in (CTC_FILE, CONFIG_FILE) if (src / name).is_file()]
    for name in copied:
        shutil.copyfile(src / name, out / name)
    return copied


def _read_safetensors(model_dir: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    files = sorted(model_dir.glob("model*.safetensors"))
    if not files:
        raise UserError(f"{model_dir}: no model*.safetensors (not a transformers model directory)")
    return {k: v for f in files for k, v in load_file(f).items()}


def _generated_config(config, llm_dir: str) -> dict:
    """A minimal FunASR config.yaml for a model that never came from one: the fields FunASR builds the model
    from (§6.6 of the layout notes), with `effective_save_name_excludes: []` so that further FunASR training
    keeps saving the llm.* weights."""
    audio, adp = config.audio_config, config.adaptor_config
    num_blocks = audio.num_hidden_layers - audio.num_timestamp_prediction_layers
    return {
        "model": "FunASRNano", "model_conf": {"lsm_weight": 0.1, "length_normalized_loss": True},
        "audio_encoder": "SenseVoiceEncoderSmall",
        "audio_encoder_conf": {"output_size": audio.hidden_size, "attention_heads": audio.num_attention_heads,
                               "linear_units": audio.intermediate_size, "num_blocks": num_blocks,
                               "tp_blocks": audio.num_timestamp_prediction_layers, "dropout_rate": audio.hidden_dropout,
                               "positional_dropout_rate": audio.hidden_dropout, "attention_dropout_rate": audio.attention_dropout,
                               "input_layer": "pe", "pos_enc_class": "SinusoidalPositionEncoder", "normalize_before": True,
                               "kernel_size": audio.fsmn_kernel_size, "sanm_shfit": 0, "selfattention_layer_type": "sanm",
                               "freeze": True},
        "llm": "Qwen3-0.6b",
        "llm_conf": {"hub": "hf", "freeze": True, "llm_dtype": "bf16", "init_param_path": llm_dir, "use_lora": False},
        "audio_adaptor": "Transformer",
        "audio_adaptor_conf": {"downsample_rate": 1, "use_low_frame_rate": True, "ffn_dim": adp.projector_hidden_size,
                               "llm_dim": adp.hidden_size, "encoder_dim": audio.hidden_size, "n_layer": adp.num_hidden_layers,
                               "attention_heads": adp.num_attention_heads, "freeze": True},
        "frontend": "WavFrontend",
        "frontend_conf": {"fs": 16000, "window": "hamming", "n_mels": audio.num_mel_bins, "frame_length": 25,
                          "frame_shift": 10, "lfr_m": audio.num_stacked_frames, "lfr_n": 6, "cmvn_file": None},
        "tokenizer": "HuggingfaceTokenizer", "tokenizer_conf": {"init_param_path": llm_dir},
        "train_conf": {"effective_save_name_excludes": []},
    }


def to_funasr(model_dir: Path, out: Path, dtypes_of: Path | None = None) -> str:
    """Export a transformers FunAsrNano directory (e.g. a fine-tuned, merged model) to the Fun-ASR layout:
    `model.pt` = {"state_dict": every tensor, llm.* and an explicit llm.lm_head.weight included, in the
    dtype stored in model_dir or, given `dtypes_of` (the model it was tuned from), in that model's dtype per
    tensor, plus the carried CTC head}; `config.yaml` (the carried one, else generated);
    `Qwen3-0.6B/` (config.json + tokenizer, no weights). Returns a one-line summary."""
    from safetensors.torch import load_file
    from transformers import AutoConfig, AutoTokenizer

    config = AutoConfig.from_pretrained(model_dir)
    if config.model_type != "fun_asr_nano":
        raise UserError(f"{model_dir}: model_type {config.model_type!r}, expected fun_asr_nano")
    tensors = _read_safetensors(model_dir)
    if "lm_head.weight" not in tensors and config.tie_word_embeddings:
        tensors["lm_head.weight"] = tensors.get("model.language_model.embed_tokens.weight")
    targets = _targets(config)
    missing = {hf for hf in targets if tensors.get(hf) is None}
    unknown = tensors.keys() - targets.keys()
    bad = [f"{hf} {tuple(tensors[hf].shape)}" for hf, (_, _, shape) in targets.items() if hf not in missing and tensors[hf].shape != shape]
    if missing or unknown or bad:
        problems = [_offenders("missing tensors", missing) if missing else "", _offenders("unknown tensors", unknown) if unknown else "",
                    f"{len(bad)} wrong shapes ({', '.join(bad[:4])})" if bad else ""]
        raise UserError(f"{model_dir}: " + "; ".join(p for p in problems if p))

    state = _funasr_state(tensors, targets)
    rounding = ""
    if dtypes_of is not None:
        source = _read_safetensors(dtypes_of)
        if "lm_head.weight" not in source and config.tie_word_embeddings:
            source["lm_head.weight"] = source.get("model.language_model.embed_tokens.weight")
        state, rounding = _as_source_dtypes(state, _funasr_state(source, targets))
    order = ("audio_encoder.", "llm.", "audio_adaptor.")  # FunASRNano's module order (for readers; loading is by name)
    state = {k: state[k] for prefix in order for k in state if k.startswith(prefix)}
    if (model_dir / CTC_FILE).is_file():
        state.update(load_file(model_dir / CTC_FILE))

    carried = model_dir / CONFIG_FILE
    llm_dir = LLM_DIR
    if carried.is_file():
        given = ((yaml.safe_load(carried.read_text(encoding="utf-8")) or {}).get("llm_conf") or {}).get("init_param_path")
        llm_dir = given if given and not Path(given).is_absolute() else LLM_DIR
    out.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": state}, out / "model.pt")
    if carried.is_file():
        shutil.copyfile(carried, out / "config.yaml")
    else:
        (out / "config.yaml").write_text(yaml.safe_dump(_generated_config(config, llm_dir), sort_keys=False, allow_unicode=True), encoding="utf-8")
    config.text_config.save_pretrained(out / llm_dir)
    AutoTokenizer.from_pretrained(model_dir).save_pretrained(out / llm_dir)
    n_ctc = sum(k.startswith(CTC_PREFIXES) for k in state)
    return (f"{out}: model.pt with {len(state)} tensors ({sum(v.numel() for v in state.values()):,} parameters, llm.* included), "
            f"config.yaml {'carried over' if carried.is_file() else 'generated'}, "
            + (f"CTC head ({n_ctc} tensors) restored" if n_ctc else "no CTC head") + rounding)


def _funasr_state(tensors: dict, targets: dict) -> dict:
    """transformers-named tensors -> Fun-ASR-named ones (fused encoder q|k|v joined back)."""
    parts: dict[str, list] = {}
    for hf, (fa, third, _) in targets.items():
        parts.setdefault(fa, [None, None, None] if third is not None else [None])[third or 0] = tensors[hf]
    return {fa: p[0].clone() if len(p) == 1 else torch.cat(p) for fa, p in parts.items()}


def _as_source_dtypes(state: dict, source: dict) -> tuple[dict, str]:
    """Cast each exported tensor to the dtype of the same tensor in the model it was tuned from (Fun-ASR's
    runtime loads bf16 anyway), and say how much of the fine-tuning's update survives that rounding."""
    changed = kept = 0
    out = {}
    for name, t in state.items():
        src = source.get(name)
        if src is None or src.dtype == t.dtype:
            out[name] = t
            continue
        out[name] = t.to(src.dtype)
        moved = t != src.to(t.dtype)
        changed += int(moved.sum())
        kept += int((out[name].to(t.dtype) != src.to(t.dtype))[moved].sum())
    note = f"; in the source's dtypes, {kept:,} of {changed:,} elements the fine-tuning changed keep a change" if changed else ""
    return out, note
