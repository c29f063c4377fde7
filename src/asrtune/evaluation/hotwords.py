"""Context lists (hotwords): the terms a prompt carries as context, built the same way for training and decoding
(each family puts a list in its prompt with one function: whisper.prompt_ids, audiollm.Prompt).

Training (train.hotwords): per utterance, seeded by its key, the terms of the list its transcript holds (each
dropped at `drop`), plus `distractors` other terms, `near` of them the ones closest in pinyin to its transcript (the
sound-alikes decoding's selection offers), the rest drawn at random, shuffled; a share `empty` gets no list at all.
The model learns to use a list and to ignore what in it was not said, and still transcribes without one.

Decoding (decode.hotwords): the whole list, or with decode.hotwords_select k, per utterance the k terms closest in
pinyin to what a first pass without the list heard (a list longer than a prompt holds, Whisper's 224 tokens say);
with decode.hotwords_max_distance, only terms at most that far from it (general speech then gets short lists or none).
With decode.hotwords_bonus b, a second-pass transcript that holds terms its first pass lacks (`gained`, in term
tokens) stands only if the model, given the plain prompt, finds it at most b nats a gained token less likely than the
first pass (`keeps`): the list may tip a close call between sound-alikes, not overrule what the audio says.

Terms are matched on lower-cased tokens (asrtune's: Chinese characters, English words), not on normalize's params:
a normalization change would otherwise rerun training and decoding."""

from __future__ import annotations

import random
from collections import Counter
from functools import lru_cache

from asrtune.corpus.chatml import Example
from asrtune.evaluation.normalization import tokens
from asrtune.evaluation.terms import occurrences


def _tokens(text: str) -> list[str]:
    return tokens(text.lower())


class Sampler:
    """example -> its training context list (train.hotwords), the same on every call and in every process: the
    random draws are seeded by `seed` and the utterance's key alone."""

    def __init__(self, terms: list[str], distractors: int, drop: float, empty: float, seed: int, near: int = 0):
        self.terms = list(dict.fromkeys(terms))
        self.keys = [_tokens(t) for t in self.terms]
        self.distractors, self.drop, self.empty, self.seed = distractors, drop, empty, seed
        self.near = min(near, distractors)

    def __call__(self, ex: Example) -> list[str]:
        rng = random.Random(f"{self.seed}/{ex.key}")  # a str seed is hashed the same in every run
        if rng.random() < self.empty:
            return []
        said = _tokens(ex.text)
        true = [t for t, k in zip(self.terms, self.keys) if k and occurrences(said, [k])]
        kept = [t for t in true if rng.random() >= self.drop]
        others = [t for t in self.terms if t not in true]
        close = closest(others, ex.text, self.near) if self.near else []
        others = [t for t in others if t not in close]
        words = kept + close + rng.sample(others, min(self.distractors - len(close), len(others)))
        rng.shuffle(words)
        return words


@lru_cache(maxsize=100_000)
def _syllable(token: str) -> str:
    """A Chinese character's pinyin without tone (pypinyin's reading of it alone); another token as it is."""
    from pypinyin import lazy_pinyin

    return lazy_pinyin(token)[0] if len(token) == 1 and "\u3400" <= token <= "\u9fff" else token


@lru_cache(maxsize=100_000)
def _substitution(a: str, b: str) -> float:
    """The share of letters to edit to turn syllable a into b (lin -> ling 0.25, xi -> si 0.5)."""
    if a == b:
        return 0.0
    row = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        prev, row[0] = row[0], i
        for j, y in enumerate(b, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (x != y))
    return row[-1] / max(len(a), len(b))


def distance(term: list[str], heard: list[str]) -> float:
    """How far the term's syllables are from the closest stretch of the hypothesis' (an edit distance that may start
    and end anywhere in the hypothesis; a syllable substituted costs _substitution, one inserted or deleted 1), over
    the term's syllables: 0 when the hypothesis holds it or a homophone (阿莫西林 in 阿莫西琳)."""
    row = [0.0] * (len(heard) + 1)  # aligning no term syllable costs nothing, wherever in the hypothesis
    for i, s in enumerate(term, 1):
        prev, row[0] = row[0], float(i)
        for j, h in enumerate(heard, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + _substitution(s, h))
    return min(row) / max(len(term), 1)


def closest(terms: list[str], hypothesis: str, k: int, max_distance: float | None = None) -> list[str]:
    """The k terms of the list closest in pinyin to a hypothesis (distance), ties in list order; with max_distance,
    only those at most that far (none, where nothing like a term was heard: the plain prompt)."""
    heard = [_syllable(t) for t in _tokens(hypothesis)]
    far = [distance([_syllable(t) for t in _tokens(term)], heard) for term in terms]
    order = sorted(range(len(terms)), key=lambda i: (far[i], i))[:k]
    return [terms[i] for i in order if max_distance is None or far[i] <= max_distance]


def for_decoding(terms: list[str], select: int | None, first_pass: dict[str, str],
                 max_distance: float | None = None) -> dict[str, list[str]]:
    """key -> the context list its second pass gets: the whole list, or the `select` terms closest to the first
    pass's hypothesis (its text: decode's times after a tab left out) when the list is longer, and with max_distance
    only the terms that close to it."""
    if max_distance is None and (select is None or len(terms) <= select):
        return {key: terms for key in first_pass}
    k = len(terms) if select is None else select
    return {key: closest(terms, hyp.partition("\t")[0], k, max_distance) for key, hyp in first_pass.items()}


@lru_cache(maxsize=8)
def _term_keys(terms: tuple[str, ...]) -> list[list[str]]:
    """The list's distinct terms as tokens, made once per list (gained is called per utterance)."""
    return [list(k) for k in dict.fromkeys(tuple(_tokens(t)) for t in terms) if k]


def gained(terms: list[str], first: str, second: str) -> int:
    """The term tokens the second pass holds beyond the first: per term, its occurrences in `second` (those not
    inside a longer term's, as score counts them) beyond its occurrences in `first`, times its length in tokens."""
    keys = _term_keys(tuple(terms))
    before = Counter(k for k, _, _ in occurrences(_tokens(first), keys))
    after = Counter(k for k, _, _ in occurrences(_tokens(second), keys, maximal=True))
    return sum(max(0, n - before[k]) * len(keys[k]) for k, n in after.items())


def keeps(bonus: float, gained_tokens: int, second_log_prob: float, first_log_prob: float) -> bool:
    """decode.hotwords_bonus' rule: the second pass stands when, under the plain prompt, its log-probability plus
    `bonus` per gained term token is at least the first pass's (shallow fusion's per-token bonus, applied to the
    choice between the two transcripts)."""
    return second_log_prob + bonus * gained_tokens >= first_log_prob


def needs_first_pass(terms: list[str], select: int | None, max_distance: float | None, bonus: float | None = None) -> bool:
    """Whether for_decoding reads a first pass's hypotheses, or decode.hotwords_bonus compares with them (else any
    text will do)."""
    return max_distance is not None or bonus is not None or (select is not None and len(terms) > select)
