"""WF-VAE of Open-Sora Plan v1.3 (`WFVAEModel_D8_4x8x8`): wavelet-driven causal video autoencoder.

Compression 4x8x8 (t, h, w) to 8 latent channels: (B, 3, 1 + 4k, H, W) <-> (B, 8, 1 + k, H/8, W/8).
A 3-D Haar transform does the first 2x2x2 step; two "energy-flow" paths carry the low-pass wavelet sub-bands
(a 2-D and a 3-D Haar pyramid) past the convolutional trunk. Module attribute names reproduce the reference
state-dict keys, so released checkpoints load without remapping.

Dimension order is (B, C, T, H, W) everywhere; "per frame" layers fold T into the batch.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.autoencoders.vae import DecoderOutput, DiagonalGaussianDistribution
from diffusers.models.modeling_outputs import AutoencoderKLOutput
from diffusers.models.modeling_utils import ModelMixin
from torch import nn

# ---------------------------------------------------------------------------------------------------------
# Temporal chunking with a causal cache ("tiling")
# ---------------------------------------------------------------------------------------------------------
# Every temporal operator of the WF-VAE is causal, so a video can be processed as consecutive chunks of
# frames if each stateful module carries what it still needs from the previous chunk. With caching on:
#
# * CausalConv3d (and the strided 3-D Haar transform) keeps the tail of its time-padded input that no
#   complete window has consumed yet, and prepends it to the next chunk instead of replicating the first
#   frame. For kernel k and stride s that is k - 1 frames for s = 1; for s > 1 it also absorbs chunks whose
#   length does not line up with the stride (a chunk may then yield no output frame; the encoder returns
#   early for it). Only the very first chunk is replicate-padded.
# * Spatial2xTime2x3DUpsample keeps its last input frame. With trilinear time interpolation the two frames
#   between input frames i and i + 1 depend on frame i + 1, so it emits them when that frame arrives (a
#   one-frame delay) and emits the clamped last frame only for the final chunk. The reference instead
#   decodes one overlapping latent frame per chunk and drops 4 output frames; the delay gives the same
#   output without recomputation.
# * InverseHaarWaveletTransform3D drops the replicated first output frame only in the first chunk.
# * The Decoder queues the l2 energy-flow frames, which do not pass through the delayed upsampler, until
#   the main path catches up.
#
# Everything else (2-D convs, LayerNorm over channels, per-frame attention) is frame-local, so chunked ==
# full up to float rounding. GroupNorm also normalises over time, so norm_type="groupnorm" is not exact
# under chunking (the reason v1.3 moved to LayerNorm). Caches live only inside one encode/decode call.


class _StreamingModule(nn.Module):
    """A module that carries state from one temporal chunk to the next while `caching` is on."""

    def __init__(self):
        super().__init__()
        self.caching = False
        self.reset_cache()

    def reset_cache(self) -> None:
        raise NotImplementedError


def _causal_time_pad(module: _StreamingModule, x: torch.Tensor, kernel: int, stride: int) -> torch.Tensor:
    """Prepend `kernel - 1` copies of the first frame, or the cached frames of the previous chunk.

    With caching on, store the frames from the start of the first window not completed by this chunk.
    The cache is cloned: a slice would keep the whole padded chunk alive until the next chunk.
    """
    if module.cache is None:
        if kernel > 1:
            x = torch.cat([x[:, :, :1].expand(-1, -1, kernel - 1, -1, -1), x], dim=2)
    elif module.cache.shape[2] > 0:
        x = torch.cat([module.cache, x], dim=2)
    if module.caching:
        windows = (x.shape[2] - kernel) // stride + 1 if x.shape[2] >= kernel else 0
        module.cache = x[:, :, windows * stride :].clone()
    return x


def _per_frame(fn, x: torch.Tensor) -> torch.Tensor:
    """Apply a 2-D (N, C, H, W) function to each frame of a (B, C, T, H, W) video; 4-D passes through."""
    if x.ndim == 4:
        return fn(x)
    batch, frames = x.shape[0], x.shape[2]
    y = fn(x.transpose(1, 2).flatten(0, 1))  # (B*T, C, H, W)
    return y.unflatten(0, (batch, frames)).transpose(1, 2)  # (B, C', T, H', W'), a view


# ---------------------------------------------------------------------------------------------------------
# Building blocks
# ---------------------------------------------------------------------------------------------------------


class FrameConv2d(nn.Conv2d):
    """nn.Conv2d that also takes a video (B, C, T, H, W) and convolves each frame (keys `<name>.weight`)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _per_frame(super().forward, x)


