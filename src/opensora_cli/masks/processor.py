"""MaskProcessor: builds pixel masks as tensors and applies them to pixel values."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from opensora_cli.masks.patterns import (
    INFERENCE_CLEAR_RATIO,
    TRAINING_MAX_CLEAR_RATIO,
    TRAINING_MIN_CLEAR_RATIO,
    RandomSource,
    as_random,
    choose_mask_type,
    frame_pattern,
    normalise_ratios,
)
from opensora_cli.schemas.masks import MaskType


def pattern_to_mask(
    pattern: list[int], height: int, width: int, dtype: torch.dtype = torch.float32, device: Any = None
) -> torch.Tensor:
    """Broadcast a frame pattern to a pixel mask of shape (T, 1, H, W); 1 = generate, 0 = keep."""
    frames = torch.tensor(pattern, dtype=dtype, device=device)
    return frames.view(-1, 1, 1, 1).expand(-1, 1, height, width).contiguous()


def apply_mask(pixel_values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Zero the frames to generate: `pixel_values * (mask < 0.5)`.

    In the uint8 domain (the reference's) this makes unknown frames black, which is -1 after the
    2x - 1 normalisation; training and inference must both do it in the same domain.
    """
    return pixel_values * (mask < 0.5).to(pixel_values.dtype)


class MaskProcessor:
    """Chooses a mask type and builds its pixel mask.

    Args:
        min_clear_ratio, max_clear_ratio: bounds of the kept share for continuation / random_temporal.
        mask_type_ratios: {type: weight} used when no type is given; normalised, zero weights never drawn.
    """

    def __init__(self, min_clear_ratio: float = TRAINING_MIN_CLEAR_RATIO,
                 max_clear_ratio: float = TRAINING_MAX_CLEAR_RATIO,
                 mask_type_ratios: Mapping[Any, float] | None = None) -> None:
        if not 0.0 <= min_clear_ratio <= max_clear_ratio <= 1.0:
            raise ValueError("need 0 <= min_clear_ratio <= max_clear_ratio <= 1, got "
                             f"{min_clear_ratio}, {max_clear_ratio}")
        self.min_clear_ratio = min_clear_ratio
        self.max_clear_ratio = max_clear_ratio
        self.mask_type_ratios = normalise_ratios(mask_type_ratios) if mask_type_ratios else None

    @classmethod
    def for_inference(cls) -> MaskProcessor:
        """Keeps half the frames for continuation and random_temporal (the reference's inference setting)."""
        return cls(INFERENCE_CLEAR_RATIO, INFERENCE_CLEAR_RATIO)

    def pick_type(self, mask_type: MaskType | str | None, generator: RandomSource = None) -> MaskType:
        if mask_type is not None:
            return MaskType(mask_type)
        if self.mask_type_ratios is None:
            raise ValueError("no mask_type given and this processor has no mask_type_ratios to draw from")
        return choose_mask_type(self.mask_type_ratios, generator)

    def get_mask(self, mask_type: MaskType | str | None, num_frames: int, height: int, width: int,
                 generator: RandomSource = None, dtype: torch.dtype = torch.float32,
                 device: Any = None) -> tuple[torch.Tensor, MaskType]:
        """Returns the pixel mask (T, 1, H, W) and the type it was built from.

        One `random.Random` is derived from `generator` and used for both the type and the frames, so a seed
        fixes the whole mask.
        """
        rng = as_random(generator)
        chosen = self.pick_type(mask_type, rng)
        pattern = frame_pattern(chosen, num_frames, rng, min_clear_ratio=self.min_clear_ratio,
                                max_clear_ratio=self.max_clear_ratio)
        return pattern_to_mask(pattern, height, width, dtype, device), chosen

    def __call__(self, pixel_values: torch.Tensor, mask_type: MaskType | str | None = None,
                 generator: RandomSource = None) -> dict[str, Any]:
        """Mask a clip.

        Args:
            pixel_values: (T, C, H, W), any dtype (uint8 in the reference's pipeline).

        Returns:
            {"mask": (T, 1, H, W) in pixel_values' dtype, "masked_pixel_values": (T, C, H, W), "mask_type"}.
        """
        num_frames, _, height, width = pixel_values.shape
        mask, chosen = self.get_mask(mask_type, num_frames, height, width, generator, dtype=pixel_values.dtype,
                                     device=pixel_values.device)
        return {"mask": mask, "masked_pixel_values": apply_mask(pixel_values, mask), "mask_type": chosen}
