"""mix <stage>: one curriculum stage's training data: all domain train (and val) utterances plus
a seeded sample of general ones making up the share mix.stages.<stage>.general of the mix.
Test sets are not mixed: they stay per corpus for scoring. Each record gets its corpus's `role`.
"""

from __future__ import annotations

import heapq
import json
import shutil
import sys
from pathlib import Path

from asrtune import mixing, params, paths
from asrtune.errors import UserError


def _count_lines(path: Path) -> int:
    with open(path, "rb") as f:
        return sum(1 for _ in f)


def _lines(path: Path, role: str, keep: set[int] | None = None):
    """Lines of a sorted split file (all, or those at the indices in `keep`), with their key, each record
    given its corpus's `role` (general/domain: train.distill tells the general utterances by it)."""
    with open(path, encoding="utf-8") as f:
        for i, line in enumerate(f):
            if keep is None or i in keep:
                record = json.loads(line)
                yield record["key"], json.dumps({**record, "role": role}, ensure_ascii=False, separators=(",", ":")) + "\n"


def mix_split(domain: list[Path], general: list[Path], share: float, seed: str) -> tuple[dict, list]:
    """The counts, and one sorted (key, line) stream per input file holding what goes in the mix."""
    n_domain = sum(_count_lines(p) for p in domain)
    n_general_pool = [_count_lines(p) for p in general]
    wanted = mixing.general_count(n_domain, share)
    # choose across the concatenated general pool, then stream each file with its chosen indices
    chosen, short = mixing.choose(sum(n_general_pool), wanted, seed)
    streams, offset = [], 0
    for path, n in zip(general, n_general_pool):
        streams.append(_lines(path, "general", {i - offset for i in chosen if offset <= i < offset + n}))
        offset += n
    streams += [_lines(p, "domain") for p in domain]
    return {"domain": n_domain, "general": len(chosen), "general_wanted": wanted, "ran_short": short}, streams


def run(stage: str) -> None:
    """Write data/mix/<stage>/{train,val}.jsonl."""
    p = params.load()
    if stage not in p.mix.stages:
        raise UserError(f"mix.stages has no stage '{stage}' (have: {', '.join(p.mix.stages)})")
    share = p.mix.stages[stage].general
    roles = {role: [c for c, spec in p.data.corpora.items() if spec.role == role] for role in ("domain", "general")}
    if not roles["domain"]:
        raise UserError("data.corpora: no corpus has role: domain; mixing needs at least one")
    if share > 0 and not roles["general"]:
        raise UserError(f"mix.stages.{stage}.general is {share} but no corpus has role: general")
    out = paths.mix_dir(stage)
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    summary = {"general_share": share}
    for split in ("train", "val"):
        files = {role: [paths.split_dir(c) / f"{split}.jsonl" for c in corpora] for role, corpora in roles.items()}
        for path in files["domain"] + files["general"]:
            if not path.is_file():
                raise UserError(f"{path}: not found (run `dvc repro split@{path.parent.name}` first)")
        m, streams = mix_split(files["domain"], files["general"], share, f"{p.mix.seed}/{stage}/{split}")
        with open(out / f"{split}.jsonl", "w", encoding="utf-8", newline="\n") as f:
            for _key, line in heapq.merge(*streams):  # every input is sorted by key: so is the output
                f.write(line)
        total = m["domain"] + m["general"]
        m["actual_share"] = round(m["general"] / total, 4) if total else 0.0
        summary[split] = m
        print(f"mix {stage} {split}: {m['domain']} domain + {m['general']} general = {total} "
              f"(general share {m['actual_share']:.3f}, asked {share})")
        if m["ran_short"]:
            print(f"  warning: mix {stage} {split}: wanted {m['general_wanted']} general utterances, "
                  f"only {m['general']} exist; using all of them", file=sys.stderr)
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
