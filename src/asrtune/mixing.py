"""Curriculum data mixing (as in the Fun-ASR-finetune fork): general share r of each stage."""

from __future__ import annotations

import random


def general_count(n_domain: int, share: float) -> int:
    """General utterances to add so they make up `share` of the mix: int(n_domain * r / (1 - r))."""
    return int(n_domain * share / (1.0 - share))


def choose(n_available: int, n_wanted: int, seed: str) -> tuple[set[int], bool]:
    """Indices of the general utterances to use, without replacement; (indices, ran_short)."""
    if n_wanted >= n_available:
        return set(range(n_available)), n_wanted > n_available
    return set(random.Random(seed).sample(range(n_available), n_wanted)), False
