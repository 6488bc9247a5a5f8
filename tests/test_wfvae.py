"""WF-VAE: Haar units, the tiny reference model, temporal chunking, full-size key layout and contracts.

Criterion for goldens: max|ours - golden| <= atol + rtol * max|golden| (tests/goldens/README.md).
"""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from opensora_cli.models.autoencoder_wfvae import (
    HAAR_KEYS,
    HaarWaveletTransform2D,
    HaarWaveletTransform3D,
    InverseHaarWaveletTransform2D,
    InverseHaarWaveletTransform3D,
    WFVAEModel,
)
from opensora_cli.models.loading import state_dict_from_reference_ckpt

from .helpers import GOLDENS

WFVAE = GOLDENS / "wfvae"
FP32 = dict(atol=1e-5, rtol=1e-4)  # reference run-to-run noise is <= 7e-6 (thread count)


def assert_close(ours: torch.Tensor, golden: torch.Tensor, atol: float, rtol: float, what: str = ""):
    assert ours.shape == golden.shape, f"{what}: shape {tuple(ours.shape)} != {tuple(golden.shape)}"
    err = (ours.float() - golden.float()).abs().max().item()
    bound = atol + rtol * golden.abs().max().item()
    assert err <= bound, f"{what}: max error {err:.3g} > {bound:.3g}"


@pytest.fixture(scope="module")
def config():
    return json.loads((WFVAE / "config.json").read_text())["constructor_kwargs"]


@pytest.fixture(scope="module")
def golden_model(config):
    model = WFVAEModel(**config).eval()
    model.load_state_dict(load_file(WFVAE / "weights.safetensors"), strict=True)
    return model


@pytest.fixture(scope="module")
def io():
    return load_file(WFVAE / "io.safetensors")


@pytest.fixture(scope="module")
def tiny_model():
    """Random tiny model at odd widths (latent 4, base 6, energy flows 5 / 7, one connect block less)."""
    torch.manual_seed(0)
    model = WFVAEModel(
        latent_dim=4, base_channels=6, encoder_num_resblocks=1, encoder_energy_flow_hidden_size=5,
        decoder_num_resblocks=1, decoder_energy_flow_hidden_size=7, norm_type="layernorm",
        t_interpolation="trilinear", scale=[0.5, 0.7, 1.1, 1.3], shift=[0.1, -0.2, 0.0, 0.3],
    ).eval()
    with torch.no_grad():  # non-trivial norm affines, so a wrong norm axis shows
        for name, param in model.named_parameters():
            if "norm" in name:
                param.add_(0.1 * torch.randn_like(param))
    return model


def public_config(model: WFVAEModel) -> dict:
    return {k: v for k, v in model.config.items() if not k.startswith("_")}  # drops _name_or_path etc.


