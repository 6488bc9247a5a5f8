"""`opensora mask-preview`: JSON contract, pictures, samples from a mask config, bad inputs."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from opensora_cli.masks.processor import MaskProcessor
from opensora_cli.schemas.mask_config import MaskConfig


def preview_json(cli, *args):
    result = cli("mask-preview", "--json", *args)
    assert result.code == 0, result
    return json.loads(result.out)


@pytest.mark.parametrize(
    ("mask_type", "kept"),
    [("t2iv", []), ("i2v", [0]), ("transition", [0, 92]), ("clear", list(range(93)))],
)
def test_json_frames_and_latent_shape(cli, mask_type, kept):
    data = preview_json(cli, "-m", mask_type)
    assert data["mask_type"] == mask_type
    assert [i for i, v in enumerate(data["frames"]) if v == 0] == kept
    assert data["latent_shape"] == [4, 24, 44, 80]


def test_json_random_types_follow_the_seed(cli):
    a = preview_json(cli, "-m", "random_temporal", "-n", "29", "--seed", "3", "--height", "64", "--width", "96")
    b = preview_json(cli, "-m", "random_temporal", "-n", "29", "--seed", "3", "--height", "64", "--width", "96")
    c = preview_json(cli, "-m", "continuation", "-n", "29", "--seed", "3")
    assert a["frames"] == b["frames"] and a["frames"].count(0) == 15
    assert a["latent_shape"] == [4, 8, 8, 12]
    assert c["frames"] == [0] * 15 + [1] * 14


def test_mask_config_samples_are_what_training_draws(cli, tmp_path):
    config = tmp_path / "mask.yaml"
    config.write_text("mask_type_ratio_dict_video: {i2v: 1, continuation: 1, random_temporal: 2}\n")
    data = preview_json(cli, "--mask-config", config, "--samples", "12", "--seed", "11", "-n", "17")
    assert len(data["samples"]) == 12
    assert {s["mask_type"] for s in data["samples"]} <= {"i2v", "continuation", "random_temporal"}
    # The first sample is exactly what MaskProcessor draws for the same seed.
    loaded = MaskConfig(mask_type_ratio_dict_video={"i2v": 1, "continuation": 1, "random_temporal": 2})
    processor = MaskProcessor(loaded.min_clear_ratio, loaded.max_clear_ratio, loaded.mask_type_ratio_dict_video)
    mask, chosen = processor.get_mask(None, 17, 8, 8, generator=11)
    assert data["samples"][0]["mask_type"] == chosen.value
    assert data["samples"][0]["frames"] == [int(v) for v in mask[:, 0, 0, 0].tolist()]


def test_conds_line_sets_type_and_kept_frames(cli, media):
    media.image("a.png", 128, 192)
    media.image("b.png", 128, 192)
    data = preview_json(cli, "--conds", "a.png@0,b.png@20", "-n", "29")
    assert data["mask_type"] == "random_temporal" and [i for i, v in enumerate(data["frames"]) if v == 0] == [0, 20]
    assert (data["height"], data["width"]) == (128, 192)


def test_conds_file_line(cli, media):
    media.image("a.png")
    media.video("v.mp4", 9)
    conds = media.text("c.txt", "a.png", "v.mp4")
    data = preview_json(cli, "--conds", conds, "--line", "2", "-n", "9", "--seed", "0")
    assert data["mask_type"] == "continuation" and data["frames"] == [0] * 5 + [1] * 4


def test_timeline_on_stdout(cli):
    result = cli("mask-preview", "-m", "transition", "-n", "29", "--seed", "1")
    assert result.code == 0
    row = next(line for line in result.out.splitlines() if line.startswith("transition"))
    assert "█" + "░" * 27 + "█" in row and "keeps 2/29" in row


def test_png_shows_the_condition_image_in_kept_frames(cli, media, tmp_path):
    media.image("red.png", 64, 96, color=(255, 0, 0))
    out = tmp_path / "preview.png"
    result = cli("mask-preview", "--conds", "red.png", "-n", "9", "--out", out)
    assert result.code == 0 and out.exists()
    picture = np.asarray(Image.open(out).convert("RGB")).astype(int)
    reds = ((picture[..., 0] > 200) & (picture[..., 1] < 60) & (picture[..., 2] < 60)).sum()
    assert reds > 500  # the red image is drawn in frame 0's cell
    assert not list(tmp_path.glob(".*part*"))  # no temporary file left behind


def test_gif_and_mp4_have_one_picture_per_frame(cli, tmp_path):
    import decord

    gif, mp4 = tmp_path / "m.gif", tmp_path / "m.mp4"
    assert cli("mask-preview", "-m", "i2v", "-n", "13", "--out", gif).code == 0
    assert cli("mask-preview", "-m", "i2v", "-n", "13", "--out", mp4).code == 0
    assert Image.open(gif).n_frames == 13
    assert len(decord.VideoReader(str(mp4))) == 13


def test_samples_picture(cli, tmp_path):
    out = tmp_path / "k.png"
    result = cli("mask-preview", "-m", "random_temporal", "-k", "4", "-n", "45", "--out", out)
    assert result.code == 0
    assert Image.open(out).size[1] > 4 * 30


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        ([], 2, "give --mask-type, or --conds or --mask-config"),
        (["-m", "i2v", "-n", "90"], 1, "--num-frames: 90 is not 1 + 4k"),
        (["-m", "i2v", "--out", "x.jpg"], 1, "must end in .png, .gif, .mp4"),
        (["-m", "i2v", "--height", "100", "--width", "64"], 1, "--height: 100 is not a positive multiple of 16"),
        (["-m", "i2v", "--height", "64"], 2, "give both --height and --width"),
        (["--conds", "ghost.png"], 1, "file not found: 'ghost.png'"),
        (["--conds", "a.png", "-m", "transition"], 1, "transition keeps the first and last frames"),
        (["--mask-config", "nope.yaml"], 1, "nope.yaml: mask config file not found"),
        (["-m", "i2v", "--samples", "0"], 1, "--samples"),
    ],
)
def test_bad_inputs_one_line_and_exit_code(cli, media, args, code, message):
    media.image("a.png")
    result = cli("mask-preview", *args)
    assert result.code == code, result
    assert message in result.err and result.err.count("\n") == 1 and "Traceback" not in result.err
