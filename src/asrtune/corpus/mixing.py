"""Curriculum data mixing (as in the Fun-ASR-finetune fork): each stage's mix is all the domain utterances plus
seeded samples of the general (and non-speech) pools making up their shares of the whole mix."""

from __future__ import annotations

import random


def pool_count(n_domain: int, share: float, other_share: float = 0.0) -> int:
    """Utterances to add from one pool so they make up `share` of the mix while another pool makes up
    `other_share`: the mix is n_domain / (1 - share - other_share), so int(n_domain * share / (1 - both))."""
    return int(n_domain * share / (1.0 - share - other_share))


def choose(n_available: int, n_wanted: int, seed: str) -> tuple[set[int], bool]:
    """Indices of the pool's utterances to use, without replacement; (indices, ran_short)."""
    if n_wanted >= n_available:
        return set(range(n_available)), n_wanted > n_available
    return set(random.Random(seed).sample(range(n_available), n_wanted)), False
