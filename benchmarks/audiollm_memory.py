"""Audio-LLM sizes and training-step memory: what each part of Fun-ASR-Nano and Qwen3-ASR holds, what each
training setting trains, and what one real-size training step costs on this machine.

(i) Parameters per part (audio tower / adaptor / LLM with its tied head) of Fun-ASR-Nano-2512, Qwen3-ASR-0.6B and
    Qwen3-ASR-1.7B at their real shapes, built on the meta device (no memory, no weights), and the trainable
    parameters of four settings, set up as the finetune stage sets them up (`audiollm.freeze`, peft with
    `audiollm.lora_config`): LoRA r=16 on the LLM only (asrtune's default: encoder and adaptor frozen), the adaptor
    only, the LLM fully (Fun-ASR's own recipe), encoder + adaptor.
(ii) One training setting per fresh child process, at Fun-ASR-Nano-2512's shapes (vocabulary 151,936; random
    weights; the demo's tiny tokenizer writes the ids): batch of 4 clips of ~5 s, the audio tower frozen and its
    outputs cached first (asrtune's EncoderCache), then `training.FamilyTrainer` with `audiollm.loss` and AdamW.
    Reported: seconds per step (median after the first), the child's peak RSS (weights, optimizer state, activations,
    the cache fill included) and, on CUDA only, torch.cuda.max_memory_allocated under bf16 autocast (asrtune's bf16:
    fp32 weights). Settings: LoRA r=16 on the LLM, the adaptor only, the full LLM (r=0).

    uv run python benchmarks/audiollm_memory.py              # (ii) 3 settings x 3 steps (~6 min on 2 cores, ~14 GiB peak)
    uv run python benchmarks/audiollm_memory.py --quick      # (i) as above (meta device), (ii) with a tiny model: a smoke run
"""

from __future__ import annotations

import argparse
import json
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
VOCAB = 151936  # Qwen3's vocabulary
QWEN3_06B = {"model_type": "qwen3", "hidden_size": 1024, "intermediate_size": 3072, "num_hidden_layers": 28,
             "num_attention_heads": 16, "num_key_value_heads": 8, "head_dim": 128, "vocab_size": VOCAB,
             "max_position_embeddings": 40960, "tie_word_embeddings": True}
QWEN3_17B = {**QWEN3_06B, "hidden_size": 2048, "intermediate_size": 6144}

# setting -> (freeze_encoder, freeze_adaptor, freeze_llm, LoRA r)
SETTINGS = {"LoRA r=16 on the LLM (asrtune default)": (True, True, False, 16), "adaptor only": (True, False, True, 0),
            "LLM fully (Fun-ASR's recipe)": (True, True, False, 0), "encoder + adaptor": (False, False, True, 0)}
STEP_SETTINGS = ["LoRA r=16 on the LLM (asrtune default)", "adaptor only", "LLM fully (Fun-ASR's recipe)"]


def config_of(name: str, audio_token_id: int | None = None, tokenizer=None):
    """The real shapes (/work/shared notes: funasr-nano-checkpoint.md, qwen3-asr-facts.md), or the tiny test model's."""
    from transformers import FunAsrNanoConfig, Qwen3ASRConfig

    if name == "Fun-ASR-Nano-2512":
        return FunAsrNanoConfig(audio_config={"model_type": "fun_asr_nano_encoder"},  # its defaults are the real encoder
                                adaptor_config={"hidden_size": 1024, "intermediate_size": 256, "num_attention_heads": 8,
                                                "num_hidden_layers": 2, "projector_hidden_size": 2048},
                                text_config=QWEN3_06B, **({"audio_token_id": audio_token_id} if audio_token_id is not None else {}))
    if name == "tiny Fun-ASR-Nano":
        from asrtune.tiny import tiny_text_config

        return FunAsrNanoConfig(
            audio_config={"model_type": "fun_asr_nano_encoder", "num_mel_bins": 80, "hidden_size": 16, "num_attention_heads": 2,
                          "intermediate_size": 32, "num_hidden_layers": 3, "num_timestamp_prediction_layers": 1, "fsmn_kernel_size": 3},
            adaptor_config={"hidden_size": 32, "intermediate_size": 8, "num_attention_heads": 2, "num_hidden_layers": 2,
                            "projector_hidden_size": 64},
            text_config=tiny_text_config(tokenizer), audio_token_id=audio_token_id)
    audio = {"model_type": "qwen3_asr_encoder", "num_mel_bins": 128, "downsample_hidden_size": 480}
    if name == "Qwen3-ASR-0.6B":
        return Qwen3ASRConfig(audio_config={**audio, "encoder_layers": 18, "d_model": 896, "encoder_attention_heads": 14,
                                            "encoder_ffn_dim": 3584, "output_dim": 1024}, text_config=QWEN3_06B)
    if name == "Qwen3-ASR-1.7B":
        return Qwen3ASRConfig(audio_config={**audio, "encoder_layers": 24, "d_model": 1024, "encoder_attention_heads": 16,
                                            "encoder_ffn_dim": 4096, "output_dim": 2048}, text_config=QWEN3_17B)
    raise ValueError(name)


