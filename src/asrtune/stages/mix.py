"""mix <stage>: one curriculum stage's training data: all domain train (and val) utterances plus
seeded samples of general ones and of non-speech clips (empty transcripts: the model learns to write nothing
for them) making up the shares mix.stages.<stage>.general and .nonspeech of the mix.
Test sets are not mixed: they stay per corpus for scoring. Each record gets its corpus's `role`.
"""

from __future__ import annotations

import heapq
import json
import shutil
import sys
from pathlib import Path

from asrtune import params, paths
from asrtune.corpus import mixing
from asrtune.errors import UserError


def _count_lines(path: Path) -> int:
    with open(path, "rb") as f:
        return sum(1 for _ in f)


def _lines(path: Path, role: str, keep: set[int] | None = None):
    """Lines of a sorted split file (all, or those at the indices in `keep`), with their key, each record
    given its corpus's `role` (general/domain/nonspeech: train.distill tells the general utterances by it)."""
    with open(path, encoding="utf-8") as f:
        for i, line in enumerate(f):
            if keep is None or i in keep:
                record = json.loads(line)
                yield record["key"], json.dumps({**record, "role": role}, ensure_ascii=False, separators=(",", ":")) + "\n"


def _sample(files: list[Path], role: str, wanted: int, seed: str) -> tuple[int, bool, list]:
    """A seeded sample of `wanted` lines across the concatenated files: (count, ran_short, one stream per file)."""
    sizes = [_count_lines(p) for p in files]
    chosen, short = mixing.choose(sum(sizes), wanted, seed)
    streams, offset = [], 0
    for path, n in zip(files, sizes):
        streams.append(_lines(path, role, {i - offset for i in chosen if offset <= i < offset + n}))
        offset += n
    return len(chosen), short, streams


def mix_split(domain: list[Path], general: list[Path], share: float, seed: str, nonspeech: list[Path] = (),
              nonspeech_share: float = 0.0) -> tuple[dict, list]:
    """The counts, and one sorted (key, line) stream per input file holding what goes in the mix."""
    n_domain = sum(_count_lines(p) for p in domain)
    m = {"domain": n_domain}
    streams = []
    for role, files, own, other, role_seed in (("general", general, share, nonspeech_share, seed),
                                               ("nonspeech", nonspeech, nonspeech_share, share, seed + "/nonspeech")):
        wanted = mixing.pool_count(n_domain, own, other)
        n, short, role_streams = _sample(list(files), role, wanted, role_seed)
        m |= {role: n, f"{role}_wanted": wanted, f"{role}_ran_short": short}
        streams += role_streams
    streams += [_lines(p, "domain") for p in domain]
    return m, streams


def run(stage: str) -> None:
    """Write data/mix/<stage>/{train,val}.jsonl."""
    p = params.load()
    if stage not in p.mix.stages:
        raise UserError(f"mix.stages has no stage '{stage}' (have: {', '.join(p.mix.stages)})")
    shares = {"general": p.mix.stages[stage].general, "nonspeech": p.mix.stages[stage].nonspeech}
    roles = {role: [c for c, spec in p.data.corpora.items() if spec.role == role] for role in ("domain", "general", "nonspeech")}
    if not roles["domain"]:
        raise UserError("data.corpora: no corpus has role: domain; mixing needs at least one")
    for role, share in shares.items():
        if share > 0 and not roles[role]:
            raise UserError(f"mix.stages.{stage}.{role} is {share} but no corpus has role: {role}")
    out = paths.mix_dir(stage)
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    summary = {"general_share": shares["general"], "nonspeech_share": shares["nonspeech"]}
    for split in ("train", "val"):
        files = {role: [paths.split_dir(c) / f"{split}.jsonl" for c in corpora] for role, corpora in roles.items()}
        for path in (f for role_files in files.values() for f in role_files):
            if not path.is_file():
                raise UserError(f"{path}: not found (run `dvc repro split@{path.parent.name}` first)")
        m, streams = mix_split(files["domain"], files["general"], shares["general"], f"{p.mix.seed}/{stage}/{split}",
                               files["nonspeech"], shares["nonspeech"])
        with open(out / f"{split}.jsonl", "w", encoding="utf-8", newline="\n") as f:
            for _key, line in heapq.merge(*streams):  # every input is sorted by key: so is the output
                f.write(line)
        total = m["domain"] + m["general"] + m["nonspeech"]
        for role in ("general", "nonspeech"):
            m[f"{role}_actual_share"] = round(m[role] / total, 4) if total else 0.0
        summary[split] = m
        print(f"mix {stage} {split}: {m['domain']} domain + {m['general']} general + {m['nonspeech']} non-speech = {total} "
              f"(general share {m['general_actual_share']:.3f}, asked {shares['general']}; non-speech share "
              f"{m['nonspeech_actual_share']:.3f}, asked {shares['nonspeech']})")
        for role in ("general", "nonspeech"):
            if m[f"{role}_ran_short"]:
                print(f"  warning: mix {stage} {split}: wanted {m[f'{role}_wanted']} {role} utterances, "
                      f"only {m[role]} exist; using all of them", file=sys.stderr)
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
