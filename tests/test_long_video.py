"""Videos longer than the model's trained length, made in chained windows (the bundled demo model: 17 frames).

Same seed -> same long video; the first window is today's short video, bit for bit; a run stopped between windows
resumes and writes the same bytes as one never stopped; validate-inputs shows and checks the window plan.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from opensora_cli.errors import Interrupted
from opensora_cli.schemas.events import SilentSampleReporter

from .helpers import write_image

FAST = ["--steps", "2"]


@pytest.fixture
def lines(tmp_path):
    write_image(tmp_path / "start.png", 64, 96, color=(200, 30, 30))
    write_image(tmp_path / "end.png", 64, 96, color=(30, 30, 200))
    (tmp_path / "p.txt").write_text("a red square moves left ||| @24 a red square moves right\n")
    (tmp_path / "c.txt").write_text("start.png,end.png\n")
    return tmp_path


def _sample(cli, root, out, *extra):
    result = cli("sample", "-p", root / "p.txt", "-c", root / "c.txt", "-o", root / out, "--json", *FAST, *extra)
    assert result.code == 0, result.out + result.err
    return json.loads(result.out)["results"][0]


def _frames(path) -> np.ndarray:
    import decord

    reader = decord.VideoReader(str(path))
    return reader.get_batch(list(range(len(reader)))).asnumpy()


def test_a_long_video_has_every_frame_and_its_sidecar_records_the_windows(cli, lines):
    result = _sample(cli, lines, "out", "-n", "45")
    assert _frames(result["video"]).shape == (45, 64, 96, 3)
    sidecar = json.loads(open(result["sidecar"]).read())
    windows = sidecar["windows"]
    assert [(w["start"], w["frames"]) for w in windows] == [(0, 17), (12, 17), (24, 17), (36, 9)]
    assert windows[0]["seed"] == result["seed"] and len({w["seed"] for w in windows}) == 4
    assert windows[0]["kept_frames"] == [0] and windows[-1]["kept_frames"] == [0, 1, 2, 3, 4, 8]  # the end image
    assert [w["prompt"] for w in windows] == ["a red square moves left"] * 2 + ["a red square moves right"] * 2
    assert result["kept_frames"] == [0, 44]
    assert not any(p.name.endswith(".windows") for p in (lines / "out").iterdir())  # the store is gone


def test_same_seed_same_long_video_and_a_rerun_skips_it(cli, lines):
    a = _sample(cli, lines, "a", "-n", "29")
    b = _sample(cli, lines, "b", "-n", "29")
    assert open(a["video"], "rb").read() == open(b["video"], "rb").read()
    again = _sample(cli, lines, "a", "-n", "29")
    assert again["skipped"]
    other = _sample(cli, lines, "c", "-n", "29", "--seed", "7")
    assert open(other["video"], "rb").read() != open(a["video"], "rb").read()


def test_the_first_window_is_todays_short_video_bit_for_bit(cli, lines, monkeypatch):
    """The pipeline's frames (before encoding): the long video's first window and the 17-frame video."""
    from opensora_cli.pipelines.pipeline_inpaint import OpenSoraInpaintPipeline

    calls = []
    real_call = OpenSoraInpaintPipeline.__call__

    def spy(self, *args, **kwargs):  # passes through: the real pipeline computes every frame
        out = real_call(self, *args, **kwargs)
        calls.append(out.videos[0].copy())
        return out

    monkeypatch.setattr(OpenSoraInpaintPipeline, "__call__", spy)
    (lines / "p.txt").write_text("a red square moves left\n")
    (lines / "c.txt").write_text("start.png\n")
    _sample(cli, lines, "short", "-n", "17")
    _sample(cli, lines, "long", "-n", "29")
    short, first, second = calls
    assert first.shape == short.shape == (17, 64, 96, 3) and np.array_equal(first, short)
    long = _frames(lines / "long" / next(p.name for p in (lines / "long").glob("*.mp4")))
    assert long.shape[0] == 29 and second.shape[0] == 17


class _StopAt(SilentSampleReporter):
    """Ctrl-C at the given step of the run (steps count across windows)."""

    def __init__(self, at: int) -> None:
        self.at = at

    def step(self, index: int, steps: int) -> None:
        if index == self.at:
            raise KeyboardInterrupt


def _options(root, out, frames):
    return dict(prompts=root / "p.txt", conds=root / "c.txt", output_dir=root / out, num_frames=frames, steps=2)


def test_a_stopped_long_video_resumes_at_its_first_unfinished_window_with_the_same_bytes(lines):
    from opensora_cli.services import sampling

    whole = sampling.run(sampling.plan(_options(lines, "whole", 45))).results[0]
    with pytest.raises(Interrupted, match="resumes at its first unfinished window"):
        sampling.run(sampling.plan(_options(lines, "stopped", 45)), _StopAt(2 * 2 + 1))  # inside window 3
    store = next((lines / "stopped").glob(".*.windows"))
    assert sorted(p.name for p in store.glob("part-*.mp4")) == ["part-0000.mp4", "part-0001.mp4"]
    assert [p.name for p in store.glob("window-*.npy")] == ["window-0001.npy"]  # the pixels the next one keeps
    assert not list((lines / "stopped").glob("*.mp4"))  # nothing half-written

    steps = []

    class Count(SilentSampleReporter):
        def step(self, index: int, total: int) -> None:
            steps.append(index)

    resumed = sampling.run(sampling.plan(_options(lines, "stopped", 45)), Count()).results[0]
    assert steps[0] == 2 * 2  # windows 1 and 2 came from disk
    assert open(resumed.video, "rb").read() == open(whole.video, "rb").read()
    assert not store.exists()


def test_a_store_made_with_another_request_is_not_reused(lines):
    from opensora_cli.services import sampling

    with pytest.raises(Interrupted):
        sampling.run(sampling.plan(_options(lines, "out", 45)), _StopAt(2 * 2 + 1))
    options = {**_options(lines, "out", 45), "seed": 99}
    steps = []

    class Count(SilentSampleReporter):
        def step(self, index: int, total: int) -> None:
            steps.append(index)

    sampling.run(sampling.plan(options), Count())
    assert steps[0] == 0  # every window made again


def test_validate_inputs_shows_the_window_plan(cli, lines):
    result = cli("validate-inputs", "-p", lines / "p.txt", "-c", lines / "c.txt", "-n", "45")
    assert result.code == 0, result.out
    assert "4 windows of 17 (overlap 5; time about 3.5x one 17-frame video): 0-16 i2v (keyframes 0)" in result.out
    assert "36-44 random_temporal (keyframes 44)" in result.out
    assert "memory: the largest window (17x64x96) needs about" in result.out
    report = json.loads(cli("validate-inputs", "-p", lines / "p.txt", "-c", lines / "c.txt", "-n", "45",
                            "--overlap", "9", "--json").out)
    assert [w["start"] for w in report["items"][0]["windows"]] == [0, 8, 16, 24, 32]


@pytest.mark.parametrize(
    ("extra", "where", "message"),
    [
        (["-n", "45", "--overlap", "17"], "--overlap", "leave nothing to generate in a 17-frame window"),
        (["-n", "45", "--overlap", "6"], "--overlap", "is not 1 + 4k"),
        (["-n", "17"], "c.txt", "but a 17-frame video is one window"),
    ],
)
def test_bad_long_video_requests_are_refused_before_loading(cli, lines, extra, where, message):
    result = cli("validate-inputs", "-p", lines / "p.txt", "-c", lines / "c.txt", *extra, "--json")
    problems = json.loads(result.out)["problems"]
    assert result.code == 1 and any(where in p["file"] and message in p["message"] for p in problems), problems


def test_an_overlap_for_a_video_of_one_window_is_a_warning(cli, lines):
    (lines / "p.txt").write_text("a red square moves left\n")
    report = json.loads(cli("validate-inputs", "-p", lines / "p.txt", "-c", lines / "c.txt", "-n", "17",
                            "--overlap", "9", "--json").out)
    assert report["ok"] and report["warnings"][0]["file"] == "--overlap"
    assert "one window, so the overlap is not used" in report["warnings"][0]["message"]


def test_a_keyframe_outside_the_long_video_names_the_line(cli, lines):
    (lines / "c.txt").write_text("start.png@0,end.png@60\n")
    result = cli("validate-inputs", "-p", lines / "p.txt", "-c", lines / "c.txt", "-n", "45", "--json")
    problems = json.loads(result.out)["problems"]
    assert result.code == 1 and problems[0]["line"] == 1 and "outside a 45-frame video" in problems[0]["message"]


def test_without_a_known_trained_length_over_93_frames_is_refused(cli, lines, tmp_path):
    from opensora_cli.models.registry import write_random_model_folder

    model = tmp_path / "model"
    write_random_model_folder(model, seed=0)  # no opensora_defaults.json, a config of another latent length
    result = cli("validate-inputs", "-p", lines / "p.txt", "-c", lines / "c.txt", "--model", model, "-n", "97",
                 "--json")
    problems = json.loads(result.out)["problems"]
    assert result.code == 1 and problems[0]["file"] == "--num-frames"
    assert "trained length is unknown" in problems[0]["message"] and "opensora_defaults.json" in problems[0]["message"]


@pytest.fixture(scope="module")
def window_model(tmp_path_factory):
    """Trained, its defaults say, on 13 frames: -n 21 is two windows."""
    from .helpers import write_short_model

    return write_short_model(tmp_path_factory.mktemp("window-model"), steps=2)


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["ddp", "sp"])
def test_two_processes_make_the_same_long_videos_as_one(installed_cli, lines, window_model, mode):
    """DDP splits the lines (each long video is one process's), --sp shards every window of each video."""
    (lines / "p.txt").write_text("a red square\na blue square ||| a green square\n")
    (lines / "c.txt").write_text("start.png\nend.png\n")
    args = ["sample", "-p", "p.txt", "-c", "c.txt", "--model", window_model, "--json", "-n", "21"]
    one_thread = {"OMP_NUM_THREADS": "1"}
    single = installed_cli(*args, "-o", "single", cwd=lines, timeout=300, env=one_thread)
    extra = ["--nproc", "2"] + (["--sp"] if mode == "sp" else [])
    multi = installed_cli(*args, "-o", mode, *extra, cwd=lines, timeout=300, env=one_thread)
    assert single.code == 0 and multi.code == 0, multi.err
    for one in json.loads(single.out)["results"]:
        a = _frames(one["video"])
        b = _frames(lines / mode / one["video"].rsplit("/", 1)[-1])
        assert a.shape == b.shape == (21, 64, 96, 3)
        sidecar = json.loads(open(one["sidecar"]).read())
        assert [(w["start"], w["frames"]) for w in sidecar["windows"]] == [(0, 13), (8, 13)]
        if mode == "ddp":
            assert np.array_equal(a, b)
        else:  # attention sums in another order over the gathered sequence (see test_sample's --sp test)
            diff = np.abs(a.astype(int) - b.astype(int))
            assert diff.mean() < 0.1 and diff.max() <= 24


def test_mask_preview_draws_the_windows_on_the_timeline(cli, lines, tmp_path):
    conds = f"{lines / 'start.png'}@0,{lines / 'end.png'}@-1"
    result = cli("mask-preview", "--conds", conds, "-n", "161", "--out", tmp_path / "w.png")
    assert result.code == 0, result.err
    assert "2 windows of 93 frames, each keeping 25 of the one before" in result.out  # the released model's
    assert "▓ kept from the window before" in result.out
    from PIL import Image

    assert Image.open(tmp_path / "w.png").size[0] >= 161 * 4
    demo = json.loads(cli("mask-preview", "--conds", conds, "-n", "45", "--model",
                          _demo_model(), "--json").out)
    assert [(w["start"], w["frames"], w["kept"]) for w in demo["windows"]] == [
        (0, 17, [0]), (12, 17, [0, 1, 2, 3, 4]), (24, 17, [0, 1, 2, 3, 4]), (36, 9, [0, 1, 2, 3, 4, 8])]
    assert demo["frames"][0] == 0 and demo["frames"][44] == 0 and demo["frames"].count(0) == 2
    short = json.loads(cli("mask-preview", "--conds", conds, "-n", "93", "--json").out)
    assert "windows" not in short  # a video of one window previews as it always did


def test_mask_preview_refuses_an_overlap_that_leaves_nothing_to_generate(cli, lines):
    result = cli("mask-preview", "--mask-type", "i2v", "-n", "45", "--model", _demo_model(), "--overlap", "17")
    assert result.code == 1 and "--overlap" in result.err and "leave nothing to generate" in result.err


def _demo_model():
    from opensora_cli.services.model_folders import bundled_model_dir

    return bundled_model_dir()


def test_the_disk_check_counts_a_long_videos_parts(lines, monkeypatch):
    """Free space for a short video's file but not for a long one's parts, pixels and joined file."""
    from opensora_cli.errors import ValidationFailed
    from opensora_cli.services import outputs, sampling

    usage = outputs.shutil._ntuple_diskusage(total=10**9, used=10**9 - 500_000, free=500_000)
    monkeypatch.setattr(outputs.shutil, "disk_usage", lambda path: usage)
    (lines / "p.txt").write_text("a red square moves left\n")
    assert sampling.plan(_options(lines, "out", 17)).jobs  # 0.13 MB needed
    with pytest.raises(ValidationFailed, match="not enough free space"):
        sampling.plan(_options(lines, "out", 45))  # 0.9 MB: the file, its parts and two windows of pixels


def test_anchor_colours_is_off_at_zero_and_gives_the_first_windows_statistics_at_one():
    from opensora_cli.services.long_video import anchor_colours, colour_statistics

    rng = np.random.default_rng(0)
    first = rng.integers(40, 200, (5, 8, 8, 3)).astype(np.uint8)
    later = np.clip(first.astype(np.int16) * [1.1, 0.9, 1.0] + [10, 20, -15], 0, 255).astype(np.uint8)  # crept
    reference = colour_statistics(first)
    assert np.array_equal(anchor_colours(later, reference, 0.0), later)
    anchored = colour_statistics(anchor_colours(later, reference, 1.0))
    assert np.allclose(anchored, reference, atol=0.6)  # (rounding to uint8)
    gap = np.abs(colour_statistics(later) - reference)
    half = np.abs(colour_statistics(anchor_colours(later, reference, 0.5)) - reference)
    assert np.all(half < 0.6 * gap + 0.6) and np.all(half > 0.4 * gap - 0.6)


def test_adain_changes_only_the_windows_after_the_first_and_is_part_of_the_request(cli, lines):
    (lines / "p.txt").write_text("a red square moves left\n")
    off = _sample(cli, lines, "off", "-n", "29", "--adain", "0")
    on = _sample(cli, lines, "on", "-n", "29", "--adain", "1")
    windows = json.loads(Path(on["sidecar"]).read_text())["windows"]
    assert [w["adain"] for w in windows] == [0.0, 1.0]
    a, b = _frames(off["video"]), _frames(on["video"])
    assert np.array_equal(a[:12], b[:12])  # window 1's own frames: the reference, never changed
    assert not np.array_equal(a[12:], b[12:])
    refused = cli("sample", "-p", lines / "p.txt", "-c", lines / "c.txt", "-o", lines / "off", "-n", "29", *FAST)
    assert refused.code == 1 and "window 2 adain 0.0 -> 0.5" in refused.out  # another factor: another request
    default = _sample(cli, lines, "off", "-n", "29", "--overwrite")
    assert not default["skipped"]
    assert [w["adain"] for w in json.loads(Path(default["sidecar"]).read_text())["windows"]][1:] == [0.5]


def test_adain_out_of_range_or_on_a_video_of_one_window(cli, lines):
    result = cli("sample", "-p", lines / "p.txt", "-c", lines / "c.txt", "-o", lines / "out", "-n", "45",
                 "--adain", "1.5")
    assert result.code in (1, 2) and "--adain" in result.err + result.out and "Traceback" not in result.err
    (lines / "p.txt").write_text("a red square moves left\n")
    result = cli("sample", "-p", lines / "p.txt", "-c", lines / "c.txt", "-o", lines / "one", "-n", "17",
                 "--adain", "0.3", *FAST)
    assert result.code == 0 and "--adain is not used" in result.out + result.err


def test_a_refused_rerun_says_once_what_changed_in_consecutive_windows():
    from opensora_cli.services.outputs import differences

    before = {"windows": [{"adain": 0.0, "seed": 1}, {"adain": 0.5, "seed": 2}, {"adain": 0.5, "seed": 3}]}
    after = {"windows": [{"adain": 0.0, "seed": 1}, {"adain": 0.0, "seed": 9}, {"adain": 0.0, "seed": 3}]}
    assert differences(before, after) == ["windows 2-3 adain 0.5 -> 0.0", "window 2 seed 2 -> 9"]


def test_a_bad_frame_count_with_prompt_stretches_is_one_problem(cli, lines):
    result = cli("validate-inputs", "-p", lines / "p.txt", "-c", lines / "c.txt", "-n", "100000", "--json")
    problems = json.loads(result.out)["problems"]
    assert result.code == 1 and [p["file"] for p in problems] == ["--num-frames"], problems
