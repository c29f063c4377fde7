"""Real DVC in a scratch git repo on tiny data: a param change reruns exactly the stages that
depend on it, and the same params give byte-identical outputs."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import REPO
from test_stages import params_for

BIN = Path(sys.executable).parent
ENV = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", "DVC_NO_ANALYTICS": "1"}


def sh(cwd: Path, *cmd: str) -> str:
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env=ENV)
    assert proc.returncode == 0, f"{' '.join(cmd)}\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout + proc.stderr


def ran(output: str) -> set[str]:
    return set(re.findall(r"Running stage '([^']+)'", output))


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


@pytest.fixture
def dvc_repo(tmp_path, tiny_whisper_dir) -> Path:
    repo = tmp_path / "repo"
    repo.mkdir()
    shutil.copy(REPO / "dvc.yaml", repo)
    shutil.copytree(REPO / "src", repo / "src", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(REPO / "demo", repo / "demo")
    params = params_for(repo, tiny_whisper_dir)
    for corpus in params["data"]["corpora"].values():  # dvc.yaml tracks sources as deps: keep them in the repo
        corpus["source"] = os.path.relpath(corpus["source"], REPO)
    (repo / "params.yaml").write_text(yaml.safe_dump(params, allow_unicode=True), encoding="utf-8")
    sh(repo, "git", "init", "-q")
    sh(repo, str(BIN / "dvc"), "init", "-q")
    sh(repo, str(BIN / "dvc"), "config", "core.analytics", "false")
    return repo


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
