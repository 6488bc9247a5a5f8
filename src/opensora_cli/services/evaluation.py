"""Quality of generated videos in the synthetic demo domain (`data.synthetic`), measured against its metadata.

    entries = load_eval_set("demo_data/eval")
    report = evaluate(entries, "demo_data/eval", "samples/i2v", "i2v")  # outputs of `opensora sample`
    report.direction_accuracy, report.kept_psnr_mean, ...

Metrics (no torch, numpy + decord + Pillow):
- kept-frame fidelity: PSNR of generated frame 0 (i2v), or of frames 0 and -1 (transition), against the
  condition images;
- end frame reached (transition): the tracked shape's final centroid within `END_TOLERANCE` px of the target's;
- shape fidelity: at every frame, the silhouette of the shape's colour, moved so its centroid is in the middle,
  against the ground-truth clip's (`shape_iou`): motion errors do not count, a melting or blurring shape does;
- motion follows the prompt: the shape is tracked by colour in every frame and the direction of its fitted
  displacement is compared with the prompt's. Axis directions (left, right, up, down) are told apart by the
  dominant axis; a diagonal entry ("up-left", ... from `make-demo-data --concept diagonal`) is followed when the
  displacement lies within `DIAGONAL_TOLERANCE` degrees of its diagonal (`direction_of(..., diagonals=True)`).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from opensora_cli.errors import InputError

PSNR_CAP = 100.0  # dB, the PSNR of identical frames (the MSE is 0, the ratio infinite)
GOOD_PSNR = 28.0  # dB: a kept frame above this looks like its condition
IOU_SUBPIXELS = 4  # silhouettes are re-centred to a quarter pixel
SHAPE_GOOD_IOU = 0.85  # re-centred silhouette IoU: at this the shape reads as the one drawn (rigid motion ~0.95)
# A pixel belongs to the shape when its RGB is within this Euclidean distance of the shape colour: shape colours
# lie > 100 units from every background (base +- texture), edge pixels count from ~40 % coverage on.
TRACK_DISTANCE = 60.0
MIN_SHAPE_PIXELS = 20  # fewer matching pixels: the shape is not in this frame
MIN_DISPLACEMENT = 2.0  # px over the clip; less is "still", which matches no direction
END_TOLERANCE = 4.0  # px between the final centroid and the target's
# Signs (x, y) of the diagonals (rows grow downwards), as `data.synthetic.DIAGONALS` draws them.
DIAGONALS: dict[str, tuple[int, int]] = {"up-left": (-1, -1), "up-right": (1, -1), "down-left": (-1, 1),
                                         "down-right": (1, 1)}
# Degrees either side of a diagonal that still count as it: half the 45 degrees between a diagonal and an axis,
# so the eight directions split the circle into equal sectors and none overlap.
DIAGONAL_TOLERANCE = 22.5


# ------------------------------------------------------------------------------------------------------------
# Metrics on arrays
# ------------------------------------------------------------------------------------------------------------


def psnr(a: np.ndarray, b: np.ndarray, cap: float = PSNR_CAP) -> float:
    """PSNR in dB of two uint8 images (or stacks) of one shape, peak 255; identical inputs give `cap`."""
    if a.shape != b.shape:
        raise ValueError(f"psnr needs arrays of one shape, got {a.shape} and {b.shape}")
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return cap if mse == 0 else min(cap, 10 * math.log10(255.0**2 / mse))


def track_shape(frames: np.ndarray, rgb: Sequence[int], max_distance: float = TRACK_DISTANCE,
                min_pixels: int = MIN_SHAPE_PIXELS) -> list[tuple[float, float] | None]:
    """Centroid (x = column, y = row) of the pixels of the shape colour `rgb` in each of the (T, H, W, 3) uint8
    frames, or None where too few match."""
    distance = np.linalg.norm(frames.astype(np.float32) - np.asarray(rgb, np.float32), axis=-1)  # (T, H, W)
    centroids: list[tuple[float, float] | None] = []
    for match in distance <= max_distance:
        rows, cols = np.nonzero(match)
        centroids.append((float(cols.mean()), float(rows.mean())) if rows.size >= min_pixels else None)
    return centroids


def silhouette(frame: np.ndarray, rgb: Sequence[int], max_distance: float = TRACK_DISTANCE) -> np.ndarray:
    """(H, W) bool: the pixels of one (H, W, 3) uint8 frame within `max_distance` of the shape colour `rgb`."""
    return np.linalg.norm(frame.astype(np.float32) - np.asarray(rgb, np.float32), axis=-1) <= max_distance


def recentred_iou(a: np.ndarray, b: np.ndarray, min_pixels: int = MIN_SHAPE_PIXELS,
                  subpixels: int = IOU_SUBPIXELS) -> float:
    """Intersection over union of two (H, W) bool silhouettes after moving each one's centroid to the middle
    of a canvas twice their size, so where a shape is does not count, only its form. The masks are aligned on a
    grid `subpixels` times finer than the pixels (whole-pixel alignment costs a thin triangle 0.17 of IoU for
    nothing but its sub-pixel position). 0.0 when either has fewer than `min_pixels` pixels (the shape is lost).
    """
    if int(a.sum()) < min_pixels or int(b.sum()) < min_pixels:
        return 0.0
    k = subpixels
    height, width = a.shape
    canvases = []
    for mask in (a, b):
        fine = np.kron(mask, np.ones((k, k), bool))  # (k H, k W): each pixel a k x k block
        rows, cols = np.nonzero(fine)
        dy, dx = k * height - round(float(rows.mean())), k * width - round(float(cols.mean()))
        canvas = np.zeros((2 * k * height, 2 * k * width), bool)
        canvas[rows + dy, cols + dx] = True
        canvases.append(canvas)
    return int(np.logical_and(*canvases).sum()) / int(np.logical_or(*canvases).sum())


def shape_iou(frames: np.ndarray, truth: np.ndarray, rgb: Sequence[int]) -> list[float]:
    """The re-centred silhouette IoU (`recentred_iou`) of each generated (T, H, W, 3) frame against the same
    frame of the ground-truth clip `truth` (T, H, W, 3): 1.0 for the true shape anywhere in the frame, lower as
    it blurs, shrinks or melts. Frames beyond the shorter of the two are left out."""
    return [recentred_iou(silhouette(made, rgb), silhouette(true, rgb)) for made, true in zip(frames, truth)]


def fitted_displacement(centroids: Sequence[tuple[float, float] | None]) -> tuple[float, float] | None:
    """(dx, dy) from the first to the last tracked frame along a least-squares line through the tracked centroids
    (robust to one noisy frame), or None with fewer than two tracked frames."""
    points = [(t, c) for t, c in enumerate(centroids) if c is not None]
    if len(points) < 2:
        return None
    t = np.array([p[0] for p in points], np.float64)
    xy = np.array([p[1] for p in points], np.float64)  # (N, 2)
    slope = np.polyfit(t, xy, 1)[0]  # (2,) px per frame
    return float(slope[0] * (t[-1] - t[0])), float(slope[1] * (t[-1] - t[0]))


def direction_of(displacement: tuple[float, float] | None, min_displacement: float = MIN_DISPLACEMENT,
                 diagonals: bool = False) -> str | None:
    """"left", "right", "up" or "down" from the dominant axis and sign (rows grow downwards), "still" below
    `min_displacement` px, None when there is no displacement.

    With `diagonals`, eight directions: a key of DIAGONALS when the (dx, dy) displacement's angle lies within
    DIAGONAL_TOLERANCE degrees of that diagonal, else the axis direction as above; "still" is then a length
    (hypot) below `min_displacement`, since a diagonal's per-axis components are only 1/sqrt(2) of its length.
    Without it (the default) the result is what it always was: axis-only eval sets score as before.
    """
    if displacement is None:
        return None
    dx, dy = displacement
    length = math.hypot(dx, dy) if diagonals else max(abs(dx), abs(dy))
    if length < min_displacement:
        return "still"
    if diagonals:
        for name, (ux, uy) in DIAGONALS.items():
            # angle between the displacement and the diagonal's unit vector, 0..180 degrees
            cosine = (dx * ux + dy * uy) / (math.sqrt(2) * length)
            if math.degrees(math.acos(max(-1.0, min(1.0, cosine)))) <= DIAGONAL_TOLERANCE:
                return name
    if abs(dx) >= abs(dy):
        return "right" if dx > 0 else "left"
    return "down" if dy > 0 else "up"


# ------------------------------------------------------------------------------------------------------------
# Files
# ------------------------------------------------------------------------------------------------------------


def load_eval_set(eval_dir: str | Path) -> list[dict[str, Any]]:
    """The entries of `eval_dir/metadata.json` (written by `make_dataset`), one per prompt line, in line order."""
    path = Path(eval_dir) / "metadata.json"
    try:
        entries = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"{path}: not found — give the eval/ folder written by `opensora make-demo-data`") from None
    except (OSError, json.JSONDecodeError) as exc:
        raise InputError(f"{path}: cannot read it ({exc})") from None
    if not isinstance(entries, list) or not entries:
        raise InputError(f"{path}: expected a non-empty JSON list of held-out clips")
    return entries


def load_outputs(outputs_dir: str | Path) -> list[tuple[dict[str, Any], Path]]:
    """(sidecar, video path) for every `*.json` sidecar of `opensora sample` in `outputs_dir`, sorted by name."""
    outputs_dir = Path(outputs_dir)
    if not outputs_dir.is_dir():
        raise InputError(f"{outputs_dir}: not a folder — give the --output-dir of `opensora sample`")
    found = []
    for sidecar_path in sorted(outputs_dir.glob("*.json")):
        try:
            sidecar = json.loads(sidecar_path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise InputError(f"{sidecar_path}: cannot read the sidecar ({exc})") from None
        if not isinstance(sidecar, dict) or "line" not in sidecar or "video" not in sidecar:
            continue  # not a sample sidecar
        found.append((sidecar, outputs_dir / sidecar["video"]))
    if not found:
        raise InputError(f"{outputs_dir}: no sample sidecars (*.json with 'line' and 'video') found")
    return found


def read_frames(path: Path, num_frames: int) -> np.ndarray:
    """All `num_frames` frames of a generated video (T, H, W, 3) uint8 (a .png is one frame)."""
    from opensora_cli.data.media import read_image, read_video

    try:
        if path.suffix.lower() == ".png":
            return read_image(path)[None]
        return read_video(path, num_frames)
    except FileNotFoundError:
        raise InputError(f"{path}: the video of this sidecar is missing") from None
    except Exception as exc:  # decoder errors have many types
        raise InputError(f"{path}: cannot decode it ({exc})") from None


# ------------------------------------------------------------------------------------------------------------
# One run
# ------------------------------------------------------------------------------------------------------------


@dataclass
class VideoScore:
    """Scores of one generated video (None where the metric does not apply)."""

    line: int
    video: str
    expected: str  # the prompt's direction
    found: str | None  # tracked direction ("still" if it did not move); None if untrackable
    tracked_frames: int
    frames: int
    kept_psnr: list[float]  # first (and last, transition) frame vs condition image(s)
    end_error: float | None  # transition: px between the final tracked centroid and the target's
    seconds: float | None
    steps: int | None
    # re-centred silhouette IoU against the ground-truth clip, one per frame (empty without the clip), and
    # which of those frames were kept (conditions) rather than generated
    shape_iou: list[float] = field(default_factory=list)
    kept_frames: tuple[int, ...] = ()

    @property
    def generated_shape_iou(self) -> list[float]:
        return [v for t, v in enumerate(self.shape_iou) if t not in self.kept_frames]

    @property
    def trackable(self) -> bool:
        return self.found is not None and 2 * self.tracked_frames >= self.frames


@dataclass
class EvalReport:
    """Aggregate scores of one run (i2v or transition) over its videos."""

    mode: str
    scores: list[VideoScore] = field(default_factory=list)

    @property
    def videos(self) -> int:
        return len(self.scores)

    @property
    def kept_psnr_mean(self) -> float:
        return _mean([p for s in self.scores for p in s.kept_psnr])

    @property
    def kept_good_share(self) -> float:
        return _mean([p > GOOD_PSNR for s in self.scores for p in s.kept_psnr])

    @property
    def first_psnr_mean(self) -> float:
        """The mean PSNR of each video's first kept frame: i2v's only one, a transition's frame 0. It has a latent
        frame of its own; a transition's last frame shares one with three generated frames, so the two are
        reported apart (`last_psnr_mean`) as well as together (`kept_psnr_mean`)."""
        return _mean([s.kept_psnr[0] for s in self.scores if s.kept_psnr])

    @property
    def last_psnr_mean(self) -> float:
        """Transition: the mean PSNR of the last frame against the target last frame."""
        return _mean([s.kept_psnr[-1] for s in self.scores if len(s.kept_psnr) == 2])

    @property
    def end_reached_share(self) -> float:
        """Transition: share of videos whose final tracked centroid lies within END_TOLERANCE px of the target's
        (an untracked final frame counts as not reached)."""
        reached = [s.end_error is not None and s.end_error <= END_TOLERANCE for s in self.scores]
        return _mean(reached if self.mode == "transition" else [])

    @property
    def end_error_mean(self) -> float:
        """Transition: the mean distance in px between the final tracked centroid and the target's (untracked final
        frames left out); it tells a last frame that ends short of its target from one that ends on it blurred."""
        return _mean([s.end_error for s in self.scores if s.end_error is not None])

    @property
    def shape_iou_mean(self) -> float:
        """The mean re-centred silhouette IoU over every generated frame of every video."""
        return _mean([v for s in self.scores for v in s.generated_shape_iou])

    @property
    def shape_iou_good_share(self) -> float:
        """The share of generated frames whose silhouette IoU reaches SHAPE_GOOD_IOU."""
        return _mean([v >= SHAPE_GOOD_IOU for s in self.scores for v in s.generated_shape_iou])

    @property
    def kept_shape_iou_mean(self) -> float:
        """The silhouette IoU of the kept frames: the VAE's round trip bounds it."""
        return _mean([s.shape_iou[t] for s in self.scores for t in s.kept_frames if t < len(s.shape_iou)])

    def shape_iou_by_frame(self) -> list[float]:
        """The mean silhouette IoU at each frame index over the videos (kept frames included)."""
        length = max((len(s.shape_iou) for s in self.scores), default=0)
        return [_mean([s.shape_iou[t] for s in self.scores if t < len(s.shape_iou)]) for t in range(length)]

    @property
    def untrackable(self) -> int:
        return sum(not s.trackable for s in self.scores)

    @property
    def direction_accuracy(self) -> float:
        """Share of trackable videos whose direction matches the prompt's."""
        return _mean([s.found == s.expected for s in self.scores if s.trackable])

    @property
    def seconds_mean(self) -> float:
        return _mean([s.seconds for s in self.scores if s.seconds is not None])

    @property
    def steps(self) -> list[int]:
        return sorted({s.steps for s in self.scores if s.steps is not None})


