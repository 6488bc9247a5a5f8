"""The Open-Sora Plan v1.3 diffusion transformer: `OpenSoraT2V_v1_3` (text-to-video) and
`OpenSoraInpaint_v1_3` (image-to-video / video inpainting), checkpoint-compatible with the released weights.

A PixArt-style DiT over video latents: per-frame 2x2 patches, RoPE-3D in self-attention, Skiparse (sparse
1-D) self-attention in the middle layers, cross-attention to projected mT5 states, adaLN-single timestep
modulation.

    model = OpenSoraInpaint_v1_3.from_pretrained("any93x640x640_i2v", torch_dtype=torch.bfloat16)
    velocity = model(latents, timestep, encoder_hidden_states, encoder_attention_mask=text_mask).sample

Layout is batch-first, (B, N, D), throughout; tokens are in (t, y, x) row-major order.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.loaders.peft import PeftAdapterMixin
from diffusers.models.attention import FeedForward
from diffusers.models.cache_utils import CacheMixin
from diffusers.models.embeddings import PixArtAlphaTextProjection
from diffusers.models.modeling_outputs import Transformer2DModelOutput
from diffusers.models.modeling_utils import ModelMixin
from diffusers.models.normalization import AdaLayerNormSingle
from torch import nn

from opensora_cli.models.attention import MASKED_BIAS, Attention, AttnProcessor, prepare_self_attention_mask
from opensora_cli.models.embeddings import PatchEmbed2D, RotaryEmbedding3D

# The reference makes block i sparse when 1 < i < 30: written for its 32 layers (dense first two and last
# two) but applied literally at every depth, so a 4-layer model has sparse blocks 2 and 3, and models of other
# depths were trained that way. We keep the literal rule.
FIRST_SPARSE_BLOCK, LAST_SPARSE_BLOCK = 2, 29


def is_skiparse_block(index: int) -> bool:
    """Whether block `index` uses Skiparse self-attention (when the model's `sparse1d` is on)."""
    return FIRST_SPARSE_BLOCK <= index <= LAST_SPARSE_BLOCK


# ------------------------------------------------------------------------------------------------------------
# Block
# ------------------------------------------------------------------------------------------------------------


class OpenSoraTransformerBlock(nn.Module):
    """PixArt-style block: modulated self-attention (RoPE-3D, optional Skiparse), un-normalised and ungated
    cross-attention, modulated feed-forward. Modulation = shared adaLN-single vectors + this block's table."""

    def __init__(
        self,
        dim: int,
        num_attention_heads: int,
        attention_head_dim: int,
        cross_attention_dim: int,
        dropout: float = 0.0,
        activation_fn: str = "gelu-approximate",
        attention_bias: bool = False,
        norm_elementwise_affine: bool = False,
        norm_eps: float = 1e-6,
        sparse_n: int = 1,
        sparse_group: bool = False,
    ):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=norm_eps, elementwise_affine=norm_elementwise_affine)
        self.attn1 = Attention(dim, num_attention_heads, attention_head_dim, bias=attention_bias, dropout=dropout,
                               sparse_n=sparse_n, sparse_group=sparse_group and sparse_n > 1)
        self.attn2 = Attention(dim, num_attention_heads, attention_head_dim, cross_attention_dim=cross_attention_dim,
                               bias=attention_bias, dropout=dropout)
        self.norm2 = nn.LayerNorm(dim, eps=norm_eps, elementwise_affine=norm_elementwise_affine)
        self.ff = FeedForward(dim, dropout=dropout, activation_fn=activation_fn)  # keys net.0.proj, net.2
        self.scale_shift_table = nn.Parameter(torch.randn(6, dim) / dim**0.5)

    def forward(
        self,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor,
        modulation: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        encoder_attention_mask: torch.Tensor | None = None,
        rotary_emb: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """
        Args:
            hidden_states: (B, N, D) video tokens.
            encoder_hidden_states: (B, L, D) projected text.
            modulation: (B, 6, D) shared adaLN-single vectors.
            attention_mask: self-attention bias for this block's Skiparse layout, or None.
            encoder_attention_mask: (B, 1, 1, L) text bias, or None.
            rotary_emb: (cos, sin) RoPE-3D tables, each (N, 1, head_dim).

        Returns:
            (B, N, D).
        """
        # 1. Modulation vectors, each (B, 1, D)
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = (
            (self.scale_shift_table + modulation).unsqueeze(2).unbind(1)
        )

        # 2. Self-attention on the modulated norm, gated residual
        norm_hidden_states = torch.addcmul(shift_msa, self.norm1(hidden_states), 1 + scale_msa)
        attn_output = self.attn1(norm_hidden_states, attention_mask=attention_mask, rotary_emb=rotary_emb)
        hidden_states = torch.addcmul(hidden_states, gate_msa, attn_output)

        # 3. Cross-attention on the raw stream: no norm, no modulation, no gate (as trained)
        cross_output = self.attn2(hidden_states, encoder_hidden_states, encoder_attention_mask)
        hidden_states = hidden_states + cross_output

        # 4. Feed-forward on the modulated norm, gated residual
        norm_hidden_states = torch.addcmul(shift_mlp, self.norm2(hidden_states), 1 + scale_mlp)
        return torch.addcmul(hidden_states, gate_mlp, self.ff(norm_hidden_states))


# ------------------------------------------------------------------------------------------------------------
# Text-to-video model
# ------------------------------------------------------------------------------------------------------------


class OpenSoraT2V_v1_3(ModelMixin, ConfigMixin, CacheMixin, PeftAdapterMixin):
    """Open-Sora Plan v1.3 text-to-video transformer. Defaults are the released 2B/122 model.

    Args:
        num_attention_heads, attention_head_dim: heads x width (hidden size = their product; head width a
            multiple of 6 for RoPE-3D).
        in_channels, out_channels: latent channels.
        num_layers: transformer blocks.
        dropout: attention-output and feed-forward dropout.
        cross_attention_dim: text width after the caption projection; must equal the hidden size.
        attention_bias: bias on the q/k/v projections.
        sample_size_h, sample_size_w, sample_size_t: informational only (released configs hold ints or
            2-element lists); nothing reads them.
        patch_size, patch_size_t: spatial patch; temporal patch must be 1 (per-frame patch embedding).
        activation_fn: "gelu-approximate" (released) or "gelu".
        only_cross_attention, double_self_attention, upcast_attention: reference fields; must be False.
        norm_elementwise_affine, norm_eps: block LayerNorms.
        caption_channels: text-encoder width (4096 for mT5-XXL).
        interpolation_scale_t, interpolation_scale_h, interpolation_scale_w: RoPE position divisors.
        sparse1d, sparse_n: Skiparse self-attention with k = sparse_n in blocks 2..29 (any k >= 1).
        rope_reference_rounding: True reproduces the reference's rounding of the RoPE angles to the activation
            dtype before cos/sin — the bf16 rounding the released weights were trained with; False (default)
            takes cos/sin of exact float32 angles. The two agree in float32.
    """

    _supports_gradient_checkpointing = True
    _no_split_modules = ["OpenSoraTransformerBlock"]
    _repeated_blocks = ["OpenSoraTransformerBlock"]

    @register_to_config
    def __init__(
        self,
        num_attention_heads: int = 24,
        attention_head_dim: int = 96,
        in_channels: int = 8,
        out_channels: int = 8,
        num_layers: int = 32,
        dropout: float = 0.0,
        cross_attention_dim: int = 2304,
        attention_bias: bool = True,
        sample_size_h: int | list[int] | None = None,
        sample_size_w: int | list[int] | None = None,
        sample_size_t: int | list[int] | None = None,
        patch_size: int = 2,
        patch_size_t: int = 1,
        activation_fn: str = "gelu-approximate",
        only_cross_attention: bool = False,
        double_self_attention: bool = False,
        upcast_attention: bool = False,
        norm_elementwise_affine: bool = False,
        norm_eps: float = 1e-6,
        caption_channels: int = 4096,
        interpolation_scale_h: float = 1.0,
        interpolation_scale_w: float = 1.0,
        interpolation_scale_t: float = 1.0,
        sparse1d: bool = True,
        sparse_n: int = 4,
        rope_reference_rounding: bool = False,
    ):
        super().__init__()
        inner_dim = num_attention_heads * attention_head_dim
        checks = [
            (num_layers >= 1, f"num_layers must be >= 1, got {num_layers}"),
            (cross_attention_dim == inner_dim, "cross_attention_dim must equal num_attention_heads * attention_head_dim"
             f" = {inner_dim} (the caption projection outputs that width), got {cross_attention_dim}"),
            (patch_size_t == 1, f"patch_size_t must be 1 (patches are embedded per frame), got {patch_size_t}"),
            (activation_fn in ("gelu-approximate", "gelu"),
             f"activation_fn must be 'gelu-approximate' or 'gelu', got {activation_fn!r}"),
            (sparse_n >= 1, f"sparse_n must be >= 1, got {sparse_n}"),
        ] + [(not value, f"{name} must be False (no v1.3 model sets it), got {value}") for name, value in (
            ("only_cross_attention", only_cross_attention), ("double_self_attention", double_self_attention),
            ("upcast_attention", upcast_attention))]
        problems = [message for ok, message in checks if not ok]
        if problems:
            raise ValueError("invalid transformer config: " + "; ".join(problems))

        # Registration order reproduces the reference's state-dict key order.
        self.scale_shift_table = nn.Parameter(torch.randn(2, inner_dim) / inner_dim**0.5)
        self.caption_projection = PixArtAlphaTextProjection(caption_channels, inner_dim)  # GELU(tanh)
        self.pos_embed = PatchEmbed2D(in_channels, inner_dim, patch_size)
        scales = (interpolation_scale_t, interpolation_scale_h, interpolation_scale_w)
        self.rope = RotaryEmbedding3D(attention_head_dim, scales, reference_rounding=rope_reference_rounding)
        self.transformer_blocks = nn.ModuleList([
            OpenSoraTransformerBlock(
                inner_dim, num_attention_heads, attention_head_dim, cross_attention_dim, dropout=dropout,
                activation_fn=activation_fn, attention_bias=attention_bias,
                norm_elementwise_affine=norm_elementwise_affine, norm_eps=norm_eps,
                sparse_n=sparse_n if sparse1d and is_skiparse_block(i) else 1,
                sparse_group=i % 2 == 1,  # odd blocks group-skip, even blocks single-skip
            )
            for i in range(num_layers)
        ])
        self.norm_out = nn.LayerNorm(inner_dim, elementwise_affine=False, eps=1e-6)
        self.proj_out = nn.Linear(inner_dim, patch_size_t * patch_size * patch_size * out_channels)
        self.adaln_single = AdaLayerNormSingle(inner_dim)

        # The distinct self-attention layouts, (sparse_n, group): one mask each per forward.
        self._attention_layouts = sorted({(b.attn1.sparse_n, b.attn1.sparse_group) for b in self.transformer_blocks})
        self.gradient_checkpointing = False

    # -- attention processors (the sequence-parallel seam, see models/attention.py) --------------------------

    @property
    def attn_processor(self) -> AttnProcessor:
        """The processor shared by every attention layer."""
        return self.transformer_blocks[0].attn1.processor

    def set_attn_processor(self, processor: AttnProcessor) -> None:
        """Install one processor in every attention layer (self- and cross-attention)."""
        for block in self.transformer_blocks:
            block.attn1.processor = processor
            block.attn2.processor = processor

    # -- forward ---------------------------------------------------------------------------------------------

    @property
    def input_channels(self) -> int:
        """Channels of `hidden_states` that forward expects."""
        return self.config.in_channels

    def embed_patches(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """(B, input_channels, T, H, W) -> (B, N, D) tokens."""
        return self.pos_embed(hidden_states)

    def forward(
        self,
        hidden_states: torch.Tensor,
        timestep: torch.Tensor,
        encoder_hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        encoder_attention_mask: torch.Tensor | None = None,
        return_dict: bool = True,
    ) -> Transformer2DModelOutput | tuple[torch.Tensor]:
        """Predict the model output (velocity for the released weights) for noisy video latents.

        Args:
            hidden_states: (B, input_channels, T, H, W) latents; H and W multiples of patch_size.
            timestep: (B,) or scalar, integer or float, in [0, 1000).
            encoder_hidden_states: (B, 1, L, caption_channels) or (B, L, caption_channels), text states.
            attention_mask: (B, T, H, W) 1 = valid latent position, 0 = padding; None = all valid (lets flash
                attention run). A patch with any valid position is valid.
            encoder_attention_mask: (B, 1, L) or (B, L) 1 = valid text token; None = all valid.
            return_dict: return a `Transformer2DModelOutput` rather than a 1-tuple.

        Returns:
            `Transformer2DModelOutput(sample=(B, out_channels, T, H, W))`, or `(sample,)`.
        """
        # 0. Shapes and dtype
        self._check_inputs(hidden_states, encoder_hidden_states)
        batch, _, frames, height, width = hidden_states.shape
        patch, out_channels = self.config.patch_size, self.config.out_channels
        local_grid = (frames, height // patch, width // patch)  # (T, H', W') of the tokens held here
        grid = self.attn_processor.full_grid(local_grid)  # the gathered grid under sequence parallelism
        dtype, device = self.proj_out.weight.dtype, hidden_states.device

        # 1. Masks -> additive biases (0 valid, -10000 padding), as the reference
        video_bias = None
        if attention_mask is not None:
            pool = (1, patch, patch)
            valid = F.max_pool3d(attention_mask.to(torch.float32).unsqueeze(1), pool, pool)  # (B,1,T,H',W')
            video_bias = (1 - valid.flatten(1).bool().to(dtype)) * MASKED_BIAS  # (B, N)
        text_bias = None
        if encoder_attention_mask is not None:
            text_bias = (1 - encoder_attention_mask.to(dtype)) * MASKED_BIAS
            text_bias = text_bias.reshape(batch, 1, 1, -1)  # (B, 1, 1, L)
        self_attention_masks = {
            layout: prepare_self_attention_mask(video_bias, math.prod(grid), *layout, dtype, device, batch)
            for layout in self._attention_layouts
        }  # per layout: None or (k*B, 1, 1, N_pad/k)

        # 2. Embeddings: patches, timestep modulation, caption, RoPE tables of the full grid
        hidden_states = self.embed_patches(hidden_states.to(dtype))  # (B, N, D)
        timestep = torch.as_tensor(timestep, device=device).reshape(-1).expand(batch)  # (B,)
        # float32 sinusoids (cos first, no frequency shift), cast to the weights' dtype before the MLP
        modulation, embedded_timestep = self.adaln_single(timestep, hidden_dtype=dtype)  # (B, 6*D), (B, D)
        modulation = modulation.unflatten(1, (6, -1))  # (B, 6, D)
        if encoder_hidden_states.ndim == 4:
            encoder_hidden_states = encoder_hidden_states.squeeze(1)  # (B, L, C_text)
        encoder_hidden_states = self.caption_projection(encoder_hidden_states.to(dtype))  # (B, L, D)
        rotary_emb = self.rope(grid, device, dtype)  # cos, sin: (N, 1, head_dim)

        # 3. Transformer blocks
        for block in self.transformer_blocks:
            self_attention_mask = self_attention_masks[(block.attn1.sparse_n, block.attn1.sparse_group)]
            args = (hidden_states, encoder_hidden_states, modulation, self_attention_mask, text_bias, rotary_emb)
            if torch.is_grad_enabled() and self.gradient_checkpointing:
                hidden_states = self._gradient_checkpointing_func(block, *args)
            else:
                hidden_states = block(*args)

        # 4. Output head: modulated norm, projection to patch pixels
        shift, scale = (self.scale_shift_table + embedded_timestep[:, None]).chunk(2, dim=1)  # (B, 1, D) each
        hidden_states = torch.addcmul(shift, self.norm_out(hidden_states), 1 + scale)
        hidden_states = self.proj_out(hidden_states)  # (B, N, p*p*C), features ordered (p_h, p_w, c)

        # 5. Unpatchify (B, N, p*p*C) -> (B, T, H', W', p, p, C) -> (B, C, T, H', p, W', p) -> (B, C, T, H, W)
        hidden_states = hidden_states.reshape(batch, *local_grid, patch, patch, out_channels)
        hidden_states = hidden_states.permute(0, 6, 1, 2, 4, 3, 5)  # (B, C, T, H', p, W', p)
        output = hidden_states.reshape(batch, out_channels, frames, height, width)
        return Transformer2DModelOutput(sample=output) if return_dict else (output,)

    def _check_inputs(self, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor) -> None:
        patch = self.config.patch_size
        if hidden_states.ndim != 5 or hidden_states.shape[1] != self.input_channels:
            raise ValueError(f"hidden_states must be (B, {self.input_channels}, T, H, W), "
                             f"got {tuple(hidden_states.shape)}")
        if hidden_states.shape[-2] % patch or hidden_states.shape[-1] % patch:
            raise ValueError(f"latent height and width must be multiples of patch_size {patch}, "
                             f"got {tuple(hidden_states.shape[-2:])}")
        text_shape = tuple(encoder_hidden_states.shape)
        if not (encoder_hidden_states.ndim == 3 or (encoder_hidden_states.ndim == 4 and text_shape[1] == 1)):
            raise ValueError(f"encoder_hidden_states must be (B, 1, L, C) or (B, L, C), got {text_shape}")
        if text_shape[-1] != self.config.caption_channels:
            raise ValueError(f"encoder_hidden_states width must be {self.config.caption_channels}, "
                             f"got {text_shape[-1]}")


# ------------------------------------------------------------------------------------------------------------
# Inpainting / image-to-video model
# ------------------------------------------------------------------------------------------------------------


class OpenSoraInpaint_v1_3(OpenSoraT2V_v1_3):
    """Open-Sora Plan v1.3 image-to-video / inpainting transformer.

    The input has 2 * in_channels + vae_scale_factor_t channels: [noisy latent | masked-video latent | mask]
    (the mask compressed to one channel per pixel frame of a latent frame). Each part has its own patch
    embedding; the masked latent and the mask then pass a bias-free Linear that starts at zero, so a fresh
    model built from T2V weights is exactly the T2V model. The three token embeddings are summed.

    Args:
        vae_scale_factor_t: temporal compression of the VAE = number of mask channels (4).
        (all others): as `OpenSoraT2V_v1_3`.
    """

    @register_to_config
    def __init__(
        self,
        num_attention_heads: int = 24,
        attention_head_dim: int = 96,
        in_channels: int = 8,
        out_channels: int = 8,
        num_layers: int = 32,
        dropout: float = 0.0,
        cross_attention_dim: int = 2304,
        attention_bias: bool = True,
        sample_size_h: int | list[int] | None = None,
        sample_size_w: int | list[int] | None = None,
        sample_size_t: int | list[int] | None = None,
        patch_size: int = 2,
        patch_size_t: int = 1,
        activation_fn: str = "gelu-approximate",
        only_cross_attention: bool = False,
        double_self_attention: bool = False,
        upcast_attention: bool = False,
        norm_elementwise_affine: bool = False,
        norm_eps: float = 1e-6,
        caption_channels: int = 4096,
        interpolation_scale_h: float = 1.0,
        interpolation_scale_w: float = 1.0,
        interpolation_scale_t: float = 1.0,
        sparse1d: bool = True,
        sparse_n: int = 4,
        rope_reference_rounding: bool = False,
        vae_scale_factor_t: int = 4,
    ):
        # every argument but our own, as given (the parent's register_to_config records them again, unchanged)
        super().__init__(**{k: v for k, v in locals().items() if k not in ("self", "__class__", "vae_scale_factor_t")})
        inner_dim = num_attention_heads * attention_head_dim
        self.pos_embed_masked_hidden_states = nn.Sequential(PatchEmbed2D(in_channels, inner_dim, patch_size),
                                                            _zero_linear(inner_dim))
        self.pos_embed_mask = nn.Sequential(PatchEmbed2D(vae_scale_factor_t, inner_dim, patch_size),
                                            _zero_linear(inner_dim))

    @property
    def input_channels(self) -> int:
        return 2 * self.config.in_channels + self.config.vae_scale_factor_t

    def embed_patches(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """(B, 2C + vae_scale_factor_t, T, H, W) -> (B, N, D): sum of the three branches."""
        channels = self.config.in_channels
        noisy, masked, mask = hidden_states.split([channels, channels, self.config.vae_scale_factor_t], dim=1)
        return self.pos_embed(noisy) + self.pos_embed_masked_hidden_states(masked) + self.pos_embed_mask(mask)


def _zero_linear(dim: int) -> nn.Linear:
    linear = nn.Linear(dim, dim, bias=False)
    nn.init.zeros_(linear.weight)
    return linear
