"""Hotwords (contextual biasing), measured on the terms they are for: B-CER / U-CER / term recall / false alarms on
hand-made rows, the score stage's <model>+hotwords columns and the list scored where it does not apply, each family's
prompt with a context list equal in training and decoding (the list never learned), train.hotwords' per-utterance
lists, decode.hotwords_select's pinyin choice, and decode's second pass beside a plain pass that stays as it was."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from conftest import in_process, params_for

from asrtune import paths
from asrtune.corpus.chatml import Example
from asrtune.evaluation import hotwords
from asrtune.evaluation.scoring import align, biased, false_alarms, term_counts, term_mask, term_tokens

# --- metrics on hand-made rows -------------------------------------------------------------------------------


def _split(ref: str, hyp: str, terms: list[str]):
    b, u = biased(align("u", ref, hyp), term_tokens(terms))
    return (b.n, b.sub, b.dele, b.ins), (u.n, u.sub, u.dele, u.ins)


def test_a_term_split_across_tokens_counts_each_of_its_tokens_to_b():
    # 阿莫西林: four tokens; one wrong is a B-CER of 1/4, the six other tokens are U
    assert _split("病人服用阿莫西林三天", "病人服用阿莫西淋三天", ["阿莫西林"]) == ((4, 1, 0, 0), (6, 0, 0, 0))
    # an insertion between two tokens of the term is the term's; one at its edge is not
    assert _split("病人服用阿莫西林三天", "病人服用阿莫西的林三天", ["阿莫西林"]) == ((4, 0, 0, 1), (6, 0, 0, 0))
    assert _split("病人服用阿莫西林三天", "病人服用阿莫西林的三天", ["阿莫西林"]) == ((4, 0, 0, 0), (6, 0, 0, 1))
    assert _split("病人服用阿莫西林", "", ["阿莫西林"]) == ((4, 0, 4, 0), (4, 0, 4, 0))  # missing: all deletions


def test_an_acronym_term_is_one_word_and_never_part_of_another():
    assert _split("复查ct和pct", "复查city和pct", ["ct"]) == ((1, 1, 0, 0), (4, 0, 0, 0))  # pct is not ct
    found, said = term_counts([("复查ct和pct", "复查city和pct"), ("查pct", "查pct")], ["ct"])
    assert found.tolist() == [0, 0] and said.tolist() == [1, 0]
    assert false_alarms([("复查血常规", "复查ct常规"), ("查pct", "查pct"), ("做ct", "做ct ct")], ["ct"]).tolist() == [1, 0, 1]


def test_overlapping_terms_count_once_where_one_holds_the_other():
    terms = ["d二聚体", "二聚体"]
    # the reference says D二聚体: one term (二聚体 inside it is not a second); the hypothesis' 二聚体 misses it, no false alarm
    found, said = term_counts([("d二聚体升高", "二聚体升高")], terms)
    assert (found.tolist(), said.tolist()) == ([0], [1])
    assert false_alarms([("d二聚体升高", "二聚体升高")], terms).tolist() == [0]
    assert _split("d二聚体升高", "二聚体升高", terms) == ((4, 0, 1, 0), (2, 0, 0, 0))
    # the other way round: 二聚体 found (inside the hypothesis' D二聚体), and D二聚体 a term the reference lacks
    found, said = term_counts([("二聚体升高", "d二聚体升高")], terms)
    assert (found.tolist(), said.tolist()) == ([1], [1])
    assert false_alarms([("二聚体升高", "d二聚体升高")], terms).tolist() == [1]
    assert _split("二聚体升高", "d二聚体升高", terms) == ((3, 0, 0, 0), (2, 0, 0, 1))  # the d before the term: its edge
    # overlapping but neither inside the other: one span; two terms side by side: two
    assert term_mask(list("买了高血压计"), term_tokens(["高血压", "血压计"])) == [-1, -1, 0, 0, 0, 0]
    assert term_mask(list("高血压冠心病"), term_tokens(["高血压", "冠心病"])) == [0, 0, 0, 1, 1, 1]


def _normalized(repo: Path, corpus: str, model: str, pairs: list[tuple[str, str]]) -> None:
    out = repo / paths.normalized_file(model, corpus)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("".join(json.dumps({"key": f"{corpus}-{i:03d}", "ref": r, "hyp": h, "missing": False}, ensure_ascii=False) + "\n"
                           for i, (r, h) in enumerate(pairs)), encoding="utf-8")


def _scored(repo: Path, **overrides) -> dict:
    from asrtune.stages import score

    params_for(repo, repo / "no-model-needed", **overrides)
    in_process(repo, score)
    return json.loads((repo / "metrics/cer.json").read_text(encoding="utf-8"))


def test_score_gives_each_model_with_and_without_the_list_and_scores_the_list_where_it_does_not_apply(tmp_path):
    """medical (its own list): base writes 阿斯匹林 for 阿司匹林, the list fixes it. general (no list of its own): scored
    against decode.hotwords' list; with it, every other utterance gets a term nobody said: 0.5 false alarms each."""
    (tmp_path / "data/hotwords").mkdir(parents=True)
    (tmp_path / "data/hotwords/medical.txt").write_text("阿司匹林\n胸部CT\n", encoding="utf-8")
    (tmp_path / "data/terms.txt").write_text("阿司匹林\n", encoding="utf-8")
    medical = [(f"第{i}次服用阿司匹林", f"第{i}次服用阿斯匹林") for i in range(20)]
    general = [(f"今天天气很好第{i}次", f"今天天气很好第{i}次") for i in range(20)]
    for model in ("base", "merged"):  # no speech: the list makes one clip in four say a term
        _normalized(tmp_path, "nonspeech", model, [("", "")] * 20)
        _normalized(tmp_path, "nonspeech", model + paths.HOTWORDS, [("", "胸部ct" if i % 4 == 0 else "") for i in range(20)])
    nonspeech = {"data.corpora.nonspeech": {"role": "test", "source": "demo/nonspeech.yaml"}}
    for model in ("base", "merged"):
        _normalized(tmp_path, "medical", model, medical)
        _normalized(tmp_path, "medical", model + paths.HOTWORDS, [(r, r) for r, _ in medical])
        _normalized(tmp_path, "general", model, general)
        listed = [(r, h + ("阿司匹林" if i % 2 else "")) for i, (r, h) in enumerate(general)]
        _normalized(tmp_path, "general", model + paths.HOTWORDS, listed)
    plain = _scored(tmp_path, **{"data.corpora.medical.terms": "data/terms.txt"}, **nonspeech)
    assert "base+hotwords" not in plain["cer"]["medical"] and "hotwords_effect" not in plain and "general" not in plain["term_list"]
    m = _scored(tmp_path, **{"data.corpora.medical.terms": "data/terms.txt", "decode.hotwords": "data/hotwords/medical.txt"}, **nonspeech)
    models = ["base", "merged", "base+hotwords", "merged+hotwords"]
    assert list(m["cer"]["medical"]) == models and list(m["b_cer"]["medical"]) == models
    assert m["term_list"] == {"medical": "data/terms.txt", "general": "data/hotwords/medical.txt", "nonspeech": "data/hotwords/medical.txt"}
    # medical: B-CER is the term's 1 token in 4; U-CER none; the list's effect a paired -0.25, exactly on every resample
    assert m["b_cer"]["medical"]["base"] == 0.25 and m["u_cer"]["medical"]["base"] == 0.0 and m["n_term_tokens"]["medical"] == 80
    assert m["b_cer"]["medical"]["base+hotwords"] == 0.0 and m["term_recall"]["medical"]["base+hotwords"] == 1.0
    effect = m["hotwords_effect"]["medical"]["base"]
    assert effect["b_cer"] == -0.25 and effect["b_cer_ci95"] == {"lo": -0.25, "hi": -0.25}
    assert effect["term_recall"] == 1.0 and effect["term_recall_ci95"] == {"lo": 1.0, "hi": 1.0}
    assert effect["cer"] == round(-20 / m["n"]["medical"], 4)
    # general: no term said (recall and B-CER have nothing to count), the list's false alarms with their interval
    assert m["term_recall"]["general"]["base"] is None and m["b_cer"]["general"]["base"] is None
    assert m["b_cer_ci95"]["general"]["base"] is None  # no resample holds a term token: no interval, not 0
    assert m["term_false_alarms"]["general"] == {"base": 0.0, "merged": 0.0, "base+hotwords": 0.5, "merged+hotwords": 0.5}
    ci = m["term_false_alarms_ci95"]["general"]["base+hotwords"]
    assert 0 < ci["lo"] < 0.5 < ci["hi"] < 1
    assert m["hotwords_effect"]["general"]["base"]["term_false_alarms"] == 0.5
    assert m["change"]["general"] == 0.0  # merged - base, as before: the list's columns are beside it
    assert m["term_false_alarms"]["nonspeech"]["merged+hotwords"] == 0.25 and m["hallucination_rate"]["nonspeech"]["base+hotwords"] == 0.25
    rows = (tmp_path / "plots/cer.csv").read_text(encoding="utf-8").splitlines()
    assert "medical / base+hotwords" in "\n".join(rows) and len(rows) == 1 + 2 * 4  # the non-speech set has no CER


