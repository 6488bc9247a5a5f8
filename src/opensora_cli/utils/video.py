"""Writing generated videos: H.264 mp4 through imageio-ffmpeg (or a PNG for one frame), atomically."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from opensora_cli.utils.io import atomic_path

# Visually lossless for these clips and small; the reference used imageio quality 6 (about CRF 20).
VIDEO_CRF = 18


def write_video(path: str | os.PathLike, frames: np.ndarray, fps: int) -> Path:
    """Write frames (T, H, W, 3) uint8 to `path` (.mp4: libx264, yuv420p; .png: one frame), atomically."""
    path = Path(path)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"expected (T, H, W, 3) uint8 frames, got {frames.shape} {frames.dtype}")
    with atomic_path(path) as tmp:
        if path.suffix.lower() == ".png":
            from PIL import Image

            Image.fromarray(frames[0]).save(tmp, format="PNG")
        else:
            import imageio.v2 as imageio

            # Sizes are multiples of 16 here, so no macro-block resize; 1 keeps any other size as it is.
            with imageio.get_writer(tmp, format="FFMPEG", fps=fps, codec="libx264", pixelformat="yuv420p",
                                    macro_block_size=1, quality=None,
                                    ffmpeg_params=["-crf", str(VIDEO_CRF)]) as writer:
                for frame in frames:
                    writer.append_data(frame)
    return path
