"""`opensora train-vae`: trains a real (tiny) WF-VAE on the demo domain, calibrates latents, continues with --init."""

from __future__ import annotations

import json

import pytest
import torch

from opensora_cli.data.synthetic import make_dataset


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    out = tmp_path_factory.mktemp("vae_data")
    make_dataset(out, clips=4, images=1, frames=9, heldout=1, seed=3)
    return out / "data.txt"


def _train(cli, data, out, *extra):
    return cli("train-vae", "--data", data, "--output-dir", out, "--preset", "WFVAEModel_D8_4x8x8-tiny",
               "--num-frames", "5", "--train-batch-size", "2", "--max-train-steps", "3", "--dataloader-num-workers",
               "0", "--json", *extra)


def test_train_vae_saves_a_loadable_calibrated_vae_and_init_continues_from_it(cli, data, tmp_path):
    from opensora_cli.models.autoencoder_wfvae import WFVAEModel
    from opensora_cli.models.loading import load_pretrained

    first = _train(cli, data, tmp_path / "a")
    assert first.code == 0, first.err
    result = json.loads(first.out)
    assert len(result["losses"]) == 3 and all(v == v for v in result["losses"])  # finite, one per step
    config = json.loads((tmp_path / "a" / "config.json").read_text())
    assert config["scale"] == result["scale"] and len(set(config["scale"])) > 1
    vae = load_pretrained(WFVAEModel, tmp_path / "a")

    second = _train(cli, data, tmp_path / "b", "--init", tmp_path / "a", "--num-frames", "9",
                    "--max-train-steps", "1", "--learning-rate", "1e-9")
    assert second.code == 0, second.err
    continued = load_pretrained(WFVAEModel, tmp_path / "b")
    # a near-zero learning rate: the continued VAE is the first one, not a fresh preset
    for (name, a), b in zip(vae.state_dict().items(), continued.state_dict().values()):
        assert torch.allclose(a, b, atol=1e-4), name


def test_train_vae_refuses_bad_options_and_folders(cli, data, tmp_path):
    result = _train(cli, data, tmp_path / "c", "--num-frames", "6")
    assert result.code == 1 and "--num-frames" in (result.out + result.err)
    result = _train(cli, data, tmp_path / "d", "--init", tmp_path / "nothing")
    assert result.code == 1 and "no config.json" in (result.out + result.err)


def test_train_vae_in_bf16_autocast_trains_and_saves_fp32_weights(cli, data, tmp_path):
    from safetensors.torch import load_file

    result = _train(cli, data, tmp_path / "bf16", "--mixed-precision", "bf16")
    assert result.code == 0, result.err
    losses = json.loads(result.out)["losses"]
    assert len(losses) == 3 and all(v == v for v in losses)
    weights = load_file(tmp_path / "bf16" / "diffusion_pytorch_model.safetensors")
    assert {t.dtype for t in weights.values() if t.is_floating_point()} == {torch.float32}
    bad = _train(cli, data, tmp_path / "bad", "--mixed-precision", "fp8")
    assert bad.code == 1 and "--mixed-precision" in (bad.out + bad.err)
