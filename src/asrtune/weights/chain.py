"""Fine-tuned stage outputs and how to load them.

A finetune stage writes `models/finetune/<stage>/`: `asrtune.json` (family, init, kind) and either
`adapter/` (LoRA, a peft adapter on top of its init model, with any fully trained part beside it)
or `trained.safetensors` (no LoRA: only the tensors that trained, e.g. an adaptor of a few MB
rather than a copy of a 0.6 B LLM that stayed frozen). Stage N's
init is stage N-1's output, so loading follows the chain down to a plain model directory and
folds each adapter in on the way: what comes back is a plain transformers model.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from asrtune.errors import UserError
from asrtune.families import registry

META = "asrtune.json"
TRAINED = "trained.safetensors"


def _init_of(path: Path) -> Path:
    """`init` is stored relative to the stage output, so a repository works wherever it lies."""
    return Path(os.path.normpath(path / json.loads((path / META).read_text())["init"]))


def root_of(path: Path) -> Path:
    """The plain model directory a chain starts from (its processor is the chain's processor)."""
    return root_of(_init_of(path)) if (path / META).is_file() else path


def family_of(path: Path) -> str:
    """The family of a base directory or a fine-tuned stage output (its chain's root decides)."""
    if not path.is_dir():
        raise UserError(f"{path}: not found (run `dvc repro` for the stage that writes it)")
    return registry.of(root_of(path))


def load(path: Path):
    """A plain (merged) model from a base directory or a fine-tuned stage output."""
    family = family_of(path)
    fam = registry.get(family)
    meta_file = path / META
    if not meta_file.is_file():
        return fam.load_plain(path)
    try:
        meta = json.loads(meta_file.read_text())
        kind, made_by = meta["kind"], meta["family"]
    except (json.JSONDecodeError, KeyError) as e:
        raise UserError(f"{meta_file}: not a stage description ({type(e).__name__}: {e}); rerun its finetune stage") from None
    if made_by != family:
        raise UserError(f"{path}: trained as a {made_by} model, but the model it starts from is now a {family} one "
                        "(model.base changed? run `dvc repro` so every stage follows it)")
    if kind not in ("lora", "partial"):
        raise UserError(f"{meta_file}: unknown kind {kind!r} (an older asrtune's output? rerun its finetune stage)")
    init = load(_init_of(path))
    if kind == "partial":
        from safetensors.torch import load_file

        try:
            result = init.load_state_dict(load_file(path / TRAINED), strict=False)
        except RuntimeError as e:  # shapes differ: the init model changed since this stage trained
            lines = str(e).strip().splitlines()
            raise UserError(f"{path / TRAINED}: does not fit {_init_of(path)}: {lines[min(1, len(lines) - 1)].strip()}") from None
        if result.unexpected_keys:
            raise UserError(f"{path / TRAINED}: tensors the model does not have: {', '.join(result.unexpected_keys[:5])}")
        return init
    from peft import PeftModel

    return PeftModel.from_pretrained(init, path / "adapter").merge_and_unload()


def save(model, out: Path, init: Path, lora: bool) -> None:
    """Write a stage output: the adapter (LoRA) or the trained tensors, plus where it starts from."""
    out.mkdir(parents=True, exist_ok=True)
    if lora:
        model.save_pretrained(out / "adapter")
    else:
        from safetensors.torch import save_file

        trained = {name: p.detach().contiguous() for name, p in model.named_parameters() if p.requires_grad}
        save_file(trained, out / TRAINED)
    meta = {"family": family_of(init), "init": Path(os.path.relpath(init, out)).as_posix(), "kind": "lora" if lora else "partial"}
    (out / META).write_text(json.dumps(meta, indent=2) + "\n")
