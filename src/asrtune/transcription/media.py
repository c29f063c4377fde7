"""Audio of any length in any container, as 16 kHz mono float32: what `asrtune transcribe` reads.

WAV, FLAC, Ogg/Vorbis and AIFF go through libsndfile (soundfile); everything else (MP3, M4A/AAC, Opus, MP4, MKV, WebM,
MOV, AMR, ...) through FFmpeg inside PyAV's wheel, which decodes the first audio stream of a container and ignores
its video. Channels are averaged as they are decoded and torchaudio resamples, as the project's other audio does
(asrtune.corpus.audio.to_16k_mono): an hour of 48 kHz audio holds about 700 MB before resampling, 230 MB after."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from asrtune.corpus.audio import SAMPLE_RATE, to_16k_mono

# what a folder given to transcribe is searched for (files given by name are tried whatever their extension)
EXTENSIONS = frozenset({".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".m4a", ".m4b", ".aac", ".wma", ".aif", ".aiff",
                        ".amr", ".3gp", ".mp4", ".m4v", ".mkv", ".mka", ".webm", ".mov", ".avi", ".mpg", ".mpeg"})
# read by libsndfile first (FFmpeg when it cannot)
SOUNDFILE = frozenset({".wav", ".wave", ".flac", ".ogg", ".oga", ".aif", ".aiff"})


class MediaError(Exception):
    """A file whose audio cannot be read; the message says why in one line."""


def _first_line(e: BaseException) -> str:
    text = (getattr(e, "strerror", None) or str(e)).strip().splitlines()  # FFmpeg's reason without the path
    return text[0] if text else type(e).__name__


def _soundfile(path: Path) -> tuple[np.ndarray, int] | None:
    """(mono samples, rate) for a WAV, FLAC, Ogg/Vorbis or AIFF file libsndfile reads, else None (FFmpeg tries it).
    Other extensions never reach libsndfile: its MP3 reader prints mpg123's notes on a bad file."""
    import soundfile as sf

    if path.suffix.lower() not in SOUNDFILE:
        return None
    try:
        samples, rate = sf.read(str(path), dtype="float32", always_2d=True)
    except Exception:  # noqa: BLE001 (a file named .wav that is not one: FFmpeg may still read it, or say why not)
        return None
    return samples.mean(axis=1), rate


def _ffmpeg(path: Path) -> tuple[np.ndarray, int]:
    import av

    try:
        container = av.open(str(path))
    except av.FFmpegError as e:
        raise MediaError(f"not a media file FFmpeg reads ({_first_line(e)})") from None
    with container:
        if not container.streams.audio:
            raise MediaError("has no audio stream")
        stream = container.streams.audio[0]
        rate = stream.codec_context.sample_rate or stream.rate
        if not rate:
            raise MediaError("its audio stream has no sample rate")
        # planar float at the stream's own rate: to_ndarray gives (channels, samples); the channels are averaged here
        resampler = av.AudioResampler(format="fltp", rate=rate)
        chunks = []
        try:
            for frame in container.decode(stream):
                for out in resampler.resample(frame):
                    chunks.append(out.to_ndarray().mean(axis=0, dtype=np.float32))
            for out in resampler.resample(None):
                chunks.append(out.to_ndarray().mean(axis=0, dtype=np.float32))
        except av.FFmpegError as e:
            if not chunks:
                raise MediaError(f"its audio cannot be decoded ({_first_line(e)})") from None
            # a damaged tail (a recording cut off mid-write): keep what decoded before it
    return (np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.float32)), rate


def load(path: Path) -> np.ndarray:
    """16 kHz mono float32 samples of the file's (first) audio stream; MediaError says why a file cannot be read."""
    if not path.exists():
        raise MediaError("no such file")
    if not path.is_file():
        raise MediaError("not a file")
    read = _soundfile(path)
    try:
        samples, rate = read if read is not None else _ffmpeg(path)
    except MediaError:
        raise
    except Exception as e:  # noqa: BLE001 (whatever else FFmpeg or PyAV raise on a strange file: a reason, not a stack trace)
        raise MediaError(f"cannot be decoded ({type(e).__name__}: {_first_line(e)})") from None
    if len(samples) == 0:
        raise MediaError("holds no audio samples")
    return to_16k_mono(samples, rate) if rate != SAMPLE_RATE else samples.astype(np.float32, copy=False)