# --- the prompt with a context list: one function, training and decoding alike ------------------------------

WORDS = ["阿莫西林", "CT"]
P = SimpleNamespace(model=SimpleNamespace(language="zh", task="transcribe"),
                    decode=SimpleNamespace(num_beams=1, max_tokens_per_second=8.0, no_repeat_ngram_size=0, timestamps=False))


def _clip(seconds: float = 2.0) -> np.ndarray:
    return (np.random.default_rng(0).standard_normal(int(16000 * seconds)) * 0.01).astype(np.float32)


def test_whisper_trains_on_the_prompt_generate_reads_with_a_list(tiny_whisper_dir):
    from asrtune.families import whisper

    model, processor = whisper.load_plain(tiny_whisper_dir), whisper.load_processor(tiny_whisper_dir)
    tok = processor.tokenizer
    item = whisper.item_maker(model, processor, P, context=lambda ex: WORDS)(Example("k", "a.wav", "患者复查CT"), 32000)
    ids, labels = item["decoder_input_ids"], item["labels"]
    head = int((labels == -100).sum()) + 1  # position i predicts labels[i]: the prompt's last token predicts the first word
    seen = []
    hook = model.model.decoder.register_forward_pre_hook(lambda m, a, k: seen.append(k["input_ids"]), with_kwargs=True)
    try:
        whisper.transcribe(model, processor, [], [_clip()], P, [WORDS])
    finally:
        hook.remove()
    assert ids[:head].tolist() == seen[0][0].tolist()  # what generate(prompt_ids=...) put before the transcript
    assert tok.decode(ids[:head]).startswith("<|startofprev|> 阿莫西林，CT<|startoftranscript|><|zh|>")
    assert tok.decode(labels[labels != -100]) == "患者复查CT<|endoftext|>"  # the list is never learned
    assert whisper.prompt_ids(tok, "zh", "transcribe", []) == whisper.prompt_ids(tok, "zh", "transcribe")  # empty: no list


