"""The whole mission on a tiny random Whisper in a scratch git + DVC repo.

`dvc repro` runs everything; a param change invalidates exactly the stages that declare it
(`dvc status`, `dvc repro --dry`; what follows reruns when its inputs change, as the experiment
shows); the same params give byte-identical data; and
`dvc exp run -S model.base=<a tiny Fun-ASR-Nano in Fun-ASR's own layout>` reruns everything from
the base model on and never ingest (the audiollm family, picked by the checkpoint's config), after
which `dvc metrics diff` reports the CER change and models/export holds the Fun-ASR layout again; then
`dvc exp run -S model.base=<a tiny Qwen3-ForcedAligner>` trains the aligner on the corpora's reference
timestamps and writes its timing error to metrics/alignment.json. (tests/test_training.py trains the
whisper flags themselves.)
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import yaml
from conftest import BIN, ENV, ran, sh

GIT_ENV = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"}
DVC = str(BIN / "dvc")


def commit(repo: Path, message: str) -> None:
    sh(repo, "git", "add", "-A")
    subprocess.run(["git", "commit", "-qm", message], cwd=repo, check=True, env={**ENV, **GIT_ENV})


def set_param(repo: Path, dotted: str, value) -> None:
    params = yaml.safe_load((repo / "params.yaml").read_text(encoding="utf-8"))
    node = params
    *parents, leaf = dotted.split(".")
    for key in parents:
        node = node[key]
    node[leaf] = value
    (repo / "params.yaml").write_text(yaml.safe_dump(params, allow_unicode=True, sort_keys=False), encoding="utf-8")


def would_run(repo: Path) -> set[str]:
    return ran(sh(repo, DVC, "repro", "--dry"))


def out_hashes(repo: Path) -> dict[str, str]:
    lock = yaml.safe_load((repo / "dvc.lock").read_text())
    return {o["path"]: o["md5"] for stage in lock["stages"].values() for o in stage.get("outs", []) if "md5" in o}


def test_pipeline_end_to_end(dvc_repo, tiny_fun_asr_dir, tiny_aligner_dir):
    # two curriculum stages keep it quick and still exercise stage 2 starting from stage 1
    set_param(dvc_repo, "mix.stages", {"s1": {"general": 0.5}, "s2": {"general": 0.0}})
    set_param(dvc_repo, "train.stages", {"s1": {"init": "models/base", "epochs": 1, "learning_rate": 1e-3},
                                         "s2": {"init": "models/finetune/s1", "epochs": 1, "learning_rate": 1e-3}})
    set_param(dvc_repo, "longform.corpora", ["medical"])  # the long-form evaluation on the domain's test speakers
    commit(dvc_repo, "pipeline")  # a repository with history, as a clone of asrtune is
    data = {f"{s}@{c}" for s in ("ingest", "pseudo", "jsonl", "split") for c in ("general", "medical")}
    models = {"finetune@s1", "finetune@s2", "sweep", "merge", "export"}  # sweep: a note (merge.scale is a number)
    matrix = {f"{s}@{m}-{c}" for s in ("decode", "normalize") for m in ("base", "merged") for c in ("general", "medical")}
    convert = {"convert@base", "convert@merged"}
    assert ran(sh(dvc_repo, DVC, "repro")) == {"base", "mix@s1", "mix@s2", "score", "longform"} | data | models | convert | matrix

    metrics = json.loads((dvc_repo / "metrics/cer.json").read_text())
    assert set(metrics["cer"]) == {"general", "medical"} and set(metrics["cer"]["medical"]) == {"base", "merged"}
    assert "medical" in metrics["term_recall"] and "domain_gain" in metrics and "general_change" in metrics
    report = (dvc_repo / "data/score/merged/medical.txt").read_text(encoding="utf-8")
    assert report.splitlines()[1].startswith("%WER ") and "REF: " in report
    assert (dvc_repo / "plots/cer.csv").read_text().startswith("test_set,corpus,model,cer")
    longform = json.loads((dvc_repo / "metrics/longform.json").read_text())
    assert set(longform["cer"]) == {"medical"} and set(longform["clip_cer"]["medical"]) == {"base", "merged"}
    assert json.loads((dvc_repo / "models/finetune/s2/asrtune.json").read_text())["init"] == "../s1"

    # models/merged loads with plain transformers: no asrtune, no peft
    check = ("import sys; sys.modules['peft'] = None; sys.modules['asrtune'] = None\n"
             "from transformers import WhisperForConditionalGeneration, WhisperProcessor\n"
             "WhisperForConditionalGeneration.from_pretrained('models/merged'); WhisperProcessor.from_pretrained('models/merged')\n")
    subprocess.run([sys.executable, "-c", check], cwd=dvc_repo, check=True, capture_output=True)

    assert would_run(dvc_repo) == set()  # nothing changed, nothing runs
    bytecode = dvc_repo / "src/asrtune/families/__pycache__/__init__.cpython-311.pyc"  # what importing the code leaves
    bytecode.parent.mkdir(exist_ok=True)
    bytecode.write_bytes(b"\0")
    assert would_run(dvc_repo) == set()  # .dvcignore: a bytecode cache is not a change of the code
    set_param(dvc_repo, "mix.stages.s1.general", 0.3)
    assert re.findall(r"^(\S+):", sh(dvc_repo, DVC, "status"), re.M) == ["mix@s1"]
    assert would_run(dvc_repo) == {"mix@s1"}  # what it invalidates; downstream follows if its output changes
    set_param(dvc_repo, "mix.stages.s1.general", 0.5)
    set_param(dvc_repo, "split.ratios", [0.6, 0.2, 0.2])
    assert would_run(dvc_repo) == {"split@general", "split@medical"}  # not ingest, jsonl or base
    set_param(dvc_repo, "split.ratios", [0.8, 0.1, 0.1])
    set_param(dvc_repo, "train.stages.s2.epochs", 2)
    assert would_run(dvc_repo) == {"finetune@s2", "sweep", "merge"}  # stage 1 stays cached (sweep and merge read train.stages)
    set_param(dvc_repo, "train.stages.s2.epochs", 1)
    assert would_run(dvc_repo) == set()
    set_param(dvc_repo, "train.stages.s2.freeze_encoder", False)  # a stage's own freeze flag
    assert would_run(dvc_repo) == {"finetune@s2", "sweep", "merge"}
    set_param(dvc_repo, "train.stages.s2", {"init": "models/finetune/s1", "epochs": 1, "learning_rate": 1e-3})
    assert would_run(dvc_repo) == set()

    # merge writes the chain root's generation config and processor: an edit of the source checkpoint reaches models/merged
    source = dvc_repo / "models/sources/tiny-whisper/generation_config.json"
    edited = json.loads(source.read_text()) | {"max_length": 300}
    source.write_text(json.dumps(edited, indent=2))
    assert {"base", "merge"} <= ran(sh(dvc_repo, DVC, "repro"))
    assert json.loads((dvc_repo / "models/merged/generation_config.json").read_text())["max_length"] == 300

    hashes = out_hashes(dvc_repo)
    assert ran(sh(dvc_repo, DVC, "repro", "-f", "mix")) == {"base", "mix@s1", "mix@s2"} | data
    assert out_hashes(dvc_repo) == hashes  # same params and data, same bytes
    assert would_run(dvc_repo) == set()  # so nothing downstream needs to run

    set_param(dvc_repo, "train.freeze_encoder", False)
    assert would_run(dvc_repo) == {"finetune@s1", "finetune@s2"}  # and what follows once their outputs change
    set_param(dvc_repo, "train.freeze_encoder", True)
    set_param(dvc_repo, "decode.engine", "ctranslate2")
    assert would_run(dvc_repo) == convert | {s for s in matrix if s.startswith("decode")} | {"longform"}  # nothing upstream
    set_param(dvc_repo, "decode.engine", "transformers")
    set_param(dvc_repo, "decode.compute_type", "int8")  # under the transformers engine: convert's note only
    assert would_run(dvc_repo) == convert
    set_param(dvc_repo, "decode.compute_type", "default")
    source = dvc_repo / "models/sources/tiny-whisper/generation_config.json"  # new weights in place under models/sources
    original = source.read_bytes()
    source.write_bytes(original + b"\n")
    assert would_run(dvc_repo) == {"base"}
    source.write_bytes(original)
    config = dvc_repo / "models/base/config.json"  # the base model changes, its tokenizer does not
    original = config.read_bytes()
    config.write_bytes(original + b"\n")
    stale = would_run(dvc_repo)
    assert "finetune@s1" in stale and not {"jsonl@general", "jsonl@medical"} & stale  # jsonl reads tokenizer.json only
    config.write_bytes(original)

    # an experiment: a Fun-ASR-Nano checkpoint in Fun-ASR's own layout as the base model (the audiollm
    # family, from its config) reruns everything downstream of the base model, never ingest
    from asrtune.weights import funasr_layout

    funasr_layout.to_funasr(tiny_fun_asr_dir, dvc_repo / "models/sources/fun-asr-nano")
    commit(dvc_repo, "baseline")
    switch = ["-S", "model.base=models/sources/fun-asr-nano", "-S", "train.freeze_adaptor=false"]
    experiment = subprocess.run([DVC, "exp", "run", *switch], cwd=dvc_repo, capture_output=True, text=True, env={**ENV, **GIT_ENV})
    assert experiment.returncode == 0, experiment.stderr
    rerun = ran(experiment.stdout + experiment.stderr)
    assert {"base", "jsonl@general", "jsonl@medical"} | models | {s for s in matrix if "merged" in s} <= rerun
    assert not rerun & {"ingest@general", "ingest@medical"}
    assert json.loads((dvc_repo / "models/finetune/s1/asrtune.json").read_text())["family"] == "audiollm"
    assert "cer.medical.merged" in sh(dvc_repo, DVC, "metrics", "diff", "--all")
    check = ("import sys; sys.modules['peft'] = None; sys.modules['asrtune'] = None\n"
             "from transformers import AutoModelForSpeechSeq2Seq, AutoProcessor\n"
             "m = AutoModelForSpeechSeq2Seq.from_pretrained('models/merged'); AutoProcessor.from_pretrained('models/merged')\n"
             "assert type(m).__name__ == 'FunAsrNanoForConditionalGeneration'\n"
             "import torch; sd = torch.load('models/export/funasr/model.pt', weights_only=True)['state_dict']\n"
             "assert any(k.startswith('llm.model.layers.') for k in sd) and 'llm.lm_head.weight' in sd\n")
    subprocess.run([sys.executable, "-c", check], cwd=dvc_repo, check=True, capture_output=True)

    # a Qwen3-ForcedAligner as the base model (the aligner family): it trains on the corpora's reference
    # timestamps (eSpeak's word events), aligns each test set's transcripts, and score writes the MAE
    shutil.copytree(tiny_aligner_dir, dvc_repo / "models/sources/tiny-aligner")
    experiment = subprocess.run([DVC, "exp", "run", "-S", "model.base=models/sources/tiny-aligner"], cwd=dvc_repo,
                                capture_output=True, text=True, env={**ENV, **GIT_ENV})
    assert experiment.returncode == 0, experiment.stderr
    assert json.loads((dvc_repo / "models/finetune/s2/asrtune.json").read_text())["family"] == "aligner"
    alignment = json.loads((dvc_repo / "metrics/alignment.json").read_text())
    for corpus in ("general", "medical"):
        assert set(alignment["mae_ms"][corpus]) == {"base", "merged"} and alignment["units_timed"][corpus] == {"base": 1.0, "merged": 1.0}
        assert alignment["boundaries"][corpus]["base"] == alignment["boundaries"][corpus]["merged"] > 0  # every unit, both models
    assert "forced aligner" in json.loads((dvc_repo / "metrics/cer.json").read_text())["note"]
    assert len((dvc_repo / "plots/alignment.csv").read_text().splitlines()) == 5  # header + 2 test sets x 2 models
    assert "mae_ms.medical.merged" in sh(dvc_repo, DVC, "metrics", "diff", "--all")
