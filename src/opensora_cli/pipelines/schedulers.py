"""The `--sample-method` registry: the reference's sampler names -> diffusers schedulers, built for v1.3.

The released v1.3 model predicts velocity (`v_prediction`) and was trained on the diffusers default schedule
(1000 steps, linear betas 1e-4 -> 0.02) rescaled to zero terminal SNR. Every sampler here gets that same
schedule, with "trailing" timesteps so that sampling starts from pure noise at t = 999:

    scheduler = make_scheduler("DPMSolverMultistep")
    scheduler.set_timesteps(50)

The reference passes `rescale_betas_zero_snr` / `timestep_spacing` blindly, so three samplers crash on
construction and two silently lose zero SNR; here each class gets the kwargs it understands and, where
it has no zero-SNR switch, the rescaled betas themselves.
"""

from __future__ import annotations

import inspect

import torch
from diffusers import (
    CogVideoXDDIMScheduler,
    DDIMScheduler,
    DDPMScheduler,
    DEISMultistepScheduler,
    DPMSolverMultistepScheduler,
    DPMSolverSinglestepScheduler,
    EulerAncestralDiscreteScheduler,
    EulerDiscreteScheduler,
    HeunDiscreteScheduler,
    KDPM2AncestralDiscreteScheduler,
    PNDMScheduler,
)
from diffusers.schedulers.scheduling_ddim import rescale_zero_terminal_snr
from diffusers.schedulers.scheduling_utils import SchedulerMixin

from opensora_cli.schemas.problems import closest

DEFAULT_SAMPLER = "EulerAncestralDiscrete"

# The reference's `--sample_method` names, in its order.
SAMPLERS: dict[str, type[SchedulerMixin]] = {
    "DDIM": DDIMScheduler,
    "EulerDiscrete": EulerDiscreteScheduler,
    "DDPM": DDPMScheduler,
    "DPMSolverMultistep": DPMSolverMultistepScheduler,
    "DPMSolverSinglestep": DPMSolverSinglestepScheduler,
    "PNDM": PNDMScheduler,
    "HeunDiscrete": HeunDiscreteScheduler,
    "EulerAncestralDiscrete": EulerAncestralDiscreteScheduler,
    "DEISMultistep": DEISMultistepScheduler,
    "KDPM2AncestralDiscrete": KDPM2AncestralDiscreteScheduler,
    "CogVideoX": CogVideoXDDIMScheduler,
}

# Lower-cased sampler names and class names -> sampler name.
_ALIASES = {key.lower(): name for name, cls in SAMPLERS.items() for key in (name, cls.__name__)}
_FLOW_NAMES = {"flowmatcheulerdiscrete", "flowmatcheulerdiscretescheduler"}

# The schedule the released model was trained with (diffusers' defaults).
BETA_START, BETA_END = 1e-4, 0.02
# What diffusers' sigma-based schedulers put in place of alpha_bar_T = 0 (sigma_max = 2**12 = 4096).
TERMINAL_ALPHA_BAR = 2.0**-24


def sampler_names() -> list[str]:
    """The accepted sampler names (class names and any letter case are accepted too)."""
    return list(SAMPLERS)


def resolve_sampler(name: str) -> str:
    """The canonical sampler name for `name` (a sampler name or a diffusers class name, any case).

    Raises:
        ValueError: for flow matching (wrong objective for v1.3) or an unknown name (with a suggestion).
    """
    key = name.strip().lower()
    if key in _ALIASES:
        return _ALIASES[key]
    if key in _FLOW_NAMES:
        raise ValueError(
            f"sampler {name!r} is not usable with Open-Sora Plan v1.3: FlowMatchEulerDiscrete integrates a "
            "rectified-flow velocity (x1 - x0 along a straight path), but the released v1.3 model is a DDPM-style "
            "model trained with v-prediction (v = alpha_t*eps - sigma_t*x0) on a zero-terminal-SNR beta schedule; "
            f"use one of: {', '.join(SAMPLERS)}"
        )
    # Compared without the "scheduler" suffix (it would make "eulr" as close to "pndmscheduler" as to
    # "eulerdiscrete"), with a low cutoff so that short typos of long names still get a hint.
    stems = {alias.removesuffix("scheduler"): name for alias, name in _ALIASES.items()}
    close = closest(key.removesuffix("scheduler"), stems, cutoff=0.4)
    hint = f" (did you mean {stems[close]!r}?)" if close else ""
    raise ValueError(f"unknown sampler {name!r}{hint}; choose one of: {', '.join(SAMPLERS)}")


