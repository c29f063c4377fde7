"""Offline Mandarin speech from libespeak-ng 1.52 (the `espeakng-loader` wheel), through ctypes.

Synchronous mode: espeak_Synth returns once the whole utterance has gone through our callback,
so one process synthesizes one utterance at a time with no threads and no sound device.
"""

from __future__ import annotations

import ctypes
import shutil
import tempfile
from pathlib import Path

import numpy as np

from asrtune.errors import UserError

_AUDIO_OUTPUT_SYNCHRONOUS = 2
_POS_CHARACTER = 1
_CHARS_UTF8 = 1
_RATE, _PITCH, _RANGE = 1, 3, 4

_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)


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
        self.sample_rate = self._lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, data_path, 0)
        if self.sample_rate <= 0:
            raise UserError(f"libespeak-ng failed to initialise with data at {data_path.decode()}")
        self._chunks: list[np.ndarray] = []

        def collect(wav, n, _events):
            if wav and n > 0:
                self._chunks.append(np.ctypeslib.as_array(wav, shape=(n,)).copy())
            return 0

        self._callback = _CALLBACK(collect)  # keep a reference: ctypes does not
        self._lib.espeak_SetSynthCallback(self._callback)

    def synth(self, text: str, voice: str = "cmn", rate: int = 175, pitch: int = 50, pitch_range: int = 50) -> np.ndarray:
        """Speak `text`; returns int16 samples at `self.sample_rate`."""
        if self._lib.espeak_SetVoiceByName(voice.encode()) != 0:
            raise UserError(f"eSpeak NG has no voice '{voice}'")
        for param, value in ((_RATE, rate), (_PITCH, pitch), (_RANGE, pitch_range)):
            self._lib.espeak_SetParameter(param, value, 0)
        self._chunks = []
        data = text.encode("utf-8") + b"\0"
        self._lib.espeak_Synth(data, len(data), 0, _POS_CHARACTER, 0, _CHARS_UTF8, None, None)
        self._lib.espeak_Synchronize()
        if not self._chunks:
            return np.zeros(0, dtype=np.int16)
        return np.concatenate(self._chunks)
