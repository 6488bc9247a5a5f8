"""The sampler registry: every name builds on the zero-SNR v-prediction schedule and denoises a toy exactly."""

from __future__ import annotations

import inspect
import math

import pytest
import torch

from opensora_cli.pipelines.schedulers import (
    SAMPLERS,
    TERMINAL_ALPHA_BAR,
    make_scheduler,
    resolve_sampler,
    sampler_names,
)

# diffusers passes tensors to NumPy 2 in ways it deprecates (thousands of warnings); not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore:__array:DeprecationWarning")

TRAILING_100 = list(range(999, 0, -10))  # 999, 989, ..., 9
# Model evaluations for set_timesteps(100): Heun and KDPM2 evaluate twice per step but the last; PNDM adds its
# Runge-Kutta warm-up (three steps at four evaluations); everything else is one per step.
EVALUATIONS_100 = {"HeunDiscrete": 199, "KDPM2AncestralDiscrete": 199, "PNDM": 109}
# Samplers whose last step does not reach sigma = 0 with 6 trailing steps: DDIM-style "previous timestep" of the
# last one (166) is 166 - 1000 // 6 = 0, so sqrt(1 - alpha_bar_0) = 0.01 of the noise is left by design.
ENDS_AT_T0 = {"DDIM", "DEISMultistep", "CogVideoX"}


def test_names_are_the_reference_ones():
    assert sampler_names() == [
        "DDIM", "EulerDiscrete", "DDPM", "DPMSolverMultistep", "DPMSolverSinglestep", "PNDM", "HeunDiscrete",
        "EulerAncestralDiscrete", "DEISMultistep", "KDPM2AncestralDiscrete", "CogVideoX",
    ]
    assert type(make_scheduler()).__name__ == "EulerAncestralDiscreteScheduler"


@pytest.mark.parametrize("alias, name", [
    ("EulerAncestralDiscreteScheduler", "EulerAncestralDiscrete"),
    ("eulerancestraldiscrete", "EulerAncestralDiscrete"),
    ("ddimscheduler", "DDIM"),
    ("CogVideoXDDIMScheduler", "CogVideoX"),
    ("  dpmsolversinglestep ", "DPMSolverSinglestep"),
])
def test_class_names_and_any_case_resolve(alias, name):
    assert resolve_sampler(alias) == name
    assert type(make_scheduler(alias)) is SAMPLERS[name]


@pytest.mark.parametrize("name", ["FlowMatchEulerDiscrete", "flowmatcheulerdiscretescheduler"])
def test_flow_matching_is_refused_with_the_reason(name):
    with pytest.raises(ValueError, match="v-prediction") as info:
        make_scheduler(name)
    assert "flow" in str(info.value).lower() and "EulerAncestralDiscrete" in str(info.value)


def test_unknown_name_suggests_the_closest():
    with pytest.raises(ValueError, match=r"did you mean 'EulerAncestralDiscrete'\?.*DDIM, EulerDiscrete"):
        make_scheduler("EulerAncestal")
    with pytest.raises(ValueError, match=r"did you mean 'EulerDiscrete'\?"):
        make_scheduler("Eulr")
    with pytest.raises(ValueError, match="unknown sampler 'xyz'; choose one of: DDIM"):
        make_scheduler("xyz")


@pytest.mark.parametrize("name", sampler_names())
def test_every_sampler_gets_the_zero_snr_v_schedule(name):
    scheduler = make_scheduler(name)
    assert scheduler.config.prediction_type == "v_prediction"
    # The same rescaled linear schedule as the samplers that rescale it themselves; the terminal alpha_bar is 0
    # (alpha-parameterised) or clamped to 2**-24 (sigma-parameterised, or given as trained_betas).
    reference = make_scheduler("DDIM").alphas_cumprod
    torch.testing.assert_close(scheduler.alphas_cumprod[:-1], reference[:-1], rtol=1e-5, atol=1e-7)
    assert scheduler.alphas_cumprod[-1].item() in (0.0, pytest.approx(TERMINAL_ALPHA_BAR, rel=1e-4))

    scheduler.set_timesteps(100)
    timesteps = scheduler.timesteps
    assert timesteps[0].item() == 999
    assert len(timesteps) == EVALUATIONS_100.get(name, 100)
    if name == "DPMSolverSinglestep":  # no timestep_spacing option: linspace(0, 999) reversed, within 1 of trailing
        assert (timesteps - torch.tensor(TRAILING_100)).abs().max().item() <= 1
    else:
        assert set(TRAILING_100) <= set(timesteps.double().round().long().tolist())


