"""The six v1.3 mask types and their mixing weights. Import-light (no torch): the CLI uses it for option choices."""

from __future__ import annotations

import enum
import math
from collections.abc import Mapping
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
