"""score: CER per model x test set, base vs merged side by side, plus what it means and how sure it is.

metrics/cer.json reads at a glance in `dvc metrics diff`: `cer.<corpus>.<model>` with its 95%
bootstrap interval `cer_ci95.<corpus>.<model>.lo/.hi`, `change.<corpus>` (merged - base; negative is
better) with its paired interval `change_ci95.<corpus>.lo/.hi` and `change_significant.<corpus>`
(the interval excludes zero), `cer_by_language.<corpus>.<model>.zh/.en` where a test set mixes
Chinese and English, `domain_gain` (base - merged on the domain test sets, roles domain and domain_test; positive is better),
`general_change` (merged - base on general speech; positive is forgetting) and
`term_recall.<corpus>.<model>`, `b_cer` (the error rate over the reference's term tokens), `u_cer` (over the rest),
`term_false_alarms` (the hypothesis' term occurrences the reference lacks, per utterance), each of these with its
`_ci95` too (the same resamples of the same test set: the languages' and the terms' intervals are paired with the
CER's; a resample with nothing to count, no term say, is left out, and an interval with no resample left is null). Interval bounds are scalars, not [lo, hi] lists: `dvc metrics diff`
prints a list as text, a scalar with its numeric change. Kaldi-style reports go to data/score/.

Does the fine-tuning harm? `forgetting` takes the held-out sets (role general or test, with references): each one's
paired change and a pooled one (each resample's change averaged over them, as general_change), `flag` true when the
interval lies wholly above zero (merged significantly worse), printed as a FORGETTING line. A test set whose references
are all empty (non-speech) has no CER: `hallucination_rate.<corpus>.<model>` is the share of its clips with any
output after normalization, with `hallucination_change.<corpus>` (merged - base, paired). `degeneration.<corpus>.<model>`
on every test set: `looping` (share of outputs with a loop, scoring.loops), `capped` (share that decode stopped at
its max-new-tokens guard; null where decode recorded none), `insertion_rate` (insertions / reference tokens) and
`length_ratio` (hypothesis / reference tokens), pooled as the CER, each with its `_ci95` on the CER's resamples.

With decode.hotwords every measure has `<model>+hotwords` columns too (decode's second pass, with the list), and
`hotwords_effect.<corpus>.<model>` the with-list - without-list changes, paired. A test set without a term list of its
own is scored against decode.hotwords' (`term_list.<corpus>` names the list): its false alarms show what the list
does where it does not apply.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np

from asrtune import params, paths
from asrtune.corpus.manifest import read_jsonl
from asrtune.errors import UserError
from asrtune.evaluation import scoring
from asrtune.evaluation.normalization import normalize, tokens
from asrtune.evaluation.scoring import (Counts, Utterance, align, biased, bootstrap_rates, by_language, false_alarms, interval95, loops,
                             nonspeech_report, report, resample_seed, significant, term_counts, term_tokens, wer_line,
                             boundary_errors)
from asrtune.evaluation.terms import read_terms

METRICS = Path("metrics/cer.json")
ALIGNMENT = Path("metrics/alignment.json")
WITHIN_MS = (20, 50, 100)
PLOT = Path("plots/cer.csv")
ALIGNMENT_PLOT = Path("plots/alignment.csv")  # MAE per test set and model (header only without timestamps)
HALLUCINATION_PLOT = Path("plots/hallucination.csv")  # per non-speech test set and model (header only without one)
HELD_OUT = ("general", "test")  # roles never trained on for the domain: where forgetting shows
DOMAIN = ("domain", "domain_test")  # the domain's speech: where fine-tuning should gain
REPORTS = Path("data/score")
LANGUAGES = ("zh", "en")  # reported when a test set's references hold both; `other` (numbers, symbols) only in the reports
TERM_KEYS = ("b_cer", "b_cer_ci95", "u_cer", "u_cer_ci95", "n_term_tokens", "term_false_alarms", "term_false_alarms_ci95",
             "term_list", "hotwords_effect")


def _mean(values: list[float]) -> float | None:
    return round(sum(values) / len(values), 4) if values else None


def _terms(corpus: str, spec, p: params.Params) -> tuple[list[str], str | None]:
    """(terms, the file they come from): data.corpora.<c>.terms when set (any corpus), else the list a demo topic's
    ingest wrote, else decode.hotwords' list: a set with no list of its own (general speech) shows what the list
    decode gave the model does where it does not apply (false alarms)."""
    if spec.terms is not None:
        lines, source = read_terms(Path(spec.terms), f"data.corpora.{corpus}.terms"), spec.terms
    else:
        demo = paths.ingest_dir(corpus) / "terms.txt"
        lines = [t for t in demo.read_text(encoding="utf-8").splitlines() if t.strip()] if demo.is_file() else []
        source = demo.as_posix()
        if not lines and p.decode.hotwords is not None:
            lines, source = read_terms(Path(p.decode.hotwords), "decode.hotwords"), p.decode.hotwords
    return [normalize(t, p.normalize) for t in lines if t.strip()], source if lines else None


def _models(p: params.Params) -> list[str]:
    """base, merged, and with decode.hotwords each decoded with the list too (<model>+hotwords)."""
    return [*paths.DECODED_MODELS, *([m + paths.HOTWORDS for m in paths.DECODED_MODELS] if p.decode.hotwords else [])]


def _rows(corpus: str, models: list[str]) -> dict[str, list[dict]]:
    """Each model's normalized rows; all must score the same test utterances, in the same order."""
    rows = {m: list(read_jsonl(paths.normalized_file(m, corpus), stage_hint=f"normalize@{m.removesuffix(paths.HOTWORDS)}-{corpus}"))
            for m in models}
    keys = {m: [r["key"] for r in rs] for m, rs in rows.items()}
    first, *others = models
    for m in others:
        if keys[m] != keys[first]:
            raise UserError(f"{paths.normalized_file(m, corpus)}: not the test utterances of {paths.normalized_file(first, corpus)} "
                            f"(dvc repro normalize@{first}-{corpus} normalize@{m}-{corpus})")
    return rows


