"""merge: fold the curriculum's adapters into the weights and write models/merged, a plain
transformers model directory (with the processor) that loads with no asrtune and no peft.

The weights are stored in float32, as they trained: the fine-tuning's update to a bf16-released weight is
mostly smaller than half a bf16 step, so storing the merged model in bf16 would round much of it away.
Files the chain's root carries beside its model (Fun-ASR's CTC head and config.yaml, which transformers'
model has no place for) are copied along, so export can give them back.

merge.scale < 1 interpolates in weight space (WiSE-FT): base + scale x (tuned - base) for every floating
tensor, base being models/base, the chain's root: the curriculum's whole update, scaled. 1: the tuned model as is.
merge.scale auto takes the scale the sweep stage chose (metrics/merge_scale.json, a dependency: written for any
merge.scale, a note only under a number, which merge then ignores). The scale used and what chose it go to
models/merged/asrtune_merge.json."""

from __future__ import annotations

import json
from pathlib import Path

from asrtune import params, paths
from asrtune.errors import UserError
from asrtune.families import registry
from asrtune.weights import chain

SCALE_FILE = Path("metrics/merge_scale.json")  # the sweep stage's: per-scale val CERs and, under auto, the chosen scale
RECORD = "asrtune_merge.json"  # in models/merged: {"scale": x, "chosen_by": "auto" | "params"} (not chain.META)


def run() -> None:
    """Write models/merged from the last curriculum stage."""
    import shutil

    import torch

    from asrtune.weights import funasr_layout  # torch at import: the CLI starts without it

    p = params.load()
    last = list(p.train.stages)[-1]
    source = paths.finetune_dir(last)
    root = chain.root_of(source)
    scale, chosen_by = chosen_scale(p)
    model = chain.load(source).to(torch.float32)
    if scale != 1:  # 1 leaves the weights untouched: exactly the tuned model
        interpolate(model, chain.load(root).to(torch.float32), scale)
    processor = registry.get(chain.family_of(source)).load_processor(root)
    shutil.rmtree(paths.MERGED_MODEL, ignore_errors=True)
    model.save_pretrained(paths.MERGED_MODEL)
    processor.save_pretrained(paths.MERGED_MODEL)
    carried = funasr_layout.carry_beside(root, paths.MERGED_MODEL)
    (paths.MERGED_MODEL / RECORD).write_text(json.dumps({"scale": scale, "chosen_by": chosen_by}) + "\n", encoding="utf-8")
    print(f"merge: {source} (and the stages it starts from) -> {paths.MERGED_MODEL} (float32"
          + (f", base + {scale:g} x (tuned - base)" if scale != 1 else "") + ")"
          + (f"; carried from {root}: {', '.join(carried)}" if carried else ""))
    print(f"merge: scale {scale:g}, " + (f"chosen by the sweep on val ({SCALE_FILE})" if chosen_by == "auto" else "merge.scale"))


def chosen_scale(p: params.Params) -> tuple[float, str]:
    """(the scale, "params" | "auto"): merge.scale when a number, else the sweep stage's choice."""
    if p.merge.scale != "auto":
        return float(p.merge.scale), "params"
    try:
        summary = json.loads(SCALE_FILE.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"merge.scale auto: {SCALE_FILE} not found (run `dvc repro sweep` first)") from None
    if summary.get("chosen_by") != "auto":  # the note the sweep writes under a numeric merge.scale
        raise UserError(f"merge.scale auto: {SCALE_FILE} holds no sweep (written for merge.scale {summary.get('scale')}); "
                        "run `dvc repro sweep`")
    return float(summary["scale"]), "auto"


def interpolate(model, base, scale: float, tuned: dict | None = None) -> None:
    """model's floating tensors <- base + scale x (tuned - base), in place; `tuned`: a state dict (the sweep's,
    kept on the CPU while `model` takes each scale in turn, on any device), by default model's own. The lerp
    runs on the reference tensors' device, so the weights are merge's bit for bit. Tied tensors (e.g. an output
    projection tied to the embeddings) share storage: each is moved once, not once per name."""
    import torch

    done, reference = set(), base.state_dict()
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if tensor.is_floating_point() and tensor.data_ptr() not in done:
                done.add(tensor.data_ptr())
                tensor.copy_(torch.lerp(reference[name], tensor if tuned is None else tuned[name], scale))
