"""One GPU check in one run: bf16 training steps, the precision of a bf16-merged model, and decode throughput, at the
real shapes of Fun-ASR-Nano-2512, Qwen3-ASR-0.6B and Whisper large-v3 (random weights built in code: no downloads).

1. train: one training setting as the finetune stage sets it up (the family's `freeze`, peft LoRA r=16 alpha 32 on the
   LLM / decoder through `<family>.lora_config`, encoder and adaptor frozen, the tower's outputs cached first as
   EncoderCache stores them: float16, read back as float32), `hf_trainer.FamilyTrainer` with the family's loss, AdamW
   (the Trainer's default), float32 weights under bf16 autocast. Batch of 8 clips of ~10 s with ~40-token
   transcripts. Reported: seconds per step (median after warm-up, the device synchronized at every step end) and
   torch.cuda.max_memory_allocated over the steps (reset per model).
2. merge: a model whose weights are bf16 values (as the released checkpoints store them) gets a LoRA-like update
   dW = B @ A (rank 16, scaled to a mean |dW| of 1e-4 and of 3e-5) on the family's LoRA targets, in float32.
   (a) the share of dW's elements that vanish when the merged weight is cast to bf16 (and dW's relative error);
   (b) logits of a teacher-forced batch: float32 weights under bf16 autocast and weights cast to bf16, each against
   float32 weights without autocast (TF32 off), and how much of dW's own effect on the logits each keeps;
   (c) greedy tokens (32 new, end of text suppressed) of a few clips, their agreement with the float32 reference.
3. decode: generate() throughput at batch 16 (10 s clips, 48 new tokens each, end suppressed: a fixed amount of work),
   weights in bf16 against float32 weights under bf16 autocast (what decode runs: the precision training used),
   with the peak memory of each.

Every model and section runs on its own: a failure is written into the results and the rest still run; past
--budget-s no further model starts (the results say which were skipped). Results go to OUT/gpu_check.json and
OUT/gpu_check.md after every model.

    python3 benchmarks/gpu_check.py --out OUT                              # CUDA, real shapes (~3-5 min on an H200)
    uv run python benchmarks/gpu_check.py --device cpu --small --out /tmp/gc   # tiny shapes: a smoke run (~1-2 min)
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import platform
import statistics
import sys
import tempfile
import time
import traceback
import types
import warnings
from pathlib import Path
from types import SimpleNamespace

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
try:
    import asrtune  # noqa: F401
except ImportError:  # not installed (the device machine): the source tree
    sys.path.insert(0, str(REPO / "src"))
try:
    import soundfile  # noqa: F401
except (ImportError, OSError):  # the device image has no soundfile; nothing here reads audio files
    sys.modules["soundfile"] = types.ModuleType("soundfile")

SR = 16000
LORA = (16, 32, 0.05)  # params.yaml's train.lora: r, alpha, dropout
SETTING = "LoRA r=16 on the LLM (asrtune default)"  # audiollm_memory.SETTINGS: encoder and adaptor frozen
WHISPER_PROMPT = [50258, 50260, 50360, 50364]  # large-v3: <|startoftranscript|> <|zh|> <|transcribe|> <|notimestamps|>
WHISPER_EOS = 50257
MODELS = {"train": ["Fun-ASR-Nano-2512", "Qwen3-ASR-0.6B", "whisper-large-v3"],
          "merge": ["Qwen3-ASR-0.6B", "whisper-large-v3"],
          "decode": ["whisper-large-v3", "Qwen3-ASR-0.6B"]}


def say(*args) -> None:
    print(*args, flush=True)


# ---------------------------------------------------------------- devices and memory

def sync(dev) -> None:
    import torch

    if dev.type == "cuda":
        torch.cuda.synchronize()


def free(dev) -> None:
    import torch

    gc.collect()
    if dev.type == "cuda":
        torch.cuda.empty_cache()


def reset_peak(dev) -> None:
    import torch

    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats()


def gib(n: float | None) -> float | None:
    return None if n is None else round(n / 2**30, 3)


def peak(dev) -> float | None:
    import torch

    return gib(torch.cuda.max_memory_allocated()) if dev.type == "cuda" else None


def allocated(dev) -> float | None:
    import torch

    return gib(torch.cuda.memory_allocated()) if dev.type == "cuda" else None


def autocast(dev, on: bool):
    """What decode and training run the float32 weights in: asrtune's precision.autocast where it has one."""
    import torch

    from asrtune.weights import precision

    if hasattr(precision, "autocast"):
        return precision.autocast("bf16" if on else "fp32", dev)
    return torch.autocast(dev.type, dtype=torch.bfloat16, enabled=on)