def test_whisper_cuts_a_long_list_to_its_224_prompt_tokens_in_list_order(tiny_whisper_dir):
    from asrtune.families import whisper
    from asrtune.families.shared import WHISPER_CONTEXT_TOKENS

    tok = whisper.load_processor(tiny_whisper_dir).tokenizer
    terms = [f"第{i}种药" for i in range(200)]
    ids = whisper.context_ids(tok, terms)
    assert len(ids) <= WHISPER_CONTEXT_TOKENS and ids == whisper.context_ids(tok, terms)
    kept = tok.decode(ids[1:]).strip().split("，")
    assert kept == terms[: len(kept)] and 0 < len(kept) < len(terms)  # the first terms, in list order
    longer = [1, *tok(" " + "，".join(terms[: len(kept) + 1]), add_special_tokens=False)["input_ids"]]
    assert len(longer) > WHISPER_CONTEXT_TOKENS  # one term more would not fit


def test_ctranslate2_sends_the_transformers_prompt_with_a_list(tiny_whisper_dir, tmp_path):
    pytest.importorskip("ctranslate2")
    from asrtune.families import whisper
    from asrtune.weights.ct2_engine import Engine, convert

    convert(tiny_whisper_dir, tmp_path / "ct2", "float32")
    engine, tok = Engine(tmp_path / "ct2"), whisper.load_processor(tiny_whisper_dir).tokenizer
    long = [f"第{i}种药" for i in range(200)]
    for words in (None, WORDS, long):
        assert engine.prompt("zh", "transcribe", words) == whisper.prompt_ids(tok, "zh", "transcribe", words)
    texts = engine.transcribe([_clip(), _clip(1.0)], P, [long, None])
    assert len(texts) == 2  # a 227-token prompt still leaves room to generate


@pytest.mark.parametrize("arch", ["fun_asr_nano", "qwen3_asr"])
def test_audio_llms_train_on_the_prompt_decode_sends_with_a_list(arch, request):
    from asrtune.families import audiollm

    source = request.getfixturevalue("tiny_fun_asr_dir" if arch == "fun_asr_nano" else "tiny_qwen3_asr_dir")
    model, processor = audiollm.load_plain(source), audiollm.load_processor(source)
    tok, audio = processor.tokenizer, _clip()
    make = audiollm.item_maker(model, processor, P, context=lambda ex: WORDS if ex.key == "listed" else [])
    item = make(Example("listed", "a.wav", "患者复查CT"), len(audio))
    ids, labels = item["input_ids"], item["labels"]
    head = int((labels == -100).sum())
    inputs, prompt = audiollm.generation_inputs(model, processor, [audio, audio], "zh", [WORDS, None])
    rows = [r[m.bool()].tolist() for r, m in zip(inputs["input_ids"], inputs["attention_mask"])]
    assert ids[:head].tolist() == rows[0]  # decode's prompt with the list, per clip in a batch
    assert rows[1] == list(audiollm.Prompt(processor, "zh").ids(len(audio)))  # the other clip's, without
    text = tok.decode(ids[:head])
    assert ("热词列表：[阿莫西林, CT]" if arch == "fun_asr_nano" else "阿莫西林，CT") in text
    assert tok.decode(ids[labels != -100]) == "患者复查CT<|im_end|>"  # the list is never learned
    plain = audiollm.item_maker(model, processor, P)(Example("k", "a.wav", "患者复查CT"), len(audio))
    assert torch.equal(make(Example("k", "a.wav", "患者复查CT"), len(audio))["input_ids"], plain["input_ids"])  # empty list


# --- train.hotwords' lists, decode.hotwords_select's choice ---------------------------------------------------

TERMS = ["阿莫西林", "布洛芬", "CT", "二甲双胍", "胰岛素", "华法林", "呋塞米", "甲硝唑"]


