"""`OpenSoraInpaintPipeline` as a Python user drives it: a bundle through `from_pretrained`, diffusers' call
conventions, and golden slices that catch a refactor at the pixel level (diffusers' `expected_slice` habit).

The slices were recorded from the pipeline before the request -> plan -> run restructuring; any change of the
numbers beyond float noise is a change of behaviour.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from opensora_cli.masks.patterns import as_random
from opensora_cli.models.registry import write_random_model_folder
from opensora_cli.pipelines.pipeline_inpaint import OpenSoraInpaintPipeline, OpenSoraPipelineOutput
from opensora_cli.pipelines.schedulers import SAMPLERS, make_scheduler
from opensora_cli.services.model_folders import bundled_model_dir

MEDIA = Path(__file__).resolve().parents[1] / "examples" / "demo"
DEMO_SLICE = [  # videos[0, :, -1, -3:, -3:] ("pt"), i2v on the demo model
    0.2337, 0.2293, 0.2253, 0.2311, 0.2259, 0.2234, 0.2351, 0.2276, 0.2274, 0.15, 0.1423, 0.1374, 0.1497, 0.145,
    0.1375, 0.1484, 0.1371, 0.1412, 0.0717, 0.0644, 0.0613, 0.0824, 0.0712, 0.0685, 0.0846, 0.0789, 0.0722,
]
RANDOM_SLICE = [  # latents[0, :4, 1, -2:, -2:], transition in arbitrary-resolution mode on a random tiny model
    0.7728, 0.5403, 0.063, -0.4289, -3.6889, 1.1743, -4.3839, -2.8824, 0.6296, -2.0119, -0.3892, 0.1045, 3.7125,
    2.4162, 1.267, 0.8432,
]
I2V = dict(conditions=[str(MEDIA / "i2v.png")], num_frames=9, height=64, width=96, crop_for_hw=True,
           num_inference_steps=4, guidance_scale=4.5, negative_prompt="", use_prompt_template=False)
PROMPT = "a yellow triangle moves to the right"


@pytest.fixture(scope="module")
def demo_pipe():
    return OpenSoraInpaintPipeline.from_pretrained(bundled_model_dir())


@pytest.fixture(scope="module")
def random_bundle(tmp_path_factory):
    folder = tmp_path_factory.mktemp("bundle")
    write_random_model_folder(folder, seed=5)  # no model_index.json: read by its folder names
    return folder


def generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_demo_model_golden_slice(demo_pipe):
    out = demo_pipe(PROMPT, generator=generator(0), output_type="pt", **I2V)
    assert isinstance(out, OpenSoraPipelineOutput) and out.mask_type == "i2v" and out.kept_frames == [0]
    assert tuple(out.videos.shape) == (1, 3, 9, 64, 96)
    torch.testing.assert_close(out.videos[0, :, -1, -3:, -3:].flatten(), torch.tensor(DEMO_SLICE), atol=2e-4, rtol=0)


def test_random_model_golden_slice_arbitrary_resolution(random_bundle):
    pipe = OpenSoraInpaintPipeline.from_pretrained(random_bundle, sampler="DDPM")
    out = pipe("a red square", conditions=[str(MEDIA / "transition_first.png"), str(MEDIA / "transition_last.png")],
               num_frames=9, max_hxw=4096, num_inference_steps=3, guidance_scale=3.0, guidance_rescale=0.5,
               negative_prompt="blur", noise_strength=0.2, generator=generator(7), output_type="latent")
    assert tuple(out.videos.shape) == (1, 8, 3, 4, 8) and out.mask_type == "transition"
    torch.testing.assert_close(out.videos[0, :4, 1, -2:, -2:].flatten(), torch.tensor(RANDOM_SLICE), atol=1e-3,
                               rtol=1e-4)


def test_from_pretrained_reads_model_index_and_can_leave_the_text_encoder_out(demo_pipe):
    assert (bundled_model_dir() / "model_index.json").is_file()
    assert type(demo_pipe.scheduler).__name__ == "EulerAncestralDiscreteScheduler"  # the bundle's sampler
    without_text = OpenSoraInpaintPipeline.from_pretrained(bundled_model_dir(), text_encoder=False)
    assert without_text.text_encoder is None
    embeds = demo_pipe.encode_prompt(PROMPT, "", True, use_template=False)
    a = demo_pipe(PROMPT, generator=generator(3), **I2V)
    b = without_text(PROMPT, generator=generator(3), prompt_embeds=embeds, **I2V)
    assert (a.videos == b.videos).all()


def test_return_dict_false_gives_the_output_fields_as_a_tuple(demo_pipe):
    out = demo_pipe(PROMPT, generator=generator(1), output_type="latent", **I2V)
    videos, mask_type, kept = demo_pipe(PROMPT, generator=generator(1), output_type="latent", return_dict=False, **I2V)
    assert torch.equal(videos, out.videos) and mask_type == out.mask_type and kept == out.kept_frames


def test_given_latents_are_the_initial_noise(demo_pipe):
    # DDIM draws no noise in its steps, so the generator's only other use would be the initial noise
    ddim = OpenSoraInpaintPipeline(None, demo_pipe.vae, demo_pipe.transformer, make_scheduler("DDIM"))
    embeds = demo_pipe.encode_prompt(PROMPT, "", True, use_template=False)
    drawn = ddim(PROMPT, generator=generator(2), prompt_embeds=embeds, output_type="latent", **I2V).videos
    source = generator(2)
    as_random(source)  # the pipeline's first draw: the seed of its mask randomness (see masks.patterns.as_random)
    noise = torch.randn(drawn.shape, generator=source)
    given = ddim(PROMPT, latents=noise, prompt_embeds=embeds, output_type="latent", **I2V).videos
    assert torch.equal(drawn, given)
    with pytest.raises(ValueError, match="latents have shape"):
        ddim(PROMPT, latents=noise[:, :, :1], prompt_embeds=embeds, **I2V)


def test_callback_on_step_end_sees_and_replaces_latents(demo_pipe):
    seen = []

    def record(pipe, index, timestep, tensors):
        seen.append((index, pipe.num_timesteps, tuple(tensors["latents"].shape)))
        return tensors

    plain = demo_pipe(PROMPT, generator=generator(4), output_type="latent", **I2V).videos
    watched = demo_pipe(PROMPT, generator=generator(4), output_type="latent", callback_on_step_end=record,
                        **I2V).videos
    assert torch.equal(plain, watched)
    assert [index for index, _, _ in seen] == [0, 1, 2, 3] and {steps for _, steps, _ in seen} == {4}
    assert seen[0][2] == tuple(plain.shape)

    def zero_last(pipe, index, timestep, tensors):
        return {"latents": torch.zeros_like(tensors["latents"])} if index == pipe.num_timesteps - 1 else {}

    zeroed = demo_pipe(PROMPT, generator=generator(4), output_type="latent", callback_on_step_end=zero_last, **I2V)
    assert not zeroed.videos.any()
    with pytest.raises(ValueError, match="callback tensor inputs"):
        demo_pipe(PROMPT, callback_on_step_end=record, callback_on_step_end_tensor_inputs=["noise"], **I2V)


def test_a_list_of_generators_gives_each_video_its_own(demo_pipe):
    one = demo_pipe(PROMPT, generator=generator(5), output_type="pt", **I2V).videos
    listed = demo_pipe(PROMPT, generator=[generator(5)], output_type="pt", **I2V).videos
    assert torch.equal(one, listed)
    other = demo_pipe(PROMPT, generator=generator(6), output_type="pt", **I2V).videos
    batch = demo_pipe(PROMPT, generator=[generator(5), generator(6)], num_videos_per_prompt=2, output_type="pt",
                      **I2V).videos
    torch.testing.assert_close(batch, torch.cat([one, other]), atol=1e-4, rtol=0)
    with pytest.raises(ValueError, match="2 generators for 3 videos"):
        demo_pipe(PROMPT, generator=[generator(5), generator(6)], num_videos_per_prompt=3, **I2V)


def test_a_planned_size_must_be_the_one_the_inputs_give(random_bundle):
    pipe = OpenSoraInpaintPipeline.from_pretrained(random_bundle)
    args = dict(conditions=[str(MEDIA / "i2v.png")], num_frames=5, max_hxw=4096, num_inference_steps=1,
                guidance_scale=1.0, generator=generator(0), output_type="latent")
    height, width = (8 * side for side in pipe("x", **args).videos.shape[-2:])  # the VAE's 8x
    assert pipe("x", height=height, width=width, **args).mask_type == "i2v"
    with pytest.raises(ValueError, match=f"give a {height}x{width} video, not {height + 16}x{width}"):
        pipe("x", height=height + 16, width=width, **args)


def _encoded_prefix(pipe, known: int, **call) -> torch.Tensor:
    """The first `known` latent frames of the masked clip the pipeline builds for `call` (no noise on it)."""
    masked, pattern, _ = pipe.prepare_conditions(call["conditions"], call.get("frame_indices"), call.get("mask_type"),
                                                 call["num_frames"], call["height"], call["width"],
                                                 call["crop_for_hw"], 6144, as_random(None))
    with torch.no_grad():
        return pipe.vae.encode_latents(masked[None], sample_posterior=False)[:, :, :known].float()


@pytest.mark.parametrize("noise_strength", [0.0, 0.3])
def test_replace_kept_latents_returns_the_kept_frames_encoding_and_generates_the_rest(demo_pipe, noise_strength):
    """i2v: latent frame 0 (frame 0 alone, in the causal VAE) ends exactly as the kept image's clean encoding,
    which the transformer alone does not give; the generated frames still come from the model."""
    call = dict(I2V, output_type="latent", noise_strength=noise_strength)
    plain = demo_pipe(PROMPT, generator=generator(3), **call).videos
    held = demo_pipe(PROMPT, generator=generator(3), replace_kept_latents=True, **call).videos
    expected = _encoded_prefix(demo_pipe, 1, **I2V)
    # (with noise, the pipeline encodes the clean frame 0 alone: the same numbers up to float rounding)
    torch.testing.assert_close(held[:, :, :1], expected, atol=1e-5 if noise_strength else 0, rtol=0)
    assert (plain[:, :, :1] - expected).abs().max() > 1e-2
    assert (held[:, :, 1:] - plain[:, :, 1:]).abs().mean() < 0.5 * plain[:, :, 1:].abs().mean()  # same video, nudged


def test_replace_kept_latents_holds_a_kept_run_from_frame_0_and_changes_nothing_without_one(demo_pipe):
    from opensora_cli.masks.patterns import exact_latent_prefix, pattern_from_indices

    keep = [0, 1, 2, 3, 4, 8]  # frames 0-4 fill latent frames 0 and 1; frame 8 shares latent frame 2 with 5-7
    call = dict(I2V, conditions=[str(MEDIA / "i2v.png")] * len(keep), frame_indices=keep, output_type="latent")
    assert exact_latent_prefix(pattern_from_indices(9, keep)) == 2
    held = demo_pipe(PROMPT, generator=generator(8), replace_kept_latents=True, **call)
    assert held.kept_frames == keep
    expected = _encoded_prefix(demo_pipe, 3, **call)
    assert torch.equal(held.videos[:, :, :2], expected[:, :, :2])
    assert not torch.equal(held.videos[:, :, 2], expected[:, :, 2])  # frames 5-7 are generated in it

    text_only = dict(num_frames=9, height=64, width=96, num_inference_steps=3, guidance_scale=2.0,
                     output_type="latent")
    assert torch.equal(demo_pipe(PROMPT, generator=generator(9), **text_only).videos,
                       demo_pipe(PROMPT, generator=generator(9), replace_kept_latents=True, **text_only).videos)


@pytest.mark.parametrize("sampler", sorted(SAMPLERS))
def test_replace_kept_latents_works_with_every_sampler(random_bundle, sampler):
    """Each sampler brings the held latent frames to the next step's noise level with its own `add_noise`
    (a sigma for the Euler family, alphas for DDPM/DDIM/PNDM, ...) and ends on their clean encoding."""
    pipe = OpenSoraInpaintPipeline.from_pretrained(random_bundle, sampler=sampler)
    call = dict(conditions=[str(MEDIA / "i2v.png")], num_frames=5, height=32, width=48, crop_for_hw=True,
                num_inference_steps=4, guidance_scale=1.0, output_type="latent")  # (PNDM needs 4 or more)
    out = pipe("x", generator=generator(0), replace_kept_latents=True, **call).videos
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out[:, :, :1], _encoded_prefix(pipe, 1, **call), atol=0, rtol=0)