def zero_terminal_snr_betas(num_train_timesteps: int = 1000) -> list[float]:
    """Linear betas rescaled to zero terminal SNR, with alpha_bar_T clamped to 2**-24.

    The clamp is what diffusers' Euler/DPM++ schedulers do internally after their own rescale: alpha_bar_T = 0
    means sigma_T = sqrt((1 - alpha_bar) / alpha_bar) = inf, which sigma-parameterised solvers (Heun, KDPM2,
    DPM single-step, DEIS) and PNDM's sqrt(alpha_prev / alpha) cannot take. 2**-24 gives sigma_max ~ 4096, still
    pure noise in practice (signal std 2.4e-4 of the noise's), and it keeps these samplers on exactly the schedule
    of the ones that take `rescale_betas_zero_snr` themselves.
    """
    betas = torch.linspace(BETA_START, BETA_END, num_train_timesteps, dtype=torch.float64)
    betas = rescale_zero_terminal_snr(betas)
    alphas_cumprod = torch.cumprod(1.0 - betas, dim=0)
    betas[-1] = 1.0 - TERMINAL_ALPHA_BAR / alphas_cumprod[-2]
    return betas.tolist()


def make_scheduler(name: str = DEFAULT_SAMPLER, *, prediction_type: str = "v_prediction",
                   zero_terminal_snr: bool = True, num_train_timesteps: int = 1000) -> SchedulerMixin:
    """A diffusers scheduler for `name` on the v1.3 training schedule.

    Args:
        name: a sampler name from `sampler_names()`, or its diffusers class name (any letter case).
        prediction_type: what the model predicts; the released v1.3 weights predict "v_prediction".
        zero_terminal_snr: rescale the betas to zero terminal SNR (as trained) and space timesteps "trailing",
            so that the first step is t = num_train_timesteps - 1. Off: the plain linear schedule with the
            reference's "leading" spacing.
        num_train_timesteps: length of the training schedule.

    Raises:
        ValueError: unknown or unusable sampler name.
    """
    cls = SAMPLERS[resolve_sampler(name)]
    accepted = inspect.signature(cls.__init__).parameters
    # beta_schedule explicit: CogVideoX's own default is scaled_linear 0.00085 -> 0.012
    kwargs: dict = dict(num_train_timesteps=num_train_timesteps, beta_start=BETA_START, beta_end=BETA_END,
                        beta_schedule="linear", prediction_type=prediction_type)
    if "clip_sample" in accepted:
        kwargs["clip_sample"] = False  # latents are not bounded to [-1, 1]
    if zero_terminal_snr:
        if "rescale_betas_zero_snr" in accepted:
            kwargs["rescale_betas_zero_snr"] = True
        else:  # DPMSolverSinglestep, PNDM, HeunDiscrete, DEISMultistep, KDPM2AncestralDiscrete
            kwargs["trained_betas"] = zero_terminal_snr_betas(num_train_timesteps)
    # DPMSolverSinglestep has no `timestep_spacing`; its fixed spacing, linspace(0, T-1) reversed, also starts at
    # t = T-1 (then 989, ..., 10: within a step's rounding of "trailing"), which is what zero SNR needs.
    if "timestep_spacing" in accepted:
        kwargs["timestep_spacing"] = "trailing" if zero_terminal_snr else "leading"
    if cls is DPMSolverSinglestepScheduler:
        # Ending on sigma = 0 needs a first-order last step; diffusers switches this on itself, with a warning on
        # every `set_timesteps`.
        kwargs["lower_order_final"] = True
    if cls is CogVideoXDDIMScheduler:
        # Its default SNR shift (3.0) would step on a schedule the model was not trained on.
        kwargs["snr_shift_scale"] = 1.0
    return cls(**kwargs)
