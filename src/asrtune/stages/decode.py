"""decode <model> <corpus>: transcribe a corpus's test split with `base` or `merged`.

decode.engine picks the runtime: transformers (either family) or ctranslate2 (whisper: the copy
the convert stage wrote in models/ct2/<model>). Batched and sorted by length (less padding),
greedy unless decode.num_beams > 1, with a repetition guard; writes `key<TAB>text` in key order
(with decode.timestamps, a third column: the units' [unit, start, end] as JSON) and prints the
real-time factor. Beside it, <corpus>.capped.txt lists the keys whose generation stopped at the guard's
max new tokens rather than at an end token (a looping model runs into it), one a line.

With decode.hotwords, a second pass gives each utterance the list as context (asrtune.evaluation.hotwords; with
decode.hotwords_select, the terms closest to its first-pass hypothesis; an utterance whose list comes out empty keeps
its first pass, and with decode.hotwords_bonus so does one whose gained terms the model, scoring both transcripts after
the plain prompt, does not find likely enough) into <corpus>.hotwords.tsv and <corpus>.hotwords.capped.txt, scored as
<model>+hotwords; without, both are empty.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import soundfile as sf
from tqdm import tqdm

from asrtune import params, paths
from asrtune.corpus.chatml import Example, examples
from asrtune.corpus.manifest import read_jsonl
from asrtune.errors import UserError
from asrtune.weights import chain, precision


class Guard:
    """Which rows of the last batch stopped at the max-new-tokens guard. It wraps the model's generate, so it
    counts the tokens generated: re-tokenizing the text would not (BPE merges a loop's tokens differently).
    `rows` is empty after a batch that generated nothing (the forced aligner): none capped. A batch may take
    several calls of generate (Whisper: one per run of clips with the same context list): their rows add up."""

    def __init__(self):
        self.rows: list[bool] = []

    def watch_transformers(self, net) -> None:
        import torch

        generate = getattr(net, "generate", None)
        if generate is None:  # the forced aligner generates nothing: nothing can stop at the guard
            return

        def counted(*args, **kwargs):
            out = generate(*args, **kwargs)
            seq = out if torch.is_tensor(out) else out["sequences"]
            config = kwargs.get("generation_config") or net.generation_config
            cap = kwargs.get("max_new_tokens") or config.max_new_tokens
            if not net.config.is_encoder_decoder and "input_ids" in kwargs:  # an audio LLM returns its prompt too
                seq = seq[:, kwargs["input_ids"].shape[1]:]  # (Whisper returns the new tokens only)
            ends = [t for t in (config.eos_token_id, config.pad_token_id) if t is not None]
            ends = torch.tensor([i for t in ends for i in (t if isinstance(t, list) else [t])], device=seq.device)
            # a row that ended before the cap holds its end token and padding; Whisper drops the end token, so count
            self.rows = self.rows + ((~torch.isin(seq, ends)).sum(dim=1) >= cap).tolist()
            return out

        net.generate = counted

    def watch_ctranslate2(self, engine) -> None:
        from asrtune.weights.ct2_engine import new_tokens

        model, guard = engine.model, self

        class Counted:  # CTranslate2's Whisper returns the new tokens without the end token
            def generate(self, features, prompts, **kwargs):
                results = model.generate(features, prompts, **kwargs)
                guard.rows = guard.rows + [len(r.sequences_ids[0]) >= new_tokens(kwargs["max_length"], prompts[0]) for r in results]
                return results

        engine.model = Counted()


def transcriber(p: params.Params, model_dir: Path, ct2_dir: Path | None, net=None, reuse: bool = False):
    """(transcribe(examples, waveforms) -> texts, what runs it) for decode.engine; transcribe.guard says which
    rows of its last batch stopped at the max-new-tokens guard, transcribe.score(waveforms, texts) gives each text's
    log-probability after the plain prompt (decode.hotwords_bonus; ctranslate2: the same weights through transformers).
    `net`: a model in memory, float32 (the sweep's interpolations, whose weights change between calls of transcribe), run
    through transformers as
    precision.load_for_inference runs model_dir's; model_dir then names its chain, for the family and processor.
    `reuse`: keep Whisper's encoder outputs in the asrtune cache (transcription.encoder_reuse), for the stages that
    encode the same clips again (decode, the sweep, longform); not for a one-off transcription of a user's files."""
    guard = Guard()
    if p.decode.engine == "ctranslate2" and net is None:
        from asrtune.weights.ct2_engine import Engine, check_family

        check_family(chain.family_of(model_dir))
        engine = Engine(ct2_dir)  # computes in the type convert stored (decode.compute_type)
        guard.watch_ctranslate2(engine)

        def transcribe(batch, audio, contexts=None):
            return engine.transcribe(audio, p, contexts)

        scorer = {}

        def score(audio, texts):  # CTranslate2's Whisper scores no given transcript: the same weights in transformers do
            if not scorer:
                plain = p.model_copy(update={"decode": p.decode.model_copy(update={"engine": "transformers"})})
                scorer["run"] = transcriber(plain, model_dir, None, reuse=reuse)[0]
            return scorer["run"].score(audio, texts)

        transcribe.guard, transcribe.score = guard, score
        return transcribe, f"ctranslate2, {engine.device}"
    import transformers

    transformers.logging.set_verbosity_error()  # generate() warns per batch about settings we chose on purpose
    net, fam = precision.load_for_inference(p, model_dir, net)  # float32 weights, autocast as in training
    processor = fam.load_processor(chain.root_of(model_dir))
    chosen = net.asrtune_precision
    runs = "float32" if chosen == "fp32" else f"float32 weights under {precision.TORCH_DTYPES[chosen]} autocast"
    guard.watch_transformers(net)
    from asrtune.transcription import encoder_reuse

    kept = {}
    if reuse and encoder_reuse.applies(fam.NAME, net.device.type, chosen):  # its encoder is most of a CPU's decoding
        kept = {"encode": encoder_reuse.EncoderOutputs(net.get_encoder(), chosen)}
        runs += ", encoder outputs reused from the cache"

    def transcribe(batch, audio, contexts=None):
        return fam.transcribe(net, processor, batch, audio, p, contexts, **kept)

    def score(audio, texts):
        """Each text's log-probability given its clip, after the plain prompt (decode.hotwords_bonus)."""
        return fam.score(net, processor, audio, texts, p, **kept)

    transcribe.guard, transcribe.score = guard, score
    return transcribe, f"transformers, {net.device}, {runs}"


def decode_all(transcribe, items: list[Example], audio: dict, batch_size: int, desc: str, capped: set | None = None,
               contexts: dict[str, list[str]] | None = None) -> dict[str, str]:
    """key -> one-line transcript, with a tab and its units' times as JSON where the family gave them.
    Longest clips first, so similar lengths share a batch. Into `capped`, the keys that transcribe.guard
    says stopped at the max-new-tokens guard. `contexts`: key -> the context list its prompt carries."""
    order = sorted(items, key=lambda e: (-len(audio[e.key]), e.key))
    hyps: dict[str, str] = {}
    guard = getattr(transcribe, "guard", None)
    for i in tqdm(range(0, len(order), batch_size), desc=desc, unit="batch"):
        batch = order[i : i + batch_size]
        if guard is not None:
            guard.rows = []
        clips = [audio[e.key] for e in batch]
        outputs = transcribe(batch, clips, [contexts[e.key] for e in batch]) if contexts else transcribe(batch, clips)
        if guard is not None and capped is not None:
            capped.update(e.key for e, hit in zip(batch, guard.rows) if hit)
        for e, out in zip(batch, outputs):
            text, times = out if isinstance(out, tuple) else (out, None)
            hyps[e.key] = " ".join(text.split())  # one line per utterance, no tabs
            if times is not None:
                hyps[e.key] += "\t" + json.dumps([[u, s, t] for u, s, t in times], ensure_ascii=False)
    return hyps


def list_pass(transcribe, items: list[Example], audio: dict, batch_size: int, desc: str, contexts: dict[str, list[str]],
              first: dict[str, str], first_capped: set, capped: set | None = None, bonus: float | None = None,
              terms: list[str] | None = None, reverted: set | None = None) -> dict[str, str]:
    """decode.hotwords' second pass: each utterance with its context list. One whose list is empty keeps its first
    pass (`first`, and its mark in `first_capped`): an empty list is the plain prompt, which the first pass already
    decoded (again, in another batch, only its guard's length could differ). With a distance bound most general
    speech gets no list. With `bonus` (decode.hotwords_bonus), a transcript that gained terms of `terms` stands only
    where hotwords.keeps says so, and one that stopped at the max-new-tokens guard where its first pass did not (a loop
    the list caused) never does; these keep their first pass (and its mark), and their keys go into `reverted`."""
    again = [e for e in items if contexts[e.key]]
    hyps = {e.key: first[e.key] for e in items if not contexts[e.key]}
    marked = {k for k in hyps if k in first_capped}
    if again:
        hyps.update(decode_all(transcribe, again, audio, batch_size, desc, marked, contexts))
    if bonus is not None and again:
        loops = {e.key for e in again if e.key in marked and e.key not in first_capped}
        sent_back = sorted(loops) + refused_changes(transcribe, [e for e in again if e.key not in loops], audio, batch_size, first,
                                                    hyps, bonus, terms or [])
        for key in sent_back:
            hyps[key] = first[key]
            marked.discard(key)
            if key in first_capped:
                marked.add(key)
        if reverted is not None:
            reverted.update(sent_back)
    if capped is not None:
        capped.update(marked)
    return hyps


def refused_changes(transcribe, items: list[Example], audio: dict, batch_size: int, first: dict[str, str], second: dict[str, str],
                    bonus: float, terms: list[str], every_change: bool = False) -> list[str]:
    """The keys whose second pass gained terms that the model, without the list, finds too unlikely (hotwords.keeps):
    both transcripts scored by the model after the plain prompt, the two of an utterance in one batch. A change that
    gained no term stands unchecked: on val, checking those too (every_change, with no bonus for them) sent back
    changes that had helped the domain's speech more than they cost general speech (RESULTS.md)."""
    from asrtune.evaluation import hotwords

    text = {k: {1: first[k].partition("\t")[0], 2: second[k].partition("\t")[0]} for k in (e.key for e in items)}
    gains = {k: hotwords.gained(terms, t[1], t[2]) for k, t in text.items()}
    check = sorted((k for k, t in text.items() if gains[k] or (every_change and t[1] != t[2])), key=lambda k: (-len(audio[k]), k))
    refused = []
    step = max(1, batch_size // 2)
    for i in range(0, len(check), step):
        keys = check[i : i + step]
        scores = transcribe.score([audio[k] for k in keys for _ in (1, 2)], [text[k][n] for k in keys for n in (1, 2)])
        refused += [k for j, k in enumerate(keys) if not hotwords.keeps(bonus, gains[k], scores[2 * j + 1], scores[2 * j])]
    return refused


def run(model: str, corpus: str) -> None:
    """Write data/decode/<model>/<corpus>.tsv and <corpus>.capped.txt beside it."""
    p = params.load()
    if model not in paths.DECODED_MODELS:
        raise UserError(f"decode: model must be one of {', '.join(paths.DECODED_MODELS)}, got {model!r}")
    test = paths.split_dir(corpus) / "test.jsonl"
    items = examples(read_jsonl(test, stage_hint=f"split@{corpus}"))
    model_dir = paths.model_dir(model)
    if not model_dir.is_dir():
        raise UserError(f"{model_dir}: not found (run `dvc repro {'base' if model == 'base' else 'merge'}` first)")

    transcribe, runtime = transcriber(p, model_dir, paths.ct2_dir(model), reuse=True)
    audio = {e.key: sf.read(e.audio, dtype="float32")[0] for e in items}
    start = time.perf_counter()
    capped: set[str] = set()
    try:
        hyps = decode_all(transcribe, items, audio, p.decode.batch_size, f"decode {model} {corpus}", capped)
    except ValueError as e:  # e.g. a generation config without languages, or a language it lacks
        raise UserError(f"{model_dir}: cannot decode with model.language={p.model.language!r}: {str(e).splitlines()[0]}") from None
    wall = time.perf_counter() - start
    if p.decode.timestamps and not any("\t" in h for h in hyps.values()):
        why = ("the ctranslate2 engine gives none here (decode.engine: transformers does)" if p.decode.engine == "ctranslate2"
               else f"{chain.family_of(model_dir)} gives none through transformers (no alignment output)")
        print(f"note: decode.timestamps: {why}; metrics/alignment.json will have no timing for {model}")
    out = paths.decode_file(model, corpus)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("".join(f"{e.key}\t{hyps[e.key]}\n" for e in sorted(items, key=lambda e: e.key)), encoding="utf-8")
    paths.capped_file(model, corpus).write_text("".join(f"{k}\n" for k in sorted(capped)), encoding="utf-8")
    seconds = sum(len(a) for a in audio.values()) / 16000
    note = f", {len(capped)} stopped at the max-new-tokens guard" if capped else ""
    print(f"decode {model} {corpus} ({runtime}): {len(items)} utterances, {seconds:.1f} s of audio in {wall:.1f} s, "
          f"RTF {wall / seconds:.3f}{note} -> {out}")
    with_list(p, model, corpus, transcribe, items, audio, hyps, capped, seconds)


def with_list(p: params.Params, model: str, corpus: str, transcribe, items: list[Example], audio: dict, first: dict[str, str],
              first_capped: set, seconds: float) -> None:
    """decode.hotwords: the second pass, each utterance with its context list, into <corpus>.hotwords.tsv (and its
    .capped.txt); without decode.hotwords (or for a forced aligner, given the transcript), both empty."""
    from asrtune.evaluation import hotwords
    from asrtune.evaluation.terms import read_terms

    listed = model + paths.HOTWORDS
    out, capped = paths.decode_file(listed, corpus), set()
    if p.decode.hotwords is None or chain.family_of(paths.model_dir(model)) == "aligner":
        out.write_bytes(b"")
        paths.capped_file(listed, corpus).write_bytes(b"")
        return
    terms = read_terms(Path(p.decode.hotwords), "decode.hotwords")
    contexts = hotwords.for_decoding(terms, p.decode.hotwords_select, first, p.decode.hotwords_max_distance)
    start = time.perf_counter()
    reverted: set[str] = set()
    hyps = list_pass(transcribe, items, audio, p.decode.batch_size, f"decode {listed} {corpus}", contexts, first, first_capped, capped,
                     p.decode.hotwords_bonus, terms, reverted)
    wall = time.perf_counter() - start
    out.write_text("".join(f"{e.key}\t{hyps[e.key]}\n" for e in sorted(items, key=lambda e: e.key)), encoding="utf-8")
    paths.capped_file(listed, corpus).write_text("".join(f"{k}\n" for k in sorted(capped)), encoding="utf-8")
    select, bound = p.decode.hotwords_select, p.decode.hotwords_max_distance
    chosen = (f"the {select} of {len(terms)} terms closest to its first pass" if select is not None and select < len(terms)
              else f"{len(terms)} terms")
    if bound is not None:
        sizes = [len(c) for c in contexts.values()]
        chosen += (f" within pinyin distance {bound:g} of it ({sum(sizes) / max(1, len(sizes)):.1f} terms on average, "
                   f"{sum(not n for n in sizes)} utterances with none, which keep the plain pass)")
    chosen += " as context"
    if p.decode.hotwords_bonus is not None:
        n = len(reverted)
        chosen += (f"; {n} transcript{'s' if n != 1 else ''} sent back to the plain pass (gained terms the model finds too "
                   f"unlikely without the list, bonus {p.decode.hotwords_bonus:g} nats a term token, or a loop the list caused)")
    print(f"decode {listed} {corpus}: each utterance with {chosen}, {wall:.1f} s (RTF {wall / seconds:.3f})"
          + (f", {len(capped)} stopped at the guard" if capped else "") + f" -> {out}")