def _mean(values: list) -> float:
    return float(np.mean(values)) if values else float("nan")


def score_video(entry: dict[str, Any], eval_dir: Path, frames: np.ndarray, mode: str) -> dict[str, Any]:
    """The metrics of one generated video (T, H, W, 3) against its held-out entry; `mode` "i2v" or "transition"."""
    from opensora_cli.data.media import read_image

    first = read_image(eval_dir / entry["first"])
    if frames.shape[1:] != first.shape:
        raise InputError(f"line {entry['line']}: generated frames are {frames.shape[1]}x{frames.shape[2]}, the eval "
                         f"set's {first.shape[0]}x{first.shape[1]} — sample with --crop-for-hw --height "
                         f"{first.shape[0]} --width {first.shape[1]}")
    kept = [psnr(frames[0], first)]
    centroids = track_shape(frames, entry["rgb"])
    truth_path = eval_dir / entry["video"] if entry.get("video") else None
    truth = read_frames(truth_path, int(entry["frames"])) if truth_path is not None and truth_path.is_file() else None
    end_error = None
    if mode == "transition":
        kept.append(psnr(frames[-1], read_image(eval_dir / entry["last"])))
        if centroids[-1] is not None:
            end_error = math.dist(centroids[-1], entry["centroids"][-1])
    return {
        "expected": entry["direction"],
        # a diagonal entry is scored in eight directions (missing it by an axis shows as e.g. "left")
        "found": direction_of(fitted_displacement(centroids), diagonals=entry["direction"] in DIAGONALS),
        "tracked_frames": sum(c is not None for c in centroids),
        "frames": len(centroids),
        "kept_psnr": kept,
        "end_error": end_error,
        "shape_iou": shape_iou(frames, truth, entry["rgb"]) if truth is not None else [],
        "kept_frames": (0, len(frames) - 1) if mode == "transition" else (0,),
    }


