"""Named model presets (full size and tiny) and random-weight model folders in the released layout.

    build("OpenSoraInpaint_v1_3-2B/122", device="meta")       # the released transformer's architecture
    write_random_model_folder("models/random-tiny")           # transformer/, vae/, text_encoder/ to try things

The full-size names are the reference's registry names; "-tiny" presets are ours, small enough for CPU tests.
The tiny transformer: 4 layers (tests pin it), 2 heads x 24 = 48 wide, text 32 wide, 8 channels in and out.
Some sizes cannot be odd: a head's width is a multiple of 6 (RoPE gives t, y and x an even share each), 2
sequence-parallel processes split the heads, in = out = the tiny VAE's 8 latent channels, and the text width is
the tiny T5's. The unit tests of each architecture build their own, odder sizes.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from opensora_cli.schemas.problems import did_you_mean


@dataclass(frozen=True)
class Preset:
    """A named architecture: which class, built with which constructor arguments."""

    kind: str  # "transformer", "vae" or "text_encoder"
    class_name: str
    kwargs: dict[str, Any] = field(default_factory=dict)
    description: str = ""


_TRANSFORMER_2B = dict(
    num_attention_heads=24, attention_head_dim=96, in_channels=8, out_channels=8, num_layers=32, dropout=0.0,
    cross_attention_dim=2304, attention_bias=True, sample_size_h=[40, 30], sample_size_w=[40, 30],
    sample_size_t=24, patch_size=2, patch_size_t=1, activation_fn="gelu-approximate", only_cross_attention=False,
    double_self_attention=False, upcast_attention=False, norm_elementwise_affine=False, norm_eps=1e-6,
    caption_channels=4096, interpolation_scale_h=1.0, interpolation_scale_w=1.0, interpolation_scale_t=1.0,
    sparse1d=True, sparse_n=4,
)
_TRANSFORMER_TINY = dict(
    _TRANSFORMER_2B, num_attention_heads=2, attention_head_dim=24, num_layers=4, cross_attention_dim=48,
    caption_channels=32, sample_size_h=8, sample_size_w=12, sample_size_t=3, sparse_n=2,
)
# Between tiny and full size, for CPU benchmarks: a quarter of the width, a quarter of the depth.
_TRANSFORMER_MEDIUM = dict(
    _TRANSFORMER_2B, num_attention_heads=6, attention_head_dim=96, num_layers=8, cross_attention_dim=576,
    caption_channels=512,
)
# The bundled demo model (`opensora_cli/demo_model`): small enough to train on a CPU in minutes.
_TRANSFORMER_DEMO = dict(
    _TRANSFORMER_2B, num_attention_heads=4, attention_head_dim=48, num_layers=8, cross_attention_dim=192,
    caption_channels=64, sparse1d=False, sparse_n=1, sample_size_h=8, sample_size_w=12, sample_size_t=5,
)
_WFVAE_D8 = dict(norm_type="layernorm", t_interpolation="trilinear")
_WFVAE_TINY = dict(_WFVAE_D8, base_channels=8, encoder_energy_flow_hidden_size=4, decoder_energy_flow_hidden_size=12)
_WFVAE_DEMO = dict(_WFVAE_D8, base_channels=16, encoder_energy_flow_hidden_size=8, decoder_energy_flow_hidden_size=16)
_T5_TINY = dict(
    vocab_size=384, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4, feed_forward_proj="gated-gelu",
    is_encoder_decoder=False, relative_attention_num_buckets=8,
)

_INPAINT, _T2V = "OpenSoraInpaint_v1_3", "OpenSoraT2V_v1_3"
PRESETS: dict[str, Preset] = {
    "OpenSoraInpaint_v1_3-2B/122": Preset("transformer", _INPAINT, dict(_TRANSFORMER_2B, vae_scale_factor_t=4),
                                          "the released I2V/inpainting transformer (2.78 B parameters)"),
    "OpenSoraT2V_v1_3-2B/122": Preset("transformer", _T2V, _TRANSFORMER_2B,
                                      "the released text-to-video transformer (2.77 B parameters)"),
    "OpenSoraInpaint_v1_3-medium": Preset("transformer", _INPAINT, dict(_TRANSFORMER_MEDIUM, vae_scale_factor_t=4),
                                          "8 layers x 576 wide, for CPU benchmarks"),
    "OpenSoraInpaint_v1_3-tiny": Preset("transformer", _INPAINT, dict(_TRANSFORMER_TINY, vae_scale_factor_t=4),
                                        "4 layers x 48 wide, for tests"),
    "OpenSoraT2V_v1_3-tiny": Preset("transformer", _T2V, _TRANSFORMER_TINY, "4 layers x 48 wide"),
    "OpenSoraInpaint_v1_3-demo": Preset("transformer", _INPAINT, dict(_TRANSFORMER_DEMO, vae_scale_factor_t=4),
                                        "8 layers x 192 wide, the bundled demo model"),
    "WFVAEModel_D8_4x8x8-demo": Preset("vae", "WFVAEModel", _WFVAE_DEMO, "base width 16, the bundled demo model"),
    "WFVAEModel_D8_4x8x8": Preset("vae", "WFVAEModel", _WFVAE_D8, "the released WF-VAE (145.6 M parameters)"),
    "WFVAEModel_D8_4x8x8-tiny": Preset("vae", "WFVAEModel", _WFVAE_TINY, "base width 8, for tests"),
    "t5-tiny": Preset("text_encoder", "T5EncoderModel", _T5_TINY, "2-layer T5 encoder (d_model 32), ByT5 tokenizer"),
    "t5-demo": Preset("text_encoder", "T5EncoderModel", dict(_T5_TINY, d_model=64, d_kv=16, d_ff=128),
                      "2-layer T5 encoder (d_model 64), ByT5 tokenizer: the bundled demo model's"),
}


def model_class(class_name: str) -> type:
    """The class behind a `_class_name` (ours, or a transformers encoder)."""
    if class_name in (_T2V, _INPAINT):
        from opensora_cli.models import transformer_opensora

        return getattr(transformer_opensora, class_name)
    if class_name == "WFVAEModel":
        from opensora_cli.models.autoencoder_wfvae import WFVAEModel

        return WFVAEModel
    import transformers

    return getattr(transformers, class_name)


def get_preset(name: str) -> Preset:
    try:
        return PRESETS[name]
    except KeyError:
        hint = did_you_mean(name, PRESETS, otherwise=f"known: {', '.join(PRESETS)}", cutoff=0.6)
        raise KeyError(f"unknown model preset '{name}' — {hint}") from None


def build(name: str, device: torch.device | str | None = None, dtype: torch.dtype | None = None, **overrides):
    """Instantiate a preset with random weights (on the meta device: shapes only, no memory).

    Args:
        overrides: constructor arguments that replace the preset's.
    """
    preset = get_preset(name)
    cls = model_class(preset.class_name)
    kwargs = {**preset.kwargs, **overrides}
    with torch.device(device) if device is not None else contextlib.nullcontext():
        if preset.kind == "text_encoder":
            import transformers

            model = cls(transformers.T5Config(**kwargs))
        else:
            model = cls(**kwargs)
    return model.to(dtype) if dtype is not None else model


def randomise_weights_(model: torch.nn.Module, generator: torch.Generator) -> None:
    """Give every trainable parameter non-trivial random values (zero-initialised branches included), in place,
    so that a random model exercises every path.

    Args:
        model: its matrices get N(0, 1 / fan-in), norm weights 1 + N(0, 0.01), other vectors N(0, 0.0025);
            frozen parameters (the VAE's Haar filters) keep their values.
        generator: all the randomness; parameters are visited in name order, so the result depends on it alone.
    """
    with torch.no_grad():
        for name, param in sorted(model.named_parameters()):
            if not param.requires_grad:
                continue
            if param.dim() >= 2:
                fan_in = param[0].numel()
                param.copy_(torch.randn(param.shape, generator=generator) / fan_in**0.5)
            elif "norm" in name and name.endswith("weight"):
                param.copy_(1 + 0.1 * torch.randn(param.shape, generator=generator))
            else:
                param.copy_(0.05 * torch.randn(param.shape, generator=generator))


def write_random_model_folder(root: str | Path, transformer: str | None = "OpenSoraInpaint_v1_3-tiny",
                              vae: str | None = "WFVAEModel_D8_4x8x8-tiny", text_encoder: str | None = "t5-tiny",
                              seed: int = 0, max_shard_size: str = "5GB") -> dict[str, Path]:
    """Write `root/{transformer,vae,text_encoder}` with random weights, each loadable like the released folders.

    The transformer is sharded beyond `max_shard_size` (as the released one: two shards and an index); the text
    encoder folder holds a T5 encoder and the file-less ByT5 tokenizer (no download). A part given as None is
    not written; the transformer reads text states as wide as the text encoder's.

    Returns:
        {part: path} for the parts written.
    """
    import transformers

    transformers.utils.logging.disable_progress_bar()
    root = Path(root)
    generator = torch.Generator().manual_seed(seed)
    paths: dict[str, Path] = {}
    caption_channels = None
    if text_encoder is not None:
        text = build(text_encoder)
        randomise_weights_(text, generator)
        caption_channels = text.config.d_model
        paths["text_encoder"] = root / "text_encoder"
        text.save_pretrained(paths["text_encoder"], safe_serialization=True)
        transformers.ByT5Tokenizer().save_pretrained(paths["text_encoder"])
    for kind, name in (("transformer", transformer), ("vae", vae)):
        if name is None:
            continue
        overrides = {"caption_channels": caption_channels} if kind == "transformer" and caption_channels else {}
        model = build(name, **overrides)
        randomise_weights_(model, generator)
        paths[kind] = root / kind
        # Like the released folders: the transformer may be sharded, the VAE is one file.
        shard = max_shard_size if kind == "transformer" else "100GB"
        model.save_pretrained(paths[kind], safe_serialization=True, max_shard_size=shard)
    return paths
