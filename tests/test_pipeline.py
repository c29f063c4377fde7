"""Real DVC in a scratch git repo on tiny data: a param change reruns exactly the stages that
depend on it, and the same params give byte-identical outputs."""

from __future__ import annotations

import re
from pathlib import Path

import yaml
from conftest import BIN, ran, sh


def set_param(repo: Path, dotted: str, value) -> None:
    params = yaml.safe_load((repo / "params.yaml").read_text(encoding="utf-8"))
    node = params
    *parents, leaf = dotted.split(".")
    for key in parents:
        node = node[key]
    node[leaf] = value
    (repo / "params.yaml").write_text(yaml.safe_dump(params, allow_unicode=True), encoding="utf-8")


def out_hashes(repo: Path) -> dict[str, str]:
    lock = yaml.safe_load((repo / "dvc.lock").read_text())
    return {o["path"]: o["md5"] for stage in lock["stages"].values() for o in stage.get("outs", [])}


def test_param_changes_rerun_only_dependent_stages_and_outputs_are_reproducible(dvc_repo):
    dvc = str(BIN / "dvc")
    first = sh(dvc_repo, dvc, "repro", "mix")
    data_stages = {f"{s}@{c}" for s in ("ingest", "jsonl", "split") for c in ("general", "medical")}
    mixes = {"mix@s1", "mix@s2", "mix@s3"}
    assert ran(first) == {"base"} | data_stages | mixes
    hashes = out_hashes(dvc_repo)

    assert ran(sh(dvc_repo, dvc, "repro", "mix")) == set()  # nothing changed, nothing runs

    set_param(dvc_repo, "mix.stages.s2.general", 0.3)
    status = sh(dvc_repo, dvc, "status")
    assert re.findall(r"^(\S+):", status, re.M) == ["mix@s2"]
    assert ran(sh(dvc_repo, dvc, "repro", "mix")) == {"mix@s2"}

    set_param(dvc_repo, "split.ratios", [0.6, 0.2, 0.2])
    assert ran(sh(dvc_repo, dvc, "repro", "mix")) == {"split@general", "split@medical"} | mixes

    set_param(dvc_repo, "split.ratios", [0.8, 0.1, 0.1])
    set_param(dvc_repo, "mix.stages.s2.general", 0.2)
    rerun = sh(dvc_repo, dvc, "repro", "-f", "mix")  # force: everything recomputed from scratch
    assert ran(rerun) == {"base"} | data_stages | mixes
    assert out_hashes(dvc_repo) == hashes  # same params and data, same bytes