def test_training_lists_hold_the_said_terms_and_distractors_seeded_per_utterance():
    ex = Example("medical-001", "a.wav", "患者服用阿莫西林后复查CT")
    lists = hotwords.Sampler(TERMS, 3, 0.0, 0.0, 0)
    words = lists(ex)
    assert words == lists(ex) == hotwords.Sampler(TERMS, 3, 0.0, 0.0, 0)(ex)  # the same in every call and process
    assert {"阿莫西林", "CT"} <= set(words) and len(words) == 5 == len(set(words))  # the said terms + 3 distractors
    assert words != hotwords.Sampler(TERMS, 3, 0.0, 0.0, 1)(ex)  # another seed, another list
    assert not {"阿莫西林", "CT"} & set(hotwords.Sampler(TERMS, 3, 1.0, 0.0, 0)(ex))  # drop 1: the said terms never listed
    assert hotwords.Sampler(TERMS, 3, 0.0, 1.0, 0)(ex) == []  # empty 1: no list
    shares = [bool(hotwords.Sampler(TERMS, 2, 0.0, 0.3, 0)(Example(f"k{i}", "a.wav", "好"))) for i in range(1000)]
    assert 0.62 < np.mean(shares) < 0.78  # a share `empty` of the utterances gets no list


def test_near_distractors_are_the_sound_alikes_of_the_transcript_and_the_rest_random():
    terms = TERMS + ["肌酐", "记账本"]  # 肌酐 ji gan sounds like 记账 ji zhang; 记账本 is said only in part
    ex = Example("general-007", "a.wav", "我下载了一个记账的app")
    words = hotwords.Sampler(terms, 3, 0.0, 0.0, 0, near=2)(ex)
    assert len(words) == 3 == len(set(words)) and {"记账本", "肌酐"} <= set(words)  # the two closest, one drawn at random
    assert hotwords.Sampler(terms, 1, 0.0, 0.0, 0, near=5)(ex) == ["记账本"]  # near never exceeds distractors
    plain = [hotwords.Sampler(terms, 3, 0.0, 0.0, 0)(Example(f"k{i}", "a.wav", "我下载了一个记账的app")) for i in range(200)]
    assert 0.1 < np.mean(["肌酐" in w for w in plain]) < 0.6  # without near, a sound-alike is only drawn by chance


def test_a_near_homophone_in_the_first_pass_selects_the_true_term():
    terms = ["阿司匹林", "莫沙必利", "阿莫西林", "CT", "西地兰"]
    assert hotwords.closest(terms, "病人服用阿莫西琳三天", 1) == ["阿莫西林"]  # 琳 lin for 林 lin
    assert hotwords.closest(terms, "病人服用阿莫溪林三天", 1) == ["阿莫西林"]  # 溪 xi for 西 xi
    assert hotwords.closest(terms, "复查ct", 1) == ["CT"]
    lists = hotwords.for_decoding(terms, 2, {"a": "服用阿莫西琳\t[[\"服\", 0.1, 0.2]]", "b": ""})
    assert lists["a"][0] == "阿莫西林" and len(lists["b"]) == 2  # times after the tab left out; nothing heard: list order
    assert hotwords.for_decoding(terms, None, {"a": "x"}) == {"a": terms} == hotwords.for_decoding(terms, 9, {"a": "x"})


def test_a_distance_bound_keeps_what_was_nearly_heard_and_nothing_else():
    terms = ["阿司匹林", "莫沙必利", "阿莫西林", "CT", "西地兰"]
    near = hotwords.for_decoding(terms, 3, {"med": "病人服用阿莫西琳三天", "weather": "明天下午有雷阵雨"}, 0.3)
    assert near["med"] == ["阿莫西林"] and near["weather"] == []  # general speech: the plain prompt
    assert hotwords.for_decoding(terms, None, {"med": "病人服用阿莫西琳三天"}, 0.3) == {"med": ["阿莫西林"]}  # no select
    assert hotwords.for_decoding(terms, 3, {"med": "病人服用阿莫西琳三天"}, 1.0)["med"] == hotwords.closest(terms, "病人服用阿莫西琳三天", 3)
    assert hotwords.needs_first_pass(terms, None, 0.5) and not hotwords.needs_first_pass(terms, None, None)
    assert hotwords.needs_first_pass(terms, None, None, 2.0)  # the bonus compares with the first pass


def test_training_with_lists_checks_its_params():
    from asrtune.errors import UserError
    from asrtune.stages import finetune

    def p(**h):
        return SimpleNamespace(train=SimpleNamespace(hotwords=SimpleNamespace(**{"enabled": True, "terms": None, "distractors": 2,
                                                                                "drop": 0.2, "empty": 0.2, "seed": 0, **h})))

    assert finetune.context_lists(p(enabled=False), "whisper") is None
    with pytest.raises(UserError, match="aligner"):
        finetune.context_lists(p(terms="x.txt"), "aligner")
    with pytest.raises(UserError, match="train.hotwords.terms: .*not found"):
        finetune.context_lists(p(terms="missing.txt"), "whisper")
    from asrtune.params import TrainHotwords

    with pytest.raises(ValueError, match="set train.hotwords.terms"):
        TrainHotwords(enabled=True)


# --- decode's second pass ------------------------------------------------------------------------------------