def cast_params(model, dtype) -> None:
    """Parameters only (tied ones once): buffers such as the rotary inv_freq stay float32, as they are computed."""
    for p in model.parameters():
        p.data = p.data.to(dtype)


# ---------------------------------------------------------------- models

def tokenizer():
    from asrtune.testing import demo_texts, tiny_qwen_tokenizer

    return tiny_qwen_tokenizer(demo_texts(REPO / "demo"))


def whisper_config(small: bool):
    from transformers import WhisperConfig

    size = (dict(d_model=64, encoder_layers=2, decoder_layers=2, encoder_attention_heads=2, decoder_attention_heads=2,
                 encoder_ffn_dim=128, decoder_ffn_dim=128) if small else
            dict(d_model=1280, encoder_layers=32, decoder_layers=32, encoder_attention_heads=20, decoder_attention_heads=20,
                 encoder_ffn_dim=5120, decoder_ffn_dim=5120))
    return WhisperConfig(vocab_size=51866, num_mel_bins=128, max_source_positions=1500, max_target_positions=448,
                         pad_token_id=WHISPER_EOS, bos_token_id=WHISPER_EOS, eos_token_id=WHISPER_EOS,
                         decoder_start_token_id=WHISPER_PROMPT[0], **size)


def audiollm_config(name: str, small: bool, tok):
    """audiollm_memory's real-shape configs (tiny ones with --small), with the tiny tokenizer's ids."""
    from audiollm_memory import config_of
    from transformers import Qwen3ASRConfig

    from asrtune.testing import tiny_text_config

    if name == "Fun-ASR-Nano-2512":
        config = config_of("tiny Fun-ASR-Nano" if small else name, tok)
    elif small:  # asrtune.testing.write_tiny_qwen3_asr's shapes
        config = Qwen3ASRConfig(audio_config={"model_type": "qwen3_asr_encoder", "num_mel_bins": 128, "encoder_layers": 2,
                                              "encoder_attention_heads": 2, "encoder_ffn_dim": 32, "d_model": 16,
                                              "output_dim": 32, "downsample_hidden_size": 8},
                                text_config=tiny_text_config(tok))
    else:
        config = config_of(name)
    if config.model_type == "qwen3_asr":
        config.audio_token_id = tok.convert_tokens_to_ids("<|audio_pad|>")
    config.eos_token_id, config.pad_token_id = tok.convert_tokens_to_ids("<|im_end|>"), tok.pad_token_id
    return config


def build(name: str, small: bool, tok, dev):
    """(model with bf16-valued float32 weights on `dev`, family module, processor, seconds to build)."""
    import torch
    import transformers

    from asrtune.families import registry

    start = time.perf_counter()
    torch.manual_seed(0)
    if name.startswith("whisper"):
        from transformers import WhisperFeatureExtractor

        fam, cls, config = registry.get("whisper"), transformers.WhisperForConditionalGeneration, whisper_config(small)
        processor = SimpleNamespace(feature_extractor=WhisperFeatureExtractor(feature_size=128))  # what whisper.encode reads
    else:
        from audiollm_memory import family_of

        from asrtune.testing import QWEN3_ASR_TEMPLATE

        try:
            from asrtune.weights.funasr_layout import FUN_ASR_TEMPLATE
        except ImportError:  # where it used to live
            from asrtune.testing import FUN_ASR_TEMPLATE

        config = audiollm_config(name, small, tok)
        fam, cls = family_of(config)
        if config.model_type == "fun_asr_nano":
            processor = transformers.FunAsrNanoProcessor(transformers.FunAsrNanoFeatureExtractor(return_attention_mask=True), tok,
                                                         chat_template=FUN_ASR_TEMPLATE)
        else:
            processor = transformers.Qwen3ASRProcessor(transformers.Qwen3ASRFeatureExtractor(), tok, chat_template=QWEN3_ASR_TEMPLATE)
    with torch.device(dev):
        model = cls(config)
    adaptor = getattr(model.config, "adaptor_config", None)
    if adaptor is not None:  # as audiollm.load_plain does
        adaptor._attn_implementation = model.config._attn_implementation
    cast_params(model, torch.bfloat16)  # the released checkpoints' values, loaded as float32 (as asrtune loads them)
    cast_params(model, torch.float32)
    model.eval()
    sync(dev)
    return model, fam, processor, time.perf_counter() - start


