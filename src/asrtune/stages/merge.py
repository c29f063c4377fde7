"""merge: fold the curriculum's adapters into the weights and write models/merged, a plain
transformers model directory (with the processor) that loads with no asrtune and no peft.

The weights are stored in float32, as they trained: the fine-tuning's update to a bf16-released weight is
mostly smaller than half a bf16 step, so storing the merged model in bf16 would round much of it away.
Files the chain's root carries beside its model (Fun-ASR's CTC head and config.yaml, which transformers'
model has no place for) are copied along, so export can give them back.

merge.scale < 1 interpolates in weight space (WiSE-FT): base + scale x (tuned - base) for every floating
tensor, base being models/base, the chain's root: the curriculum's whole update, scaled. 1: the tuned model as is."""

from __future__ import annotations

from asrtune import checkpoint, families, params, paths


def run() -> None:
    """Write models/merged from the last curriculum stage."""
    import shutil

    import torch

    from asrtune import funasr_layout  # torch at import: the CLI starts without it

    p = params.load()
    last = list(p.train.stages)[-1]
    source = paths.finetune_dir(last)
    root = checkpoint.root_of(source)
    model = checkpoint.load(source).to(torch.float32)
    scale = p.merge.scale
    if scale != 1:  # 1 leaves the weights untouched: exactly the tuned model
        interpolate(model, checkpoint.load(root).to(torch.float32), scale)
    processor = families.get(checkpoint.family_of(source)).load_processor(root)
    shutil.rmtree(paths.MERGED_MODEL, ignore_errors=True)
    model.save_pretrained(paths.MERGED_MODEL)
    processor.save_pretrained(paths.MERGED_MODEL)
    carried = funasr_layout.carry_beside(root, paths.MERGED_MODEL)
    print(f"merge: {source} (and the stages it starts from) -> {paths.MERGED_MODEL} (float32"
          + (f", base + {scale:g} x (tuned - base)" if scale != 1 else "") + ")"
          + (f"; carried from {root}: {', '.join(carried)}" if carried else ""))


def interpolate(model, base, scale: float) -> None:
    """model's floating tensors <- base + scale x (model - base), in place. Tied tensors (e.g. an output
    projection tied to the embeddings) share storage: each is moved once, not once per name."""
    import torch

    done, reference = set(), base.state_dict()
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if tensor.is_floating_point() and tensor.data_ptr() not in done:
                done.add(tensor.data_ptr())
                tensor.copy_(torch.lerp(reference[name], tensor, scale))
