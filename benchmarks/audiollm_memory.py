"""Audio-LLM sizes and training-step memory: what each part of Fun-ASR-Nano, Qwen3-ASR and Qwen3-ForcedAligner
holds, what each training setting trains, and what one real-size training step costs on this machine.

(i) Parameters per part (audio tower / adaptor / LLM with its head) of Fun-ASR-Nano-2512, Qwen3-ASR-0.6B,
    Qwen3-ASR-1.7B and Qwen3-ForcedAligner-0.6B at their real shapes, built on the meta device (no memory, no
    weights), and the trainable parameters of four settings, set up as the finetune stage sets them up
    (`<family>.freeze`, peft with `<family>.lora_config`): LoRA r=16 on the LLM only (asrtune's default: encoder
    and adaptor frozen; the aligner's `score` head trains fully beside it), the adaptor only, the LLM fully
    (Fun-ASR's own recipe), encoder + adaptor.
(ii) One training setting per fresh child process, at Fun-ASR-Nano-2512's shapes (vocabulary 151,936) or, with
    --model aligner, Qwen3-ForcedAligner-0.6B's (untied 152,064-token embedding, `score` head over 5,000 bins);
    random weights, the demo's tiny tokenizer writes the ids: batch of 4 clips of ~5 s (the aligner's with
    24-unit transcripts and their reference times: 48 slots), the audio tower frozen and its outputs cached first
    (asrtune's EncoderCache), then `hf_trainer.FamilyTrainer` with the family's loss and AdamW.
    Reported: seconds per step (median after the first), the child's peak RSS (weights, optimizer state, activations,
    the cache fill included) and, on CUDA only, torch.cuda.max_memory_allocated under bf16 autocast (asrtune's bf16:
    fp32 weights). Settings: LoRA r=16 on the LLM, the adaptor only, the full LLM (r=0).

    uv run python benchmarks/audiollm_memory.py                  # (ii) 3 settings x 3 steps (~6 min on 2 cores, ~14 GiB peak)
    uv run python benchmarks/audiollm_memory.py --model aligner  # (ii) at the aligner's shapes
    uv run python benchmarks/audiollm_memory.py --quick          # (i) as above (meta device), (ii) with a tiny model: a smoke run
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


UNITS = 24  # the aligner's transcripts: characters of a 5 s clip of Mandarin at ~5 a second
STEP_MODELS = {"fun-asr-nano": ("Fun-ASR-Nano-2512", "tiny Fun-ASR-Nano"), "aligner": ("Qwen3-ForcedAligner-0.6B", "tiny aligner")}


def config_of(name: str, tokenizer=None):
    """The real shapes (/work/shared notes: funasr-nano-checkpoint.md, qwen3-asr-facts.md), or the tiny test models',
    with the ids of `tokenizer` where given."""
    from transformers import FunAsrNanoConfig, Qwen3ASRConfig

    from asrtune.testing import tiny_text_config

    audio_token_id = tokenizer.convert_tokens_to_ids("<|object_ref_start|>" if "Fun-ASR" in name else "<|audio_pad|>") if tokenizer else None
    ids = {"audio_token_id": audio_token_id} if audio_token_id is not None else {}
    if "aligner" in name.lower():
        tiny = name == "tiny aligner"
        text = tiny_text_config(tokenizer) if tiny else {**QWEN3_06B, "vocab_size": 152064, "tie_word_embeddings": False}
        if tokenizer:
            ids["timestamp_token_id"] = tokenizer.convert_tokens_to_ids("<timestamp>")
            text = {**text, "eos_token_id": tokenizer.convert_tokens_to_ids("<|im_end|>"), "pad_token_id": tokenizer.pad_token_id}
        audio = ({"encoder_layers": 2, "encoder_attention_heads": 2, "encoder_ffn_dim": 32, "d_model": 16, "output_dim": 32,
                  "downsample_hidden_size": 8} if tiny else
                 {"encoder_layers": 24, "encoder_attention_heads": 16, "encoder_ffn_dim": 4096, "d_model": 1024, "output_dim": 1024,
                  "downsample_hidden_size": 480})
        return Qwen3ASRConfig(audio_config={"model_type": "qwen3_asr_encoder", "num_mel_bins": 128, **audio}, text_config=text,
                              num_labels=400 if tiny else 5000, classifier_dropout=0.0, architectures=["Qwen3ASRForTokenClassification"],
                              **{k: text[k] for k in ("pad_token_id", "eos_token_id") if k in text}, **ids)

    if name == "Fun-ASR-Nano-2512":
        return FunAsrNanoConfig(audio_config={"model_type": "fun_asr_nano_encoder"},  # its defaults are the real encoder
                                adaptor_config={"hidden_size": 1024, "intermediate_size": 256, "num_attention_heads": 8,
                                                "num_hidden_layers": 2, "projector_hidden_size": 2048},
                                text_config=QWEN3_06B, **ids)
    if name == "tiny Fun-ASR-Nano":
        return FunAsrNanoConfig(
            audio_config={"model_type": "fun_asr_nano_encoder", "num_mel_bins": 80, "hidden_size": 16, "num_attention_heads": 2,
                          "intermediate_size": 32, "num_hidden_layers": 3, "num_timestamp_prediction_layers": 1, "fsmn_kernel_size": 3},
            adaptor_config={"hidden_size": 32, "intermediate_size": 8, "num_attention_heads": 2, "num_hidden_layers": 2,
                            "projector_hidden_size": 64},
            text_config=tiny_text_config(tokenizer), **ids)
    audio = {"model_type": "qwen3_asr_encoder", "num_mel_bins": 128, "downsample_hidden_size": 480}
    if name == "Qwen3-ASR-0.6B":
        return Qwen3ASRConfig(audio_config={**audio, "encoder_layers": 18, "d_model": 896, "encoder_attention_heads": 14,
                                            "encoder_ffn_dim": 3584, "output_dim": 1024}, text_config=QWEN3_06B)
    if name == "Qwen3-ASR-1.7B":
        return Qwen3ASRConfig(audio_config={**audio, "encoder_layers": 24, "d_model": 1024, "encoder_attention_heads": 16,
                                            "encoder_ffn_dim": 4096, "output_dim": 2048}, text_config=QWEN3_17B)
    raise ValueError(name)


def family_of(config):
    """(the asrtune family module, the transformers class) of a config."""
    import transformers

    from asrtune.families import registry

    name = registry.name_for(config.model_type, "benchmark", getattr(config, "architectures", None))
    cls = {"fun_asr_nano": "FunAsrNanoForConditionalGeneration", "qwen3_asr": "Qwen3ASRForConditionalGeneration"}[config.model_type]
    return registry.get(name), getattr(transformers, "Qwen3ASRForTokenClassification" if name == "aligner" else cls)


def set_up(model, setting: str, fam):
    """The finetune stage's set-up for a setting: freeze flags, then LoRA on the LLM when r > 0."""
    from asrtune.families import shared

    freeze_encoder, freeze_adaptor, freeze_llm, r = SETTINGS[setting]
    fam.freeze(model, freeze_encoder, freeze_adaptor, freeze_llm)
    if r:
        from peft import get_peft_model

        model = get_peft_model(model, fam.lora_config(r, 2 * r, 0.05, None, train_encoder=not freeze_encoder,
                                                      train_adaptor=not freeze_adaptor, model=model))
    shared.keep_fixed(model)
    return model


