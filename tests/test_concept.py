"""`make-demo-data --concept diagonal`: a motion the demo model never saw (for LoRA experiments), its evaluation,
and that the default data set (concept "none") is exactly what it was before concepts existed."""

from __future__ import annotations

import hashlib
import json
import math
import re
from pathlib import Path

import numpy as np
import pytest

from opensora_cli.data.synthetic import (
    CONCEPTS,
    DIAGONALS,
    DIRECTIONS,
    MARGIN,
    SPEED,
    generate_clip,
    make_dataset,
    write_examples,
)
from opensora_cli.schemas import demo_data as schema
from opensora_cli.services import evaluation
from opensora_cli.services.evaluation import (
    direction_of,
    evaluate,
    fitted_displacement,
    load_eval_set,
    score_video,
    track_shape,
)

# sha256 of the JSON files of `make-demo-data OUT --clips 6 --images 2 --heldout 8 --seed 5`, written by the
# code before --concept existed (commit 4161601). They hold every caption, direction, rounded velocity and
# centroid, so any change in what the default draws shows here; the mp4/png bytes are compared run against run
# below instead, as they also depend on the encoder versions.
BEFORE_CONCEPTS = {
    "annotation.json": "886606c5be047b966920d5dbbd0f138dbcae7ef24a726ca270d3b67737c65ecd",
    "eval/metadata.json": "f23106a110ac592ed7c56d04e154f0afaecb5616707ce1b6f188474dd2a29756",
}
CAPTION = re.compile(r"^a \w+ \w+ moves (up|down) and (?:to the )?(left|right)(?: on a .+)?$")


