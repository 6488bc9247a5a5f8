"""GaussianNoiseAdder: log-normal Gaussian noise on the kept (conditioning) pixels."""

from __future__ import annotations

import math

import torch


class GaussianNoiseAdder:
    """Adds sigma * N(0, 1) to the kept pixels of a masked clip, sigma = exp(N(mean, std)) per sample.

    Applied in the normalised [-1, 1] domain before VAE encoding. With probability `clear_ratio` a call
    leaves the whole batch untouched (one draw per call).

    Args:
        mean, std: of log(sigma).
        clear_ratio: probability of adding no noise at all.
    """

    def __init__(self, mean: float, std: float, clear_ratio: float = 0.0) -> None:
        if std < 0 or not 0.0 <= clear_ratio <= 1.0:
            raise ValueError(f"need std >= 0 and 0 <= clear_ratio <= 1, got std={std}, clear_ratio={clear_ratio}")
        self.mean, self.std, self.clear_ratio = mean, std, clear_ratio

    @classmethod
    def for_training(cls) -> GaussianNoiseAdder:
        """The reference's `--add_noise_to_condition`: median sigma ~ 0.05, 5 % of batches clean."""
        return cls(mean=-3.0, std=0.5, clear_ratio=0.05)

    @classmethod
    def for_inference(cls, noise_strength: float) -> GaussianNoiseAdder | None:
        """`--noise-strength s` in [0, 1]: sigma ~ s (+-1 %); None for s = 0 (no noise)."""
        if not 0.0 <= noise_strength <= 1.0:
            raise ValueError(f"noise_strength must be in [0, 1], got {noise_strength}")
        if noise_strength == 0.0:
            return None
        return cls(mean=math.log(noise_strength), std=0.01, clear_ratio=0.0)

    def __call__(self, pixel_values: torch.Tensor, mask: torch.Tensor | None = None,
                 generator: torch.Generator | None = None) -> torch.Tensor:
        """Noise a batch.

        Args:
            pixel_values: (B, C, T, H, W) masked clip in [-1, 1].
            mask: (B, 1, T, H, W), 1 = generate, 0 = keep; noise goes only where mask < 0.5. None = everywhere.
            generator: draws happen on the generator's device and move to the data's.

        Returns:
            A new tensor like `pixel_values`.
        """
        gen_device = generator.device if generator is not None else pixel_values.device
        if self.clear_ratio > 0 and torch.rand((), generator=generator, device=gen_device).item() < self.clear_ratio:
            return pixel_values
        batch = pixel_values.shape[0]
        log_sigma = torch.randn(batch, generator=generator, device=gen_device) * self.std + self.mean
        sigma = log_sigma.exp().view(batch, *([1] * (pixel_values.dim() - 1)))
        noise = torch.randn(pixel_values.shape, generator=generator, device=gen_device) * sigma
        noise = noise.to(device=pixel_values.device, dtype=pixel_values.dtype)
        if mask is not None:
            noise = noise * (mask < 0.5).to(noise.dtype)
        return pixel_values + noise
