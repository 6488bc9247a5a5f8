"""`opensora train` on a CPU with a tiny model and synthetic videos made here."""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import subprocess
import time

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from .helpers import opensora_executable, train_args


def run(args, env=None, timeout=300):
    proc = subprocess.run([opensora_executable(), *map(str, args)], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})})
    return proc


def final_json(proc) -> dict:
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_loss_falls(cli, data_file, model_dir, tmp_path):
    """Training loss is too noisy to compare step by step (it depends on the random timestep), so the model is
    evaluated before and after on the same batches with the same timesteps and noise."""
    from opensora_cli.data.dataset import VideoTextDataset, collate
    from opensora_cli.masks.compressor import MaskCompressor
    from opensora_cli.models.autoencoder_wfvae import WFVAEModel
    from opensora_cli.models.loading import load_pretrained
    from opensora_cli.models.text_encoder import TextEncoder
    from opensora_cli.models.transformer_opensora import OpenSoraInpaint_v1_3
    from opensora_cli.pipelines.schedulers import make_scheduler
    from opensora_cli.schemas.train import TrainConfig
    from opensora_cli.training.loop import Frozen, _loss, build_transformer, step_generator

    args = train_args(data_file, model_dir, tmp_path / "out", "--max-train-steps", "60", "--learning-rate", "1e-3",
                      "--checkpointing-steps", "60")
    result = cli(*args)
    assert result.code == 0, result.err
    assert all(np.isfinite(json.loads(result.out.strip().splitlines()[-1])["losses"]))

    config = TrainConfig(data=data_file, model="OpenSoraInpaint_v1_3-tiny", num_frames=9, max_hxw=6144,
                         min_hxw=1024, hw_stride=16, train_fps=8, seed=3)
    initial, _ = build_transformer(config, {})
    trained = load_pretrained(OpenSoraInpaint_v1_3, tmp_path / "out" / "checkpoint-60" / "transformer")
    vae = load_pretrained(WFVAEModel, model_dir / "vae")
    text_encoder = TextEncoder.from_pretrained(model_dir / "text_encoder")
    dataset = VideoTextDataset(data_file, num_frames=9, max_hxw=6144, min_hxw=1024, hw_stride=16, train_fps=8, seed=3)
    frozen = Frozen(vae, text_encoder, MaskCompressor(), make_scheduler("DDPM"), torch.float32, torch.device("cpu"))
    batches = [collate([dataset[(9, 2 * i)], dataset[(9, 2 * i + 1)]]) for i in range(4)]

    def evaluate(model) -> float:
        with torch.no_grad():
            return float(np.mean([
                _loss(model, frozen, batch, config, step_generator(0, i, r, 0, torch.device("cpu"))).item()
                for i, batch in enumerate(batches) for r in range(4)
            ]))

    before, after = evaluate(initial), evaluate(trained)
    print(f"evaluation loss before {before:.4f}, after 60 steps {after:.4f}")
    assert after < 0.8 * before, (before, after)


def test_checkpoint_is_a_model_bundle_that_sample_loads(cli, data_file, model_dir, tmp_path):
    out = tmp_path / "out"
    result = cli(*train_args(data_file, model_dir, out, "--max-train-steps", "3", "--checkpointing-steps", "2",
                             "--use-ema"))
    assert result.code == 0, result.err
    assert sorted(p.name for p in out.iterdir() if p.name.startswith("checkpoint")) == ["checkpoint-2",
                                                                                          "checkpoint-3"]
    ckpt = out / "checkpoint-3"
    assert (ckpt / "transformer" / "config.json").is_file() and (ckpt / "vae").is_symlink()
    ema = load_file(ckpt / "transformer" / "diffusion_pytorch_model.safetensors")
    raw = load_file(ckpt / "state" / "training_weights.safetensors")
    assert not torch.equal(ema["proj_out.weight"], raw["proj_out.weight"])  # EMA weights are what sampling gets

    (tmp_path / "p.txt").write_text("a red square moves left\n")
    (tmp_path / "c.txt").write_text("\n")
    sample = cli("sample", "--prompts", tmp_path / "p.txt", "--conds", tmp_path / "c.txt", "--model", ckpt,
                 "--num-frames", "9", "--height", "64", "--width", "96", "--steps", "2", "--output-dir",
                 tmp_path / "samples", "--json")
    assert sample.code == 0, sample.err + sample.out
    assert json.loads(sample.out)["results"][0]["mask_type"] == "t2iv"