def clips(n: int, seconds: float, seed: int, spread: float = 0.0) -> list[np.ndarray]:
    """Tones with noise: n clips of seconds +- spread."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        t = np.arange(int(SR * (seconds + rng.uniform(-spread, spread)))) / SR
        tone = sum(np.sin(2 * np.pi * f * t) for f in rng.uniform(150, 2000, 3)) * np.sin(2 * np.pi * rng.uniform(1, 4) * t)
        out.append((0.05 * tone + 0.02 * rng.standard_normal(len(t))).astype(np.float32))
    return out


def transcript(tok, words: list[str], tokens: int, rng) -> str:
    text = ""
    while len(tok(text, add_special_tokens=False)["input_ids"]) < tokens:
        text += str(rng.choice(words))
    return text


class WhisperIds:
    """A tokenizer stand-in for whisper.decoder_sequences: the 'text' is already token ids."""

    eos_token_id = WHISPER_EOS

    def __call__(self, text, add_special_tokens=False):
        return {"input_ids": list(text)}


# ---------------------------------------------------------------- 1. training steps

def train_one(name: str, a, tok, dev, tmp: Path) -> dict:
    import torch
    from audiollm_memory import set_up, unique
    from transformers import PrinterCallback

    from asrtune.corpus.chatml import Example
    from asrtune.families import whisper
    from asrtune.testing import demo_texts
    from asrtune.train import hf_trainer

    model, fam, processor, build_s = build(name, a.small, tok, dev)
    rng = np.random.default_rng(1)
    audio = clips(2 * a.batch, a.seconds, 1, spread=0.5)  # two batches' worth, lengths differ a little
    start = time.perf_counter()
    hidden = []
    for i in range(0, len(audio), a.batch):  # the cache fill: the frozen tower's outputs, float16 on disk, float32 back
        hidden += [h.half().float().cpu() for h in fam.encode(model, processor, audio[i:i + a.batch])]
    sync(dev)
    encode_s = time.perf_counter() - start
    if fam.NAME == "whisper":
        items = []
        for h in hidden:
            ids, labels = whisper.decoder_sequences(WhisperIds(), rng.integers(220, 50000, a.text_tokens).tolist(), WHISPER_PROMPT)
            items.append({"decoder_input_ids": torch.tensor(ids), "labels": torch.tensor(labels), "encoder_hidden": h})
    else:
        base = model
        make = fam.item_maker(base, processor, SimpleNamespace(model=SimpleNamespace(language=None)))
        words = demo_texts(REPO / "demo")
        items = [{**make(Example(f"clip-{i}", "", transcript(tok, words, a.text_tokens, rng)), len(x)), "encoder_hidden": h}
                 for i, (x, h) in enumerate(zip(audio, hidden))]
    model = set_up(model, SETTING, fam)  # the family's freeze, peft LoRA on the LLM / decoder, keep_fixed
    base = model.get_base_model()
    trainable, total = unique(p for p in model.parameters() if p.requires_grad), unique(model.parameters())
    args = hf_trainer.arguments(SimpleNamespace(batch_size=a.batch, grad_accum=1, warmup=0.1, weight_decay=0.0, save_steps=0, seed=42,
                                                gradient_checkpointing=False),
                                SimpleNamespace(epochs=1, learning_rate=1e-4), tmp / f"out-{name}", "bf16", max_steps=a.steps,
                                save_strategy="no", eval_strategy="no", load_best_model_at_end=False, disable_tqdm=True)

    class Timer(hf_trainer.StepTimer):  # the step's kernels finished before its end is read
        def on_step_end(self, *args, **kwargs):
            sync(dev)
            super().on_step_end(*args, **kwargs)

    timer = Timer()
    trainer = hf_trainer.FamilyTrainer(model=model, args=args, train_dataset=items, data_collator=fam.collator(base, processor),
                                       callbacks=[timer], family_loss=fam.loss)
    trainer.remove_callback(PrinterCallback)
    free(dev)
    before = allocated(dev)
    reset_peak(dev)
    start = time.perf_counter()
    trainer.train()
    sync(dev)
    train_s = time.perf_counter() - start
    steps = timer.intervals[a.warmup_steps:] or timer.intervals
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    text_tokens = [int((it["labels"] != -100).sum()) for it in items]
    seq = [len(it["input_ids" if "input_ids" in it else "decoder_input_ids"]) for it in items]
    return {"build_s": round(build_s, 2), "encode_s": round(encode_s, 2), "train_s": round(train_s, 2),
            "params": total, "trainable": trainable, "batch": a.batch, "clip_s": a.seconds,
            "frames_per_clip": int(statistics.median(h.shape[0] for h in hidden)),
            "seq_len_median": int(statistics.median(seq)), "learned_tokens_per_clip": int(statistics.median(text_tokens)),
            "step_s_median": round(statistics.median(steps), 4), "step_s_min": round(min(steps), 4), "step_s_max": round(max(steps), 4),
            "steps_timed": len(steps), "intervals": [round(s, 4) for s in timer.intervals],
            "loss_first_last": [losses[0], losses[-1]] if losses else None, "loss_finite": all(math.isfinite(x) for x in losses),
            "weights_etc_gib_before": before, "peak_gib": peak(dev)}


# ---------------------------------------------------------------- 2. merge precision

def lora_targets(model, fam) -> list:
    """The Linear modules that the family's LoRA set-up targets (peft matches its regex with re.fullmatch)."""
    import re

    import torch

    pattern = fam.lora_config(*LORA, None, train_encoder=False, train_adaptor=False).target_modules
    return [(n, m) for n, m in model.named_modules() if isinstance(m, torch.nn.Linear) and re.fullmatch(pattern, n)]


