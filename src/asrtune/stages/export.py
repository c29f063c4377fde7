"""export: models/merged in Fun-ASR's own layout, for serving with funasr or Fun-ASR-vllm.

For a Fun-ASR-Nano model it writes models/export/funasr/: model.pt with every weight (`llm.*`
included: Fun-ASR's shipped config drops them from the checkpoints it saves), config.yaml and
Qwen3-0.6B/ (config and tokenizer), each tensor in the dtype of models/base's (the released bf16: Fun-ASR's
runtime loads bf16 anyway, at the cost of the part of the update under half a bf16 step, which the summary
counts). Any other model has no such layout: a one-line note.
"""

from __future__ import annotations

import shutil

from asrtune import paths
from asrtune.errors import UserError
from asrtune.families import registry

NOTE = "NOT_EXPORTED.txt"


def run() -> None:
    """Write models/export from models/merged."""
    source = paths.MERGED_MODEL
    if not (source / "config.json").is_file():
        raise UserError(f"{source}: not found (run `dvc repro merge` first)")
    out = paths.EXPORT_DIR
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    model_type = registry.model_type(source)
    if model_type != "fun_asr_nano":
        (out / NOTE).write_text(f"models/merged is a {model_type} model: it is served as it is (transformers). "
                                "Fun-ASR-Nano models are also written here in Fun-ASR's own layout.\n")
        print(f"export: a {model_type} model has no other layout; models/merged is the deliverable")
        return
    from asrtune.weights import funasr_layout  # torch: only when there is something to convert

    # models/merged is float32 (as trained); Fun-ASR's files keep the dtypes of the model it was tuned from
    print(f"export: {funasr_layout.to_funasr(source, out / 'funasr', dtypes_of=paths.BASE_MODEL)} -> {out / 'funasr'}")
