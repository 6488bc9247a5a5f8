"""`opensora sample` end to end with a tiny random model folder in the released layout."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from opensora_cli.models.registry import write_random_model_folder

from .helpers import write_image, write_video

FAST = ["--steps", "3", "--num-frames", "9", "--crop-for-hw", "--height", "64", "--width", "96", "--fps", "8"]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("model")
    write_random_model_folder(root, seed=1)
    return root


@pytest.fixture
def inputs(tmp_path):
    write_image(tmp_path / "a.png", 72, 100, color=(220, 40, 40))
    write_image(tmp_path / "b.png", 80, 110, color=(40, 40, 220))
    write_image(tmp_path / "c.png", 64, 96, color=(40, 200, 40))
    write_video(tmp_path / "clip.mp4", 12, 64, 96)
    return tmp_path


def decode(path) -> np.ndarray:
    import decord

    return decord.VideoReader(str(path)).get_batch(list(range(9))).asnumpy()


def run_lines(cli, tmp_path, model_dir, lines, *extra, out="out"):
    prompts = tmp_path / "p.txt"
    conds = tmp_path / "c.txt"
    prompts.write_text("".join(f"prompt {i}: a coloured square\n" for i in range(len(lines))))
    conds.write_text("".join(line + "\n" for line in lines))
    return cli("sample", "--prompts", prompts, "--conds", conds, "--model", model_dir, "--output-dir",
               tmp_path / out, "--json", *FAST, *extra)


@pytest.mark.parametrize(
    ("line", "mask_type", "kept"),
    [
        ("", "t2iv", []),
        ("a.png", "i2v", [0]),
        ("a.png,b.png", "transition", [0, 8]),
        ("clip.mp4", "continuation", [0, 1, 2, 3, 4]),
        ("clip.mp4 --mask-type clear", "clear", list(range(9))),
        ("a.png@0,b.png@4,c.png@-1", "random_temporal", [0, 4, 8]),
    ],
)
def test_every_mask_type_end_to_end(cli, inputs, model_dir, line, mask_type, kept):
    line, _, flag = line.partition(" --mask-type ")
    extra = ["--mask-type", flag] if flag else []
    result = run_lines(cli, inputs, model_dir, [line], *extra)
    assert result.code == 0, result.err + result.out
    summary = json.loads(result.out)
    (output,) = summary["results"]
    assert output["mask_type"] == mask_type and output["kept_frames"] == kept
    frames = decode(output["video"])
    assert frames.shape == (9, 64, 96, 3)
    sidecar = json.loads(open(output["sidecar"]).read())
    assert sidecar["mask_type"] == mask_type and sidecar["seed"] == output["seed"]
    assert sidecar["steps"] == 3 and sidecar["num_frames"] == 9
    assert all(len(c["sha256"]) == 64 for c in sidecar["conds"])


def test_same_seed_same_video_and_rerun_skips(cli, inputs, model_dir):
    first = json.loads(run_lines(cli, inputs, model_dir, ["a.png"], out="one").out)["results"][0]
    again = json.loads(run_lines(cli, inputs, model_dir, ["a.png"], out="one").out)["results"][0]
    assert again["skipped"] is True
    redo = json.loads(run_lines(cli, inputs, model_dir, ["a.png"], "--overwrite", out="one").out)["results"][0]
    assert redo["skipped"] is False and redo["seed"] == first["seed"]
    other = json.loads(run_lines(cli, inputs, model_dir, ["a.png"], "--seed", "7", out="two").out)["results"][0]
    assert first["seed"] != other["seed"]
    assert not list((inputs / "one").glob(".*part*"))


def test_pipeline_is_deterministic_and_seed_sensitive(model_dir, inputs):
    from opensora_cli.models.autoencoder_wfvae import WFVAEModel
    from opensora_cli.models.loading import load_pretrained
    from opensora_cli.models.text_encoder import TextEncoder
    from opensora_cli.models.transformer_opensora import OpenSoraInpaint_v1_3
    from opensora_cli.pipelines.pipeline_inpaint import OpenSoraInpaintPipeline
    from opensora_cli.pipelines.schedulers import make_scheduler

    pipe = OpenSoraInpaintPipeline(
        TextEncoder.from_pretrained(model_dir / "text_encoder", max_length=32),
        load_pretrained(WFVAEModel, model_dir / "vae"),
        load_pretrained(OpenSoraInpaint_v1_3, model_dir / "transformer"),
        make_scheduler("EulerAncestralDiscrete"),
    )
    args = dict(conditions=[str(inputs / "a.png")], num_frames=9, height=64, width=96, crop_for_hw=True,
                num_inference_steps=3)
    a = pipe("a red square", generator=torch.Generator().manual_seed(0), **args)
    b = pipe("a red square", generator=torch.Generator().manual_seed(0), **args)
    c = pipe("a red square", generator=torch.Generator().manual_seed(1), **args)
    assert a.videos.shape == (1, 9, 64, 96, 3) and a.videos.dtype == np.uint8
    assert np.array_equal(a.videos, b.videos) and not np.array_equal(a.videos, c.videos)
    assert a.mask_type == "i2v" and a.kept_frames == [0]
    pipe.enable_model_cpu_offload(device="cpu")  # the phase placement path (on a GPU it moves models back and forth)
    offloaded = pipe("a red square", generator=torch.Generator().manual_seed(0), **args)
    assert np.array_equal(a.videos, offloaded.videos)
    assert all(p.device.type == "cpu" for p in pipe.transformer.parameters())
    no_cfg = pipe("a red square", generator=torch.Generator().manual_seed(0), guidance_scale=1.0, **args)
    assert no_cfg.videos.shape == a.videos.shape
    with pytest.raises(ValueError, match="transition"):
        pipe("x", conditions=[str(inputs / "a.png")], mask_type="transition", num_frames=9, height=64, width=96,
             crop_for_hw=True, num_inference_steps=1)


def test_bad_inputs_stop_before_any_model_is_loaded(cli, inputs, tmp_path):
    broken = tmp_path / "broken-model"
    for kind in ("transformer", "vae", "text_encoder"):
        (broken / kind).mkdir(parents=True)
        (broken / kind / "config.json").write_text("{}")  # loading any of these would fail loudly
    result = run_lines(cli, inputs, broken, ["missing.png"])
    assert result.code == 1
    assert "file not found: 'missing.png'" in result.out + result.err
    assert not (inputs / "out").exists()


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--sampler", "Eulr"], "did you mean"),
        (["--sampler", "FlowMatchEulerDiscrete"], "flow"),
        (["--sp"], "sequence parallel needs several processes"),
        (["--dtype", "fp64"], "is not a dtype"),
        (["--noise-strength", "2"], "--noise-strength"),
    ],
)
def test_bad_options_are_reported_before_loading(cli, inputs, model_dir, extra, message):
    result = run_lines(cli, inputs, model_dir, ["a.png"], *extra)
    assert result.code == 1 and message in (result.out + result.err)


def test_a_refusal_with_json_is_the_validation_report_on_stdout(cli, inputs, model_dir):
    import json

    result = run_lines(cli, inputs, model_dir, ["a.png"], "--dtype", "fp64", "--json")
    report = json.loads(result.out)
    assert result.code == 1 and report["ok"] is False
    assert report["problems"][0]["file"] == "--dtype"
    assert report["problems"][0]["message"].startswith("'fp64' is not a dtype")  # the value named once
    assert "no model was loaded" in result.err


def test_without_model_and_without_a_bundled_model_the_refusal_names_model(cli, inputs, monkeypatch):
    # an install without the demo model (e.g. a wheel built without package data)
    monkeypatch.setattr("opensora_cli.services.model_folders.bundled_model_dir", lambda: None)
    prompts = inputs / "p.txt"
    prompts.write_text("x\n")
    (inputs / "c.txt").write_text("a.png\n")
    result = cli("sample", "--prompts", prompts, "--conds", inputs / "c.txt")
    assert result.code == 1 and "--model" in result.out and "bundled demo model" in result.out


def test_model_defaults_fill_only_what_the_user_left_out(cli, inputs, model_dir, tmp_path):
    """A bundle's opensora_defaults.json sets frames, size, steps, template and negative prompt; flags win."""
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    for part in ("transformer", "vae", "text_encoder"):
        (bundle / part).symlink_to(model_dir / part)
    (bundle / "opensora_defaults.json").write_text(json.dumps(
        {"num_frames": 5, "height": 64, "width": 96, "crop_for_hw": True, "steps": 2, "fps": 8,
         "guidance_scale": 3.0, "negative_prompt": "", "prompt_template": False}))
    (inputs / "p.txt").write_text("a red square\n")
    (inputs / "c.txt").write_text("a.png\n")
    result = cli("sample", "--prompts", inputs / "p.txt", "--conds", inputs / "c.txt", "--model", bundle,
                 "--output-dir", tmp_path / "out", "--json")
    assert result.code == 0, result.err
    sidecar = json.loads(open(json.loads(result.out)["results"][0]["sidecar"]).read())
    assert (sidecar["num_frames"], sidecar["height"], sidecar["width"], sidecar["steps"]) == (5, 64, 96, 2)
    assert (sidecar["negative_prompt"], sidecar["prompt_template"], sidecar["guidance_scale"]) == ("", False, 3.0)
    result = cli("sample", "--prompts", inputs / "p.txt", "--conds", inputs / "c.txt", "--model", bundle,
                 "--output-dir", tmp_path / "out2", "--json", "--steps", "1", "--prompt-template",
                 "--negative-prompt", "blurry")
    sidecar = json.loads(open(json.loads(result.out)["results"][0]["sidecar"]).read())
    assert (sidecar["steps"], sidecar["prompt_template"], sidecar["negative_prompt"]) == (1, True, "blurry")


