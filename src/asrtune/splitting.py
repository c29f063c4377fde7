"""Train/val/test assignment: seeded, speaker-disjoint when speakers are known."""

from __future__ import annotations

import random
from collections import defaultdict

SPLITS = ("train", "val", "test")


def assign(keys_and_groups: list[tuple[str, str]], ratios: tuple[float, float, float], seed: int) -> dict[str, str]:
    """Map key -> split. Whole groups (speakers, or single utterances) go to one split.

    Groups are shuffled with a seeded RNG, then each goes to the split furthest below its target
    share, so the utterance counts land as close to `ratios` as whole groups allow.
    """
    groups: dict[str, list[str]] = defaultdict(list)
    for key, group in keys_and_groups:
        groups[group].append(key)
    order = sorted(groups)
    random.Random(seed).shuffle(order)
    total = len(keys_and_groups)
    targets = [r * total for r in ratios]
    counts = [0, 0, 0]
    out: dict[str, str] = {}
    for group in order:
        open_splits = [i for i in range(3) if ratios[i] > 0]
        # furthest below target, relatively; ties go to the larger absolute deficit, then to train/val/test order
        best = max(open_splits, key=lambda i: ((targets[i] - counts[i]) / targets[i], targets[i] - counts[i], -i))
        counts[best] += len(groups[group])
        for key in groups[group]:
            out[key] = SPLITS[best]
    return out
