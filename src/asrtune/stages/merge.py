"""merge: fold the curriculum's adapters into the weights and write models/merged, a plain
transformers model directory (with the processor) that loads with no asrtune and no peft."""

from __future__ import annotations

from asrtune import checkpoint, families, params, paths


def run() -> None:
    """Write models/merged from the last curriculum stage."""
    import shutil

    p = params.load()
    last = list(p.train.stages)[-1]
    source = paths.finetune_dir(last)
    model = checkpoint.load(source)
    processor = families.get(checkpoint.family_of(source)).load_processor(checkpoint.root_of(source))
    shutil.rmtree(paths.MERGED_MODEL, ignore_errors=True)
    model.save_pretrained(paths.MERGED_MODEL)
    processor.save_pretrained(paths.MERGED_MODEL)
    print(f"merge: {source} (and the stages it starts from) -> {paths.MERGED_MODEL}")
