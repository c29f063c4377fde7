"""Audio-LLM training speed: funasr's own FunASRNano, a plain transformers Trainer and asrtune's audiollm path,
side by side in one run, on the same clips, the same weights and the same trainable parameters.

The model: Fun-ASR-Nano-2512's REAL-SIZE SenseVoice audio encoder (560 in, hidden 512, 4 heads, ffn 2048, 50 + 20
timestamp layers, FSMN kernel 11) and its real adaptor (projector 512 -> 2048 -> 1024, 2 blocks of hidden 1024,
8 heads, ffn 256), with a TINY Qwen3 LLM (hidden 1024, which the adaptor's output must match, but 2 layers and the
800-token demo tokenizer instead of 28 layers and 151,936 tokens), so that the frozen encoder dominates a step.
Random weights, written once and loaded by every system (funasr's copy through asrtune's Fun-ASR layout export).
Trained by all three: the adaptor and the whole LLM (embeddings tied to the head); the encoder is frozen. fp32, AdamW,
gradient clipping at 1.0, the same learning rate and batch size.

- (a) funasr: `funasr.models.fun_asr_nano.model.FunASRNano` built from the exported config.yaml, its own batch format
  (speech [B, T, 560] from its WavFrontend with its default dither, speech_lengths, input_ids, labels_ids, fbank_beg,
  fake_token_len = ceil(frames / 8) audio tokens as its training dataset writes, attention_mask), its forward + backward
  + AdamW step as its trainer runs it: `model.train()`, so dropout runs in the frozen encoder, which is recomputed
  every step;
- (b) plain transformers `Trainer` on the native `FunAsrNanoForConditionalGeneration`: the encoder frozen by
  requires_grad only, features and encoder recomputed every step, the model's own full-logits loss (labels from
  asrtune's item_maker, all frames as audio tokens, as transformers' processor counts them);
- (c) asrtune: `audiollm.freeze` + `hf_trainer.FamilyTrainer` with `audiollm.loss` (vocabulary projection at learned
  positions only), the frozen encoder's outputs cached once by `EncoderCache` (float16, the default) and read every step.

Reported: seconds per training step (median after the first step, data loading included), the one-off cache fill,
after how many steps it has paid for itself, trainable parameters, and each system's peak RSS (each runs in a
child process of its own).

    uv run python benchmarks/audiollm_speed.py              # 24 clips of 3-8 s, batch 8, 7 steps each (~8 min on 2 cores)
    uv run python benchmarks/audiollm_speed.py --quick      # tiny encoder and LLM, 3 steps: a smoke run
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import soundfile as sf

REPO = Path(__file__).resolve().parents[1]
LEARNING_RATE = 1e-4
SYSTEMS = {"funasr": "(a) funasr FunASRNano, own loop", "trainer": "(b) transformers Trainer, native model",
           "asrtune": "(c) asrtune FamilyTrainer + encoder cache"}


def peak_mib() -> float:
    """This process's peak resident memory (VmHWM): a child's own, not its parent's."""
    line = next(line for line in open("/proc/self/status") if line.startswith("VmHWM"))
    return int(line.split()[1]) / 1024


def write_clips(folder: Path, n: int, quick: bool) -> list[dict]:
    """n clips of tonal audio with noise (3-8 s; quick: 1-2 s) and short Chinese transcripts from the demo's slot values."""
    from asrtune.testing import demo_texts

    words = demo_texts(REPO / "demo")
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True)
    clips = []
    for i in range(n):
        seconds = rng.uniform(1, 2) if quick else rng.uniform(3, 8)
        t = np.arange(int(16000 * seconds)) / 16000
        tone = sum(np.sin(2 * np.pi * f * t) for f in rng.uniform(150, 2000, 3)) * np.sin(2 * np.pi * rng.uniform(1, 4) * t)
        audio = (0.05 * tone + 0.02 * rng.standard_normal(len(t))).astype(np.float32)
        sf.write(str(folder / f"{i:03d}.wav"), audio, 16000)
        clips.append({"key": f"clip-{i:03d}", "audio": str(folder / f"{i:03d}.wav"),
                      "text": "".join(rng.choice(words, 2, replace=False))})
    return clips


