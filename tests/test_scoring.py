"""Normalization and scoring on hand-computed mixed Chinese/English examples."""

from __future__ import annotations

import pytest

from asrtune.normalization import normalize, tokens
from asrtune.params import Normalize
from asrtune.scoring import Counts, align, report, term_recall, wer_line

ALL = Normalize()


@pytest.mark.parametrize("text, expected", [
    ("醫生說這個藥每天吃三次", "医生说这个药每天吃3次"),            # traditional -> simplified, numbers -> digits
    ("ＣＴ檢查，ＯＫ！", "ct检查 ok"),                               # full-width letters and punctuation
    ("一百二十三个人", "123个人"),
    ("Hello World, I'm FINE.", "hello world i m fine"),            # English: Whisper's basic normalizer, lower case
    ("患者主诉：胸闷。", "患者主诉 胸闷"),                            # Chinese punctuation removed
    ("  多个   空格 ", "多个 空格"),
])
def test_normalization_cases(text, expected):
    assert normalize(text, ALL) == expected


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
