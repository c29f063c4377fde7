"""The synthesized demo corpus: reproducible bytes, distinct sentences, a valid term list."""

from __future__ import annotations

import random

import numpy as np
import pytest
from conftest import REPO

from asrtune.demo_corpus import VOICES, load_topic, read_demo, sentences
from asrtune.errors import UserError


def test_fresh_engines_give_identical_samples_for_every_voice():
    from asrtune.espeak import Espeak

    runs = []
    for _ in range(2):
        engine = Espeak()
        runs.append([engine.synth("患者主诉胸闷气短三天", v, 170, 40) for v in VOICES for _ in range(2)])
    assert all(np.array_equal(a, b) for a, b in zip(*runs))
    assert all(len(a) > 22050 for a in runs[0])  # over a second of speech each


def test_demo_corpus_is_reproducible_with_speakers():
    a = list(read_demo(REPO / "demo/medical.yaml", 6, 3, 0))
    b = list(read_demo(REPO / "demo/medical.yaml", 6, 3, 0))
    assert [(c.id, c.text, c.speaker) for c in a] == [(c.id, c.text, c.speaker) for c in b]
    assert all(np.array_equal(x.audio[0], y.audio[0]) for x, y in zip(a, b))
    assert {c.speaker for c in a} == {"spk01", "spk02", "spk03"}


def test_sentences_are_distinct_and_use_the_topic():
    topic = load_topic(REPO / "demo/medical.yaml")
    texts = sentences(topic, 300, random.Random(0), "medical")
    assert len(set(texts)) == 300
    assert sum(any(t in s for t in topic.terms) for s in texts) > 0.8 * 300  # most sentences carry a term
    with pytest.raises(UserError, match="distinct sentences"):
        sentences(topic, 100000, random.Random(0), "medical")


def test_bad_topic_file_is_named(tmp_path):
    bad = tmp_path / "t.yaml"
    bad.write_text("templates: ['{who} 来了']\nslots: {what: [x]}\n", encoding="utf-8")
    with pytest.raises(UserError, match=r"t.yaml: template .* uses slot \{who\}"):
        load_topic(bad)
