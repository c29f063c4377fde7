"""The demo's non-speech sets: clips with nothing to transcribe, made deterministically from a spec
file (demo/nonspeech.yaml) and the corpus's seed. A model that writes anything for one of them hallucinates.

    nonspeech: {silence: N, noise: N, tones: N, babble: N}   # clips of each kind
    babble_sentences: [...]                                   # what the babble's voices say (reversed)

Kinds, each clip 1-8 s:
  silence  digital silence (every other clip) and near-silence: faint white noise at -80..-65 dBFS
  noise    room noise: pink or brown noise, low-passed at 1-6 kHz, at -55..-35 dBFS, some with a mains hum
  tones    music-like: notes of a few harmonics, single or in chords, changing every 0.2-1 s
  babble   unintelligible speech-like sound: 3-6 streams of time-reversed eSpeak sentences (varied voices,
           rates, pitches), overlapped and mixed

Every utterance has an empty transcript (ingest accepts it for these clips only). For evaluation (role test)
each clip's speaker is its kind and its split test; for training (role nonspeech) each clip is its own speaker
and split.ratios place it. Each clip's noise comes from its own seeded generator (the spec's name, the seed, the kind,
the index); babble calls one fresh eSpeak instance in a fixed order: the same spec and seed give the same
samples, byte for byte.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import yaml

from asrtune.corpus.sources import Candidate
from asrtune.errors import UserError
from asrtune.synth.demo_corpus import ESPEAK_VOICES, Sized

KINDS = ("silence", "noise", "tones", "babble")
RATE = 16000
SECONDS = (1.0, 8.0)


def is_spec(path: Path) -> bool:
    """Whether a demo source is a non-speech spec (a mapping with `nonspeech`) rather than a topic file."""
    try:
        root = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return False  # load_topic names the problem
    return isinstance(root, dict) and "nonspeech" in root


def load_spec(path: Path) -> tuple[dict[str, tuple[int, int]], list[str]]:
    """({kind: (count, line)}, babble sentences); every problem names the file and line."""
    try:
        root = yaml.compose(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise UserError(f"{path}: not YAML: {e}") from None
    nodes = {k.value: v for k, v in root.value}
    for key, node in nodes.items():
        if key not in ("nonspeech", "babble_sentences"):
            raise UserError(f"{path}:{node.start_mark.line + 1}: unknown key `{key}` (a non-speech spec has `nonspeech` "
                            "and `babble_sentences`)")
    spec = nodes["nonspeech"]
    if not isinstance(spec, yaml.MappingNode):
        raise UserError(f"{path}:{spec.start_mark.line + 1}: `nonspeech` must map kinds ({', '.join(KINDS)}) to clip counts")
    counts: dict[str, tuple[int, int]] = {}
    for k, v in spec.value:
        line = k.start_mark.line + 1
        if k.value not in KINDS:
            raise UserError(f"{path}:{line}: unknown kind `{k.value}` (kinds: {', '.join(KINDS)})")
        if not (isinstance(v, yaml.ScalarNode) and v.value.isdigit()):
            raise UserError(f"{path}:{line}: `{k.value}` must be a count of clips (a whole number >= 0)")
        counts[k.value] = (int(v.value), line)
    if not any(n for n, _ in counts.values()):
        raise UserError(f"{path}:{spec.start_mark.line + 1}: `nonspeech` asks for no clip")
    sentences: list[str] = []
    node = nodes.get("babble_sentences")
    if node is not None:
        if not isinstance(node, yaml.SequenceNode) or not all(isinstance(i, yaml.ScalarNode) and i.value.strip() for i in node.value):
            raise UserError(f"{path}:{node.start_mark.line + 1}: `babble_sentences` must be a list of non-empty strings")
        sentences = [i.value.strip() for i in node.value]
    if counts.get("babble", (0, 0))[0] and not sentences:
        raise UserError(f"{path}:{counts['babble'][1]}: babble needs `babble_sentences` to reverse")
    return counts, sentences


def _rng(name: str, seed: int, kind: str, index: int) -> np.random.Generator:
    digest = hashlib.sha256(f"{name}:{seed}:{kind}:{index}".encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


def _seconds(rng: np.random.Generator) -> float:
    return round(float(rng.uniform(*SECONDS)), 2)


def _at_level(x: np.ndarray, dbfs: float) -> np.ndarray:
    """`x` scaled to an RMS of `dbfs` (full scale 1.0)."""
    rms = float(np.sqrt(np.mean(x.astype(np.float64) ** 2)))
    return (x * (10 ** (dbfs / 20) / rms if rms > 0 else 0.0)).astype(np.float32)


def _fade(x: np.ndarray, rate: int, ms: float = 10.0) -> np.ndarray:
    n = min(len(x) // 2, int(rate * ms / 1000))
    if n:
        ramp = np.linspace(0.0, 1.0, n, dtype=np.float32)
        x[:n] *= ramp
        x[-n:] *= ramp[::-1]
    return x


def silence(rng: np.random.Generator, index: int) -> np.ndarray:
    n = int(_seconds(rng) * RATE)
    if index % 2 == 0:
        return np.zeros(n, dtype=np.float32)  # digital silence
    return _at_level(rng.standard_normal(n), float(rng.uniform(-80, -65)))


def _shaped(rng: np.random.Generator, n: int, slope: float, cutoff: float) -> np.ndarray:
    """Gaussian noise with power falling as 1/f^slope (1: pink, 2: brown) and a smooth low-pass at `cutoff` Hz."""
    spectrum = np.fft.rfft(rng.standard_normal(n))
    f = np.fft.rfftfreq(n, 1 / RATE)
    f[0] = f[1]
    gain = f ** (-slope / 2) / (1 + (f / cutoff) ** 4)
    return np.fft.irfft(spectrum * gain, n)


def noise(rng: np.random.Generator, index: int) -> np.ndarray:
    n = int(_seconds(rng) * RATE)
    x = _shaped(rng, n, float(rng.choice([1.0, 2.0])), float(rng.uniform(1000, 6000)))
    t = np.arange(n) / RATE
    x = x / np.sqrt(np.mean(x**2)) * (1 + 0.3 * np.sin(2 * np.pi * rng.uniform(0.05, 0.5) * t + rng.uniform(0, 2 * np.pi)))
    if rng.random() < 0.4:  # a mains hum with its harmonics (50 or 60 Hz)
        mains = float(rng.choice([50.0, 60.0]))
        hum = sum(np.sin(2 * np.pi * mains * k * t + rng.uniform(0, 2 * np.pi)) / k for k in (1, 2, 3))
        x = x + hum * float(rng.uniform(0.1, 0.5))
    return _fade(_at_level(x, float(rng.uniform(-55, -35))), RATE)


def _note(rng: np.random.Generator, midi: float, n: int, harmonics: int) -> np.ndarray:
    t = np.arange(n) / RATE
    f0 = 440.0 * 2 ** ((midi - 69) / 12)
    tone = sum(np.sin(2 * np.pi * f0 * k * t) / k**1.5 for k in range(1, harmonics + 1) if f0 * k < RATE / 2 - 500)
    attack = min(n, max(1, int(RATE * rng.uniform(0.005, 0.03))))
    envelope = np.exp(-t * rng.uniform(0.5, 4.0))
    envelope[:attack] *= np.linspace(0, 1, attack)
    return tone * envelope


def tones(rng: np.random.Generator, index: int) -> np.ndarray:
    n = int(_seconds(rng) * RATE)
    out = np.zeros(n)
    harmonics = int(rng.integers(2, 7))
    root = int(rng.integers(48, 72))
    scale = (0, 2, 4, 5, 7, 9, 11, 12)
    start = 0
    while start < n:
        length = min(n - start, int(RATE * rng.uniform(0.2, 1.0)))
        degree = int(rng.integers(0, len(scale)))
        chord = rng.random() < 0.4
        notes = [root + scale[degree]] + ([root + scale[(degree + 2) % 8], root + scale[(degree + 4) % 8]] if chord else [])
        out[start:start + length] += sum(_note(rng, m, length, harmonics) for m in notes)
        start += length
    return _fade(_at_level(out, float(rng.uniform(-26, -18))), RATE)


def babble(rng: np.random.Generator, index: int, engine, sentences: list[str]) -> tuple[np.ndarray, int]:
    """Samples at eSpeak's rate (ingest converts them to 16 kHz)."""
    rate = engine.sample_rate
    n = int(_seconds(rng) * rate)
    out = np.zeros(n)
    for _ in range(int(rng.integers(3, 7))):
        voice, speed, pitch = str(rng.choice(ESPEAK_VOICES)), int(rng.integers(140, 211)), int(rng.integers(25, 76))
        stream: list[np.ndarray] = []
        offset = int(rng.integers(0, rate))
        while sum(map(len, stream)) < n + offset:
            said = engine.synth(str(rng.choice(sentences)), voice, speed, pitch).samples.astype(np.float64) / 32768
            stream.append(said[::-1])  # reversed: speech-like, unintelligible
        mixed = np.concatenate(stream)[offset:offset + n]
        out += mixed / max(np.sqrt(np.mean(mixed**2)), 1e-9) * 10 ** (rng.uniform(-6, 0) / 20)
    return _fade(_at_level(out, float(rng.uniform(-30, -20))), rate), rate


