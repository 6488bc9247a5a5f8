"""MaskCompressor: pixel mask (B, 1, T, H, W) -> latent mask (B, vae_stride_t, T', H/s_h, W/s_w)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class MaskCompressor(nn.Module):
    """Brings a pixel mask onto the VAE's latent grid.

    Space: each frame is resized bilinearly (align_corners=False, no antialias) to (H/s_h, W/s_w).
    Time: the s_t pixel frames that one latent frame encodes become s_t channels. For T = 1 + k*s_t, the first
    frame is repeated s_t times first (the causal VAE encodes frame 0 alone), giving 1 + k latent frames; for
    T = k*s_t there are k.

    Args:
        vae_stride_t, vae_stride_h, vae_stride_w: the VAE's compression (4, 8, 8 for WF-VAE D8 4x8x8).
    """

    def __init__(self, vae_stride_t: int = 4, vae_stride_h: int = 8, vae_stride_w: int = 8) -> None:
        super().__init__()
        self.vae_stride_t = vae_stride_t
        self.vae_stride_h = vae_stride_h
        self.vae_stride_w = vae_stride_w

    def forward(self, mask: torch.Tensor) -> torch.Tensor:
        batch, channels, num_frames, height, width = mask.shape
        if channels != 1:
            raise ValueError(f"expected a one-channel mask (B, 1, T, H, W), got {tuple(mask.shape)}")
        st = self.vae_stride_t
        odd = num_frames % 2 == 1
        if (odd and (num_frames - 1) % st) or (not odd and num_frames % st):
            raise ValueError(f"mask has {num_frames} frames: need 1 + {st}k or {st}k")
        h, w = height // self.vae_stride_h, width // self.vae_stride_w

        # 1. Space: (B, 1, T, H, W) -> (B*T, 1, H, W) -> bilinear -> (B, T, h, w). Interpolate in fp32 so that
        #    half-precision masks compress to the same values.
        frames = mask.transpose(1, 2).reshape(batch * num_frames, 1, height, width).float()
        frames = F.interpolate(frames, size=(h, w), mode="bilinear", align_corners=False)
        frames = frames.view(batch, num_frames, h, w).to(mask.dtype)

        # 2. Time: repeat frame 0 so that every latent frame covers s_t pixel frames: (B, T', s_t, h, w).
        if odd:
            frames = torch.cat([frames[:, :1].expand(-1, st, -1, -1), frames[:, 1:]], dim=1)
        frames = frames.view(batch, -1, st, h, w)

        # 3. The s_t pixel frames of a latent frame become channels: (B, s_t, T', h, w).
        return frames.transpose(1, 2).contiguous()