def model_class(config):
    from transformers import FunAsrNanoForConditionalGeneration, Qwen3ASRForConditionalGeneration

    return FunAsrNanoForConditionalGeneration if config.model_type == "fun_asr_nano" else Qwen3ASRForConditionalGeneration


def set_up(model, setting: str):
    """The finetune stage's set-up for a setting: freeze flags, then LoRA on the LLM when r > 0."""
    from asrtune import families
    from asrtune.families import audiollm

    freeze_encoder, freeze_adaptor, freeze_llm, r = SETTINGS[setting]
    audiollm.freeze(model, freeze_encoder, freeze_adaptor, freeze_llm)
    if r:
        from peft import get_peft_model

        model = get_peft_model(model, audiollm.lora_config(r, 2 * r, 0.05, None, train_encoder=not freeze_encoder,
                                                           train_adaptor=not freeze_adaptor, model=model))
    families.keep_fixed(model)
    return model


def unique(params) -> int:
    seen = {}
    for p in params:
        seen[id(p)] = p.numel()  # the tied head counts once
    return sum(seen.values())


def sizes() -> list[tuple]:
    """(i) (model, encoder, adaptor, LLM, total, trainable per setting), every model built on the meta device."""
    import torch

    from asrtune.families import audiollm

    rows = []
    for name in ("Fun-ASR-Nano-2512", "Qwen3-ASR-0.6B", "Qwen3-ASR-1.7B"):
        config = config_of(name)
        with torch.device("meta"):
            model = model_class(config)(config)
        parts = {part: unique(p for m in modules for p in m.parameters()) for part, modules in audiollm.parts(model).items()}
        total = unique(model.parameters())
        trainable = {}
        for setting in SETTINGS:
            with torch.device("meta"):
                fresh = model_class(config)(config)
            set_up_model = set_up(fresh, setting)
            trainable[setting] = unique(p for p in set_up_model.parameters() if p.requires_grad)
        rows.append((name, parts["encoder"], parts["adaptor"], parts["llm"], total, trainable))
    return rows


def peak_mib() -> float:
    line = next(line for line in open("/proc/self/status") if line.startswith("VmHWM"))
    return int(line.split()[1]) / 1024


def step_child(setting: str, quick: bool, tmp: Path, steps: int) -> dict:
    """(ii) in this (child) process: build, cache the tower's outputs, train `steps` steps."""
    import torch
    from transformers import FunAsrNanoFeatureExtractor, FunAsrNanoProcessor

    from asrtune import training
    from asrtune.chatml import Example
    from asrtune.encoder_cache import EncoderCache, weights_digest
    from asrtune.families import audiollm
    from asrtune.tiny import FUN_ASR_TEMPLATE, demo_texts, tiny_qwen_tokenizer

    warnings.filterwarnings("ignore")
    tok = tiny_qwen_tokenizer(demo_texts(REPO / "demo"))
    config = config_of("tiny Fun-ASR-Nano" if quick else "Fun-ASR-Nano-2512", tok.convert_tokens_to_ids("<|object_ref_start|>"), tok)
    config.eos_token_id, config.pad_token_id = tok.convert_tokens_to_ids("<|im_end|>"), tok.pad_token_id
    start = time.perf_counter()
    torch.manual_seed(0)
    model = model_class(config)(config)  # random weights: their values change neither the memory nor the time of a step
    model.config.adaptor_config._attn_implementation = model.config._attn_implementation  # as audiollm.load_plain does
    build_s = time.perf_counter() - start
    processor = FunAsrNanoProcessor(FunAsrNanoFeatureExtractor(return_attention_mask=True), tok, chat_template=FUN_ASR_TEMPLATE)

    words = demo_texts(REPO / "demo")
    rng = np.random.default_rng(0)
    items = []
    for i in range(4):
        seconds = 1.0 if quick else rng.uniform(4.5, 5.5)
        t = np.arange(int(16000 * seconds)) / 16000
        audio = (0.05 * np.sin(2 * np.pi * rng.uniform(150, 2000) * t) + 0.02 * rng.standard_normal(len(t))).astype(np.float32)
        sf.write(str(tmp / f"{i}.wav"), audio, 16000)
        items.append(Example(f"clip-{i}", str(tmp / f"{i}.wav"), "".join(rng.choice(words, 2, replace=False))))

    cuda = torch.cuda.is_available()
    if cuda:
        model.to("cuda")
    model = set_up(model, setting)
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    features = json.dumps(processor.feature_extractor.to_dict(), sort_keys=True) + audiollm.CACHE_TAG
    cache = EncoderCache(tmp / "encoder-cache", weights_digest(audiollm.encoder(model), features), "float16")
    cache.fill([e.audio for e in items], lambda audio: audiollm.encode(model, processor, audio), 4)
    timer = training.StepTimer()
    args = training.arguments(SimpleNamespace(batch_size=4, grad_accum=1, warmup=0.0, weight_decay=0.0, save_steps=0, seed=42,
                                              gradient_checkpointing=False),
                              SimpleNamespace(epochs=1, learning_rate=1e-4), tmp / "out", "bf16" if cuda else "fp32",
                              max_steps=steps, save_strategy="no", eval_strategy="no", load_best_model_at_end=False)
    make_item = audiollm.item_maker(base, processor, SimpleNamespace(model=SimpleNamespace(language=None)))
    trainer = training.FamilyTrainer(model=model, args=args, train_dataset=training.SpeechDataset(items, make_item, None, cache),
                                     data_collator=audiollm.collator(base, processor), callbacks=[timer], family_loss=audiollm.loss)
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    trainer.train()
    return {"step_s": statistics.median(timer.intervals), "build_s": build_s, "peak_mib": peak_mib(),
            "trainable": unique(p for p in model.parameters() if p.requires_grad),
            "cuda_mib": torch.cuda.max_memory_allocated() / 2**20 if cuda else None}


