"""Long videos on the demo model: how well chained windows follow their prompts and how visible their joins are.

    python benchmarks/long_video.py                 # 16 held-out images, 1, 3 and 6 windows, 25 steps
    python benchmarks/long_video.py --lines 4 --steps 10   # quicker
    python benchmarks/long_video.py --overlap 9 --adain 0   # other joins

Held-out first frames come from `opensora make-demo-data` (a shape on a textured background). Each line is a
storyboard that keeps the shape in frame: the held-out clip's direction for window 1, then the opposite
direction, and so on, one prompt stretch per window (`p1 ||| @12 p2 ||| @24 p1 ...`). Printed per window count:

- direction: the share of windows whose tracked motion (the shape's colour, a line fitted through its centroids
  over the frames the window makes, from its last kept frame on) goes the way its prompt says; untrackable
  windows (shape lost) are left out, counted.
- seam: per join, the largest frame-to-frame change where one window hands over to the next (into, through and
  out of the kept overlap) over the median change elsewhere (printed in brackets, with the same ratio for the
  stretches of that length inside windows that touch no join, nor window 1's opening); the seam is the first over the second, averaged
  over the videos: 1.0 = a join looks like any other stretch of the video. (The largest of six steps is about 1.7
  times their median on this model with no join at all, so the bare ratio cannot reach 1.0.)
- drift: CIELAB delta-E (CIE76) between the mean background colour (pixels away from the shape's colour) of the
  last window and of the first; below 2.3 is about the smallest difference a person notices.
- seconds per window (from the sidecars) and the peak resident memory of the `opensora sample` process.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
from _subprocess import (  # benchmarks/_subprocess.py (this script's folder is on the path)
    make_heldout,
    run_sample,
)

from opensora_cli.services.evaluation import direction_of, fitted_displacement, track_shape

OPPOSITE = {"left": "right", "right": "left", "up": "down", "down": "up"}
WINDOW = 17  # the demo model's trained length
SHAPE_DISTANCE = 80.0  # a pixel this far (RGB) from the shape's colour is background


def srgb_to_lab(rgb: np.ndarray) -> np.ndarray:
    """(..., 3) sRGB in 0..255 -> CIELAB (D65)."""
    c = rgb.astype(np.float64) / 255.0
    c = np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
    xyz = c @ np.array([[0.4124564, 0.2126729, 0.0193339], [0.3575761, 0.7151522, 0.1191920],
                        [0.1804375, 0.0721750, 0.9503041]])
    xyz = xyz / np.array([0.95047, 1.0, 1.08883])
    f = np.where(xyz > (6 / 29) ** 3, np.cbrt(xyz), xyz / (3 * (6 / 29) ** 2) + 4 / 29)
    return np.stack([116 * f[..., 1] - 16, 500 * (f[..., 0] - f[..., 1]), 200 * (f[..., 1] - f[..., 2])], -1)


def background_colour(frames: np.ndarray, rgb) -> np.ndarray:
    """The mean colour of the pixels of (T, H, W, 3) frames that are not the shape's."""
    far = np.linalg.norm(frames.astype(np.float32) - np.asarray(rgb, np.float32), axis=-1) > SHAPE_DISTANCE
    return frames[far].reshape(-1, 3).mean(axis=0)


def score(video: np.ndarray, sidecar: dict, entry: dict) -> dict:
    windows = sidecar.get("windows") or [{"start": 0, "frames": len(video), "overlap": 0,
                                          "prompt": sidecar["prompt"]}]
    steps = np.abs(np.diff(video.astype(np.float32), axis=0)).mean(axis=(1, 2, 3))  # change t -> t+1
    # A join is the stretch where one window hands over to the next: from the step into its kept overlap to the
    # step out of it. Its raw score is the largest step there (so a cross-fade cannot hide a jump by spreading
    # it) over the median step elsewhere. The largest of several steps is above their median even with no join
    # at all, so the seam divides by the same measure over stretches of the same length inside windows (all
    # the stretches that touch no join): 1.0 = a join looks like any other stretch of the video.
    spans = [range(w["start"] - 1, w["start"] + w["overlap"]) for w in windows[1:]]
    at_join = {t for span in spans for t in span}
    raw = null = None
    if spans:
        median = np.median(np.delete(steps, sorted(at_join)))
        raw = float(np.mean([steps[list(span)].max() for span in spans]) / median)
        length = len(spans[0])
        opening = windows[1]["overlap"]  # window 1's own hand-over from its first frame is left out too
        inside = [steps[t:t + length].max() for t in range(opening, len(steps) - length + 1)
                  if not at_join & set(range(t, t + length))]
        null = float(np.median(inside) / median) if inside else None
    followed, lost = [], 0
    for w in windows:
        expected = w["prompt"].rsplit(" moves ", 1)[-1].removeprefix("to the ").split()[0]
        first = w["start"] + max(0, w["overlap"] - 1)  # from its last kept frame: the motion it makes itself
        found = direction_of(fitted_displacement(track_shape(video[first:w["start"] + w["frames"]], entry["rgb"])))
        if found is None:
            lost += 1
        else:
            followed.append(found == expected)
    first, last = windows[0], windows[-1]
    drift = np.linalg.norm(srgb_to_lab(background_colour(video[last["start"]:], entry["rgb"]))
                           - srgb_to_lab(background_colour(video[:first["frames"]], entry["rgb"])))
    return {"followed": followed, "lost": lost, "raw": raw, "null": null,
            "seam": raw / null if raw is not None and null else None, "drift": float(drift),
            "seconds": sidecar["seconds"] / len(windows)}