def test_decode_adds_a_pass_with_the_list_and_leaves_the_plain_one_as_it_was(data_repo, tiny_whisper_dir, tmp_path, monkeypatch):
    from asrtune.families import whisper
    from asrtune.stages import decode, normalize

    scores, real_score = [], whisper.score

    outputs = {}
    listed_params = {"decode.hotwords": "data/hotwords/medical.txt", "decode.hotwords_select": 3}
    for name, overrides in (("plain", {}), ("listed", listed_params), ("bounded", {**listed_params, "decode.hotwords_max_distance": 0.0}),
                            ("checked", {**listed_params, "decode.hotwords_max_distance": None, "decode.hotwords_bonus": 0.0})):
        repo = tmp_path / name
        shutil.copytree(data_repo, repo, ignore=shutil.ignore_patterns(".cache", "finetune", "plots", "mix"))
        shutil.copytree(Path(__file__).resolve().parents[1] / "data/hotwords", repo / "data/hotwords")
        params_for(repo, tiny_whisper_dir, **overrides)
        if name == "checked":  # the random model hears no term: count every second pass as gaining one, so each is scored
            monkeypatch.setattr(hotwords, "gained", lambda terms, first, second: 1)
            monkeypatch.setattr(whisper, "score", lambda m, proc, audio, texts, p, **k: scores.append(
                (texts, real_score(m, proc, audio, texts, p, **k))) or scores[-1][1])
        said = in_process(repo, decode, "base", "medical")
        in_process(repo, normalize, "base", "medical")
        files = (paths.decode_file("base", "medical"), paths.decode_file("base+hotwords", "medical"), paths.capped_file("base", "medical"),
                 paths.capped_file("base+hotwords", "medical"), paths.normalized_file("base+hotwords", "medical"))
        outputs[name] = {f: (repo / f).read_bytes() for f in files}
        outputs[name]["said"] = said
    plain, listed = outputs["plain"], outputs["listed"]
    assert plain[paths.decode_file("base", "medical")] == listed[paths.decode_file("base", "medical")]  # the plain pass: as before
    assert plain[paths.decode_file("base+hotwords", "medical")] == b"" == plain[paths.normalized_file("base+hotwords", "medical")]
    keys = [line.split("\t")[0] for line in listed[paths.decode_file("base+hotwords", "medical")].decode().splitlines()]
    assert keys == [line.split("\t")[0] for line in listed[paths.decode_file("base", "medical")].decode().splitlines()]
    assert len(listed[paths.normalized_file("base+hotwords", "medical")].decode().splitlines()) == len(keys)
    assert "the 3 of 96 terms closest to its first pass" in listed["said"]
    # the tiny random model hears no term: with the bound 0, every utterance gets the plain prompt, the plain pass's output
    bounded = outputs["bounded"]
    assert f"within pinyin distance 0 of it (0.0 terms on average, {len(keys)} utterances with none, which keep the plain pass)" in bounded["said"]
    assert bounded[paths.decode_file("base+hotwords", "medical")] == bounded[paths.decode_file("base", "medical")]
    assert bounded[paths.capped_file("base+hotwords", "medical")] == bounded[paths.capped_file("base", "medical")]
    # the bonus's check, every second pass counted as gaining a term so that each is scored through the family: each
    # utterance keeps its second pass or, where sent back, its first, as the stage says
    checked = outputs["checked"]
    pairs = [(texts[i : i + 2], values[i : i + 2]) for texts, values in scores for i in range(0, len(texts), 2)]
    assert len(pairs) == len(keys) and np.isfinite([v for _, v in pairs]).all()
    # where the list changed nothing, the two transcripts, scored side by side in one batch, score the same
    same = [v for t, v in pairs if t[0] == t[1]]
    assert all(a == pytest.approx(b, rel=1e-5) for a, b in same)
    sent_back = re.search(r"as context; (\d+) transcripts? sent back to the plain pass \(gained terms the model finds too unlikely "
                          r"without the list, bonus 0 nats a term token, or a loop the list caused\)", checked["said"])
    assert sent_back is not None
    # bonus 0: sent back exactly where the plain prompt scores the second pass lower, and then its first pass is written
    assert int(sent_back.group(1)) == sum(v[1] < v[0] for _, v in pairs)
    written = {line.split("\t")[1] for line in checked[paths.decode_file("base+hotwords", "medical")].decode().splitlines()}
    assert written == {t[1] if v[1] >= v[0] else t[0] for t, v in pairs}