def write_model(out: Path, quick: bool) -> Path:
    """The transformers directory all three systems start from (quick: asrtune's tiny Fun-ASR-Nano)."""
    import torch
    from transformers import (FunAsrNanoConfig, FunAsrNanoFeatureExtractor, FunAsrNanoForConditionalGeneration,
                              FunAsrNanoProcessor)

    from asrtune.testing import tiny_text_config, demo_texts, tiny_qwen_tokenizer, write_tiny_fun_asr_nano
    from asrtune.weights.funasr_layout import FUN_ASR_TEMPLATE

    tok = tiny_qwen_tokenizer(demo_texts(REPO / "demo"))
    if quick:
        return write_tiny_fun_asr_nano(out, tok)
    text = {**tiny_text_config(tok), "hidden_size": 1024, "intermediate_size": 3072, "num_hidden_layers": 2,
            "num_attention_heads": 16, "num_key_value_heads": 8, "head_dim": 128}
    config = FunAsrNanoConfig(
        audio_config={"model_type": "fun_asr_nano_encoder"},  # the defaults are Fun-ASR-Nano-2512's encoder
        adaptor_config={"hidden_size": 1024, "intermediate_size": 256, "num_attention_heads": 8, "num_hidden_layers": 2,
                        "projector_hidden_size": 2048},
        text_config=text, audio_token_id=tok.convert_tokens_to_ids("<|object_ref_start|>"))
    config.eos_token_id, config.pad_token_id = text["eos_token_id"], text["pad_token_id"]
    torch.manual_seed(0)
    FunAsrNanoForConditionalGeneration(config).save_pretrained(out)
    FunAsrNanoProcessor(FunAsrNanoFeatureExtractor(return_attention_mask=True), tok, chat_template=FUN_ASR_TEMPLATE).save_pretrained(out)
    return out


def _examples(clips):
    from asrtune.corpus.chatml import Example

    return [Example(c["key"], c["audio"], c["text"]) for c in clips]


def _params():
    return SimpleNamespace(model=SimpleNamespace(language=None))


def _trainable(model) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def run_funasr(hf_dir: Path, fa_dir: Path, clips: list[dict], batch: int, steps: int) -> dict:
    """(a): funasr's model, batch format and training step."""
    import torch
    import yaml
    from funasr.frontends.wav_frontend import WavFrontend
    from funasr.models.fun_asr_nano.model import FunASRNano

    from asrtune.families import audiollm

    cfg = yaml.safe_load((fa_dir / "config.yaml").read_text(encoding="utf-8"))
    torch.manual_seed(42)
    model = FunASRNano(audio_encoder=cfg["audio_encoder"], audio_encoder_conf=dict(cfg["audio_encoder_conf"]),
                       audio_adaptor=cfg["audio_adaptor"], audio_adaptor_conf={**cfg["audio_adaptor_conf"], "freeze": False},
                       llm="Qwen3", llm_conf={"init_param_path": str(fa_dir / "Qwen3-0.6B"), "llm_dtype": "fp32", "freeze": False},
                       input_size=560)
    model.load_state_dict(torch.load(fa_dir / "model.pt", weights_only=True)["state_dict"])
    model.llm.lm_head.weight = model.llm.model.embed_tokens.weight  # tied, as in Qwen3-0.6B and the native model
    frontend = WavFrontend(**cfg["frontend_conf"])  # dither 1.0: funasr's default, as its training runs it

    # the text side: asrtune's prompt (the same ChatML Fun-ASR's template renders), its audio run cut to funasr's
    # training rule, ceil(frames / 8) placeholders (the adaptor's first frames fill them)
    processor = audiollm.load_processor(hf_dir)
    audio_id = json.loads((hf_dir / "config.json").read_text())["audio_token_id"]
    make_item = audiollm.item_maker(None, processor, _params())
    rows = []
    for ex in _examples(clips):
        n = sf.info(ex.audio).frames
        item = make_item(ex, n)
        ids, labels = item["input_ids"].tolist(), item["labels"].tolist()
        where = [i for i, t in enumerate(ids) if t == audio_id]
        frames = len(where)  # transformers' count: every LFR frame (= funasr's speech_lengths)
        fake = math.ceil(frames / 8)
        cut = lambda seq: seq[: where[0]] + seq[where[0]: where[0] + fake] + seq[where[-1] + 1:]  # noqa: E731
        rows.append({"audio": ex.audio, "input_ids": cut(ids), "labels": cut(labels), "beg": where[0], "fake": fake})

    def make_batch(chunk):
        wavs = [torch.from_numpy(sf.read(r["audio"], dtype="float32")[0]) for r in chunk]
        speech, lengths = frontend(torch.nn.utils.rnn.pad_sequence(wavs, batch_first=True), torch.tensor([len(w) for w in wavs]))
        width = max(len(r["input_ids"]) for r in chunk)
        pad = lambda seq, fill: seq + [fill] * (width - len(seq))  # noqa: E731  (funasr's collator pads ints with -1)
        return {"speech": speech, "speech_lengths": lengths[:, None],
                "input_ids": torch.tensor([pad(r["input_ids"], -1) for r in chunk]),
                "labels_ids": torch.tensor([pad(r["labels"], -1) for r in chunk]),
                "attention_mask": torch.tensor([pad([1] * len(r["input_ids"]), -1) for r in chunk]),
                "fbank_beg": torch.tensor([[r["beg"]] for r in chunk]), "fake_token_len": torch.tensor([[r["fake"]] for r in chunk])}

    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=LEARNING_RATE)
    model.train()  # as funasr's trainer: the frozen encoder's dropout runs too
    order = np.random.default_rng(42).permutation(len(rows)).tolist()
    times, losses = [], []
    for step in range(steps):
        start = time.perf_counter()
        first = (step * batch) % len(rows)
        inputs = make_batch([rows[i] for i in (order + order)[first: first + batch]])  # new tensors: forward mutates them
        loss, _, _ = model(**inputs)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - start)
        losses.append(loss.item())
    return {"step_s": statistics.median(times[1:]), "steps": steps, "trainable": _trainable(model), "loss": losses[0]}


