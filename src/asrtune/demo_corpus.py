"""Offline demo corpora: the written sentences of a topic file (demo/<topic>.yaml: `sentences`, and a domain's
`terms`) spoken by several synthetic speakers, each sentence once. Voices: kokoro (a neural voice; a speaker is
a blend of two of its styles at some speed) or espeak (eSpeak NG's robotic Mandarin: a voice variant, rate and
pitch; fast, for tests). The same topic file and params give the same bytes.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from asrtune import paths
from asrtune.errors import UserError
from asrtune.sources import Candidate

# eSpeak voice variants whose output is reproducible. The breathy ones (f2, f3, f5) add noise that differs
# from run to run even on a fresh library instance, so they would break "same params, same bytes".
ESPEAK_VOICES = ["cmn", "cmn+f1", "cmn+m1", "cmn+f4", "cmn+m2", "cmn+m3", "cmn+m4", "cmn+m5", "cmn+m6", "cmn+m7", "cmn+m8"]


@dataclass(frozen=True)
class Sentence:
    text: str
    line: int  # in the topic file


@dataclass(frozen=True)
class Topic:
    sentences: list[Sentence]
    terms: list[str]  # the domain term list, in file order


@dataclass(frozen=True)
class Speaker:
    id: str
    voice: str  # espeak: a voice variant; kokoro: unused (see styles)
    rate: float  # espeak: words per minute; kokoro: speed (1 = the model's own)
    pitch: int = 50  # espeak only
    styles: dict[str, float] = field(default_factory=dict)  # kokoro: style name -> weight

    def describe(self) -> str:
        if self.styles:
            return " + ".join(f"{w:.2f} {name}" for name, w in self.styles.items()) + f", speed {self.rate:.2f}"
        return f"{self.voice}, rate {self.rate:g}, pitch {self.pitch}"


def load_topic(path: Path) -> Topic:
    """Read and check a topic file; every problem names the file and line."""
    try:
        root = yaml.compose(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"{path}: demo topic file not found") from None
    except yaml.YAMLError as e:
        raise UserError(f"{path}: not YAML: {e}") from None
    if not isinstance(root, yaml.MappingNode):
        raise UserError(f"{path}: a demo topic is a mapping with `sentences` (and a domain's `terms`)")
    nodes = {k.value: v for k, v in root.value}
    if "templates" in nodes:
        raise UserError(f"{path}: `templates` and `slots` are gone: a demo topic lists its written `sentences` "
                        "(slot-filled templates taught a model the templates, not the domain)")
    sentences = _strings(path, nodes.get("sentences"), "sentences")
    terms = _strings(path, nodes.get("terms"), "terms") if "terms" in nodes else []
    if not sentences:
        raise UserError(f"{path}: no `sentences`")
    first: dict[str, int] = {}
    for text, line in sentences:
        bare = "".join(c for c in text if c.isalnum())
        if bare in first:
            raise UserError(f"{path}:{line}: repeats the sentence on line {first[bare]} (test sentences must never be trained on)")
        first[bare] = line
    for term, line in terms:
        if not any(term in text for text, _ in sentences):
            raise UserError(f"{path}:{line}: term {term!r} occurs in no sentence")
    return Topic([Sentence(t, n) for t, n in sentences], [t for t, _ in terms])


def _strings(path: Path, node, key: str) -> list[tuple[str, int]]:
    if not isinstance(node, yaml.SequenceNode):
        line = f":{node.start_mark.line + 1}" if node is not None else ""
        raise UserError(f"{path}{line}: `{key}` must be a list of strings")
    out = []
    for item in node.value:
        line = item.start_mark.line + 1
        if not isinstance(item, yaml.ScalarNode) or not item.value.strip():
            raise UserError(f"{path}:{line}: an item of `{key}` that is not a non-empty string")
        out.append((item.value.strip(), line))
    return out


def espeak_speakers(count: int, rng: random.Random) -> list[Speaker]:
    return [Speaker(f"spk{i + 1:02d}", ESPEAK_VOICES[i % len(ESPEAK_VOICES)], rng.randrange(140, 211, 5), rng.randrange(25, 76, 5))
            for i in range(count)]


def kokoro_speakers(count: int, rng: random.Random, styles: list[str]) -> list[Speaker]:
    """Blends of two styles, neither below 20%, at 0.9-1.1x speed: no speaker is one of the shipped voices,
    and each topic (its own seed) gets speakers of its own."""
    out = []
    for i in range(count):
        a, b = sorted(rng.sample(styles, 2))
        w = round(rng.uniform(0.2, 0.8), 2)
        out.append(Speaker(f"spk{i + 1:02d}", "kokoro", round(rng.uniform(0.9, 1.1), 2), styles={a: w, b: round(1 - w, 2)}))
    return out


def pick(topic: Topic, utterances: int | None, rng: random.Random, path: Path) -> list[Sentence]:
    """`utterances` of the topic's sentences (None: all), in a seeded order that mixes each speaker's share."""
    if utterances is not None and utterances > len(topic.sentences):
        raise UserError(f"{path}: has {len(topic.sentences)} sentences, fewer than the {utterances} asked for "
                        "(each sentence is spoken once, so a test sentence is never a training one)")
    chosen = list(topic.sentences)
    rng.shuffle(chosen)
    return chosen[:utterances]


@dataclass
class Sized:
    """An iterator that knows its length (ingest's progress bar then shows a total and a time left)."""
    items: Iterator[Candidate]
    length: int

    def __iter__(self) -> Iterator[Candidate]:
        return self.items

    def __len__(self) -> int:
        return self.length


def read_demo(path: Path, utterances: int | None, num_speakers: int, seed: int, voice: str = "kokoro", say=print) -> Sized:
    """Checks the topic and picks the sentences and speakers now; speaks them as the result is iterated."""
    topic = load_topic(path)
    rng = random.Random(f"{path.stem}:{seed}")
    chosen = pick(topic, utterances, rng, path)
    if voice == "kokoro":
        from asrtune.kokoro import Kokoro

        engine = Kokoro(paths.cache_dir() / "kokoro")
        voices = kokoro_speakers(num_speakers, rng, sorted(engine.voices))
    else:
        from asrtune.espeak import Espeak

        engine = Espeak()  # a fresh instance: same calls in the same order give the same samples
        voices = espeak_speakers(num_speakers, rng)
    say(f"{path}: {len(chosen)} sentences, {len(voices)} {voice} speakers: "
        + "; ".join(f"{s.id} {s.describe()}" for s in voices))
    return Sized(_speak(engine, voice, chosen, voices, path), len(chosen))


def _speak(engine, voice: str, chosen: list[Sentence], voices: list[Speaker], path: Path) -> Iterator[Candidate]:
    for i, sentence in enumerate(chosen):
        spk = voices[i % len(voices)]
        where = f"{path}:{sentence.line}"
        if voice == "kokoro":  # reference timestamps from its duration predictor
            speech = engine.synth(sentence.text, spk.styles, spk.rate, where)
        else:  # from eSpeak's word and phoneme events
            speech = engine.synth(sentence.text, spk.voice, int(spk.rate), spk.pitch)
        pairs = [[start, end] for _, start, end in speech.units] if speech.units is not None else None
        yield Candidate(f"{spk.id}-{i:05d}", (speech.samples, engine.sample_rate), sentence.text, spk.id, where, pairs)
