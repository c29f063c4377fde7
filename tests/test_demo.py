"""The synthesized demo corpus: the written topics, reproducible bytes for both voices, clear errors."""

from __future__ import annotations

import hashlib
import re
import subprocess
import sys

import numpy as np
import pytest
from conftest import REPO

from asrtune.errors import UserError
from asrtune.evaluation.normalization import normalize
from asrtune.params import Normalize
from asrtune.synth.demo_corpus import ESPEAK_VOICES, load_topic, read_demo


def test_fresh_espeak_engines_give_identical_samples_for_every_voice():
    from asrtune.synth.espeak import Espeak

    runs = []
    for _ in range(2):
        engine = Espeak()
        runs.append([engine.synth("患者主诉胸闷气短三天", v, 170, 40).samples for v in ESPEAK_VOICES for _ in range(2)])
    assert all(np.array_equal(a, b) for a, b in zip(*runs))
    assert all(len(a) > 22050 for a in runs[0])  # over a second of speech each


def test_espeak_phoneme_events_leave_the_samples_alone(monkeypatch):
    from asrtune.synth import espeak

    timed = espeak.Espeak()
    with_events = [timed.synth("请把D二聚体的结果发给ICU", v, 170, 40) for v in ESPEAK_VOICES[:3]]
    monkeypatch.setattr(espeak, "_PHONEME_EVENTS", 0)  # as libespeak-ng was initialised before the timestamps
    plain = espeak.Espeak()
    without = [plain.synth("请把D二聚体的结果发给ICU", v, 170, 40) for v in ESPEAK_VOICES[:3]]
    assert all(np.array_equal(a.samples, b.samples) for a, b in zip(with_events, without))
    assert all(s.units is not None for s in with_events) and without[0].units is None  # no phoneme event, no time


def test_demo_corpus_is_reproducible_with_speakers():
    assert len(read_demo(REPO / "demo/medical.yaml", 6, 3, 0, "espeak")) == 6  # ingest's progress bar shows a total
    a = list(read_demo(REPO / "demo/medical.yaml", 6, 3, 0, "espeak"))
    b = list(read_demo(REPO / "demo/medical.yaml", 6, 3, 0, "espeak"))
    assert [(c.id, c.text, c.speaker, c.origin) for c in a] == [(c.id, c.text, c.speaker, c.origin) for c in b]
    assert all(np.array_equal(x.audio[0], y.audio[0]) for x, y in zip(a, b))
    assert {c.speaker for c in a} == {"spk01", "spk02", "spk03"}
    assert len({c.text for c in a}) == 6 and all(re.fullmatch(r".*demo/medical.yaml:\d+", c.origin) for c in a)


KOKORO_SAY = """
import hashlib, sys
from asrtune.synth.kokoro import Kokoro
print(hashlib.sha256(Kokoro().synth(sys.argv[1], {"jf_alpha": 0.3, "jm_kumo": 0.7}, 1.05, "t").samples.tobytes()).hexdigest())
"""


def test_kokoro_gives_the_same_bytes_in_another_process():
    from asrtune.synth.kokoro import Kokoro

    text = "请复查胸部CT。"
    here = Kokoro().synth(text, {"jf_alpha": 0.3, "jm_kumo": 0.7}, 1.05, "t").samples
    other = subprocess.run([sys.executable, "-c", KOKORO_SAY, text], capture_output=True, text=True, check=True)
    assert hashlib.sha256(here.tobytes()).hexdigest() == other.stdout.strip()
    assert 0.8 < len(here) / 24000 < 4 and np.abs(here).max() > 0.05  # speech, not silence


def test_kokoro_spells_acronyms_with_english_letter_names():
    from asrtune.synth.kokoro import Kokoro

    phonemes = Kokoro().phonemes("转入ICU，复查CT")
    assert "ˈI sˈi jˈu" in phonemes and "sˈi tˈi" in phonemes
    assert not re.search("[A-Z]{2}", phonemes)  # misaki would pass "CT" through as two phoneme symbols


def _bare(text: str) -> str:
    return normalize(text, Normalize())


