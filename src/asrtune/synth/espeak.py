"""Offline Mandarin speech from libespeak-ng 1.52 (the `espeakng-loader` wheel), through ctypes.

Synchronous mode: espeak_Synth returns once the whole utterance has gone through our callback,
so one process synthesizes one utterance at a time with no threads and no sound device.

Timestamps: the callback also receives eSpeak's events, each with its time in the output: a word event
where a word of the text starts (its character position) and, with phoneme events on, every phoneme and
pause. A word is spoken from its first sounding phoneme to the event after its last one (pauses excluded);
the aligner's units (asrtune.corpus.timestamps.units) get the span of the words that start inside them, and the
characters of a dictionary word that eSpeak speaks as one (患者) share its span evenly.
"""

from __future__ import annotations

import ctypes
import shutil
import tempfile
from pathlib import Path

import numpy as np

from asrtune.corpus import timestamps
from asrtune.corpus.timestamps import Speech
from asrtune.errors import UserError

_AUDIO_OUTPUT_SYNCHRONOUS = 2
_PHONEME_EVENTS = 1  # espeakINITIALIZE_PHONEME_EVENTS
_WORD, _PHONEME = 1, 7  # espeak_EVENT_TYPE; 0 ends a callback's list
_POS_CHARACTER = 1
_CHARS_UTF8 = 1
_RATE, _PITCH, _RANGE = 1, 3, 4



class _Event(ctypes.Structure):  # espeak_EVENT (speak_lib.h)
    _fields_ = [("type", ctypes.c_int), ("unique_identifier", ctypes.c_uint), ("text_position", ctypes.c_int),
                ("length", ctypes.c_int), ("audio_position", ctypes.c_int), ("sample", ctypes.c_int),
                ("user_data", ctypes.c_void_p), ("id", ctypes.c_char * 8)]


_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.POINTER(_Event))


class Espeak:
    """A private libespeak-ng instance.

    The library keeps state across utterances (its pitch-flutter phase, among others), so the
    same text comes out slightly different depending on what was spoken before. Each instance
    loads its own copy of the shared library, hence fresh state: the same sequence of calls on a
    new instance gives the same samples, byte for byte.
    """

    def __init__(self) -> None:
        try:
            import espeakng_loader
        except ImportError as e:
            raise UserError(
                "demo corpora need the 'demo' extra (espeakng-loader): run `uv sync --extra demo`"
            ) from e
        self._tmp = tempfile.TemporaryDirectory(prefix="asrtune-espeak-")
        private_copy = Path(self._tmp.name) / "libespeak-ng.so"
        shutil.copy(espeakng_loader.get_library_path(), private_copy)
        self._lib = ctypes.CDLL(str(private_copy))
        self._lib.espeak_Initialize.restype = ctypes.c_int
        self._lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        self._lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        self._lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        self._lib.espeak_Synth.argtypes = [
            ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int, ctypes.c_uint,
            ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p,
        ]
        data_path = espeakng_loader.get_data_path().encode()
        self.sample_rate = self._lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, data_path, _PHONEME_EVENTS)
        if self.sample_rate <= 0:
            raise UserError(f"libespeak-ng failed to initialise with data at {data_path.decode()}")
        self._chunks: list[np.ndarray] = []
        self._events: list[tuple[int, int, float, bytes]] = []  # (type, character position from 1, seconds, phoneme)
        self._failure: BaseException | None = None

        def collect(wav, n, events):
            try:  # ctypes prints an exception raised here and carries on: keep it for synth to raise
                if wav and n > 0:
                    self._chunks.append(np.ctypeslib.as_array(wav, shape=(n,)).copy())
                i = 0
                while events and events[i].type != 0:
                    e = events[i]
                    if e.type in (_WORD, _PHONEME):
                        self._events.append((e.type, e.text_position, e.audio_position / 1000, e.id if e.type == _PHONEME else b""))
                    i += 1
            except BaseException as error:  # noqa: BLE001 (re-raised by synth)
                self._failure = self._failure or error
            return 0

        self._callback = _CALLBACK(collect)  # keep a reference: ctypes does not
        self._lib.espeak_SetSynthCallback(self._callback)

    def synth(self, text: str, voice: str = "cmn", rate: int = 175, pitch: int = 50, pitch_range: int = 50) -> Speech:
        """Speak `text`: int16 samples at `self.sample_rate`, and its units' times (None where the word
        events cannot give every unit one)."""
        if self._lib.espeak_SetVoiceByName(voice.encode()) != 0:
            raise UserError(f"eSpeak NG has no voice '{voice}'")
        for param, value in ((_RATE, rate), (_PITCH, pitch), (_RANGE, pitch_range)):
            self._lib.espeak_SetParameter(param, value, 0)
        self._chunks, self._events, self._failure = [], [], None
        data = text.encode("utf-8") + b"\0"
        self._lib.espeak_Synth(data, len(data), 0, _POS_CHARACTER, 0, _CHARS_UTF8, None, None)
        self._lib.espeak_Synchronize()
        if self._failure is not None:
            raise self._failure
        samples = np.concatenate(self._chunks) if self._chunks else np.zeros(0, dtype=np.int16)
        return Speech(samples, unit_times(text, self._events, len(samples) / self.sample_rate))


def unit_times(text: str, events: list[tuple[int, int, float, bytes]], duration: float) -> list[tuple[str, float, float]] | None:
    """(unit, start, end) per aligner unit of `text` from eSpeak's word and phoneme events. A word that starts
    in dropped text (an opening quote) belongs to the unit after it; a unit without a word of its own shares
    the span of the one before (a dictionary word eSpeak speaks as one: 患者; its reported length is 1, so it
    cannot tell). None when the text has no unit or its first unit has no word."""
    words: list[list] = []  # [character index, start, end] of each word that sounds
    sounding: list[int] = []  # indices into `phones` of the current word's sounding phonemes
    phones = [(t, name) for kind, _, t, name in events if kind == _PHONEME] + [(duration, b"_")]

    def close():
        if words and sounding:
            words[-1][1:] = [phones[sounding[0]][0], phones[sounding[-1] + 1][0]]
        elif words:
            words.pop()

    j = 0
    for kind, position, _, _ in events:
        if kind == _WORD:
            close()
            words.append([position - 1, None, None])
            sounding = []
        elif words:  # a phoneme of the current word: a pause (_, _:, _|) or a language switch ((en)) is silent
            if not phones[j][1].startswith((b"_", b"(")):
                sounding.append(j)
            j += 1
        else:
            j += 1
    close()
    units = timestamps.spans(text)
    if not units:
        return None
    spans, groups = [], []  # the span of each unit that has words of its own; the units that share it
    out: list[tuple[str, float, float]] = []
    for n, (unit, first, last) in enumerate(units):
        after = units[n - 1][2] if n else -1  # words that start after the previous unit's last character are this one's
        own = [w for w in words if after < w[0] <= last]
        if own:
            spans.append((min(w[1] for w in own), max(w[2] for w in own)))
            groups.append([len(out)])
        elif groups:
            groups[-1].append(len(out))
        else:
            return None
        out.append((unit, 0.0, 0.0))
    for members, (start, end) in zip(groups, spans):
        step = (end - start) / len(members)
        for k, n in enumerate(members):
            out[n] = (out[n][0], round(start + k * step, 3), round(start + (k + 1) * step, 3))
    return out