def test_finetune_trains_with_context_lists_in_its_prompts(data_repo, tiny_whisper_dir, tmp_path):
    """train.hotwords through the stage: the lists the run trains on are the sampler's, in the prompt, never learned."""
    from asrtune.stages import finetune
    from asrtune.train import hf_trainer

    repo = tmp_path / "repo"
    shutil.copytree(data_repo, repo, ignore=shutil.ignore_patterns(".cache", "finetune", "plots"))
    shutil.copytree(Path(__file__).resolve().parents[1] / "data/hotwords", repo / "data/hotwords")
    params_for(repo, tiny_whisper_dir, **{"train.hotwords": {"enabled": True, "terms": "data/hotwords/medical.txt", "distractors": 4}})
    items = []
    original = hf_trainer.SpeechDataset.__getitem__

    def spy(self, i):
        items.append(original(self, i))
        return items[-1]

    hf_trainer.SpeechDataset.__getitem__ = spy
    try:
        said = in_process(repo, finetune, "s1")
    finally:
        hf_trainer.SpeechDataset.__getitem__ = original
    assert "context list from the 96 terms of data/hotwords/medical.txt" in said and (repo / "models/finetune/s1").is_dir()
    prev = 50361  # <|startofprev|>
    listed = [it for it in items if it["decoder_input_ids"][0] == prev]
    assert 0 < len(listed) < len(items)  # train.hotwords.empty: some prompts without a list
    for it in listed:
        sot = it["decoder_input_ids"].tolist().index(50258)  # <|startoftranscript|>
        assert (it["labels"][:sot + 3] == -100).all()  # the list and the task tokens never learned


def test_the_list_pass_decodes_again_only_the_utterances_that_get_a_list():
    from asrtune.corpus.chatml import Example
    from asrtune.stages.decode import list_pass

    seen = []

    def transcribe(batch, audio, contexts=None):
        seen.append([(e.key, tuple(c)) for e, c in zip(batch, contexts)])
        return [f"with {','.join(c)}" for c in contexts]

    items = [Example(key=k, audio="", text="") for k in "abcd"]
    audio = {k: np.zeros(160 * (i + 1), np.float32) for i, k in enumerate("abcd")}
    contexts = {"a": ["布洛芬"], "b": [], "c": ["CT", "血常规"], "d": []}
    first = {k: f"first {k}" for k in "abcd"}
    capped: set[str] = set()
    hyps = list_pass(transcribe, items, audio, 16, "test", contexts, first, {"b", "c"}, capped)
    assert hyps == {"a": "with 布洛芬", "b": "first b", "c": "with CT,血常规", "d": "first d"}
    assert sorted(k for batch in seen for k, _ in batch) == ["a", "c"]  # b and d: no list, no second decode
    assert capped == {"b"}  # b keeps its first-pass mark; c was decoded again (and this one did not stop at the guard)


# --- decode.hotwords_bonus: a gained term must be supported by the audio ------------------------------------


def test_gained_counts_the_term_tokens_the_second_pass_added():
    terms = ["阿莫西林", "CT", "二聚体", "D二聚体", "肌酐"]
    assert hotwords.gained(terms, "我下载了一个记仗的APP", "我下载了一个肌酐的APP") == 2  # a sound-alike put in: 2 tokens
    assert hotwords.gained(terms, "服用阿莫西琳三天", "服用阿莫西林三天") == 4  # the term split across tokens: all four
    assert hotwords.gained(terms, "服用阿莫西林三天", "服用阿莫西林两天") == 0  # the first pass had it already
    assert hotwords.gained(terms, "做个 cat 吧", "做个CT吧") == 1  # an English acronym: one word
    assert hotwords.gained(terms, "做个 ct 吧", "做个CT吧") == 0  # case aside, the first pass had it
    assert hotwords.gained(terms, "做个 cat 吧", "the ACT") == 0  # never part of another word
    assert hotwords.gained(terms, "查二聚体", "查D二聚体") == 4  # overlapping terms: the longer one gained (as score counts a false alarm)
    assert hotwords.gained(terms, "查", "查D二聚体") == 4  # its 二聚体 inside is not one more
    assert hotwords.gained(terms, "肌酐 肌酐", "肌酐") == 0  # fewer occurrences gain nothing
    assert hotwords.gained(terms, "", "肌酐和CT") == 3


def test_keeps_weighs_the_log_probabilities_with_the_bonus_per_gained_token():
    assert hotwords.keeps(2.0, 2, -14.0, -10.0)  # 4 nats less likely, 2 x 2 bonus: a tie stands
    assert not hotwords.keeps(2.0, 2, -14.5, -10.0)
    assert not hotwords.keeps(0.0, 4, -10.1, -10.0)  # bonus 0: only what the plain model prefers
    assert hotwords.keeps(0.0, 4, -9.0, -10.0)


def _loss_sum(model, **inputs) -> float:
    """transformers' own loss (mean cross-entropy over the labels) times the labels: a row's negative log-probability."""
    out = model(**inputs)
    return -float(out.loss) * int((inputs["labels"] != -100).sum())