@pytest.mark.slow
def test_kill_and_resume_gives_the_same_weights(data_file, model_dir, tmp_path):
    common = ["--checkpointing-steps", "2", "--use-ema"]
    straight = run(train_args(data_file, model_dir, tmp_path / "straight", "--max-train-steps", "8", *common))
    assert straight.returncode == 0, straight.stderr

    killed_dir = tmp_path / "killed"
    args = train_args(data_file, model_dir, killed_dir, "--max-train-steps", "1000", *common)
    proc = subprocess.Popen([opensora_executable(), *map(str, args)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env={**os.environ, "OMP_NUM_THREADS": "1"})
    deadline = time.time() + 240
    while not (killed_dir / "checkpoint-4").exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert (killed_dir / "checkpoint-4").exists()

    resumed = run(train_args(data_file, model_dir, killed_dir, "--max-train-steps", "8",
                             "--resume-from-checkpoint", "latest", *common))
    assert resumed.returncode == 0, resumed.stderr
    assert final_json(resumed)["first_step"] >= 4
    for name in ("state/training_weights.safetensors", "state/ema.safetensors",
                 "transformer/diffusion_pytorch_model.safetensors", "state/optimizer.safetensors"):
        a = load_file(tmp_path / "straight" / "checkpoint-8" / name)
        b = load_file(killed_dir / "checkpoint-8" / name)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name


@pytest.mark.parametrize("schedule, expected", [
    ("constant", 2 / 3 * 1e-3),  # diffusers' ramp: the LR of step s + 1 is s / warmup of the full rate
    ("cosine", 0.5 * (1 + math.cos(math.pi / 3)) * 1e-3),  # past a 1-step warm-up, (2 - 1) / (4 - 1) of a half cosine
    ("linear", 2 / 3 * 1e-3),  # 1 - (2 - 1) / (4 - 1)
])
def test_resuming_continues_the_same_learning_rate_curve(cli, data_file, model_dir, tmp_path, schedule, expected):
    """The LR schedule is rebuilt at the step reached, not read back: an off-by-one would show in the weights.
    A constant rate may be resumed with a longer --max-train-steps; a decay is resumed as a killed run is (the
    same length), here the straight run's folder without its last checkpoint."""
    warmup = "3" if schedule == "constant" else "1"
    common = ["--lr-warmup-steps", warmup, "--learning-rate", "1e-3", "--checkpointing-steps", "2", "--use-ema",
              "--lr-scheduler", schedule]
    straight = cli(*train_args(data_file, model_dir, tmp_path / "straight", "--max-train-steps", "4", *common))
    assert straight.code == 0, straight.err
    if schedule == "constant":
        first = cli(*train_args(data_file, model_dir, tmp_path / "cut", "--max-train-steps", "2", *common))
        assert first.code == 0, first.err
    else:
        shutil.copytree(tmp_path / "straight", tmp_path / "cut", symlinks=True)
        shutil.rmtree(tmp_path / "cut" / "checkpoint-4")
    resumed = cli(*train_args(data_file, model_dir, tmp_path / "cut", "--max-train-steps", "4",
                              "--resume-from-checkpoint", "latest", *common))
    assert resumed.code == 0, resumed.err
    assert "other options" not in resumed.err
    at_2 = json.loads((tmp_path / "cut" / "checkpoint-2" / "state" / "scheduler.json").read_text())
    assert at_2["_last_lr"] == [pytest.approx(expected)]
    for name in ("state/training_weights.safetensors", "state/ema.safetensors", "state/optimizer.safetensors"):
        a = load_file(tmp_path / "straight" / "checkpoint-4" / name)
        b = load_file(tmp_path / "cut" / "checkpoint-4" / name)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name


def test_a_decaying_rate_resumed_with_another_length_is_warned_about(cli, data_file, model_dir, tmp_path):
    common = ["--learning-rate", "1e-3", "--checkpointing-steps", "2", "--lr-scheduler", "cosine"]
    first = cli(*train_args(data_file, model_dir, tmp_path / "out", "--max-train-steps", "2", *common))
    resumed = cli(*train_args(data_file, model_dir, tmp_path / "out", "--max-train-steps", "3",
                              "--resume-from-checkpoint", "latest", *common))
    assert first.code == resumed.code == 0, first.err + resumed.err
    assert "max_train_steps 2 -> 3" in resumed.err


@pytest.mark.slow
def test_two_processes(data_file, model_dir, tmp_path):
    proc = run(train_args(data_file, model_dir, tmp_path / "out", "--max-train-steps", "3", "--nproc", "2",
                          "--checkpointing-steps", "3"))
    assert proc.returncode == 0, proc.stderr
    result = final_json(proc)
    assert result["steps"] == 3 and result["last_checkpoint"].endswith("checkpoint-3")
    state = json.loads((tmp_path / "out" / "checkpoint-3" / "trainer_state.json").read_text())
    assert state["world_size"] == 2


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(cli, data_file, model_dir, tmp_path):
    out = tmp_path / "out"
    first = cli(*train_args(data_file, model_dir, out, "--max-train-steps", "2", "--checkpointing-steps", "2"))
    assert first.code == 0
    blown = cli(*train_args(data_file, model_dir, out, "--max-train-steps", "60", "--learning-rate", "1e30",
                            "--resume-from-checkpoint", "latest", "--checkpointing-steps", "100"))
    assert blown.code == 1 and "the loss became" in blown.err and "checkpoint-2" in blown.err
    assert [p.name for p in out.iterdir() if p.name.startswith("checkpoint")] == ["checkpoint-2"]


def test_bad_records_and_files_are_reported_not_fatal(cli, data_file, model_dir, tmp_path):
    import shutil

    root = tmp_path / "data"
    shutil.copytree(data_file.parent, root)
    records = json.loads((root / "anno.json").read_text())
    (root / "videos" / "broken.mp4").write_bytes(b"not a video")
    records += [
        {"path": "videos/broken.mp4", "cap": "x", "num_frames": 21, "fps": 8, "resolution": {"height": 64, "width": 96}},
        {"path": "videos/clip0.mp4", "num_frames": 21, "fps": 8, "resolution": {"height": 64, "width": 96}},
    ]
    (root / "anno.json").write_text(json.dumps(records))
    (root / "data.txt").write_text(f"{root},{root / 'anno.json'}\n")
    result = cli(*train_args(root / "data.txt", model_dir, tmp_path / "out", "--max-train-steps", "12",
                             "--checkpointing-steps", "12"))
    assert result.code == 0, result.err
    assert "clip0.mp4" in result.err  # the record without a caption is reported with its path


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--num-frames", "10"], "10 is not 1 + 4k"),
        (["--model", "OpenSoraInpaint_v1_3-tinny"], "did you mean 'OpenSoraInpaint_v1_3-tiny'"),
        (["--mask-config", "nope.yaml"], "mask config file not found"),
        (["--deepspeed", "zero3"], "--deepspeed"),
    ],
)
def test_bad_options_stop_before_loading(cli, data_file, model_dir, tmp_path, extra, message):
    result = cli(*train_args(data_file, model_dir, tmp_path / "out", *extra))
    assert result.code in (1, 2) and message in result.out + result.err, result.out + result.err
    assert not (tmp_path / "out").exists()


