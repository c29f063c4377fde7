"""model.precision -> what training and decoding run in: bf16, fp16 or fp32, chosen once for both.

Both run float32 weights under autocast: training keeps float32 master weights, and decode runs the merged
model the same way. Casting the merged weights to bf16 would round W + dW back to W wherever the fine-tuning's
update is under half a bf16 step of the weight (most of a LoRA update on bf16-released models), so the
fine-tuned model would be judged on less than it learned, and the base model (exact in bf16) would not."""

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


def autocast(precision: str, device):
    """autocast to bf16/fp16 as training ran; fp32: none."""
    import torch

    return torch.autocast(torch.device(device).type, dtype=torch_dtype(precision), enabled=precision != "fp32")


def load_for_inference(p, model_dir, net=None):
    """(model, its family): the model of `model_dir` (or `net`, already loaded from it in float32, e.g. the sweep's
    interpolation) in eval mode on the GPU if any, else the CPU, with its float32 weights and its forward (and its
    encoder's, which the families also call alone) under `autocast`, as training ran it. Only the model's forward:
    feature extraction computed under a bf16 autocast would be rounded too."""
    import torch

    from asrtune.families import registry
    from asrtune.weights import chain

    fam = registry.get(chain.family_of(model_dir))
    chosen = resolve(p.model.precision, fam)
    net = (chain.load(model_dir) if net is None else net).eval().to("cuda" if torch.cuda.is_available() else "cpu")
    encoder = net.get_encoder() if hasattr(net, "get_encoder") else None
    for module in {id(m): m for m in (net, encoder) if m is not None}.values():
        module.forward = autocast(chosen, net.device)(module.forward)
    net.asrtune_precision = chosen
    return net, fam
