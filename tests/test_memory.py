"""The memory estimate (services/memory.py): its parts, and runs refused before anything loads."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from opensora_cli.models import registry
from opensora_cli.services import memory
from opensora_cli.services.model_folders import bundled_model_dir

from .helpers import REPO

DEMO = bundled_model_dir()
DIRS = {kind: DEMO / kind for kind in ("transformer", "vae", "text_encoder")}


@pytest.mark.parametrize("preset", ["OpenSoraInpaint_v1_3-2B/122", "OpenSoraInpaint_v1_3-medium",
                                    "OpenSoraInpaint_v1_3-demo"])
def test_transformer_parameters_from_the_config_match_the_built_model(preset):
    with torch.device("meta"):
        model = registry.build(preset)
    real = sum(p.numel() for p in model.parameters())
    assert abs(memory.transformer_parameters(dict(model.config)) / real - 1) < 0.05


def test_safetensors_headers_count_the_parameters_exactly():
    from opensora_cli.models.autoencoder_wfvae import WFVAEModel
    from opensora_cli.models.loading import load_pretrained

    vae = load_pretrained(WFVAEModel, DIRS["vae"])
    assert memory.safetensors_parameters(DIRS["vae"]) == sum(t.numel() for t in vae.state_dict().values())


def test_the_estimate_grows_with_the_video_and_tiling_bounds_the_decoder():
    small = memory.estimate(DIRS, 17, 64, 96, "fp32", "cpu", True, True)
    long = memory.estimate(DIRS, 129, 64, 96, "fp32", "cpu", True, True)
    untiled = memory.estimate(DIRS, 129, 64, 96, "fp32", "cpu", True, False)
    assert long.peak > small.peak and long.decode == small.decode  # one decoder chunk either way
    assert untiled.decode > long.decode
    half = memory.estimate(DIRS, 17, 64, 96, "bf16", "cuda", True, True)
    assert half.transformer * 2 == small.transformer
    assert memory.estimate(DIRS, 17, 64, 96, "fp32", "cpu", False, True).activations * 2 == small.activations


def test_a_runaway_frame_count_or_size_is_refused_before_any_model_loads(cli, tmp_path):
    demo = REPO / "examples" / "demo"
    (tmp_path / "p.txt").write_text("a yellow triangle moves to the right\n")
    (tmp_path / "c.txt").write_text(f"{demo / 'i2v.png'}\n")
    # The demo model makes videos longer than its 17 frames in windows (one in memory at a time), so a runaway
    # frame count is stopped by the length guard, and the memory check is met by a runaway size instead.
    result = cli("sample", "-p", "p.txt", "-c", "c.txt", "--num-frames", "400001")
    said = result.out + result.err
    assert result.code == 1 and "--num-frames: 400001 frames is over 100 times the model's trained length" in said
    assert "no model was loaded" in said and not (tmp_path / "samples").exists()
    result = cli("sample", "-p", "p.txt", "-c", "c.txt", "--crop-for-hw", "--height", "8192", "--width", "16384")
    said = result.out + result.err
    assert result.code == 1 and "--num-frames: a 17-frame 8192x16384 video needs about" in said
    assert "free memory is" in said and "a smaller size" in said
    assert "no model was loaded" in said and not (tmp_path / "samples").exists()


def test_a_config_asking_for_100000_layers_is_refused_by_its_size(cli, tmp_path):
    model = tmp_path / "model"
    shutil.copytree(DEMO, model)
    config = json.loads((model / "transformer" / "config.json").read_text())
    config["num_layers"] = 100_000
    (model / "transformer" / "config.json").write_text(json.dumps(config))
    (tmp_path / "p.txt").write_text("a square\n")
    (tmp_path / "c.txt").write_text(f"{REPO / 'examples' / 'demo' / 'i2v.png'}\n")
    result = cli("sample", "-p", "p.txt", "-c", "c.txt", "--model", model)
    said = result.out + result.err
    assert result.code == 1 and "needs about" in said and "no model was loaded" in said, said


def test_validate_inputs_reports_the_estimate(cli):
    demo = REPO / "examples" / "demo"
    result = cli("validate-inputs", "-p", demo / "prompts.txt", "-c", demo / "conds.txt", "--json")
    estimate = json.loads(result.out)["memory"]
    assert estimate["video"] == "17x64x96" and 0 < estimate["gpu_bf16_gib"] < estimate["cpu_fp32_gib"] < 1
    plain = cli("validate-inputs", "-p", demo / "prompts.txt", "-c", demo / "conds.txt")
    assert "memory: the largest video (17x64x96) needs about" in plain.out


def test_vae_tiling_auto_decodes_untiled_only_with_room_to_spare(monkeypatch, tmp_path):
    from opensora_cli.services import sampling
    from opensora_cli.utils import system

    demo = Path(__file__).resolve().parents[1] / "examples" / "demo"
    options = dict(prompts=demo / "prompts.txt", conds=demo / "conds.txt", output_dir=tmp_path / "out")
    assert sampling.plan(options).request.vae_tiling is False  # the demo model: far below half of free memory
    assert sampling.plan({**options, "vae_tiling": "on"}).request.vae_tiling is True
    untiled = sampling.plan({**options, "vae_tiling": "off"})
    from opensora_cli.distributed.device import resolve_device

    need, _, _ = sampling._memory_need([j.item for j in untiled.jobs], untiled.request,
                                       untiled.model_dirs, resolve_device("cpu"))
    monkeypatch.setattr(system, "available_host_memory", lambda: int(need * 1.5))  # fits, but not twice over
    assert sampling.plan(options).request.vae_tiling is True
    assert sampling.plan({**options, "vae_tiling": "off"}).request.vae_tiling is False  # (the user's choice)


def test_the_sidecar_says_how_the_video_was_decoded_and_no_vae_tiling_still_works(cli, tmp_path):
    demo = Path(__file__).resolve().parents[1] / "examples" / "demo"
    args = ["sample", "--prompts", demo / "prompts.txt", "--conds", demo / "conds.txt", "--steps", "2", "--json"]
    for extra, tiled in [([], False), (["--no-vae-tiling"], False), (["--vae-tiling", "on"], True)]:
        result = cli(*args, "-o", tmp_path / str(extra), *extra)
        sidecar = json.loads(Path(json.loads(result.out)["results"][0]["sidecar"]).read_text())
        assert result.code == 0 and sidecar["vae_tiling"] is tiled, (extra, result.err)


def test_int8_shrinks_the_transformer_and_a_refused_run_is_told_to_try_it(cli, tmp_path):
    plain = memory.estimate(DIRS, 129, 512, 768, "fp32", "cpu", True, True)
    int8 = memory.estimate(DIRS, 129, 512, 768, "fp32", "cpu", True, True, quantize="int8")
    assert int8.transformer * 4 == plain.transformer and int8.load == plain.transformer
    assert int8.peak < plain.peak and int8.text_encoder == plain.text_encoder  # the encoder loads unquantised
    demo = REPO / "examples" / "demo"
    (tmp_path / "p.txt").write_text("a yellow triangle moves to the right\n")
    (tmp_path / "c.txt").write_text(f"{demo / 'i2v.png'}\n")
    args = ["sample", "-p", "p.txt", "-c", "c.txt", "--crop-for-hw", "--height", "8192", "--width", "16384"]
    result = cli(*args)
    said = result.out + result.err
    assert "free memory is" in said and "use --quantize int8, " in said
    result = cli(*args, "--quantize", "int8")
    said = result.out + result.err
    assert "free memory is" in said and "--quantize" not in said.split("free memory is")[1]