def unique(params) -> int:
    seen = {}
    for p in params:
        seen[id(p)] = p.numel()  # the tied head counts once
    return sum(seen.values())


def sizes() -> list[tuple]:
    """(i) (model, encoder, adaptor, LLM, total, trainable per setting), every model built on the meta device."""
    import torch

    rows = []
    for name in ("Fun-ASR-Nano-2512", "Qwen3-ASR-0.6B", "Qwen3-ASR-1.7B", "Qwen3-ForcedAligner-0.6B"):
        config = config_of(name)
        fam, cls = family_of(config)
        with torch.device("meta"):
            model = cls(config)
        parts = {part: unique(p for m in modules for p in m.parameters()) for part, modules in fam.parts(model).items()}
        total = unique(model.parameters())
        trainable = {}
        for setting in SETTINGS:
            with torch.device("meta"):
                fresh = cls(config)
            set_up_model = set_up(fresh, setting, fam)
            trainable[setting] = unique(p for p in set_up_model.parameters() if p.requires_grad)
        rows.append((name, parts["encoder"], parts["adaptor"], parts["llm"], total, trainable))
    return rows


def peak_mib() -> float:
    line = next(line for line in open("/proc/self/status") if line.startswith("VmHWM"))
    return int(line.split()[1]) / 1024


