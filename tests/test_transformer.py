"""The v1.3 diffusion transformer against the reference goldens (RoPE, Skiparse maps and masks, the 2-layer
model), the released key layout, and its contracts (Skiparse == block-masked dense attention, inpaint == T2V
at initialisation, checkpointing, save/load, precisions, masks)."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from opensora_cli.models.attention import (
    Attention,
    prepare_self_attention_mask,
    skiparse_pad_length,
    skiparse_regroup,
    skiparse_ungroup,
)
from opensora_cli.models.embeddings import RotaryEmbedding3D, apply_rotary_emb
from opensora_cli.models.transformer_opensora import OpenSoraInpaint_v1_3, OpenSoraT2V_v1_3, is_skiparse_block

from .helpers import GOLDENS

L2 = GOLDENS / "transformer" / "l2"
CASES = ("video_b2", "padded_b1", "image_b1")
VARIANTS = {"sparse_off": dict(sparse1d=False, sparse_n=2), "sparse_on": dict(sparse1d=True, sparse_n=2)}

# Tiny, odd sizes: 45 tokens (a multiple of neither 4 nor 9), in != out channels, 3 mask channels.
TINY = dict(
    num_attention_heads=2, attention_head_dim=24, in_channels=3, out_channels=5, num_layers=4,
    cross_attention_dim=48, caption_channels=32, sparse1d=True, sparse_n=2,
)
GRID = (3, 6, 10)  # latent T, H, W -> token grid (3, 3, 5)


def assert_close(ours: torch.Tensor, golden: torch.Tensor, atol: float, rtol: float) -> float:
    """The goldens' criterion: max|ours - golden| <= atol + rtol * max|golden|."""
    assert ours.shape == golden.shape, (ours.shape, golden.shape)
    err = (ours.float() - golden.float()).abs().max().item()
    bound = atol + rtol * golden.float().abs().max().item()
    assert err <= bound, f"max error {err:.3g} > {bound:.3g}"
    return err