def test_whisper_score_is_the_models_own_log_probability_of_the_transcript_alone_or_batched(tiny_whisper_dir):
    from types import SimpleNamespace

    from asrtune.families import whisper

    model, processor = whisper.load_plain(tiny_whisper_dir).eval(), whisper.load_processor(tiny_whisper_dir)
    p = SimpleNamespace(model=SimpleNamespace(language="zh", task="transcribe"))
    rng = np.random.default_rng(0)
    audio = [rng.standard_normal(16000 * s).astype(np.float32) * 0.1 for s in (1, 3)]
    texts = ["服用阿莫西林三天", "肌酐"]
    together = whisper.score(model, processor, audio, texts, p)
    tok = processor.tokenizer
    for clip, text, got in zip(audio, texts, together):
        ids, labels = whisper.decoder_sequences(tok, text, whisper.prompt_ids(tok, "zh", "transcribe"))
        with torch.no_grad():
            want = _loss_sum(model, input_features=whisper.features(processor, [clip]), decoder_input_ids=torch.tensor([ids]),
                             labels=torch.tensor([labels]))
        assert got == pytest.approx(want, rel=1e-4)
        assert whisper.score(model, processor, [clip], [text], p)[0] == pytest.approx(got, rel=1e-5)  # padding changes nothing
    # one clip given twice (decode's pairs) is encoded once, to the same scores; a loop past the decoder's 448 positions: -inf
    encoded = []

    def encode(feats):
        encoded.append(len(feats))
        return model.get_encoder()(input_features=feats).last_hidden_state

    twice = whisper.score(model, processor, [audio[1], audio[1], audio[0], audio[0]], [texts[1], "肌酐" * 300, texts[0], texts[0]], p, encode)
    assert encoded == [2]
    assert twice[0] == pytest.approx(together[1], rel=1e-5) and twice[1] == float("-inf")
    assert twice[2] == twice[3] == pytest.approx(together[0], rel=1e-5)


@pytest.mark.parametrize("arch,language", [("fun_asr_nano", None), ("qwen3_asr", None), ("qwen3_asr", "zh")])
def test_audiollm_score_is_the_models_own_log_probability_of_the_transcript(arch, language, tiny_fun_asr_dir, tiny_qwen3_asr_dir):
    from types import SimpleNamespace

    from asrtune.families import audiollm

    path = tiny_fun_asr_dir if arch == "fun_asr_nano" else tiny_qwen3_asr_dir
    model, processor = audiollm.load_plain(path).eval(), audiollm.load_processor(path)
    p = SimpleNamespace(model=SimpleNamespace(language=language))
    rng = np.random.default_rng(1)
    audio = [rng.standard_normal(int(16000 * s)).astype(np.float32) * 0.1 for s in (1.0, 2.5)]
    texts = ["今天天气很好", "CT"]
    together = audiollm.score(model, processor, audio, texts, p)
    make = audiollm.item_maker(model, processor, p)
    for clip, text, got in zip(audio, texts, together):
        item = make(Example(key="k", audio="", text=text), len(clip))
        item["input_features"] = audiollm.features(processor, [clip])[0]
        inputs = audiollm.collator(model, processor)([item])
        labels = inputs.pop("labels")
        with torch.no_grad():
            logits = model(**inputs).logits[0, :-1]
        learned = labels[0, 1:] != -100
        want = torch.log_softmax(logits.float(), -1)[learned].gather(-1, labels[0, 1:][learned][:, None]).sum()
        assert got == pytest.approx(float(want), rel=1e-4)
        assert audiollm.score(model, processor, [clip], [text], p)[0] == pytest.approx(got, rel=1e-4)
    # an empty transcript (Qwen3-ASR naming the language itself: after `language None`, what it writes for no speech)
    empty = audiollm.score(model, processor, audio, ["", texts[1]], p)
    assert np.isfinite(empty[0]) and empty[1] == pytest.approx(together[1], rel=1e-4)


def test_the_bonus_sends_back_a_gained_term_the_audio_does_not_support():
    from asrtune.stages.decode import list_pass, refused_changes

    scored = []

    def transcribe(batch, audio, contexts=None):
        return [{"a": "服用阿莫西林", "b": "我下载了一个肌酐的APP", "c": "今天很好"}[e.key] for e in batch]

    def score(audio, texts):  # the plain model: the first passes, and a's term, are likely; b's sound-alike is not
        scored.append(texts)
        return [{"服用阿莫西琳": -10.0, "服用阿莫西林": -12.0, "我下载了一个记仗的APP": -20.0, "我下载了一个肌酐的APP": -30.0,
                 "今天好": -5.0, "今天很好": -5.5}[t] for t in texts]

    transcribe.score = score
    items = [Example(key=k, audio="", text="") for k in "abcd"]
    audio = {k: np.zeros(1600, np.float32) for k in "abcd"}
    contexts = {"a": ["阿莫西林"], "b": ["肌酐"], "c": ["CT"], "d": []}
    first = {"a": "服用阿莫西琳", "b": "我下载了一个记仗的APP\t[]", "c": "今天好", "d": "d"}
    terms = ["阿莫西林", "肌酐", "CT"]
    capped, reverted = {"b"}, set()
    hyps = list_pass(transcribe, items, audio, 16, "test", contexts, first, {"b"}, capped, 2.0, terms, reverted)
    # a: 2 nats less likely, 4 gained tokens x 2: stands; b: 10 less likely, 2 x 2: the first pass again, with its mark;
    # c gained no term: not checked; d got no list: neither decoded again nor scored
    assert hyps == {"a": "服用阿莫西林", "b": "我下载了一个记仗的APP\t[]", "c": "今天很好", "d": "d"}
    assert reverted == {"b"} and capped == {"b"}
    assert sorted(t for texts in scored for t in texts) == sorted(["服用阿莫西琳", "服用阿莫西林", "我下载了一个记仗的APP", "我下载了一个肌酐的APP"])
    # every_change: c too, with no bonus (0.5 nats less likely is too much)
    assert refused_changes(transcribe, items[:3], audio, 16, first, hyps, 2.0, terms, every_change=True) == ["c"]  # b: the same now
    assert refused_changes(transcribe, items[:3], audio, 16, first, {**hyps, "b": "我下载了一个肌酐的APP"}, 2.0, terms, True) == ["b", "c"]
    assert list_pass(transcribe, items, audio, 16, "test", contexts, first, set(), None, 0.4, terms)["a"] == "服用阿莫西琳"  # 2 > 4 x 0.4


