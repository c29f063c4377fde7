"""Train/val/test assignment: seeded, speaker-disjoint when speakers are known, sentence-disjoint on request,
and the test sentences a split shares with training."""

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


def groups_for(records: list[tuple[str, str, str]], by: str) -> list[tuple[str, str]]:
    """(key, group) for each (key, speaker, normalized transcript) under split.by: a group never straddles splits.
    speaker: its speaker (an utterance without one goes alone); text: its sentence, so every copy of
    a sentence lands in one split; speaker_text: both at once (see linked); utterance: itself."""
    if by == "speaker_text":
        return linked(records)
    if by == "text":
        return [(key, "txt:" + text) for key, _, text in records]
    return [(key, "spk:" + speaker if by == "speaker" and speaker else "utt:" + key) for key, speaker, _ in records]


def linked(records: list[tuple[str, str, str]]) -> list[tuple[str, str]]:
    """(key, group) for split.by: speaker_text. Utterances that share a speaker or a normalized
    transcript are linked, and each connected set is one group: speakers and sentences can then
    never straddle splits. A group is named by its smallest key (deterministic, whatever the order)."""
    parent: dict[str, str] = {}

    def root(x: str) -> str:
        parent.setdefault(x, x)
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    def union(a: str, b: str) -> None:
        ra, rb = root(a), root(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)

    for key, speaker, text in records:
        union("k:" + key, "t:" + text)
        if speaker:
            union("k:" + key, "s:" + speaker)
    name: dict[str, str] = {}
    for key, _, _ in records:
        r = root("k:" + key)
        name[r] = min(name.get(r, key), key)
    return [(key, "grp:" + name[root("k:" + key)]) for key, _, _ in records]


def overlap(where: dict[str, str], text_of: dict[str, str]) -> dict:
    """Test utterances whose normalized transcript also occurs in train or val: sentences the model may
    have learned by heart, which make a test CER look better than on unseen speech."""
    seen = {text_of[k] for k, s in where.items() if s != "test"}
    test = [k for k, s in where.items() if s == "test"]
    shared = sum(text_of[k] in seen for k in test)
    return {"test_utterances": shared, "share": round(shared / len(test), 4) if test else 0.0}