def _trainer_run(hf_dir: Path, clips: list[dict], batch: int, steps: int, tmp: Path, ours: bool) -> dict:
    """(b) the plain Trainer, or (c) asrtune's FamilyTrainer with the encoder cache."""
    import torch
    from transformers import Trainer, TrainingArguments

    from asrtune.families import audiollm, shared
    from asrtune.train import hf_trainer
    from asrtune.train.encoder_cache import EncoderCache
    from asrtune.weights.digest import weights_digest

    torch.manual_seed(42)
    model, processor = audiollm.load_plain(hf_dir), audiollm.load_processor(hf_dir)
    items = _examples(clips)
    make_item = audiollm.item_maker(model, processor, _params())
    featurize = lambda audio: audiollm.features(processor, audio)  # noqa: E731
    timer = hf_trainer.StepTimer()
    settings = dict(output_dir=str(tmp / ("ours" if ours else "plain")), per_device_train_batch_size=batch, max_steps=steps,
                    learning_rate=LEARNING_RATE, warmup_steps=0, logging_steps=1, save_strategy="no", eval_strategy="no",
                    report_to=[], seed=42, dataloader_num_workers=0, remove_unused_columns=False, max_grad_norm=1.0)
    fill_s = None
    if ours:
        audiollm.freeze(model, True, False, False)
        shared.keep_fixed(model)
        start = time.perf_counter()
        config = json.dumps(processor.feature_extractor.to_dict(), sort_keys=True) + audiollm.CACHE_TAG
        cache = EncoderCache(tmp / "encoder-cache", weights_digest(audiollm.encoder(model), config), "float16")
        cache.fill([e.audio for e in items], lambda audio: audiollm.encode(model, processor, audio), batch)
        fill_s = time.perf_counter() - start
        args = hf_trainer.arguments(SimpleNamespace(batch_size=batch, grad_accum=1, warmup=0.0, weight_decay=0.0, save_steps=0, seed=42,
                                                    gradient_checkpointing=False),
                                    SimpleNamespace(epochs=1, learning_rate=LEARNING_RATE), tmp / "ours", "fp32",
                                    **{k: v for k, v in settings.items() if k in ("max_steps", "save_strategy", "eval_strategy", "logging_steps")},
                                    load_best_model_at_end=False)
        trainer = hf_trainer.FamilyTrainer(model=model, args=args, train_dataset=hf_trainer.SpeechDataset(items, make_item, featurize, cache),
                                           data_collator=audiollm.collator(model, processor), callbacks=[timer], family_loss=audiollm.loss)
    else:
        for p in audiollm.encoder(model).parameters():  # frozen the plain way: no gradients, dropout still on
            p.requires_grad = False
        trainer = Trainer(model=model, args=TrainingArguments(**settings, use_cpu=not torch.cuda.is_available()),
                          train_dataset=hf_trainer.SpeechDataset(items, make_item, featurize),
                          data_collator=audiollm.collator(model, processor), callbacks=[timer])
    result = trainer.train()
    loss = next(h["loss"] for h in trainer.state.log_history if "loss" in h)
    return {"step_s": statistics.median(timer.intervals), "steps": trainer.state.global_step, "trainable": _trainable(model),
            "loss": loss, "fill_s": fill_s, "train_loss": result.training_loss}


