"""Frame patterns of the six mask types, the type chooser and the latent geometry (torch-free layer)."""

from __future__ import annotations

import math
import random

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from opensora_cli.masks import MaskType
from opensora_cli.masks.compressor import MaskCompressor
from opensora_cli.masks.patterns import (
    as_random,
    choose_mask_type,
    clear_count_range,
    compress_pattern,
    frame_pattern,
    kept_indices,
    latent_frame_count,
    normalise_ratios,
    pattern_from_indices,
)

frames_st = st.integers(min_value=1, max_value=160)
ratios_st = st.tuples(st.floats(0, 1), st.floats(0, 1)).map(sorted)


@given(frames=frames_st, ratios=ratios_st, seed=st.integers(0, 2**32))
@settings(max_examples=300, deadline=None)
def test_generators_respect_their_definitions_and_bounds(frames, ratios, seed):
    low, high = ratios
    lo_count, hi_count = clear_count_range(frames, low, high)
    assert 0 <= lo_count <= hi_count <= frames
    assert lo_count >= math.floor(frames * low) - 1 and hi_count <= math.ceil(frames * high) + 1
    for mask_type in MaskType:
        pattern = frame_pattern(mask_type, frames, seed, min_clear_ratio=low, max_clear_ratio=high)
        assert len(pattern) == frames and set(pattern) <= {0, 1}
        kept = kept_indices(pattern)
        if mask_type == MaskType.t2iv:
            assert kept == []
        elif mask_type == MaskType.clear:
            assert kept == list(range(frames))
        elif mask_type == MaskType.i2v:
            assert kept == [0]
        elif mask_type == MaskType.transition:
            assert kept == sorted({0, frames - 1})
        elif mask_type == MaskType.continuation:
            assert kept == list(range(len(kept)))  # a leading run
            assert lo_count <= len(kept) <= hi_count
        else:
            assert lo_count <= len(kept) <= hi_count
        # same seed, same mask
        assert pattern == frame_pattern(mask_type, frames, seed, min_clear_ratio=low, max_clear_ratio=high)


def test_inference_keeps_half_deterministically():
    # The reference draws 46 or 47 of 93 at random; with equal bounds we keep round(93 / 2) = 47 every time.
    for seed in range(20):
        assert frame_pattern("continuation", 93, seed).count(0) == 47
        assert frame_pattern("random_temporal", 93, seed).count(0) == 47
    assert frame_pattern("continuation", 92, 0).count(0) == 46
    assert frame_pattern("continuation", 1, 0) == [0]


def test_random_temporal_depends_on_seed_and_covers_frames():
    patterns = {tuple(frame_pattern("random_temporal", 33, seed)) for seed in range(50)}
    assert len(patterns) > 40
    kept_anywhere = {i for p in patterns for i, v in enumerate(p) if v == 0}
    assert kept_anywhere == set(range(33))


def test_training_bounds_reach_both_ends():
    counts = {frame_pattern("continuation", 9, s, min_clear_ratio=0.0, max_clear_ratio=1.0).count(0) for s in range(400)}
    assert counts == set(range(10))


def test_torch_generator_is_a_source_of_randomness():
    g1, g2 = torch.Generator().manual_seed(7), torch.Generator().manual_seed(7)
    a = frame_pattern("random_temporal", 45, g1)
    assert a == frame_pattern("random_temporal", 45, g2)
    assert not torch.equal(g1.get_state(), torch.Generator().manual_seed(7).get_state())  # one draw consumed
    with pytest.raises(TypeError):
        as_random(1.5)
    with pytest.raises(TypeError):
        as_random(True)


def test_invalid_arguments_raise():
    with pytest.raises(ValueError):
        frame_pattern("i2v", 0)
    with pytest.raises(ValueError):
        frame_pattern("continuation", 9, 0, min_clear_ratio=0.8, max_clear_ratio=0.2)
    with pytest.raises(ValueError):
        frame_pattern("spatial", 9)


def test_pattern_from_indices_counts_negative_from_end():
    assert kept_indices(pattern_from_indices(9, [0, -1, 4])) == [0, 4, 8]