def deltas(targets, scale: float, seed: int, r: int = 16) -> dict:
    """dW = B @ A per target (rank r), scaled to a mean |dW| of `scale`: a merged LoRA's update, in float32."""
    import torch

    dev = targets[0][1].weight.device
    g = torch.Generator(device=dev).manual_seed(seed)
    out = {}
    for name, m in targets:
        o, i = m.weight.shape
        d = torch.randn(o, r, generator=g, device=dev) @ torch.randn(r, i, generator=g, device=dev)
        out[name] = d * (scale / d.abs().mean())
    return out


def set_weights(targets, w0: dict, dw: dict | None) -> None:
    """W0 (+ dW) written into the targets, in the parameters' own dtype (a bf16 parameter: the cast)."""
    for name, m in targets:
        m.weight.data.copy_(w0[name] + dw[name] if dw is not None else w0[name])


def teacher_inputs(name: str, model, fam, processor, tok, audio, dev, text_tokens: int):
    """(forward inputs, number of final positions compared): the prompt with the audio, then a transcript."""
    import torch

    if fam.NAME == "whisper":
        feats = fam.features(processor, audio).to(dev)
        rng = np.random.default_rng(2)
        ids = torch.tensor([WHISPER_PROMPT + rng.integers(220, 50000, text_tokens).tolist() for _ in audio], device=dev)
        return {"input_features": feats, "decoder_input_ids": ids}, ids.shape[1]
    inputs, prompt = fam.generation_inputs(model, processor, audio, None)
    from asrtune.testing import demo_texts

    text = tok(transcript(tok, demo_texts(REPO / "demo"), text_tokens, np.random.default_rng(2)), add_special_tokens=False)["input_ids"]
    text = torch.tensor(text[:text_tokens], device=dev).expand(len(audio), -1)
    inputs["input_ids"] = torch.cat([inputs["input_ids"], text], 1)
    inputs["attention_mask"] = torch.cat([inputs["attention_mask"], torch.ones_like(text)], 1)
    return inputs, text.shape[1] + 1  # the prompt's last position predicts the first transcript token


