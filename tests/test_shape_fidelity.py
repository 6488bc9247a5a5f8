"""Shape fidelity of `services.evaluation`: the re-centred silhouette IoU against the held-out ground truth. A
clip whose shape moves rigidly scores near 1 wherever it is; the same clip blurred, or with the shape gone,
scores low; the report and benchmarks/demo_quality.py carry it per mask type."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from opensora_cli.data.media import read_video
from opensora_cli.data.synthetic import generate_clip, make_dataset
from opensora_cli.services.evaluation import evaluate, load_eval_set, recentred_iou, shape_iou, silhouette

REPO = Path(__file__).resolve().parents[1]


def _rigid(clip: np.ndarray, centroids) -> np.ndarray:
    """Frame 0 moved by whole pixels along the true centroids: the true shape, rigidly moved."""
    x0, y0 = centroids[0]
    return np.stack([np.roll(clip[0], (round(y - y0), round(x - x0)), axis=(0, 1)) for x, y in centroids])


def _blur(frames: np.ndarray, radius: int) -> np.ndarray:
    """A box blur of (2 r + 1)^2 pixels on every frame."""
    acc = np.zeros(frames.shape, np.float64)
    for dy in range(-radius, radius + 1):
        for dx in range(-radius, radius + 1):
            acc += np.roll(frames.astype(np.float64), (dy, dx), axis=(1, 2))
    return (acc / (2 * radius + 1) ** 2).round().astype(np.uint8)


@pytest.mark.parametrize("seed", range(6))
def test_rigid_motion_scores_near_one_and_blur_scores_low(seed):
    clip, meta = generate_clip(np.random.default_rng(seed))
    rigid = shape_iou(_rigid(clip, meta["centroids"]), clip, meta["rgb"])
    assert len(rigid) == 17 and rigid[0] == 1.0
    assert np.mean(rigid[1:]) > 0.9 and min(rigid[1:]) > 0.85, rigid  # measured 0.91-0.98
    blurred = shape_iou(_blur(clip, 3), clip, meta["rgb"])  # a 7 x 7 blur: measured 0.59-0.77 on these seeds
    assert np.mean(blurred[1:]) < 0.8 and np.mean(rigid[1:]) - np.mean(blurred[1:]) > 0.15, blurred
    assert np.mean(shape_iou(_blur(clip, 1), clip, meta["rgb"])) > np.mean(blurred)  # the more blur, the lower


def test_where_the_shape_is_does_not_count_and_a_lost_shape_is_zero():
    clip, meta = generate_clip(np.random.default_rng(7))
    mask = silhouette(clip[0], meta["rgb"])
    assert mask.sum() > 300 and np.nonzero(mask)[0].min() > 20 and np.nonzero(mask)[1].min() > 30
    assert recentred_iou(mask, np.roll(mask, (-9, -23), axis=(0, 1))) == 1.0  # moved, not wrapped
    assert recentred_iou(mask, np.zeros_like(mask)) == 0.0
    square = np.zeros((64, 96), bool)
    square[20:40, 30:50] = True
    wide = np.zeros((64, 96), bool)
    wide[25:35, 20:60] = True  # same area, other form
    assert recentred_iou(square, wide) == pytest.approx(200 / 600)


@pytest.fixture(scope="module")
def heldout(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("shape")
    make_dataset(out, clips=1, images=1, heldout=4, seed=31)
    return out / "eval"


def _outputs(eval_dir: Path, out: Path, transform) -> Path:
    """An `opensora sample` output folder whose videos are the held-out clips, transformed."""
    from opensora_cli.utils.video import write_video

    out.mkdir()
    for entry in load_eval_set(eval_dir):
        frames = transform(read_video(eval_dir / entry["video"], entry["frames"]), entry)
        name = f"{entry['line']:04d}_x_s0"
        write_video(out / f"{name}.mp4", frames, fps=8)
        (out / f"{name}.json").write_text(json.dumps({"video": f"{name}.mp4", "line": entry["line"], "sample": 0,
                                                      "prompt": entry["caption"], "num_frames": entry["frames"]}))
    return out


def test_the_report_and_the_benchmark_carry_shape_fidelity(heldout, tmp_path):
    entries = load_eval_set(heldout)
    true = _outputs(heldout, tmp_path / "true", lambda frames, entry: frames)
    smeared = _outputs(heldout, tmp_path / "smeared", lambda frames, entry: np.concatenate(
        [frames[:1], _blur(frames[1:], 3)]))  # frame 0 kept, the generated frames blurred
    for mode in ("i2v", "transition"):
        report = evaluate(entries, heldout, true, mode)
        assert report.shape_iou_mean > 0.9 and report.kept_shape_iou_mean > 0.9
        assert len(report.shape_iou_by_frame()) == 17
    report = evaluate(entries, heldout, smeared, "i2v")
    assert report.shape_iou_mean < 0.75 and report.kept_shape_iou_mean > 0.9  # frame 0 was not blurred
    assert report.shape_iou_good_share < 0.5
    sys.path.insert(0, str(REPO / "benchmarks"))
    try:
        import demo_quality
    finally:
        sys.path.remove(str(REPO / "benchmarks"))
    table = tmp_path / "q.json"
    assert demo_quality.main(["--eval", str(heldout), "--outputs", str(smeared), "--outputs-transition", str(true),
                              "--json", str(table)]) == 0
    numbers = json.loads(table.read_text())
    assert [run["mode"] for run in numbers] == ["i2v", "transition"]
    assert numbers[0]["shape_iou_mean"] < 0.75 < 0.9 < numbers[1]["shape_iou_mean"]
    assert len(numbers[0]["per_video"]) == 4 and len(numbers[0]["per_video"][0]["shape_iou"]) == 17
    # the first kept frame is reported alone: i2v's is its only one, a transition's is frame 0 of two
    assert numbers[0]["first_psnr_mean"] == numbers[0]["kept_psnr_mean"] and numbers[0]["last_psnr_mean"] is None
    firsts = [video["kept_psnr"][0] for video in numbers[1]["per_video"]]
    assert numbers[1]["first_psnr_mean"] == pytest.approx(sum(firsts) / len(firsts), abs=1e-3)