def measure(system: str, hf_dir: str, fa_dir: str, clips_json: str, batch: int, steps: int, tmp: str) -> dict:
    warnings.filterwarnings("ignore")
    clips = json.loads(Path(clips_json).read_text(encoding="utf-8"))
    if system == "funasr":
        out = run_funasr(Path(hf_dir), Path(fa_dir), clips, batch, steps)
    else:
        out = _trainer_run(Path(hf_dir), clips, batch, steps, Path(tmp), ours=system == "asrtune")
    return {**out, "peak_mib": peak_mib()}


def run_child(system: str, quick: bool, *args) -> dict:
    """One system in a fresh process, so its peak memory is its own (--quick: in this process, no imports to pay again)."""
    if quick:
        return measure(system, *map(str, args[:3]), int(args[3]), int(args[4]), str(args[5]))
    cmd = [sys.executable, __file__, "--child", json.dumps([system, *map(str, args)])]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, env={**os.environ, "TQDM_DISABLE": "1"})
    if proc.returncode != 0:
        sys.exit(f"{system} failed:\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny encoder and LLM, 8 clips, 3 steps of batch 4 (smoke run)")
    parser.add_argument("--clips", type=int, default=24)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=7, help="per system; the first is left out of the median")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        system, hf_dir, fa_dir, clips_json, batch, steps, tmp = json.loads(args.child)
        print(json.dumps(measure(system, hf_dir, fa_dir, clips_json, int(batch), int(steps), tmp)))
        return
    n, batch, steps = (8, 4, 3) if args.quick else (args.clips, args.batch, args.steps)
    from asrtune.weights.funasr_layout import to_funasr

    results = {}
    with tempfile.TemporaryDirectory(prefix="asrtune-audiollm-speed-") as tmp_name:
        tmp = Path(tmp_name)
        clips = write_clips(tmp / "audio", n, args.quick)
        (tmp / "clips.json").write_text(json.dumps(clips, ensure_ascii=False), encoding="utf-8")
        start = time.perf_counter()
        hf_dir = write_model(tmp / "hf", args.quick)
        to_funasr(hf_dir, tmp / "funasr")
        setup_s = time.perf_counter() - start
        for system in SYSTEMS:
            results[system] = run_child(system, args.quick, hf_dir, tmp / "funasr", tmp / "clips.json", batch, steps, tmp)
    a, b, c = results["funasr"], results["trainer"], results["asrtune"]
    model = ("tiny Fun-ASR-Nano (encoder hidden 16, 3 layers; Qwen3 hidden 32)" if args.quick else
             "Fun-ASR-Nano-2512 encoder (70 layers) + adaptor, real size; Qwen3 LLM hidden 1024, 2 layers, vocabulary 800")
    print(f"\n{model}; {n} clips of {'1-2' if args.quick else '3-8'} s, batch {batch}, {steps} steps per system, fp32, "
          f"CPU ({os.cpu_count()} cores), model written in {setup_s:.0f} s.")
    print("Trained: adaptor + whole LLM (tied embeddings); encoder frozen.\n")
    print("| system | s/step (median) | vs asrtune | trainable params | first-step loss | peak RSS |")
    print("|---|---|---|---|---|---|")
    for key, r in results.items():
        print(f"| {SYSTEMS[key]} | {r['step_s']:.2f} | {r['step_s'] / c['step_s']:.1f}x | {r['trainable'] / 1e6:.2f} M | "
              f"{r['loss']:.3f} | {r['peak_mib'] / 1024:.2f} GiB |")
    saved = a["step_s"] - c["step_s"]
    payoff = math.ceil(c["fill_s"] / saved) if saved > 0 else None
    per_epoch = math.ceil(n / batch)
    print(f"\n(a)/(c) = {a['step_s'] / c['step_s']:.1f}x, (b)/(c) = {b['step_s'] / c['step_s']:.1f}x "
          f"(goal: (c) at least 3x faster than (a) with a frozen encoder).")
    print(f"Encoder cache fill (asrtune, once, {n} clips, weights digest included): {c['fill_s']:.1f} s = "
          f"{c['fill_s'] / c['step_s']:.1f} asrtune steps; "
          + (f"it has paid for itself after {payoff} steps against (a) ({payoff / per_epoch:.2f} epochs of {per_epoch} steps)."
             if payoff else "no payoff against (a): (a)'s step is not slower."))
    if not args.quick:
        print("(a)'s LLM sees ceil(frames / 8) audio tokens per clip (funasr's training rule), (b) and (c) every frame "
              "(transformers' processor): (a)'s LLM sequences are shorter.")


if __name__ == "__main__":
    main()
