"""Train/val/test assignment: seeded, speaker-disjoint when speakers are known, sentence-disjoint on request,
honouring the splits a corpus fixes; the test sentences a split shares with training; who speaks in each split."""

from __future__ import annotations

import random
from collections import defaultdict

SPLITS = ("train", "val", "test")


class Conflict(Exception):
    """Two utterances of one group (which must land in one split) are fixed to different splits."""

    def __init__(self, group: str, first: tuple[str, str], second: tuple[str, str]):
        super().__init__(f"{group}: {first[0]} is fixed to {first[1]}, {second[0]} to {second[1]}")
        self.group, self.first, self.second = group, first, second


def assign(keys_and_groups: list[tuple[str, str]], ratios: tuple[float, float, float], seed: int,
           fixed: dict[str, str] | None = None) -> dict[str, str]:
    """Map key -> split. Whole groups (speakers, or single utterances) go to one split.

    `fixed` (key -> split): utterances whose split the corpus fixes. A group holding any goes, whole,
    to their split (Conflict if they name two). The other groups are shuffled with a seeded RNG, then
    each goes to the split furthest below its target share, counting the fixed ones, so the utterance
    counts land as close to `ratios` as whole groups (and what is fixed) allow.
    """
    fixed = fixed or {}
    groups: dict[str, list[str]] = defaultdict(list)
    for key, group in keys_and_groups:
        groups[group].append(key)
    total = len(keys_and_groups)
    targets = [r * total for r in ratios]
    counts = [0, 0, 0]
    out: dict[str, str] = {}
    for group in sorted(groups):
        pinned = [(key, fixed[key]) for key in sorted(groups[group]) if key in fixed]
        other = next((p for p in pinned if p[1] != pinned[0][1]), None)
        if other is not None:
            raise Conflict(group, pinned[0], other)
        if pinned:
            counts[SPLITS.index(pinned[0][1])] += len(groups[group])
            for key in groups[group]:
                out[key] = pinned[0][1]
    order = sorted(g for g in groups if groups[g][0] not in out)
    random.Random(seed).shuffle(order)
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


def voice_parts(voice: dict) -> list[str]:
    """What a demo voice is made of: its Kokoro styles, or its eSpeak variant."""
    return sorted(voice["styles"]) if "styles" in voice else [voice["variant"]] if "variant" in voice else []
