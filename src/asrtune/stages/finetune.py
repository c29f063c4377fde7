"""finetune <stage>: train one curriculum stage on data/mix/<stage>, starting from its `init`
(the base model, or the previous stage's best checkpoint by val loss).

Freeze flags decide what learns; with train.lora.r > 0 an unfrozen decoder/LLM learns through
LoRA. A frozen encoder's outputs are computed once and reused. train.distill > 0 adds distillation to
the stage's init model on the general-role utterances (hf_trainer.Distill). A killed run resumes from its last
checkpoint (kept under the asrtune cache, keyed by this stage's params, data, init, code and
library versions). train.devices > 1 relaunches the stage under torchrun; rank 0 alone writes.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import shutil
import time
from pathlib import Path

from asrtune import params, paths
from asrtune.corpus import chatml
from asrtune.corpus.manifest import read_jsonl
from asrtune.errors import UserError
from asrtune.families import registry, shared
from asrtune.train import cache, distributed
from asrtune.weights import chain, precision


def check_flags(p: params.Params, stage: str, fam, say=print) -> bool:
    """Validates this stage's freeze flags before any data or model is loaded; returns whether LoRA is used."""
    t = p.train
    encoder, adaptor, llm = t.frozen(stage)
    if not fam.HAS_ADAPTOR and not adaptor:
        say(f"note: the {fam.NAME} family has no adaptor; freeze_adaptor=false changes nothing")
    if all([encoder, llm] + ([adaptor] if fam.HAS_ADAPTOR else [])):
        raise UserError(f"train.stages.{stage}: every component is frozen (freeze_encoder, freeze_adaptor, freeze_llm): "
                        "nothing would learn")
    return t.lora.r > 0 and not llm


# the code a finetune stage trains with, whatever the family: what stages/finetune.py imports, transitively, but
# the family modules (tests/test_dvc_deps.py checks that, for each family, code_files is its import closure
# less errors, params and paths, which cannot change an output; dvc.yaml's deps are the closure over all families)
CODE = ("stages/finetune.py", "train/hf_trainer.py", "train/encoder_cache.py", "weights/digest.py", "weights/chain.py",
        "families/registry.py", "families/shared.py", "corpus/chatml.py", "corpus/sources.py", "corpus/timestamps.py",
        "corpus/manifest.py", "weights/precision.py", "train/distributed.py", "train/cache.py", "evaluation/hotwords.py",
        "evaluation/normalization.py", "evaluation/terms.py")


# what else a family's training runs: another family's code (the aligner reuses audiollm's inputs and collator)
SHARED = {"aligner": ("families/audiollm.py",)}


def code_files(family: str) -> list[Path]:
    root = Path(__file__).resolve().parents[1]
    extra = [root / f for f in SHARED.get(family, ())]
    return ([root / f for f in CODE] + [root / "families" / f"{family}.py"]
            + [f for e in extra for f in (sorted(e.rglob("*.py")) if e.is_dir() else [e])])


def fingerprint(p: params.Params, stage: str, files: list[Path], init: Path, family: str, code: list[Path] | None = None) -> str:
    """Identifies a run (params, data, init model, our code and the libraries' versions), so only a
    rerun of the very same training resumes its checkpoints."""
    import peft
    import torch
    import transformers

    versions = [torch.__version__, transformers.__version__, peft.__version__]
    h = hashlib.sha256(json.dumps([p.model.model_dump(), p.train.model_dump(exclude={"stages"}),
                                   p.train.stages[stage].model_dump(), versions], sort_keys=True).encode())
    for f in files + (code if code is not None else code_files(family)):
        h.update(hashlib.sha256(f.read_bytes()).digest())
    for f in sorted(init.rglob("*")):  # contents, not mtimes: the same run gets the same name on every clone
        if f.is_file():
            h.update(f.relative_to(init).as_posix().encode())
            with open(f, "rb") as stream:
                h.update(hashlib.file_digest(stream, "sha256").digest())
    return h.hexdigest()[:16]


def general_keys(records: list[list[dict]], stage: str, say=print) -> set[str] | None:
    """train.distill: the keys of the general-role utterances, from the role mix writes on each record; None when none is."""
    if any("role" not in r for split in records for r in split):
        raise UserError(f"train.distill: {paths.mix_dir(stage)} has records without a role (general/domain); "
                        f"rerun `dvc repro mix@{stage}`")
    keys = {r["key"] for split in records for r in split if r["role"] == "general"}
    if not keys:
        say(f"note: train.distill: {paths.mix_dir(stage)} has no general utterances: stage {stage} distills nothing")
    return keys or None


