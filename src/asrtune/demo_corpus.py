"""Offline demo corpora: Mandarin sentences from a topic file (demo/<topic>.yaml: templates,
slots, which slots are domain terms) spoken by eSpeak NG with several "speakers" (voice variant,
rate, pitch). The same topic file and params give the same bytes.
"""

from __future__ import annotations

import random
import string
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import yaml

from asrtune.errors import UserError
from asrtune.sources import Candidate

# Voice variants whose output is reproducible. The breathy ones (f2, f3, f5) add noise that differs
# from run to run even on a fresh library instance, so they would break "same params, same bytes".
VOICES = ["cmn", "cmn+f1", "cmn+m1", "cmn+f4", "cmn+m2", "cmn+m3", "cmn+m4", "cmn+m5", "cmn+m6", "cmn+m7", "cmn+m8"]


@dataclass(frozen=True)
class Topic:
    templates: list[str]
    slots: dict[str, list[str]]
    terms: list[str]  # the domain term list, sorted


@dataclass(frozen=True)
class Speaker:
    id: str
    voice: str
    rate: int
    pitch: int


def load_topic(path: Path) -> Topic:
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
        templates, slots, term_slots = raw["templates"], raw["slots"], raw.get("terms") or []
    except FileNotFoundError:
        raise UserError(f"{path}: demo topic file not found") from None
    except (yaml.YAMLError, KeyError, TypeError) as e:
        raise UserError(f"{path}: not a demo topic (needs `templates` and `slots`): {e}") from None
    for template in templates:
        for _, slot, _, _ in string.Formatter().parse(template):
            if slot is not None and slot not in slots:
                raise UserError(f"{path}: template {template!r} uses slot {{{slot}}} that `slots` does not define")
    unknown = [s for s in term_slots if s not in slots]
    if unknown:
        raise UserError(f"{path}: `terms` names slots that do not exist: {unknown}")
    terms = sorted({value for s in term_slots for value in slots[s]})
    return Topic(list(templates), {k: list(v) for k, v in slots.items()}, terms)


def speakers(count: int, rng: random.Random) -> list[Speaker]:
    return [
        Speaker(f"spk{i + 1:02d}", VOICES[i % len(VOICES)], rng.randrange(140, 211, 5), rng.randrange(25, 76, 5))
        for i in range(count)
    ]


def sentences(topic: Topic, count: int, rng: random.Random, name: str) -> list[str]:
    """`count` distinct sentences (distinct, so a test sentence is never a copy of a training one)."""
    out: list[str] = []
    seen: set[str] = set()
    misses = 0
    while misses < 5000:  # that many repeats in a row: the templates are exhausted
        template = rng.choice(topic.templates)
        text = template.format(**{k: rng.choice(v) for k, v in topic.slots.items() if "{" + k + "}" in template})
        if text in seen:
            misses += 1
            continue
        misses = 0
        seen.add(text)
        out.append(text)
        if len(out) == count:
            return out
    raise UserError(f"{name}: the templates give only {len(out)} distinct sentences, fewer than the {count} asked for")


def read_demo(path: Path, utterances: int, num_speakers: int, seed: int) -> Iterator[Candidate]:
    from asrtune.espeak import Espeak

    topic = load_topic(path)
    rng = random.Random(f"{path.stem}:{seed}")
    voices = speakers(num_speakers, rng)
    engine = Espeak()  # a fresh instance: same calls in the same order give the same samples
    for i, text in enumerate(sentences(topic, utterances, rng, str(path))):
        spk = voices[i % len(voices)]
        samples = engine.synth(text, spk.voice, spk.rate, spk.pitch)
        yield Candidate(f"{spk.id}-{i:05d}", (samples, engine.sample_rate), text, spk.id, f"{path}#{i + 1}")
