"""Normalization and scoring on hand-computed mixed Chinese/English examples."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pytest

from asrtune.errors import UserError
from asrtune.evaluation.normalization import normalize, tokens
from asrtune.params import Normalize
from asrtune.evaluation.scoring import (Counts, align, bootstrap_rates, by_language, interval95, language, report,
                             resample_rates, resample_seed, significant, term_counts, term_recall, wer_line)
from asrtune.evaluation.terms import read_terms

ALL = Normalize()


@pytest.mark.parametrize("text, expected", [
    ("醫生說這個藥每天吃三次", "医生说这个药每天吃3次"),            # traditional -> simplified, numbers -> digits
    ("ＣＴ檢查，ＯＫ！", "ct检查 ok"),                               # full-width letters and punctuation
    ("一百二十三个人", "123个人"),
    ("Hello World, I'm FINE.", "hello world i m fine"),            # English: Whisper's basic normalizer, lower case
    ("患者主诉：胸闷。", "患者主诉 胸闷"),                            # Chinese punctuation removed
    ("  多个   空格 ", "多个 空格"),
    ("三百二十毫克", "320毫克"),                                    # real numbers still convert
    ("百分之五", "5"),                                               # 5%, then punctuation removal
    ("二零二四年", "2024年"),
    ("血钾二点九", "血钾2 9"),                                        # 2.9, whose point punctuation removal drops
    ("三到五天", "3到5天"),                                          # a range: both ends
    ("周六上午十点", "周六上午10点"),
])
def test_normalization_cases(text, expected):
    assert normalize(text, ALL) == expected


@pytest.mark.parametrize("word", ["一起", "统一", "星期一", "一样", "一些", "一直", "一般", "一下", "慢一点", "同一类",
                                  "进一步", "二甲双胍", "二氧化碳", "甘油三酯", "零钱", "半小时", "三四天", "周一三五", "万一", "十分好"])
def test_numerals_inside_words_stay_chinese(word):
    """cn2an rewrote these (一起 -> 1起, 二甲双胍 -> 2甲双胍, 半小时 -> 0.5小时, 三四天 -> 34天): no recognizer
    writes them so, and their characters left cer_by_language.zh."""
    assert normalize(word, ALL) == word


@pytest.mark.parametrize("text", ["体温二十零度", "血压一百十十零", "他说三十零次", "十六十五"])
def test_a_numeral_run_that_is_no_number_stays_as_written(text):
    """A recognizer's garbled numerals (the long-form demo's base model wrote 十六十五): cn2an raised a KeyError on
    them, which crashed longform; they are no number, so they stay Chinese and are scored as such."""
    assert normalize(text, ALL) == text


@pytest.mark.parametrize("a, b, expected", [
    ("D二聚体升高", "D-二聚体升高", ["d", "二", "聚", "体", "升", "高"]),   # a hyphen costs nothing
    ("复查CT一次", "复查CT，一次", ["复", "查", "ct", "1", "次"]),         # nor a comma: 一次 counts, ct1 splits
])
def test_punctuation_between_letters_and_numerals_changes_no_token(a, b, expected):
    assert tokens(normalize(a, ALL)) == tokens(normalize(b, ALL)) == expected
    assert tokens(normalize(b, ALL)) == tokens(normalize(a, ALL))
    assert align("u", normalize(a, ALL), normalize(b, ALL)).counts.errors == 0


def test_a_term_is_found_whatever_the_hyphen():
    pairs = [(normalize("D二聚体升高", ALL), normalize("D-二聚体升高", ALL)), (normalize("D-二聚体阴性", ALL), normalize("D二聚体阴性", ALL))]
    assert term_recall(pairs, [normalize("D二聚体", ALL)]) == (2, 2)


def test_numerals_inside_words_count_as_chinese():
    langs = by_language(align("u", normalize("我们一起去统一办", ALL), normalize("我们一起去统一办", ALL)))
    assert (langs["zh"].n, langs["other"].n) == (8, 0)
    assert tokens(normalize("三", ALL)) == ["3"]  # a numeral alone (a timed unit) is a number, as 三次 in its transcript


def test_lowercase_is_its_own_switch():
    from transformers.models.whisper.english_normalizer import BasicTextNormalizer

    keep_case = Normalize(lowercase=False)
    assert normalize("Hello, World! (aside) 你好。", keep_case) == "Hello World 你好"
    for text in ("Hello, World! [noise] 你好。", "CT 检查：Dr. Li's <unk> report", "naïve café, 1,000 mg"):
        assert normalize(text, Normalize(numbers_to_arabic=False, fullwidth_to_halfwidth=False, traditional_to_simplified=False)) == \
            " ".join(BasicTextNormalizer()(text).split())  # with lowercase on, exactly Whisper's basic normalizer


def test_each_normalization_can_be_turned_off():
    off = Normalize(traditional_to_simplified=False, numbers_to_arabic=False, remove_punctuation=False,
                    lowercase=False, fullwidth_to_halfwidth=False)
    assert normalize("醫生說，三次 OK", off) == "醫生說，三次 OK"
    assert normalize("三次", Normalize(numbers_to_arabic=False)) == "三次"
    assert normalize("English words stay", ALL) == "english words stay"  # numbers_to_arabic leaves English alone


def test_tokens_are_chinese_characters_and_english_words():
    assert tokens("做胸部ct检查 hello world 3次") == ["做", "胸", "部", "ct", "检", "查", "hello", "world", "3", "次"]


def test_mixed_chinese_english_counts_by_hand():
    # ref: 我 们 去 做 ct 检 查 (7 tokens); hyp: 我 门 去 做 city 检 查 吧
    u = align("u1", "我们去做ct检查", "我门去做 city 检查吧")
    assert (u.counts.n, u.counts.sub, u.counts.dele, u.counts.ins) == (7, 2, 0, 1)
    assert u.counts.rate == pytest.approx(3 / 7)
    assert u.ref == ["我", "们", "去", "做", "ct", "检", "查", "***"]
    assert u.hyp == ["我", "门", "去", "做", "city", "检", "查", "吧"]


def test_spaces_never_count():
    assert align("u", "今天 天气", "今天天气").counts.errors == 0


def test_missing_hypothesis_is_all_deletions_and_empty_reference_all_insertions():
    missing = align("u", "你好世界", "", missing=True)
    assert (missing.counts.dele, missing.counts.n, missing.counts.sentence_errors) == (4, 4, 1)
    extra = align("v", "", "多余")
    assert (extra.counts.ins, extra.counts.n) == (2, 0)


def test_kaldi_style_report():
    utts = [align("a", "今天天气很好", "今天天气很好"), align("b", "我们去 CT 室", "我们去室")]
    total = Counts()
    for u in utts:
        total.add(u.counts)
    assert wer_line(total) == "%WER 9.09 [ 1 / 11, 0 ins, 1 del, 0 sub ]"  # 6 + 5 tokens, 1 deleted
    text = report(utts, total, "title")
    assert "%SER 50.00 [ 1 / 2 ]" in text
    assert "REF: 我 们 去 CT  室\nHYP: 我 们 去 *** 室\n%WER 20.00 [ 1 / 5, 0 ins, 1 del, 0 sub ]" in text


def test_term_recall_counts_occurrences_clipped_per_utterance():
    pairs = [("患者有高血压 服用阿司匹林", "患者有高血压 服用阿斯匹林"),  # 1 of 2
             ("高血压 高血压", "高血压"),                                   # 1 of 2: clipped
             ("胸部ct检查", "胸部ct检查")]                                   # 1 of 1
    assert term_recall(pairs, ["高血压", "阿司匹林", "胸部ct"]) == (3, 5)


def test_errors_split_by_language_on_a_mixed_sentence():
    # REF: 请 你 做 ct   检 查 *** now
    # HYP: 请 *** 做 city 检 查 吧  ok
    u = align("u", "请你做ct检查 now", "请做 city 检查吧 ok")
    assert u.ref == ["请", "你", "做", "ct", "检", "查", "***", "now"]
    langs = by_language(u)
    zh, en = langs["zh"], langs["en"]
    assert (zh.n, zh.sub, zh.dele, zh.ins) == (5, 0, 1, 1)   # 你 deleted (a Chinese reference token), 吧 inserted (a Chinese hypothesis token)
    assert (en.n, en.sub, en.dele, en.ins) == (2, 2, 0, 0)   # ct->city, now->ok: English reference tokens
    assert zh.errors + en.errors == u.counts.errors and zh.n + en.n == u.counts.n
    assert (zh.rate, en.rate) == (2 / 5, 1.0)
    assert (language("检"), language("ct"), language("3"), language("3d")) == ("zh", "en", "other", "en")


def test_term_counts_per_utterance_give_recall_and_its_interval_by_hand():
    """Two utterances with one term each, the first found, the second missed. The four resamples of two
    have recall 1, 1/2, 1/2, 0 (pooled as the CER is): 1 - the miss rate on the same resamples."""
    found, total = term_counts([("服用阿司匹林", "服用阿司匹林"), ("复查胸部ct", "复查胸部city")], ["阿司匹林", "胸部ct"])
    assert found.tolist() == [1, 0] and total.tolist() == [1, 1]
    recall = 1 - resample_rates(total - found, total, np.array([[0, 0], [0, 1], [1, 0], [1, 1]]))[0]
    assert recall.tolist() == [1.0, 0.5, 0.5, 0.0]
    assert interval95(recall) == (round(0.075 * 0.5, 4), round(1 - 0.075 * 0.5, 4))  # positions 0.075 and 2.925 of 3


def test_a_resample_rate_pools_errors_over_tokens():
    """Two utterances: 1 error in 1 token, 0 in 9. The four resamples of two: pooled, not averaged."""
    indices = np.array([[0, 0], [0, 1], [1, 0], [1, 1]])
    rates = resample_rates([1, 0], [1, 9], indices)
    assert rates.tolist() == [[1.0, 0.1, 0.1, 0.0]]  # (0, 1) is 1/10, not the mean of rates 0.5
    # an empty reference adds no token; a resample of empty references alone has no rate (NaN), not 0
    assert np.array_equal(resample_rates([0, 2], [0, 4], np.array([[0, 0], [0, 1]])), [[np.nan, 0.5]], equal_nan=True)


def test_resamples_with_nothing_to_count_stay_out_of_the_interval():
    """30 utterances, 2 with one term each, both missed: recall 0. A resample without either has no
    recall; scored as recall 1 (1 - 0 missed of 0) it would stretch the interval to [0, 1]."""
    occurrences = np.zeros(30, dtype=int)
    occurrences[[4, 17]] = 1
    recall = 1 - bootstrap_rates([occurrences, occurrences], occurrences, 1000, resample_seed(42, "medical"))
    assert np.isnan(recall).any()  # the premise: some resamples draw neither utterance
    assert interval95(recall[0]) == (0.0, 0.0)
    assert interval95(recall[1] - recall[0]) == (0.0, 0.0)  # paired: NaN on the same resamples
    assert interval95(np.full(5, np.nan)) is None and interval95([np.nan, 0.5, 0.5]) == (0.5, 0.5)


def test_interval_by_hand_on_every_resample_of_three_utterances():
    """3 utterances of 10 tokens with 0, 5 and 10 errors: the 27 equally likely resamples, enumerated.
    Sorted rates: 0 (once), 5/30 (3 times), ..., 25/30 (3 times), 1 (once); numpy's percentile puts
    the 2.5th at position 0.65 of 26 and the 97.5th at 25.35."""
    indices = np.array(list(itertools.product(range(3), repeat=3)))
    rates = resample_rates([0, 5, 10], [10, 10, 10], indices)[0]
    assert sorted(rates)[:4] == pytest.approx([0, 1 / 6, 1 / 6, 1 / 6])
    assert interval95(rates) == (round(0.65 * 5 / 30, 4), round(25 / 30 + 0.35 * 5 / 30, 4)) == (0.1083, 0.8917)


def test_bootstrap_is_seeded_and_draws_with_replacement():
    errors, tokens_ = [0, 5, 10, 1, 3], [10, 10, 10, 4, 8]
    a = bootstrap_rates(errors, tokens_, 200, resample_seed(42, "medical"))
    assert a.shape == (1, 200)
    assert np.array_equal(a, bootstrap_rates(errors, tokens_, 200, resample_seed(42, "medical")))  # same seed, same numbers
    assert not np.array_equal(a, bootstrap_rates(errors, tokens_, 200, resample_seed(43, "medical")))  # another seed
    assert not np.array_equal(a, bootstrap_rates(errors, tokens_, 200, resample_seed(42, "general")))  # another test set
    # chunked on a large test set: still the same numbers, rerun
    many = np.arange(30_000) % 7
    assert np.array_equal(bootstrap_rates(many, np.full(30_000, 7), 150, 1), bootstrap_rates(many, np.full(30_000, 7), 150, 1))


def test_equal_rates_collapse_the_interval_to_a_point():
    rates = bootstrap_rates([1, 2, 3], [4, 8, 12], 1000, 0)  # every utterance at 0.25
    assert interval95(rates[0]) == (0.25, 0.25)


def test_paired_change_identical_model_is_zero_and_not_significant():
    base = [3, 0, 2, 5, 1, 4]
    tokens_ = [10, 8, 12, 9, 11, 10]
    rates = bootstrap_rates([base, base], tokens_, 1000, 7)
    lo, hi = interval95(rates[1] - rates[0])
    assert (lo, hi) == (0.0, 0.0) and not significant(lo, hi)


def test_paired_change_clearly_better_model_excludes_zero():
    rng = np.random.default_rng(0)
    tokens_ = rng.integers(8, 20, size=40)
    base = (tokens_ * 0.5).astype(int)
    merged = (tokens_ * 0.2).astype(int)
    rates = bootstrap_rates([base, merged], tokens_, 1000, 7)
    lo, hi = interval95(rates[1] - rates[0])
    assert hi < 0 and significant(lo, hi)
    assert significant(0.01, 0.2) and not significant(-0.01, 0.2) and not significant(0.0, 0.1)


def test_term_list_file_skips_comments_and_names_a_missing_file(tmp_path):
    (tmp_path / "t.txt").write_text("# cardiology\n胸部CT\n\n  阿司匹林 \n", encoding="utf-8")
    assert read_terms(tmp_path / "t.txt", "data.corpora.x.terms") == ["胸部CT", "阿司匹林"]
    with pytest.raises(UserError, match=r"^data.corpora.x.terms: .*nope.txt: not found"):
        read_terms(tmp_path / "nope.txt", "data.corpora.x.terms")
    (tmp_path / "e.txt").write_text("# nothing\n", encoding="utf-8")
    with pytest.raises(UserError, match="holds no term"):
        read_terms(tmp_path / "e.txt", "data.corpora.x.terms")


def _scored(repo: Path, **params) -> dict:
    """The score stage, in this process, on normalized rows written by hand."""
    from conftest import in_process, params_for

    from asrtune.stages import score

    params_for(repo, repo / "no-model-needed", **params)  # score reads no model
    in_process(repo, score)
    return json.loads((repo / "metrics/cer.json").read_text(encoding="utf-8"))


def _write_normalized(repo: Path, corpus: str, model: str, pairs: list[tuple[str, str]]) -> None:
    out = repo / f"data/normalized/{model}/{corpus}.jsonl"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("".join(json.dumps({"key": f"{corpus}-{i:03d}", "ref": r, "hyp": h, "missing": False}, ensure_ascii=False) + "\n"
                           for i, (r, h) in enumerate(pairs)), encoding="utf-8")


@pytest.fixture
def scored_repo(tmp_path: Path) -> Path:
    """general: merged = base (an identical model); medical: merged clearly better, mixed Chinese/English."""
    general = [(f"今天天气很好第{i}次", f"今天天汽很好第{i}次" if i % 2 else f"今天天气很好第{i}次") for i in range(30)]
    medical_refs = [f"请做胸部ct检查 和 mri 第{i}次" for i in range(30)]
    for model in ("base", "merged"):
        _write_normalized(tmp_path, "general", model, general)
    _write_normalized(tmp_path, "medical", "base", [(r, r.replace("胸部ct", "胸不city").replace("mri", "")) for r in medical_refs])
    _write_normalized(tmp_path, "medical", "merged", [(r, r if i % 5 else r.replace("mri", "mr")) for i, r in enumerate(medical_refs)])
    return tmp_path


def test_score_reports_intervals_paired_changes_and_languages(scored_repo):
    m = _scored(scored_repo)
    # an identical model: no change, an interval of exactly zero, not significant
    assert m["change"]["general"] == 0.0 and m["change_ci95"]["general"] == {"lo": 0.0, "hi": 0.0}
    assert m["change_significant"]["general"] is False
    # a clearly better model: the paired interval excludes zero
    assert m["change"]["medical"] < 0 and m["change_ci95"]["medical"]["hi"] < 0 and m["change_significant"]["medical"] is True
    for corpus in ("general", "medical"):
        for model in ("base", "merged"):
            ci = m["cer_ci95"][corpus][model]
            assert ci["lo"] <= m["cer"][corpus][model] <= ci["hi"]
    # only the medical test set mixes the languages
    # (general's numbers are neither: a Chinese sentence with a number is not mixed speech)
    assert set(m["cer_by_language"]) == {"medical"} and m["n_by_language"]["medical"] == {"zh": 30 * 9, "en": 30 * 2}
    assert m["cer_by_language"]["medical"] == {"base": {"zh": round(30 / 270, 4), "en": 1.0}, "merged": {"zh": 0.0, "en": 0.1}}
    ci = m["cer_by_language_ci95"]["medical"]
    assert ci["merged"]["zh"] == {"lo": 0.0, "hi": 0.0} and ci["merged"]["en"]["lo"] <= 0.1 <= ci["merged"]["en"]["hi"]
    # one test set per role: the summary intervals are that test set's (the gain's mirrored)
    assert m["general_change_ci95"] == m["change_ci95"]["general"]
    assert m["domain_gain_ci95"] == {"lo": -m["change_ci95"]["medical"]["hi"], "hi": -m["change_ci95"]["medical"]["lo"]}
    report = (scored_repo / "data/score/base/medical.txt").read_text(encoding="utf-8")
    assert "%CER 95% interval [ " in report and "\nzh: %WER " in report and "\nen: %WER " in report
    # the same params give the same bytes; another seed other intervals (and the same CERs)
    first = (scored_repo / "metrics/cer.json").read_bytes()
    assert _scored(scored_repo).keys() == m.keys() and (scored_repo / "metrics/cer.json").read_bytes() == first
    other = _scored(scored_repo, **{"score.seed": 7})
    assert other["cer"] == m["cer"] and other["cer_ci95"] != m["cer_ci95"]


def test_term_recall_from_the_terms_param_for_any_corpus(scored_repo):
    terms = scored_repo / "data/terms/medical.txt"
    terms.parent.mkdir(parents=True)
    terms.write_text("# imaging\n胸部CT\nMRI\n", encoding="utf-8")  # normalized as the transcripts are
    medical = {"role": "domain", "source": "demo/medical.yaml", "terms": "data/terms/medical.txt"}
    m = _scored(scored_repo, **{"data.corpora.medical": medical})
    assert m["term_recall"] == {"medical": {"base": 0.0, "merged": 0.9}}  # merged misses mri in 6 of 30 sentences: 54 / 60
    ci = m["term_recall_ci95"]["medical"]
    assert ci["base"] == {"lo": 0.0, "hi": 0.0} and ci["merged"]["lo"] < 0.9 < ci["merged"]["hi"] <= 1.0
    from asrtune.errors import UserError

    with pytest.raises(UserError, match=r"^data.corpora.medical.terms: data/terms/missing.txt: not found"):
        _scored(scored_repo, **{"data.corpora.medical": {**medical, "terms": "data/terms/missing.txt"}})


def test_score_leaves_out_resamples_with_nothing_to_count(scored_repo):
    """medical: 30 utterances; a term and an English word in only 2 (both missed by base), timed boundaries in
    only 2 (40 ms off). Every resample that has any of them agrees, so each interval is a point."""
    rows = []
    for i in range(30):
        sparse = i in (3, 20)
        ref = "服用阿司匹林复查ct" if sparse else f"今天天气很好第{i}次"
        row = {"key": f"medical-{i:03d}", "ref": ref, "hyp": ref.replace("阿司匹林", "阿斯匹林").replace("ct", "city"),
               "missing": False, "ref_times": [["今", 0.1, 0.3], ["天", 0.3, 0.5]]}
        row["times"] = [["今", 0.14, 0.34], ["天", 0.34, 0.54]] if sparse else [["明", 0.1, 0.3]]  # no shared unit: no boundary
        rows.append(row)
    for model in ("base", "merged"):
        path = scored_repo / f"data/normalized/{model}/medical.jsonl"
        path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    terms = scored_repo / "terms.txt"
    terms.write_text("阿司匹林\n", encoding="utf-8")
    m = _scored(scored_repo, **{"data.corpora.medical": {"role": "domain", "source": "demo/medical.yaml", "terms": str(terms)}})
    assert m["term_recall"]["medical"] == {"base": 0.0, "merged": 0.0}
    assert m["term_recall_ci95"]["medical"] == {"base": {"lo": 0.0, "hi": 0.0}, "merged": {"lo": 0.0, "hi": 0.0}}
    assert m["cer_by_language"]["medical"]["base"]["en"] == 1.0
    assert m["cer_by_language_ci95"]["medical"]["base"]["en"] == {"lo": 1.0, "hi": 1.0}
    a = json.loads((scored_repo / "metrics/alignment.json").read_text(encoding="utf-8"))
    assert a["mae_ms"]["medical"]["base"] == 40.0 and a["mae_ms_ci95"]["medical"]["base"] == {"lo": 40.0, "hi": 40.0}
    assert a["within_50ms_ci95"]["medical"]["base"] == {"lo": 1.0, "hi": 1.0}


def test_an_interval_without_a_single_resample_to_count_is_null(scored_repo):
    """One term in 1 of 30 utterances and one resample that does not draw it: no interval (null), not
    recall 1; the stage still writes and prints everything else."""
    seed = 7  # its one resample does not draw utterance 0
    occurrences = np.zeros(30, dtype=int)
    occurrences[0] = 1
    assert np.isnan(bootstrap_rates(occurrences, occurrences, 1, resample_seed(seed, "medical"))).all()  # the premise
    pairs = [("服用阿司匹林", "服用阿斯匹林")] + [(f"今天天气很好第{i}次", f"今天天气很好第{i}次") for i in range(1, 30)]
    for model in ("base", "merged"):
        _write_normalized(scored_repo, "medical", model, pairs)
    terms = scored_repo / "terms.txt"
    terms.write_text("阿司匹林\n", encoding="utf-8")
    m = _scored(scored_repo, **{"data.corpora.medical": {"role": "domain", "source": "demo/medical.yaml", "terms": str(terms)},
                                "score.bootstrap": 1, "score.seed": seed})
    assert m["term_recall"]["medical"] == {"base": 0.0, "merged": 0.0}
    assert m["term_recall_ci95"]["medical"] == {"base": None, "merged": None}


@pytest.mark.parametrize("text, looping", [
    ("好的好的好的好的", True),                            # 2 tokens x 4: 8 tokens
    ("谢谢你谢谢你谢谢你谢谢你", True),                      # 3 tokens x 4
    ("哈哈哈哈哈哈哈哈", True),                              # 1 token x 8
    ("the end the end the end the end", True),             # English words
    ("请做ct检查ct检查ct检查ct检查", True),                  # mixed: ct 检 查 x 4
    ("谢谢谢谢大家", False),                                # 谢 x 4 is speech: the run spans 4 tokens
    ("no no no no i said no", False),
    ("very very good ct检查 ok ok", False),
    ("请做ct检查ct检查ct检查", False),                       # 3 repeats
    ("", False),
])
def test_a_loop_is_a_run_repeated_back_to_back(text, looping):
    from asrtune.evaluation.scoring import loops

    assert loops(tokens(normalize(text, ALL))) is looping


def _nonspeech(repo: Path, said: dict[str, int], n: int = 30) -> None:
    """A test set with empty references: each model says something on the first said[model] clips."""
    for model, k in said.items():
        _write_normalized(repo, "nonspeech", model, [("", "谢谢观看" if i < k else "") for i in range(n)])


NONSPEECH = {"role": "test", "source": "demo/nonspeech.yaml"}


def test_a_set_without_speech_scores_hallucination_not_cer(scored_repo):
    _nonspeech(scored_repo, {"base": 0, "merged": 12})
    m = _scored(scored_repo, **{"data.corpora.nonspeech": NONSPEECH})
    assert "nonspeech" not in m["cer"] and "nonspeech" not in m["change"]  # no rate of 1.0 from insertions over nothing
    assert m["hallucination_rate"]["nonspeech"] == {"base": 0.0, "merged": 0.4} and m["n_clips"]["nonspeech"] == 30
    ci = m["hallucination_rate_ci95"]["nonspeech"]
    assert ci["base"] == {"lo": 0.0, "hi": 0.0} and ci["merged"]["lo"] < 0.4 < ci["merged"]["hi"]
    assert m["hallucination_change"]["nonspeech"] == 0.4 and m["hallucination_change_ci95"]["nonspeech"]["lo"] > 0
    # not a held-out set with references: the forgetting summary and general_change leave it out
    assert list(m["forgetting"]["sets"]) == ["general"] and m["general_change_ci95"] == m["change_ci95"]["general"]
    d = m["degeneration"]["nonspeech"]["merged"]
    assert d["insertion_rate"] is None and d["length_ratio"] is None and d["looping"] == 0.0
    plot = (scored_repo / "plots/hallucination.csv").read_text(encoding="utf-8").splitlines()
    assert plot[0].startswith("test_set,corpus,model,hallucination_rate") and plot[2].startswith("nonspeech / merged,nonspeech,merged,0.4,")
    report = (scored_repo / "data/score/merged/nonspeech.txt").read_text(encoding="utf-8")
    assert "%HALLUCINATION 40.00 [ 12 / 30 clips with output ]" in report and "%WER" not in report
    # silence answered with silence: a rate of 0, exactly
    _nonspeech(scored_repo, {"base": 0, "merged": 0})
    m = _scored(scored_repo, **{"data.corpora.nonspeech": NONSPEECH})
    assert m["hallucination_rate"]["nonspeech"] == {"base": 0.0, "merged": 0.0}
    assert m["hallucination_change_ci95"]["nonspeech"] == {"lo": 0.0, "hi": 0.0}


def test_forgetting_is_flagged_when_merged_is_clearly_worse_on_a_held_out_set(scored_repo):
    from conftest import in_process, params_for

    from asrtune.stages import score

    # unchanged on general (merged = base): no flag, no FORGETTING line
    m = _scored(scored_repo)
    f = m["forgetting"]
    assert f["sets"]["general"] == {"role": "general", "change": 0.0, "change_ci95": {"lo": 0.0, "hi": 0.0}, "flag": False}
    assert f["pooled"]["flag"] is False and "medical" not in f["sets"]  # the domain set is not held out
    assert "general, heldout" not in m["general_change_note"] and "general" in m["general_change_note"]
    # a role test set where merged drops 1 token of 8 in every sentence: flagged, alone and pooled with general
    refs = [f"明天下雨吗第{i}次" for i in range(30)]
    _write_normalized(scored_repo, "heldout", "base", [(r, r) for r in refs])
    _write_normalized(scored_repo, "heldout", "merged", [(r, r.replace("雨", "")) for r in refs])
    params_for(scored_repo, scored_repo / "no-model-needed", **{"data.corpora.heldout": {"role": "test", "source": "demo/general.yaml"}})
    printed = in_process(scored_repo, score)
    m = json.loads((scored_repo / "metrics/cer.json").read_text(encoding="utf-8"))
    f = m["forgetting"]
    assert f["sets"]["heldout"]["flag"] is True and f["sets"]["heldout"]["change_ci95"]["lo"] > 0
    assert f["sets"]["general"]["flag"] is False
    assert f["pooled"]["change"] == m["general_change"] == round(f["sets"]["heldout"]["change"] / 2, 4) and f["pooled"]["flag"] is True
    assert "general, heldout" in m["general_change_note"]
    line = next(x for x in printed.splitlines() if x.startswith("FORGETTING: "))
    assert "heldout +0.1250" in line and "pooled over general, heldout +0.0625" in line and "general +" not in line


def test_a_domain_test_set_counts_toward_domain_gain_not_forgetting(scored_repo):
    """role domain_test (evaluation-only domain speech): merged worse there is no forgetting, and domain_gain pools it
    with the domain's own test split."""
    from conftest import in_process, params_for

    refs = [f"明天下雨吗第{i}次" for i in range(30)]
    _write_normalized(scored_repo, "clinic", "base", [(r, r) for r in refs])
    _write_normalized(scored_repo, "clinic", "merged", [(r, r.replace("雨", "")) for r in refs])
    alone = _scored(scored_repo)
    params_for(scored_repo, scored_repo / "no-model-needed", **{"data.corpora.clinic": {"role": "domain_test", "source": "demo/medical.yaml"}})
    from asrtune.stages import score

    printed = in_process(scored_repo, score)
    m = json.loads((scored_repo / "metrics/cer.json").read_text(encoding="utf-8"))
    assert "clinic" not in m["forgetting"]["sets"] and "FORGETTING" not in printed
    assert m["general_change"] == alone["general_change"] and "clinic" not in m["general_change_note"]
    assert m["change"]["clinic"] == 0.125
    assert m["domain_gain"] == round((-m["change"]["medical"] - 0.125) / 2, 4) != alone["domain_gain"]