@pytest.mark.slow
def test_two_process_ddp_equals_single_process(installed_cli, inputs, model_dir):
    lines = ["a.png", "a.png,b.png", "clip.mp4"]
    (inputs / "p.txt").write_text("".join(f"prompt {i}\n" for i in range(len(lines))))
    (inputs / "c.txt").write_text("\n".join(lines) + "\n")
    base = ["sample", "--prompts", "p.txt", "--conds", "c.txt", "--model", model_dir, "--json", *FAST]
    # One thread per process in both runs: BLAS results depend on the thread count, not on the process count.
    single = installed_cli(*base, "--output-dir", "single", cwd=inputs, timeout=300, env={"OMP_NUM_THREADS": "1"})
    assert single.code == 0, single.err
    ddp = installed_cli(*base, "--output-dir", "ddp", "--nproc", "2", cwd=inputs, timeout=300,
                        env={"OMP_NUM_THREADS": "1"})
    assert ddp.code == 0, ddp.err
    summary = json.loads(ddp.out.strip().splitlines()[-1])
    assert summary["mode"] == "ddp" and {r["rank"] for r in summary["results"]} == {0, 1}
    for one in json.loads(single.out)["results"]:
        video = inputs / "ddp" / one["video"].rsplit("/", 1)[-1]
        assert np.array_equal(decode(one["video"]), decode(video)), video


