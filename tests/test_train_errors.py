"""How `opensora train` ends when things go wrong: a bad file, Ctrl-C, a resume with other options, and
checkpoints whose folders moved. Tiny model, synthetic data, a few steps each."""

from __future__ import annotations

import json
import shutil

import pytest

from opensora_cli.models.registry import write_random_model_folder

from .helpers import train_args


def lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


def checkpoint_names(out) -> list[str]:
    return sorted((p.name for p in out.iterdir() if p.name.startswith("checkpoint-")), key=lambda n: int(n[11:]))


# -- a file that does not decode, with --bad-data error ------------------------------------------------------


@pytest.fixture
def data_with_a_broken_video(data_file, tmp_path):
    root = tmp_path / "data"
    shutil.copytree(data_file.parent, root)
    records = [r for r in json.loads((root / "anno.json").read_text()) if r["path"].endswith(".mp4")][:4]
    (root / "videos" / "broken.mp4").write_bytes(b"not a video")
    records.insert(0, {"path": "videos/broken.mp4", "cap": "x", "num_frames": 21, "fps": 8,
                       "resolution": {"height": 64, "width": 96}})
    (root / "anno.json").write_text(json.dumps(records))
    (root / "data.txt").write_text(f"{root},{root / 'anno.json'}\n")
    return root / "data.txt", root / "videos" / "broken.mp4"


@pytest.mark.parametrize("workers", ["0", "1"])
def test_a_broken_file_with_bad_data_error_is_one_line(cli, data_with_a_broken_video, model_dir, tmp_path,
                                                       workers):
    """With workers the error used to cross the process boundary as two tracebacks (torch re-creates a worker's
    exception from its formatted traceback); now it is data until the main process raises it."""
    data, broken = data_with_a_broken_video
    out = tmp_path / "out"
    result = cli(*train_args(data, model_dir, out, "--max-train-steps", "40", "--checkpointing-steps", "1",
                             "--bad-data", "error", "--dataloader-num-workers", workers))
    assert result.code == 1, result.err
    assert "Traceback" not in result.err and "Caught InputError" not in result.err
    error = lines(result.err)[-1]
    assert error.startswith(f"Error: {broken}: decode failed (") and error.count("Error:") == 1
    assert "— fix or remove the file (--bad-data skip replaces it); last checkpoint: " in error
    last = checkpoint_names(out)[-1] if out.exists() and checkpoint_names(out) else None
    assert error.endswith(f"last checkpoint: {out / last}" if last else "last checkpoint: none")
    assert result.out == ""  # --json prints nothing for a run that failed


# -- Ctrl-C --------------------------------------------------------------------------------------------------


def interrupt_at(monkeypatch, at_step: int) -> None:
    """Ctrl-C arriving while the CLI's reporter draws step `at_step` (a KeyboardInterrupt from the loop's seam)."""
    from opensora_cli.cli.progress import RichTrainReporter

    draw = RichTrainReporter.step

    def step(self, step, *args):
        draw(self, step, *args)
        if step == at_step:
            raise KeyboardInterrupt

    monkeypatch.setattr(RichTrainReporter, "step", step)


def test_ctrl_c_says_where_it_stopped_and_how_to_resume(cli, data_file, model_dir, tmp_path, monkeypatch):
    out = tmp_path / "out"
    interrupt_at(monkeypatch, 3)
    result = cli(*train_args(data_file, model_dir, out, "--max-train-steps", "10", "--checkpointing-steps", "2"))
    assert result.code == 130 and "Traceback" not in result.err and "Error" not in result.err
    assert lines(result.err)[-1] == (f"interrupted at step 3; last checkpoint: {out / 'checkpoint-2'}; resume with "
                                     "--resume-from-checkpoint latest")
    assert checkpoint_names(out) == ["checkpoint-2"] and result.out == ""

    monkeypatch.undo()
    resumed = cli(*train_args(data_file, model_dir, out, "--max-train-steps", "4", "--checkpointing-steps", "2",
                              "--resume-from-checkpoint", "latest"))
    assert resumed.code == 0, resumed.err
    assert json.loads(lines(resumed.out)[-1])["first_step"] == 2
    assert "other options" not in resumed.err  # max_train_steps is meant to change on resume


