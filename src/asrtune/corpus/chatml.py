"""Fun-ASR-Nano ChatML records, exactly as its trainer reads them."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from asrtune.corpus.sources import SPEECH_PATH


def speech_length(duration_s: float) -> int:
    """Number of 10 ms fbank frames (25 ms window) Fun-ASR computes for this duration."""
    duration_ms = int(round(duration_s * 1000))
    return max(0, (duration_ms - 25) // 10 + 1)


def record(key: str, audio_path: str, text: str, duration_s: float, text_length: int,
           system: str, prompt: str, audio_sha256: str | None = None, timestamps: list | None = None,
           pseudo: bool = False) -> dict:
    """Fun-ASR-Nano's record; `audio_sha256` (beside its keys, which Fun-ASR's reader ignores) makes
    the record change when the audio does, so split, mix and training rerun; `timestamps` are the
    reference [start, end] per unit of the text (asrtune.corpus.timestamps), where the corpus has them, or the
    base aligner's pseudo-labels (`pseudo`: then `pseudo_timestamps: true`, and score never scores them)."""
    return {
        "key": key,
        "messages": [
            {"role": "system", "content": system},
            {"role": "user", "content": f"{prompt}<|startofspeech|>!{audio_path}<|endofspeech|>"},
            {"role": "assistant", "content": text},
        ],
        "speech_length": speech_length(duration_s),
        "text_length": text_length,
    } | ({"audio_sha256": audio_sha256} if audio_sha256 else {}) | ({"timestamps": timestamps} if timestamps is not None else {}) \
      | ({"pseudo_timestamps": True} if pseudo and timestamps is not None else {})


def audio_path_for(manifest_path: str, mode: str) -> str:
    """Manifests hold repository-relative paths; 'absolute' resolves them for tools run elsewhere."""
    if mode == "absolute" and not os.path.isabs(manifest_path):
        return Path(os.path.abspath(manifest_path)).as_posix()
    return manifest_path


def key_for(corpus: str, utt_id: str) -> str:
    """Keys carry the corpus name so utterances stay distinct once corpora are mixed."""
    return f"{corpus}-{utt_id}"


@dataclass(frozen=True)
class Example:
    key: str
    audio: str
    text: str
    system: str = ""  # the system message Fun-ASR's own trainer reads (asrtune's families build their prompt from the model)
    prompt: str = ""  # the user message's text before the speech (e.g. 语音转写：)
    timestamps: tuple | None = None  # the record's reference ((start, end), ...) per unit of the text, where it has them


def examples(records) -> list[Example]:
    """The key, audio path, transcript, system message, prompt and reference timestamps of ChatML records."""
    out = []
    for r in records:
        messages = {m["role"]: m["content"] for m in r["messages"]}
        speech = SPEECH_PATH.search(messages["user"])
        times = r.get("timestamps")
        out.append(Example(r["key"], speech.group(1), messages["assistant"], messages.get("system", ""),
                           messages["user"][: speech.start()], None if times is None else tuple(tuple(p) for p in times)))
    return out
