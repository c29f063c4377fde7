"""Offline demo corpora: the written sentences of a topic file (demo/<topic>.yaml: `sentences`, and a domain's
`terms`) spoken by several synthetic speakers, each sentence once. Voices: kokoro (a neural voice; a speaker is
a blend of two of its styles at some speed) or espeak (eSpeak NG's robotic Mandarin: a voice variant, rate and
pitch; fast, for tests). The same topic file and params give the same bytes.

Voices the model never heard: the speakers come in two pools. Training speakers are made of the training
styles (kokoro) or variants (espeak) only and go to train; held-out speakers are made of the held-out ones
only and alternate val, test (a role: test or domain_test corpus has held-out speakers only, all test). Each utterance
carries its split (the manifest's `split`, which the split stage honours) and its voice, so no val or
test voice shares a style, or a blend component, with any training voice: what fine-tuning learns about
the training voices cannot flatter the test sets.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from asrtune import paths
from asrtune.corpus.sources import Candidate
from asrtune.errors import UserError

# eSpeak voice variants whose output is reproducible. The breathy ones (f2, f3, f5) add noise that differs
# from run to run even on a fresh library instance, so they would break "same params, same bytes".
ESPEAK_VOICES = ["cmn", "cmn+f1", "cmn+m1", "cmn+f4", "cmn+m2", "cmn+m3", "cmn+m4", "cmn+m5", "cmn+m6", "cmn+m7", "cmn+m8"]
# the held-out pools: val and test speakers are made of these only, training speakers never use them.
# eSpeak: a female and a male variant. Kokoro (jf_* female, jm_kumo its one male style): jf_gongitsune and
# jm_kumo. Measured on the style vectors (rows 20-120, the sentences' phoneme counts; speakers blend two
# styles at 20-80%), against holding out jf_tebukuro and jm_kumo: the training blends (jf_alpha, jf_nezumi,
# jf_tebukuro) spread wider (mean distance 1.26 vs 1.05) and the held-out blends lie further from the nearest
# training blend (mean 1.91 vs 1.54), the held-out pool spanning 0.59 vs 0.91. Holding out jf_gongitsune and
# jf_nezumi (nearly one voice, 1.28 apart) would train the most varied pool but test on one narrow voice.
ESPEAK_HELDOUT = ("cmn+f4", "cmn+m5")
KOKORO_HELDOUT = ("jf_gongitsune", "jm_kumo")


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
    split: str = "train"  # train (a training speaker) | val | test (a held-out speaker)

    def describe(self) -> str:
        if self.styles:
            return " + ".join(f"{w:.2f} {name}" for name, w in self.styles.items()) + f", speed {self.rate:.2f}"
        return f"{self.voice}, rate {self.rate:g}, pitch {self.pitch}"

    def manifest_voice(self) -> dict:
        """The voice as the manifest keeps it (split's summary lists it per speaker)."""
        if self.styles:
            return {"styles": dict(self.styles), "speed": self.rate}
        return {"variant": self.voice, "rate": int(self.rate), "pitch": self.pitch}


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


def heldout_count(num_speakers: int, heldout: int | None, test: bool, path: Path) -> int:
    """How many of the speakers are held out: all of a test corpus's; else `heldout` (None: a fifth, at
    least 2), leaving at least one training speaker."""
    if test:
        return num_speakers
    n = max(2, round(num_speakers / 5)) if heldout is None else heldout
    if n >= num_speakers:
        raise UserError(f"{path}: {num_speakers} speakers cannot give {n} held-out speakers (val and test) and a training "
                        "one: raise `speakers` (a demo corpus that trains needs at least 3)")
    return n


def _splits(count: int, heldout: int) -> list[str]:
    """Each speaker's split: the training speakers first (train), then the held-out ones, alternately val and test."""
    return ["train"] * (count - heldout) + [("val", "test")[k % 2] for k in range(heldout)]


def espeak_speakers(count: int, rng: random.Random, heldout: int = 0, test: bool = False) -> list[Speaker]:
    """Training speakers cycle through the training variants, held-out ones through ESPEAK_HELDOUT; rate and pitch vary."""
    training = [v for v in ESPEAK_VOICES if v not in ESPEAK_HELDOUT]
    out = []
    for i, split in enumerate(["test"] * count if test else _splits(count, heldout)):
        pool, k = (training, i) if split == "train" else (ESPEAK_HELDOUT, i - (0 if test else count - heldout))
        out.append(Speaker(f"spk{i + 1:02d}", pool[k % len(pool)], rng.randrange(140, 211, 5), rng.randrange(25, 76, 5), split=split))
    return out


def kokoro_speakers(count: int, rng: random.Random, styles: list[str], heldout: int = 0, test: bool = False) -> list[Speaker]:
    """Blends of two styles, neither below 20%, at 0.9-1.1x speed: no speaker is one of the shipped voices,
    and each topic (its own seed) gets speakers of its own. A training speaker blends two of the training
    styles (`styles` less KOKORO_HELDOUT), a held-out speaker the held-out ones."""
    missing = [s for s in KOKORO_HELDOUT if s not in styles]
    if missing:
        raise UserError(f"kokoro has no style {missing} to hold out (have: {', '.join(styles)})")
    training = [s for s in styles if s not in KOKORO_HELDOUT]
    out = []
    for i, split in enumerate(["test"] * count if test else _splits(count, heldout)):
        a, b = sorted(rng.sample(training if split == "train" else list(KOKORO_HELDOUT), 2))
        w = round(rng.uniform(0.2, 0.8), 2)
        out.append(Speaker(f"spk{i + 1:02d}", "kokoro", round(rng.uniform(0.9, 1.1), 2), styles={a: w, b: round(1 - w, 2)},
                           split=split))
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
    speakers: list[Speaker] = field(default_factory=list)  # who speaks (empty for the non-speech set)

    def __iter__(self) -> Iterator[Candidate]:
        return self.items

    def __len__(self) -> int:
        return self.length


def speakers_for(voice: str, num_speakers: int, rng: random.Random, heldout: int, test: bool, styles: list[str]) -> list[Speaker]:
    """The corpus's speakers (`styles`: kokoro's, unused for espeak): what read_demo speaks with."""
    if voice == "kokoro":
        return kokoro_speakers(num_speakers, rng, styles, heldout, test)
    return espeak_speakers(num_speakers, rng, heldout, test)


def read_demo(path: Path, utterances: int | None, num_speakers: int, seed: int, voice: str = "kokoro", say=print,
              heldout: int | None = None, test: bool = False) -> Sized:
    """Checks the topic and picks the sentences and speakers now (the result's `speakers`); speaks them as
    the result is iterated. `heldout`: how many speakers have held-out voices (None: a fifth, at least 2);
    `test` (a role: test or domain_test corpus): all of them, every utterance fixed to test."""
    topic = load_topic(path)
    rng = random.Random(f"{path.stem}:{seed}")
    chosen = pick(topic, utterances, rng, path)
    n_heldout = heldout_count(num_speakers, heldout, test, path)
    if voice == "kokoro":
        from asrtune.synth.kokoro import Kokoro

        engine = Kokoro(paths.cache_dir() / "kokoro")
        voices = speakers_for(voice, num_speakers, rng, n_heldout, test, sorted(engine.voices))
    else:
        from asrtune.synth.espeak import Espeak

        engine = Espeak()  # a fresh instance: same calls in the same order give the same samples
        voices = speakers_for(voice, num_speakers, rng, n_heldout, test, [])
    pools = "all held out (test)" if test else f"{num_speakers - n_heldout} training (train), {n_heldout} held out (val, test)"
    say(f"{path}: {len(chosen)} sentences, {len(voices)} {voice} speakers, {pools}: "
        + "; ".join(f"{s.id} {s.split} {s.describe()}" for s in voices))
    return Sized(_speak(engine, voice, chosen, voices, path), len(chosen), voices)


def _speak(engine, voice: str, chosen: list[Sentence], voices: list[Speaker], path: Path) -> Iterator[Candidate]:
    for i, sentence in enumerate(chosen):
        spk = voices[i % len(voices)]
        where = f"{path}:{sentence.line}"
        if voice == "kokoro":  # reference timestamps from its duration predictor
            speech = engine.synth(sentence.text, spk.styles, spk.rate, where)
        else:  # from eSpeak's word and phoneme events
            speech = engine.synth(sentence.text, spk.voice, int(spk.rate), spk.pitch)
        pairs = [[start, end] for _, start, end in speech.units] if speech.units is not None else None
        yield Candidate(f"{spk.id}-{i:05d}", (speech.samples, engine.sample_rate), sentence.text, spk.id, where, pairs,
                        split=spk.split, voice=spk.manifest_voice())
