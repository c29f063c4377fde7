"""Training speed: our finetune stage against the Hugging Face reference recipe, side by side in one run.

Both train whisper-base with a frozen encoder on the same clips (the first steps x batch of the
demo's data/mix/s1/train.jsonl), same batch size, steps, learning rate and seed, on this machine:

- asrtune: `asrtune finetune s1` run as DVC runs it, in a scratch repository with a cold encoder
  cache (the encoder runs once per clip, then every step reads its outputs);
- reference: transformers' `examples/pytorch/speech-recognition/run_speech_recognition_seq2seq.py`
  recipe: log-mel features computed once up front (its `datasets.map(prepare_dataset)`), its
  `DataCollatorSpeechSeq2SeqWithPadding`, `model.freeze_encoder()`, `Seq2SeqTrainer`; the frozen
  encoder runs again on every step.

Two set-ups each: the decoder fully trained (train.lora.r=0), and LoRA on the decoder (r=16, the
same adapters on both sides). Reported: seconds per training step after the first (evaluation and
saves left out), and each whole run as a process (imports, features or encoder cache, training; our
stage also evaluates once and saves).

    uv run --extra demo dvc repro                        # the finished demo: models/base, data/mix/s1
    uv run python benchmarks/train_speed.py              # 12 steps of batch 16 (about 10 minutes on 2 cores)
    uv run python benchmarks/train_speed.py --quick      # a tiny random Whisper, noise clips: a smoke run
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import soundfile as sf
import yaml
from common import run_stage, scratch_repo, write_params

LEARNING_RATE = 1e-3


@dataclass
class DataCollatorSpeechSeq2SeqWithPadding:
    """As in run_speech_recognition_seq2seq.py (transformers' examples, Apache-2.0)."""

    processor: object
    decoder_start_token_id: int

    def __call__(self, features):
        model_input_name = self.processor.model_input_names[0]
        input_features = [{model_input_name: feature[model_input_name]} for feature in features]
        label_features = [{"input_ids": feature["labels"]} for feature in features]
        batch = self.processor.feature_extractor.pad(input_features, return_tensors="pt")
        labels_batch = self.processor.tokenizer.pad(label_features, return_tensors="pt")
        labels = labels_batch["input_ids"].masked_fill(labels_batch.attention_mask.ne(1), -100)
        if (labels[:, 0] == self.decoder_start_token_id).all().cpu().item():
            labels = labels[:, 1:]
        batch["labels"] = labels
        return batch


def reference(model_dir: str, train_jsonl: str, steps: int, batch: int, lora_r: int, out: str) -> dict:
    """The reference recipe, in this (child) process; returns its timings."""
    import torch
    from transformers import Seq2SeqTrainer, Seq2SeqTrainingArguments, WhisperForConditionalGeneration, WhisperProcessor

    from asrtune.corpus.chatml import examples
    from asrtune.corpus.manifest import read_jsonl
    from asrtune.families import whisper
    from asrtune.train.hf_trainer import StepTimer
    from asrtune.weights import precision

    torch.manual_seed(42)
    processor = WhisperProcessor.from_pretrained(model_dir)
    processor.tokenizer.set_prefix_tokens(language="zh", task="transcribe")
    model = WhisperForConditionalGeneration.from_pretrained(model_dir)
    model.freeze_encoder()
    if lora_r:
        from peft import get_peft_model

        model = get_peft_model(model, whisper.lora_config(lora_r, 2 * lora_r, 0.05, None, train_encoder=False, train_adaptor=False))
    items = examples(read_jsonl(Path(train_jsonl)))
    start = time.perf_counter()
    data = []
    for e in items:  # prepare_dataset
        audio = sf.read(e.audio, dtype="float32")[0]
        data.append({"input_features": processor.feature_extractor(audio, sampling_rate=16000).input_features[0],
                     "labels": processor.tokenizer(e.text).input_ids})
    features_s = time.perf_counter() - start
    args = Seq2SeqTrainingArguments(output_dir=out, per_device_train_batch_size=batch, max_steps=steps,
                                    learning_rate=LEARNING_RATE, warmup_steps=0.1, logging_steps=1, save_strategy="no",
                                    eval_strategy="no", report_to=[], seed=42, dataloader_num_workers=0,
                                    remove_unused_columns=False,  # the same precision as our stage: bf16 on a GPU
                                    **precision.trainer_settings(precision.resolve("auto", whisper), torch.cuda.is_available()))
    timer = StepTimer()
    trainer = Seq2SeqTrainer(model=model, args=args, train_dataset=data, processing_class=processor.feature_extractor,
                             data_collator=DataCollatorSpeechSeq2SeqWithPadding(processor, model.config.decoder_start_token_id),
                             callbacks=[timer])
    start = time.perf_counter()
    trainer.train()
    return {"features_s": features_s, "train_s": time.perf_counter() - start, "step_s": timer.seconds_per_step}


def run_reference(repo: Path, steps: int, batch: int, lora_r: int, tmp: Path) -> dict:
    """The recipe in a child process of its own (its peak memory is its own too)."""
    start = time.perf_counter()
    child = json.dumps([str(repo / "models/base"), str(repo / "data/mix/s1/train.jsonl"), steps, batch, lora_r,
                        str(tmp / f"reference-{lora_r}")])
    code = ("import atexit, runpy, sys\n"
            "atexit.register(lambda: sys.stderr.write([l for l in open('/proc/self/status') if l.startswith('VmHWM')][0]))\n"
            f"sys.path.insert(0, {str(Path(__file__).parent)!r})\n"
            f"sys.argv = [{__file__!r}, '--reference-child', {child!r}]\n"
            f"runpy.run_path({__file__!r}, run_name='__main__')\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=repo)  # audio paths are repo-relative
    if proc.returncode != 0:
        sys.exit(f"reference recipe failed:\n{proc.stderr[-3000:]}")
    peak = int(re.search(r"VmHWM:\s+(\d+) kB", proc.stderr).group(1)) / 1024
    return {**json.loads(proc.stdout.strip().splitlines()[-1]), "process_s": time.perf_counter() - start, "peak_mib": peak}


def run_ours(repo: Path, params: dict, lora_r: int, cache: Path) -> dict:
    params["train"]["lora"]["r"] = lora_r
    write_params(repo, params)
    run = run_stage(["finetune", "s1"], repo, env={"ASRTUNE_CACHE": str(cache)})
    m = re.search(r"(\d+) steps in .* ([\d.]+) s per training step alone", run.stdout)
    return {"steps": int(m.group(1)), "step_s": float(m.group(2)), "process_s": run.wall, "peak_mib": run.peak_mib}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny random Whisper, 3 steps of batch 4, LoRA only (smoke run)")
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--reference-child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.reference_child:
        warnings.filterwarnings("ignore")
        model_dir, train_jsonl, steps, batch, lora_r, out = json.loads(args.reference_child)
        print(json.dumps(reference(model_dir, train_jsonl, steps, batch, lora_r, out)))
        return
    steps, batch = (3, 4) if args.quick else (args.steps, args.batch)
    rows = []
    with tempfile.TemporaryDirectory(prefix="asrtune-train-bench-") as tmp_name:
        tmp = Path(tmp_name)
        repo = scratch_repo(tmp / "repo", args.quick, train_rows=steps * batch, val_rows=batch, clips=steps * batch + batch)
        params = yaml.safe_load((repo / "params.yaml").read_text(encoding="utf-8"))
        params["mix"]["stages"] = {"s1": params["mix"]["stages"]["s1"]}
        params["train"].update(batch_size=batch, grad_accum=1, seed=42,
                               stages={"s1": {"init": "models/base", "epochs": 1, "learning_rate": LEARNING_RATE}})
        setups = [("decoder fully trained", 0), ("LoRA r=16 on the decoder", 16)]
        for name, r in setups[1:] if args.quick else setups:  # quick: one set-up is enough to smoke-test
            ours = run_ours(repo, params, r, tmp / f"cache-{r}")  # a cold encoder cache each time
            ref = run_reference(repo, steps, batch, r, tmp)
            assert ours["steps"] == steps, ours
            rows.append((name, ours, ref))
    print(f"\n{steps} steps of batch {batch}, {'tiny random Whisper' if args.quick else 'whisper-base'}, frozen encoder, "
          f"CPU ({os.cpu_count()} cores):\n")
    print("| set-up | asrtune s/step | reference s/step | speed-up | asrtune whole run | reference whole run | speed-up "
          "| asrtune peak RSS | reference peak RSS |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, ours, ref in rows:
        print(f"| {name} | {ours['step_s']:.2f} | {ref['step_s']:.2f} | {ref['step_s'] / ours['step_s']:.1f}x | "
              f"{ours['process_s']:.0f} s | {ref['process_s']:.0f} s | {ref['process_s'] / ours['process_s']:.1f}x | "
              f"{ours['peak_mib'] / 1024:.2f} GiB | {ref['peak_mib'] / 1024:.2f} GiB |")
    features = ", ".join(f"{ref['features_s']:.1f} s" for _, _, ref in rows)
    print(f"\nreference: features computed up front in {features}; "
          "its whole run has no evaluation, ours fills a cold encoder cache, evaluates once and saves. "
          "Goal: steps/s at least 4x the reference's.")


if __name__ == "__main__":
    main()
