"""The synthetic demo domain (`data.synthetic`), its evaluation (`services.evaluation`) and `make-demo-data`."""

from __future__ import annotations

import importlib.util
import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from opensora_cli.data.synthetic import (
    COLOURS,
    DIRECTIONS,
    SHAPES,
    generate_clip,
    generate_image,
    make_dataset,
    write_examples,
)
from opensora_cli.errors import InputError
from opensora_cli.services.evaluation import (
    PSNR_CAP,
    direction_of,
    evaluate,
    fitted_displacement,
    load_eval_set,
    psnr,
    track_shape,
)

from .helpers import NO_HEAVY_IMPORTS, REPO


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("demo") / "data"
    make_dataset(out, clips=4, images=2, heldout=8, seed=3)
    return out


# ------------------------------------------------------------------------------------------------------------
# Generator
# ------------------------------------------------------------------------------------------------------------


def test_generator_is_deterministic_and_seed_dependent():
    a, meta_a = generate_clip(np.random.default_rng(7), 9, 48, 80)
    b, meta_b = generate_clip(np.random.default_rng(7), 9, 48, 80)
    c, _ = generate_clip(np.random.default_rng(8), 9, 48, 80)
    assert a.shape == (9, 48, 80, 3) and a.dtype == np.uint8
    assert np.array_equal(a, b) and meta_a == meta_b
    assert not np.array_equal(a, c)


def test_captions_name_the_colour_shape_and_direction():
    rng = np.random.default_rng(0)
    for _ in range(40):
        _, meta = generate_clip(rng, 5, 64, 96)
        words = meta["caption"].split()
        assert words[:3] == ["a", meta["colour"], meta["shape"]] and meta["direction"] in words
        assert meta["colour"] in COLOURS and meta["shape"] in SHAPES and meta["direction"] in DIRECTIONS
        assert meta["rgb"] == list(COLOURS[meta["colour"]])
    image, meta = generate_image(rng, 64, 96)
    assert image.shape == (64, 96, 3) and meta["caption"].startswith(f"a {meta['colour']} {meta['shape']}")


def test_shape_moves_at_constant_speed_and_stays_inside():
    rng = np.random.default_rng(1)
    for _ in range(30):
        frames, meta = generate_clip(rng, 17, 64, 96)
        centroids = np.array(meta["centroids"])  # (T, 2)
        steps = np.diff(centroids, axis=0)
        assert np.allclose(steps, meta["velocity"], atol=0.15)  # 8x supersampling: 1/8-pixel steps
        assert 1.5 <= math.hypot(*meta["velocity"]) <= 2.5
        ux, uy = DIRECTIONS[meta["direction"]]
        assert np.sign(meta["velocity"][0]) == ux and np.sign(meta["velocity"][1]) == uy
        # fully inside every frame: the shape's pixel count does not change as it moves
        counts = [(np.linalg.norm(f.astype(float) - meta["rgb"], axis=-1) < 60).sum() for f in frames]
        assert max(counts) - min(counts) <= 0.1 * max(counts), counts


# ------------------------------------------------------------------------------------------------------------
# Metrics
# ------------------------------------------------------------------------------------------------------------


def test_psnr():
    a = np.random.default_rng(0).integers(0, 255, (2, 8, 8, 3), dtype=np.uint8)
    assert psnr(a, a) == PSNR_CAP == 100.0
    assert psnr(a, a ^ 1) == pytest.approx(10 * math.log10(255**2))  # every value off by exactly 1
    assert psnr(np.zeros((4, 4, 3), np.uint8), np.full((4, 4, 3), 255, np.uint8)) == 0.0
    with pytest.raises(ValueError, match="one shape"):
        psnr(a, a[0])


def test_tracking_the_true_clips_gives_their_direction_and_centroids():
    rng = np.random.default_rng(2)
    for index in range(48):
        frames, meta = generate_clip(rng, 17, 64, 96, direction=list(DIRECTIONS)[index % 4])
        centroids = track_shape(frames, meta["rgb"])
        assert all(c is not None for c in centroids)
        assert max(math.dist(c, t) for c, t in zip(centroids, meta["centroids"])) < 1.5
        assert direction_of(fitted_displacement(centroids)) == meta["direction"]


def test_tracking_survives_h264(dataset):
    entries = load_eval_set(dataset / "eval")
    from opensora_cli.data.media import read_video

    for entry in entries:
        centroids = track_shape(read_video(dataset / "eval" / entry["video"], entry["frames"]), entry["rgb"])
        assert max(math.dist(c, t) for c, t in zip(centroids, entry["centroids"])) < 1.5
        assert direction_of(fitted_displacement(centroids)) == entry["direction"]