def test_the_bonus_sends_back_a_second_pass_that_loops_where_the_first_did_not():
    """A second pass stopped at the guard where the first was not: sent back unscored, its mark with it; a first pass
    that stopped there keeps its mark when it comes back."""
    from asrtune.stages.decode import Guard, list_pass

    guard, scored = Guard(), []

    def transcribe(batch, audio, contexts=None):
        guard.rows = [e.key in ("a", "b") for e in batch]  # both second passes loop
        return [{"a": "阿莫西林阿莫西林阿莫西林", "b": "阿莫西林阿莫西林", "c": "布洛芬"}[e.key] for e in batch]

    def score(audio, texts):
        scored.extend(texts)
        return [0.0] * len(texts)  # the plain model vouches for everything scored

    transcribe.guard, transcribe.score = guard, score
    items = [Example(key=k, audio="", text="") for k in "abc"]
    audio = {k: np.zeros(1600, np.float32) for k in "abc"}
    contexts = {k: ["阿莫西林", "布洛芬"] for k in "abc"}
    first = {"a": "阿莫西琳", "b": "阿莫西琳阿莫西琳阿莫西琳", "c": "不落复"}
    capped, reverted = set(), set()
    hyps = list_pass(transcribe, items, audio, 16, "test", contexts, first, {"b"}, capped, 2.0, ["阿莫西林", "布洛芬"], reverted)
    assert hyps == {"a": "阿莫西琳", "b": "阿莫西林阿莫西林", "c": "布洛芬"}  # a: a loop the list caused; b looped before
    assert reverted == {"a"} and capped == {"b"}  # a's second-pass mark went with it
    assert "阿莫西林阿莫西林阿莫西林" not in scored and "布洛芬" in scored  # a was never scored
    # without the bonus nothing is checked: every second pass stands, with its mark
    capped = set()
    assert list_pass(transcribe, items, audio, 16, "test", contexts, first, {"b"}, capped)["a"] == "阿莫西林阿莫西林阿莫西林"
    assert capped == {"a", "b"}
    # a second pass that is sent back (b here, its score too low) takes its first pass's mark back: none for c
    first_capped_c = set()
    score_low = lambda audio, texts: [0.0 if t == first.get("c") else -100.0 for t in texts]  # noqa: E731
    transcribe.score = score_low
    capped = set()
    hyps = list_pass(transcribe, items[2:], audio, 16, "test", contexts, first, first_capped_c, capped, 2.0, ["阿莫西林", "布洛芬"])
    assert hyps == {"c": "不落复"} and capped == set()


def test_the_ctranslate2_engine_scores_with_the_same_weights_through_transformers(tiny_whisper_dir, tmp_path):
    pytest.importorskip("ctranslate2")
    from asrtune import params
    from asrtune.stages.decode import transcriber
    from asrtune.weights.ct2_engine import convert

    convert(tiny_whisper_dir, tmp_path / "ct2", "float32")
    params_for(tmp_path, tiny_whisper_dir, **{"decode.engine": "ctranslate2"})
    p = params.load(tmp_path / "params.yaml")
    ct2, runtime = transcriber(p, tiny_whisper_dir, tmp_path / "ct2")
    hf, _ = transcriber(p.model_copy(update={"decode": p.decode.model_copy(update={"engine": "transformers"})}), tiny_whisper_dir, None)
    clips, texts = [_clip(), _clip(1.0)], ["服用阿莫西林", "CT"]
    assert runtime.startswith("ctranslate2") and ct2.score(clips, texts) == pytest.approx(hf.score(clips, texts))


def test_scores_under_a_bf16_autocast_are_finite_and_near_float32(tiny_whisper_dir, tmp_path):
    """The precision a GPU decodes in (bf16 autocast over float32 weights), run here on the CPU: the check's scores."""
    from asrtune import params
    from asrtune.stages.decode import transcriber

    got = {}
    for precision in ("fp32", "bf16"):
        params_for(tmp_path, tiny_whisper_dir, **{"model.precision": precision})
        run, runtime = transcriber(params.load(tmp_path / "params.yaml"), tiny_whisper_dir, None)
        got[precision] = run.score([_clip(), _clip(1.0)], ["服用阿莫西林", "CT"])
    assert "bfloat16 autocast" in runtime and np.isfinite(got["bf16"]).all()
    assert got["bf16"] == pytest.approx(got["fp32"], rel=0.05)