def logits(model, inputs: dict, positions: int, dev, with_autocast: bool):
    import torch

    dtype = next(model.parameters()).dtype
    inputs = {k: v.to(dtype) if k == "input_features" else v for k, v in inputs.items()}
    with torch.no_grad(), autocast(dev, with_autocast):
        return model(**inputs).logits[:, -positions:].float()


def generation_inputs(fam, model, processor, audio, dev):
    """(generate() kwargs, prompt length in the returned sequences or None when generate returns new tokens only)."""
    import torch

    if fam.NAME == "whisper":
        feats = fam.features(processor, audio).to(dev)
        return {"input_features": feats, "decoder_input_ids": torch.tensor([WHISPER_PROMPT] * len(audio), device=dev)}
    return fam.generation_inputs(model, processor, audio, None)[0]


def greedy(fam, model, inputs: dict, new: int, dev, with_autocast: bool, tok):
    """Greedy generation of exactly `new` tokens (end of text suppressed); the new tokens only."""
    import torch
    from transformers import GenerationConfig

    dtype = next(model.parameters()).dtype
    inputs = {k: v.to(dtype) if k == "input_features" else v for k, v in inputs.items()}
    with torch.no_grad(), autocast(dev, with_autocast):
        if fam.NAME == "whisper":
            out = model.generate(**inputs, max_new_tokens=new, min_new_tokens=new, do_sample=False, num_beams=1)
        else:
            end = tok.convert_tokens_to_ids("<|im_end|>")
            config = GenerationConfig(do_sample=False, num_beams=1, max_new_tokens=new, min_new_tokens=new, eos_token_id=end,
                                      pad_token_id=tok.pad_token_id)
            out = model.generate(**inputs, generation_config=config)
    return out[:, -new:]


def compare(a, ref) -> dict:
    d = (a - ref).abs()
    return {"max_abs": float(d.max()), "mean_abs": float(d.mean()),
            "argmax_agree": float((a.argmax(-1) == ref.argmax(-1)).float().mean())}


def effect(p_merged, p_base, ref_merged, ref_base) -> dict:
    """How much of dW's own effect on the logits (float32: ref_merged - ref_base) a precision keeps."""
    e_p, e_ref = (p_merged - p_base).flatten(), (ref_merged - ref_base).flatten()
    return {"effect_cos": float(e_p @ e_ref / (e_p.norm() * e_ref.norm() + 1e-30)),
            "effect_norm_ratio": float(e_p.norm() / (e_ref.norm() + 1e-30))}


def agree(a, b) -> dict:
    same = a == b
    first = [int((~row).nonzero()[0]) if (~row).any() else row.numel() for row in same]
    return {"token_agree": float(same.float().mean()), "rows_identical": float(same.all(1).float().mean()),
            "first_divergence_mean": statistics.mean(first)}


