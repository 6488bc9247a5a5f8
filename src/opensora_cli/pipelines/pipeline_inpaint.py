"""OpenSoraInpaintPipeline: conditioned video generation with Open-Sora Plan v1.3 (one prompt per call).

    pipe = OpenSoraInpaintPipeline.from_pretrained("model-bundle")  # transformer/, vae/, text_encoder/
    out = pipe("a red ball rolls", conditions=["ball.png"], num_frames=29, generator=torch.Generator().manual_seed(0))
    out.videos  # (1, 29, H, W, 3) uint8

The condition frames (images at frame indices, or the first frames of a video) are placed on a T-frame canvas
whose unknown frames are black, encoded by the VAE and given to the transformer with the compressed mask;
the model then denoises the whole video (the kept frames are regenerated, not pasted).
"""

from __future__ import annotations

import contextlib
import inspect
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import diffusers
import numpy as np
import torch
from diffusers import DiffusionPipeline
from diffusers.utils import BaseOutput
from diffusers.utils.torch_utils import randn_tensor

from opensora_cli.masks.compressor import MaskCompressor
from opensora_cli.masks.noise import GaussianNoiseAdder
from opensora_cli.masks.patterns import (as_random, exact_latent_prefix, frame_pattern, kept_indices,
                                         pattern_from_indices)
from opensora_cli.masks.planning import plan_line
from opensora_cli.models.text_encoder import prompt_texts
from opensora_cli.schemas.masks import MaskType
from opensora_cli.schemas.resolution import DEFAULT_MAX_HXW, MODEL_HW_STRIDE

# diffusers' step-end callback: (pipe, step index, timestep, {name: tensor}) -> {name: replacement tensor}
StepEndCallback = Callable[["OpenSoraInpaintPipeline", int, torch.Tensor, dict], dict]
Generators = torch.Generator | list[torch.Generator] | None


@dataclass
class OpenSoraPipelineOutput(BaseOutput):
    """`videos`: (B, T, H, W, 3) uint8 numpy ("np"), (B, 3, T, H, W) float in [0, 1] ("pt") or latents ("latent").
    `mask_type`, `kept_frames`: the mask that was used (kept pixel frames, 0-based)."""

    videos: Any
    mask_type: MaskType
    kept_frames: list[int]