def write_picture(video: np.ndarray, sidecar: dict, path: Path) -> None:
    """Every second frame of a long video, one row per window (its new frames), with the window's prompt."""
    from PIL import Image, ImageDraw

    from opensora_cli.utils.video import write_image

    windows = sidecar["windows"]
    height, width = video.shape[1:3]
    columns = (windows[0]["frames"] + 1) // 2
    canvas = Image.new("RGB", (columns * (width + 2) + 4, len(windows) * (height + 18) + 4), (24, 24, 28))
    draw = ImageDraw.Draw(canvas)
    for row, w in enumerate(windows):
        y = 4 + row * (height + 18)
        draw.text((4, y), f"window {row + 1}: frames {w['start']}-{w['start'] + w['frames'] - 1}, "
                  f"\"{w['prompt']}\"", fill=(235, 235, 235))
        first = w["start"] + (w["overlap"] if row else 0)
        for col, frame in enumerate(range(first, w["start"] + w["frames"], 2)):
            canvas.paste(Image.fromarray(video[frame]), (4 + col * (width + 2), y + 14))
    write_image(path, np.asarray(canvas))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lines", type=int, default=16, help="held-out images to start from")
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--windows", default="1,3,6", help="window counts, comma-separated")
    parser.add_argument("--work", type=Path, help="folder to keep the data and videos in [a temporary one]")
    parser.add_argument("--seed", type=int, default=3)
    parser.add_argument("--overlap", type=int, default=5, help="frames each window keeps (the demo's default: 5)")
    parser.add_argument("--adain", type=float, help="how strongly later windows are pulled to the first one's "
                        "colours [sample's default]")
    parser.add_argument("--picture", type=Path, help="write the frames of the longest run's first video here (.png)")
    args = parser.parse_args(argv)
    work = args.work or Path(tempfile.mkdtemp(prefix="long-video-"))
    data = work / "data"
    if not (data / "eval" / "metadata.json").is_file():
        make_heldout(data, args.lines, args.seed)
    entries = json.loads((data / "eval" / "metadata.json").read_text())[: args.lines]

    from opensora_cli.data.media import read_video

    print("| windows | frames | direction followed | untrackable | seam (1.0 = invisible) | drift (delta-E) "
          "| s / window | peak RSS |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    step = WINDOW - args.overlap
    for count in (int(c) for c in args.windows.split(",")):
        frames = WINDOW + (count - 1) * step
        prompts, conds = work / f"prompts-{count}.txt", work / f"conds-{count}.txt"
        lines = []
        for entry in entries:
            direction, stretches = entry["direction"], []
            for k in range(count):
                start = "" if k == 0 else f"@{k * step + args.overlap} "
                stretches.append(f"{start}a {entry['colour']} {entry['shape']} moves {direction}")
                direction = OPPOSITE[direction]
            lines.append(" ||| ".join(stretches))
        prompts.write_text("\n".join(lines) + "\n")
        conds.write_text("\n".join(str(data / "eval" / e["first"]) for e in entries) + "\n")
        out = work / f"out-{count}"
        _, peak, _ = run_sample(["--prompts", str(prompts), "--conds", str(conds), "--num-frames", str(frames),
                              "--overlap", str(args.overlap),
                              *(["--adain", str(args.adain)] if args.adain is not None else []),
                              "--steps", str(args.steps), "--output-dir", str(out), "--json"])
        scores = []
        for sidecar_path, entry in zip(sorted(out.glob("*.json")), entries):
            sidecar = json.loads(sidecar_path.read_text())
            video = read_video(out / sidecar["video"], frames)
            scores.append(score(video, sidecar, entry))
        followed = [f for s in scores for f in s["followed"]]
        seams = [s["seam"] for s in scores if s["seam"] is not None]
        seam = f"{np.mean(seams):.2f}" if seams else "-"
        raws = [s["raw"] for s in scores if s["raw"] is not None]
        nulls = [s["null"] for s in scores if s["null"] is not None]
        seam += f" ({np.mean(raws):.2f} / {np.mean(nulls):.2f})" if raws and nulls else ""
        print(f"| {count} | {frames} | {100 * np.mean(followed):.0f} % of {len(followed)} | "
              f"{sum(s['lost'] for s in scores)} | {seam} | {np.mean([s['drift'] for s in scores]):.2f} | "
              f"{np.mean([s['seconds'] for s in scores]):.2f} | {peak:.2f} GiB |")
    if args.picture is not None:
        sidecar = json.loads(sorted(out.glob("*.json"))[0].read_text())
        write_picture(read_video(out / sidecar["video"], frames), sidecar, args.picture)
        print(f"\nwrote {args.picture}")
    print(f"\n(work folder: {work})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
