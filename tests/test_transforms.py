"""Condition transforms against the reference's resize goldens, plus crop arithmetic, shapes and edge cases."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from opensora_cli.data.transforms import (
    center_crop_resize,
    load_condition_frames,
    resize,
    resize_conditions,
    stride_crop,
)
from opensora_cli.schemas.resolution import max_hxw_resize

from .helpers import GOLDENS


@pytest.fixture(scope="module")
def goldens():
    return load_file(GOLDENS / "resize" / "resize_chain.safetensors")


def to_uint8(pixels: torch.Tensor) -> torch.Tensor:
    """[-1, 1] float -> uint8, rounded (the reference truncates; rounding is the fair comparison)."""
    return ((pixels + 1) * 127.5).round().clamp(0, 255).to(torch.uint8)


def assert_within_one_level(ours: torch.Tensor, golden: torch.Tensor):
    assert ours.shape == golden.shape
    assert (ours.int() - golden.int()).abs().max().item() <= 1


def assert_float_close(ours: torch.Tensor, golden: torch.Tensor):
    assert ours.shape == golden.shape
    torch.testing.assert_close(ours, golden, rtol=0, atol=1e-5 + 1e-4 * golden.abs().max().item())


# ----------------------------------------------------------------------------------------------------------------
# Goldens
# ----------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("max_hxw, out_hw", [(6000, (64, 64)), (11700, (64, 128))])
def test_arbitrary_mode_matches_the_pipeline_goldens(goldens, max_hxw, out_hw):
    image = goldens["pipeline_chain.in.img_90x130"]
    pixels, size = resize_conditions([image], crop_for_hw=False, max_hxw=max_hxw)
    assert size == out_hw and pixels[0].dtype == torch.float32
    assert_within_one_level(to_uint8(pixels[0]), goldens[f"pipeline_chain.max{max_hxw}.out.img_90x130"])


@pytest.mark.parametrize("max_hxw", [6000, 11700])
def test_second_image_through_the_transform_built_from_the_first(goldens, max_hxw):
    # The golden harness built the transform from the 90x130 size alone, which the per-axis minimum over both
    # images (90x120) is not; so the second image goes through the reference's two stages directly.
    target = max_hxw_resize(90, 130, max_hxw)
    image = goldens["pipeline_chain.in.img_101x120"].float()
    ours = stride_crop(center_crop_resize(image, *target), 32) / 127.5 - 1
    assert_within_one_level(to_uint8(ours), goldens[f"pipeline_chain.max{max_hxw}.out.img_101x120"])


def test_fixed_mode_matches_the_crop_for_hw_golden(goldens):
    image = goldens["pipeline_chain.in.img_90x130"]
    pixels, size = resize_conditions([image], crop_for_hw=True, height=64, width=96)
    assert size == (64, 96)
    assert_within_one_level(to_uint8(pixels[0]), goldens["pipeline_chain.crop_for_hw_64x96.out.img_90x130"])


@pytest.mark.parametrize("key, height, width", [
    ("pipeline_chain.max6000.out.img_90x130", 64, 93),
    ("pipeline_chain.max11700.out.img_101x120", 90, 130),
    ("pipeline_chain.crop_for_hw_64x96.out.img_90x130", 64, 96),
])
def test_uint8_in_uint8_out_is_the_reference_transform(goldens, key, height, width):
    image = goldens[f"pipeline_chain.in.img_{key.rsplit('img_', 1)[1]}"]
    out = center_crop_resize(image, height, width)
    if "crop_for_hw" not in key:
        out = stride_crop(out, 32)
    assert out.dtype == torch.uint8
    assert_within_one_level(out, goldens[key])  # bit-exact here; +-1 leaves room for other CPUs' uint8 kernels


def test_float_chains_match_the_training_goldens(goldens):
    unit = goldens["pipeline_chain.in.img_90x130"].float() / 255  # ToTensorVideo
    # Training: MaxHWResizeVideo (a plain resize to 64x93, no aspect crop) then the stride crop.
    assert_float_close(stride_crop(resize(unit, 64, 93), 32), goldens["train_chain.max6000.out"])
    # CenterCropResizeVideo((72, 100)) on float: columns 2..126 (offset round(2.5) = 2) resized.
    assert_float_close(center_crop_resize(unit, 72, 100), goldens["center_crop_resize.float_72x100.out"])


def test_normalised_result_is_the_training_chain_in_minus_one_one(goldens):
    image = goldens["pipeline_chain.in.img_90x130"]
    ours = stride_crop(resize(image.float(), 64, 93), 32) / 127.5 - 1
    assert_float_close(ours, goldens["train_chain.max6000.out"] * 2 - 1)


# ----------------------------------------------------------------------------------------------------------------
# Crop arithmetic, shapes, edge cases
# ----------------------------------------------------------------------------------------------------------------


def ramp(frames: int, height: int, width: int) -> torch.Tensor:
    """(T, 3, H, W) float frames whose value encodes (row, column): row * 1000 + column."""
    grid = torch.arange(height)[:, None] * 1000.0 + torch.arange(width)[None, :]
    return grid.expand(frames, 3, height, width).clone()


@pytest.mark.parametrize("in_hw, out_hw, rows, cols", [
    ((10, 4), (4, 4), (3, 7), (0, 4)),    # taller than the target: crop rows
    ((4, 10), (4, 4), (0, 4), (3, 7)),    # wider: crop columns
    ((5, 4), (4, 4), (0, 4), (0, 4)),     # offset round(0.5) = 0 (half to even, as the reference)
    ((7, 4), (4, 4), (2, 6), (0, 4)),     # round(1.5) = 2
    ((6, 9), (6, 6), (0, 6), (2, 8)),     # round(1.5) = 2 on columns
    ((8, 12), (2, 3), None, None),        # same aspect: the whole frame is resized
])
def test_center_crop_window(in_hw, out_hw, rows, cols):
    frames = ramp(2, *in_hw)
    out = center_crop_resize(frames, *out_hw)
    assert out.shape == (2, 3, *out_hw)
    if rows is not None:  # window size == output size: the resize is the identity
        torch.testing.assert_close(out, frames[..., rows[0] : rows[1], cols[0] : cols[1]], rtol=0, atol=1e-3)
    else:
        torch.testing.assert_close(out, resize(frames, *out_hw), rtol=0, atol=0)


@pytest.mark.parametrize("stride, out_hw, box", [(32, (96, 128), (2, 11)), (16, (96, 144), (2, 3))])
def test_stride_crop_16_vs_32(stride, out_hw, box):
    frames = ramp(1, 100, 150)
    out = stride_crop(frames, stride)
    assert out.shape[-2:] == out_hw
    assert out[0, 0, 0, 0].item() == box[0] * 1000 + box[1]  # top-left = (floor(rem/2), floor(rem/2))
    pixels, size = resize_conditions([torch.zeros(1, 3, 100, 150, dtype=torch.uint8)], crop_for_hw=False,
                                     stride=stride)
    assert size == out_hw and pixels[0].shape == (1, 3, *out_hw)


def test_arbitrary_mode_uses_the_per_axis_minimum(goldens):
    first, second = goldens["pipeline_chain.in.img_90x130"], goldens["pipeline_chain.in.img_101x120"]
    pixels, size = resize_conditions([first, second], crop_for_hw=False, max_hxw=11700)
    assert size == (64, 96)  # min(90, 101) x min(130, 120) = 90x120 fits 11700, floored to 32s
    for frames, out in zip((first, second), pixels):
        expected = stride_crop(center_crop_resize(frames.float(), 90, 120), 32) / 127.5 - 1
        torch.testing.assert_close(out, expected, rtol=0, atol=0)


def test_large_inputs_shrink_to_the_spec_examples():
    pixels, size = resize_conditions([torch.zeros(1, 3, 720, 1280, dtype=torch.uint8)], crop_for_hw=False)
    assert size == (352, 640)  # 720x1280 -> 364x648 -> 352x640, the reference's own example


def test_video_and_single_frame_keep_their_frame_counts():
    generator = torch.Generator().manual_seed(0)
    still = torch.randint(0, 256, (1, 3, 40, 70), dtype=torch.uint8, generator=generator)
    video = torch.randint(0, 256, (5, 3, 48, 64), dtype=torch.uint8, generator=generator)
    video[3] = video[1]
    pixels, size = resize_conditions([still, video], crop_for_hw=True, height=32, width=48)
    assert size == (32, 48)
    assert [p.shape for p in pixels] == [(1, 3, 32, 48), (5, 3, 32, 48)]
    torch.testing.assert_close(pixels[1][3], pixels[1][1], rtol=0, atol=0)  # frames are independent
    for p in pixels:
        assert p.dtype == torch.float32 and -1 <= p.min() and p.max() <= 1


def test_extremes_map_to_minus_one_and_one():
    frames = torch.zeros(1, 3, 64, 64, dtype=torch.uint8)
    frames[..., 32:] = 255
    pixels, _ = resize_conditions([frames], crop_for_hw=False)
    assert pixels[0].min().item() == -1.0 and pixels[0].max().item() == 1.0


@pytest.mark.parametrize("conditions, kwargs, message", [
    ([], {"crop_for_hw": False}, "no condition frames"),
    ([torch.zeros(1, 3, 8, 8)], {"crop_for_hw": False}, r"uint8 frames, got \(1, 3, 8, 8\) torch.float32"),
    ([torch.zeros(3, 8, 8, dtype=torch.uint8)], {"crop_for_hw": False}, "condition 0: expected"),
    ([torch.zeros(1, 4, 8, 8, dtype=torch.uint8)], {"crop_for_hw": False}, "expected"),
    ([torch.zeros(1, 3, 64, 64, dtype=torch.uint8)], {"crop_for_hw": True, "height": 32}, "height and width"),
    ([torch.zeros(1, 3, 20, 64, dtype=torch.uint8)], {"crop_for_hw": False}, "smaller than the stride 32"),
])
def test_bad_inputs_raise(conditions, kwargs, message):
    with pytest.raises(ValueError, match=message):
        resize_conditions(conditions, **kwargs)


def test_empty_aspect_window_raises():
    with pytest.raises(ValueError, match="window is empty"):
        center_crop_resize(torch.zeros(1, 3, 1, 300), 300, 1)


# ----------------------------------------------------------------------------------------------------------------
# Loading
# ----------------------------------------------------------------------------------------------------------------


def test_load_images(media):
    first = media.image("a.png", 40, 70, color=(10, 200, 30))
    second = media.image("b.jpg", 33, 50)
    frames = load_condition_frames([str(first), str(second)], "image", num_frames=93)
    assert [f.shape for f in frames] == [(1, 3, 40, 70), (1, 3, 33, 50)]
    assert frames[0].dtype == torch.uint8 and frames[0].is_contiguous()
    assert frames[0][0, :, -1, -1].tolist() == [10, 200, 30]  # RGB order, channels first


def test_load_video(media):
    path = media.video("v.mp4", frames=7, height=48, width=64)
    (frames,) = load_condition_frames([str(path)], "video", num_frames=5)
    assert frames.shape == (5, 3, 48, 64) and frames.dtype == torch.uint8
    means = frames.float().mean(dim=(1, 2, 3)).numpy()
    np.testing.assert_allclose(means, [i * 7 for i in range(5)], atol=3)  # frame i is grey level 7 * i
    with pytest.raises(ValueError, match="kind must be 'image' or 'video'"):
        load_condition_frames([str(path)], "audio", num_frames=5)
