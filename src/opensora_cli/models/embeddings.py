"""Embeddings of the Open-Sora Plan v1.3 transformer that diffusers has no equivalent for: the per-frame patch
embedding and the 3-D rotary position embedding (RoPE-3D). The timestep (adaLN-single) and caption modules are
diffusers' own, imported by the transformer.

Module and attribute names decide checkpoint keys (`pos_embed.proj`, ...): keep them.
"""

from __future__ import annotations

import torch
from torch import nn

# ------------------------------------------------------------------------------------------------------------
# Patches
# ------------------------------------------------------------------------------------------------------------


class PatchEmbed2D(nn.Module):
    """Non-overlapping spatial patches of every frame (Conv2d, kernel = stride = patch) flattened to tokens in
    (t, y, x) row-major order. No absolute position is added: position comes from RoPE-3D."""

    def __init__(self, in_channels: int, embed_dim: int, patch_size: int, bias: bool = True):
        super().__init__()
        self.proj = nn.Conv2d(in_channels, embed_dim, kernel_size=patch_size, stride=patch_size, bias=bias)

    def forward(self, latents: torch.Tensor) -> torch.Tensor:
        """
        Args:
            latents: (B, C, T, H, W), H and W multiples of the patch size.

        Returns:
            (B, T * H/p * W/p, embed_dim).
        """
        batch, channels, frames, height, width = latents.shape
        latents = latents.transpose(1, 2).reshape(batch * frames, channels, height, width)  # (B*T, C, H, W)
        tokens = self.proj(latents)  # (B*T, D, H/p, W/p)
        tokens = tokens.unflatten(0, (batch, frames)).flatten(3)  # (B, T, D, H/p * W/p)
        return tokens.transpose(2, 3).reshape(batch, -1, tokens.shape[2])  # (B, N, D)


# ------------------------------------------------------------------------------------------------------------
# RoPE-3D
# ------------------------------------------------------------------------------------------------------------


class RotaryEmbedding3D(nn.Module):
    """cos/sin tables of the 3-D rotary embedding for a token grid (T, H, W) in (t, y, x) row-major order.

    The head dimension is split in three equal chunks [t | y | x]; chunk width Dc uses inverse frequencies
    1 / 10000^(2j / Dc), j < Dc/2, on positions divided by the axis' interpolation scale; angles are
    duplicated (concatenated, not interleaved) to Dc and applied with the rotate-half convention
    (`apply_rotary_emb`).

    Tables are cached per (grid, interpolation scales, dtype, device, rounding) — the reference's cache key
    leaves out the scales, which hands out wrong tables when two scales share a length.

    Args:
        head_dim: attention head width, a multiple of 6 (three chunks, each split in halves).
        interpolation_scale: (t, h, w) position divisors.
        reference_rounding: cast the angles to the activation dtype before cos/sin, as the reference does (the
            released weights were trained in bf16 with that rounding); False computes cos/sin of exact float32
            angles and casts the result.
    """

    _cache_size = 16  # a sampling run uses one grid; training buckets use a handful

    def __init__(self, head_dim: int, interpolation_scale: tuple[float, float, float] = (1.0, 1.0, 1.0),
                 theta: float = 10000.0, reference_rounding: bool = False):
        super().__init__()
        if head_dim % 6 != 0:
            raise ValueError(f"RoPE-3D needs attention_head_dim divisible by 6 (three chunks, two halves), "
                             f"got {head_dim}")
        self.head_dim = head_dim
        self.interpolation_scale = tuple(float(s) for s in interpolation_scale)
        self.theta = theta
        self.reference_rounding = reference_rounding
        self._cache: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}

    def _axis_angles(self, length: int, scale: float, device: torch.device) -> torch.Tensor:
        chunk = self.head_dim // 3
        inv_freq = 1.0 / (self.theta ** (torch.arange(0, chunk, 2, device=device).float() / chunk))  # (Dc/2,)
        positions = torch.arange(length, device=device, dtype=torch.float32) / scale
        return torch.outer(positions, inv_freq)  # (length, Dc/2) float32

    def forward(self, grid: tuple[int, int, int], device: torch.device,
                dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """
        Args:
            grid: (T, H, W) of the token grid — under sequence parallelism the full (gathered) grid.

        Returns:
            cos, sin: (N, 1, head_dim) with N = T*H*W, broadcasting over (B, N, heads, head_dim). `sin`
            carries the rotate-half sign (negative on the first half of each chunk), so that
            x * cos + swap_halves(x) * sin == x * cos + rotate_half(x) * sin exactly.
        """
        key = (tuple(grid), self.interpolation_scale, dtype, torch.device(device), self.reference_rounding)
        tables = self._cache.get(key)
        if tables is None:
            # Plain tensors even inside inference_mode: a cache filled while sampling still serves training.
            with torch.inference_mode(False), torch.no_grad():
                tables = self._tables(grid, torch.device(device), dtype)
            if len(self._cache) >= self._cache_size:
                self._cache.pop(next(iter(self._cache)))
            self._cache[key] = tables
        return tables

    def _tables(self, grid, device, dtype):
        frames, height, width = grid
        cos_axes, sin_axes = [], []
        for length, scale in zip(grid, self.interpolation_scale):
            angles = self._axis_angles(length, scale, device)
            if self.reference_rounding:
                angles = angles.to(dtype)
            cos, sin = angles.cos(), angles.sin()  # (length, Dc/2)
            cos_axes.append(torch.cat([cos, cos], dim=-1).to(dtype))  # (length, Dc)
            sin_axes.append(torch.cat([-sin, sin], dim=-1).to(dtype))
        shape = (frames, height, width, self.head_dim // 3)

        def expand(tables):  # per-axis (length, Dc) -> (N, 1, head_dim), t chunk first
            t, y, x = tables
            t, y, x = (t[:, None, None], y[None, :, None], x[None, None])  # broadcast over the grid
            full = torch.cat([t.expand(shape), y.expand(shape), x.expand(shape)], dim=-1)  # (T, H, W, Dh)
            return full.reshape(frames * height * width, 1, self.head_dim)

        return expand(cos_axes), expand(sin_axes)


def apply_rotary_emb(hidden_states: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate each of the three head-dim chunks of `hidden_states` by the RoPE-3D tables.

    Args:
        hidden_states: (B, N, heads, head_dim) queries or keys.
        cos, sin: (N, 1, head_dim) from `RotaryEmbedding3D` (sin already signed for rotate-half).

    Returns:
        (B, N, heads, head_dim), same dtype as `hidden_states`.
    """
    # Swap the two halves of every chunk: (..., 3, 2, Dc/2) flipped on the "2" axis; the sign is in `sin`.
    swapped = hidden_states.unflatten(-1, (3, 2, -1)).flip(-2).flatten(-3)
    return torch.addcmul(hidden_states * cos, swapped, sin)