def randomise_(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Non-trivial weights everywhere (the zero-initialised inpaint branches too), scaled by fan-in."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, param in sorted(model.named_parameters()):
            scale = param[0].numel() ** -0.5 if param.dim() >= 2 else 0.05
            param.copy_(torch.randn(param.shape, generator=generator) * scale)
    return model


def tiny(cls=OpenSoraInpaint_v1_3, seed: int = 0, **overrides):
    kwargs = dict(TINY, **overrides)
    if cls is OpenSoraInpaint_v1_3:
        kwargs.setdefault("vae_scale_factor_t", 3)
    return randomise_(cls(**kwargs), seed).eval()


def tiny_inputs(model, batch: int = 2, grid=GRID, text_len: int = 7, seed: int = 1, masks: bool = True):
    generator = torch.Generator().manual_seed(seed)
    frames, height, width = grid
    inputs = dict(
        hidden_states=torch.randn(batch, model.input_channels, frames, height, width, generator=generator),
        timestep=torch.tensor([999.0, 321.0, 5.0][:batch]),
        encoder_hidden_states=torch.randn(
            batch, 1, text_len, model.config.caption_channels, generator=generator
        ),
    )
    if masks:
        attention_mask = torch.ones(batch, frames, height, width)
        attention_mask[-1, -1, :, 4:] = 0  # padding in the last sample's last frame (whole patches)
        encoder_attention_mask = torch.ones(batch, 1, text_len)
        encoder_attention_mask[-1, :, -3:] = 0
        inputs.update(attention_mask=attention_mask, encoder_attention_mask=encoder_attention_mask)
    return inputs


def run(model, inputs) -> torch.Tensor:
    with torch.no_grad():
        return model(**inputs, return_dict=False)[0]


# ------------------------------------------------------------------------------------------------------------
# Units against the reference
# ------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def units():
    return load_file(GOLDENS / "units" / "units.safetensors")


def rope_golden_grid(units) -> tuple[int, int, int]:
    """The golden's token positions are the (t, y, x) row-major grid (3, 3, 5); check rather than assume."""
    grid = (3, 3, 5)
    t, y, x = torch.meshgrid(*(torch.arange(n) for n in grid), indexing="ij")
    for name, expected in (("pos_t", t), ("pos_h", y), ("pos_w", x)):
        assert torch.equal(units[f"rope.{name}"], expected.flatten())
    return grid


def apply_rope_seq_first(tokens: torch.Tensor, scale, grid) -> torch.Tensor:
    cos, sin = RotaryEmbedding3D(tokens.shape[-1], scale)(grid, tokens.device, tokens.dtype)
    # The golden's layout is (N, B, heads, Dh); ours (B, N, heads, Dh).
    return apply_rotary_emb(tokens.transpose(0, 1), cos, sin).transpose(0, 1)


def test_rope_matches_reference(units):
    ours = apply_rope_seq_first(units["rope.tokens"], (1, 1, 1), rope_golden_grid(units))
    assert_close(ours, units["rope.out.scale111"], 1e-6, 1e-6)


def test_rope_with_interpolation_scales_matches_reference_up_to_its_cache_bug(units):
    """The reference caches cos/sin by axis length only: with T = H = 3 the y chunk reuses the t table (scale
    2 instead of 0.5). Our t and x chunks match the golden; the golden's y chunk is the t-scaled table."""
    grid, golden = rope_golden_grid(units), units["rope.out.scale2_05_15"]
    ours = apply_rope_seq_first(units["rope.tokens"], (2, 0.5, 1.5), grid)
    chunk = ours.shape[-1] // 3
    for axis in (0, 2):
        sl = slice(axis * chunk, (axis + 1) * chunk)
        assert_close(ours[..., sl], golden[..., sl], 1e-6, 1e-6)
    y_chunk = slice(chunk, 2 * chunk)
    assert (ours[..., y_chunk] - golden[..., y_chunk]).abs().max() > 1e-2  # the bug is fixed
    buggy = apply_rope_seq_first(units["rope.tokens"], (2, 2, 1.5), grid)
    assert_close(buggy, golden, 1e-6, 1e-6)


SKIPARSE_PAD = json.loads((GOLDENS / "units" / "units_index.json").read_text())["skiparse_pad_len"]


@pytest.mark.parametrize("name", sorted(SKIPARSE_PAD))
def test_skiparse_index_maps_match_reference(units, name):
    _, n, k, layout = name.split(".")
    num_tokens, sparse_n, group = int(n[1:]), int(k[1:]), layout == "group"
    ramp = torch.arange(1, num_tokens + 1).repeat(2, 1) + torch.tensor([[0], [1000]])  # (B=2, N)
    pad = skiparse_pad_length(num_tokens, sparse_n)
    assert pad == SKIPARSE_PAD[name]
    padded = torch.nn.functional.pad(ramp, (0, pad))  # padding rows = 0
    grouped = skiparse_regroup(padded, sparse_n, group)  # (k*B, N_pad/k)
    assert torch.equal(grouped.T, units[name])  # golden: (N_pad/k, k*B), column = group*B + b
    assert torch.equal(skiparse_ungroup(grouped, sparse_n, group), padded)


@pytest.mark.parametrize("sparse_n", [1, 4])
@pytest.mark.parametrize("layout", ["single", "group"])
def test_sparse_masks_match_reference(units, sparse_n, layout):
    video_bias = units["sparse_mask.in.video_bias"]  # (B, 1, N)
    text_bias = units["sparse_mask.in.text_bias"]  # (B, 1, L)
    heads = 2
    ours = prepare_self_attention_mask(video_bias[:, 0], video_bias.shape[-1], sparse_n, layout == "group")
    assert ours.shape[1] == 1  # broadcasts over heads; the reference materialises them
    assert_close(ours.expand(-1, heads, -1, -1), units[f"sparse_mask.k{sparse_n}.{layout}.video"], 1e-6, 1e-6)
    # Cross-attention stays dense (text bias (B, 1, 1, L)); the reference repeats it per group, which is the
    # same bias for every query of sample b.
    text = text_bias[:, None].repeat(sparse_n, 1, 1, 1).expand(-1, heads, -1, -1)
    assert_close(text, units[f"sparse_mask.k{sparse_n}.{layout}.text"], 1e-6, 1e-6)


# ------------------------------------------------------------------------------------------------------------
# The 2-layer reference model
# ------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def l2_io():
    return load_file(L2 / "io.safetensors")


@pytest.fixture(scope="module")
def l2_models():
    kwargs = json.loads((L2 / "config.json").read_text())["constructor_kwargs"]
    weights = load_file(L2 / "weights.safetensors")
    models = {}
    for variant, overrides in VARIANTS.items():
        model = OpenSoraInpaint_v1_3(**{**kwargs, **overrides}).eval()
        model.load_state_dict(weights, strict=True)
        models[variant] = model
    released_keys = json.loads((L2 / "keys.json").read_text())["state_dict"]
    assert list(models["sparse_on"].state_dict()) == list(released_keys)
    return models


@pytest.mark.parametrize("variant", sorted(VARIANTS))
@pytest.mark.parametrize("case", CASES)
def test_l2_model_matches_reference(l2_models, l2_io, case, variant):
    prefix = f"{case}.in."
    inputs = {key[len(prefix) :]: value for key, value in l2_io.items() if key.startswith(prefix)}
    assert_close(run(l2_models[variant], inputs), l2_io[f"{case}.out.{variant}"], 1e-5, 1e-4)


# ------------------------------------------------------------------------------------------------------------
# Released key layout
# ------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("cls", [OpenSoraInpaint_v1_3, OpenSoraT2V_v1_3])
def test_full_size_key_layout_on_meta(cls):
    released = json.loads((GOLDENS / "keys" / "OpenSoraInpaint_v1_3-2B_122.keys.json").read_text())
    config, keys = dict(released["config"]), dict(released["state_dict"])
    if cls is OpenSoraT2V_v1_3:
        del config["vae_scale_factor_t"]
        for key in released["inpaint_only_keys"]:
            del keys[key]
    with torch.device("meta"):
        model = cls(**config)
    ours = {key: list(value.shape) for key, value in model.state_dict().items()}
    assert list(ours) == list(keys)  # same keys, same order
    assert ours == keys
    count = sum(p.numel() for p in model.parameters())
    inpaint = cls is OpenSoraInpaint_v1_3
    assert count == (released["param_count_total"] if inpaint else released["t2v_param_count"])
    assert (len(ours), count) in ((693, 2_782_713_632), (687, 2_771_981_600))
    assert all(p.is_meta for p in model.parameters())


def test_skiparse_layers_follow_the_reference_rule():
    assert [i for i in range(32) if is_skiparse_block(i)] == list(range(2, 30))
    model = OpenSoraT2V_v1_3(**dict(TINY, sparse_n=3))
    layouts = [(b.attn1.sparse_n, b.attn1.sparse_group) for b in model.transformer_blocks]
    assert layouts == [(1, False), (1, False), (3, False), (3, True)]  # 2 single-skip, 3 group-skip
    dense = OpenSoraT2V_v1_3(**dict(TINY, sparse1d=False))
    assert {b.attn1.sparse_n for b in dense.transformer_blocks} == {1}


def test_released_config_loads_ignoring_extras():
    """The released T2V config.json has list-valued sample sizes and EMA bookkeeping fields."""
    config = dict(TINY, sample_size_h=[44, 80], sample_size_w=[44, 80], sample_size_t=24, decay=0.9999,
                  optimization_step=2500, _class_name="OpenSoraT2V_v1_3", _diffusers_version="0.30.2")
    model = OpenSoraT2V_v1_3.from_config(config)  # diffusers warns about, and ignores, the EMA fields
    assert model.config.sample_size_h == [44, 80] and len(model.transformer_blocks) == 4
    assert model.config.rope_reference_rounding is False


# ------------------------------------------------------------------------------------------------------------
# Skiparse
# ------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("sparse_n", [1, 2, 3, 4, 5])
@pytest.mark.parametrize("group", [False, True])
def test_regroup_inverse_is_identity(sparse_n, group):
    generator = torch.Generator().manual_seed(sparse_n)
    for num_tokens in (1, 7, 16, 45, 48, 101):
        x = torch.randn(3, num_tokens, 2, 5, generator=generator)
        pad = skiparse_pad_length(num_tokens, sparse_n)
        assert (num_tokens + pad) % sparse_n**2 == 0 and pad < sparse_n**2
        padded = torch.nn.functional.pad(x, (0, 0, 0, 0, 0, pad))
        grouped = skiparse_regroup(padded, sparse_n, group)
        assert grouped.shape == (3 * sparse_n, (num_tokens + pad) // sparse_n, 2, 5)
        assert torch.equal(skiparse_ungroup(grouped, sparse_n, group)[:, :num_tokens], x)
        if sparse_n == 1:
            assert torch.equal(grouped, x)


@pytest.mark.parametrize("sparse_n", [2, 3, 4, 5])
@pytest.mark.parametrize("group", [False, True])
def test_skiparse_attention_equals_block_masked_dense_attention(sparse_n, group):
    """Skiparse = dense attention where token i sees token j iff they share a group (n mod k for single-skip,
    (n // k) mod k for group-skip) — an independent statement of the rule, with padding and a video mask."""
    torch.manual_seed(0)
    grid, batch = (3, 3, 5), 2
    num_tokens = 45
    sparse = randomise_(Attention(48, 2, 24, bias=True, sparse_n=sparse_n, sparse_group=group))
    dense = Attention(48, 2, 24, bias=True)
    dense.load_state_dict(sparse.state_dict())
    hidden_states = torch.randn(batch, num_tokens, 48)
    video_bias = torch.zeros(batch, num_tokens)
    video_bias[1, -4:] = -10000.0
    rotary_emb = RotaryEmbedding3D(24)(grid, "cpu", torch.float32)

    mask = prepare_self_attention_mask(video_bias, num_tokens, sparse_n, group)
    ours = sparse(hidden_states, attention_mask=mask, rotary_emb=rotary_emb)

    index = torch.arange(num_tokens)
    groups = (index // sparse_n) % sparse_n if group else index % sparse_n
    block = torch.where(groups[:, None] == groups[None, :], 0.0, float("-inf"))  # (N, N)
    bias = (block + video_bias[:, None, :])[:, None]  # (B, 1, N, N)
    expected = dense(hidden_states, attention_mask=bias, rotary_emb=rotary_emb)
    assert_close(ours, expected, 1e-6, 1e-5)
    unmasked = dense(hidden_states, attention_mask=video_bias[:, None, None, :], rotary_emb=rotary_emb)
    assert (ours - unmasked).abs().max() > 1e-3  # the sparsity is real


@pytest.mark.parametrize("sparse_n", [1, 2, 3, 4, 5])
def test_sparse_model_runs_for_any_sparse_n(sparse_n):
    model = tiny(OpenSoraT2V_v1_3, sparse_n=sparse_n)
    dense = tiny(OpenSoraT2V_v1_3, sparse1d=False)
    inputs = tiny_inputs(model)
    out, out_dense = run(model, inputs), run(dense, inputs)
    assert out.shape == (2, 5, *GRID) and torch.isfinite(out).all()
    if sparse_n == 1:
        assert torch.equal(out, out_dense)
    else:
        assert (out - out_dense).abs().max() > 1e-4


# ------------------------------------------------------------------------------------------------------------
# Model contracts
# ------------------------------------------------------------------------------------------------------------


def test_fresh_inpaint_model_from_t2v_weights_equals_t2v():
    t2v = tiny(OpenSoraT2V_v1_3)
    inpaint = OpenSoraInpaint_v1_3(**TINY, vae_scale_factor_t=3).eval()
    missing, unexpected = inpaint.load_state_dict(t2v.state_dict(), strict=False)
    released = json.loads((GOLDENS / "keys" / "OpenSoraInpaint_v1_3-2B_122.keys.json").read_text())
    assert not unexpected and sorted(missing) == sorted(released["inpaint_only_keys"])
    with torch.no_grad():  # masked branch from the T2V patch embedding; the mask branch keeps its random init
        inpaint.pos_embed_masked_hidden_states[0].load_state_dict(t2v.pos_embed.state_dict())
    inputs = tiny_inputs(inpaint)
    expected = run(t2v, dict(inputs, hidden_states=inputs["hidden_states"][:, :3]))
    assert torch.equal(run(inpaint, inputs), expected)
    randomise_(inpaint.pos_embed_mask[1], seed=5)  # once trained, the mask matters
    assert not torch.equal(run(inpaint, inputs), expected)


def test_gradient_checkpointing_matches():
    model = tiny(dropout=0.0).train()
    inputs = tiny_inputs(model)
    inputs["hidden_states"].requires_grad_(True)
    weight = torch.randn(2, 5, *GRID, generator=torch.Generator().manual_seed(3))

    def loss_and_grads():
        model.zero_grad()
        inputs["hidden_states"].grad = None
        out = model(**inputs).sample
        (out * weight).sum().backward()
        grads = {name: p.grad.clone() for name, p in model.named_parameters()}
        return out.detach(), grads, inputs["hidden_states"].grad.clone()

    out, grads, input_grad = loss_and_grads()
    model.enable_gradient_checkpointing()
    assert model.is_gradient_checkpointing
    out_ckpt, grads_ckpt, input_grad_ckpt = loss_and_grads()
    assert torch.allclose(out, out_ckpt, atol=1e-6, rtol=0)
    assert torch.allclose(input_grad, input_grad_ckpt, atol=1e-6, rtol=1e-5)
    for name, grad in grads.items():
        assert torch.allclose(grad, grads_ckpt[name], atol=1e-6, rtol=1e-5), name
    assert grads["pos_embed_mask.1.weight"].abs().max() > 0  # every branch learns


@pytest.mark.parametrize("cls", [OpenSoraInpaint_v1_3, OpenSoraT2V_v1_3])
def test_save_pretrained_round_trip(tmp_path, cls):
    model = tiny(cls, rope_reference_rounding=True)
    model.save_pretrained(tmp_path)
    loaded = cls.from_pretrained(tmp_path).eval()
    def public(config):
        return {key: value for key, value in config.items() if not key.startswith("_")}

    assert public(loaded.config) == public(model.config)
    assert loaded.config.rope_reference_rounding is True
    inputs = tiny_inputs(model)
    assert torch.equal(run(loaded, inputs), run(model, inputs))


@pytest.mark.parametrize("dtype, tolerance", [(torch.bfloat16, 3e-2), (torch.float16, 4e-3)])
def test_half_precision_is_close_to_fp32(dtype, tolerance):
    """bf16 keeps 8 significant bits (relative step 2**-8 = 0.4 %), fp16 11 bits (0.05 %); through 4 blocks of
    matmuls, softmax and residual sums the output drifts by about 1 % (bf16) and 0.12 % (fp16) of its range.
    Three times that still catches a real error (a missing LayerNorm upcast, a mask or RoPE table in the wrong
    dtype), which shows up as O(1)."""
    model = tiny()
    inputs = tiny_inputs(model)
    expected = run(model, inputs)
    out = run(model.to(dtype), inputs)  # inputs are cast to the model dtype inside
    assert out.dtype == dtype
    assert_close(out.float(), expected, 0.0, tolerance)


def test_attention_masks_none_equal_all_ones():
    model = tiny(sparse_n=2)  # 45 tokens: Skiparse pads them in blocks 2 and 3
    inputs = tiny_inputs(model, masks=False)
    ones = dict(
        inputs,
        attention_mask=torch.ones(2, *GRID, dtype=torch.int64),
        encoder_attention_mask=torch.ones(2, 1, 7, dtype=torch.int64),
    )
    assert_close(run(model, inputs), run(model, ones), 1e-6, 1e-6)
    masked = tiny_inputs(model)
    assert (run(model, masked) - run(model, inputs)).abs().max() > 1e-4


def test_3d_text_and_scalar_timestep_are_accepted():
    model = tiny()
    inputs = tiny_inputs(model, batch=1)
    expected = run(model, inputs)
    inputs.update(
        encoder_hidden_states=inputs["encoder_hidden_states"][:, 0],
        encoder_attention_mask=inputs["encoder_attention_mask"][:, 0],
        timestep=torch.tensor(999),
    )
    assert torch.equal(run(model, inputs), expected)


def test_bad_inputs_and_configs_are_rejected():
    model = tiny()
    inputs = tiny_inputs(model)
    with pytest.raises(ValueError, match="hidden_states must be"):
        run(model, dict(inputs, hidden_states=inputs["hidden_states"][:, :3]))
    with pytest.raises(ValueError, match="multiples of patch_size"):
        run(model, dict(inputs, hidden_states=inputs["hidden_states"][..., :5], attention_mask=None))
    with pytest.raises(ValueError, match="encoder_hidden_states must be"):
        run(model, dict(inputs, encoder_hidden_states=inputs["encoder_hidden_states"].repeat(1, 2, 1, 1)))
    with pytest.raises(ValueError, match="cross_attention_dim"):
        OpenSoraT2V_v1_3(**dict(TINY, cross_attention_dim=32))
    with pytest.raises(ValueError, match="divisible by 6"):
        OpenSoraT2V_v1_3(**dict(TINY, attention_head_dim=16, cross_attention_dim=32))
    with pytest.raises(ValueError, match="double_self_attention"):
        OpenSoraT2V_v1_3(**dict(TINY, double_self_attention=True))


# ------------------------------------------------------------------------------------------------------------
# RoPE
# ------------------------------------------------------------------------------------------------------------


def test_rope_reference_rounding_only_matters_below_fp32():
    # The released head width (chunks of 32 channels) on a 93x352x640 grid: angles such as 39 * 0.56 rad fall
    # where bf16 steps by 0.125 rad, so the rounded tables are off by up to ~0.06 (integer angles are exact).
    grid = (24, 22, 40)
    exact, rounded = RotaryEmbedding3D(96), RotaryEmbedding3D(96, reference_rounding=True)
    for table, other in zip(exact(grid, "cpu", torch.float32), rounded(grid, "cpu", torch.float32)):
        assert torch.equal(table, other)
    for table, other in zip(exact(grid, "cpu", torch.bfloat16), rounded(grid, "cpu", torch.bfloat16)):
        assert (table.float() - other.float()).abs().max() > 0.03

    model, model_rounded = tiny(), tiny(rope_reference_rounding=True)
    inputs = tiny_inputs(model, grid=(4, 16, 30))
    assert torch.equal(run(model, inputs), run(model_rounded, inputs))
    model, model_rounded = model.to(torch.bfloat16), model_rounded.to(torch.bfloat16)
    assert not torch.equal(run(model, inputs), run(model_rounded, inputs))


def test_rope_tables_are_cached_per_scale_and_grid():
    rope = RotaryEmbedding3D(24, (2.0, 0.5, 1.5))
    first = rope((3, 3, 5), "cpu", torch.float32)
    assert rope((3, 3, 5), "cpu", torch.float32) is first
    assert not torch.equal(rope((3, 3, 6), "cpu", torch.float32)[0][:45], first[0])  # x positions move
    other = RotaryEmbedding3D(24, (2.0, 2.0, 1.5))((3, 3, 5), "cpu", torch.float32)
    assert not torch.equal(other[0], first[0])


@pytest.mark.parametrize("scale", [(1.0, 1.0, 1.0), (2.0, 0.5, 1.5)])
def test_rope_depends_on_relative_position_only(scale):
    grid = (6, 7, 8)
    cos, sin = RotaryEmbedding3D(24, scale)(grid, "cpu", torch.float32)
    generator = torch.Generator().manual_seed(0)
    query, key = torch.randn(2, 1, 1, 1, 24, generator=generator).double()
    cos, sin = cos.double(), sin.double()
    q_rot = apply_rotary_emb(query.expand(1, cos.shape[0], 1, 24), cos, sin)[0, :, 0]  # all positions (N, 24)
    k_rot = apply_rotary_emb(key.expand(1, cos.shape[0], 1, 24), cos, sin)[0, :, 0]

    def index(t, y, x):
        return (t * grid[1] + y) * grid[2] + x

    offset = (2, 3, 1)
    for p, r in [((0, 0, 0), (1, 2, 3)), ((3, 1, 4), (0, 3, 2)), ((1, 1, 1), (1, 1, 1))]:
        shifted_p = tuple(a + d for a, d in zip(p, offset))
        shifted_r = tuple(a + d for a, d in zip(r, offset))
        before = q_rot[index(*p)] @ k_rot[index(*r)]
        after = q_rot[index(*shifted_p)] @ k_rot[index(*shifted_r)]
        assert torch.allclose(before, after, atol=1e-6), (p, r)
    origin = q_rot[index(0, 0, 0)]
    assert not torch.allclose(origin @ k_rot[index(1, 2, 3)], origin @ k_rot[index(1, 2, 4)])
    assert torch.allclose(q_rot.norm(dim=-1), query.norm())  # a rotation: lengths are kept