class CausalConv3d(_StreamingModule):
    """Conv3d that is causal in time: the first frame is replicated `k_t - 1` times in front.

    Spatial padding is the usual zero padding; the temporal entry of `padding` is ignored (always causal).
    Keys: `<name>.conv.weight`, `<name>.conv.bias`.
    """

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, bias=True):
        super().__init__()
        kernel_size, stride, padding = (_triple(v) for v in (kernel_size, stride, padding))
        self.time_kernel, self.time_stride = kernel_size[0], stride[0]
        self.conv = nn.Conv3d(in_channels, out_channels, kernel_size, stride=stride, padding=(0, *padding[1:]),
                              bias=bias)

    def reset_cache(self) -> None:
        self.cache = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = _causal_time_pad(self, x, self.time_kernel, self.time_stride)
        if x.shape[2] < self.time_kernel:  # chunked: not a full window yet, the frames wait in the cache
            return x.new_empty(x.shape[0], self.conv.out_channels, 0, *self._spatial_out(x.shape[3:]))
        return self.conv(x)

    def _spatial_out(self, size):
        conv = self.conv
        return tuple(
            (n + 2 * conv.padding[i] - conv.dilation[i] * (conv.kernel_size[i] - 1) - 1) // conv.stride[i] + 1
            for i, n in zip((1, 2), size)
        )


def _triple(value) -> tuple[int, int, int]:
    return tuple(value) if isinstance(value, (tuple, list)) else (value, value, value)


class ChannelLayerNorm(nn.Module):
    """LayerNorm over the channel axis only (eps 1e-6); the wrapper adds the `.norm` key segment."""

    def __init__(self, num_channels: int):
        super().__init__()
        self.norm = nn.LayerNorm(num_channels, eps=1e-6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x.movedim(1, -1)).movedim(-1, 1)


def _normalize(num_channels: int, norm_type: str) -> nn.Module:
    if norm_type == "groupnorm":
        return nn.GroupNorm(32, num_channels, eps=1e-6, affine=True)
    return ChannelLayerNorm(num_channels)


