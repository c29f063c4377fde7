"""Fun-ASR's mixed Chinese/English normalization (after its whisper_mix_normalize), and the
tokenization used for scoring: Chinese per character, English (and numbers) per word."""

from __future__ import annotations

import re
import unicodedata
from functools import lru_cache

from asrtune.params import Normalize

# a scoring token: a run of Latin letters / digits (a word), or any other single visible character
TOKEN = re.compile(r"[0-9A-Za-z\u00C0-\u024F']+|[^\s]")
_CJK = r"\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
_CJK_RUN = re.compile(rf"[{_CJK}]+")


@lru_cache(maxsize=1)
def _t2s():
    import opencc

    return opencc.OpenCC("t2s")


def _remove_punctuation(text: str) -> str:
    """Whisper's basic normalizer without its lower-casing (normalize.lowercase decides that):
    bracketed and parenthesized asides go, punctuation, symbols and marks become spaces."""
    from transformers.models.whisper.english_normalizer import remove_symbols

    text = re.sub(r"[<\[][^>\]]*[>\]]", "", text)
    text = re.sub(r"\(([^)]+?)\)", "", text)
    return remove_symbols(text)


def _numbers_to_arabic(text: str) -> str:
    import cn2an

    # only runs of Chinese characters: cn2an would otherwise touch English words
    return _CJK_RUN.sub(lambda m: cn2an.transform(m.group(0), "cn2an"), text)


def normalize(text: str, opts: Normalize) -> str:
    if opts.fullwidth_to_halfwidth:
        text = unicodedata.normalize("NFKC", text)  # full-width letters, digits and punctuation to ASCII
    if opts.traditional_to_simplified:
        text = _t2s().convert(text)
    if opts.numbers_to_arabic:
        text = _numbers_to_arabic(text)
    if opts.remove_punctuation:
        text = _remove_punctuation(text)
    if opts.lowercase:
        text = text.lower()
    return " ".join(text.split())


def tokens(text: str) -> list[str]:
    """Chinese characters one by one, English words whole: spaces never count as characters."""
    return TOKEN.findall(text)