def test_direction_of_edge_cases():
    assert direction_of(None) is None
    assert direction_of((0.5, -1.0)) == "still"
    assert direction_of((-3.0, 2.0)) == "left" and direction_of((1.0, 5.0)) == "down"
    frames = np.zeros((5, 32, 32, 3), np.uint8)  # no shape anywhere
    assert track_shape(frames, (225, 40, 40)) == [None] * 5
    assert fitted_displacement([None, (1.0, 1.0), None]) is None


# ------------------------------------------------------------------------------------------------------------
# Data set files
# ------------------------------------------------------------------------------------------------------------


def test_make_dataset_is_read_by_the_training_dataset(dataset):
    from opensora_cli.data.dataset import VideoTextDataset

    data = VideoTextDataset(dataset / "data.txt", num_frames=17, max_hxw=6144, min_hxw=1024, hw_stride=16,
                            train_fps=8)
    assert data.problems == [] and data.summary()["buckets"] == {"17x64x96": 4, "1x64x96": 2}
    item = data[(0, 0)]
    assert tuple(item["pixel_values"].shape) == (3, 17, 64, 96) and item["replaced"] == []


def test_make_dataset_eval_files(dataset):
    eval_dir = dataset / "eval"
    entries = load_eval_set(eval_dir)
    prompts = (eval_dir / "prompts.txt").read_text().splitlines()
    conds = (eval_dir / "conds.txt").read_text().splitlines()
    transitions = (eval_dir / "transition_conds.txt").read_text().splitlines()
    assert len(entries) == len(prompts) == len(conds) == len(transitions) == 8
    assert [e["direction"] for e in entries] == list(DIRECTIONS) * 2  # balanced
    for entry, prompt, cond, transition in zip(entries, prompts, conds, transitions):
        assert prompt == entry["caption"] and cond == entry["first"]
        assert transition == f"{entry['first']},{entry['last']}"
        assert (eval_dir / entry["first"]).is_file() and (eval_dir / entry["last"]).is_file()


def test_make_dataset_is_deterministic(dataset, tmp_path):
    make_dataset(tmp_path, clips=4, images=2, heldout=8, seed=3)
    for name in ("annotation.json", "eval/metadata.json", "data.txt"):
        assert (tmp_path / name).read_text() == (dataset / name).read_text()
    for name in ("images/00001.png", "eval/00003_last.png"):
        assert (tmp_path / name).read_bytes() == (dataset / name).read_bytes()


def test_the_held_out_set_depends_only_on_the_seed(dataset, tmp_path):
    # the README rebuilds the demo model's eval set with --clips 1 --images 1: it must be the recipe's
    make_dataset(tmp_path, clips=1, images=1, heldout=8, seed=3)
    for name in ("metadata.json", "prompts.txt", "transition_conds.txt", "00005_first.png", "00007_last.png",
                 "00002.mp4"):
        assert (tmp_path / "eval" / name).read_bytes() == (dataset / "eval" / name).read_bytes()


def test_examples_pass_validate_inputs(tmp_path, cli):
    write_examples(tmp_path / "ex", seed=0)
    result = cli("validate-inputs", "-p", tmp_path / "ex/prompts.txt", "-c", tmp_path / "ex/conds.txt",
                 "--num-frames", "17", "--json")
    assert result.code == 0, result.out + result.err
    report = json.loads(result.out)
    assert [line["mask_type"] for line in report["items"]] == ["i2v", "transition", "random_temporal",
                                                             "continuation"]


# ------------------------------------------------------------------------------------------------------------
# Evaluation on outputs laid out like `opensora sample`'s
# ------------------------------------------------------------------------------------------------------------


def _fake_outputs(dataset: Path, out: Path, still: bool = False) -> Path:
    """The held-out clips themselves (or, `still`, their first frame repeated) as sample outputs + sidecars."""
    from opensora_cli.data.media import read_video
    from opensora_cli.utils.video import write_video

    for entry in load_eval_set(dataset / "eval"):
        frames = read_video(dataset / "eval" / entry["video"], entry["frames"])
        if still:
            frames = np.repeat(frames[:1], len(frames), axis=0)
        name = f"{entry['line']:04d}_x_s0"
        write_video(out / f"{name}.mp4", frames, fps=8)
        sidecar = {"video": f"{name}.mp4", "line": entry["line"], "sample": 0, "prompt": entry["caption"],
                   "num_frames": entry["frames"], "steps": 10, "seconds": 1.5}
        (out / f"{name}.json").write_text(json.dumps(sidecar))
    return out


def test_evaluation_of_the_true_clips_is_perfect(dataset, tmp_path):
    outputs = _fake_outputs(dataset, tmp_path / "true")
    entries = load_eval_set(dataset / "eval")
    for mode in ("i2v", "transition"):
        report = evaluate(entries, dataset / "eval", outputs, mode)
        assert report.videos == 8 and report.untrackable == 0
        assert report.direction_accuracy == 1.0
        assert report.kept_psnr_mean > 30 and report.kept_good_share == 1.0
        assert report.seconds_mean == 1.5 and report.steps == [10]
    assert report.end_reached_share == 1.0 and report.last_psnr_mean > 30 and report.end_error_mean < 1