def test_ctrl_c_before_the_first_checkpoint(cli, data_file, model_dir, tmp_path, monkeypatch):
    interrupt_at(monkeypatch, 1)
    result = cli(*train_args(data_file, model_dir, tmp_path / "out", "--max-train-steps", "10",
                             "--checkpointing-steps", "5"))
    assert result.code == 130
    assert lines(result.err)[-1].startswith("interrupted at step 1; no checkpoint yet, so the same command starts over")


def test_ctrl_c_while_loading_points_to_the_checkpoint(data_file, model_dir, tmp_path, monkeypatch):
    from opensora_cli.errors import TrainingInterrupted
    from opensora_cli.models import loading
    from opensora_cli.schemas.events import SilentTrainReporter
    from opensora_cli.schemas.train import TrainConfig
    from opensora_cli.training import loop

    elsewhere = tmp_path / "old"
    (elsewhere / "checkpoint-7").mkdir(parents=True)
    (elsewhere / "checkpoint-7" / "trainer_state.json").write_text("{}")

    def interrupted_load(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(loading, "load_pretrained", interrupted_load)  # the first model it loads: the VAE
    config = TrainConfig(data=data_file, model="OpenSoraInpaint_v1_3-tiny", output_dir=tmp_path / "out",
                         resume_from_checkpoint=str(elsewhere / "checkpoint-7"), device="cpu")
    with pytest.raises(TrainingInterrupted) as exc:
        loop.train(config, {"vae": model_dir / "vae", "text_encoder": model_dir / "text_encoder"},
                   SilentTrainReporter())
    assert exc.value.exit_code == 130 and exc.value.step is None
    assert str(exc.value) == (f"interrupted while setting up; last checkpoint: {elsewhere / 'checkpoint-7'}; resume "
                              f"with --resume-from-checkpoint {elsewhere / 'checkpoint-7'}")


# -- resuming with other options -----------------------------------------------------------------------------


class Recorder:
    """A TrainReporter that keeps its warnings."""

    def __init__(self):
        from opensora_cli.schemas.events import SilentTrainReporter

        self.warnings: list[str] = []
        self.base = SilentTrainReporter()

    def __getattr__(self, name):
        return getattr(self.base, name)

    def warning(self, text: str) -> None:
        self.warnings.append(text)


def test_resuming_with_other_options_warns_field_by_field(cli, data_file, model_dir, tmp_path):
    from opensora_cli.services.training import check_train_request, run_training

    out = tmp_path / "out"
    mask = tmp_path / "mask.yaml"
    mask.write_text("min_clear_ratio: 0.0\n")
    first = cli(*train_args(data_file, model_dir, out, "--max-train-steps", "2", "--checkpointing-steps", "2",
                            "--learning-rate", "1e-4", "--mask-config", mask))
    assert first.code == 0, first.err

    mask.write_text("min_clear_ratio: 0.25\n")  # same file, other contents
    config, dirs, problems = check_train_request(None, dict(
        data=data_file, model="OpenSoraInpaint_v1_3-tiny", vae=model_dir / "vae",
        text_encoder=model_dir / "text_encoder", output_dir=out, num_frames=9, max_hxw=6144, min_hxw=1024, hw_stride=16, train_fps=8, train_batch_size=2,
        dataloader_num_workers=0, max_train_steps=3, checkpointing_steps=5, resume_from_checkpoint="latest",
        learning_rate=2e-4, seed=4, mask_config=mask,
    ))
    assert not problems
    recorder = Recorder()
    run_training(config, dirs, recorder)
    assert recorder.warnings == [
        f"{out / 'checkpoint-2'} was trained with other options; this run uses the new values: learning_rate "
        "0.0001 -> 0.0002, seed 3 -> 4, mask min_clear_ratio 0 -> 0.25"
    ]

    # the CLI shows it (until the Rich reporter draws warnings its own way, as a phase line)
    again = cli(*train_args(data_file, model_dir, out, "--max-train-steps", "4", "--checkpointing-steps", "5",
                            "--train-batch-size", "1", "--resume-from-checkpoint", "latest", "--mask-config", mask))
    assert again.code == 0, again.err
    assert f"warning: {out / 'checkpoint-3'} was trained with other options" in again.err
    assert "learning_rate 0.0002 -> 1e-05, train_batch_size 2 -> 1, seed 4 -> 3" in again.err


# -- checkpoints moved with their model folders --------------------------------------------------------------


def test_a_checkpoint_moved_with_its_models_still_loads(cli, data_file, tmp_path):
    import os

    from opensora_cli.models.autoencoder_wfvae import WFVAEModel
    from opensora_cli.models.loading import load_pretrained
    from opensora_cli.models.text_encoder import TextEncoder

    project = tmp_path / "project"
    models = write_random_model_folder(project / "models", transformer=None, seed=2)
    out = project / "runs" / "a"
    result = cli(*train_args(data_file, project / "models", out, "--max-train-steps", "1",
                             "--checkpointing-steps", "1"))
    assert result.code == 0, result.err
    link = out / "checkpoint-1" / "vae"
    assert link.is_symlink() and not os.path.isabs(os.readlink(link))

    moved = tmp_path / "elsewhere" / "project"
    moved.parent.mkdir()
    shutil.move(project, moved)
    assert not models["vae"].exists()
    checkpoint = moved / "runs" / "a" / "checkpoint-1"
    assert json.loads((checkpoint / "vae" / "config.json").read_text())["_class_name"] == "WFVAEModel"
    assert (checkpoint / "text_encoder" / "config.json").is_file()
    assert load_pretrained(WFVAEModel, checkpoint / "vae") is not None
    assert TextEncoder.from_pretrained(checkpoint / "text_encoder").hidden_size == 32


def test_links_fall_back_to_copies_where_symlinks_cannot_be_made(tmp_path, monkeypatch):
    from opensora_cli.training import checkpointing

    target = tmp_path / "models" / "vae"
    target.mkdir(parents=True)
    (target / "config.json").write_text("{}")

    def no_symlinks(*args, **kwargs):
        raise OSError("symbolic links are not supported here")

    monkeypatch.setattr(checkpointing.os, "symlink", no_symlinks)
    link = tmp_path / "out" / "checkpoint-1" / "vae"
    link.parent.mkdir(parents=True)
    checkpointing.link_model_folder(target, link)
    assert not link.is_symlink() and (link / "config.json").read_text() == "{}"


def test_changed_options_compares_what_a_step_computes():
    from opensora_cli.schemas.mask_config import MaskConfig
    from opensora_cli.schemas.train import TrainConfig
    from opensora_cli.training.loop import _loggable, changed_options

    before = TrainConfig(data="d.txt", learning_rate=1e-4, mask_config="m.yaml", snr_gamma=None, max_train_steps=10)
    state = {"config": json.loads(json.dumps(_loggable(before))), "world_size": 2,
             "mask_config_values": MaskConfig().model_dump(mode="json")}
    same = TrainConfig(data="d.txt", learning_rate=1e-4, mask_config="m.yaml", max_train_steps=500,
                       resume_from_checkpoint="latest", checkpointing_steps=7, dataloader_num_workers=0)
    assert changed_options(state, same, MaskConfig(), 2) == []
    other = TrainConfig(data="e.txt", learning_rate=2e-4, mask_config="m.yaml", snr_gamma=5, train_batch_size=3)
    edited = MaskConfig(mask_type_ratio_dict_video={"i2v": 1.0})
    assert changed_options(state, other, edited, 1) == [
        "data d.txt -> e.txt", "learning_rate 0.0001 -> 0.0002", "train_batch_size 1 -> 3", "snr_gamma none -> 5",
        "mask mask_type_ratio_dict_video.i2v 8 -> 1", "processes 2 -> 1",
        *(f"mask mask_type_ratio_dict_video.{name} {weight:g} -> none"
          for name, weight in MaskConfig().model_dump(mode="json")["mask_type_ratio_dict_video"].items()
          if name != "i2v"),
    ]
    # a checkpoint written before a field existed: that field is not compared
    del state["config"]["snr_gamma"], state["world_size"]
    assert not any(c.startswith(("snr_gamma", "processes")) for c in changed_options(state, other, edited, 1))


def test_the_trained_share_reads_as_a_percentage_never_in_exponent_form():
    from opensora_cli.training.loop import _percent

    assert [_percent(*n) for n in ((10, 10), (1, 3), (1, 40), (41, 100_000), (1, 10**9))] == [
        "100 %", "33 %", "2.5 %", "0.041 %", "< 0.001 %"]