def evaluate(entries: list[dict[str, Any]], eval_dir: str | Path, outputs_dir: str | Path, mode: str) -> EvalReport:
    """Score every output of `opensora sample` in `outputs_dir` against its prompt line's entry of `entries`
    (`load_eval_set(eval_dir)`); `mode` "i2v" (outputs of eval/conds.txt) or "transition" (of transition_conds.txt).

    Raises:
        InputError: a sidecar whose line or prompt is not the eval set's, a missing or undecodable video, a
            generated size that differs from the eval set's.
    """
    if mode not in ("i2v", "transition"):
        raise ValueError(f"mode must be 'i2v' or 'transition', got {mode!r}")
    eval_dir = Path(eval_dir)
    report = EvalReport(mode)
    for sidecar, video in load_outputs(outputs_dir):
        line = sidecar["line"]
        entry = entries[line - 1] if isinstance(line, int) and 1 <= line <= len(entries) else None
        if entry is None or sidecar.get("prompt", entry["caption"]) != entry["caption"]:
            raise InputError(f"{video}: line {line} ({sidecar.get('prompt')!r}) is not line {line} of "
                             f"{eval_dir / 'prompts.txt'} — sample with that prompts file")
        frames = read_frames(video, int(sidecar.get("num_frames", entry["frames"])))
        scores = score_video(entry, eval_dir, frames, mode)
        report.scores.append(VideoScore(line=line, video=video.name, seconds=sidecar.get("seconds"),
                                        steps=sidecar.get("steps"), **scores))
    return report
