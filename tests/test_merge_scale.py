"""merge.scale auto: the sweep stage decodes the domain and general val splits at 0 (models/base) and each scale of
merge.sweep, picks the largest scale whose general CER change stays within merge.max_general_change, and merge
takes that scale and records it; under a numeric merge.scale the sweep is a one-line note and merge ignores it."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest
import torch
from conftest import in_process, params_for

from asrtune import params
from asrtune.errors import UserError
from asrtune.stages import merge, sweep
from asrtune.weights import chain

ONE_STAGE = {"train.stages": {"s1": {"init": "models/base", "epochs": 1, "learning_rate": 1e-2}},
             "mix.stages": {"s1": {"general": 0.5}}}


# the chooser, on hand-made numbers: scale -> general change (scale - base)

def test_auto_takes_the_largest_scale_within_the_bound():
    scale, why, warn = sweep.choose({0.25: 0.0, 0.5: 0.003, 0.75: 0.005, 1.0: 0.012}, 0.005)
    assert scale == 0.75 and not warn and "+0.0050" in why  # the bound itself is within
    assert sweep.choose({0.25: 0.004, 0.5: 0.009, 0.75: 0.002, 1.0: 0.02}, 0.005)[0] == 0.75  # the largest, not the first run
    assert sweep.choose({0.5: -0.01, 1.0: -0.002}, 0.0)[0] == 1.0  # general improved at every scale


def test_none_within_the_bound_takes_the_smallest_with_a_warning():
    scale, why, warn = sweep.choose({0.25: 0.011, 0.5: 0.02, 1.0: 0.04}, 0.005)
    assert scale == 0.25 and warn and "no scale keeps" in why


def test_no_general_corpus_takes_one_with_a_note():
    scale, why, warn = sweep.choose(None, 0.005)
    assert scale == 1.0 and not warn and "no corpus of role general" in why


def test_params_take_auto_and_check_the_sweep(tmp_path, tiny_whisper_dir):
    params_for(tmp_path, tiny_whisper_dir, **{"merge.scale": "auto", "merge.sweep": [1.0, 0.5]})
    p = params.load(tmp_path / "params.yaml")
    assert p.merge.scale == "auto" and p.merge.sweep == [0.5, 1.0] and p.merge.max_general_change == 0.005
    for bad, match in [({"merge.scale": "best"}, "merge.scale"), ({"merge.scale": 0}, "merge.scale"),
                       ({"merge.sweep": [0.5, 1.5]}, "merge.sweep.1"), ({"merge.sweep": [0.0]}, "merge.sweep.0"),
                       ({"merge.sweep": []}, "at least one scale"), ({"merge.sweep": [0.5, 0.5]}, "listed twice"),
                       ({"merge.max_general_change": -0.01}, "merge.max_general_change")]:
        params_for(tmp_path, tiny_whisper_dir, **bad)
        with pytest.raises(UserError, match=match):
            params.load(tmp_path / "params.yaml")


# the stages, on the tiny Whisper fine-tuned for one stage

@pytest.fixture(scope="module")
def tuned(data_repo, tiny_whisper_dir, tmp_path_factory) -> Path:
    from asrtune.stages import finetune

    repo = tmp_path_factory.mktemp("merge-scale") / "repo"
    shutil.copytree(data_repo, repo, ignore=shutil.ignore_patterns(".cache", "finetune", "plots"))
    params_for(repo, tiny_whisper_dir, **ONE_STAGE)
    in_process(repo, finetune, "s1")
    return repo


def plot_rows(repo: Path) -> list[dict]:
    with open(repo / sweep.PLOT, encoding="utf-8") as f:
        return list(csv.DictReader(f))


def val_counts(repo: Path, model_dir: str, corpus: str):
    """decode's own path (the model loaded from its directory) on a corpus's val split, scored as score does."""
    import os

    import soundfile as sf

    from asrtune.corpus.chatml import examples
    from asrtune.corpus.manifest import read_jsonl
    from asrtune.evaluation.normalization import normalize
    from asrtune.evaluation.scoring import Counts, align
    from asrtune.stages.decode import decode_all, transcriber

    cwd = os.getcwd()
    os.chdir(repo)
    try:
        p = params.load()
        items = examples(read_jsonl(Path(f"data/split/{corpus}/val.jsonl")))
        transcribe, _ = transcriber(p, Path(model_dir), Path("models/ct2/none"))
        audio = {e.key: sf.read(e.audio, dtype="float32")[0] for e in items}
        hyps = decode_all(transcribe, items, audio, p.decode.batch_size, "test")
        total = Counts()
        for e in items:
            total.add(align(e.key, normalize(e.text, p.normalize), normalize(hyps[e.key].partition("\t")[0], p.normalize)).counts)
        return total
    finally:
        os.chdir(cwd)


def test_sweep_writes_a_row_per_scale_and_merge_takes_its_choice(tuned, tiny_whisper_dir):
    """Scale 0 is models/base's val CER as decode computes it; the choice is choose()'s on the written numbers; merge
    auto takes it (weights base + scale x (tuned - base), recorded with chosen_by auto), and models/merged decodes
    the val split to the sweep's CER at that scale: the in-memory model is merge's."""
    params_for(tuned, tiny_whisper_dir, **ONE_STAGE, **{"merge.scale": "auto", "merge.sweep": [0.5, 1.0], "merge.max_general_change": 0.0})
    printed = in_process(tuned, sweep)
    rows = plot_rows(tuned)
    assert [float(r["scale"]) for r in rows] == [0.0, 0.5, 1.0]
    summary = json.loads((tuned / merge.SCALE_FILE).read_text())
    assert summary["chosen_by"] == "auto" and set(summary["general_change"]) == {"0", "0.5", "1"}
    assert summary["utterances"]["general"] > 0 and summary["utterances"]["medical"] > 0
    for role, corpus in (("domain", "medical"), ("general", "general")):
        base = val_counts(tuned, "models/base", corpus)
        assert float(rows[0][f"{role}_cer"]) == summary[f"{role}_cer"]["0"] == summary["cer"][corpus]["0"] == round(base.errors / base.n, 4)
    assert float(rows[0]["domain_gain"]) == float(rows[0]["general_change"]) == 0.0
    for r in rows[1:]:
        assert float(r["general_change"]) == round(float(r["general_cer"]) - float(rows[0]["general_cer"]), 4)
        assert float(r["domain_gain"]) == round(float(rows[0]["domain_cer"]) - float(r["domain_cer"]), 4)
    chosen, why, _ = sweep.choose({0.5: summary["general_change"]["0.5"], 1.0: summary["general_change"]["1"]}, 0.0)
    assert summary["scale"] == chosen and summary["why"] == why and f"merge.scale auto -> {chosen:g}" in printed
    assert [r["chosen"] for r in rows] == [str(float(r["scale"]) == chosen) for r in rows]
    assert "general change" in printed and "domain gain" in printed  # the table

    printed = in_process(tuned, merge)
    assert json.loads((tuned / "models/merged" / merge.RECORD).read_text()) == {"scale": chosen, "chosen_by": "auto"}
    assert f"scale {chosen:g}, chosen by the sweep" in printed
    base = chain.load(tuned / "models/base").state_dict()
    ft = chain.load(tuned / "models/finetune/s1").state_dict()
    merged = chain.load(tuned / "models/merged").state_dict()
    assert all(torch.allclose(merged[k], base[k] + chosen * (ft[k] - base[k]), atol=1e-6) for k in merged if merged[k].is_floating_point())
    for scale in dict.fromkeys([chosen, 0.5]):  # the sweep's in-memory model at a scale is what merge writes for it
        if scale != chosen:
            params_for(tuned, tiny_whisper_dir, **ONE_STAGE, **{"merge.scale": scale})
            in_process(tuned, merge)
        got = val_counts(tuned, "models/merged", "general")
        assert summary["cer"]["general"][f"{scale:g}"] == round(got.errors / got.n, 4)


def test_the_sweep_decodes_in_the_precision_decode_uses(tuned, tiny_whisper_dir):
    """model.precision bf16 (it runs on a CPU too): the in-memory model runs its float32 weights under bf16 autocast
    as decode's loaded one does, so scale 0 still scores models/base's val CER as decode computes it."""
    params_for(tuned, tiny_whisper_dir, **ONE_STAGE, **{"merge.scale": "auto", "merge.sweep": [1.0], "model.precision": "bf16"})
    printed = in_process(tuned, sweep)
    assert "float32 weights under bfloat16 autocast" in printed
    base = val_counts(tuned, "models/base", "general")
    assert json.loads((tuned / merge.SCALE_FILE).read_text())["cer"]["general"]["0"] == round(base.errors / base.n, 4)


def test_merge_auto_takes_the_scale_the_sweep_wrote(tuned, tiny_whisper_dir):
    """A constructed sweep output choosing 0.5: merge auto interpolates at 0.5; a note (a numeric scale's) or no file: an error."""
    params_for(tuned, tiny_whisper_dir, **ONE_STAGE, **{"merge.scale": "auto"})
    out = tuned / merge.SCALE_FILE
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"scale": 0.5, "chosen_by": "auto"}))
    in_process(tuned, merge)
    assert json.loads((tuned / "models/merged" / merge.RECORD).read_text()) == {"scale": 0.5, "chosen_by": "auto"}
    base = chain.load(tuned / "models/base").state_dict()
    ft = chain.load(tuned / "models/finetune/s1").state_dict()
    merged = chain.load(tuned / "models/merged").state_dict()
    q = "model.decoder.layers.0.self_attn.q_proj.weight"
    assert not torch.allclose(base[q], ft[q], atol=1e-6) and torch.allclose(merged[q], (base[q] + ft[q]) / 2, atol=1e-6)
    out.write_text(json.dumps({"scale": 1.0, "chosen_by": "params", "note": "..."}))
    with pytest.raises(UserError, match=r"holds no sweep .*dvc repro sweep"):
        in_process(tuned, merge)
    out.unlink()
    with pytest.raises(UserError, match=r"not found .*dvc repro sweep"):
        in_process(tuned, merge)


