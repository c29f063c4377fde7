"""Fun-ASR's mixed Chinese/English normalization (after its whisper_mix_normalize), and the
tokenization used for scoring: Chinese per character, English words and numbers whole."""

from __future__ import annotations

import re
import unicodedata
from functools import lru_cache

from asrtune.params import Normalize

# a scoring token: a run of Latin letters (a word), a run of digits (a number), or any other single visible
# character. Letters and digits split apart: "ct1" and "ct 1", "d2" and "d-2" must count alike.
TOKEN = re.compile(r"[A-Za-z\u00C0-\u024F']+|[0-9]+|[^\s]")
_CJK = r"\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"

# Chinese numerals: digits, and the place values that make a written-out number (三十八, 一百二)
_DIGITS = "零〇一二三四五六七八九两"
_PLACES = "十百千万亿"
# a percentage, a fraction, a range (二到三: both ends are numbers) or a numeral run (with its minus sign
# and decimal part)
_N = rf"[{_DIGITS}{_PLACES}]+"
_NUMERAL = re.compile(rf"百分之(?P<percent>{_N}(?:点[{_DIGITS}]+)?)|(?P<den>{_N})分之(?P<num>{_N})"
                      rf"|(?P<low>{_N})(?P<to>[到至])(?P<high>{_N})|(?P<run>负?{_N}(?:点[{_DIGITS}]+)?)")
# what a lone numeral counts (classifiers and units): only before one of these is 三 a number (三次, 三床);
# 一起, 统一, 星期一, 一样, 一些, 二甲双胍, 二聚体 are words. Not 分 alone (十分 is "very"), 下 (一下, 周五下午), 样 (一样).
_COUNTED = tuple("""个 次 天 年 月 日 号 岁 周 秒 点 刻 度 倍 层 楼 床 片 粒 颗 袋 支 瓶 杯 碗 盒 包 张 本 件 条 只 家 位 名 人 种
    类 级 针 剂 套 块 元 斤 克 米 升 遍 趟 顿 步 场 门 部 辆 台 份 段 道 圈 笔 组 节 项 页 章 集 期 届 批 折 轮 句 滴 价 分钟 小时
    毫克 千克 公斤 毫升 公里 厘米 毫米 年级 周岁 星期 礼拜""".split())
_WORDS_WITH_ONE = ("一点",)  # 一 + a unit that is mostly a word: 慢一点, 一点都不 (a bit), rarely one o'clock
_NOT_AFTER = "同统唯进"  # 同一类, 统一, 唯一, 进一步: the same, unified, only, further


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


def _is_number(text: str, start: int, end: int) -> bool:
    """Whether the numeral run text[start:end] is a number, not part of a word."""
    run, after = text[start:end].removeprefix("负"), text[end:]
    if len(run) > 1 and (any(c in _PLACES for c in run) or "点" in run):
        return True  # written out with a place value or a decimal point: 三十八, 一百二, 二点九
    if len(run) > 1:  # bare digits: a year or a code when long or with a zero (二零二四), else a range or a list (三四天, 周一三五)
        return len(run) >= 4 or "零" in run or "〇" in run
    if start == 0 and not after:
        return True  # a numeral on its own (a timed unit: 三 -> 3, as its transcript's 三次 -> 3次)
    return ((not start or text[start - 1] not in _NOT_AFTER) and after.startswith(_COUNTED)
            and not (run + after).startswith(_WORDS_WITH_ONE))


def _arabic(match: re.Match) -> str:
    """The match in Arabic digits, or as it was where cn2an finds no number in it (万一, 千万, 二十零)."""
    import cn2an

    def number(chinese: str) -> str:
        return str(cn2an.cn2an(chinese, "smart"))

    try:
        if match["percent"]:
            return number(match["percent"]) + "%"
        if match["den"]:
            return f"{number(match['num'])}/{number(match['den'])}"
        if match["low"]:
            return number(match["low"]) + match["to"] + number(match["high"])
        return number(match["run"])
    except (ValueError, KeyError):  # cn2an 0.5 raises KeyError, not its ValueError, on a run such as 二十零
        return match.group(0)


def _numbers_to_arabic(text: str) -> str:
    """Chinese numbers to Arabic digits (三十八度 -> 38度, 三次 -> 3次), leaving words that hold a numeral
    (一起, 统一, 二聚体) as they are: they are Chinese words, scored as such, and no recognizer writes 1起."""
    def convert(m: re.Match) -> str:
        return _arabic(m) if m["run"] is None or _is_number(text, m.start(), m.end()) else m.group(0)

    return _NUMERAL.sub(convert, text)


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
    """Chinese characters one by one, English words and numbers whole (and apart: ct1 is ct, 1): spaces
    never count as characters."""
    return TOKEN.findall(text)
