"""Probing and reading condition media: images with Pillow, videos with decord. No torch.

`probe` decodes for real (an image is fully loaded, a video's first frame is decoded and its frame count
read), so a file that passes will also load at sampling time.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp"})
VIDEO_EXTENSIONS = frozenset(
    {".mp4", ".avi", ".mov", ".mkv", ".flv", ".wmv", ".webm", ".mpeg", ".mpg", ".3gp"}
)


def media_kind(path: str | os.PathLike) -> str | None:
    """'image', 'video' or None, from the file extension (case-insensitive)."""
    suffix = Path(path).suffix.lower()
    if suffix in IMAGE_EXTENSIONS:
        return "image"
    if suffix in VIDEO_EXTENSIONS:
        return "video"
    return None


@dataclass(frozen=True)
class MediaInfo:
    """What probing a file found. `error` is set (and the rest zero) when the file does not decode."""

    kind: str
    height: int = 0
    width: int = 0
    num_frames: int = 0
    fps: float = 0.0
    error: str | None = None


def probe(path: str | os.PathLike) -> MediaInfo:
    """Decode enough of a file to be sure it loads; never raises for a bad file."""
    kind = media_kind(path)
    try:
        if kind == "image":
            return _probe_image(path)
        if kind == "video":
            return _probe_video(path)
    except Exception as exc:  # any decoder failure is a property of the file, reported to the user
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return MediaInfo(kind=kind, error=reason[:200])
    return MediaInfo(kind="unknown", error="unsupported file type")


def _probe_image(path: str | os.PathLike) -> MediaInfo:
    from PIL import Image

    with Image.open(path) as image:
        image.load()
        width, height = image.size
    if height < 1 or width < 1:
        raise ValueError("image has no pixels")
    return MediaInfo(kind="image", height=height, width=width, num_frames=1)


def _open_video(path: str | os.PathLike):
    import decord

    return decord.VideoReader(os.fspath(path), ctx=decord.cpu(0), num_threads=1)


def _probe_video(path: str | os.PathLike) -> MediaInfo:
    reader = _open_video(path)
    num_frames = len(reader)
    if num_frames < 1:
        raise ValueError("video has no frames")
    height, width = reader[0].shape[:2]
    return MediaInfo(kind="video", height=height, width=width, num_frames=num_frames, fps=reader.get_avg_fps())


def read_image(path: str | os.PathLike) -> np.ndarray:
    """An image as RGB uint8 (H, W, 3)."""
    from PIL import Image

    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


def read_video(path: str | os.PathLike, num_frames: int) -> np.ndarray:
    """The first `num_frames` frames of a video as RGB uint8 (T, H, W, 3)."""
    reader = _open_video(path)
    if len(reader) < num_frames:
        raise ValueError(f"{path}: has {len(reader)} frames, {num_frames} needed")
    return reader.get_batch(list(range(num_frames))).asnumpy()