def test_degeneration_shares_and_ratios_per_model(scored_repo):
    """medical, 30 utterances of 12 tokens: merged loops on 3 (好的 x 10 appended: 20 inserted tokens), and stopped
    at decode's guard there; base never."""
    refs = [f"请做胸部ct检查 和 mri 第{i}次" for i in range(30)]  # 12 tokens
    for model, tail in (("base", ""), ("merged", "好的" * 10)):
        rows = [{"key": f"medical-{i:03d}", "ref": r, "hyp": r + (tail if i < 3 else ""), "missing": False, "capped": bool(tail) and i < 3}
                for i, r in enumerate(refs)]
        (scored_repo / f"data/normalized/{model}/medical.jsonl").write_text(
            "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    m = _scored(scored_repo)
    base, merged = m["degeneration"]["medical"]["base"], m["degeneration"]["medical"]["merged"]
    assert (base["looping"], base["capped"], base["insertion_rate"], base["length_ratio"]) == (0.0, 0.0, 0.0, 1.0)
    assert base["looping_ci95"] == {"lo": 0.0, "hi": 0.0} and base["length_ratio_ci95"] == {"lo": 1.0, "hi": 1.0}
    assert (merged["looping"], merged["capped"]) == (0.1, 0.1) and merged["looping_ci95"]["lo"] <= 0.1 <= merged["looping_ci95"]["hi"]
    assert merged["insertion_rate"] == round(60 / 360, 4) and merged["length_ratio"] == round(420 / 360, 4)
    # rows of a decode that recorded no guard (general's): capped unknown, not 0
    assert m["degeneration"]["general"]["base"]["capped"] is None and m["degeneration"]["general"]["base"]["capped_ci95"] is None
