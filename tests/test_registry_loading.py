"""Presets, random model folders in the released layout, and loading them (with errors that name keys)."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from opensora_cli.errors import ModelLoadError
from opensora_cli.models.autoencoder_wfvae import WFVAEModel
from opensora_cli.models.loading import INDEX_NAME, load_pretrained, read_state_dict
from opensora_cli.models.registry import PRESETS, build, get_preset, write_random_model_folder
from opensora_cli.models.transformer_opensora import OpenSoraInpaint_v1_3, OpenSoraT2V_v1_3

from .helpers import GOLDENS


def keys_json(name: str) -> dict:
    return json.loads((GOLDENS / "keys" / name).read_text())


@pytest.mark.parametrize(
    ("preset", "keys_file", "params"),
    [
        ("OpenSoraInpaint_v1_3-2B/122", "OpenSoraInpaint_v1_3-2B_122.keys.json", 2_782_713_632),
        ("OpenSoraT2V_v1_3-2B/122", None, 2_771_981_600),
        ("WFVAEModel_D8_4x8x8", "WFVAEModel_D8_4x8x8.keys.json", 145_576_780),
    ],
)
def test_full_size_presets_match_the_released_checkpoints(preset, keys_file, params):
    model = build(preset, device="meta")
    assert sum(p.numel() for p in model.parameters()) == params
    if keys_file is not None:
        expected = keys_json(keys_file)["state_dict"]
        ours = {k: list(v.shape) for k, v in model.state_dict().items()}
        assert ours == expected


def test_every_preset_builds_and_names_are_checked():
    for name, preset in PRESETS.items():
        if preset.kind != "text_encoder":
            assert build(name, device="meta") is not None
    with pytest.raises(KeyError, match="did you mean 'OpenSoraInpaint_v1_3-tiny'"):
        get_preset("OpenSoraInpaint_v1_3-tinny")


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("random-model")
    return write_random_model_folder(root, max_shard_size="200KB", seed=3)


def test_random_folder_has_the_released_layout(folder):
    transformer = folder["transformer"]
    index = json.loads((transformer / INDEX_NAME).read_text())
    shards = sorted(set(index["weight_map"].values()))
    assert len(shards) >= 2 and all(s.startswith("diffusion_pytorch_model-0000") for s in shards)
    assert json.loads((transformer / "config.json").read_text())["_class_name"] == "OpenSoraInpaint_v1_3"
    assert (folder["vae"] / "diffusion_pytorch_model.safetensors").is_file()
    assert (folder["text_encoder"] / "tokenizer_config.json").is_file()


def test_load_pretrained_equals_diffusers_from_pretrained(folder):
    ours = load_pretrained(OpenSoraInpaint_v1_3, folder["transformer"])
    theirs = OpenSoraInpaint_v1_3.from_pretrained(folder["transformer"])
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(1, 20, 3, 8, 12, generator=generator)
    text = torch.randn(1, 1, 7, ours.config.caption_channels, generator=generator)
    a = ours(x, torch.tensor([500.0]), encoder_hidden_states=text, return_dict=False)[0]
    b = theirs(x, torch.tensor([500.0]), encoder_hidden_states=text, return_dict=False)[0]
    assert torch.equal(a, b)
    # the random branches are not zero: the inpaint inputs matter
    assert ours.pos_embed_mask[1].weight.abs().sum() > 0


def test_load_casts_while_reading(folder):
    model = load_pretrained(OpenSoraInpaint_v1_3, folder["transformer"], dtype=torch.bfloat16)
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    assert not any(p.is_meta for p in model.parameters())


def test_vae_loads_with_or_without_its_fixed_filters(folder, tmp_path):
    vae = load_pretrained(WFVAEModel, folder["vae"])
    state = read_state_dict(folder["vae"])
    stripped = {k: v for k, v in state.items() if k not in WFVAEModel._optional_checkpoint_keys}
    assert len(stripped) < len(state)
    out = tmp_path / "vae"
    out.mkdir()
    (out / "config.json").write_text((folder["vae"] / "config.json").read_text())
    save_file(stripped, out / "diffusion_pytorch_model.safetensors")
    again = load_pretrained(WFVAEModel, out)
    for key, value in vae.state_dict().items():
        assert torch.equal(value, again.state_dict()[key]), key


def _copy_folder(src, dst, edit):
    dst.mkdir()
    (dst / "config.json").write_text((src / "config.json").read_text())
    state = read_state_dict(src)
    edit(state)
    save_file(state, dst / "diffusion_pytorch_model.safetensors")
    return dst


def test_mismatched_checkpoints_name_the_keys(folder, tmp_path):
    src = folder["transformer"]
    missing = _copy_folder(src, tmp_path / "missing", lambda s: s.pop("proj_out.weight"))
    with pytest.raises(ModelLoadError, match=r"1 missing key\(s\): proj_out.weight"):
        load_pretrained(OpenSoraInpaint_v1_3, missing)
    extra = _copy_folder(src, tmp_path / "extra", lambda s: s.__setitem__("bogus.weight", torch.zeros(1)))
    with pytest.raises(ModelLoadError, match=r"1 unexpected key\(s\): bogus.weight"):
        load_pretrained(OpenSoraInpaint_v1_3, extra)
    shaped = _copy_folder(src, tmp_path / "shaped", lambda s: s.__setitem__("proj_out.bias", torch.zeros(3)))
    with pytest.raises(ModelLoadError, match=r"shape mismatch.*proj_out.bias \(3,\)"):
        load_pretrained(OpenSoraInpaint_v1_3, shaped)


def test_wrong_class_missing_config_and_missing_shard(folder, tmp_path):
    with pytest.raises(ModelLoadError, match="holds a WFVAEModel, expected a OpenSoraInpaint_v1_3"):
        load_pretrained(OpenSoraInpaint_v1_3, folder["vae"])
    with pytest.raises(ModelLoadError, match="no config.json"):
        load_pretrained(OpenSoraInpaint_v1_3, tmp_path)
    broken = tmp_path / "broken"
    broken.mkdir()
    for item in folder["transformer"].iterdir():
        if not item.name.endswith("00001-of-00002.safetensors") and "00001-of" not in item.name:
            (broken / item.name).write_bytes(item.read_bytes())
    with pytest.raises(ModelLoadError, match="shards that are not there"):
        load_pretrained(OpenSoraInpaint_v1_3, broken)


def test_inpaint_folder_loads_as_t2v_parent_class_only_with_matching_keys(folder):
    # an inpaint checkpoint has 6 more keys than the T2V model: loading it as T2V must say so
    with pytest.raises(ModelLoadError, match="unexpected key"):
        load_pretrained(OpenSoraT2V_v1_3, folder["transformer"])


def test_reference_ckpt_layout_is_read(folder, tmp_path):
    state = load_file(folder["vae"] / "diffusion_pytorch_model.safetensors")
    out = tmp_path / "ckpt"
    out.mkdir()
    (out / "config.json").write_text((folder["vae"] / "config.json").read_text())
    torch.save({"ema_state_dict": {f"module.{k}": v for k, v in state.items()}, "step": 3}, out / "last.ckpt")
    vae = load_pretrained(WFVAEModel, out)
    assert torch.equal(vae.state_dict()["decoder.conv_out.weight"], state["decoder.conv_out.weight"])
