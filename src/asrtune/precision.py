"""model.precision -> what training and decoding run in: bf16, fp16 or fp32, chosen once for both
(decode uses the precision training used)."""

from __future__ import annotations

from asrtune.errors import UserError

TORCH_DTYPES = {"bf16": "bfloat16", "fp16": "float16", "fp32": "float32"}


def resolve(requested: str, fam, gpu: bool | None = None, gpu_bf16: bool | None = None, say=print) -> str:
    """auto: bf16 on a GPU that has it; on one without (T4, V100) fp16 with loss scaling for families
    that tolerate it (whisper) and fp32 for LLMs, which overflow in fp16; fp32 on a CPU. An explicit
    choice is honoured where it can run (bf16 runs on a CPU too, slowly: how dtype bugs show without a GPU)."""
    if gpu is None:
        import torch

        gpu = torch.cuda.is_available()
        gpu_bf16 = gpu and torch.cuda.is_bf16_supported(including_emulation=False)  # T4/V100 only emulate it
    if requested == "auto":
        if not gpu:
            return "fp32"
        if gpu_bf16:
            return "bf16"
        if fam.FP16_OK:
            return "fp16"
        say(f"warning: this GPU has no bf16 and the {fam.NAME} family's LLM overflows in fp16: training and decoding run in fp32")
        return "fp32"
    if requested == "fp16" and not gpu:
        raise UserError("model.precision: fp16 needs a GPU (loss scaling); on a CPU use bf16 or fp32")
    if requested == "fp16" and not fam.FP16_OK:
        raise UserError(f"model.precision: fp16 is not safe for the {fam.NAME} family (its LLM overflows in fp16); use bf16 or fp32")
    if requested == "bf16" and gpu and not gpu_bf16:
        raise UserError("model.precision: this GPU has no bf16; use auto, fp16 or fp32")
    return requested


def torch_dtype(precision: str):
    import torch

    return getattr(torch, TORCH_DTYPES[precision])


def trainer_settings(precision: str, gpu: bool) -> dict:
    """TrainingArguments for it: mixed precision (autocast) over float32 weights."""
    return {"bf16": precision == "bf16", "fp16": precision == "fp16", "use_cpu": not gpu}
