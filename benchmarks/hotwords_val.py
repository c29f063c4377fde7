"""decode.hotwords' settings measured on val, never on test: what each (hotwords_select, hotwords_max_distance,
hotwords_bonus) buys on the domain's terms and costs on general speech, to choose the demo's defaults by measurement.

For a model (models/merged by default), the val splits of the domain-role corpora and the general-role corpora are
decoded once without a list (the first pass), then once per setting with each utterance's context list, through the
decode stage's own code (decode.transcriber, decode.decode_all, decode.list_pass, hotwords.for_decoding); each bonus
checks the same second pass (decode.refused_changes). Printed per setting:

- domain val: term recall and B-CER with the list (scoring.term_recall, scoring.biased), CER with and without, and
  U-CER with the list minus without, with its paired bootstrap 95% interval;
- general val: CER with the list minus without, with its paired bootstrap 95% interval, and false term
  occurrences per utterance (scoring.false_alarms);
- the mean list length each got, how many second-pass transcripts the bonus's check sent back to the first pass, and
  the check's time (scoring both transcripts of each utterance it checks).

    uv run --extra demo dvc repro                      # the finished demo
    uv run python benchmarks/hotwords_val.py           # select 12 x max_distance none, 0.5, 0.35, 0.2 (about 10 min)
    uv run python benchmarks/hotwords_val.py --select 12 6 --max-distance none 0.3
    uv run python benchmarks/hotwords_val.py --select 12 --max-distance 0.3 --bonus none 4 2 1 0.5
    uv run python benchmarks/hotwords_val.py --quick   # a tiny random Whisper on 6 clips: a smoke run
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import soundfile as sf

from asrtune import params, paths
from asrtune.corpus.chatml import Example, examples
from asrtune.corpus.manifest import read_jsonl

REPO = Path(__file__).resolve().parents[1]
TERMS = ["阿莫西林", "布洛芬", "CT", "核磁共振", "血常规", "胰岛素"]


def val_sets(p: params.Params) -> dict[str, list[Example]]:
    """role -> the val utterances of its corpora (domain, general)."""
    out: dict[str, list[Example]] = {"domain": [], "general": []}
    for name, corpus in p.data.corpora.items():
        if corpus.role not in out:
            continue
        val = REPO / paths.split_dir(name) / "val.jsonl"
        if not val.is_file():
            sys.exit(f"{val}: not found: run the demo first (`uv run --extra demo dvc repro`)")
        out[corpus.role] += [Example(e.key, str(REPO / e.audio), e.text, e.system, e.prompt) for e in examples(read_jsonl(val))]
    return out


def quick_setup(tmp: Path) -> tuple[Path, dict[str, list[Example]]]:
    from asrtune.testing import write_tiny_whisper

    model = write_tiny_whisper(tmp / "model")
    rng = np.random.default_rng(0)
    sets: dict[str, list[Example]] = {"domain": [], "general": []}
    for i, (role, text) in enumerate([("domain", "病人服用阿莫西林三天"), ("domain", "复查CT和血常规"), ("domain", "打胰岛素"),
                                      ("general", "今天天气很好"), ("general", "我们去公园"), ("general", "明天开会")]):
        path = tmp / f"clip{i}.wav"
        sf.write(str(path), (rng.standard_normal(16000 * 2) * 0.1).astype(np.float32), 16000)
        sets[role].append(Example(f"{role}{i}", str(path), text, "", ""))
    return model, sets


def distance_arg(text: str) -> float | None:
    return None if text.lower() in ("none", "null") else float(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=paths.MERGED_MODEL, help="a model directory (default models/merged)")
    parser.add_argument("--select", type=int, nargs="+", default=[12], help="decode.hotwords_select values")
    parser.add_argument("--max-distance", type=distance_arg, nargs="+", default=[None, 0.5, 0.35, 0.2],
                        help="decode.hotwords_max_distance values (none: no bound)")
    parser.add_argument("--bonus", type=distance_arg, nargs="+", default=[None],
                        help="decode.hotwords_bonus values (none: no check)")
    parser.add_argument("--every-change", action="store_true",
                        help="the bonus's check also sends back changes that gained no term (decode.refused_changes' every_change)")
    parser.add_argument("--quick", action="store_true", help="tiny random Whisper, 6 noise clips (smoke run)")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    import transformers

    from asrtune.evaluation import hotwords
    from asrtune.evaluation.normalization import normalize
    from asrtune.evaluation.scoring import Counts, align, biased, bootstrap_rates, false_alarms, interval95, term_recall, term_tokens
    from asrtune.evaluation.terms import read_terms
    from asrtune.stages.decode import refused_changes, decode_all, list_pass, transcriber

    transformers.logging.set_verbosity_error()
    p = params.load(REPO / "params.yaml")
    p = p.model_copy(update={"decode": p.decode.model_copy(update={"timestamps": False})})  # text only: faster, same words
    with tempfile.TemporaryDirectory(prefix="asrtune-hotwords-val-") as tmp_name:
        if args.quick:
            model, sets = quick_setup(Path(tmp_name))
            terms = TERMS
        else:
            model, sets = REPO / args.model, val_sets(p)
            if p.decode.hotwords is None:
                sys.exit("params.yaml: decode.hotwords is null: name the term list to measure")
            terms = read_terms(REPO / p.decode.hotwords, "decode.hotwords")
        run, runtime = transcriber(p, model, None, reuse=True)  # the checks score clips the passes encoded
        items = [e for role in ("domain", "general") for e in sets[role]]
        audio = {e.key: sf.read(e.audio, dtype="float32")[0] for e in items}
        first = decode_all(run, items, audio, p.decode.batch_size, "first pass")
        results = {}
        for select in args.select:
            for bound in args.max_distance:
                contexts = hotwords.for_decoding(terms, select, first, bound)
                listed = list_pass(run, items, audio, p.decode.batch_size, f"select {select}, max distance {bound}", contexts, first, set())
                mean_len = np.mean([len(contexts[e.key]) for e in items]) if items else 0.0
                again = [e for e in items if contexts[e.key]]
                for bonus in args.bonus:
                    start = time.perf_counter()
                    refused = [] if bonus is None else refused_changes(run, again, audio, p.decode.batch_size, first, listed, bonus, terms,
                                                                           args.every_change)
                    results[select, bound, bonus] = ({**listed, **{k: first[k] for k in refused}}, mean_len, len(refused),
                                                     time.perf_counter() - start)

    opts, tt = p.normalize, term_tokens(terms)

    def utterances(role, hyps):
        return [align(e.key, normalize(e.text, opts), normalize(hyps[e.key], opts)) for e in sets[role]]

    def rate(us):
        total = Counts()
        for u in us:
            total.add(u.counts)
        return total.rate

    def paired(with_list, without, ref_tokens):
        """with - without over the utterances' errors, and its paired bootstrap 95% interval ("[none]" without any)."""
        change = sum(with_list) / max(sum(ref_tokens), 1) - sum(without) / max(sum(ref_tokens), 1)
        if not len(ref_tokens):
            return f"{change:+.4f} [none]"
        boot = bootstrap_rates([with_list, without], np.array(ref_tokens), 1000, 0)
        lo, hi = interval95(boot[0] - boot[1])
        return f"{change:+.4f} [{lo:+.4f}, {hi:+.4f}]"

    plain = {role: utterances(role, first) for role in sets}
    plain_u = [biased(u, tt)[1] for u in plain["domain"]]
    print(f"\n{model} ({runtime}); val: {len(sets['domain'])} domain, {len(sets['general'])} general utterances; "
          f"{len(terms)} terms. Without a list: domain CER {rate(plain['domain']):.4f}, general CER {rate(plain['general']):.4f}\n")
    print("| select | max distance | bonus | mean list | sent back | check s | domain recall | domain B-CER | domain CER "
          "| domain U-CER change [95%] | general CER change [95%] | false terms / utt |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for (select, bound, bonus), (listed, mean_len, sent_back, seconds) in results.items():
        dom = utterances("domain", listed)
        gen = utterances("general", listed)
        found, total = term_recall([(normalize(e.text, opts), normalize(listed[e.key], opts)) for e in sets["domain"]], terms)
        b = Counts()
        for u in dom:
            b.add(biased(u, tt)[0])
        u_errors = [biased(u, tt)[1].errors for u in dom]
        u_change = paired(u_errors, [c.errors for c in plain_u], [c.n for c in plain_u])
        general_change = paired([u.counts.errors for u in gen], [u.counts.errors for u in plain["general"]],
                                [u.counts.n for u in plain["general"]])
        fa = false_alarms([(normalize(e.text, opts), normalize(listed[e.key], opts)) for e in sets["general"]], terms)
        print(f"| {select} | {'none' if bound is None else bound} | {'none' if bonus is None else bonus} | {mean_len:.1f} | "
              f"{sent_back} | {seconds:.1f} | {found}/{total} = {found / max(total, 1):.2f} | {b.rate if b.n else float('nan'):.4f} | "
              f"{rate(dom):.4f} | {u_change} | {general_change} | {fa.mean() if len(fa) else 0:.3f} |")


if __name__ == "__main__":
    main()
