"""The v1.3 mask system.

Torch-free here: `MaskType` and the frame patterns. The tensor parts live in submodules that import torch:
`masks.processor` (MaskProcessor), `masks.compressor` (MaskCompressor), `masks.noise` (GaussianNoiseAdder),
and `masks.preview` draws pictures of masks with numpy and Pillow.
"""

from opensora_cli.masks.patterns import (
    MASK_GENERATORS,
    choose_mask_type,
    compress_pattern,
    frame_pattern,
    latent_frame_count,
    normalise_ratios,
    pattern_from_indices,
)
from opensora_cli.schemas.masks import IMAGE_MASK_TYPES, MASK_TYPE_NAMES, MaskType

__all__ = [
    "IMAGE_MASK_TYPES",
    "MASK_GENERATORS",
    "MASK_TYPE_NAMES",
    "MaskType",
    "choose_mask_type",
    "compress_pattern",
    "frame_pattern",
    "latent_frame_count",
    "normalise_ratios",
    "pattern_from_indices",
]