def test_config_file_with_overrides_and_unknown_keys(cli, data_file, model_dir, tmp_path):
    config = tmp_path / "train.yaml"
    config.write_text("learning_rate: 1e-4\nmax_trian_steps: 3\n")
    result = cli(*train_args(data_file, model_dir, tmp_path / "out"), "--config", config)
    assert result.code == 1 and "train.yaml:2: unknown key 'max_trian_steps'" in result.out
    assert "did you mean 'max_train_steps'" in result.out
    config.write_text("learning_rate: 1e-4\nmax_train_steps: 3\ncheckpointing_steps: 1\n")
    result = cli(*train_args(data_file, model_dir, tmp_path / "out", "--max-train-steps", "2"), "--config", config)
    assert result.code == 0, result.err
    assert json.loads(result.out.strip().splitlines()[-1])["steps"] == 2  # the flag wins over the file


def test_init_from_text_to_video_weights_starts_as_the_t2v_model(tmp_path):
    from opensora_cli.models.loading import init_from_pretrained
    from opensora_cli.models.registry import build, randomise_weights_

    t2v = build("OpenSoraT2V_v1_3-tiny")
    randomise_weights_(t2v, torch.Generator().manual_seed(0))
    t2v.save_pretrained(tmp_path / "t2v")
    inpaint = build("OpenSoraInpaint_v1_3-tiny")
    note = init_from_pretrained(inpaint, tmp_path / "t2v")
    assert "masked-latent branch copied" in note
    generator = torch.Generator().manual_seed(1)
    noisy = torch.randn(1, 8, 3, 8, 12, generator=generator)
    condition = torch.randn(1, 12, 3, 8, 12, generator=generator)
    text = torch.randn(1, 1, 5, 32, generator=generator)
    t = torch.tensor([500.0])
    with torch.no_grad():
        a = t2v(noisy, t, text, return_dict=False)[0]
        b = inpaint(torch.cat([noisy, condition], dim=1), t, text, return_dict=False)[0]
    assert torch.allclose(a, b, atol=1e-6)
    assert torch.equal(inpaint.pos_embed_masked_hidden_states[0].proj.weight, t2v.pos_embed.proj.weight)