def merge_one(name: str, a, tok, dev) -> dict:
    import torch

    model, fam, processor, build_s = build(name, a.small, tok, dev)
    targets = lora_targets(model, fam)
    w0 = {n: m.weight.data.clone() for n, m in targets}
    audio = clips(a.merge_clips, a.seconds, 3, spread=0.5)
    inputs, positions = teacher_inputs(name, model, fam, processor, tok, audio, dev, a.text_tokens)
    gen_inputs = generation_inputs(fam, model, processor, audio, dev)
    out = {"build_s": round(build_s, 2), "targets": len(targets), "target_params": sum(m.weight.numel() for _, m in targets),
           "w0_mean_abs": float(statistics.mean(float(w.abs().mean()) for w in w0.values())),
           "clips": len(audio), "positions_compared": positions, "new_tokens": a.merge_new_tokens, "scales": {}}

    def run(dw) -> dict:
        """float32 reference, float32 under autocast, bf16 weights: logits and greedy tokens."""
        set_weights(targets, w0, dw)
        r = {"ref": logits(model, inputs, positions, dev, False), "ac": logits(model, inputs, positions, dev, True),
             "ref_tokens": greedy(fam, model, gen_inputs, a.merge_new_tokens, dev, False, tok),
             "ac_tokens": greedy(fam, model, gen_inputs, a.merge_new_tokens, dev, True, tok)}
        cast_params(model, torch.bfloat16)
        set_weights(targets, w0, dw)  # the merged float32 weight, cast
        if dw is not None:
            changed = kept = 0
            err = norm = 0.0
            for n, m in targets:
                moved = m.weight.data.float() - w0[n]
                nonzero = dw[n] != 0
                changed += int(nonzero.sum())
                kept += int((moved != 0)[nonzero].sum())
                err += float((moved - dw[n]).pow(2).sum())
                norm += float(dw[n].pow(2).sum())
            r["vanished_share"], r["dw_rel_error"] = 1 - kept / changed, math.sqrt(err / norm)
        r["bf"] = logits(model, inputs, positions, dev, False)
        r["bf_tokens"] = greedy(fam, model, gen_inputs, a.merge_new_tokens, dev, False, tok)
        cast_params(model, torch.float32)  # lossless back: every value is a bf16 value now, W0's restored next
        return r

    prev = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False  # a float32 reference
    try:
        base = run(None)
        for scale in a.scales:
            say(f"    {name}: dW mean |.| {scale:g}")
            m = run(deltas(targets, scale, seed=4))
            out["scales"][f"{scale:g}"] = {
                "vanished_share": m["vanished_share"], "dw_rel_error": m["dw_rel_error"],
                "dw_effect_on_logits_fp32": compare(m["ref"], base["ref"]),
                "autocast_vs_ref": {**compare(m["ac"], m["ref"]), **effect(m["ac"], base["ac"], m["ref"], base["ref"])},
                "bf16_vs_ref": {**compare(m["bf"], m["ref"]), **effect(m["bf"], base["bf"], m["ref"], base["ref"])},
                "bf16_vs_autocast": compare(m["bf"], m["ac"]),
                "greedy": {"base_fp32_vs_ref": agree(base["ref_tokens"], m["ref_tokens"]),
                           "autocast_vs_ref": agree(m["ac_tokens"], m["ref_tokens"]),
                           "bf16_vs_ref": agree(m["bf_tokens"], m["ref_tokens"]),
                           "bf16_vs_autocast": agree(m["bf_tokens"], m["ac_tokens"]),
                           "bf16_merged_vs_bf16_base": agree(m["bf_tokens"], base["bf_tokens"])}}
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = prev
    out["base_autocast_vs_ref"], out["base_bf16_vs_ref"] = compare(base["ac"], base["ref"]), compare(base["bf"], base["ref"])
    return out


# ---------------------------------------------------------------- 3. decode throughput

def decode_one(name: str, a, tok, dev) -> dict:
    import torch

    model, fam, processor, build_s = build(name, a.small, tok, dev)
    audio = clips(a.decode_batch, a.seconds, 5)
    out = {"build_s": round(build_s, 2), "batch": a.decode_batch, "clip_s": a.seconds, "new_tokens": a.decode_new_tokens,
           "repeats": a.repeats, "variants": {}}
    for variant, dtype, with_autocast in (("bf16 weights", torch.bfloat16, False), ("fp32 weights, bf16 autocast", torch.float32, True)):
        cast_params(model, dtype)  # lossless both ways: the weights are bf16 values
        start = time.perf_counter()
        inputs = generation_inputs(fam, model, processor, audio, dev)  # the processor's features: CPU work, not timed below
        prep_s = time.perf_counter() - start
        free(dev)
        weights = allocated(dev)
        reset_peak(dev)
        greedy(fam, model, inputs, a.decode_new_tokens, dev, with_autocast, tok)  # warm-up
        times = []
        for _ in range(a.repeats):
            sync(dev)
            start = time.perf_counter()
            greedy(fam, model, inputs, a.decode_new_tokens, dev, with_autocast, tok)
            sync(dev)
            times.append(time.perf_counter() - start)
        s = statistics.median(times)
        out["variants"][variant] = {"s_per_batch_median": round(s, 4), "times": [round(t, 4) for t in times],
                                    "audio_s_per_s": round(a.decode_batch * a.seconds / s, 1),
                                    "tokens_per_s": round(a.decode_batch * a.decode_new_tokens / s, 1),
                                    "ms_per_token_step": round(1000 * s / a.decode_new_tokens, 2),
                                    "features_prep_s": round(prep_s, 3), "weights_gib": weights, "peak_gib": peak(dev)}
    v = out["variants"]
    out["autocast_over_bf16_time"] = round(v["fp32 weights, bf16 autocast"]["s_per_batch_median"] / v["bf16 weights"]["s_per_batch_median"], 3)
    return out


