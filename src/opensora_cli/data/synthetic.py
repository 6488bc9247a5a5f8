"""A synthetic video domain for the demo model: one coloured shape moving in a straight line over a dark background.

    rng = np.random.default_rng(0)
    frames, meta = generate_clip(rng, frames=17, height=64, width=96)  # (17, 64, 96, 3) uint8, metadata
    make_dataset("demo_data", clips=2000)  # videos/, images/, annotation.json, data.txt, eval/
    make_dataset("diag_data", clips=500, concept="diagonal")  # every clip moves along a diagonal

Everything a tiny model must learn is in the caption ("a red circle moves to the left"), and everything the
evaluation checks is in the metadata (colour rgb, direction, centroid per frame), so no caption is ever parsed.
The demo model is trained on the four axis directions only (concept "none"); concept "diagonal" draws every clip
along one of four diagonals instead, a motion that model has never seen, for fine-tuning experiments (LoRA).
Shapes are drawn by 8x8 supersampling of their exact outline, so motion is sub-pixel smooth and the metadata
centroid (the coverage-weighted mean, in pixel-index coordinates: column x, row y) is exact. Backgrounds are
dark and smooth so every shape stands out and a tiny VAE can reconstruct them. numpy, Pillow and imageio only.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from opensora_cli.utils.io import atomic_path
from opensora_cli.utils.video import write_image, write_video

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (225, 40, 40),
    "green": (40, 205, 70),
    "blue": (50, 110, 245),
    "yellow": (240, 220, 40),
    "purple": (175, 70, 220),
    "white": (240, 240, 240),
}
SHAPES = ("circle", "square", "triangle")
DIRECTIONS: dict[str, tuple[int, int]] = {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1)}
# Signs (x, y) of the diagonal motions (rows grow downwards); the unit vector is (ux, uy) / sqrt(2).
DIAGONALS: dict[str, tuple[int, int]] = {"up-left": (-1, -1), "up-right": (1, -1), "down-left": (-1, 1),
                                         "down-right": (1, 1)}
# Which directions a data set's clips move in, by --concept: "none" is the demo model's own domain.
CONCEPTS: dict[str, dict[str, tuple[int, int]]] = {"none": DIRECTIONS, "diagonal": DIAGONALS}
BACKGROUNDS: dict[str, tuple[int, int, int]] = {
    "dark grey": (45, 45, 45),
    "navy": (20, 25, 70),
    "dark green": (20, 60, 30),
    "brown": (70, 45, 25),
}
TEXTURES = ("plain", "gradient", "stripes", "checks")
TEXTURE_WORDS = {"plain": "", "gradient": " with a soft gradient", "stripes": " with soft stripes",
                 "checks": " with soft checks"}
# Peak deviation of a texture from its base colour: low contrast keeps every shape > 100 RGB units away.
TEXTURE_AMPLITUDE = 14.0
SHAPE_SIZE = (20.0, 26.0)  # side of the shape's bounding box, pixels (about 3 latent cells of the 8x VAE)
SPEED = (1.5, 2.5)  # pixels per frame, along the motion (a diagonal's per-axis steps are speed / sqrt(2))
MARGIN = 1.0  # pixels kept between the shape and the frame border
SUPERSAMPLE = 8  # sub-samples per pixel side: centroids step within 1/8 px of the nominal speed
FPS = 8
# H.264 at CRF 10: compression artefacts would be one more thing a tiny VAE has to learn.
DATASET_CRF = 10


# ------------------------------------------------------------------------------------------------------------
# Drawing
# ------------------------------------------------------------------------------------------------------------


def _background(rng: np.random.Generator, height: int, width: int) -> tuple[np.ndarray, str, str]:
    """A (H, W, 3) float32 background, its description ("navy background with soft stripes") and texture."""
    name = str(rng.choice(list(BACKGROUNDS)))
    texture = str(rng.choice(TEXTURES))
    base = np.array(BACKGROUNDS[name], np.float32)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    angle = rng.uniform(0, np.pi)
    along = (x - width / 2) * np.cos(angle) + (y - height / 2) * np.sin(angle)
    if texture == "gradient":  # a linear ramp over the frame's extent along a random direction
        field = 2 * along / (abs(width * np.cos(angle)) + abs(height * np.sin(angle)))
    elif texture == "stripes":
        field = np.sin(2 * np.pi * along / rng.uniform(24, 40) + rng.uniform(0, 2 * np.pi))
    elif texture == "checks":
        period = rng.uniform(28, 44)
        field = np.sin(2 * np.pi * x / period + rng.uniform(0, 2 * np.pi)) * np.sin(2 * np.pi * y / period)
    else:
        field = np.zeros_like(x)
    image = base + TEXTURE_AMPLITUDE * field[..., None]  # same shift on every channel: the hue stays
    return image, f"{name} background{TEXTURE_WORDS[texture]}", texture


def _coverage(shape: str, cx: float, cy: float, size: float, height: int, width: int):
    """Anti-aliased coverage of a shape centred (bounding box) at (cx, cy): (alpha patch, row slice, col slice).

    Pixel (row i, column j) covers [j - 0.5, j + 0.5) x [i - 0.5, i + 0.5); alpha is the share of its
    SUPERSAMPLE x SUPERSAMPLE sub-samples inside the shape.
    """
    half = size / 2
    r0, r1 = max(int(np.floor(cy - half)) - 1, 0), min(int(np.ceil(cy + half)) + 2, height)
    c0, c1 = max(int(np.floor(cx - half)) - 1, 0), min(int(np.ceil(cx + half)) + 2, width)
    sub = (np.arange(SUPERSAMPLE) + 0.5) / SUPERSAMPLE - 0.5
    ys = (np.arange(r0, r1)[:, None] + sub).reshape(-1, 1) - cy  # (rows * S, 1), relative to the centre
    xs = (np.arange(c0, c1)[:, None] + sub).reshape(1, -1) - cx  # (1, cols * S)
    if shape == "circle":
        inside = xs**2 + ys**2 <= half**2
    elif shape == "square":
        inside = (np.abs(xs) <= half) & (np.abs(ys) <= half)
    elif shape == "triangle":  # apex up, base at the bottom of the bounding box
        inside = (ys >= -half) & (ys <= half) & (np.abs(xs) <= (ys + half) / 2)
    else:
        raise ValueError(f"unknown shape {shape!r}; expected one of {', '.join(SHAPES)}")
    alpha = inside.reshape(r1 - r0, SUPERSAMPLE, c1 - c0, SUPERSAMPLE).mean(axis=(1, 3), dtype=np.float32)
    return alpha, slice(r0, r1), slice(c0, c1)


def _draw(background: np.ndarray, shape: str, rgb, cx: float, cy: float, size: float):
    """Composite the shape over a copy of the background: (uint8 frame, (x, y) coverage-weighted centroid)."""
    height, width = background.shape[:2]
    alpha, rows, cols = _coverage(shape, cx, cy, size, height, width)
    frame = background.copy()
    frame[rows, cols] = frame[rows, cols] * (1 - alpha[..., None]) + np.asarray(rgb, np.float32) * alpha[..., None]
    total = alpha.sum()
    x = float((alpha.sum(axis=0) * np.arange(cols.start, cols.stop)).sum() / total)
    y = float((alpha.sum(axis=1) * np.arange(rows.start, rows.stop)).sum() / total)
    return np.clip(np.rint(frame), 0, 255).astype(np.uint8), (round(x, 3), round(y, 3))


# ------------------------------------------------------------------------------------------------------------
# Clips and images
# ------------------------------------------------------------------------------------------------------------


def generate_clip(rng: np.random.Generator, frames: int = 17, height: int = 64, width: int = 96,
                  direction: str | None = None, concept: str = "none") -> tuple[np.ndarray, dict[str, Any]]:
    """One clip: a shape of random colour, kind and size moving at constant speed, fully inside every frame.

    Args:
        rng: all randomness comes from it (same state, same clip).
        frames, height, width: clip size T x H x W (height and width >= 32).
        direction: force a direction (a key of DIRECTIONS or DIAGONALS); random among `concept`'s when None.
        concept: a key of CONCEPTS, the directions a random draw picks from ("none": left, right, up, down;
            "diagonal": up-left, up-right, down-left, down-right). "none" draws exactly as before concepts existed.

    Returns:
        (T, H, W, 3) uint8 frames and the metadata: colour, rgb, shape, direction, velocity (dx, dy) px/frame,
        centroids [(x, y)] per frame (column, row; coverage-weighted), size, background, texture, caption.
    """
    colour = str(rng.choice(list(COLOURS)))
    shape = str(rng.choice(SHAPES))
    if concept not in CONCEPTS:
        raise ValueError(f"unknown concept {concept!r}; expected one of {', '.join(CONCEPTS)}")
    direction = str(rng.choice(list(CONCEPTS[concept]))) if direction is None else direction
    background, description, texture = _background(rng, height, width)
    size = float(min(rng.uniform(*SHAPE_SIZE), min(height, width) / 2.5))
    if direction in DIAGONALS:
        # Separate path so the axis directions below keep drawing exactly what they always drew.
        x0, y0, velocity = _diagonal_motion(rng, direction, frames, height, width, size)
        vertical, horizontal = direction.split("-")
        # "up and to the left" or "up and left", like the axis captions' "to the left" / "left"
        phrase = f"{vertical} and {'to the ' if rng.random() < 0.5 else ''}{horizontal}"
    else:
        ux, uy = DIRECTIONS[direction]
        steps = max(frames - 1, 1)
        room = (width if ux else height) - size - 2 * MARGIN  # the most travel the motion axis allows
        speed = float(min(rng.uniform(*SPEED), room / steps))
        travel = speed * (frames - 1)
        # Centre ranges (pixel-index coordinates) that keep the whole shape inside; long clips get a lower speed.
        low = size / 2 + MARGIN - 0.5
        x_hi, y_hi = width - 0.5 - size / 2 - MARGIN, height - 0.5 - size / 2 - MARGIN
        if ux:  # start so that start + travel stays inside too
            x0 = rng.uniform(low, max(low, x_hi - travel)) + (travel if ux < 0 else 0.0)  # max: float rounding
            y0 = rng.uniform(low, y_hi)
        else:
            y0 = rng.uniform(low, max(low, y_hi - travel)) + (travel if uy < 0 else 0.0)
            x0 = rng.uniform(low, x_hi)
        velocity = (speed * ux, speed * uy)
        phrase = f"to the {direction}" if direction in ("left", "right") and rng.random() < 0.5 else direction
    caption = f"a {colour} {shape} moves {phrase}"
    if rng.random() < 0.5:
        caption += f" on a {description}"
    out = np.empty((frames, height, width, 3), np.uint8)
    centroids = []
    for t in range(frames):
        out[t], centroid = _draw(background, shape, COLOURS[colour], x0 + velocity[0] * t, y0 + velocity[1] * t, size)
        centroids.append(centroid)
    return out, {"colour": colour, "rgb": list(COLOURS[colour]), "shape": shape, "direction": direction,
                 "velocity": [round(velocity[0], 4), round(velocity[1], 4)], "centroids": [list(c) for c in centroids],
                 "size": round(size, 3), "background": description, "texture": texture, "caption": caption}


def _diagonal_motion(rng: np.random.Generator, direction: str, frames: int, height: int, width: int,
                     size: float) -> tuple[float, float, tuple[float, float]]:
    """Start centre (x0, y0) and velocity (dx, dy) px/frame of a diagonal clip whose shape (bounding box `size`)
    stays MARGIN px inside every frame on both axes.

    The speed along the diagonal is drawn from SPEED like an axis clip's, so a diagonal is neither faster nor
    slower on screen; each axis then moves speed / sqrt(2) per frame, and the speed is capped so that the
    per-axis travel fits the tighter axis (the height, in landscape frames).
    """
    ux, uy = DIAGONALS[direction]
    steps = max(frames - 1, 1)
    room = min(width, height) - size - 2 * MARGIN  # the most per-axis travel both axes allow
    speed = float(min(rng.uniform(*SPEED), np.sqrt(2) * room / steps))
    travel = speed / np.sqrt(2) * (frames - 1)  # on each axis
    low = size / 2 + MARGIN - 0.5
    x_hi, y_hi = width - 0.5 - size / 2 - MARGIN, height - 0.5 - size / 2 - MARGIN
    # As for an axis clip, on both axes: start where start + travel still lies inside (max: float rounding).
    x0 = rng.uniform(low, max(low, x_hi - travel)) + (travel if ux < 0 else 0.0)
    y0 = rng.uniform(low, max(low, y_hi - travel)) + (travel if uy < 0 else 0.0)
    step = speed / np.sqrt(2)
    return float(x0), float(y0), (float(step * ux), float(step * uy))


def generate_image(rng: np.random.Generator, height: int = 64, width: int = 96) -> tuple[np.ndarray, dict[str, Any]]:
    """One still image of the domain: (H, W, 3) uint8 and metadata with the caption "a {colour} {shape}"."""
    frames, meta = generate_clip(rng, 1, height, width)
    caption = f"a {meta['colour']} {meta['shape']}"
    if rng.random() < 0.5:
        caption += f" on a {meta['background']}"
    meta = {key: meta[key] for key in ("colour", "rgb", "shape", "centroids", "size", "background", "texture")}
    return frames[0], {**meta, "caption": caption}


# ------------------------------------------------------------------------------------------------------------
# Files
# ------------------------------------------------------------------------------------------------------------


def _write_json(path: Path, data: Any) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")


def _write_lines(path: Path, lines: list[str]) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text("".join(line + "\n" for line in lines), encoding="utf-8")


def make_dataset(out_dir: str | os.PathLike, clips: int = 2000, images: int = 200, frames: int = 17, height: int = 64,
                 width: int = 96, seed: int = 0, heldout: int = 48, concept: str = "none",
                 progress: Callable[[int, int], None] | None = None) -> dict[str, Any]:
    """Write a training set and a held-out evaluation set of the domain into `out_dir`; return the counts, paths
    and seconds taken. `progress` is called with (items written, items in all) after every clip and image.

    Layout: `videos/NNNNN.mp4`, `images/NNNNN.png`, `annotation.json` (training records), `data.txt`
    (".,annotation.json": the root is the data file's own folder, so the folder can be moved), and `eval/`:
    `NNNNN_first.png`, `NNNNN_last.png`, `NNNNN.mp4` (the whole clip: a reference and a continuation input),
    `prompts.txt`, `conds.txt` (i2v), `transition_conds.txt`, `metadata.json` (one entry per line). Training
    clips, images and held-out clips draw from independent streams of `seed`, so changing one count leaves the
    others' content unchanged; held-out directions cycle left, right, up, down so every direction is evaluated
    equally.

    `concept` (a key of CONCEPTS) picks the directions of the training and held-out clips: "none" the four axis
    directions (the files are the same as before concepts existed), "diagonal" up-left, up-right, down-left,
    down-right, cycled in that order in the held-out set. Training images are stills and do not depend on it.
    The summary has "concept".
    """
    import time

    if concept not in CONCEPTS:
        raise ValueError(f"unknown concept {concept!r}; expected one of {', '.join(CONCEPTS)}")
    started = time.perf_counter()
    out = Path(out_dir)
    total = clips + images + heldout
    report = progress or (lambda done, total: None)
    records = []
    rng = np.random.default_rng([seed, 0])
    for index in range(clips):
        video, meta = generate_clip(rng, frames, height, width, concept=concept)
        name = f"videos/{index:05d}.mp4"
        write_video(out / name, video, FPS, crf=DATASET_CRF)
        records.append({"path": name, "cap": meta["caption"], "resolution": {"height": height, "width": width},
                        "num_frames": frames, "fps": FPS})
        report(len(records), total)
    rng = np.random.default_rng([seed, 1])
    for index in range(images):
        image, meta = generate_image(rng, height, width)
        name = f"images/{index:05d}.png"
        write_image(out / name, image)
        records.append({"path": name, "cap": meta["caption"], "resolution": {"height": height, "width": width}})
        report(len(records), total)
    _write_json(out / "annotation.json", records)
    _write_lines(out / "data.txt", [".,annotation.json"])

    rng = np.random.default_rng([seed, 2])
    directions = list(CONCEPTS[concept])
    entries = []
    for index in range(heldout):
        video, meta = generate_clip(rng, frames, height, width, direction=directions[index % len(directions)])
        first, last, clip = f"{index:05d}_first.png", f"{index:05d}_last.png", f"{index:05d}.mp4"
        write_image(out / "eval" / first, video[0])
        write_image(out / "eval" / last, video[-1])
        write_video(out / "eval" / clip, video, FPS, crf=DATASET_CRF)
        entries.append({"line": index + 1, **meta, "first": first, "last": last, "video": clip, "frames": frames,
                        "height": height, "width": width})
        report(len(records) + len(entries), total)
    _write_lines(out / "eval" / "prompts.txt", [entry["caption"] for entry in entries])
    _write_lines(out / "eval" / "conds.txt", [entry["first"] for entry in entries])
    _write_lines(out / "eval" / "transition_conds.txt", [f"{entry['first']},{entry['last']}" for entry in entries])
    _write_json(out / "eval" / "metadata.json", entries)
    return {"out_dir": str(out), "clips": clips, "images": images, "heldout": heldout, "frames": frames,
            "height": height, "width": width, "seed": seed, "concept": concept, "data_file": str(out / "data.txt"),
            "eval_dir": str(out / "eval"), "seconds": round(time.perf_counter() - started, 2)}


def write_examples(out_dir: str | os.PathLike, seed: int = 0, frames: int = 17, height: int = 64,
                   width: int = 96, concept: str = "none") -> dict[str, Any]:
    """Four quick-start lines in the domain (i2v, transition, key frames, continuation), each from its own clip
    with its own direction: `prompts.txt`, `conds.txt` and the media they name. With `concept` "diagonal" the
    clips move up-right, up-left, down-left and down-right (each the axis direction's turn to the diagonal).

    Returns:
        {"prompts": path, "conds": path, "files": [media paths]}.
    """
    if concept not in CONCEPTS:
        raise ValueError(f"unknown concept {concept!r}; expected one of {', '.join(CONCEPTS)}")
    out = Path(out_dir)
    rng = np.random.default_rng([seed, 3])
    middle = (frames - 1) // 2
    # (direction, the conds line, its images as {file: frame index}); continuation conditions on the whole clip
    lines = [
        ("right", "i2v.png", {"i2v.png": 0}),
        ("up", "transition_first.png,transition_last.png", {"transition_first.png": 0, "transition_last.png": -1}),
        ("left", f"keyframe_0.png@0,keyframe_1.png@{middle},keyframe_2.png@-1",
         {"keyframe_0.png": 0, "keyframe_1.png": middle, "keyframe_2.png": -1}),
        ("down", "continuation.mp4", {}),
    ]
    prompts, conds, files = [], [], []
    # the axis direction's diagonal, so the four lines still cover four different motions
    diagonal = {"right": "up-right", "up": "up-left", "left": "down-left", "down": "down-right"}
    for direction, cond, images in lines:
        if concept == "diagonal":
            direction = diagonal[direction]
        video, meta = generate_clip(rng, frames, height, width, direction=direction)
        prompts.append(meta["caption"])
        conds.append(cond)
        files += [write_image(out / name, video[index]) for name, index in images.items()]
        if not images:
            files.append(write_video(out / cond, video, FPS, crf=DATASET_CRF))
    _write_lines(out / "prompts.txt", prompts)
    _write_lines(out / "conds.txt", conds)
    return {"prompts": str(out / "prompts.txt"), "conds": str(out / "conds.txt"), "files": [str(f) for f in files]}
