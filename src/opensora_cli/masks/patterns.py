"""Frame patterns: which pixel frames a mask keeps, as plain lists (no torch).

Every v1.3 mask is whole-frame (temporal): a pixel mask is its frame pattern broadcast over H x W. Keeping
the choice of frames torch-free lets `validate-inputs` and `mask-preview --json` run without importing
torch, and the tensor-building code in `masks.processor` builds its masks from these same patterns, so
the two can never disagree.

A pattern is a list of T ints: 1 = frame to generate, 0 = frame kept as condition.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Union

from opensora_cli.schemas.masks import MaskType, normalise_ratios

if TYPE_CHECKING:  # pragma: no cover
    import torch

RandomSource = Union[None, int, random.Random, "torch.Generator"]

# Inference keeps half of the frames for continuation and random_temporal, as the reference does.
INFERENCE_CLEAR_RATIO = 0.5
# Training draws the kept share anywhere in [0, 1] unless a mask config says otherwise.
TRAINING_MIN_CLEAR_RATIO = 0.0
TRAINING_MAX_CLEAR_RATIO = 1.0
# Guards floor/ceil of T * ratio against float noise (0.1 * 30 = 3.0000000000000004).
_EPS = 1e-9


def as_random(source: RandomSource = None) -> random.Random:
    """Turn any accepted source of randomness into a `random.Random`.

    Args:
        source: None (fresh, non-deterministic), an int seed, a `random.Random` (used and advanced in place),
            or a `torch.Generator` (advanced by exactly one draw, which seeds the returned `Random`).
    """
    if source is None:
        return random.Random()
    if isinstance(source, random.Random):
        return source
    if isinstance(source, bool):
        raise TypeError("a seed must be an int, not a bool")
    if isinstance(source, int):
        return random.Random(source)
    if hasattr(source, "manual_seed") and hasattr(source, "device"):
        import torch

        seed = torch.randint(0, 2**62, (1,), generator=source, device=source.device)
        return random.Random(int(seed.item()))
    raise TypeError(f"expected None, an int seed, random.Random or torch.Generator, got {type(source).__name__}")


def clear_count_range(num_frames: int, min_clear_ratio: float, max_clear_ratio: float) -> tuple[int, int]:
    """Inclusive range of kept-frame counts for continuation / random_temporal: [floor(T*min), ceil(T*max)]."""
    lo = math.floor(num_frames * min_clear_ratio + _EPS)
    hi = math.ceil(num_frames * max_clear_ratio - _EPS)
    lo = min(max(lo, 0), num_frames)
    hi = min(max(hi, lo), num_frames)
    return lo, hi


def draw_clear_count(num_frames: int, min_clear_ratio: float, max_clear_ratio: float, rng: random.Random) -> int:
    """How many frames a continuation / random_temporal mask keeps.

    With min < max the count is uniform over `clear_count_range` (the reference's rule). With min == max the
    count is fixed at round(T * ratio) (halves round up): the reference draws between floor and ceil at
    random, so the same inputs gave 46 or 47 kept frames of 93; here they give 47 every time.
    """
    if min_clear_ratio == max_clear_ratio:
        return min(num_frames, math.floor(num_frames * min_clear_ratio + 0.5))
    lo, hi = clear_count_range(num_frames, min_clear_ratio, max_clear_ratio)
    return rng.randint(lo, hi)


# One generator per mask type: (T, rng, min_clear_ratio, max_clear_ratio) -> pattern. Only continuation and
# random_temporal draw: first the kept count, then (random_temporal) which frames.
MASK_GENERATORS: dict[MaskType, Callable[[int, random.Random, float, float], list[int]]] = {
    MaskType.t2iv: lambda t, rng, lo, hi: [1] * t,
    MaskType.i2v: lambda t, rng, lo, hi: pattern_from_indices(t, [0]),
    MaskType.transition: lambda t, rng, lo, hi: pattern_from_indices(t, [0, -1]),
    MaskType.continuation: lambda t, rng, lo, hi: pattern_from_indices(t, range(draw_clear_count(t, lo, hi, rng))),
    MaskType.clear: lambda t, rng, lo, hi: [0] * t,
    MaskType.random_temporal: lambda t, rng, lo, hi: pattern_from_indices(
        t, rng.sample(range(t), draw_clear_count(t, lo, hi, rng))),
}


def frame_pattern(
    mask_type: MaskType | str,
    num_frames: int,
    generator: RandomSource = None,
    *,
    min_clear_ratio: float = INFERENCE_CLEAR_RATIO,
    max_clear_ratio: float = INFERENCE_CLEAR_RATIO,
) -> list[int]:
    """The frame pattern of one mask.

    Args:
        mask_type: one of the six `MaskType` names.
        num_frames: T >= 1 pixel frames.
        generator: see `as_random`; only continuation and random_temporal draw from it.
        min_clear_ratio, max_clear_ratio: bounds of the kept share for continuation / random_temporal,
            0 <= min <= max <= 1. Defaults are the inference values (keep half).

    Returns:
        T ints, 1 = generate, 0 = keep.
    """
    if num_frames < 1:
        raise ValueError(f"num_frames must be >= 1, got {num_frames}")
    if not 0.0 <= min_clear_ratio <= max_clear_ratio <= 1.0:
        raise ValueError(f"need 0 <= min_clear_ratio <= max_clear_ratio <= 1, got {min_clear_ratio}, {max_clear_ratio}")
    rng = as_random(generator)
    return MASK_GENERATORS[MaskType(mask_type)](num_frames, rng, min_clear_ratio, max_clear_ratio)


def pattern_from_indices(num_frames: int, kept_indices: Sequence[int]) -> list[int]:
    """Pattern that keeps exactly the given frames (negative indices count from the end)."""
    frames = [1] * num_frames
    for index in kept_indices:
        frames[index] = 0
    return frames


def kept_indices(pattern: Sequence[int]) -> list[int]:
    """Indices of the kept (0) frames of a pattern."""
    return [i for i, value in enumerate(pattern) if value == 0]


def exact_latent_prefix(pattern: Sequence[int], stride_t: int = 4) -> int:
    """How many latent frames the kept frames alone determine, for a causal VAE of temporal stride `stride_t`.

    A causal VAE's latent frame sees only the pixel frames up to its last (`compress_pattern`'s grouping), so it
    is the same for the masked clip and the whole clip exactly when it and every latent frame before it hold
    only kept frames. So i2v gives 1, a continuation keeping frames 0-8 gives 3, t2v or a last kept frame 0."""
    known = 0
    for group in compress_pattern(pattern, stride_t):
        if any(group):
            break
        known += 1
    return known


# ---------------------------------------------------------------------------------------------------------
# Mask-type ratios (the mask processor's choice of type)
# ---------------------------------------------------------------------------------------------------------


def choose_mask_type(ratios: Mapping[Any, float], generator: RandomSource = None) -> MaskType:
    """Draw a mask type with probability proportional to its weight; zero-weight types are never drawn."""
    probabilities = normalise_ratios(ratios)
    types = [t for t, p in probabilities.items() if p > 0]
    return as_random(generator).choices(types, weights=[probabilities[t] for t in types], k=1)[0]


# ---------------------------------------------------------------------------------------------------------
# Latent geometry of a pattern (what MaskCompressor does to a whole-frame mask)
# ---------------------------------------------------------------------------------------------------------


def latent_frame_count(num_frames: int, vae_stride_t: int = 4) -> int:
    """Latent frames for T pixel frames: T = 1 + k*s -> 1 + k; T = k*s -> k (s = vae_stride_t)."""
    if num_frames % 2 == 1 and (num_frames - 1) % vae_stride_t == 0:
        return (num_frames - 1) // vae_stride_t + 1
    if num_frames % 2 == 0 and num_frames % vae_stride_t == 0:
        return num_frames // vae_stride_t
    raise ValueError(f"{num_frames} frames is neither 1 + {vae_stride_t}k nor {vae_stride_t}k")


def compress_pattern(pattern: Sequence[int], vae_stride_t: int = 4) -> list[list[float]]:
    """The latent mask of a whole-frame pattern, as `[latent_frame][channel]` values.

    For odd T the first pixel frame fills all channels of latent frame 0 and latent frame j >= 1, channel c
    holds pixel frame s*(j-1) + 1 + c; for even T latent frame j, channel c holds pixel frame s*j + c.
    Equal to `MaskCompressor` on the broadcast pixel mask.
    """
    frames = [float(v) for v in pattern]
    latent_frame_count(len(frames), vae_stride_t)  # validates the length
    if len(frames) % 2 == 1:
        frames = frames[:1] * (vae_stride_t - 1) + frames
    return [frames[j : j + vae_stride_t] for j in range(0, len(frames), vae_stride_t)]
