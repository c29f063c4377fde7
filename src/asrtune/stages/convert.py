"""convert <model>: with decode.engine=ctranslate2, write models/ct2/<model>, the CTranslate2 copy
of `base` or `merged` (CTranslate2's own converter; faster-whisper loads it too), its weights stored
in decode.compute_type (default: float16), which decode then computes in: so that setting is this
stage's alone, and changing it under the transformers engine reruns nothing but this note.

With decode.engine=transformers there is nothing to convert: the stage writes a one-line note in
under a second, so the pipeline's shape stays the same for both engines.
"""

from __future__ import annotations

import shutil

from asrtune import params, paths
from asrtune.errors import UserError
from asrtune.families import registry

NOTE = "NOT_CONVERTED.txt"


def run(model: str) -> None:
    """Write models/ct2/<model>."""
    p = params.load()
    if model not in paths.DECODED_MODELS:
        raise UserError(f"convert: model must be one of {', '.join(paths.DECODED_MODELS)}, got {model!r}")
    out = paths.ct2_dir(model)
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    if p.decode.engine != "ctranslate2":
        (out / NOTE).write_text(f"decode.engine is {p.decode.engine}: models/{model} is decoded as it is. "
                                "`dvc exp run -S decode.engine=ctranslate2` writes a CTranslate2 copy here.\n")
        print(f"convert {model}: decode.engine={p.decode.engine}, nothing to convert")
        return
    from asrtune.weights import ct2_engine

    source = paths.model_dir(model)
    if not (source / "config.json").is_file():
        raise UserError(f"{source}: not found (run `dvc repro {'base' if model == 'base' else 'merge'}` first)")
    ct2_engine.check_family(registry.of(source))
    stored = ct2_engine.stored_type(p.decode.compute_type)
    ct2_engine.convert(source, out, stored)
    size = sum(f.stat().st_size for f in out.iterdir()) / 2**20
    print(f"convert {model}: {source} -> {out} (CTranslate2, {stored} weights, {size:.0f} MiB)")