@pytest.mark.slow
def test_two_process_sequence_parallel_matches_single_process(installed_cli, inputs, model_dir):
    # 13 frames -> 4 latent frames: divisible by 2 processes
    args = ["sample", "--prompts", "p.txt", "--conds", "c.txt", "--model", model_dir, "--json", "--steps", "3",
            "--num-frames", "13", "--crop-for-hw", "--height", "64", "--width", "96"]
    (inputs / "p.txt").write_text("prompt\n")
    (inputs / "c.txt").write_text("a.png\n")
    one_thread = {"OMP_NUM_THREADS": "1"}
    single = installed_cli(*args, "--output-dir", "single", cwd=inputs, timeout=300, env=one_thread)
    sp = installed_cli(*args, "--output-dir", "sp", "--nproc", "2", "--sp", cwd=inputs, timeout=300, env=one_thread)
    assert single.code == 0 and sp.code == 0, sp.err
    import decord

    a = decord.VideoReader(json.loads(single.out)["results"][0]["video"]).get_batch(list(range(13))).asnumpy()
    sp_video = json.loads(sp.out.strip().splitlines()[-1])["results"][0]["video"]
    b = decord.VideoReader(sp_video).get_batch(list(range(13))).asnumpy()
    diff = np.abs(a.astype(int) - b.astype(int))
    # Attention over the gathered sequence sums in another order than one process does, so a few pixels may
    # round the other way; H.264 then spreads such a pixel over its block.
    assert diff.mean() < 0.05 and diff.max() <= 16


def test_replace_kept_latents_is_part_of_the_request_and_changes_the_kept_frame(cli, tmp_path):
    from pathlib import Path

    from opensora_cli.data.media import read_video

    demo = Path(__file__).resolve().parents[1] / "examples" / "demo"
    (tmp_path / "p.txt").write_text("a yellow triangle moves to the right\n")
    (tmp_path / "c.txt").write_text(f"{demo / 'i2v.png'}\n")
    args = ["sample", "--prompts", tmp_path / "p.txt", "--conds", tmp_path / "c.txt", "--steps", "3", "--json",
            "-o", tmp_path / "out"]
    off = cli(*args)
    assert off.code == 0, off.err
    (result,) = json.loads(off.out)["results"]
    assert json.loads(Path(result["sidecar"]).read_text())["replace_kept_latents"] is None
    before = read_video(result["video"], 1)
    refused = cli(*args, "--replace-kept-latents")
    assert refused.code == 1 and "replace_kept_latents null -> true" in refused.out
    on = cli(*args, "--replace-kept-latents", "--overwrite")
    assert on.code == 0, on.err
    (result,) = json.loads(on.out)["results"]
    assert json.loads(Path(result["sidecar"]).read_text())["replace_kept_latents"] is True
    assert not np.array_equal(read_video(result["video"], 1), before)
