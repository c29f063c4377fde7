"""merge: fold the curriculum's adapters into the weights and write models/merged, a plain
transformers model directory (with the processor) that loads with no asrtune and no peft.

The weights are stored in float32, as they trained: the fine-tuning's update to a bf16-released weight is
mostly smaller than half a bf16 step, so storing the merged model in bf16 would round much of it away.
Files the chain's root carries beside its model (Fun-ASR's CTC head and config.yaml, which transformers'
model has no place for) are copied along, so export can give them back."""

from __future__ import annotations

from asrtune import checkpoint, families, funasr_layout, params, paths


def run() -> None:
    """Write models/merged from the last curriculum stage."""
    import shutil

    import torch

    p = params.load()
    last = list(p.train.stages)[-1]
    source = paths.finetune_dir(last)
    root = checkpoint.root_of(source)
    model = checkpoint.load(source).to(torch.float32)
    processor = families.get(checkpoint.family_of(source)).load_processor(root)
    shutil.rmtree(paths.MERGED_MODEL, ignore_errors=True)
    model.save_pretrained(paths.MERGED_MODEL)
    processor.save_pretrained(paths.MERGED_MODEL)
    carried = funasr_layout.carry_beside(root, paths.MERGED_MODEL)
    print(f"merge: {source} (and the stages it starts from) -> {paths.MERGED_MODEL} (float32)"
          + (f"; carried from {root}: {', '.join(carried)}" if carried else ""))