def test_a_numeric_scale_makes_the_sweep_a_note_and_merge_ignores_it(tuned, tiny_whisper_dir, tmp_path):
    """merge.scale 0.5: the sweep loads nothing (it runs where there is no model at all), writes a header-only plot
    and a one-line note; merge uses 0.5 whatever the sweep's file says, and records chosen_by params."""
    params_for(tmp_path, tiny_whisper_dir, **ONE_STAGE, **{"merge.scale": 0.5})
    printed = in_process(tmp_path, sweep)
    assert "nothing to sweep" in printed
    assert (tmp_path / sweep.PLOT).read_text() == ",".join(sweep.COLUMNS) + "\n"
    note = json.loads((tmp_path / merge.SCALE_FILE).read_text())
    assert note["scale"] == 0.5 and note["chosen_by"] == "params" and "nothing swept" in note["note"]

    params_for(tuned, tiny_whisper_dir, **ONE_STAGE, **{"merge.scale": 0.5})
    (tuned / merge.SCALE_FILE).write_text(json.dumps({"scale": 1.0, "chosen_by": "auto"}))  # ignored
    printed = in_process(tuned, merge)
    assert "base + 0.5 x (tuned - base)" in printed and "scale 0.5, merge.scale" in printed
    assert json.loads((tuned / "models/merged" / merge.RECORD).read_text()) == {"scale": 0.5, "chosen_by": "params"}