def _hashes(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def diagonal_set(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("diag") / "data"
    summary = make_dataset(out, clips=8, images=2, heldout=8, seed=3, concept="diagonal")
    assert summary["concept"] == "diagonal"
    return out


# ------------------------------------------------------------------------------------------------------------
# concept "none" is today's data
# ------------------------------------------------------------------------------------------------------------


def test_concept_none_is_the_data_set_of_before(cli, tmp_path):
    args = ("--clips", "6", "--images", "2", "--heldout", "8", "--seed", "5")
    implicit = cli("make-demo-data", "implicit", *args, "--examples", "ex_implicit")
    explicit = cli("make-demo-data", "explicit", *args, "--concept", "none", "--examples", "ex_explicit")
    assert implicit.code == explicit.code == 0, implicit.err + explicit.err
    def line(result, name):  # the summary line without the folder names and seconds
        return re.sub(r"in [0-9.]+ s", "", result.out.replace(name, "X"))

    assert line(implicit, "implicit") == line(explicit, "explicit")
    assert "(17x64x96)" in implicit.out and "motion" not in implicit.out  # the summary line as before
    assert _hashes(tmp_path / "implicit") == _hashes(tmp_path / "explicit")
    assert _hashes(tmp_path / "ex_implicit") == _hashes(tmp_path / "ex_explicit")
    for name, digest in BEFORE_CONCEPTS.items():
        assert hashlib.sha256((tmp_path / "implicit" / name).read_bytes()).hexdigest() == digest, name
    entries = load_eval_set(tmp_path / "implicit" / "eval")
    assert [e["direction"] for e in entries] == list(DIRECTIONS) * 2
    captions = [r["cap"] for r in json.loads((tmp_path / "implicit/annotation.json").read_text())]
    assert not any(CAPTION.match(c) for c in captions) and not any("-" in e["direction"] for e in entries)


def test_the_request_and_the_generator_know_the_same_concepts():
    assert schema.CONCEPTS == tuple(CONCEPTS)
    assert evaluation.DIAGONALS == DIAGONALS


# ------------------------------------------------------------------------------------------------------------
# Diagonal clips
# ------------------------------------------------------------------------------------------------------------


# the default size, portrait, square, and long clips in small frames where the tighter axis caps the speed
@pytest.mark.parametrize("frames, height, width",
                         [(17, 64, 96), (17, 96, 64), (29, 32, 32), (9, 48, 80), (29, 32, 96), (33, 64, 32)])
def test_diagonal_clips_stay_inside_on_both_axes(frames, height, width):
    for seed in range(12):
        for direction, (ux, uy) in DIAGONALS.items():
            video, meta = generate_clip(np.random.default_rng([seed, 9]), frames, height, width, direction=direction)
            assert meta["direction"] == direction
            vx, vy = meta["velocity"]
            assert (np.sign(vx), np.sign(vy)) == (ux, uy) and vx == pytest.approx(ux * abs(vy))  # 45 degrees
            assert math.hypot(vx, vy) <= SPEED[1] + 1e-3
            if (frames, height, width) == (17, 64, 96):  # room to spare: the speed is not capped
                assert math.hypot(vx, vy) >= SPEED[0] - 1e-3
            centroids = np.array(meta["centroids"])  # (T, 2) x, y
            assert np.allclose(np.diff(centroids, axis=0), meta["velocity"], atol=0.15)
            # the shape's bounding box (a triangle's centroid lies size/6 below its box centre) inside the margin
            half = meta["size"] / 2
            cx = centroids[:, 0]
            cy = centroids[:, 1] - (meta["size"] / 6 if meta["shape"] == "triangle" else 0.0)
            tol = 0.15  # coverage centroids are exact to 1/8 px
            assert (cx - half).min() >= MARGIN - 0.5 - tol and (cx + half).max() <= width - 0.5 - MARGIN + tol
            assert (cy - half).min() >= MARGIN - 0.5 - tol and (cy + half).max() <= height - 0.5 - MARGIN + tol
            # the pixels: a shape cut by the frame would cover the outermost pixels, and as it moves on both axes
            # they would change; they never do, so no frame draws any of the shape there ...
            for border in (video[:, 0], video[:, -1], video[:, :, 0], video[:, :, -1]):
                assert (border == border[:1]).all(), (seed, direction, meta["shape"])
            # ... and the shape's colour is found, whole, where the metadata puts it in every frame
            tracked = track_shape(video, meta["rgb"])
            assert max(math.dist(c, t) for c, t in zip(tracked, meta["centroids"])) < 1.5


def test_diagonal_data_set_metadata_and_captions(diagonal_set, tmp_path):
    entries = load_eval_set(diagonal_set / "eval")
    assert [e["direction"] for e in entries] == list(DIAGONALS) * 2  # balanced
    prompts = (diagonal_set / "eval/prompts.txt").read_text().splitlines()
    assert prompts == [e["caption"] for e in entries]
    for entry in entries:
        vertical, horizontal = entry["direction"].split("-")
        assert CAPTION.match(entry["caption"]).groups() == (vertical, horizontal), entry["caption"]
        ux, uy = DIAGONALS[entry["direction"]]
        assert (np.sign(entry["velocity"][0]), np.sign(entry["velocity"][1])) == (ux, uy)
        first, last = entry["centroids"][0], entry["centroids"][-1]  # the true path agrees with the label
        assert (np.sign(last[0] - first[0]), np.sign(last[1] - first[1])) == (ux, uy)
    records = json.loads((diagonal_set / "annotation.json").read_text())
    clips = [r["cap"] for r in records if r["path"].startswith("videos/")]
    assert len(clips) == 8 and all(CAPTION.match(c) for c in clips), clips
    # the training images are stills: the same files and captions as the default data set's
    make_dataset(tmp_path, clips=8, images=2, heldout=8, seed=3)
    plain = json.loads((tmp_path / "annotation.json").read_text())
    assert [r for r in records if r["path"].startswith("images/")] == [r for r in plain if
                                                                        r["path"].startswith("images/")]
    for name in ("images/00000.png", "images/00001.png"):
        assert (diagonal_set / name).read_bytes() == (tmp_path / name).read_bytes()


def test_diagonal_captions_use_both_phrasings():
    rng = np.random.default_rng(0)
    captions = [generate_clip(rng, 5, 64, 96, concept="diagonal")[1]["caption"] for _ in range(40)]
    assert any(" and to the " in c for c in captions) and any(re.search(r" and (left|right)", c) for c in captions)


def test_diagonal_examples(tmp_path):
    write_examples(tmp_path, concept="diagonal")
    prompts = (tmp_path / "prompts.txt").read_text().splitlines()
    assert [CAPTION.match(p).groups() for p in prompts] == [("up", "right"), ("up", "left"), ("down", "left"),
                                                            ("down", "right")]


def test_unknown_concept_is_refused_by_the_generator(tmp_path):
    with pytest.raises(ValueError, match="unknown concept 'zigzag'; expected one of none, diagonal"):
        generate_clip(np.random.default_rng(0), concept="zigzag")
    with pytest.raises(ValueError, match="unknown concept"):
        make_dataset(tmp_path, clips=1, images=1, heldout=1, concept="zigzag")
    assert not any(tmp_path.iterdir())


# ------------------------------------------------------------------------------------------------------------
# Evaluation
# ------------------------------------------------------------------------------------------------------------


def test_direction_of_diagonals():
    assert direction_of(None, diagonals=True) is None
    for name, (ux, uy) in DIAGONALS.items():
        assert direction_of((5.0 * ux, 5.0 * uy), diagonals=True) == name
    # 22 degrees off the down-right diagonal still counts, 23 degrees does not (it is then "right" or "down")
    for degrees, expected in [(45 - 22, "down-right"), (45 + 22, "down-right"), (45 - 23, "right"),
                              (45 + 23, "down"), (0, "right"), (180, "left"), (-90, "up")]:
        angle = math.radians(degrees)
        assert direction_of((10 * math.cos(angle), 10 * math.sin(angle)), diagonals=True) == expected, degrees
    # the length is the threshold: (1.5, 1.5) moves 2.1 px along the diagonal
    assert direction_of((1.5, 1.5), diagonals=True) == "down-right" and direction_of((1.5, 1.5)) == "still"
    assert direction_of((1.2, -1.2), diagonals=True) == "still"
    # without the flag: the four axis directions exactly as before, even for a perfect diagonal
    assert direction_of((5.0, 5.0)) == "right" and direction_of((-3.0, -4.0)) == "up"


def _outputs(dataset: Path, out: Path, mirror: bool = False) -> Path:
    """The held-out clips (or, `mirror`, their left-right mirror images) laid out like `opensora sample`'s."""
    from opensora_cli.data.media import read_video
    from opensora_cli.utils.video import write_video

    for entry in load_eval_set(dataset / "eval"):
        frames = read_video(dataset / "eval" / entry["video"], entry["frames"])
        if mirror:
            frames = np.ascontiguousarray(frames[:, :, ::-1])
        name = f"{entry['line']:04d}_x_s0"
        write_video(out / f"{name}.mp4", frames, fps=8)
        sidecar = {"video": f"{name}.mp4", "line": entry["line"], "sample": 0, "prompt": entry["caption"],
                   "num_frames": entry["frames"], "steps": 10, "seconds": 1.0}
        (out / f"{name}.json").write_text(json.dumps(sidecar))
    return out


def test_evaluation_follows_true_diagonal_clips_and_not_their_mirror(diagonal_set, tmp_path):
    entries = load_eval_set(diagonal_set / "eval")
    for mode in ("i2v", "transition"):
        report = evaluate(entries, diagonal_set / "eval", _outputs(diagonal_set, tmp_path / "true"), mode)
        assert report.videos == 8 and report.untrackable == 0
        assert [s.found for s in report.scores] == [s.expected for s in report.scores]
        assert report.direction_accuracy == 1.0
    report = evaluate(entries, diagonal_set / "eval", _outputs(diagonal_set, tmp_path / "mirror", True), "i2v")
    assert report.untrackable == 0 and report.direction_accuracy == 0.0
    mirrored = {"up-left": "up-right", "up-right": "up-left", "down-left": "down-right", "down-right": "down-left"}
    assert [s.found for s in report.scores] == [mirrored[s.expected] for s in report.scores]


def test_axis_entries_are_scored_as_before(diagonal_set):
    entry = load_eval_set(diagonal_set / "eval")[3]  # a down-right clip
    assert entry["direction"] == "down-right"
    from opensora_cli.data.media import read_video

    frames = read_video(diagonal_set / "eval" / entry["video"], entry["frames"])
    assert score_video(entry, diagonal_set / "eval", frames, "i2v")["found"] == "down-right"
    # the same video against an axis entry: scored in the four axis directions, by the dominant axis, as ever
    found = score_video({**entry, "direction": "right"}, diagonal_set / "eval", frames, "i2v")["found"]
    assert found == direction_of(fitted_displacement(track_shape(frames, entry["rgb"]))) and found in ("right", "down")
    # and an axis clip is followed as its direction
    video, meta = generate_clip(np.random.default_rng(4), 17, 64, 96, direction="up")
    axis_entry = {**meta, "line": 1, "first": entry["first"], "frames": 17}
    assert score_video(axis_entry, diagonal_set / "eval", video, "i2v")["found"] == "up"


# ------------------------------------------------------------------------------------------------------------
# The command
# ------------------------------------------------------------------------------------------------------------


def test_make_demo_data_diagonal_command(cli, tmp_path):
    result = cli("make-demo-data", "out", "--clips", "2", "--images", "1", "--heldout", "4", "--frames", "9",
                 "--concept", "diagonal")
    assert result.code == 0, result.err
    assert result.out.startswith("wrote 2 clips, 1 images and 4 held-out clips (9x64x96, diagonal motion) to ")
    assert [e["direction"] for e in load_eval_set(tmp_path / "out/eval")] == list(DIAGONALS)
    assert "--concept" in cli("make-demo-data", "--help").out


@pytest.mark.parametrize("value", ["diag", "Diagonal", ""])
def test_a_bad_concept_is_one_line(cli, tmp_path, value):
    result = cli("make-demo-data", "out", "--concept", value)
    assert result.code == 1 and result.err == f"Error: --concept: '{value}' is not a concept; use none or diagonal\n"
    assert "Traceback" not in result.out + result.err and not (tmp_path / "out").exists()
