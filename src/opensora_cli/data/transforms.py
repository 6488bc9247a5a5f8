"""Condition pixels for the pipeline: load, centre-crop-resize, stride-crop, normalise (`schemas.resolution`).

Frames are (T, C, H, W). The crops and the resize are the reference's (`CenterCropResizeVideo`,
`SpatialStrideCropVideo`: bilinear, antialias, align_corners, Python's round-half-to-even for the crop offset), so
they match it bit for bit on uint8. `resize_conditions` differs on purpose: it resizes in float32, not uint8,
and never re-quantises (rounding to uint8 before normalising only loses precision), so conditions are within
one grey level of the reference but not rounded to it.

    frames = load_condition_frames(["first.png", "last.png"], "image", num_frames=93)
    pixels, (height, width) = resize_conditions(frames, crop_for_hw=False, max_hxw=236544)
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from opensora_cli.data.media import read_image, read_video
from opensora_cli.schemas.resolution import (
    ARBITRARY_HW_STRIDE,
    DEFAULT_MAX_HXW,
    aspect_crop_box,
    max_hxw_resize,
    stride_crop_box,
)


def resize(frames: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Resize (T, C, H, W) frames to (T, C, height, width): bilinear, antialiased, align_corners=True (as the
    reference, in the input's dtype)."""
    return F.interpolate(frames, size=(height, width), mode="bilinear", align_corners=True, antialias=True)


def center_crop_resize(frames: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Centre-crop (T, C, H, W) frames to the aspect height:width, then `resize` to (height, width); ValueError
    when the aspect is so far from the frames' that the window is empty."""
    in_h, in_w = frames.shape[-2:]
    top, left, crop_h, crop_w = aspect_crop_box(in_h, in_w, height, width)
    if crop_h < 1 or crop_w < 1:
        raise ValueError(f"cannot crop {in_h}x{in_w} frames to the aspect {height}:{width}: the window is empty")
    return resize(frames[..., top : top + crop_h, left : left + crop_w], height, width)


def stride_crop(frames: torch.Tensor, stride: int) -> torch.Tensor:
    """Centre-crop (T, C, H, W) frames to the largest multiples of `stride` (offset = half the remainder, floored);
    ValueError when a side is shorter than `stride`."""
    in_h, in_w = frames.shape[-2:]
    top, left, crop_h, crop_w = stride_crop_box(in_h, in_w, stride)
    if crop_h < 1 or crop_w < 1:
        raise ValueError(f"{in_h}x{in_w} frames are smaller than the stride {stride} on one side")
    return frames[..., top : top + crop_h, left : left + crop_w]


def resize_conditions(conditions: Sequence[torch.Tensor], *, crop_for_hw: bool, height: int | None = None,
                      width: int | None = None, max_hxw: int = DEFAULT_MAX_HXW, stride: int = ARBITRARY_HW_STRIDE,
                      ) -> tuple[list[torch.Tensor], tuple[int, int]]:
    """Bring every condition, (T_i, 3, H_i, W_i) uint8 (images have T_i = 1), to one size (h, w) in float32.

    Fixed mode (`crop_for_hw`): each input is centre-crop-resized to (height, width). Arbitrary mode: the size is
    the per-axis minimum (min H_i, min W_i) over the inputs, shrunk to an area of at most `max_hxw` (never
    enlarged); each input is centre-crop-resized to it, then centre-cropped to multiples of `stride` (the
    released model was trained at 32).

    Returns:
        The (T_i, 3, h, w) float32 tensors in [-1, 1] and (h, w).

    Raises:
        ValueError: no inputs, a tensor that is not (T, 3, H, W) uint8, fixed mode without a size, or inputs too
            small for `stride`.
    """
    if not conditions:
        raise ValueError("no condition frames to resize")
    for i, frames in enumerate(conditions):
        if frames.dtype != torch.uint8 or frames.ndim != 4 or frames.shape[1] != 3:
            raise ValueError(f"condition {i}: expected (T, 3, H, W) uint8 frames, got {tuple(frames.shape)} "
                             f"{frames.dtype}")

    # Convert once; resizing in float keeps the fractions the reference's uint8 resize rounds away.
    pixels = [frames.to(torch.float32) for frames in conditions]
    if crop_for_hw:
        if height is None or width is None:
            raise ValueError("crop_for_hw needs both height and width")
        pixels = [center_crop_resize(frames, height, width) for frames in pixels]
    else:
        target_h, target_w = max_hxw_resize(
            min(frames.shape[-2] for frames in pixels), min(frames.shape[-1] for frames in pixels), max_hxw
        )
        pixels = [stride_crop(center_crop_resize(frames, target_h, target_w), stride) for frames in pixels]
    pixels = [frames / 127.5 - 1.0 for frames in pixels]
    return pixels, tuple(pixels[0].shape[-2:])


def load_condition_frames(paths: Sequence[str], kind: str, num_frames: int) -> list[torch.Tensor]:
    """Condition media as (T_i, 3, H_i, W_i) uint8 tensors: `kind` "image" (T = 1 each), or "video" (the first
    `num_frames` frames of each)."""
    if kind == "image":
        arrays = [read_image(path)[None] for path in paths]  # (1, H, W, 3)
    elif kind == "video":
        arrays = [read_video(path, num_frames) for path in paths]  # (T, H, W, 3)
    else:
        raise ValueError(f"kind must be 'image' or 'video', got {kind!r}")
    # Pillow's arrays are read-only, which torch.from_numpy warns about: copy those (and only those).
    return [torch.from_numpy(np.require(array, requirements=["C", "W"])).permute(0, 3, 1, 2).contiguous()
            for array in arrays]
