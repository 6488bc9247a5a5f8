"""Resolution rules of the v1.3 pipeline, in plain integers (no torch).

Two modes:
- fixed (`--crop-for-hw --height H --width W`): every input is centre-cropped to H:W and resized to H x W;
- arbitrary (`--max-hxw N`): the output size comes from the inputs (their smallest height and width),
  shrunk to an area of at most N and centre-cropped to multiples of 32, the stride the released model was
  trained on. Small inputs are never upscaled.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

# The released model's trained area range (max_hxw must lie in it) and its training stride.
MIN_MAX_HXW = 102_400
MAX_MAX_HXW = 236_544
DEFAULT_MAX_HXW = MAX_MAX_HXW
ARBITRARY_HW_STRIDE = 32
# VAE x8 and patch x2: a fixed height/width must be a multiple of this.
MODEL_HW_STRIDE = 16
# The model was trained on aspect ratios h/w within [1/2, 2].
MIN_ASPECT, MAX_ASPECT = 0.5, 2.0


def max_hxw_resize(height: int, width: int, max_hxw: int) -> tuple[int, int]:
    """Shrink (keeping the aspect ratio) so that height * width <= max_hxw; never enlarge. Truncates."""
    if height * width <= max_hxw:
        return height, width
    scale = math.sqrt(max_hxw / (height * width))
    return int(height * scale), int(width * scale)


def stride_crop_box(height: int, width: int, stride: int) -> tuple[int, int, int, int]:
    """Centred crop to multiples of `stride`: (top, left, crop_height, crop_width)."""
    crop_h, crop_w = height // stride * stride, width // stride * stride
    return (height - crop_h) // 2, (width - crop_w) // 2, crop_h, crop_w


def arbitrary_output_size(
    sizes: Sequence[tuple[int, int]], max_hxw: int = DEFAULT_MAX_HXW, stride: int = ARBITRARY_HW_STRIDE
) -> tuple[int, int]:
    """Output (height, width) in arbitrary-resolution mode for inputs of the given (height, width) sizes.

    The per-axis minimum over the inputs, shrunk to `max_hxw`, then floored to multiples of `stride`.
    May return 0 on an axis for inputs smaller than the stride; callers report that.
    """
    if not sizes:
        raise ValueError("arbitrary-resolution mode needs at least one input size")
    height = min(h for h, _ in sizes)
    width = min(w for _, w in sizes)
    height, width = max_hxw_resize(height, width, max_hxw)
    _, _, crop_h, crop_w = stride_crop_box(height, width, stride)
    return crop_h, crop_w


def aspect_crop_box(height: int, width: int, target_height: int, target_width: int) -> tuple[int, int, int, int]:
    """The largest centred window of aspect target_height:target_width: (top, left, crop_height, crop_width).

    The reference's arithmetic exactly: int() truncation of the window side and Python's round() (half to even) of
    the offset, e.g. 90x130 -> 64:93 keeps rows 0..88 (offset round(0.5) = 0), 90x130 -> 72:100 keeps columns
    2..126 (round(2.5) = 2).
    """
    ratio = target_height / target_width
    if height / width > ratio:  # relatively taller than the target: crop rows
        crop_h, crop_w = int(width * ratio), width
    else:
        crop_h, crop_w = height, int(height / ratio)
    return int(round((height - crop_h) / 2.0)), int(round((width - crop_w) / 2.0)), crop_h, crop_w