class OpenSoraInpaintPipeline(DiffusionPipeline):
    """Image-to-video, transition, continuation and the other v1.3 masks.

    Args:
        text_encoder: `opensora_cli.models.text_encoder.TextEncoder` (encoder + tokenizer).
        vae: `WFVAEModel`.
        transformer: `OpenSoraInpaint_v1_3`.
        scheduler: a diffusers scheduler set up for the model (see `pipelines.schedulers.make_scheduler`).
    """

    model_cpu_offload_seq = "text_encoder->transformer->vae"
    _callback_tensor_inputs = ["latents", "prompt_embeds"]

    def __init__(self, text_encoder, vae, transformer, scheduler) -> None:
        super().__init__()
        self.register_modules(text_encoder=text_encoder, vae=vae, transformer=transformer, scheduler=scheduler)
        self._sequence_parallel = None  # a DistContext while `enable_sequence_parallel` is on
        self._cfg_parallel = None  # a DistContext of 2 (the guidance halves) while `enable_cfg_parallel` is on
        self._offload_device: torch.device | None = None
        self._num_timesteps = 0

    @property
    def num_timesteps(self) -> int:
        """Steps of the current (or last) call, for step callbacks."""
        return self._num_timesteps

    # -- loading ---------------------------------------------------------------------------------------------

    @classmethod
    def from_pretrained(cls, folder: str | Path, *, dtype: torch.dtype = torch.float32,
                        device: torch.device | str = "cpu", text_encoder: bool = True,
                        sampler: str | None = None) -> OpenSoraInpaintPipeline:
        """A model bundle: `transformer/`, `vae/`, `text_encoder/` and optionally `scheduler/` (a diffusers
        `scheduler_config.json`), as listed by its `model_index.json` (without one, by its folder names). Each model
        goes through `models.loading.load_pretrained` (every key and shape checked, safetensors only).

        Args:
            text_encoder: False leaves it out (for precomputed `prompt_embeds`).
            sampler: a sampler name (see `pipelines.schedulers`); overrides the bundle's scheduler. Without either,
                `make_scheduler` of the bundle's `opensora_defaults.json` sampler.
        """
        from opensora_cli.models.autoencoder_wfvae import WFVAEModel
        from opensora_cli.models.loading import load_pretrained
        from opensora_cli.models.text_encoder import TextEncoder
        from opensora_cli.models.transformer_opensora import OpenSoraInpaint_v1_3
        from opensora_cli.pipelines.schedulers import DEFAULT_SAMPLER, make_scheduler

        def read(path: Path) -> dict:
            return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}

        folder = Path(folder)
        index = read(folder / "model_index.json")
        for name in ("transformer", "vae"):
            if not (folder / name / "config.json").is_file():
                raise ValueError(f"{folder}: no {name}/config.json — not a model bundle")
        scheduler_config = folder / "scheduler" / "scheduler_config.json"
        if sampler is None and scheduler_config.is_file():
            class_name = read(scheduler_config)["_class_name"]
            scheduler_class = getattr(diffusers, class_name, None)
            if not (isinstance(scheduler_class, type) and issubclass(scheduler_class, diffusers.SchedulerMixin)):
                raise ValueError(f"{scheduler_config.parent}: '{class_name}' is not a diffusers scheduler")
            scheduler = scheduler_class.from_pretrained(scheduler_config.parent)
        else:
            defaults = read(folder / "opensora_defaults.json")
            scheduler = make_scheduler(sampler or defaults.get("sampler", DEFAULT_SAMPLER))
        listed = index.get("text_encoder", ["listed"])[0] is not None  # [null, null]: a bundle saved without one
        with_text = text_encoder and listed and (folder / "text_encoder" / "config.json").is_file()
        return cls(
            text_encoder=TextEncoder.from_pretrained(folder / "text_encoder", dtype=dtype, device=device)
            if with_text else None,
            vae=load_pretrained(WFVAEModel, folder / "vae", dtype=dtype, device=device),
            transformer=load_pretrained(OpenSoraInpaint_v1_3, folder / "transformer", dtype=dtype, device=device),
            scheduler=scheduler,
        )

    # -- sequence parallelism --------------------------------------------------------------------------------

    def enable_sequence_parallel(self, ctx) -> None:
        """Share each video's latent frames across the ranks of `ctx` (a `distributed.device.DistContext`):
        attention runs the all-to-all of `distributed.sequence_parallel`, every rank runs its slice of frames."""
        from opensora_cli.distributed.sequence_parallel import SequenceParallelAttnProcessor

        self.transformer.set_attn_processor(SequenceParallelAttnProcessor(ctx))
        self._sequence_parallel = ctx

    def enable_cfg_parallel(self, ctx) -> None:
        """Run one half of classifier-free guidance here: unconditional on rank 0 of `ctx` (a 2-process
        `DistContext`, `distributed.cfg_parallel.grid_contexts`), conditional on rank 1; both halves' outputs
        are gathered once per step. Without guidance (scale <= 1) both ranks run the one pass."""
        self._cfg_parallel = ctx

    # -- 0. memory: model offload ----------------------------------------------------------------------------

    def enable_model_cpu_offload(self, gpu_id: int | None = None, device: torch.device | str = "cuda") -> None:
        """Keep every model on the CPU and move each to `device` only for its phase (text encoding, VAE
        encoding, the denoising loop, VAE decoding). diffusers' hook-based offload only sees `forward`, and the
        VAE here is called through `encode_latents` / `decode_latents`, so the phases are placed explicitly."""
        self._offload_device = torch.device(device)
        for module in (self.text_encoder, self.vae, self.transformer):
            if module is not None:
                module.to("cpu")

    @property
    def _execution_device(self) -> torch.device:
        return self._offload_device if self._offload_device is not None else super()._execution_device

    @contextlib.contextmanager
    def _placed(self, module):
        """Under offload, `module` is on the execution device inside the block and back on the CPU after it."""
        if self._offload_device is None or module is None:
            yield
            return
        module.to(self._offload_device)
        try:
            yield
        finally:
            module.to("cpu")

    # -- 1. checks -------------------------------------------------------------------------------------------

    def check_inputs(self, num_frames: int, height: int | None, width: int | None, crop_for_hw: bool,
                     guidance_scale: float, noise_strength: float, num_videos_per_prompt: int,
                     generator: Generators, callback_on_step_end_tensor_inputs: Sequence[str]) -> None:
        batch, stride_t, stride = num_videos_per_prompt, self.vae.vae_scale_factor[0], MODEL_HW_STRIDE
        unknown = sorted(set(callback_on_step_end_tensor_inputs) - set(self._callback_tensor_inputs))
        generators = len(generator) if isinstance(generator, list) else batch
        for failed, message in (  # the first failed check is raised
            (num_frames < 1 or (num_frames - 1) % stride_t, f"num_frames must be 1 + {stride_t}k, got {num_frames}"),
            *((v is not None and (v < stride or v % stride), f"{n} must be a positive multiple of {stride}, got {v}")
              for n, v in (("height", height), ("width", width))),
            (crop_for_hw and (height is None or width is None), "crop_for_hw needs height and width"),
            (guidance_scale < 0, f"guidance_scale must be >= 0, got {guidance_scale}"),
            (not 0.0 <= noise_strength <= 1.0, f"noise_strength must be in [0, 1], got {noise_strength}"),
            (batch < 1, f"num_videos_per_prompt must be >= 1, got {batch}"),
            (unknown, f"callback tensor inputs {unknown} are not among {self._callback_tensor_inputs}"),
            (generators != batch, f"{generators} generators for {batch} videos; pass one per video"),
        ):
            if failed:
                raise ValueError(message)

    # -- 2. text ---------------------------------------------------------------------------------------------

    def encode_prompt(self, prompt: str, negative_prompt: str | None, do_cfg: bool,
                      use_template: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        """Text states and mask, (1 or 2, 1, L, C) and (1 or 2, 1, L): rows [negative; prompt] with CFG
        (`negative_prompt` and the template as in `__call__`)."""
        return self.text_encoder(prompt_texts(prompt, negative_prompt, do_cfg, use_template))

    # -- 3. conditions ---------------------------------------------------------------------------------------

    def prepare_conditions(self, conditions: Sequence[str | Path | torch.Tensor | np.ndarray] | None,
                           frame_indices: Sequence[int] | None, mask_type: MaskType | str | None, num_frames: int,
                           height: int | None, width: int | None, crop_for_hw: bool, max_hxw: int,
                           rng) -> tuple[torch.Tensor, list[int], MaskType]:
        """The masked clip and its pattern.

        Returns:
            masked pixels (3, T, H, W) in [-1, 1] with unknown frames black (-1), the pattern (T ints,
            1 = generate) and the mask type.
        """
        from opensora_cli.data.transforms import load_condition_frames, resize_conditions

        conditions = list(conditions or [])
        kinds, clips = [], []
        for item in conditions:
            if isinstance(item, (str, Path)):
                from opensora_cli.data.media import media_kind

                kind = media_kind(item)
                if kind is None:
                    raise ValueError(f"'{item}' is not a supported image or video")
                clips.extend(load_condition_frames([str(item)], kind, num_frames))
            else:
                frames = torch.as_tensor(np.asarray(item) if not isinstance(item, torch.Tensor) else item)
                if frames.ndim == 3:
                    frames = frames.permute(2, 0, 1)[None] if frames.shape[-1] == 3 else frames[None]
                kind = "image" if frames.shape[0] == 1 else "video"
                clips.append(frames)
            kinds.append(kind)
        indices = list(frame_indices) if frame_indices is not None else [None] * len(conditions)
        if len(indices) != len(conditions):
            raise ValueError(f"{len(indices)} frame indices for {len(conditions)} conditions")
        plan = plan_line(kinds, indices, mask_type, num_frames)
        if plan.problems:
            raise ValueError("; ".join(f"{what} ({fix})" for what, fix in plan.problems))
        if "video" in kinds and clips[0].shape[0] < num_frames:
            raise ValueError(f"the video has {clips[0].shape[0]} frames, {num_frames} needed")

        if not clips:
            if height is None or width is None:
                raise ValueError("without conditions, give height and width")
            canvas = torch.full((3, num_frames, height, width), -1.0)
            return canvas, frame_pattern(MaskType.t2iv, num_frames), MaskType.t2iv
        resized, (out_h, out_w) = resize_conditions(
            [c[:num_frames] for c in clips], crop_for_hw=crop_for_hw, height=height, width=width, max_hxw=max_hxw
        )
        if height is not None and width is not None and (out_h, out_w) != (height, width):
            # arbitrary-resolution mode: the inputs decide the size; a caller's plan must agree with it
            raise ValueError(f"the conditions give a {out_h}x{out_w} video, not {height}x{width}: pass "
                             "crop_for_hw=True to resize them to that size, or no height and width")
        if plan.frame_indices is None:  # a video: the mask type's generator decides what is kept
            video = resized[0]  # (T, 3, H, W)
            pattern = frame_pattern(plan.mask_type, num_frames, rng)
        else:
            video = torch.full((num_frames, 3, out_h, out_w), -1.0)
            for index, image in zip(plan.frame_indices, resized):
                video[index] = image[0]
            pattern = pattern_from_indices(num_frames, plan.frame_indices)
        keep = torch.tensor(pattern).view(-1, 1, 1, 1) == 0
        masked = torch.where(keep, video, torch.full_like(video, -1.0))
        return masked.permute(1, 0, 2, 3), pattern, plan.mask_type

    # -- 4. the call -----------------------------------------------------------------------------------------

    @torch.no_grad()
    def __call__(
        self,
        prompt: str,
        conditions: Sequence[str | Path | torch.Tensor | np.ndarray] | None = None,
        frame_indices: Sequence[int] | None = None,
        mask_type: MaskType | str | None = None,
        num_frames: int = 93, height: int | None = None, width: int | None = None,
        crop_for_hw: bool = False, max_hxw: int = DEFAULT_MAX_HXW,
        num_inference_steps: int = 100, guidance_scale: float = 7.5, guidance_rescale: float = 0.0,
        negative_prompt: str | None = None, use_prompt_template: bool = True,
        num_videos_per_prompt: int = 1, noise_strength: float = 0.0, sample_posterior: bool = False,
        replace_kept_latents: bool = False,
        generator: Generators = None,
        latents: torch.Tensor | None = None,
        prompt_embeds: tuple[torch.Tensor, torch.Tensor] | None = None,
        output_type: str = "np", return_dict: bool = True,
        callback_on_step_end: StepEndCallback | None = None,
        callback_on_step_end_tensor_inputs: Sequence[str] = ("latents",),
    ) -> OpenSoraPipelineOutput | tuple:
        """Generate `num_videos_per_prompt` videos for one prompt.

        Args:
            prompt: the text (wrapped in the reference's template unless `use_prompt_template=False`).
            conditions: image paths/arrays, or one video path/array ((T, H, W, 3) or (T, 3, H, W) uint8).
            frame_indices: kept frame of each image (negative from the end); None = defaults by count.
            mask_type: None = from the inputs (see `masks.planning`).
            num_frames: 1 + 4k. height/width: output size with `crop_for_hw` or for text only; with conditions in
                arbitrary-resolution mode, the size they give (checked) or None.
            max_hxw: area cap of the arbitrary-resolution mode.
            guidance_scale: classifier-free guidance; <= 1 disables it (one forward per step).
            guidance_rescale: phi of "Common Diffusion Noise Schedules are Flawed" (0 = off).
            negative_prompt: the unconditional text; None = the reference's negative prompt, "" = none.
            noise_strength: sigma of Gaussian noise on the kept frames (0 = none).
            sample_posterior: encode conditions with a posterior sample (the reference) instead of its mean.
            replace_kept_latents: after every step, overwrite the latent frames that the kept frames alone
                determine (the causal VAE's: those of a run of kept frames from frame 0) with their encoding,
                noised to the step's level (diffusers' inpainting pipelines do this in pixel-mask form); the
                last step leaves them exact, so kept frames come back as the VAE reconstructs them. False = the
                reference: the transformer generates every latent frame.
            generator: the only source of randomness. A list gives each video its own, used as a call for that
                video alone would use it (so video i equals that call), except for what the videos share: a
                random mask, the noise on kept frames and a posterior sample come from the first.
            latents: initial noise (B, C, T', h, w) instead of drawing it (scaled by the scheduler's
                `init_noise_sigma`, as in diffusers).
            prompt_embeds: precomputed `encode_prompt` output (then the text encoder is not used).
            output_type: "np" (B, T, H, W, 3) uint8, "pt" (B, 3, T, H, W) float in [0, 1], or "latent".
            return_dict: False returns the tuple (videos, mask_type, kept_frames).
            callback_on_step_end: called after each step as diffusers' pipelines do, with the tensors named in
                `callback_on_step_end_tensor_inputs` (of `_callback_tensor_inputs`); a returned "latents"
                replaces them.
        """
        self.check_inputs(num_frames, height, width, crop_for_hw, guidance_scale, noise_strength,
                          num_videos_per_prompt, generator, callback_on_step_end_tensor_inputs)
        batch = num_videos_per_prompt
        shared_generator = generator[0] if isinstance(generator, list) else generator
        device = self._execution_device
        dtype = self.transformer.dtype
        do_cfg = guidance_scale > 1.0

        # 1. Text: (1 or 2, 1, L, C) -> repeated per video, [negative x B; prompt x B]
        if prompt_embeds is None:
            with self._placed(self.text_encoder):
                prompt_embeds = self.encode_prompt(prompt, negative_prompt, do_cfg, use_prompt_template)
        embeds, text_mask = prompt_embeds
        embeds = embeds.to(device=device, dtype=dtype).repeat_interleave(batch, dim=0)
        text_mask = text_mask.to(device).repeat_interleave(batch, dim=0)

        # 2. Conditions: masked clip (3, T, H, W), pattern, type; noise on kept frames; VAE; latent mask
        mask_rngs = [as_random(g) for g in generator] if isinstance(generator, list) else [as_random(generator)]
        masked, pattern, used_type = self.prepare_conditions(
            conditions, frame_indices, mask_type, num_frames, height, width, crop_for_hw, max_hxw, mask_rngs[0]
        )
        _, _, out_h, out_w = masked.shape
        masked = masked[None].expand(batch, -1, -1, -1, -1).to(device=device, dtype=self.vae.dtype)
        pixel_mask = torch.tensor(pattern, dtype=self.vae.dtype, device=device).view(1, 1, -1, 1, 1)
        pixel_mask = pixel_mask.expand(batch, 1, num_frames, out_h, out_w)  # (B, 1, T, H, W), 1 = generate
        known = exact_latent_prefix(pattern, self.vae.vae_scale_factor[0]) if replace_kept_latents else 0
        clean = masked[:, :, :1 + (known - 1) * self.vae.vae_scale_factor[0]] if known else None
        noise_adder = GaussianNoiseAdder.for_inference(noise_strength)
        if noise_adder is not None:
            masked = noise_adder(masked, pixel_mask, shared_generator)
        with self._placed(self.vae):
            masked_latents = self.vae.encode_latents(masked, sample_posterior=sample_posterior,
                                                     generator=shared_generator)
            if known and noise_adder is not None:  # the noise is a hint to the transformer, not the kept frames
                known_latents = self.vae.encode_latents(clean, sample_posterior=False)[:, :, :known]
            elif known:  # causal: the first `known` latent frames of the clip's encoding are those of the prefix
                known_latents = masked_latents[:, :, :known]
        latent_mask = MaskCompressor(*self.vae.vae_scale_factor)(pixel_mask)  # (B, 4, T', h, w); no weights
        condition = torch.cat([masked_latents, latent_mask], dim=1).to(dtype)  # (B, 8 + 4, T', h, w)
        if do_cfg:
            condition = torch.cat([condition, condition])

        # 3. Timesteps and initial noise (drawn on the generator's device: same numbers on CPU and GPU)
        self.scheduler.set_timesteps(num_inference_steps, device=device)
        timesteps = self.scheduler.timesteps
        self._num_timesteps = len(timesteps)
        latents = self.prepare_latents(latents, (batch, self.transformer.config.in_channels,
                                                 *masked_latents.shape[2:]), generator, device)
        replace = None
        if known:  # (clean latents, the noise they are brought to each level with: the initial draw's)
            replace = (known_latents.float(), latents[:, :, :known] / self.scheduler.init_noise_sigma)
        takes_generator = "generator" in inspect.signature(self.scheduler.step).parameters
        step_kwargs = {"generator": generator} if takes_generator else {}

        # 4. Denoising loop
        with self._placed(self.transformer):
            latents = self._denoise(latents, condition, timesteps, embeds, text_mask, do_cfg, guidance_scale,
                                    guidance_rescale, step_kwargs, callback_on_step_end,
                                    callback_on_step_end_tensor_inputs, replace)

        if not torch.isfinite(latents).all():  # one sync per video, so that a NaN never becomes a black video
            raise FloatingPointError(f"the sampler produced NaN/inf latents in {dtype}")

        # 5. Decode: (B, 3, T, H, W) in [-1, 1] -> [0, 1]; uint8 rounded to nearest (truncating darkens)
        videos = latents
        if output_type != "latent":
            with self._placed(self.vae):
                videos = self.vae.decode_latents(latents.to(self.vae.dtype))[:, :, :num_frames].float()
            videos = (videos / 2 + 0.5).clamp(0, 1)
            if output_type != "pt":  # (B, T, H, W, 3)
                videos = (videos * 255).round().to(torch.uint8).permute(0, 2, 3, 4, 1).cpu().numpy()
        output = OpenSoraPipelineOutput(videos=videos, mask_type=used_type, kept_frames=kept_indices(pattern))
        return output if return_dict else output.to_tuple()

    def prepare_latents(self, latents: torch.Tensor | None, shape: tuple[int, ...], generator: Generators,
                        device: torch.device) -> torch.Tensor:
        """Initial noise (B, C, T', h, w) in fp32, scaled for the scheduler; drawn unless `latents` is given."""
        if latents is None:
            latents = randn_tensor(shape, generator=generator, device=device, dtype=torch.float32)
        elif tuple(latents.shape) != tuple(shape):
            raise ValueError(f"latents have shape {tuple(latents.shape)}, expected {tuple(shape)}")
        return latents.to(device=device, dtype=torch.float32) * self.scheduler.init_noise_sigma

    def _denoise(self, latents: torch.Tensor, condition: torch.Tensor, timesteps: torch.Tensor, embeds: torch.Tensor,
                 text_mask: torch.Tensor, do_cfg: bool, guidance_scale: float, guidance_rescale: float,
                 step_kwargs: dict, callback: StepEndCallback | None, callback_inputs: Sequence[str],
                 replace: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        """The sampling loop. latents (B, C, T', h, w) fp32; condition (B', 12, T', h, w) = [masked latent | mask];
        replace: (clean (B, C, k, h, w), noise of that shape) for the first k latent frames, or None."""
        dtype = self.transformer.dtype
        if getattr(self.transformer, "is_cache_enabled", False):  # a step cache starts afresh with every video
            self.transformer._reset_stateful_cache()
        split = do_cfg and self._cfg_parallel is not None
        if split:  # this rank's half of the batched guidance inputs, [unconditional; conditional]
            from opensora_cli.distributed.cfg_parallel import gather_halves

            half = self._cfg_parallel.rank
            condition, embeds, text_mask = (None if x is None else x.chunk(2)[half]
                                            for x in (condition, embeds, text_mask))
        for index, t in enumerate(timesteps):
            model_input = torch.cat([latents, latents]) if do_cfg and not split else latents
            model_input = self.scheduler.scale_model_input(model_input, t).to(dtype)
            model_input = torch.cat([model_input, condition], dim=1)  # (B', 20, T', h, w)
            velocity = self._transformer(model_input, t, embeds, text_mask)
            if split:  # the one exchange of the step: both halves' outputs on both ranks
                velocity = gather_halves(velocity, self._cfg_parallel)
            if do_cfg:
                uncond, cond = velocity.float().chunk(2)
                guided = uncond + guidance_scale * (cond - uncond)
                if guidance_rescale > 0:
                    from diffusers.pipelines.stable_diffusion.pipeline_stable_diffusion import (
                        rescale_noise_cfg,
                    )

                    guided = rescale_noise_cfg(guided, cond, guidance_rescale=guidance_rescale)
            else:
                guided = velocity.float()
            latents = self.scheduler.step(guided, t, latents, **step_kwargs, return_dict=False)[0]
            if replace is not None:  # where the next step starts: the known frames at its noise level
                clean, noise = replace
                known = clean.shape[2]
                if index + 1 < len(timesteps):
                    clean = self.scheduler.add_noise(clean, noise, timesteps[index + 1].reshape(1))
                latents = torch.cat([clean.to(latents.dtype), latents[:, :, known:]], dim=2)
            if callback is not None:
                tensors = {"latents": latents, "prompt_embeds": embeds}
                returned = callback(self, index, t, {name: tensors[name] for name in callback_inputs}) or {}
                latents = returned.get("latents", latents)
        return latents

    def _transformer(self, model_input: torch.Tensor, t: torch.Tensor, embeds: torch.Tensor,
                     text_mask: torch.Tensor) -> torch.Tensor:
        """One transformer call; under sequence parallelism each rank runs its slice of latent frames."""
        timestep = t.expand(model_input.shape[0]).to(model_input.device)
        sp = self._sequence_parallel
        if sp is not None:
            from opensora_cli.distributed.sequence_parallel import gather_time, shard_time

            model_input = shard_time(model_input, sp)
        # One cache context for the batched CFG halves: a step cache (`transformer.enable_cache`) decides for
        # both at once, as they run in one call.
        with self.transformer.cache_context("denoise"):
            out = self.transformer(model_input, timestep, encoder_hidden_states=embeds,
                                   encoder_attention_mask=text_mask, return_dict=False)[0]
        return gather_time(out, sp) if sp is not None else out