def clips(path: Path, seed: int, evaluation: bool = True) -> Iterator[Candidate]:
    """Every clip of the spec, kind by kind in KINDS order: fixed to test, or (training) placed by split.ratios."""
    counts, sentences = load_spec(path)
    engine = None
    for kind in KINDS:
        count, line = counts.get(kind, (0, 0))
        for i in range(count):
            rng = _rng(path.stem, seed, kind, i)
            if kind == "babble":
                if engine is None:
                    from asrtune.synth.espeak import Espeak

                    engine = Espeak()  # one fresh instance, called in a fixed order: the same samples every run
                audio = babble(rng, i, engine, sentences)
            else:
                audio = ({"silence": silence, "noise": noise, "tones": tones}[kind](rng, i), RATE)
            utt = f"{kind}-{i:03d}"
            yield Candidate(utt, audio, "", kind if evaluation else utt, f"{path}:{line}", split="test" if evaluation else None,
                            nonspeech=True)


def read_nonspeech(path: Path, seed: int, evaluation: bool = True, say=print) -> Sized:
    """Checks the spec now; makes the clips as the result is iterated."""
    counts, _ = load_spec(path)
    say(f"{path}: non-speech clips, " + ", ".join(f"{counts.get(k, (0, 0))[0]} {k}" for k in KINDS) + f" (seed {seed})")
    return Sized(clips(path, seed, evaluation), sum(n for n, _ in counts.values()))