# ---------------------------------------------------------------- report

def fmt(x, spec: str = ".3g") -> str:
    return "-" if x is None else format(x, spec)


def markdown(results: dict) -> str:
    from audiollm_memory import millions

    env = results["env"]
    lines = [f"# gpu_check ({'small' if results['args']['small'] else 'real shapes'}, {env['device_name']})", "",
             f"torch {env['torch']}, transformers {env['transformers']}, peft {env['peft']}; "
             f"{results.get('elapsed_s', 0):.0f} s of {results['args']['budget_s']} s budget", ""]

    def status(r):
        return r.get("skipped") or f"ERROR: {r['error']}"

    train = results["sections"].get("train", {})
    if train:
        lines += ["## 1. Training steps: LoRA r=16 on the LLM/decoder, encoder frozen and cached, fp32 weights + bf16 autocast, AdamW", "",
                  "| model | trainable / total | batch x clip | seq len | learned tok/clip | s/step median (min-max) | peak alloc GiB | before train GiB | loss first→last |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for name, r in train.items():
            if "step_s_median" not in r:
                lines.append(f"| {name} | {status(r)} |||||||| ")
                continue
            lo = r["loss_first_last"] or [None, None]
            lines.append(f"| {name} | {millions(r['trainable'])} / {millions(r['params'])} | {r['batch']} x {r['clip_s']:g} s | "
                         f"{r['seq_len_median']} | {r['learned_tokens_per_clip']} | {r['step_s_median']:.3f} ({r['step_s_min']:.3f}-{r['step_s_max']:.3f}) | "
                         f"{fmt(r['peak_gib'])} | {fmt(r['weights_etc_gib_before'])} | {fmt(lo[0])}→{fmt(lo[1])} |")
        lines.append("")
    merge = results["sections"].get("merge", {})
    if merge:
        lines += ["## 2. bf16 merge: dW (rank 16) on bf16-valued weights; logits vs fp32 weights without autocast (TF32 off)", "",
                  "| model | mean abs dW | dW vanished in bf16 | dW rel. error | variant | logits max abs | mean abs | TF argmax agree | "
                  "dW effect cos | effect norm ratio | greedy token agree | rows identical |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for name, r in merge.items():
            if "scales" not in r:
                lines.append(f"| {name} | {status(r)} |||||||||||")
                continue
            for scale, s in r["scales"].items():
                head = f"| {name} | {scale} | {100 * s['vanished_share']:.1f}% | {s['dw_rel_error']:.3f} |"
                e = s["dw_effect_on_logits_fp32"]
                g = s["greedy"]["base_fp32_vs_ref"]
                lines.append(f"{head} dW itself (fp32 base vs fp32 merged) | {e['max_abs']:.3g} | {e['mean_abs']:.3g} | {e['argmax_agree']:.3f} | "
                             f"1 | 1 | {g['token_agree']:.3f} | {g['rows_identical']:.2f} |")
                for variant, key in (("fp32 weights + bf16 autocast", "autocast_vs_ref"), ("weights cast to bf16", "bf16_vs_ref")):
                    c, g = s[key], s["greedy"][key]
                    lines.append(f"| | | | | {variant} | {c['max_abs']:.3g} | {c['mean_abs']:.3g} | {c['argmax_agree']:.3f} | "
                                 f"{c['effect_cos']:.3f} | {c['effect_norm_ratio']:.3f} | {g['token_agree']:.3f} | {g['rows_identical']:.2f} |")
                g = s["greedy"]["bf16_merged_vs_bf16_base"]
                lines.append(f"| | | | | bf16 merged vs bf16 base (greedy) | | | | | | {g['token_agree']:.3f} | {g['rows_identical']:.2f} |")
        lines.append("")
    decode = results["sections"].get("decode", {})
    if decode:
        lines += ["## 3. Decode throughput: generate(), greedy, fixed new tokens", "",
                  "| model | weights | batch x clip | new tokens | s/batch median | audio s per s | tokens/s | ms per step | weights GiB | peak GiB |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
        for name, r in decode.items():
            if "variants" not in r:
                lines.append(f"| {name} | {status(r)} |||||||||")
                continue
            for variant, v in r["variants"].items():
                lines.append(f"| {name} | {variant} | {r['batch']} x {r['clip_s']:g} s | {r['new_tokens']} | {v['s_per_batch_median']:.3f} | "
                             f"{v['audio_s_per_s']:.0f} | {v['tokens_per_s']:.0f} | {v['ms_per_token_step']:.1f} | {fmt(v['weights_gib'])} | {fmt(v['peak_gib'])} |")
        lines.append("")
    return "\n".join(lines)


def environment(dev) -> dict:
    import torch
    import transformers

    try:
        import peft

        peft_version = peft.__version__
    except Exception as e:  # noqa: BLE001
        peft_version = f"missing: {e}"
    classes = {c: hasattr(transformers, c) for c in ("WhisperForConditionalGeneration", "FunAsrNanoForConditionalGeneration",
                                                     "Qwen3ASRForConditionalGeneration")}
    return {"python": platform.python_version(), "torch": torch.__version__, "transformers": transformers.__version__,
            "transformers_file": transformers.__file__, "peft": peft_version, "classes": classes, "device": str(dev),
            "device_name": torch.cuda.get_device_name() if dev.type == "cuda" else f"CPU x{os.cpu_count()}",
            "cuda": torch.version.cuda, "torch_threads": torch.get_num_threads()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--device", default=None, help="cuda (default where there is one) or cpu")
    parser.add_argument("--small", action="store_true", help="tiny shapes, few steps and clips: a smoke run")
    parser.add_argument("--budget-s", type=float, default=420.0, help="no model starts after this many seconds")
    parser.add_argument("--sections", default="train,merge,decode")
    a = parser.parse_args()
    import torch
    import transformers

    warnings.filterwarnings("ignore")
    transformers.logging.set_verbosity_error()
    os.environ.setdefault("TQDM_DISABLE", "1")
    dev = torch.device(a.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    small = a.small
    a.batch, a.seconds, a.text_tokens = (2, 2.0, 12) if small else (8, 10.0, 40)
    a.steps, a.warmup_steps = (4, 1) if small else (14, 3)  # intervals: steps - 1, of which the first warmup_steps are left out
    a.scales = (1e-4, 3e-5)
    a.merge_clips, a.merge_new_tokens = (2, 8) if small else (8, 32)
    a.decode_batch, a.decode_new_tokens, a.repeats = (2, 8, 2) if small else (16, 48, 3)
    a.out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    results = {"args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(a).items()}, "env": environment(dev), "sections": {}}
    say(f"gpu_check: {results['env']}")

    def write():
        results["elapsed_s"] = round(time.perf_counter() - t0, 1)
        (a.out / "gpu_check.json").write_text(json.dumps(results, indent=1, default=str))
        (a.out / "gpu_check.md").write_text(markdown(results))

    tok = tokenizer()
    runners = {"train": train_one, "merge": merge_one, "decode": decode_one}
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as tmp:
        for section in a.sections.split(","):
            results["sections"][section] = {}
            for name in MODELS[section]:
                elapsed = time.perf_counter() - t0
                if elapsed > a.budget_s:
                    results["sections"][section][name] = {"skipped": f"time budget: {elapsed:.0f} s > {a.budget_s:.0f} s"}
                    say(f"[{elapsed:6.1f} s] {section} {name}: SKIPPED (budget)")
                    continue
                say(f"[{elapsed:6.1f} s] {section} {name} ...")
                start = time.perf_counter()
                try:
                    args = (name, a, tok, dev, Path(tmp)) if section == "train" else (name, a, tok, dev)
                    r = runners[section](*args)
                except Exception as e:  # noqa: BLE001: recorded, the next model still runs
                    r = {"error": f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"[:300],
                         "traceback": traceback.format_exc()[-3000:]}
                    say(f"    FAILED: {r['error']}\n{r['traceback']}")
                r["section_s"] = round(time.perf_counter() - start, 1)
                results["sections"][section][name] = r
                free(dev)
                write()
                say(f"    done in {r['section_s']} s")
    write()
    say("\n" + markdown(results))


if __name__ == "__main__":
    main()