def context_lists(p: params.Params, family: str):
    """train.hotwords: example -> its context list (asrtune.evaluation.hotwords.Sampler); None when off."""
    h = p.train.hotwords
    if not h.enabled:
        return None
    if family == "aligner":
        raise UserError("train.hotwords: the aligner is given the transcript, a context list has nothing to bias; "
                        "set train.hotwords.enabled: false")
    from asrtune.evaluation.hotwords import Sampler
    from asrtune.evaluation.terms import read_terms

    return Sampler(read_terms(Path(h.terms), "train.hotwords.terms"), h.distractors, h.drop, h.empty, h.seed, h.near)


def run(stage: str) -> None:
    """Train curriculum stage <stage> into models/finetune/<stage>."""
    p = params.load()
    if stage not in p.train.stages:
        raise UserError(f"train.stages has no stage '{stage}' (have: {', '.join(p.train.stages)})")
    n_devices = distributed.devices(p.train.devices)
    relaunch = n_devices > 1 and not distributed.launched()
    main = distributed.is_main()
    say = print if main and not relaunch else (lambda *args, **kwargs: None)  # rank 0 of the processes that train speaks
    t, cfg = p.train, p.train.stages[stage]
    freeze_encoder, freeze_adaptor, freeze_llm = t.frozen(stage)
    init, out, live_dir = Path(cfg.init), paths.finetune_dir(stage), paths.train_plots_dir(stage)
    data = [paths.mix_dir(stage) / "train.jsonl", paths.mix_dir(stage) / "val.jsonl"]
    for f in data:
        if not f.is_file():
            raise UserError(f"{f}: not found (run `dvc repro mix@{stage}` first)")
    if not init.is_dir():
        raise UserError(f"train.stages.{stage}.init: {init} not found (run `dvc repro` for the stage that writes it)")
    family = chain.family_of(init)
    fam = registry.get(family)
    use_lora = check_flags(p, stage, fam, say)
    chosen = precision.resolve(p.model.precision, fam, say=say)
    context = context_lists(p, family)
    terms = [Path(p.train.hotwords.terms)] if context else []  # its contents identify the run too
    ckpt_dir = paths.cache_dir() / "checkpoints" / f"finetune-{stage}-{fingerprint(p, stage, data + terms, init, family)}"
    # the launcher (or the single process) holds the run's checkpoint folder; released however the run ends
    held = contextlib.nullcontext() if distributed.launched() else cache.lock(ckpt_dir, say=print)
    with held:
        if relaunch:
            print(f"finetune {stage}: {n_devices} processes under torchrun (DDP), global batch "
                  f"{t.batch_size} x {t.grad_accum} x {n_devices} = {t.batch_size * t.grad_accum * n_devices}")
            status = distributed.relaunch(n_devices, ["finetune", stage])
            if status:
                raise UserError(f"finetune {stage}: a torchrun process failed (exit status {status}; its message is above)")
            return

        import warnings

        import torch
        import transformers

        from asrtune.train import hf_trainer
        from asrtune.train.encoder_cache import EncoderCache
        from asrtune.weights.digest import weights_digest

        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*")  # peft asks transformers 5 the old way
        args = hf_trainer.arguments(t, cfg, ckpt_dir, chosen)  # joins the process group under torchrun
        transformers.set_seed(t.seed)
        model = chain.load(init)
        processor = fam.load_processor(chain.root_of(init))
        fam.freeze(model, freeze_encoder, freeze_adaptor, freeze_llm)
        if use_lora:
            from peft import get_peft_model

            model = get_peft_model(model, fam.lora_config(t.lora.r, t.lora.alpha, t.lora.dropout, t.lora.target_modules,
                                                          train_encoder=not freeze_encoder, train_adaptor=not freeze_adaptor,
                                                          model=model))
        shared.keep_fixed(model)
        unwrapped = model.get_base_model() if use_lora else model
        trainable = sum(x.numel() for x in model.parameters() if x.requires_grad)
        total = sum(x.numel() for x in model.parameters())

        # checks the tokenizer before minutes of encoder caching; with train.hotwords each prompt carries a context list
        make_item = fam.item_maker(model, processor, p, context) if context else fam.item_maker(model, processor, p)
        problem = (lambda ex: fam.problem(ex, processor, p)) if hasattr(fam, "problem") else None  # e.g. the aligner: no timestamps
        records = [list(read_jsonl(f)) for f in data]
        (train_ex, too_long_train), (val_ex, too_long_val) = (
            hf_trainer.split_too_long(chatml.examples(r), make_item, fam.max_positions(unwrapped), problem) for r in records)
        general = general_keys(records, stage, say) if t.distill else None
        too_long = {**too_long_train, **too_long_val}
        for name, kept in (("train", train_ex), ("val", val_ex)):
            if not kept:
                raise UserError(f"{paths.mix_dir(stage) / name}.jsonl: no utterance fits the model ({len(too_long)} rejected; "
                                f"the first: {next(iter(too_long.values()), '')})")
        if too_long:
            say(f"finetune {stage}: {len(too_long)} utterances rejected before training (listed in {out / 'summary.json'}):")
            for key, reason in list(too_long.items())[:10]:
                say(f"  {key}: {reason}")
        encoded = None  # the encoder cache, when the encoder is frozen
        model.to(args.device)  # this process's own device (cuda:<local rank>), before the encoder cache fills
        if freeze_encoder and t.cache_encoder:
            enc = fam.encoder(model)
            features_config = json.dumps(processor.feature_extractor.to_dict(), sort_keys=True) + fam.CACHE_TAG
            encoded = EncoderCache(paths.cache_dir() / "encoder", weights_digest(enc, features_config), t.cache_dtype)
            # each process encodes its share of the missing clips (no file written twice), then all wait for all
            new = encoded.fill([e.audio for e in train_ex + val_ex], lambda audio: fam.encode(model, processor, audio), t.batch_size,
                             args.process_index, args.world_size)
            new = distributed.total(new, args.device)
            say(f"finetune {stage}: encoder outputs cached for {len(train_ex) + len(val_ex)} clips ({new} computed now) in {encoded.dir}")

        datasets = [hf_trainer.SpeechDataset(ex, make_item, lambda a: fam.features(processor, a), encoded, general)
                    for ex in (train_ex, val_ex)]
        collate, distill = fam.collator(unwrapped, processor), None
        if general is not None:
            # the teacher is this stage's init. LoRA: the same network, adapters disabled (no copy). Without LoRA the
            # trained weights are the model's own: a frozen copy of the init (the memory of one more model, no grads)
            teacher = None if use_lora else chain.load(init).to(args.device).eval().requires_grad_(False)
            collate, distill = hf_trainer.with_roles(collate), hf_trainer.Distill(t.distill, fam.learned_logits, teacher)
        resume = hf_trainer.last_checkpoint(ckpt_dir)
        callbacks = [timer := hf_trainer.StepTimer()]
        if main:
            callbacks.append(hf_trainer.Curves(live_dir, hf_trainer.checkpoint_step(resume) if resume else None))
        trainer = hf_trainer.FamilyTrainer(model=model, args=args, train_dataset=datasets[0], eval_dataset=datasets[1],
                                           data_collator=collate, callbacks=callbacks, family_loss=fam.loss, distill=distill)
        world = args.world_size
        device = f"{args.device.type} x {world} processes (DDP)" if world > 1 else str(args.device)
        if torch.cuda.device_count() > world:
            say(f"note: {torch.cuda.device_count()} GPUs visible, training uses {world} (train.devices: auto uses all)")
        say(f"finetune {stage}: from {init}, {len(train_ex)} train / {len(val_ex)} val utterances, "
            f"{'LoRA r=' + str(t.lora.r) if use_lora else 'full'} on the unfrozen parts, "
            f"{trainable / 1e6:.2f} M of {total / 1e6:.1f} M parameters trainable, {device}, {chosen}"
            + (f", distilled to {init} on general utterances (weight {t.distill:g})" if distill else "")
            + (f", each prompt with a context list from the {len(context.terms)} terms of {t.hotwords.terms} (train.hotwords)"
               if context else "")
            + (f"; resuming from {resume.name}" if resume else ""))
        start = time.perf_counter()
        result = trainer.train(resume_from_checkpoint=str(resume) if resume else None)
        wall = time.perf_counter() - start
        trainer.accelerator.wait_for_everyone()  # every rank is done with the checkpoints before rank 0 removes them
        if not main:
            return

        shutil.rmtree(out, ignore_errors=True)
        chain.save(trainer.model, out, init, use_lora)
        best = trainer.state.best_metric
        resumed_from = hf_trainer.checkpoint_step(resume) if resume else 0
        # no timings in the stage output: the same params and data give the same bytes (timings are printed below)
        summary = {"stage": stage, "init": str(init), "lora": use_lora, "trainable_params": trainable, "params": total,
                   "steps": trainer.state.global_step, "resumed_from_step": resumed_from,
                   "best_val_loss": best, "train_loss": result.training_loss, "rejected": too_long}
        (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
        shutil.rmtree(ckpt_dir, ignore_errors=True)  # done: the stage output holds the best model now
        steps_run = trainer.state.global_step - resumed_from
        steady = f", {timer.seconds_per_step:.2f} s per training step alone" if timer.seconds_per_step else ""
        print(f"finetune {stage}: {steps_run} steps in {wall:.1f} s with evaluation and saves ({wall / max(steps_run, 1):.2f} s/step"
              f"{steady}), best val loss {best:.4f} -> {out}")