def test_the_shipped_topics_are_written_sentences_with_a_real_term_list():
    medical, general = load_topic(REPO / "demo/medical.yaml"), load_topic(REPO / "demo/general.yaml")
    assert len(medical.sentences) >= 300 and len(general.sentences) >= 300 and len(medical.terms) >= 80
    texts = [s.text for s in medical.sentences + general.sentences]
    assert len({_bare(t) for t in texts}) == len(texts)  # distinct once normalized, across both topics
    for term in medical.terms:
        assert sum(term in s.text for s in medical.sentences) >= 3, term
        assert not any(term in s.text for s in general.sentences), term
    assert sum(bool(re.search("[A-Z]{2}", s.text)) for s in medical.sentences) >= 30  # mixed Chinese/English
    openings = {s.text[:3] for s in medical.sentences}
    assert len(openings) > len(medical.sentences) / 3  # not one template with its slots swapped


def test_the_held_out_general_topic_is_new_speech_with_no_medical_term():
    medical, general = load_topic(REPO / "demo/medical.yaml"), load_topic(REPO / "demo/general.yaml")
    heldout = load_topic(REPO / "demo/general_heldout.yaml")
    assert len(heldout.sentences) == 400 and heldout.terms == []
    texts = [s.text for s in heldout.sentences + general.sentences + medical.sentences]
    assert len({_bare(t) for t in texts}) == len(texts)  # evaluation only: no sentence of either other topic
    for term in medical.terms:
        assert not any(term in s.text for s in heldout.sentences), term
    assert sum(bool(re.search("[A-Z]{2}", s.text)) for s in heldout.sentences) >= 10  # a few acronyms, as people say them
    assert not any(re.search("[0-9]", s.text) for s in heldout.sentences)  # numbers written in Chinese, as general.yaml
    openings = [s.text[:2] for s in heldout.sentences]
    assert max(openings.count(o) for o in openings) <= len(openings) / 20  # varied, not one template


def test_the_held_out_medical_topic_is_new_speech_with_every_term():
    medical, general = load_topic(REPO / "demo/medical.yaml"), load_topic(REPO / "demo/general.yaml")
    general_heldout, heldout = load_topic(REPO / "demo/general_heldout.yaml"), load_topic(REPO / "demo/medical_heldout.yaml")
    assert len(heldout.sentences) == 288 and heldout.terms == medical.terms  # the list decode.hotwords gives, scored
    texts = [s.text for s in heldout.sentences + medical.sentences + general.sentences + general_heldout.sentences]
    assert len({_bare(t) for t in texts}) == len(texts)  # evaluation only: no sentence of another topic
    trained = {_bare(s.text)[i:i + 10] for s in medical.sentences + general.sentences for i in range(len(_bare(s.text)) - 9)}
    assert not [s.text for s in heldout.sentences if any(_bare(s.text)[i:i + 10] in trained for i in range(len(_bare(s.text)) - 9))]
    for term in medical.terms:
        assert sum(term in s.text for s in heldout.sentences) >= 3, term
    assert not any(re.search("[0-9]", s.text) for s in heldout.sentences)
    openings = [s.text[:2] for s in heldout.sentences]
    assert max(openings.count(o) for o in openings) <= len(openings) / 20


def test_topic_errors_name_the_file_and_line(tmp_path):
    topic = tmp_path / "t.yaml"
    cases = {
        "templates: ['{who} 来了']\nslots: {who: [x]}\n": r"t.yaml: `templates` and `slots` are gone",
        "sentences:\n  - 今天天气很好。\n  - 明天见\n  - 今天，天气很好\n": r"t.yaml:4: repeats the sentence on line 2",
        "terms: [心电图, 胃镜]\nsentences:\n  - 做一个心电图吧\n": r"t.yaml:1: term '胃镜' occurs in no sentence",
        "sentences: 今天\n": r"t.yaml:1: `sentences` must be a list of strings",
        "sentences:\n  - 今天\n  - [a]\n": r"t.yaml:3: an item of `sentences` that is not a non-empty string",
    }
    for text, message in cases.items():
        topic.write_text(text, encoding="utf-8")
        with pytest.raises(UserError, match=message):
            load_topic(topic)
    topic.write_text("sentences: [今天天气很好, 明天见]\n", encoding="utf-8")
    with pytest.raises(UserError, match=r"t.yaml: has 2 sentences, fewer than the 3 asked for"):
        list(read_demo(topic, 3, 2, 0, "espeak"))
