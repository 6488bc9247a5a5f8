"""LoRA (models/lora.py, services/lora.py): training changes only the adapter, resumes exactly and writes peft's
layout; sampling with scale 0 is the base model's video, a merged model makes the adapter's video, an adapter
made for another base is refused before anything loads, and two processes train one."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from .helpers import train_args, write_image

LORA = ["--lora-rank", "4", "--learning-rate", "1e-2"]


def lora_args(data_file, model_dir, out, *extra) -> list:
    """train_args on the random tiny model folder `model_dir` itself (a folder base) instead of the preset."""
    args = train_args(data_file, model_dir, out, *LORA, *extra)
    args[args.index("--model") + 1] = model_dir
    return args


def _json(result) -> dict:
    assert result.code == 0, result.err + result.out
    return json.loads(result.out.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def trained(tmp_path_factory, data_file, model_dir):
    """A LoRA trained 3 steps on the tiny model folder, with EMA, checkpoints at 2 and 3."""
    from opensora_cli.cli.app import main

    out = tmp_path_factory.mktemp("lora") / "out"
    args = lora_args(data_file, model_dir, out, "--max-train-steps", "3", "--checkpointing-steps", "2", "--use-ema",
                     "--ema-decay", "0.5")
    assert main([str(a) for a in args]) == 0
    return out


def test_checkpoints_hold_only_the_adapter_in_peft_layout(trained, model_dir):
    from opensora_cli.models.lora import base_identity

    checkpoint = trained / "checkpoint-3"
    assert sorted(p.name for p in checkpoint.iterdir()) == [
        "adapter_config.json", "adapter_model.safetensors", "opensora_base.json", "state", "trainer_state.json"]
    config = json.loads((checkpoint / "adapter_config.json").read_text())
    assert config["peft_type"] == "LORA" and config["r"] == 4 and config["lora_alpha"] == 4
    adapter = load_file(checkpoint / "adapter_model.safetensors")
    assert adapter and all(k.startswith("base_model.model.transformer_blocks.") and ".lora_" in k for k in adapter)
    assert (checkpoint / "adapter_model.safetensors").stat().st_size < 0.2 * sum(
        f.stat().st_size for f in (model_dir / "transformer").glob("*.safetensors"))
    base = json.loads((checkpoint / "opensora_base.json").read_text())
    assert base == base_identity(model_dir / "transformer")
    # EMA: the top level holds the averages, state/ the trained adapter; the optimiser saw the adapter only
    raw = load_file(checkpoint / "state" / "training_adapter.safetensors")
    assert raw.keys() == {k.removeprefix("base_model.model.") for k in adapter}
    name = next(k for k in raw if "lora_B" in k)
    assert not torch.equal(raw[name], adapter["base_model.model." + name]) and raw[name].abs().max() > 0
    optimiser = json.loads((checkpoint / "state" / "optimizer.json").read_text())
    assert len(optimiser["state"]) == len(raw)


def test_only_the_adapter_changes(cli, data_file, model_dir, tmp_path):
    """The base's files are untouched, the result counts only the adapter's parameters, and --train-modules
    inpaint adds the inpaint branches whole (their weights trained, the rest of the model not)."""
    before = {p.name: p.read_bytes() for p in (model_dir / "transformer").iterdir()}
    result = _json(cli(*lora_args(data_file, model_dir, tmp_path / "out", "--max-train-steps", "2",
                                  "--checkpointing-steps", "2", "--train-modules", "inpaint")))
    assert {p.name: p.read_bytes() for p in (model_dir / "transformer").iterdir()} == before
    assert 0 < result["trainable_parameters"] < 0.5 * result["parameters"]
    adapter = load_file(tmp_path / "out" / "checkpoint-2" / "adapter_model.safetensors")
    base = load_file(model_dir / "transformer" / "diffusion_pytorch_model.safetensors")
    whole = {k.removeprefix("base_model.model."): v for k, v in adapter.items() if ".lora_" not in k}
    assert sorted(whole) == sorted(k for k in base if k.startswith(("pos_embed_mask.", "pos_embed_masked_hidden")))
    assert any(not torch.equal(v, base[k].float()) for k, v in whole.items())
    lora_parameters = sum(v.numel() for v in adapter.values())
    assert result["trainable_parameters"] == lora_parameters


def test_resume_is_exact(cli, data_file, model_dir, tmp_path, trained):
    """3 steps straight (the `trained` fixture) = 2 steps, then a resumed run to 3."""
    common = ["--checkpointing-steps", "2", "--use-ema", "--ema-decay", "0.5"]
    first = cli(*lora_args(data_file, model_dir, tmp_path / "cut", "--max-train-steps", "2", *common))
    assert first.code == 0, first.err
    resumed = _json(cli(*lora_args(data_file, model_dir, tmp_path / "cut", "--max-train-steps", "3",
                                   "--resume-from-checkpoint", "latest", *common)))
    assert resumed["first_step"] == 2
    for name in ("adapter_model.safetensors", "state/training_adapter.safetensors", "state/ema.safetensors",
                 "state/optimizer.safetensors"):
        a, b = load_file(trained / "checkpoint-3" / name), load_file(tmp_path / "cut" / "checkpoint-3" / name)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name
    # a LoRA checkpoint is not a full fine-tune's, nor the other way round
    mixed = cli(*train_args(data_file, model_dir, tmp_path / "cut", "--max-train-steps", "4",
                            "--resume-from-checkpoint", "latest"))
    assert mixed.code == 1 and "trained with LoRA" in mixed.err and "Traceback" not in mixed.err


def test_a_preset_base_is_written_once_and_samples_with_the_adapter(cli, data_file, model_dir, tmp_path):
    """Without a base folder (a preset with random weights) the base goes to OUT/base, a model bundle."""
    out = tmp_path / "out"
    result = _json(cli(*train_args(data_file, model_dir, out, *LORA, "--max-train-steps", "2",
                                   "--checkpointing-steps", "2")))
    assert result["lora_base"] == str(out / "base")
    assert (out / "base" / "transformer" / "config.json").is_file() and (out / "base" / "vae").is_symlink()
    (tmp_path / "p.txt").write_text("a red square moves left\n")
    sample = cli("sample", "-p", tmp_path / "p.txt", "--model", out / "base", "--lora", out / "checkpoint-2",
                 "-n", "9", "--height", "64", "--width", "96", "--steps", "2", "-o", tmp_path / "s", "--json")
    assert sample.code == 0, sample.err


# ------------------------------------------------------------------------------------------------------------
# Sampling
# ------------------------------------------------------------------------------------------------------------


@pytest.fixture
def lines(tmp_path):
    write_image(tmp_path / "start.png", 64, 96)
    (tmp_path / "p.txt").write_text("a red square moves left\n")
    (tmp_path / "c.txt").write_text("start.png\n")
    return tmp_path


def _sample(cli, lines, model_dir, out, *extra) -> dict:
    result = cli("sample", "-p", lines / "p.txt", "-c", lines / "c.txt", "--model", model_dir, "-n", "9",
                 "--crop-for-hw", "--height", "64", "--width", "96", "--steps", "3", "-o", lines / out, "--json",
                 *extra)
    return _json(result)["results"][0]


def test_scale_zero_is_the_base_model_and_the_sidecar_records_the_adapter(cli, lines, model_dir, trained):
    checkpoint = trained / "checkpoint-3"
    base = _sample(cli, lines, model_dir, "base")
    zero = _sample(cli, lines, model_dir, "zero", "--lora", f"{checkpoint}:0")
    full = _sample(cli, lines, model_dir, "full", "--lora", checkpoint)
    scaled = _sample(cli, lines, model_dir, "scaled", "--lora", checkpoint, "--lora-scale", "3")
    videos = {name: Path(r["video"]).read_bytes() for name, r in
              {"base": base, "zero": zero, "full": full, "scaled": scaled}.items()}
    assert videos["zero"] == videos["base"]
    assert videos["full"] != videos["base"] and videos["scaled"] != videos["full"]
    sidecar = json.loads(Path(scaled["sidecar"]).read_text())
    from opensora_cli.services.outputs import file_sha256

    assert sidecar["lora"] == [{"path": str(checkpoint.resolve()), "scale": 3.0,
                                "sha256": file_sha256(checkpoint / "adapter_model.safetensors")}]
    assert json.loads(Path(base["sidecar"]).read_text())["lora"] is None
    # a rerun with the adapter skips; one with another scale is refused, naming the field
    assert _sample(cli, lines, model_dir, "full", "--lora", checkpoint)["skipped"]
    other = cli("sample", "-p", lines / "p.txt", "-c", lines / "c.txt", "--model", model_dir, "-n", "9",
                "--crop-for-hw", "--height", "64", "--width", "96", "--steps", "3", "-o", lines / "full", "--lora",
                f"{checkpoint}:0.5")
    assert other.code == 1 and "lora" in other.out + other.err, other.out + other.err
    print(other.out)


def test_two_adapters_at_once_add_up(cli, lines, model_dir, trained, tmp_path):
    """Two adapters with scales a and b: the same video as one adapter at a + b when they are the same one."""
    checkpoint = trained / "checkpoint-3"
    copy = tmp_path / "copy"
    shutil.copytree(checkpoint, copy)
    both = _sample(cli, lines, model_dir, "both", "--lora", f"{checkpoint}:0.5", "--lora", f"{copy}:0.5")
    one = _sample(cli, lines, model_dir, "one", "--lora", f"{checkpoint}:1")
    from opensora_cli.services.evaluation import psnr, read_frames

    assert psnr(read_frames(Path(both["video"]), 9), read_frames(Path(one["video"]), 9)) > 40


def test_merge_makes_the_adapters_video(cli, lines, model_dir, trained, tmp_path):
    checkpoint = trained / "checkpoint-3"
    merged = tmp_path / "merged"
    result = cli("lora", "merge", "--model", model_dir, "--lora", f"{checkpoint}:0.7", "--output-dir", merged)
    assert result.code == 0, result.err
    assert sorted(load_file(merged / "transformer" / "diffusion_pytorch_model.safetensors")) == sorted(
        load_file(model_dir / "transformer" / "diffusion_pytorch_model.safetensors"))
    with_adapter = _sample(cli, lines, model_dir, "adapter", "--lora", f"{checkpoint}:0.7")
    from_merged = _sample(cli, lines, merged, "merged")
    from opensora_cli.services.evaluation import psnr, read_frames

    assert psnr(read_frames(Path(with_adapter["video"]), 9), read_frames(Path(from_merged["video"]), 9)) > 40
    # an fp32 base merges unrounded: the fused weights are the ones `--lora` computes after loading
    assert Path(with_adapter["video"]).read_bytes() == Path(from_merged["video"]).read_bytes()
    again = cli("lora", "merge", "--model", model_dir, "--lora", checkpoint, "--output-dir", merged)
    assert again.code == 1 and "--overwrite" in again.err


def test_merge_dtype_rounds_the_fused_weights_or_refuses_an_unknown_one(cli, model_dir, trained, tmp_path):
    from safetensors import safe_open

    checkpoint = trained / "checkpoint-3"
    half = cli("lora", "merge", "--model", model_dir, "--lora", checkpoint, "-o", tmp_path / "half", "--dtype",
               "fp16", "--json")
    assert half.code == 0, half.err
    assert json.loads(half.out)["dtype"] == "float16" and "float32" not in half.err  # no diffusers cast warning
    with safe_open(str(tmp_path / "half" / "transformer" / "diffusion_pytorch_model.safetensors"), "pt") as f:
        assert {f.get_slice(key).get_dtype() for key in f.keys()} == {"F16"}  # noqa: SIM118
    bad = cli("lora", "merge", "--model", model_dir, "--lora", checkpoint, "-o", tmp_path / "bad", "--dtype", "fp8")
    assert bad.code == 1 and "--dtype" in bad.err and "fp32" in bad.err and "Traceback" not in bad.err, bad.err
    assert not (tmp_path / "bad").exists()


def test_an_adapter_for_another_base_is_refused_before_loading(cli, lines, model_dir, trained, tmp_path, monkeypatch):
    from opensora_cli.models.registry import write_random_model_folder

    other_weights = tmp_path / "other"
    write_random_model_folder(other_weights, seed=5)  # same architecture, other weights
    other_size = tmp_path / "small"
    write_random_model_folder(other_size, transformer="OpenSoraInpaint_v1_3-medium", seed=2)
    from opensora_cli.models import loading

    loads = []
    real = loading.load_pretrained
    monkeypatch.setattr(loading, "load_pretrained", lambda *a, **k: loads.append(a) or real(*a, **k))
    checkpoint = trained / "checkpoint-3"
    for model, message in ((other_weights, "other weights"), (other_size, "another architecture")):
        result = cli("sample", "-p", lines / "p.txt", "-c", lines / "c.txt", "--model", model, "-n", "9",
                     "--crop-for-hw", "--height", "64", "--width", "96", "--steps", "2", "-o", tmp_path / "s",
                     "--lora", checkpoint)
        said = result.out + result.err  # (the problems table goes to stdout)
        assert result.code == 1 and message in said and "Traceback" not in said, said
        assert f"({model_dir.resolve() / 'transformer'})" in said  # the base it was made for
    assert not loads
    for value, message in (("/nowhere", "no adapter_config.json"), (f"{checkpoint}:inf", "scale"),
                           (f"{checkpoint}:1000", f"--lora: '{checkpoint}:1000': the scale must be a number"),
                           (f"{checkpoint}:half", f"'half' is not a scale — write the scale as a number, e.g. "
                                                  f"{checkpoint}:0.8"),
                           (f"{checkpoint}:smile:", "no adapter_config.json")):  # ":smile:" stays text
        result = cli("sample", "-p", lines / "p.txt", "-c", lines / "c.txt", "--model", model_dir, "--lora", value,
                     "-o", tmp_path / "s")
        said = result.out + result.err
        assert result.code in (1, 2) and message in said and "Traceback" not in said, said
        assert len(said.strip().splitlines()) <= 2 and value in said, said
    alone = cli("sample", "-p", lines / "p.txt", "-c", lines / "c.txt", "--model", model_dir, "--lora-scale", "0.5",
                "-o", tmp_path / "s")
    assert alone.code == 2 and "--lora-scale 0.5" in alone.err and "add --lora DIR" in alone.err, alone.err


@pytest.mark.parametrize("extra, message", [
    (["--lora-alpha", "8"], "add --lora-rank"),
    (["--lora-rank", "0"], "--lora-rank"),
    (["--lora-rank", "4", "--lora-targets", "mlp"], "--lora-targets"),
    (["--lora-rank", "4", "--train-modules", "inpain"], "did you mean 'inpaint'"),
    (["--lora-rank", "4", "--lora-dropout", "1.5"], "--lora-dropout"),
])
def test_bad_lora_options_stop_before_loading(cli, data_file, model_dir, tmp_path, extra, message):
    result = cli(*train_args(data_file, model_dir, tmp_path / "out", *extra))
    assert result.code == 1 and message in result.err + result.out, result.err + result.out
    assert "Traceback" not in result.err and not (tmp_path / "out").exists()


def test_diffusers_and_peft_load_the_adapter(trained, model_dir):
    """The layout is peft's: PeftModel.from_pretrained and diffusers' load_lora_adapter give our model."""
    from peft import PeftModel

    from opensora_cli.models.loading import load_pretrained
    from opensora_cli.models.lora import fuse_adapters, load_adapters
    from opensora_cli.models.transformer_opensora import OpenSoraInpaint_v1_3

    checkpoint = trained / "checkpoint-3"
    ours = load_pretrained(OpenSoraInpaint_v1_3, model_dir / "transformer")
    torch.manual_seed(0)
    x = torch.randn(1, ours.input_channels, 3, 8, 12)
    kwargs = {"encoder_hidden_states": torch.randn(1, 1, 6, ours.config.caption_channels),
              "encoder_attention_mask": torch.ones(1, 1, 6), "return_dict": False}

    def run(model):
        with torch.no_grad():
            return model(x, torch.tensor([500]), **kwargs)[0]

    base = run(ours)
    load_adapters(ours, [(checkpoint, 1.0)])
    expected = run(ours)
    assert not torch.allclose(expected, base)
    fuse_adapters(ours)
    torch.testing.assert_close(run(ours), expected, atol=1e-5, rtol=1e-4)
    peft = PeftModel.from_pretrained(load_pretrained(OpenSoraInpaint_v1_3, model_dir / "transformer"), checkpoint)
    torch.testing.assert_close(run(peft.base_model.model), expected)
    plain = load_pretrained(OpenSoraInpaint_v1_3, model_dir / "transformer")
    plain.load_lora_adapter(str(checkpoint), weight_name="adapter_model.safetensors", prefix="base_model.model")
    torch.testing.assert_close(run(plain), expected)


@pytest.mark.slow
def test_two_processes_train_a_lora(data_file, model_dir, tmp_path):
    from .test_train import final_json, run

    proc = run(lora_args(data_file, model_dir, tmp_path / "out", "--max-train-steps", "2", "--nproc", "2",
                         "--checkpointing-steps", "2"))
    assert proc.returncode == 0, proc.stderr
    assert final_json(proc)["steps"] == 2
    state = json.loads((tmp_path / "out" / "checkpoint-2" / "trainer_state.json").read_text())
    assert state["world_size"] == 2 and (tmp_path / "out" / "checkpoint-2" / "adapter_model.safetensors").is_file()


def test_training_that_cannot_fit_is_refused_before_loading_and_lora_is_suggested(cli, data_file, model_dir,
                                                                                  tmp_path, monkeypatch):
    """Fully fine-tuning the released 2.78 B transformer keeps about 41 GiB of weights, gradients and AdamW state:
    more than this machine's memory (made 16 GiB here, whatever the machine), so it is refused with the way out."""
    from opensora_cli.services.training import _meta_transformer, training_memory
    from opensora_cli.schemas.train import TrainConfig
    from opensora_cli.utils import system

    monkeypatch.setattr(system, "available_host_memory", lambda: 16 * 2**30)
    args = train_args(data_file, model_dir, tmp_path / "out", "--device", "cpu")
    args[args.index("--model") + 1] = "OpenSoraInpaint_v1_3-2B/122"
    result = cli(*args)
    said = result.out + result.err
    assert result.code == 1 and "GiB for the weights, gradients and AdamW state" in said and "--lora-rank" in said
    assert "Traceback" not in said and not (tmp_path / "out").exists()
    full = TrainConfig(data=data_file, device="cuda")
    lora = TrainConfig(data=data_file, device="cuda", lora_rank=16)
    model = _meta_transformer(full, {})
    assert training_memory(full, model)[0] > 40 * 2**30 > 6 * 2**30 > training_memory(lora, model)[0]
    assert training_memory(lora, model)[1] == 32 * 8 * 16 * (2304 + 2304)  # 32 blocks, 8 projections, r (in + out)