def video(frames: int, height: int = 16, width: int = 24, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(1, 3, frames, height, width, generator=generator) * 2 - 1


# ----- 1. Haar units ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("dims", ["3d", "2d"])
def test_haar_transforms_match_reference(dims):
    units = load_file(GOLDENS / "units" / "units.safetensors")
    forward, inverse = {
        "3d": (HaarWaveletTransform3D(), InverseHaarWaveletTransform3D()),
        "2d": (HaarWaveletTransform2D(), InverseHaarWaveletTransform2D()),
    }[dims]
    coeffs = forward(units[f"haar{dims}.in"])
    assert_close(coeffs, units[f"haar{dims}.out"], 1e-6, 1e-6, f"haar{dims}")
    assert_close(inverse(units[f"haar{dims}.out"]), units[f"ihaar{dims}.out"], 1e-6, 1e-6, f"ihaar{dims}")


def test_haar_constant_is_the_reference_0_3536():
    # the round trip is off by the gain 0.3536^2 * 8 = 1.00026, not exact: proof we kept the constant
    x = video(5, 16, 16)
    back = InverseHaarWaveletTransform3D()(HaarWaveletTransform3D()(x))
    assert torch.allclose(back, x * (8 * 0.3536**2), atol=1e-6)
    assert not torch.allclose(back, x, atol=1e-4)


def test_built_haar_constants_equal_the_checkpoint_ones(config):
    state = load_file(WFVAE / "weights.safetensors")
    built = WFVAEModel(**config).state_dict()
    keys = HAAR_KEYS.intersection(state)
    assert len(keys) == 40 and keys == HAAR_KEYS.intersection(built)
    for key in keys:
        assert torch.equal(built[key], state[key]), key


# ----- 2. the tiny reference model --------------------------------------------------------------------------


@pytest.mark.parametrize("prefix", ["video", "image"])
def test_encode_matches_reference(golden_model, io, prefix):
    x = io[f"{prefix}.in.x"]
    with torch.no_grad():
        h, l1_coeffs, l2_coeffs = golden_model.encoder(x)
        posterior = golden_model.encode(x).latent_dist
    assert_close(h, io[f"{prefix}.enc.h"], **FP32, what="enc.h")
    assert_close(l1_coeffs, io[f"{prefix}.enc.l1_coeffs"], **FP32, what="l1_coeffs")
    assert_close(l2_coeffs, io[f"{prefix}.enc.l2_coeffs"], **FP32, what="l2_coeffs")
    for field in ("mean", "logvar", "std"):
        assert_close(getattr(posterior, field), io[f"{prefix}.post.{field}"], **FP32, what=field)
    sample = posterior.mean + posterior.std * io[f"{prefix}.post.eps"]
    assert_close(sample, io[f"{prefix}.post.sample"], **FP32, what="post.sample")


def test_wrapper_encode_matches_reference_with_the_same_noise(golden_model, io):
    # the golden eps is torch.randn after manual_seed(2003): the same draw as a generator seeded 2003
    generator = torch.Generator().manual_seed(2003)
    with torch.no_grad():
        latents = golden_model.encode_latents(io["video.in.x"], sample_posterior=True, generator=generator)
        mean_latents = golden_model.encode_latents(io["video.in.x"])
    assert_close(latents, io["video.wrapper.encode"], **FP32, what="wrapper.encode")
    shift, scale = golden_model.latent_shift, golden_model.latent_scale
    assert_close(mean_latents, (io["video.post.mean"] - shift) * scale, **FP32, what="wrapper mean")


@pytest.mark.parametrize(
    "z_key, out_key",
    [("video.post.mean", "video.dec.from_mean"), ("image.post.mean", "image.dec.from_mean"),
     ("video.dec.in.z_random", "video.dec.from_z_random")],
)
def test_decode_matches_reference(golden_model, io, z_key, out_key):
    with torch.no_grad():
        sample = golden_model.decode(io[z_key]).sample
    assert_close(sample, io[out_key], **FP32, what=out_key)


def test_wrapper_decode_matches_reference(golden_model, io):
    with torch.no_grad():
        sample = golden_model.decode_latents(io["video.wrapper.dec.in"])  # (B, C, T, H, W)
    assert_close(sample.permute(0, 2, 1, 3, 4), io["video.wrapper.dec.out"], **FP32, what="wrapper.dec")


# ----- 3. temporal chunking ---------------------------------------------------------------------------------


def test_tiling_matches_reference(golden_model):
    golden = load_file(WFVAE / "io_tiling.safetensors")
    chunks = json.loads((WFVAE / "io_index.json").read_text())["tiling"]
    x, z = golden["tiling.in.video17"], golden["tiling.dec.in.z5"]
    with torch.no_grad():
        full_h = golden_model.encode(x).latent_dist.parameters
        full_dec = golden_model.decode(z).sample
        golden_model.enable_tiling(chunks["t_chunk_enc"], chunks["t_chunk_dec"])
        try:
            assert golden_model._chunks(17, 8) == [tuple(c) for c in chunks["enc_chunks"]]
            assert golden_model._chunks(5, 2) == [tuple(c) for c in chunks["dec_chunks"]]
            tiled_h = golden_model.encode(x).latent_dist.parameters
            tiled_dec = golden_model.decode(z).sample
        finally:
            golden_model.disable_tiling()
    assert_close(full_h, golden["tiling.enc.full.h"], **FP32, what="enc full")
    assert_close(tiled_h, golden["tiling.enc.tiled.h"], **FP32, what="enc tiled")
    assert_close(full_dec, golden["tiling.dec.full"], **FP32, what="dec full")
    assert_close(tiled_dec, golden["tiling.dec.tiled"], **FP32, what="dec tiled")


@pytest.mark.parametrize("frames", [1, 17])
def test_tiled_equals_untiled_for_any_chunk_size(tiny_model, frames):
    x = video(frames)
    with torch.no_grad():
        full_h = tiny_model.encode(x).latent_dist.parameters
        z = torch.randn(1, 4, (frames - 1) // 4 + 2, 2, 3, generator=torch.Generator().manual_seed(1))
        full_dec = tiny_model.decode(z).sample
        try:
            for chunk in (1, 2, 3, 4, 8):
                tiny_model.enable_tiling(encoder_chunk_frames=chunk, decoder_chunk_latents=chunk)
                assert_close(tiny_model.encode(x).latent_dist.parameters, full_h, 2e-6, 1e-5, f"enc {chunk}")
                assert_close(tiny_model.decode(z).sample, full_dec, 2e-6, 1e-5, f"dec {chunk}")
        finally:
            tiny_model.disable_tiling()


def test_nearest_time_interpolation_tiles_exactly():
    torch.manual_seed(1)
    model = WFVAEModel(latent_dim=4, base_channels=4, encoder_energy_flow_hidden_size=3,
                       decoder_energy_flow_hidden_size=5, norm_type="layernorm", t_interpolation="nearest",
                       scale=[1.0] * 4, shift=[0.0] * 4).eval()
    z = torch.randn(1, 4, 4, 2, 2)
    with torch.no_grad():
        full = model.decode(z).sample
        model.enable_tiling(decoder_chunk_latents=2)
        assert_close(model.decode(z).sample, full, 2e-6, 1e-5, "nearest tiled")


def test_tiling_shrinks_the_largest_activation_and_leaves_no_state(tiny_model):
    """Peak-memory proxy on CPU: the largest module output during decode (17 frames)."""
    largest = []

    def record(module, args, output):
        if isinstance(output, torch.Tensor):
            largest[-1] = max(largest[-1], output.numel())

    handles = [m.register_forward_hook(record) for m in tiny_model.decoder.modules()]
    z = torch.randn(1, 4, 5, 4, 4)
    try:
        with torch.no_grad():
            largest.append(0)
            full = tiny_model.decode(z).sample
            tiny_model.enable_tiling(decoder_chunk_latents=1)
            largest.append(0)
            first = tiny_model.decode(z).sample
            second = tiny_model.decode(z).sample
    finally:
        tiny_model.disable_tiling()
        for handle in handles:
            handle.remove()
    assert largest[1] <= largest[0] / 3  # 17 output frames at once vs at most 4 per chunk
    assert torch.equal(first, second)  # a second call starts from fresh caches
    assert_close(first, full, 2e-6, 1e-5, "tiled")
    for module in tiny_model.modules():
        for attr in ("cache", "prev", "l2_pending"):
            assert getattr(module, attr, None) is None, f"{attr} left on {type(module).__name__}"


# ----- 4. full-size key layout ------------------------------------------------------------------------------


def test_full_size_keys_shapes_and_counts_match_reference():
    reference = json.loads((GOLDENS / "keys" / "WFVAEModel_D8_4x8x8.keys.json").read_text())
    with torch.device("meta"):
        model = WFVAEModel(norm_type="layernorm", t_interpolation="trilinear")
    state = model.state_dict()
    assert {k: list(v.shape) for k, v in state.items()} == reference["state_dict"]
    assert list(state) == list(reference["state_dict"])  # module order too
    params = list(model.named_parameters())
    assert sum(p.numel() for _, p in params) == reference["param_count_total"] == 145_576_780
    assert sum(p.numel() for _, p in params if p.requires_grad) == reference["param_count_trainable"]
    assert sum(v.numel() for v in state.values()) == reference["state_dict_numel"]
    kinds = {name: "param" if p.requires_grad else "param_frozen" for name, p in params}
    kinds.update({name: "buffer" for name, _ in model.named_buffers() if name in state})
    assert kinds == reference["kind"]
    fixed = {k for k, kind in kinds.items() if kind != "param"}
    assert HAAR_KEYS.intersection(state) == fixed == WFVAEModel._optional_checkpoint_keys

    with torch.device("meta"):
        groupnorm = WFVAEModel(norm_type="groupnorm", t_interpolation="trilinear")
    renames = reference["groupnorm_key_renames"]
    expected = {renames.get(k, k): shape for k, shape in reference["state_dict"].items()}
    assert {k: list(v.shape) for k, v in groupnorm.state_dict().items()} == expected


def test_config_defaults_are_the_reference_code_defaults():
    with torch.device("meta"):
        config = WFVAEModel().config
    assert (config.norm_type, config.t_interpolation) == ("groupnorm", "nearest")
    assert config.connect_res_layer_num == 1
    assert list(config.scale) == [0.18215] * 8 and list(config.shift) == [0.0] * 8
    assert (config.base_channels, config.encoder_energy_flow_hidden_size) == (128, 64)


@pytest.mark.parametrize(
    "kwargs", [{"l1_dowmsample_block": "Downsample3D"}, {"attention_type": "AttnBlock3D"},
               {"norm_type": "batchnorm"}, {"t_interpolation": "cubic"}, {"scale": [1.0] * 4}],
)
def test_unknown_config_values_raise(kwargs):
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        with torch.device("meta"):
            WFVAEModel(**kwargs)


# ----- 5. contracts -----------------------------------------------------------------------------------------


def test_save_pretrained_round_trip(golden_model, tmp_path):
    golden_model.save_pretrained(tmp_path)
    loaded = WFVAEModel.from_pretrained(tmp_path).eval()
    assert public_config(loaded) == public_config(golden_model)
    x = video(5, 16, 24)
    with torch.no_grad():
        assert torch.equal(loaded.encode_latents(x), golden_model.encode_latents(x))
        z = golden_model.encode_latents(x)
        assert torch.equal(loaded.decode_latents(z), golden_model.decode_latents(z))


def test_reference_checkpoint_helpers(golden_model, tmp_path):
    state = golden_model.state_dict()
    ckpt = {"ema_state_dict": {f"module.{k}": v for k, v in state.items()}, "state_dict": {"gen_model": {}}}
    assert state_dict_from_reference_ckpt(ckpt).keys() == state.keys()
    assert state_dict_from_reference_ckpt({"state_dict": {"gen_model": state}}).keys() == state.keys()
    assert state_dict_from_reference_ckpt({"ema_state_dict": {}, "state_dict": state}).keys() == state.keys()
    torch.save({"state_dict": dict(state)}, tmp_path / "last.ckpt")
    loaded = state_dict_from_reference_ckpt(tmp_path / "last.ckpt")
    assert all(torch.equal(loaded[k], state[k]) for k in state)

    # a checkpoint without the Haar constants: the model already holds them
    without = {k: v for k, v in state.items() if k not in HAAR_KEYS.intersection(state)}
    fresh = WFVAEModel(**golden_model.config).eval()
    missing, unexpected = fresh.load_state_dict(without, strict=False)
    assert set(missing) == HAAR_KEYS.intersection(state) and not unexpected
    x = video(1, 16, 16)
    with torch.no_grad():
        assert torch.equal(fresh.encode_latents(x), golden_model.encode_latents(x))


@pytest.mark.parametrize("dtype, rtol", [(torch.bfloat16, 0.05), (torch.float16, 0.01)])
def test_half_precision_close_to_fp32(config, io, dtype, rtol):
    # bf16 keeps 8 mantissa bits (unit roundoff 2^-9 = 0.2 %); rounding every activation through ~40
    # layers of random, unnormalised-output weights gives ~1-2 % of the output range (measured 1.3 % /
    # 1.8 %), fp16 ~0.3 %. The bounds leave ~3x margin and still catch a wrong dtype path (O(1) errors).
    model = WFVAEModel(**config).eval()
    model.load_state_dict(load_file(WFVAE / "weights.safetensors"))
    model.to(dtype)
    x, z = io["video.in.x"], io["video.post.mean"]
    with torch.no_grad():
        mean = model.encode(x.to(dtype)).latent_dist.mean
        sample = model.decode(z.to(dtype)).sample
    assert mean.dtype == sample.dtype == dtype
    assert_close(mean, io["video.post.mean"], 0, rtol, f"{dtype} encode")
    assert_close(sample, io["video.dec.from_mean"], 0, rtol, f"{dtype} decode")


def test_image_latent_is_the_first_video_latent(golden_model, io):
    with torch.no_grad():
        video_latents = golden_model.encode_latents(io["video.in.x"])
        image_latents = golden_model.encode_latents(io["video.in.x"][:, :, :1])
    assert_close(image_latents, video_latents[:, :, :1], 1e-5, 0, "causality")


@pytest.mark.parametrize("frames", [1, 5, 9, 17])
def test_shapes_for_frame_counts_and_non_square_frames(tiny_model, frames):
    x = video(frames, 16, 40)
    with torch.no_grad():
        generator = torch.Generator().manual_seed(0)
        latents = tiny_model.encode_latents(x, sample_posterior=True, generator=generator)
        assert latents.shape == (1, 4, (frames - 1) // 4 + 1, 2, 5)
        assert tiny_model.decode_latents(latents).shape == x.shape
        assert tiny_model(x).sample.shape == x.shape
    assert tiny_model.vae_scale_factor == (4, 8, 8) and tiny_model.latent_channels == 4


def test_sampling_is_seeded_and_mean_is_default(tiny_model):
    x = video(5)
    with torch.no_grad():
        draws = [tiny_model.encode_latents(x, True, torch.Generator().manual_seed(s)) for s in (3, 3, 4)]
        assert torch.equal(draws[0], draws[1]) and not torch.equal(draws[0], draws[2])
        assert torch.equal(tiny_model.encode_latents(x), tiny_model.encode_latents(x))


def test_groupnorm_variant_runs():
    torch.manual_seed(0)
    model = WFVAEModel(latent_dim=4, base_channels=32, encoder_energy_flow_hidden_size=32,
                       decoder_energy_flow_hidden_size=32, scale=[1.0] * 4, shift=[0.0] * 4).eval()
    with torch.no_grad():
        assert model(video(5, 8, 8)).sample.shape == (1, 3, 5, 8, 8)


@pytest.mark.parametrize("shape", [(1, 3, 4, 16, 16), (1, 3, 5, 12, 16), (1, 4, 5, 16, 16), (3, 5, 16, 16)])
def test_encode_rejects_bad_shapes(tiny_model, shape):
    with pytest.raises(ValueError, match="T = 1 \\+ 4k"):
        tiny_model.encode(torch.zeros(shape))


def test_backward_reaches_every_trainable_parameter(tiny_model):
    # the blocks use in-place SiLU / residual adds; autograd must accept them
    tiny_model.zero_grad()
    tiny_model(video(5, 16, 16)).sample.square().mean().backward()
    for name, param in tiny_model.named_parameters():
        if param.requires_grad:
            assert param.grad is not None and param.grad.isfinite().all(), name
        else:
            assert param.grad is None, name  # the frozen Haar filters
    tiny_model.zero_grad(set_to_none=True)