def run_child(setting: str, quick: bool, tmp: Path, steps: int) -> dict:
    folder = tmp / f"setting-{STEP_SETTINGS.index(setting)}"
    folder.mkdir()
    if quick:  # a smoke run: in this process, without paying the imports again
        return step_child(setting, quick, folder, steps)
    proc = subprocess.run([sys.executable, __file__, "--child", json.dumps([setting, quick, str(folder), steps])],
                          capture_output=True, text=True, cwd=REPO, env={**os.environ, "TQDM_DISABLE": "1"})
    if proc.returncode != 0:
        sys.exit(f"{setting} failed:\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def millions(n: int) -> str:
    return f"{n / 1e6:,.1f} M" if n >= 1e5 else f"{n / 1e6:.3f} M"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="(ii) with a tiny Fun-ASR-Nano, 3 steps (smoke run)")
    parser.add_argument("--steps", type=int, default=3, help="training steps per setting in (ii); the first is left out")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    # before anything runs under torch.device("meta"): torchaudio's kaldi fbank makes a module-level
    # constant tensor at import, which would otherwise be born on the meta device
    import torchaudio.compliance.kaldi  # noqa: F401

    if args.child:
        setting, quick, folder, steps = json.loads(args.child)
        print(json.dumps(step_child(setting, quick, Path(folder), steps)))
        return

    rows = sizes()
    print("\n(i) Parameters per part, real shapes (meta device; the LLM's head is tied to its embeddings, counted once):\n")
    print("| model | audio tower | adaptor | LLM | total |")
    print("|---|---|---|---|---|")
    for name, enc, adp, llm, total, _ in rows:
        print(f"| {name} | {millions(enc)} | {millions(adp)} | {millions(llm)} | {millions(total)} |")
    print("\nTrainable parameters per setting (set up as the finetune stage does: audiollm.freeze, peft LoRA on the LLM's "
          "q/k/v/o/gate/up/down projections):\n")
    print("| setting | " + " | ".join(r[0] for r in rows) + " |")
    print("|---|" + "---|" * len(rows))
    for setting in SETTINGS:
        print(f"| {setting} | " + " | ".join(f"{millions(r[5][setting])} ({100 * r[5][setting] / r[4]:.2f}%)" for r in rows) + " |")

    import torch

    steps = 3 if args.quick else args.steps
    results = {}
    with tempfile.TemporaryDirectory(prefix="asrtune-audiollm-memory-") as tmp:
        for setting in STEP_SETTINGS:
            results[setting] = run_child(setting, args.quick, Path(tmp), steps)
    model = "tiny Fun-ASR-Nano" if args.quick else "Fun-ASR-Nano-2512 shapes (random weights)"
    where = "CUDA, bf16 autocast" if torch.cuda.is_available() else f"CPU ({os.cpu_count()} cores), fp32"
    print(f"\n(ii) One training step, {model}, batch of 4 clips of ~{1 if args.quick else 5} s, audio tower frozen and cached, "
          f"AdamW, {where}; {steps} steps per setting, each in a fresh process"
          f"{' (--quick: all in this one)' if args.quick else ''}:\n")
    cuda = any(r["cuda_mib"] is not None for r in results.values())
    print("| setting | trainable | s/step (median) | peak RSS |" + (" CUDA max allocated |" if cuda else ""))
    print("|---|---|---|---|" + ("---|" if cuda else ""))
    for setting, r in results.items():
        print(f"| {setting} | {millions(r['trainable'])} | {r['step_s']:.2f} | {r['peak_mib'] / 1024:.2f} GiB |"
              + (f" {r['cuda_mib'] / 1024:.2f} GiB |" if cuda else ""))
    print(f"\nPeak RSS covers the whole process: the model with its frozen audio tower (asrtune keeps it loaded), "
          f"the cache fill, optimizer state and the step's activations. Building the model took "
          f"{statistics.median(r['build_s'] for r in results.values()):.0f} s per process (not in s/step).")


if __name__ == "__main__":
    main()
