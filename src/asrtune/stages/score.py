"""score: CER per model x test set, base vs merged side by side, plus what it means.

metrics/cer.json reads at a glance in `dvc metrics diff`: `cer.<corpus>.<model>`,
`change.<corpus>` (merged - base; negative is better), `domain_gain` (base - merged on the domain
test sets; positive is better), `general_change` (merged - base on general speech; positive is
forgetting) and `term_recall.<corpus>.<model>`. Kaldi-style reports go to data/score/.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

from asrtune import params, paths
from asrtune.manifest import read_jsonl
from asrtune.normalization import normalize
from asrtune.scoring import Counts, align, report, term_recall

METRICS = Path("metrics/cer.json")
PLOT = Path("plots/cer.csv")
REPORTS = Path("data/score")


def _mean(values: list[float]) -> float | None:
    return round(sum(values) / len(values), 4) if values else None


def run() -> None:
    """Write metrics/cer.json, plots/cer.csv and data/score/<model>/<corpus>.txt."""
    p = params.load()
    metrics = {"cer": {}, "ser": {}, "n": {}, "change": {}, "term_recall": {}}
    plot_rows = []
    for corpus, spec in p.data.corpora.items():
        terms_file = paths.ingest_dir(corpus) / "terms.txt"
        lines = terms_file.read_text(encoding="utf-8").splitlines() if terms_file.is_file() else []
        terms = [normalize(t, p.normalize) for t in lines if t.strip()]
        for model in paths.DECODED_MODELS:
            rows = list(read_jsonl(paths.normalized_file(model, corpus), stage_hint=f"normalize@{model}-{corpus}"))
            utts = [align(r["key"], r["ref"], r["hyp"], r["missing"]) for r in rows]
            total = Counts()
            for u in utts:
                total.add(u.counts)
            out = REPORTS / model / f"{corpus}.txt"
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(report(utts, total, f"{model} on {corpus} test ({spec.role})") + "\n", encoding="utf-8")
            metrics["cer"].setdefault(corpus, {})[model] = round(total.rate, 4)
            metrics["ser"].setdefault(corpus, {})[model] = round(total.sentence_errors / max(total.sentences, 1), 4)
            metrics["n"][corpus] = total.n
            if terms:
                found, occurrences = term_recall([(r["ref"], r["hyp"]) for r in rows], terms)
                metrics["term_recall"].setdefault(corpus, {})[model] = round(found / occurrences, 4) if occurrences else None
            plot_rows.append({"test_set": f"{corpus} / {model}", "corpus": corpus, "model": model, "cer": round(total.rate, 4)})
        metrics["change"][corpus] = round(metrics["cer"][corpus]["merged"] - metrics["cer"][corpus]["base"], 4)
    roles = {c: s.role for c, s in p.data.corpora.items()}
    metrics["domain_gain"] = _mean([-metrics["change"][c] for c, r in roles.items() if r == "domain"])
    metrics["general_change"] = _mean([metrics["change"][c] for c, r in roles.items() if r == "general"])
    if not metrics["term_recall"]:
        del metrics["term_recall"]

    METRICS.parent.mkdir(parents=True, exist_ok=True)
    METRICS.write_text(json.dumps(metrics, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    PLOT.parent.mkdir(parents=True, exist_ok=True)
    with open(PLOT, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=["test_set", "corpus", "model", "cer"], lineterminator="\n")
        writer.writeheader()
        writer.writerows(plot_rows)

    print(f"{'test set':<16}{'role':<9}{'N':>6}{'CER base':>10}{'CER merged':>12}{'change':>9}")
    for corpus in p.data.corpora:
        c = metrics["cer"][corpus]
        print(f"{corpus:<16}{roles[corpus]:<9}{metrics['n'][corpus]:>6}{c['base']:>10.4f}{c['merged']:>12.4f}{metrics['change'][corpus]:>+9.4f}")
    for corpus, tr in metrics.get("term_recall", {}).items():
        print(f"term recall {corpus}: base {tr['base']}, merged {tr['merged']}")
    print(f"domain gain {metrics['domain_gain']}, general change (forgetting if > 0) {metrics['general_change']}; reports in {REPORTS}/")