weights_st = st.dictionaries(st.sampled_from(list(MaskType)), st.floats(0, 100), min_size=1)


@given(weights=weights_st, seed=st.integers(0, 2**32))
@settings(max_examples=200, deadline=None)
def test_zero_weight_types_are_never_chosen(weights, seed):
    probabilities = normalise_ratios(weights)
    assert math.isclose(sum(probabilities.values()), 1.0)
    rng = random.Random(seed)
    for _ in range(20):
        chosen = choose_mask_type(weights, rng)
        assert chosen in weights
        if sum(weights.values()) > 0:
            assert weights[chosen] > 0


def test_normalise_rules():
    assert normalise_ratios({"t2iv": 0, "clear": 0}) == {MaskType.t2iv: 0.5, MaskType.clear: 0.5}
    assert normalise_ratios({"i2v": 3, "transition": 1}) == {MaskType.i2v: 0.75, MaskType.transition: 0.25}
    with pytest.raises(ValueError):
        normalise_ratios({"i2v": -1})
    with pytest.raises(ValueError):
        normalise_ratios({})
    with pytest.raises(ValueError):
        normalise_ratios({"semantic": 1})


@pytest.mark.parametrize(("frames", "latent"), [(93, 24), (1, 1), (9, 3), (8, 2), (29, 8), (4, 1)])
def test_latent_frame_count(frames, latent):
    assert latent_frame_count(frames) == latent


@pytest.mark.parametrize("frames", [2, 6, 7, 10, 90])
def test_latent_frame_count_rejects(frames):
    with pytest.raises(ValueError):
        latent_frame_count(frames)


@given(k=st.integers(0, 12), odd=st.booleans(), seed=st.integers(0, 2**16))
@settings(max_examples=80, deadline=None)
def test_compress_pattern_equals_mask_compressor(k, odd, seed):
    frames = 1 + 4 * k if odd else 4 * max(k, 1)
    pattern = frame_pattern("random_temporal", frames, seed, min_clear_ratio=0, max_clear_ratio=1)
    mask = torch.tensor(pattern, dtype=torch.float32).view(1, 1, -1, 1, 1).expand(1, 1, frames, 16, 24)
    latent = MaskCompressor()(mask)
    expected = torch.tensor(compress_pattern(pattern)).T  # (channels, latent frames)
    assert latent.shape == (1, 4, latent_frame_count(frames), 2, 3)
    assert torch.equal(latent[0, :, :, 0, 0], expected)
    assert torch.equal(latent, latent[..., :1, :1].expand_as(latent))


def test_compress_pattern_channel_mapping_93():
    pattern = [1] * 93
    pattern[0] = pattern[5] = pattern[92] = 0
    latent = compress_pattern(pattern)
    assert len(latent) == 24
    assert latent[0] == [0, 0, 0, 0]  # frame 0 fills latent frame 0
    # latent frame j >= 1, channel c = pixel frame 4(j-1) + 1 + c: frame 5 -> (j=2, c=0), frame 92 -> (j=23, c=3)
    assert latent[2][0] == 0 and sum(latent[2]) == 3
    assert latent[23][3] == 0 and sum(latent[23]) == 3


@pytest.mark.parametrize("kept, num_frames, known", [
    ([0], 17, 1),  # i2v: frame 0 alone in latent frame 0
    ([0, 16], 17, 1),  # transition: frame 16 shares latent frame 4 with generated 13-15
    (list(range(9)), 17, 3),  # continuation of 9 frames: latent frames 0-2
    (list(range(8)), 17, 2),  # frame 8 generated: latent frame 2 is not known
    (list(range(17)), 17, 5),  # everything kept
    ([16], 17, 0), ([], 17, 0),  # no kept frame 0: nothing is known
    ([0], 1, 1),  # an image
])
def test_exact_latent_prefix_counts_the_latent_frames_a_kept_run_from_frame_0_fills(kept, num_frames, known):
    from opensora_cli.masks.patterns import exact_latent_prefix, pattern_from_indices

    assert exact_latent_prefix(pattern_from_indices(num_frames, kept)) == known
