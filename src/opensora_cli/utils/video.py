"""Writing frames to files, atomically: H.264 mp4 through imageio-ffmpeg, PNG and GIF through Pillow.

Every video and picture the package writes goes through here, so encoder settings have one home.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from opensora_cli.utils.io import atomic_path

# Visually lossless for these clips and small; the reference used imageio quality 6 (about CRF 20).
VIDEO_CRF = 18


def write_video(
    path: str | os.PathLike, frames: np.ndarray, fps: float, crf: int = VIDEO_CRF, macro_block_size: int = 1
) -> Path:
    """Write frames in the format `path`'s suffix names: .png the first frame, .gif a looping animation, anything
    else (.mp4) H.264 (libx264, yuv420p, so every player reads it) at constant quality.

    Args:
        path: the file; its folder is created.
        frames: (T, H, W, 3) uint8.
        fps: frames per second.
        crf: x264's constant rate factor, 0 (lossless) to 51 (worst).
        macro_block_size: ffmpeg scales frames up to multiples of this; 1 keeps every size as it is.

    Returns:
        `path`, as a Path.

    Raises:
        ValueError: `frames` is not (T, H, W, 3) uint8.
    """
    path = Path(path)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"expected (T, H, W, 3) uint8 frames, got {frames.shape} {frames.dtype}")
    suffix = path.suffix.lower()
    if suffix == ".png":
        return write_image(path, frames[0])
    with atomic_path(path) as tmp:
        if suffix == ".gif":
            from PIL import Image

            first, *rest = (Image.fromarray(frame) for frame in frames)
            first.save(tmp, format="GIF", save_all=True, append_images=rest, duration=round(1000 / fps), loop=0)
        else:
            import imageio.v2 as imageio

            with imageio.get_writer(tmp, format="FFMPEG", fps=fps, codec="libx264", pixelformat="yuv420p",
                                    macro_block_size=macro_block_size, quality=None,
                                    ffmpeg_params=["-crf", str(crf)]) as writer:
                for frame in frames:
                    writer.append_data(frame)
    return path


def write_image(path: str | os.PathLike, image: np.ndarray) -> Path:
    """Write one picture, (H, W, 3) uint8, as a PNG; its folder is created. Returns `path`, as a Path."""
    from PIL import Image

    path = Path(path)
    with atomic_path(path) as tmp:
        Image.fromarray(image).save(tmp, format="PNG")
    return path


def concat_videos(parts: list[Path], path: str | os.PathLike) -> Path:
    """Join mp4 files of one size, rate and encoder settings into one, without encoding again (ffmpeg's concat
    demuxer, stream copy): the same parts always give the same bytes. Returns `path`, as a Path.

    Raises:
        OSError: ffmpeg failed (its message included).
    """
    import subprocess

    import imageio_ffmpeg

    path = Path(path)
    with atomic_path(path) as tmp:
        listing = tmp.with_suffix(".txt")  # beside the temporary file: removed with it whatever happens
        try:
            # The listing's paths are quoted for ffmpeg: a ' inside one is written '\''.
            listing.write_text("".join("file '" + str(Path(p).resolve()).replace("'", "'\\''") + "'\n"
                                       for p in parts))
            done = subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-y", "-f", "concat", "-safe",
                                   "0", "-i", str(listing), "-c", "copy", "-map_metadata", "-1", "-fflags",
                                   "+bitexact", "-f", "mp4", str(tmp)], capture_output=True, text=True)
        finally:
            listing.unlink(missing_ok=True)
        if done.returncode != 0:
            raise OSError(f"ffmpeg could not join {len(parts)} parts: {done.stderr.strip()[-300:]}")
    return path