def step_child(model_name: str, setting: str, quick: bool, tmp: Path, steps: int) -> dict:
    """(ii) in this (child) process: build, cache the tower's outputs, train `steps` steps."""
    import torch
    from transformers import FunAsrNanoFeatureExtractor, FunAsrNanoProcessor, Qwen3ASRFeatureExtractor, Qwen3ASRProcessor

    from asrtune.corpus.chatml import Example
    from asrtune.testing import FORCED_ALIGNER_TEMPLATE, demo_texts, tiny_qwen_tokenizer
    from asrtune.train import hf_trainer
    from asrtune.train.encoder_cache import EncoderCache
    from asrtune.weights.digest import weights_digest
    from asrtune.weights.funasr_layout import FUN_ASR_TEMPLATE

    warnings.filterwarnings("ignore")
    tok = tiny_qwen_tokenizer(demo_texts(REPO / "demo"))
    aligning = model_name == "aligner"
    if aligning:
        tok.add_tokens(["<timestamp>"], special_tokens=True)
    config = config_of(STEP_MODELS[model_name][quick], tok)
    config.eos_token_id, config.pad_token_id = tok.convert_tokens_to_ids("<|im_end|>"), tok.pad_token_id
    fam, cls = family_of(config)
    start = time.perf_counter()
    torch.manual_seed(0)
    model = cls(config)  # random weights: their values change neither the memory nor the time of a step
    if not aligning:
        model.config.adaptor_config._attn_implementation = model.config._attn_implementation  # as audiollm.load_plain does
    build_s = time.perf_counter() - start
    processor = (Qwen3ASRProcessor(Qwen3ASRFeatureExtractor(), tok, chat_template=FORCED_ALIGNER_TEMPLATE) if aligning else
                 FunAsrNanoProcessor(FunAsrNanoFeatureExtractor(return_attention_mask=True), tok, chat_template=FUN_ASR_TEMPLATE))

    words = demo_texts(REPO / "demo")
    characters = "".join(c for c in "".join(words) if "\u4e00" <= c <= "\u9fff")
    rng = np.random.default_rng(0)
    items = []
    for i in range(4):
        seconds = 1.0 if quick else rng.uniform(4.5, 5.5)
        t = np.arange(int(16000 * seconds)) / 16000
        audio = (0.05 * np.sin(2 * np.pi * rng.uniform(150, 2000) * t) + 0.02 * rng.standard_normal(len(t))).astype(np.float32)
        sf.write(str(tmp / f"{i}.wav"), audio, 16000)
        if aligning:  # 24 characters, evenly spread over the clip
            step = (seconds - 0.2) / UNITS
            times = tuple((round(0.1 + k * step, 3), round(0.1 + (k + 0.8) * step, 3)) for k in range(UNITS))
            items.append(Example(f"clip-{i}", str(tmp / f"{i}.wav"), characters[i * UNITS:(i + 1) * UNITS], timestamps=times))
        else:
            items.append(Example(f"clip-{i}", str(tmp / f"{i}.wav"), "".join(rng.choice(words, 2, replace=False))))

    cuda = torch.cuda.is_available()
    if cuda:
        model.to("cuda")
    model = set_up(model, setting, fam)
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    features = json.dumps(processor.feature_extractor.to_dict(), sort_keys=True) + fam.CACHE_TAG
    cache = EncoderCache(tmp / "encoder-cache", weights_digest(fam.encoder(model), features), "float16")
    cache.fill([e.audio for e in items], lambda audio: fam.encode(model, processor, audio), 4)
    timer = hf_trainer.StepTimer()
    args = hf_trainer.arguments(SimpleNamespace(batch_size=4, grad_accum=1, warmup=0.0, weight_decay=0.0, save_steps=0, seed=42,
                                                gradient_checkpointing=False),
                                SimpleNamespace(epochs=1, learning_rate=1e-4), tmp / "out", "bf16" if cuda else "fp32",
                                max_steps=steps, save_strategy="no", eval_strategy="no", load_best_model_at_end=False)
    make_item = fam.item_maker(base, processor, SimpleNamespace(model=SimpleNamespace(language="zh" if aligning else None)))
    trainer = hf_trainer.FamilyTrainer(model=model, args=args, train_dataset=hf_trainer.SpeechDataset(items, make_item, None, cache),
                                       data_collator=fam.collator(base, processor), callbacks=[timer], family_loss=fam.loss)
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    trainer.train()
    return {"step_s": statistics.median(timer.intervals), "build_s": build_s, "peak_mib": peak_mib(),
            "trainable": unique(p for p in model.parameters() if p.requires_grad),
            "tokens": sum(len(make_item(e, int(16000 * sf.info(e.audio).duration))["input_ids"]) for e in items),
            "cuda_mib": torch.cuda.max_memory_allocated() / 2**20 if cuda else None}