def test_training_noise_schedule_is_the_sampling_schedule():
    from opensora_cli.pipelines.schedulers import make_scheduler

    train = make_scheduler("DDPM").alphas_cumprod
    sample = make_scheduler("EulerAncestralDiscrete").alphas_cumprod
    assert torch.allclose(train[:-1], sample[:-1]) and train[-1] < 1e-6


def test_a_fine_tune_samples_as_its_base_did(cli, data_file, tmp_path):
    """A checkpoint keeps its base bundle's sampling defaults (the demo model's plain prompts, steps, CFG): a
    fine-tune of the demo model sampled with the released model's prompt template followed 49 % of directions."""
    from opensora_cli.models.registry import write_random_model_folder

    from .helpers import train_args

    base = tmp_path / "base"
    write_random_model_folder(base, seed=2)
    own = {"prompt_template": False, "negative_prompt": "", "steps": 7, "guidance_scale": 3.0, "num_frames": 17,
           "height": 64, "width": 96, "crop_for_hw": True}
    (base / "opensora_defaults.json").write_text(json.dumps(own))
    args = train_args(data_file, base, tmp_path / "out", "--max-train-steps", "1", "--checkpointing-steps", "1")
    args[args.index("--model") + 1] = base
    result = cli(*args)
    assert result.code == 0, result.err
    written = json.loads((tmp_path / "out" / "checkpoint-1" / "opensora_defaults.json").read_text())
    assert written == {**own, "num_frames": 9, "max_hxw": 6144, "max_hxw_range": [1024, 6144]}


def test_timestep_sampling_uniform_is_the_draw_runs_always_made_and_logit_normal_leans_to_noise():
    """"uniform" must stay the exact draw of earlier runs (a resumed run or a rerun repeats its steps); a
    logit-normal with a positive mean puts most timesteps in the noisier half, "mode" leans to the middle."""
    from opensora_cli.schemas.train import TrainConfig
    from opensora_cli.training.loop import draw_timesteps

    def draw(**options) -> torch.Tensor:
        config = TrainConfig(data="d.txt", **options)
        return draw_timesteps(config, 1000, 4096, torch.Generator().manual_seed(5), "cpu")

    uniform = draw()
    assert torch.equal(uniform, torch.randint(0, 1000, (4096,), generator=torch.Generator().manual_seed(5)))
    assert torch.equal(uniform, draw())  # the same generator state, the same steps
    leaning = draw(timestep_sampling="logit_normal", logit_mean=1.0)
    assert leaning.dtype == torch.int64 and 0 <= int(leaning.min()) and int(leaning.max()) <= 999
    assert (leaning >= 500).float().mean() > 0.75 > (uniform >= 500).float().mean()
    centred = draw(timestep_sampling="mode", mode_scale=1.29)
    middle = ((centred >= 250) & (centred < 750)).float().mean()
    assert middle > ((uniform >= 250) & (uniform < 750)).float().mean() + 0.1
    assert torch.equal(leaning, draw(timestep_sampling="logit_normal", logit_mean=1.0))


def test_training_with_logit_normal_timesteps_runs_and_is_recorded(cli, data_file, model_dir, tmp_path):
    result = cli(*train_args(data_file, model_dir, tmp_path / "out", "--max-train-steps", "2",
                             "--checkpointing-steps", "2", "--timestep-sampling", "logit_normal", "--logit-mean",
                             "0.5"))
    assert result.code == 0, result.err
    state = json.loads((tmp_path / "out" / "checkpoint-2" / "trainer_state.json").read_text())
    assert state["config"]["timestep_sampling"] == "logit_normal" and state["config"]["logit_mean"] == 0.5
