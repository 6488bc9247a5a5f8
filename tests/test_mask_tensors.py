"""MaskProcessor, MaskCompressor and GaussianNoiseAdder against the reference goldens and their contracts."""

from __future__ import annotations

import math
from collections import Counter

import pytest
import torch
from safetensors.torch import load_file

from opensora_cli.masks import MaskType, frame_pattern
from opensora_cli.masks.compressor import MaskCompressor
from opensora_cli.masks.noise import GaussianNoiseAdder
from opensora_cli.masks.processor import MaskProcessor
from opensora_cli.schemas.mask_config import MaskConfig

from .helpers import GOLDENS


@pytest.fixture(scope="module")
def golden():
    return load_file(GOLDENS / "masks" / "masks.safetensors")


@pytest.mark.parametrize("frames", [9, 8, 1])
@pytest.mark.parametrize("mask_type", ["t2iv", "i2v", "transition", "clear"])
def test_pixel_and_latent_masks_match_reference(golden, frames, mask_type):
    mask, chosen = MaskProcessor.for_inference().get_mask(mask_type, frames, 32, 48)
    assert chosen == MaskType(mask_type)
    assert torch.equal(mask, golden[f"T{frames}.{mask_type}.pixel_mask"])
    latent = MaskCompressor()(mask[None].transpose(1, 2))
    assert torch.equal(latent, golden[f"T{frames}.{mask_type}.latent_mask"])


@pytest.mark.parametrize("frames", [9, 8])
def test_compressor_bilinear_matches_reference_on_spatial_masks(golden, frames):
    pixel = golden[f"T{frames}.spatial_random.pixel_mask_b1cthw"]
    expected = golden[f"T{frames}.spatial_random.latent_mask"]
    out = MaskCompressor()(pixel)
    assert (out - expected).abs().max() <= 1e-6 + 1e-6 * expected.abs().max()


def test_compressor_half_precision_and_shape_errors():
    mask = (torch.rand(2, 1, 17, 32, 48) > 0.5).float()
    full = MaskCompressor()(mask)
    assert full.shape == (2, 4, 5, 4, 6)
    assert torch.allclose(MaskCompressor()(mask.bfloat16()).float(), full, atol=1e-2)
    with pytest.raises(ValueError):
        MaskCompressor()(torch.zeros(1, 1, 10, 32, 48))
    with pytest.raises(ValueError):
        MaskCompressor()(torch.zeros(1, 2, 9, 32, 48))


@pytest.mark.parametrize("mask_type", ["i2v", "transition"])
def test_processor_call_matches_reference(golden, mask_type):
    pixels = golden["call.in.pixel_values"]
    out = MaskProcessor.for_inference()(pixels, mask_type)
    assert torch.equal(out["mask"], golden[f"call.{mask_type}.mask"])
    assert torch.equal(out["masked_pixel_values"], golden[f"call.{mask_type}.masked_pixel_values"])


def test_processor_uint8_zeroes_generated_frames():
    pixels = torch.full((5, 3, 8, 8), 200, dtype=torch.uint8)
    out = MaskProcessor.for_inference()(pixels, "i2v")
    assert out["masked_pixel_values"].dtype == torch.uint8
    assert out["masked_pixel_values"][0].eq(200).all() and out["masked_pixel_values"][1:].eq(0).all()


def test_processor_same_seed_same_mask_and_matches_patterns():
    processor = MaskProcessor(0.0, 1.0, {"continuation": 1, "random_temporal": 1})
    a, type_a = processor.get_mask(None, 33, 8, 8, generator=123)
    b, type_b = processor.get_mask(None, 33, 8, 8, generator=torch.Generator().manual_seed(5))
    c, type_c = processor.get_mask(None, 33, 8, 8, generator=torch.Generator().manual_seed(5))
    assert torch.equal(b, c) and type_b == type_c
    assert torch.equal(a, processor.get_mask(None, 33, 8, 8, generator=123)[0])
    # a mask is its frame pattern broadcast over H x W
    assert a[:, 0, 3, 5].tolist() == [float(v) for v in a[:, 0, 0, 0].tolist()]


def test_processor_draws_types_in_config_ratios():
    """Statistical: over 6000 draws the reference training mix comes out within 4 sigma of its ratios."""
    config = MaskConfig()  # the reference's video mix: 1/8/8/2/0/1
    processor = MaskProcessor(config.min_clear_ratio, config.max_clear_ratio, config.mask_type_ratio_dict_video)
    draws = 6000
    counts = Counter(processor.get_mask(None, 9, 2, 2, generator=seed)[1] for seed in range(draws))
    expected = config.video_ratios()
    assert counts[MaskType.clear] == 0
    for mask_type, p in expected.items():
        sigma = math.sqrt(draws * p * (1 - p)) or 1.0
        assert abs(counts[mask_type] - draws * p) <= 4 * sigma, (mask_type, counts[mask_type], draws * p)


def test_processor_requires_a_type_or_ratios():
    with pytest.raises(ValueError):
        MaskProcessor().get_mask(None, 9, 8, 8)
    with pytest.raises(ValueError):
        MaskProcessor(0.9, 0.1)


def test_noise_adder_inference_strength_and_kept_positions_only():
    adder = GaussianNoiseAdder.for_inference(0.2)
    x = torch.zeros(4, 3, 9, 16, 16)
    pattern = frame_pattern("transition", 9)
    mask = torch.tensor(pattern, dtype=torch.float32).view(1, 1, 9, 1, 1).expand(4, 1, 9, 16, 16)
    noisy = adder(x, mask, generator=torch.Generator().manual_seed(0))
    kept = noisy[:, :, [0, 8]]
    assert noisy[:, :, 1:8].abs().max() == 0  # generated frames untouched
    assert abs(kept.std().item() - 0.2) < 0.01
    again = adder(x, mask, generator=torch.Generator().manual_seed(0))
    assert torch.equal(noisy, again)
    assert GaussianNoiseAdder.for_inference(0.0) is None
    with pytest.raises(ValueError):
        GaussianNoiseAdder.for_inference(1.5)


def test_noise_adder_training_distribution():
    adder = GaussianNoiseAdder.for_training()
    generator = torch.Generator().manual_seed(1)
    x = torch.zeros(1, 1, 1, 64, 64)
    sigmas, clean = [], 0
    for _ in range(800):
        out = adder(x, None, generator)
        if out is x:
            clean += 1
        else:
            sigmas.append(out.std().item())
    assert 15 <= clean <= 75  # 5 % of 800 = 40
    sigmas.sort()
    median = sigmas[len(sigmas) // 2]
    assert abs(math.log(median) - (-3.0)) < 0.1  # median sigma = exp(-3) ~ 0.05