def run_child(model_name: str, setting: str, quick: bool, tmp: Path, steps: int) -> dict:
    folder = tmp / f"setting-{STEP_SETTINGS.index(setting)}"
    folder.mkdir()
    if quick:  # a smoke run: in this process, without paying the imports again
        return step_child(model_name, setting, quick, folder, steps)
    proc = subprocess.run([sys.executable, __file__, "--child", json.dumps([model_name, setting, quick, str(folder), steps])],
                          capture_output=True, text=True, cwd=REPO, env={**os.environ, "TQDM_DISABLE": "1"})
    if proc.returncode != 0:
        sys.exit(f"{setting} failed:\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def millions(n: int) -> str:
    return f"{n / 1e6:,.1f} M" if n >= 1e5 else f"{n / 1e6:.3f} M"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="(ii) with a tiny model, 3 steps (smoke run)")
    parser.add_argument("--model", choices=list(STEP_MODELS), default="fun-asr-nano", help="(ii) at whose shapes")
    parser.add_argument("--steps", type=int, default=3, help="training steps per setting in (ii); the first is left out")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    # before anything runs under torch.device("meta"): torchaudio's kaldi fbank makes a module-level
    # constant tensor at import, which would otherwise be born on the meta device
    import torchaudio.compliance.kaldi  # noqa: F401

    if args.child:
        model_name, setting, quick, folder, steps = json.loads(args.child)
        print(json.dumps(step_child(model_name, setting, quick, Path(folder), steps)))
        return

    rows = sizes()
    print("\n(i) Parameters per part, real shapes (meta device; the ASR models' LLM head is tied to its embeddings, counted "
          "once; the aligner's LLM has untied embeddings and its `score` head):\n")
    print("| model | audio tower | adaptor | LLM | total |")
    print("|---|---|---|---|---|")
    for name, enc, adp, llm, total, _ in rows:
        print(f"| {name} | {millions(enc)} | {millions(adp)} | {millions(llm)} | {millions(total)} |")
    print("\nTrainable parameters per setting (set up as the finetune stage does: the family's freeze, peft LoRA on the LLM's "
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
            results[setting] = run_child(args.model, setting, args.quick, Path(tmp), steps)
    tiny, real = STEP_MODELS[args.model][1], STEP_MODELS[args.model][0]
    model = tiny if args.quick else f"{real} shapes (random weights)"
    where = "CUDA, bf16 autocast" if torch.cuda.is_available() else f"CPU ({os.cpu_count()} cores), fp32"
    units = f" with {UNITS}-unit transcripts and their times" if args.model == "aligner" else ""
    print(f"\n(ii) One training step, {model}, batch of 4 clips of ~{1 if args.quick else 5} s{units} "
          f"({next(iter(results.values()))['tokens']} tokens in all), audio tower frozen and cached, "
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
