"""The whole mission on a tiny random Whisper in a scratch git + DVC repo: `dvc repro`, then
`dvc exp run -S train.freeze_encoder=false` reruns finetune and what follows it only, and
`dvc metrics diff` reports the CER change."""

from __future__ import annotations

import json
import subprocess
import sys

from conftest import BIN, ENV, ran, sh

GIT_ENV = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"}


def test_repro_then_experiment_reruns_only_what_depends_on_the_flag(dvc_repo):
    dvc = str(BIN / "dvc")
    first = sh(dvc_repo, dvc, "repro")
    matrix = {f"{s}@{m}-{c}" for s in ("decode", "normalize") for m in ("base", "merged") for c in ("general", "medical")}
    assert {"finetune@s1", "finetune@s2", "finetune@s3", "merge", "score"} | matrix <= ran(first)
    metrics = json.loads((dvc_repo / "metrics/cer.json").read_text())
    assert set(metrics["cer"]) == {"general", "medical"} and set(metrics["cer"]["medical"]) == {"base", "merged"}
    assert "medical" in metrics["term_recall"] and "domain_gain" in metrics and "general_change" in metrics
    report = (dvc_repo / "data/score/merged/medical.txt").read_text(encoding="utf-8")
    assert report.splitlines()[1].startswith("%WER ") and "REF: " in report
    assert (dvc_repo / "plots/cer.csv").read_text().startswith("test_set,corpus,model,cer")

    # models/merged loads with plain transformers: no asrtune, no peft
    check = ("import sys; sys.modules['peft'] = None; sys.modules['asrtune'] = None\n"
             "from transformers import WhisperForConditionalGeneration, WhisperProcessor\n"
             "WhisperForConditionalGeneration.from_pretrained('models/merged'); WhisperProcessor.from_pretrained('models/merged')\n")
    subprocess.run([sys.executable, "-c", check], cwd=dvc_repo, check=True, capture_output=True)

    sh(dvc_repo, "git", "add", "-A")
    subprocess.run(["git", "commit", "-qm", "baseline"], cwd=dvc_repo, check=True, env={**ENV, **GIT_ENV})
    experiment = subprocess.run([dvc, "exp", "run", "-S", "train.freeze_encoder=false"], cwd=dvc_repo,
                                capture_output=True, text=True, env={**ENV, **GIT_ENV})
    assert experiment.returncode == 0, experiment.stderr
    expected = {"finetune@s1", "finetune@s2", "finetune@s3", "merge", "decode@merged-general", "decode@merged-medical",
                "normalize@merged-general", "normalize@merged-medical", "score"}
    assert ran(experiment.stdout + experiment.stderr) == expected
    diff = sh(dvc_repo, dvc, "metrics", "diff", "--all")
    assert "cer.medical.merged" in diff and "cer.medical.base" in diff