def test_euler_ancestral_matches_the_reference_setup():
    scheduler = make_scheduler("EulerAncestralDiscrete")
    scheduler.set_timesteps(100)
    assert scheduler.timesteps.tolist() == TRAILING_100
    assert scheduler.init_noise_sigma == pytest.approx(4096.0, rel=1e-5)
    assert scheduler.config.timestep_spacing == "trailing" and scheduler.config.rescale_betas_zero_snr


def test_without_zero_snr_the_plain_schedule_and_leading_spacing():
    scheduler = make_scheduler("HeunDiscrete", zero_terminal_snr=False)
    assert scheduler.config.trained_betas is None and scheduler.config.timestep_spacing == "leading"
    alpha_bar_T = torch.prod(1 - torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64)).item()
    assert scheduler.alphas_cumprod[-1].item() == pytest.approx(alpha_bar_T, rel=1e-4)


def _denoise_toy(name: str, steps: int = 6):
    """Run `steps` steps with an oracle model that returns the exact v for a known x0.

    The oracle needs the alpha_bar the scheduler assumes at this call. Sigma-parameterised schedulers scale the
    model input by 1/sqrt(sigma^2 + 1) = sqrt(alpha_bar) with the sigma their `step` will use (including Heun's
    and KDPM2's second-stage sigmas), so alpha_bar = scale^2; the others pass the sample unscaled and use
    alphas_cumprod[t]. In the model's input space x = sqrt(ab)*x0 + sqrt(1-ab)*eps, v = sqrt(ab)*eps - sqrt(1-ab)*x0.

    Returns x0, the final sample, the RMS distance to x0 after each complete step, the eps of the last model call
    and the scheduler's alpha_bar at t = 0.
    """
    scheduler = make_scheduler(name)
    generator = torch.Generator().manual_seed(0)
    x0 = torch.randn(1, 4, 32, 32, generator=generator).clamp(-2, 2)
    scheduler.set_timesteps(steps)
    sample = torch.randn(x0.shape, generator=generator) * scheduler.init_noise_sigma
    takes_generator = "generator" in inspect.signature(scheduler.step).parameters
    distances = []
    for t in scheduler.timesteps:
        model_input = scheduler.scale_model_input(sample, t)
        scale = scheduler.scale_model_input(torch.ones(1), t).item()
        alpha_bar = scale**2 if scale != 1.0 else scheduler.alphas_cumprod[int(t)].item()
        eps = (model_input.double() - math.sqrt(alpha_bar) * x0) / math.sqrt(1 - alpha_bar)
        v = math.sqrt(alpha_bar) * eps - math.sqrt(1 - alpha_bar) * x0
        kwargs = {"generator": generator} if takes_generator else {}
        sample = scheduler.step(v.float(), t, sample, **kwargs).prev_sample
        assert torch.isfinite(sample).all(), f"{name}: non-finite sample at t={t}"
        if getattr(scheduler, "state_in_first_order", True):  # Heun/KDPM2: only after both stages
            distances.append((sample - x0).pow(2).mean().sqrt().item())
    distances.append((sample - x0).pow(2).mean().sqrt().item())
    return x0, sample, distances, eps.float(), scheduler.alphas_cumprod[0].item()


@pytest.mark.parametrize("name", sampler_names())
def test_toy_denoising_reaches_x0(name):
    x0, sample, distances, eps, alpha_bar_0 = _denoise_toy(name)
    # Non-increasing (1 % slack: an RMS over 4096 values, ancestral samplers re-draw noise) and well below start.
    assert all(b <= a * 1.01 for a, b in zip(distances, distances[1:])), distances
    assert distances[-1] < distances[0] / 10, distances
    if name in ENDS_AT_T0:
        # Exactly the DDIM update from t = 166 to t = 0 with the oracle's x0 and eps: 0.01 * eps is left.
        expected = math.sqrt(alpha_bar_0) * x0 + math.sqrt(1 - alpha_bar_0) * eps
        torch.testing.assert_close(sample, expected, rtol=0, atol=1e-5)
    elif name == "PNDM":
        # PLMS extrapolates the raw model output over past timesteps; eps would be constant along the exact path,
        # v is not, so six steps leave an error (0.2 max; 20 steps get down to the t = 0 noise floor).
        assert (sample - x0).abs().max().item() < 0.3
    else:
        # Last step to sigma = 0 returns the oracle's x0; the error is float32 rounding through sigma up to 4096.
        torch.testing.assert_close(sample, x0, rtol=0, atol=1e-5)
