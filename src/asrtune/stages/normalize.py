"""normalize <model> <corpus>: references and hypotheses through the same normalizer.

A reference with no hypothesis line is kept with an empty hypothesis and flagged `missing`
(scored as deletions), never dropped; a hypothesis for a key not in the test set is an error.
"""

from __future__ import annotations

from asrtune import params, paths
from asrtune.errors import UserError
from asrtune.manifest import read_jsonl, write_jsonl
from asrtune.normalization import normalize


def read_hyps(path) -> dict[str, str]:
    if not path.is_file():
        raise UserError(f"{path}: not found (run `dvc repro decode` first)")
    hyps: dict[str, str] = {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        key, _, text = line.partition("\t")
        if key in hyps:
            raise UserError(f"{path}:{number}: duplicate key {key}")
        hyps[key] = text
    return hyps


def run(model: str, corpus: str) -> None:
    """Write data/normalized/<model>/<corpus>.jsonl: key, ref, hyp, missing."""
    opts = params.load().normalize
    refs = {r["key"]: r["messages"][2]["content"]
            for r in read_jsonl(paths.split_dir(corpus) / "test.jsonl", stage_hint=f"split@{corpus}")}
    hyp_file = paths.decode_file(model, corpus)
    hyps = read_hyps(hyp_file)
    extra = sorted(set(hyps) - set(refs))
    if extra:
        raise UserError(f"{hyp_file}: {len(extra)} keys are not in the {corpus} test set, e.g. {extra[0]}")
    missing = sorted(set(refs) - set(hyps))
    rows = ({"key": k, "ref": normalize(refs[k], opts), "hyp": normalize(hyps.get(k, ""), opts), "missing": k not in hyps}
            for k in sorted(refs))
    n = write_jsonl(paths.normalized_file(model, corpus), rows)
    note = f", {len(missing)} missing from {hyp_file} (scored as deletions)" if missing else ""
    print(f"normalize {model} {corpus}: {n} utterances{note}")