class ResnetBlock2D(nn.Module):
    """norm -> SiLU -> conv3x3 -> norm -> SiLU -> dropout -> conv3x3, plus a 1x1 shortcut; per frame."""

    conv_class: type[nn.Module] = nn.Conv2d

    def __init__(self, in_channels: int, out_channels: int, dropout: float, norm_type: str):
        super().__init__()
        self.norm1 = _normalize(in_channels, norm_type)
        self.conv1 = self.conv_class(in_channels, out_channels, 3, padding=1)
        self.norm2 = _normalize(out_channels, norm_type)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = self.conv_class(out_channels, out_channels, 3, padding=1)
        if in_channels != out_channels:
            self.nin_shortcut = self.conv_class(in_channels, out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _per_frame(self._residual, x)

    def _residual(self, x: torch.Tensor) -> torch.Tensor:
        # In-place SiLU / add: the norm and conv backward passes never read these outputs, so this is
        # autograd-safe and saves one activation-sized buffer per step.
        h = self.conv1(F.silu(self.norm1(x), inplace=True))
        h = self.conv2(self.dropout(F.silu(self.norm2(h), inplace=True)))
        return h.add_(self.nin_shortcut(x) if hasattr(self, "nin_shortcut") else x)


class ResnetBlock3D(ResnetBlock2D):
    """ResnetBlock2D with causal 3x3x3 convs and a causal 1x1x1 shortcut (`nin_shortcut`), on the whole video."""

    conv_class = CausalConv3d

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._residual(x)


class AttnBlock3DFix(nn.Module):
    """Single-head self-attention over the H*W tokens of each frame independently, plus a residual.

    q, k, v and proj_out are causal 1x1x1 convs in the checkpoint; a 1x1x1 conv is a Linear over channels,
    so they are applied as F.linear on the tokens to avoid layout round trips.
    """

    def __init__(self, in_channels: int, norm_type: str):
        super().__init__()
        self.norm = _normalize(in_channels, norm_type)
        self.q = CausalConv3d(in_channels, in_channels, 1)
        self.k = CausalConv3d(in_channels, in_channels, 1)
        self.v = CausalConv3d(in_channels, in_channels, 1)
        self.proj_out = CausalConv3d(in_channels, in_channels, 1)

    @staticmethod
    def _linear(conv: CausalConv3d, tokens: torch.Tensor) -> torch.Tensor:
        return F.linear(tokens, conv.conv.weight.flatten(1), conv.conv.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, t, h, w = x.shape
        tokens = self.norm(x).permute(0, 2, 3, 4, 1).reshape(b * t, 1, h * w, c)  # (B*T, 1, HW, C)
        q, k, v = (self._linear(conv, tokens) for conv in (self.q, self.k, self.v))
        out = F.scaled_dot_product_attention(q, k, v)  # scale 1/sqrt(C), one head of width C
        out = self._linear(self.proj_out, out)  # (B*T, 1, HW, C)
        return x + out.view(b, t, h, w, c).permute(0, 4, 1, 2, 3)  # (B, C, T, H, W)


class Downsample(nn.Module):
    """Per frame: zero-pad right/bottom by one, 3x3 conv stride 2 (H, W halve)."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _per_frame(lambda frames: self.conv(F.pad(frames, (0, 1, 0, 1))), x)


class Upsample(nn.Module):
    """Per frame: nearest x2, 3x3 conv."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _per_frame(lambda frames: self.conv(F.interpolate(frames, scale_factor=2.0)), x)  # nearest


class Spatial2xTime2x3DDownsample(nn.Module):
    """Zero-pad right/bottom by one, causal 3x3x3 conv stride 2: T -> (T-1)/2 + 1, H -> H/2."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.conv = CausalConv3d(in_channels, out_channels, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.pad(x, (0, 1, 0, 1)))


class Spatial2xTime2x3DUpsample(_StreamingModule):
    """Frame 0 kept, frames 1.. interpolated x2 in time; all x2 in space (trilinear); causal 3x3x3 conv.

    T -> 2T - 1, H -> 2H. `final_chunk` only matters while caching (see the chunking notes at the top).
    """

    def __init__(self, in_channels: int, out_channels: int, t_interpolation: str):
        super().__init__()
        self.t_interpolation = t_interpolation
        self.final_chunk = True
        self.conv = CausalConv3d(in_channels, out_channels, 3, padding=1)

    def reset_cache(self) -> None:
        self.seen_first = False
        self.prev = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # 1. frame 0 is not interpolated in time
        pieces = []
        if not self.seen_first:
            pieces.append(x[:, :, :1])
            x = x[:, :, 1:]
            self.seen_first = self.caching
        # 2. frames 1.. x2 in time
        if x.shape[2] > 0:
            if self.t_interpolation == "nearest":
                pieces.append(F.interpolate(x, scale_factor=(2, 1, 1), mode="nearest"))
            else:
                # linear, align_corners=False: output 2i+1, 2i+2 blend inputs i, i+1; the first and last
                # outputs are clamped copies. Prepend the cached previous frame to finish its pair.
                seq = x if self.prev is None else torch.cat([self.prev, x], dim=2)  # (B, C, L, H, W)
                up = F.interpolate(seq, scale_factor=(2, 1, 1), mode="trilinear")  # (B, C, 2L, H, W)
                start = 0 if self.prev is None else 1
                end = up.shape[2] if (self.final_chunk or not self.caching) else up.shape[2] - 1
                pieces.append(up[:, :, start:end])
                if self.caching:
                    self.prev = seq[:, :, -1:].clone()
        x = pieces[0] if len(pieces) == 1 else torch.cat(pieces, dim=2)  # (B, C, T_out, H, W)
        # 3. x2 in space (a time scale of 1 copies frames exactly), then the conv
        x = F.interpolate(x, scale_factor=(1, 2, 2), mode="trilinear")
        return self.conv(x)


# ---------------------------------------------------------------------------------------------------------
# Haar wavelet transforms (fixed filters)
# ---------------------------------------------------------------------------------------------------------

_HAAR3D_NAMES = ("h", "g", "hh", "gh", "h_v", "g_v", "hh_v", "gh_v")
_HAAR2D_NAMES = ("aa", "ad", "da", "dd")


def _haar3d_filters() -> torch.Tensor:
    """(8, 1, 2, 2, 2) filters, products of low [1, 1] / high [1, -1] taps in (t, h, w) order:
    LLL, LLH, LHL, LHH, HLL, HLH, HHL, HHH (w fastest) = keys h, g, hh, gh, h_v, g_v, hh_v, gh_v."""
    taps = torch.tensor([[1.0, 1.0], [1.0, -1.0]])
    filters = torch.einsum("at,bh,cw->abcthw", taps, taps, taps).reshape(8, 1, 2, 2, 2)
    return filters * HaarWaveletTransform3D.TAP


def _haar2d_filters() -> torch.Tensor:
    """(4, 1, 2, 2) filters = keys aa (LL), ad (high in h: [[1, 1], [-1, -1]] / 2), da (high in w), dd.
    Unlike the 3-D order, the h tap varies fastest."""
    taps = torch.tensor([[1.0, 1.0], [1.0, -1.0]])
    return torch.einsum("bh,aw->abhw", taps, taps).reshape(4, 1, 2, 2) / 2


class HaarWaveletTransform3D(_StreamingModule):
    """(B, C, T, H, W) -> (B, 8C, (T+1)/2, H/2, W/2), sub-band blocks in `_haar3d_filters` order.

    Causal in time: the first frame is duplicated in front, then kernel 2, stride 2 on every axis. The eight
    filters are frozen parameters `<name>_conv.conv.weight` as in the reference checkpoint; they are run as
    one stacked conv.
    """

    # The reference uses 0.3536, not 1/(2*sqrt(2)) = 0.353553...; analysis x synthesis gain is 1.00026.
    # Kept for parity: the released weights were trained with it and the goldens depend on it.
    TAP = 0.3536

    def __init__(self):
        super().__init__()
        for name, filt in zip(_HAAR3D_NAMES, _haar3d_filters()):
            holder = nn.Module()
            holder.conv = nn.Conv3d(1, 1, 2, stride=2, bias=False)
            holder.conv.weight = nn.Parameter(filt[None], requires_grad=False)
            setattr(self, f"{name}_conv", holder)

    def reset_cache(self) -> None:
        self.cache = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, _, h, w = x.shape
        x = _causal_time_pad(self, x, 2, 2)  # (B, C, T+1, H, W) unchunked
        if x.shape[2] < 2:
            return x.new_empty(b, 8 * c, 0, h // 2, w // 2)
        filters = torch.cat([getattr(self, f"{name}_conv").conv.weight for name in _HAAR3D_NAMES])
        y = F.conv3d(x.reshape(b * c, 1, *x.shape[2:]), filters, stride=2)  # (B*C, 8, T', H/2, W/2)
        return y.unflatten(0, (b, c)).transpose(1, 2).flatten(1, 2)  # (B, 8C, T', H/2, W/2), band-major


class InverseHaarWaveletTransform3D(_StreamingModule):
    """(B, 8C, T, H, W) -> (B, C, 2T-1, 2H, 2W): transposed conv with the same filters (buffers), summed
    over the eight bands, minus the first frame (the duplicate the forward transform put in front)."""

    def __init__(self):
        super().__init__()
        for name, filt in zip(_HAAR3D_NAMES, _haar3d_filters()):
            self.register_buffer(name, filt[None])

    def reset_cache(self) -> None:
        self.started = False

    def forward(self, coeffs: torch.Tensor) -> torch.Tensor:
        b, c8, t, h, w = coeffs.shape
        c = c8 // 8
        x = coeffs.unflatten(1, (8, c)).transpose(1, 2).reshape(b * c, 8, t, h, w)  # (B*C, 8, T, H, W)
        filters = torch.cat([getattr(self, name) for name in _HAAR3D_NAMES])  # (8, 1, 2, 2, 2)
        y = F.conv_transpose3d(x, filters, stride=2).view(b, c, 2 * t, 2 * h, 2 * w)
        if not self.started:
            y = y[:, :, 1:]
            self.started = self.caching
        return y


class _Haar2D(nn.Module):
    """The 2-D Haar filters as buffers aa, ad, da, dd (the reference's keys)."""

    def __init__(self):
        super().__init__()
        for name, filt in zip(_HAAR2D_NAMES, _haar2d_filters()):
            self.register_buffer(name, filt[None])

    def _filters(self) -> torch.Tensor:
        # a (1, 2, 2) kernel with time stride 1 is the per-frame 2-D transform, with no frame folding
        return torch.cat([getattr(self, name) for name in _HAAR2D_NAMES]).unsqueeze(2)  # (4, 1, 1, 2, 2)


class HaarWaveletTransform2D(_Haar2D):
    """Per frame: (B, C, T, H, W) -> (B, 4C, T, H/2, W/2), band blocks in buffer order aa, ad, da, dd."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, t, h, w = x.shape
        y = F.conv3d(x.reshape(b * c, 1, t, h, w), self._filters(), stride=(1, 2, 2))  # (B*C, 4, T, H/2, W/2)
        return y.unflatten(0, (b, c)).transpose(1, 2).flatten(1, 2)


class InverseHaarWaveletTransform2D(_Haar2D):
    """Per frame: (B, 4C, T, H, W) -> (B, C, T, 2H, 2W)."""

    def forward(self, coeffs: torch.Tensor) -> torch.Tensor:
        b, c4, t, h, w = coeffs.shape
        c = c4 // 4
        x = coeffs.unflatten(1, (4, c)).transpose(1, 2).reshape(b * c, 4, t, h, w)  # (B*C, 4, T, H, W)
        return F.conv_transpose3d(x, self._filters(), stride=(1, 2, 2)).view(b, c, t, 2 * h, 2 * w)


# Allowed values of the reference config fields that name a mode or a class. Only the released 4x8x8 layout is
# implemented (the channel counts and temporal bookkeeping follow from it), so each class field allows exactly
# its released name.
_ALLOWED = {
    "norm_type": ("groupnorm", "layernorm"),
    "t_interpolation": ("nearest", "trilinear"),
    "attention_type": ("AttnBlock3DFix",),
    "l1_dowmsample_block": ("Downsample",),
    "l1_downsample_wavelet": ("HaarWaveletTransform2D",),
    "l2_dowmsample_block": ("Spatial2xTime2x3DDownsample",),
    "l2_downsample_wavelet": ("HaarWaveletTransform3D",),
    "l1_upsample_block": ("Upsample",),
    "l1_upsample_wavelet": ("InverseHaarWaveletTransform2D",),
    "l2_upsample_block": ("Spatial2xTime2x3DUpsample",),
    "l2_upsample_wavelet": ("InverseHaarWaveletTransform3D",),
}


# ---------------------------------------------------------------------------------------------------------
# Encoder / Decoder
# ---------------------------------------------------------------------------------------------------------


class Encoder(nn.Module):
    """(B, 3, T, H, W) in [-1, 1] -> posterior parameters (B, 2*latent_dim, (T-1)/4 + 1, H/8, W/8)."""

    def __init__(self, latent_dim, base_channels, num_resblocks, energy_flow_hidden_size, dropout,
                 use_attention, norm_type):
        super().__init__()
        c, e = base_channels, energy_flow_hidden_size
        self.latent_dim = latent_dim
        self.down1 = nn.Sequential(
            FrameConv2d(24, c, 3, padding=1),
            *[ResnetBlock2D(c, c, dropout, norm_type) for _ in range(num_resblocks)],
            Downsample(c, c),
        )
        self.down2 = nn.Sequential(
            FrameConv2d(c + e, 2 * c, 3, padding=1),
            *[ResnetBlock3D(2 * c, 2 * c, dropout, norm_type) for _ in range(num_resblocks)],
            Spatial2xTime2x3DDownsample(2 * c, 2 * c),
        )
        self.connect_l1 = FrameConv2d(12, e, 3, padding=1)
        self.connect_l2 = FrameConv2d(24, e, 3, padding=1)
        mid = [ResnetBlock3D(2 * c + e, 4 * c, dropout, norm_type), ResnetBlock3D(4 * c, 4 * c, dropout, norm_type)]
        if use_attention:
            mid.insert(1, AttnBlock3DFix(4 * c, norm_type))
        self.mid = nn.Sequential(*mid)
        self.norm_out = _normalize(4 * c, norm_type)
        self.conv_out = CausalConv3d(4 * c, 2 * latent_dim, 3, padding=1)
        self.wavelet_transform_in = HaarWaveletTransform3D()
        self.wavelet_transform_l1 = HaarWaveletTransform2D()
        self.wavelet_transform_l2 = HaarWaveletTransform3D()

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Returns (h, l1_coeffs, l2_coeffs): h (B, 2L, T', H/8, W/8) = [mean | logvar (unclamped)],
        l1_coeffs (B, 12, (T+1)/2, H/4, W/4), l2_coeffs (B, 24, T', H/8, W/8). While chunking, a chunk
        that completes no latent frame gives tensors with 0 frames."""
        b, _, _, height, width = x.shape
        # 1. wavelet pyramid: 3-D Haar of the input, 2-D Haar of its LLL band, 3-D Haar of that LL band
        coeffs = self.wavelet_transform_in(x)  # (B, 24, T1 = (T+1)/2, H/2, W/2)
        if coeffs.shape[2] == 0:  # chunked: this chunk completes no frame yet
            return (
                x.new_empty(b, 2 * self.latent_dim, 0, height // 8, width // 8),
                x.new_empty(b, 12, 0, height // 4, width // 4),
                x.new_empty(b, 24, 0, height // 8, width // 8),
            )
        l1_coeffs = self.wavelet_transform_l1(coeffs[:, :3])  # (B, 12, T1, H/4, W/4)
        l2_coeffs = self.wavelet_transform_l2(l1_coeffs[:, :3])  # (B, 24, T', H/8, W/8)

        # 2. level 1: per-frame 2-D trunk on all 24 sub-bands (T folded once for the whole stage)
        h = _per_frame(self.down1, coeffs)  # (B, C, T1, H/4, W/4)
        h = torch.cat([h, self.connect_l1(l1_coeffs)], dim=1)  # (B, C + E, T1, H/4, W/4)

        # 3. level 2: 3-D trunk with 2x time/space downsampling
        h = self.down2(h)  # (B, 2C, T', H/8, W/8)
        if h.shape[2] == 0:
            return h.new_empty(b, 2 * self.latent_dim, *h.shape[2:]), l1_coeffs, l2_coeffs
        h = torch.cat([h, self.connect_l2(l2_coeffs)], dim=1)  # (B, 2C + E, T', H/8, W/8)

        # 4. mid (res, attention, res) and output head
        h = self.mid(h)  # (B, 4C, T', H/8, W/8)
        h = self.conv_out(F.silu(self.norm_out(h), inplace=True))  # (B, 2L, T', H/8, W/8)
        return h, l1_coeffs, l2_coeffs


class Decoder(_StreamingModule):
    """(B, latent_dim, t, h, w) -> (B, 3, 4t - 3, 8h, 8w), not clamped."""

    def __init__(self, latent_dim, base_channels, num_resblocks, energy_flow_hidden_size, dropout,
                 use_attention, norm_type, t_interpolation, connect_res_layer_num):
        super().__init__()
        c, e = base_channels, energy_flow_hidden_size
        self.energy_flow_hidden_size = e
        self.conv_in = CausalConv3d(latent_dim, 4 * c, 3, padding=1)
        mid = [ResnetBlock3D(4 * c, 4 * c, dropout, norm_type), ResnetBlock3D(4 * c, 4 * c + e, dropout, norm_type)]
        if use_attention:
            mid.insert(1, AttnBlock3DFix(4 * c, norm_type))
        self.mid = nn.Sequential(*mid)
        self.up2 = nn.Sequential(
            *[ResnetBlock3D(4 * c, 4 * c, dropout, norm_type) for _ in range(num_resblocks)],
            Spatial2xTime2x3DUpsample(4 * c, 4 * c, t_interpolation),
            ResnetBlock3D(4 * c, 4 * c + e, dropout, norm_type),
        )
        self.up1 = nn.Sequential(
            *[ResnetBlock3D(4 * c if i == 0 else 2 * c, 2 * c, dropout, norm_type) for i in range(num_resblocks)],
            Upsample(2 * c, 2 * c),
            ResnetBlock3D(2 * c, 2 * c, dropout, norm_type),
        )
        self.layer = nn.Sequential(ResnetBlock3D(2 * c, c, dropout, norm_type), ResnetBlock3D(c, c, dropout, norm_type))
        self.connect_l1 = nn.Sequential(
            *[ResnetBlock3D(e, e, dropout, norm_type) for _ in range(connect_res_layer_num)],
            FrameConv2d(e, 12, 3, padding=1),
        )
        self.connect_l2 = nn.Sequential(
            *[ResnetBlock3D(e, e, dropout, norm_type) for _ in range(connect_res_layer_num)],
            FrameConv2d(e, 24, 3, padding=1),
        )
        self.norm_out = _normalize(c, norm_type)
        self.conv_out = FrameConv2d(c, 24, 3, padding=1)
        self.inverse_wavelet_transform_out = InverseHaarWaveletTransform3D()
        self.inverse_wavelet_transform_l1 = InverseHaarWaveletTransform2D()
        self.inverse_wavelet_transform_l2 = InverseHaarWaveletTransform3D()

    def reset_cache(self) -> None:
        self.l2_pending = None

    def forward(self, z: torch.Tensor, final_chunk: bool = True) -> torch.Tensor:
        e = self.energy_flow_hidden_size
        # 1. latent -> mid features; the last E channels feed the l2 energy flow
        h = self.mid(self.conv_in(z))  # (B, 4C + E, t, h, w)

        # 2. l2 energy flow: 24 3-D wavelet coefficients -> a 3-channel (2t-1, 2h, 2w) video
        l2 = self.inverse_wavelet_transform_l2(self.connect_l2(h[:, -e:]))  # (B, 3, 2t-1, 2h, 2w)

        # 3. up2 (time and space x2); its last E channels are the 2-D wavelet coefficients of level 1
        for module in self.up2.modules():
            if isinstance(module, Spatial2xTime2x3DUpsample):
                module.final_chunk = final_chunk
        h = self.up2(h[:, :-e])  # (B, 4C + E, 2t-1, 2h, 2w)
        l1_coeffs = self.connect_l1(h[:, -e:])  # (B, 12, 2t-1, 2h, 2w)
        l1_coeffs[:, :3] += self._align_l2(l2, l1_coeffs.shape[2])
        l1 = self.inverse_wavelet_transform_l1(l1_coeffs)  # (B, 3, 2t-1, 4h, 4w)

        # 4. up1 (space x2), output head, add the energy flow into the LLL band, inverse 3-D Haar
        h = self.layer(self.up1(h[:, :-e]))  # (B, C, 2t-1, 4h, 4w)
        h = self.conv_out(F.silu(self.norm_out(h), inplace=True))  # (B, 24, 2t-1, 4h, 4w)
        h[:, :3] += l1
        return self.inverse_wavelet_transform_out(h)  # (B, 3, 4t-3, 8h, 8w)

    def _align_l2(self, l2: torch.Tensor, frames: int) -> torch.Tensor:
        """While chunking, the upsampler on the main path lags l2 by one frame: queue the surplus."""
        if self.l2_pending is not None:
            l2 = torch.cat([self.l2_pending, l2], dim=2)
        if self.caching:
            self.l2_pending = l2[:, :, frames:].clone()
        return l2[:, :, :frames]


# ---------------------------------------------------------------------------------------------------------
# The fixed filters a checkpoint may omit
# ---------------------------------------------------------------------------------------------------------

# The fixed Haar filters (the same names for every config): frozen parameters in the encoder's 3-D
# transforms, buffers elsewhere. The model builds them itself, so a checkpoint may omit them (or carry
# them, with the same values); a loader can treat these keys as optional.
HAAR_KEYS: frozenset[str] = frozenset(
    [f"encoder.wavelet_transform_{lvl}.{n}_conv.conv.weight" for lvl in ("in", "l2") for n in _HAAR3D_NAMES]
    + [f"encoder.wavelet_transform_l1.{name}" for name in _HAAR2D_NAMES]
    + [f"decoder.inverse_wavelet_transform_{lvl}.{name}" for lvl in ("out", "l2") for name in _HAAR3D_NAMES]
    + [f"decoder.inverse_wavelet_transform_l1.{name}" for name in _HAAR2D_NAMES]
)


# ---------------------------------------------------------------------------------------------------------
# Model
# ---------------------------------------------------------------------------------------------------------


class WFVAEModel(ModelMixin, ConfigMixin):
    """WF-VAE with the wrapper's per-channel latent scale/shift. Constructor arguments are the reference
    config fields (misspellings included); defaults are the reference code defaults. The released
    checkpoint uses norm_type="layernorm", t_interpolation="trilinear".
    """

    _optional_checkpoint_keys = HAAR_KEYS  # `load_pretrained` keeps the model's own fixed filters when absent

    @register_to_config
    def __init__(
        self,
        latent_dim: int = 8,
        base_channels: int = 128,
        encoder_num_resblocks: int = 2,
        encoder_energy_flow_hidden_size: int = 64,
        decoder_num_resblocks: int = 2,
        decoder_energy_flow_hidden_size: int = 128,
        attention_type: str = "AttnBlock3DFix",
        use_attention: bool = True,
        dropout: float = 0.0,
        norm_type: str = "groupnorm",
        t_interpolation: str = "nearest",
        connect_res_layer_num: int = 1,
        scale: tuple[float, ...] = (0.18215,) * 8,
        shift: tuple[float, ...] = (0.0,) * 8,
        l1_dowmsample_block: str = "Downsample",
        l1_downsample_wavelet: str = "HaarWaveletTransform2D",
        l2_dowmsample_block: str = "Spatial2xTime2x3DDownsample",
        l2_downsample_wavelet: str = "HaarWaveletTransform3D",
        l1_upsample_block: str = "Upsample",
        l1_upsample_wavelet: str = "InverseHaarWaveletTransform2D",
        l2_upsample_block: str = "Spatial2xTime2x3DUpsample",
        l2_upsample_wavelet: str = "InverseHaarWaveletTransform3D",
    ):
        super().__init__()
        for field, allowed in _ALLOWED.items():  # register_to_config fills self.config before this body runs
            if (value := self.config[field]) not in allowed:
                raise ValueError(f"WFVAEModel: {field}={value!r}; expected one of {list(allowed)}")
        for name, values in (("scale", scale), ("shift", shift)):
            if len(values) != latent_dim:
                raise ValueError(f"WFVAEModel: {name} has {len(values)} entries; latent_dim is {latent_dim}")
        self.encoder = Encoder(latent_dim, base_channels, encoder_num_resblocks, encoder_energy_flow_hidden_size,
                               dropout, use_attention, norm_type)
        self.decoder = Decoder(latent_dim, base_channels, decoder_num_resblocks, decoder_energy_flow_hidden_size,
                               dropout, use_attention, norm_type, t_interpolation, connect_res_layer_num)
        # The wrapper's constants: config values, not checkpoint entries (hence non-persistent).
        for name, values in (("latent_scale", scale), ("latent_shift", shift)):
            self.register_buffer(name, torch.tensor(values, dtype=torch.float32).view(1, -1, 1, 1, 1), persistent=False)
        self.use_tiling = False
        self.encoder_chunk_frames = 8
        self.decoder_chunk_latents = 2

    @property
    def vae_scale_factor(self) -> tuple[int, int, int]:
        """Compression (t, h, w): T = 4 (T' - 1) + 1, H = 8 h, W = 8 w."""
        return (4, 8, 8)

    @property
    def latent_channels(self) -> int:
        return self.config.latent_dim

    # ----- tiling ------------------------------------------------------------------------------------------

    def enable_tiling(self, encoder_chunk_frames: int = 8, decoder_chunk_latents: int = 2) -> None:
        """Encode/decode in temporal chunks with causal caches: pixel frames [0, 1) then
        `encoder_chunk_frames` at a time; latent frames [0, 1) then `decoder_chunk_latents` at a time.
        Same result as the full pass (LayerNorm models), far lower peak memory."""
        for name, value in (("encoder_chunk_frames", encoder_chunk_frames),
                            ("decoder_chunk_latents", decoder_chunk_latents)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"enable_tiling: {name} must be a positive integer, got {value!r}")
        self.use_tiling = True
        self.encoder_chunk_frames = encoder_chunk_frames
        self.decoder_chunk_latents = decoder_chunk_latents

    def disable_tiling(self) -> None:
        self.use_tiling = False

    @staticmethod
    def _chunks(frames: int, size: int) -> list[tuple[int, int]]:
        return [(0, 1)] + [(start, min(start + size, frames)) for start in range(1, frames, size)]

    @contextmanager
    def _streaming(self, module: nn.Module, caching: bool):
        """Fresh caches for one call, dropped afterwards even on error (no state leaks between calls)."""
        streams = [m for m in module.modules() if isinstance(m, _StreamingModule)]
        for m in streams:
            m.caching = caching
            m.reset_cache()
        try:
            yield
        finally:
            for m in streams:
                m.caching = False
                m.reset_cache()

    # ----- public API --------------------------------------------------------------------------------------

    def encode(self, x: torch.Tensor, return_dict: bool = True):
        """Encode a video to its posterior.

        Args:
            x: (B, 3, T, H, W) in [-1, 1], T = 1 + 4k, H and W multiples of 8.
            return_dict: return `AutoencoderKLOutput` rather than a 1-tuple.

        Returns:
            `AutoencoderKLOutput(latent_dist=DiagonalGaussianDistribution(h))` with h (B, 2*latent_dim, T',
            H/8, W/8) = [mean | logvar], T' = (T - 1)/4 + 1 (the distribution clamps logvar to [-30, 20]).
        """
        if x.ndim != 5 or x.shape[1] != 3 or (x.shape[2] - 1) % 4 or x.shape[3] % 8 or x.shape[4] % 8:
            raise ValueError(f"WFVAEModel.encode expects (B, 3, T, H, W) with T = 1 + 4k and H, W multiples of 8; "
                             f"got {tuple(x.shape)}")
        with self._streaming(self.encoder, self.use_tiling):
            if self.use_tiling:
                chunks = self._chunks(x.shape[2], self.encoder_chunk_frames)
                h = torch.cat([self.encoder(x[:, :, start:end])[0] for start, end in chunks], dim=2)
            else:
                h = self.encoder(x)[0]
        posterior = DiagonalGaussianDistribution(h)
        return AutoencoderKLOutput(latent_dist=posterior) if return_dict else (posterior,)

    def decode(self, z: torch.Tensor, return_dict: bool = True):
        """Decode raw (unscaled) latents.

        Args:
            z: (B, latent_dim, T', h, w).
            return_dict: return `DecoderOutput` rather than a 1-tuple.

        Returns:
            `DecoderOutput(sample=(B, 3, 4T' - 3, 8h, 8w))`, not clamped.
        """
        if z.ndim != 5 or z.shape[1] != self.config.latent_dim:
            raise ValueError(f"WFVAEModel.decode expects (B, {self.config.latent_dim}, T', h, w); got {tuple(z.shape)}")
        frames = z.shape[2]
        with self._streaming(self.decoder, self.use_tiling):
            if self.use_tiling:
                chunks = self._chunks(frames, self.decoder_chunk_latents)
                parts = [self.decoder(z[:, :, start:end], final_chunk=end == frames) for start, end in chunks]
                sample = torch.cat(parts, dim=2)
            else:
                sample = self.decoder(z)
        return DecoderOutput(sample=sample) if return_dict else (sample,)

    def encode_latents(self, x: torch.Tensor, sample_posterior: bool = False,
                       generator: torch.Generator | None = None) -> torch.Tensor:
        """Video -> diffusion latents: (posterior mean, or a sample, - shift) * scale.

        Args:
            x: (B, 3, T, H, W) in [-1, 1], as for `encode`.
            sample_posterior: draw from the posterior (the reference does) instead of taking its mean.
            generator: randomness for the draw.

        Returns:
            (B, latent_dim, T', H/8, W/8).
        """
        posterior = self.encode(x).latent_dist
        z = posterior.sample(generator) if sample_posterior else posterior.mode()
        return (z - self.latent_shift) * self.latent_scale

    def decode_latents(self, latents: torch.Tensor) -> torch.Tensor:
        """Diffusion latents (B, latent_dim, T', h, w) -> video (B, 3, 4T' - 3, 8h, 8w).

        = decode(latents / scale + shift), not clamped."""
        return self.decode(latents / self.latent_scale + self.latent_shift).sample

    def forward(self, sample: torch.Tensor, sample_posterior: bool = False, return_dict: bool = True,
                generator: torch.Generator | None = None):
        """Reconstruction: decode(posterior mean or sample). sample (B, 3, T, H, W) -> same shape."""
        posterior = self.encode(sample).latent_dist
        z = posterior.sample(generator) if sample_posterior else posterior.mode()
        return self.decode(z, return_dict=return_dict)