def test_evaluation_of_still_videos_fails_motion(dataset, tmp_path):
    outputs = _fake_outputs(dataset, tmp_path / "still", still=True)
    report = evaluate(load_eval_set(dataset / "eval"), dataset / "eval", outputs, "transition")
    assert report.direction_accuracy == 0.0 and report.end_reached_share == 0.0
    assert report.end_error_mean > 10  # it stays where it started
    assert report.last_psnr_mean < report.kept_psnr_mean < report.first_psnr_mean  # frame 0 right, the last not
    assert report.first_psnr_mean > 30
    assert report.kept_psnr_mean == pytest.approx((report.first_psnr_mean + report.last_psnr_mean) / 2)


def test_evaluation_refuses_outputs_of_other_prompts(dataset, tmp_path):
    outputs = _fake_outputs(dataset, tmp_path / "other")
    sidecar = outputs / "0001_x_s0.json"
    sidecar.write_text(json.dumps({**json.loads(sidecar.read_text()), "prompt": "a dog runs"}))
    with pytest.raises(InputError, match="is not line 1 of"):
        evaluate(load_eval_set(dataset / "eval"), dataset / "eval", outputs, "i2v")


def test_benchmark_prints_a_markdown_table(dataset, tmp_path, capsys):
    outputs = _fake_outputs(dataset, tmp_path / "true")
    spec = importlib.util.spec_from_file_location("demo_quality", REPO / "benchmarks" / "demo_quality.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.main(["--eval", str(dataset / "eval"), "--outputs", str(outputs),
                        "--outputs-transition", str(outputs)]) == 0
    table = capsys.readouterr().out
    assert table.startswith("| metric | i2v | transition |")
    assert "| direction follows the prompt | 100.0 % | 100.0 % |" in table
    assert "| untrackable videos | 0/8 | 0/8 |" in table


# ------------------------------------------------------------------------------------------------------------
# The command
# ------------------------------------------------------------------------------------------------------------


def test_make_demo_data_command(cli, tmp_path):
    args = ("make-demo-data", "out", "--clips", "2", "--images", "1", "--heldout", "2", "--frames", "9",
            "--height", "48", "--width", "80", "--examples", "ex")
    result = cli(*args)
    assert result.code == 0, result.err
    assert result.out.startswith("wrote 2 clips, 1 images and 2 held-out clips (9x48x80)") and result.out.count(
        "\n") == 1
    assert len(json.loads((tmp_path / "out/annotation.json").read_text())) == 3
    assert (tmp_path / "ex/conds.txt").read_text().splitlines()[2] == "keyframe_0.png@0,keyframe_1.png@4," \
                                                                       "keyframe_2.png@-1"
    refused = cli(*args)
    assert refused.code == 1 and refused.err == (
        "Error: OUT_DIR: out is not empty — choose a new folder, or pass --overwrite to write over it\n"
    )
    assert cli(*args, "--overwrite").code == 0


@pytest.mark.parametrize(
    "args, message",
    [
        (["--frames", "16"], "--frames: must be 1 + 4k (e.g. 17, 29), got 16"),
        (["--height", "40"], "--height: must be a multiple of 16 and at least 32, got 40"),
        (["--width", "16"], "--width: must be a multiple of 16 and at least 32, got 16"),
        (["--clips", "0"], "--clips: must be at least 1, got 0"),
        (["--heldout", "-1"], "--heldout: must be at least 1, got -1"),
        (["--seed", "-2"], "--seed: must be 0 or more, got -2"),
    ],
)
def test_make_demo_data_refuses_bad_arguments(cli, tmp_path, args, message):
    result = cli("make-demo-data", "out", *args)
    assert result.code == 1 and result.err == f"Error: {message}\n"
    assert not (tmp_path / "out").exists()


def test_make_demo_data_refuses_a_file_and_unknown_options(cli, tmp_path):
    (tmp_path / "file").write_text("x")
    result = cli("make-demo-data", "file")
    assert result.code == 1 and "is a file" in result.err
    assert cli("make-demo-data", "out", "--clip", "3").code == 2


def test_make_demo_data_is_listed_and_does_not_import_torch(cli, tmp_path):
    assert "make-demo-data" in cli("--help").out
    args = ["make-demo-data", str(tmp_path / "out"), "--clips", "1", "--images", "1", "--heldout", "1"]
    proc = subprocess.run([sys.executable, "-c", NO_HEAVY_IMPORTS.format(args=args)], cwd=REPO, capture_output=True,
                          text=True, timeout=120)
    assert "HEAVY: [] CODE: 0" in proc.stdout, proc.stdout + proc.stderr
    shutil.rmtree(tmp_path / "out")