def _languages(utts: list[Utterance]) -> dict[str, Counts]:
    out = {lang: Counts() for lang in scoring.LANGUAGES}
    for u in utts:
        for lang, c in by_language(u).items():
            out[lang].add(c)
    return out


def _ci(values: np.ndarray, digits: int = 4) -> dict[str, float] | None:
    """{lo, hi} over the resamples that have something to count; None (null in the metrics) when none has."""
    bounds = interval95(values, digits)
    return None if bounds is None else {"lo": bounds[0], "hi": bounds[1]}


def _bounds(ci: dict[str, float] | None, digits: int = 4) -> str:
    return "[none]" if ci is None else f"[{ci['lo']:.{digits}f}, {ci['hi']:.{digits}f}]"


def run() -> None:
    """Write metrics/cer.json, metrics/alignment.json, plots/cer.csv, plots/alignment.csv, plots/hallucination.csv
    and data/score/<model>/<corpus>.txt."""
    p = params.load()
    metrics = {"cer": {}, "cer_ci95": {}, "ser": {}, "n": {}, "change": {}, "change_ci95": {}, "change_significant": {},
               "cer_by_language": {}, "cer_by_language_ci95": {}, "n_by_language": {}, "term_recall": {}, "term_recall_ci95": {},
               "hallucination_rate": {}, "hallucination_rate_ci95": {}, "hallucination_change": {},
               "hallucination_change_ci95": {}, "n_clips": {}, "degeneration": {}, **{k: {} for k in TERM_KEYS}}
    models = _models(p)
    plot_rows, hallucination_rows = [], []
    changes: dict[str, np.ndarray] = {}  # merged - base on each resample, per test set
    rows_of: dict[str, dict[str, list[dict]]] = {}  # read once: the CERs and the timestamps score the same rows
    for corpus, spec in p.data.corpora.items():
        terms, term_source = _terms(corpus, spec, p)
        rows = rows_of[corpus] = _rows(corpus, models)
        utts = {m: [align(r["key"], r["ref"], r["hyp"], r["missing"]) for r in rs] for m, rs in rows.items()}
        # every model on the same resampled utterances: each CER's interval, and the change's, paired
        errors = np.array([[u.counts.errors for u in utts[m]] for m in models])
        ref_tokens = np.array([u.counts.n for u in utts[models[0]]])
        seed = resample_seed(p.score.seed, corpus)  # one seed per test set: every bootstrap below draws the same resamples
        metrics["degeneration"][corpus] = _degeneration(rows, utts, p.score.bootstrap, seed)
        if terms:
            _term_metrics(metrics, corpus, term_source, rows, utts, terms, p.score.bootstrap, seed)
        if not ref_tokens.any():  # no word to recognize: a CER would only count insertions over nothing
            hallucination_rows += _hallucination(metrics, corpus, spec.role, rows, p.score.bootstrap, seed)
            continue
        rates = dict(zip(models, bootstrap_rates(errors, ref_tokens, p.score.bootstrap, seed)))
        langs = {m: _languages(us) for m, us in utts.items()}
        mixed = all(langs["base"][lang].n for lang in LANGUAGES)  # the references hold both languages
        if mixed:
            per_utt = {m: [by_language(u) for u in us] for m, us in utts.items()}
            lang_rates = {lang: dict(zip(models, bootstrap_rates(
                [[c[lang].errors for c in per_utt[m]] for m in models],
                [c[lang].n for c in per_utt[models[0]]], p.score.bootstrap, seed))) for lang in LANGUAGES}
        for model in models:
            total = Counts()
            for u in utts[model]:
                total.add(u.counts)
            ci = _ci(rates[model])
            extra = [f"%CER 95% interval [ {ci['lo']:.4f}, {ci['hi']:.4f} ] ({p.score.bootstrap} bootstrap resamples of the "
                     f"{total.sentences} utterances, seed {p.score.seed})" if ci else
                     "%CER 95% interval: none (no resample holds a reference token)"]
            if mixed:
                extra += [f"{lang}: {wer_line(c)}" for lang, c in langs[model].items() if lang in LANGUAGES or c.n or c.ins]
            out = REPORTS / model / f"{corpus}.txt"
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(report(utts[model], total, f"{model} on {corpus} test ({spec.role})", extra) + "\n", encoding="utf-8")
            metrics["cer"].setdefault(corpus, {})[model] = round(total.rate, 4)
            metrics["cer_ci95"].setdefault(corpus, {})[model] = ci
            metrics["ser"].setdefault(corpus, {})[model] = round(total.sentence_errors / max(total.sentences, 1), 4)
            metrics["n"][corpus] = total.n
            if mixed:
                metrics["cer_by_language"].setdefault(corpus, {})[model] = {lang: round(langs[model][lang].rate, 4) for lang in LANGUAGES}
                metrics["cer_by_language_ci95"].setdefault(corpus, {})[model] = {lang: _ci(lang_rates[lang][model]) for lang in LANGUAGES}
                metrics["n_by_language"][corpus] = {lang: langs[model][lang].n for lang in LANGUAGES}
            plot_rows.append({"test_set": f"{corpus} / {model}", "corpus": corpus, "model": model, "cer": round(total.rate, 4),
                              "cer_lo": ci and ci["lo"], "cer_hi": ci and ci["hi"]})
        metrics["change"][corpus] = round(metrics["cer"][corpus]["merged"] - metrics["cer"][corpus]["base"], 4)
        changes[corpus] = rates["merged"] - rates["base"]
        metrics["change_ci95"][corpus] = _ci(changes[corpus])
        change_ci = metrics["change_ci95"][corpus]
        metrics["change_significant"][corpus] = significant(**change_ci) if change_ci else None
        for model in models[len(paths.DECODED_MODELS):]:  # with the list - without it, paired
            plain = model.removesuffix(paths.HOTWORDS)
            effect = metrics["hotwords_effect"].setdefault(corpus, {}).setdefault(plain, {})
            effect |= {"cer": round(metrics["cer"][corpus][model] - metrics["cer"][corpus][plain], 4),
                       "cer_ci95": _ci(rates[model] - rates[plain])}
    roles = {c: s.role for c, s in p.data.corpora.items()}
    # test sets with references only (a non-speech one has no CER change)
    domain = [c for c, r in roles.items() if r in DOMAIN and c in changes]
    general = [c for c, r in roles.items() if r in HELD_OUT and c in changes]
    metrics["domain_gain"] = _mean([-metrics["change"][c] for c in domain])
    metrics["general_change"] = _mean([metrics["change"][c] for c in general])
    metrics["general_change_note"] = ("merged - base CER averaged over the held-out test sets with references, role general "
                                      f"or test: {', '.join(general) or 'none'}")
    # the mean over test sets of each resample's change (test sets resample independently); NaN, left out,
    # where one test set's resample has no reference token
    if domain:
        metrics["domain_gain_ci95"] = _ci(-np.mean([changes[c] for c in domain], axis=0))
    if general:
        metrics["general_change_ci95"] = _ci(np.mean([changes[c] for c in general], axis=0))
    metrics["forgetting"] = _forgetting(metrics, general, roles)
    for key in ("cer_by_language", "cer_by_language_ci95", "n_by_language", "term_recall", "term_recall_ci95",
                "hallucination_rate", "hallucination_rate_ci95", "hallucination_change", "hallucination_change_ci95", "n_clips",
                *TERM_KEYS):
        if not metrics[key]:
            del metrics[key]
    every_row = [r for by_model in rows_of.values() for rs in by_model.values() for r in rs]
    if every_row and all(r["hyp"] == r["ref"] and not r["missing"] and "times" in r for r in every_row):
        # a forced aligner is given the transcript: its "hypothesis" is the reference, its result the times
        metrics["note"] = ("every hypothesis equals its reference and comes with times: a forced aligner's output is the "
                           "transcript it was given, so these CERs say nothing; see metrics/alignment.json")
        print(f"note: {metrics['note']}")

    METRICS.parent.mkdir(parents=True, exist_ok=True)
    METRICS.write_text(json.dumps(metrics, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    alignment = _alignment(p, rows_of)
    ALIGNMENT.write_text(json.dumps(alignment, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    PLOT.parent.mkdir(parents=True, exist_ok=True)
    with open(PLOT, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=["test_set", "corpus", "model", "cer", "cer_lo", "cer_hi"], lineterminator="\n")
        writer.writeheader()
        writer.writerows(plot_rows)
    with open(ALIGNMENT_PLOT, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=["test_set", "corpus", "model", "mae_ms", "mae_ms_lo", "mae_ms_hi"], lineterminator="\n")
        writer.writeheader()
        for corpus, by_model in alignment.get("mae_ms", {}).items():
            cis = alignment["mae_ms_ci95"][corpus]
            writer.writerows({"test_set": f"{corpus} / {m}", "corpus": corpus, "model": m, "mae_ms": v,
                              "mae_ms_lo": cis[m] and cis[m]["lo"], "mae_ms_hi": cis[m] and cis[m]["hi"]}
                             for m, v in by_model.items())
    with open(HALLUCINATION_PLOT, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=["test_set", "corpus", "model", "hallucination_rate", "hallucination_rate_lo",
                                               "hallucination_rate_hi"], lineterminator="\n")
        writer.writeheader()
        writer.writerows(hallucination_rows)
    _print(metrics, roles, p.score)


def _held(ci: dict | None) -> bool:
    """Forgetting flagged: the paired interval of merged - base lies wholly above zero."""
    return ci is not None and ci["lo"] > 0


def _forgetting(metrics: dict, held_out: list[str], roles: dict[str, str]) -> dict:
    """Each held-out set's CER change (merged - base) and the pooled one, each flagged when its interval is above zero."""
    sets = {c: {"role": roles[c], "change": metrics["change"][c], "change_ci95": metrics["change_ci95"][c],
                "flag": _held(metrics["change_ci95"][c])} for c in held_out}
    out: dict = {"sets": sets}
    if held_out:  # each resample's change averaged over the sets: general_change's
        ci = metrics["general_change_ci95"]
        out["pooled"] = {"change": metrics["general_change"], "change_ci95": ci, "flag": _held(ci)}
    return out | {"note": "merged - base CER on the test sets of role general or test with references (never trained on "
                          "for the domain), and pooled over them; flag: the paired 95% interval lies wholly above zero"}


def _shares(values: list[list], denominators, resamples: int, seed) -> tuple[list, list]:
    """Per model: the pooled rate sum(values) / sum(denominators) (None where that is 0) and its 95% interval on the
    test set's resamples (paired with the CER's: the same seed)."""
    values, den = np.asarray(values, dtype=np.int64), np.asarray(denominators, dtype=np.int64)
    boot = bootstrap_rates(values, den, resamples, seed)
    rates = [round(float(v.sum() / den.sum()), 4) if den.sum() else None for v in values]
    return rates, [_ci(b) for b in boot]


def _term_metrics(metrics: dict, corpus: str, source: str, rows: dict[str, list[dict]], utts: dict[str, list[Utterance]],
                  terms: list[str], resamples: int, seed) -> None:
    """Per model, against the test set's term list: term_recall; b_cer, the error rate over the reference's term tokens
    (scoring.biased: insertions inside a term too), and u_cer over the rest; term_false_alarms, the hypothesis' term
    occurrences the reference lacks, per utterance. Each pooled, with its interval on the CER's resamples (NaN, left
    out, where one has nothing to count). With decode.hotwords, hotwords_effect: with the list - without it, paired."""
    models, tt = list(rows), term_tokens(terms)
    pairs = {m: [(r["ref"], r["hyp"]) for r in rows[m]] for m in models}
    counts = {m: term_counts(pairs[m], terms) for m in models}
    said = counts[models[0]][1]
    split = {m: np.array([[c.errors, c.n] for u in utts[m] for c in biased(u, tt)]).reshape(-1, 2, 2) for m in models}
    fa = [false_alarms(pairs[m], terms) for m in models]
    ones = np.ones(len(said), dtype=np.int64)
    # (numerators per model, the shared denominator); recall = 1 - missed / said
    measures = {"term_recall": ([said - counts[m][0] for m in models], said),
                "b_cer": ([split[m][:, 0, 0] for m in models], split[models[0]][:, 0, 1]),
                "u_cer": ([split[m][:, 1, 0] for m in models], split[models[0]][:, 1, 1]),
                "term_false_alarms": (fa, ones)}
    for name, (num, den) in measures.items():
        boot = dict(zip(models, bootstrap_rates(num, den, resamples, seed)))
        sign = -1 if name == "term_recall" else 1
        for m, x in zip(models, num):
            found = den.sum() - x.sum() if sign < 0 else x.sum()  # recall: found / said
            value = round(float(found / den.sum()), 4) if den.sum() else None
            metrics[name].setdefault(corpus, {})[m] = value
            if den.sum() or name != "term_recall":  # recall's interval only where a term is said (as before)
                metrics[f"{name}_ci95"].setdefault(corpus, {})[m] = _ci(1 - boot[m] if sign < 0 else boot[m])
            plain = m.removesuffix(paths.HOTWORDS)
            if plain != m and value is not None:
                effect = metrics["hotwords_effect"].setdefault(corpus, {}).setdefault(plain, {})
                effect |= {name: round(value - metrics[name][corpus][plain], 4), f"{name}_ci95": _ci(sign * (boot[m] - boot[plain]))}
    metrics["n_term_tokens"][corpus] = int(split[models[0]][:, 0, 1].sum())
    metrics["term_list"][corpus] = source


def _degeneration(rows: dict[str, list[dict]], utts: dict[str, list[Utterance]], resamples: int, seed) -> dict:
    """Per model: looping (share of outputs), capped (share stopped at decode's guard; None where decode recorded
    none), insertion_rate (insertions / reference tokens), length_ratio (hypothesis / reference tokens)."""
    models = list(rows)
    hyp_tokens = {m: [tokens(r["hyp"]) for r in rows[m]] for m in models}
    clips = np.ones(len(rows[models[0]]), dtype=np.int64)
    ref_n = [u.counts.n for u in utts[models[0]]]
    measures = {"looping": ([[loops(t) for t in hyp_tokens[m]] for m in models], clips),
                "insertion_rate": ([[u.counts.ins for u in utts[m]] for m in models], ref_n),
                "length_ratio": ([[len(t) for t in hyp_tokens[m]] for m in models], ref_n)}
    if all("capped" in r for m in models for r in rows[m]):  # normalize rows of a decode that recorded its guard
        measures["capped"] = ([[r["capped"] for r in rows[m]] for m in models], clips)
    out: dict = {m: {} for m in models}
    for name in ("looping", "capped", "insertion_rate", "length_ratio"):
        rates, cis = _shares(*measures[name], resamples, seed) if name in measures else ([None] * len(models),) * 2
        for m, rate, ci in zip(models, rates, cis):
            out[m] |= {name: rate, f"{name}_ci95": ci}
    return out


def _hallucination(metrics: dict, corpus: str, role: str, rows: dict[str, list[dict]], resamples: int, seed) -> list[dict]:
    """A test set without words: the share of clips with any output, per model, and merged - base paired. Its
    report lists the clips that got output; it returns its plot rows."""
    models = list(rows)
    said = np.array([[bool(tokens(r["hyp"])) for r in rows[m]] for m in models], dtype=np.int64)
    n = said.shape[1]
    boot = dict(zip(models, bootstrap_rates(said, np.ones(n, dtype=np.int64), resamples, seed)))
    plot = []
    for m, row in zip(models, said):
        rate, ci = round(float(row.sum() / n), 4), _ci(boot[m])
        metrics["hallucination_rate"].setdefault(corpus, {})[m] = rate
        metrics["hallucination_rate_ci95"].setdefault(corpus, {})[m] = ci
        plot.append({"test_set": f"{corpus} / {m}", "corpus": corpus, "model": m, "hallucination_rate": rate,
                     "hallucination_rate_lo": ci and ci["lo"], "hallucination_rate_hi": ci and ci["hi"]})
        out = REPORTS / m / f"{corpus}.txt"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(nonspeech_report([r["key"] for r in rows[m]], [r["hyp"] for r in rows[m]],
                                        f"{m} on {corpus} test ({role}, no speech)") + "\n", encoding="utf-8")
    metrics["hallucination_change"][corpus] = round(metrics["hallucination_rate"][corpus]["merged"]
                                                    - metrics["hallucination_rate"][corpus]["base"], 4)
    metrics["hallucination_change_ci95"][corpus] = _ci(boot["merged"] - boot["base"])
    metrics["n_clips"][corpus] = n
    return plot


def _alignment(p: params.Params, rows_of: dict[str, dict[str, list[dict]]]) -> dict:
    """Timestamp accuracy against the test sets' reference timestamps: MAE in ms over the starts and ends
    of the units both sides share, and the share of those boundaries within 20 / 50 / 100 ms, each with a
    95% bootstrap interval (resamples of the utterances that have independent references, seeded as the CER's)."""
    out: dict = {"mae_ms": {}, "mae_ms_ci95": {}, **{f"within_{x}ms": {} for x in WITHIN_MS},
                 **{f"within_{x}ms_ci95": {} for x in WITHIN_MS}, "boundaries": {}, "units_timed": {}, "utterances": {}}
    pseudo = {c: sum(bool(r.get("pseudo_timestamps")) for r in next(iter(rows.values()))) for c, rows in rows_of.items()}
    for corpus, rows in rows_of.items():
        seed = resample_seed(p.score.seed, corpus)
        for model, rs in rows.items():
            rs = [r for r in rs if r.get("ref_times")]  # utterances with independent references (and decode.timestamps on)
            if not rs:
                continue
            errors = [boundary_errors(r["ref_times"], r["times"]) for r in rs]
            n = np.array([len(e) for e in errors])
            if not n.sum():
                continue  # this model gave no times (the audio LLMs through transformers give none)
            abs_ms = np.array([sum(e) for e in errors])
            out["mae_ms"].setdefault(corpus, {})[model] = round(float(abs_ms.sum() / n.sum()), 1)
            mae = bootstrap_rates(abs_ms, n, p.score.bootstrap, seed)[0]
            out["mae_ms_ci95"].setdefault(corpus, {})[model] = _ci(mae, digits=1)  # NaN: a resample with no timed boundary
            for x in WITHIN_MS:
                within = np.array([sum(v <= x for v in e) for e in errors])
                out[f"within_{x}ms"].setdefault(corpus, {})[model] = round(float(within.sum() / n.sum()), 4)
                out[f"within_{x}ms_ci95"].setdefault(corpus, {})[model] = _ci(bootstrap_rates(within, n, p.score.bootstrap, seed)[0])
            out["boundaries"].setdefault(corpus, {})[model] = int(n.sum())
            out["units_timed"].setdefault(corpus, {})[model] = round(float(n.sum() / 2 / sum(len(r["ref_times"]) for r in rs)), 4)
            out["utterances"].setdefault(corpus, {})[model] = len(rs)
    if any(pseudo.values()):
        out["pseudo_labelled_not_scored"] = {c: n for c, n in pseudo.items() if n}
        out["pseudo_labels"] = ("test utterances whose timestamps are the base aligner's pseudo-labels are not scored: "
                                "against them a model's error measures agreement with the base aligner, not accuracy")
    if not out["mae_ms"]:
        note = {"note": "no test set has both independent reference timestamps and decoded times (decode.timestamps: true)"}
        return note | {k: out[k] for k in ("pseudo_labelled_not_scored", "pseudo_labels") if k in out}
    for corpus, mae in out["mae_ms"].items():
        ci = out["mae_ms_ci95"][corpus]
        print(f"timestamps {corpus}: MAE " + ", ".join(f"{m} {v:.1f} ms {_bounds(ci[m], 1)}" for m, v in mae.items())
              + "; within 50 ms " + ", ".join(f"{m} {v:.3f}" for m, v in out["within_50ms"][corpus].items())
              + f" ({', '.join(f'{m} {v:.0%}' for m, v in out['units_timed'][corpus].items())} of the units timed)")
    return out


def _print(metrics: dict, roles: dict[str, str], score: params.Score) -> None:
    ci = _bounds
    print(f"95% intervals: {score.bootstrap} bootstrap resamples of each test set's utterances (seed {score.seed}); "
          "change: merged - base, paired (* = the interval excludes zero)")
    print(f"{'test set':<16}{'role':<12}{'N':>6}  {'CER base [95%]':<27}{'CER merged [95%]':<27}change [95%]")
    for corpus, role in roles.items():
        if corpus not in metrics["cer"]:
            continue  # no speech: no CER (its hallucination rate below)
        c, i = metrics["cer"][corpus], metrics["cer_ci95"][corpus]
        flag = "*" if metrics["change_significant"][corpus] else " "
        print(f"{corpus:<16}{role:<12}{metrics['n'][corpus]:>6}  {c['base']:.4f} {ci(i['base']):<19} "
              f"{c['merged']:.4f} {ci(i['merged']):<19} {metrics['change'][corpus]:+.4f}{flag} {ci(metrics['change_ci95'][corpus])}")
    for corpus, by in metrics.get("cer_by_language", {}).items():
        n, i = metrics["n_by_language"][corpus], metrics["cer_by_language_ci95"][corpus]
        print(f"by language {corpus}: " + "; ".join(f"{lang} (N {n[lang]}) base {by['base'][lang]:.4f} {ci(i['base'][lang])}, "
                                                    f"merged {by['merged'][lang]:.4f} {ci(i['merged'][lang])}" for lang in LANGUAGES))
    for corpus, tr in metrics.get("term_recall", {}).items():
        i = metrics.get("term_recall_ci95", {}).get(corpus, {})
        print(f"term recall {corpus}: " + ", ".join(f"{m} {tr[m]} {ci(i[m]) if m in i else ''}".rstrip() for m in tr))
        for key, label in (("b_cer", "B-CER (term tokens)"), ("u_cer", "U-CER (the rest)"), ("term_false_alarms", "false alarms / utt")):
            v, i = metrics[key][corpus], metrics[key + "_ci95"][corpus]
            print(f"  {label} {corpus}: " + ", ".join(f"{m} {'-' if v[m] is None else f'{v[m]:.4f} {ci(i[m])}'}" for m in v))
    for corpus, by_model in metrics.get("hotwords_effect", {}).items():
        for m, e in by_model.items():
            print(f"hotwords effect {corpus} {m} (with - without the list): " + ", ".join(
                f"{k} {e[k]:+.4f}{'*' if e[k + '_ci95'] and significant(**e[k + '_ci95']) else ''}" for k in e if not k.endswith("_ci95")))
    for corpus, rate in metrics.get("hallucination_rate", {}).items():
        i, change_ci = metrics["hallucination_rate_ci95"][corpus], metrics["hallucination_change_ci95"][corpus]
        flag = "*" if change_ci and significant(**change_ci) else ""
        print(f"hallucination {corpus} (no speech, {metrics['n_clips'][corpus]} clips; share with output): "
              + ", ".join(f"{m} {v:.4f} {ci(i[m])}" for m, v in rate.items())
              + f"; change {metrics['hallucination_change'][corpus]:+.4f}{flag} {ci(change_ci)}")
    print(f"{'degeneration':<16}{'model':<16}{'looping [95%]':<24}{'capped [95%]':<24}{'ins/ref tok [95%]':<24}hyp/ref len [95%]")
    for corpus, by_model in metrics["degeneration"].items():
        for m, d in by_model.items():
            cells = ["-" if d[k] is None else f"{d[k]:.3f} {ci(d[k + '_ci95'], 3)}"  # -: nothing to count, or not recorded
                     for k in ("looping", "capped", "insertion_rate", "length_ratio")]
            print(f"{corpus:<16}{m:<16}" + "".join(f"{c:<24}" for c in cells[:3]) + cells[3])
    for key, label in (("domain_gain", "domain gain (base - merged)"), ("general_change", "general change (forgetting if > 0)")):
        if metrics[key] is not None:
            print(f"{label} {metrics[key]:+.4f} {ci(metrics[key + '_ci95'])}")
    forgetting = metrics["forgetting"]
    worse = [f"{c} {s['change']:+.4f} {ci(s['change_ci95'])}" for c, s in forgetting["sets"].items() if s["flag"]]
    if forgetting.get("pooled", {}).get("flag"):
        pooled = forgetting["pooled"]
        worse.append(f"pooled over {', '.join(forgetting['sets'])} {pooled['change']:+.4f} {ci(pooled['change_ci95'])}")
    if worse:
        print("FORGETTING: merged is worse than base (CER change, 95% interval above zero) on " + "; ".join(worse))
    print(f"reports in {REPORTS}/")
