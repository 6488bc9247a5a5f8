"""The six v1.3 mask types and their mixing weights. Import-light (no torch): the CLI uses it for option choices."""

from __future__ import annotations

import enum
import math
from collections.abc import Mapping, Sequence
from typing import Any


class MaskType(str, enum.Enum):
    """What a mask keeps. In every mask, 1 = frame to generate, 0 = frame kept as condition.

    The order is the reference's enum order; the values are the names used on the command line and in
    mask config files.
    """

    t2iv = "t2iv"  # nothing kept: text to video / text to image
    i2v = "i2v"  # first frame kept
    transition = "transition"  # first and last frames kept
    continuation = "continuation"  # a leading run of frames kept
    clear = "clear"  # every frame kept (reconstruction)
    random_temporal = "random_temporal"  # a random set of frames kept

    def __str__(self) -> str:  # so f-strings and rich print the bare name
        return self.value


MASK_TYPE_NAMES: tuple[str, ...] = tuple(t.value for t in MaskType)

# Single-frame samples (images) can only be generated from nothing or kept whole.
IMAGE_MASK_TYPES: frozenset[MaskType] = frozenset({MaskType.t2iv, MaskType.clear})


def mask_type_of(kept: Sequence[int], frames: int, leading_run: bool = False) -> MaskType:
    """The mask type that keeps exactly the frames `kept` (0-based) of a `frames`-frame video.

    Args:
        leading_run: a run from frame 0 is `continuation` (a long video's window keeping its overlap); without,
            it is `random_temporal`, as for images placed with `@N`.
    """
    kept = sorted(kept)
    if not kept:
        return MaskType.t2iv
    if kept == [0]:  # first, so that one image of a one-frame video is i2v, as in the reference
        return MaskType.i2v
    if kept == [0, frames - 1]:
        return MaskType.transition
    if kept == list(range(frames)):
        return MaskType.clear
    if leading_run and kept == list(range(len(kept))):
        return MaskType.continuation
    return MaskType.random_temporal


def normalise_ratios(ratios: Mapping[Any, float]) -> dict[MaskType, float]:
    """Weights -> probabilities. Weights must be >= 0; an all-zero dict means uniform over its types.

    The all-zero rule is the reference's (its shipped config gives images t2iv 0, clear 0); `MaskConfig`
    warns about it.
    """
    if not ratios:
        raise ValueError("a mask-type ratio dict needs at least one type")
    weights = {MaskType(name): float(weight) for name, weight in ratios.items()}
    negative = [f"{t}={w}" for t, w in weights.items() if w < 0 or math.isnan(w)]
    if negative:
        raise ValueError(f"mask-type ratios must be >= 0, got {', '.join(negative)}")
    total = sum(weights.values())
    if total == 0:
        return {t: 1.0 / len(weights) for t in weights}
    return {t: w / total for t, w in weights.items()}
