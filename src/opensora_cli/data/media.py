"""Probing and reading condition media: images with Pillow, videos with decord. No torch.

`probe` decodes for real (an image is fully loaded and converted, a video's first frame is decoded and its frame
count read), so a file that passes will also load at sampling time, and what it drops on the way (transparency,
the extra frames of an animation) is reported in `MediaInfo.warnings`.
"""

from __future__ import annotations

import functools
import os
import re
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from opensora_cli.schemas.data import media_kind


@dataclass(frozen=True)
class MediaInfo:
    """What probing a file found. `height` and `width` are the displayed size, after the EXIF orientation."""

    kind: str
    height: int = 0
    width: int = 0
    num_frames: int = 0
    fps: float = 0.0
    error: str | None = None  # set (and the rest zero) when the file does not decode
    warnings: tuple[str, ...] = ()  # what reading drops, each `what is dropped — how to avoid it`; still usable


def probe(path: str | os.PathLike) -> MediaInfo:
    """Decode enough of a file to be sure it loads; never raises for a bad file."""
    kind = media_kind(path)
    try:
        if kind == "image":
            _, (height, width), warnings = _decode_image(path, pixels=False)
            return MediaInfo(kind="image", height=height, width=width, num_frames=1, warnings=tuple(warnings))
        if kind == "video":
            return _probe_video(path)
    except Exception as exc:  # any decoder failure is a property of the file, reported to the user
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return MediaInfo(kind=kind, error=reason[:200])
    return MediaInfo(kind="unknown", error="unsupported file type")


# ---------------------------------------------------------------------------------------------------------
# Images
# ---------------------------------------------------------------------------------------------------------


def read_image(path: str | os.PathLike) -> np.ndarray:
    """An image as RGB uint8 (H, W, 3), upright (EXIF orientation applied), each mode scaled by its real range;
    ValueError, with the range found, when the pixels have no range we can map to 8 bits (see `_to_rgb`)."""
    return _decode_image(path, pixels=True)[0]


def _decode_image(path: str | os.PathLike, pixels: bool) -> tuple[np.ndarray | None, tuple[int, int], list[str]]:
    """(RGB uint8 (H, W, 3) if `pixels` else None, (H, W), warnings).

    The one place an image file is opened, so that probe and every reader agree. Probing skips the array, so an
    RGB file (the common case) is decoded but never copied.
    """
    from PIL import Image, ImageOps

    with Image.open(path) as image:
        frames = getattr(image, "n_frames", 1)  # counted before load(): GIF/APNG/TIFF seek to count them
        image.load()
        if image.width < 1 or image.height < 1:
            raise ValueError("image has no pixels")
        # Phones store portrait photos sideways plus an orientation tag; every viewer shows them upright, so
        # sizes, crops and the model must see what the user sees, not the stored raster.
        ImageOps.exif_transpose(image, in_place=True)
        rgb, warnings = _to_rgb(image)
        array = np.asarray(rgb) if pixels else None  # before the file closes: closing frees the pixels
        size = (rgb.height, rgb.width)
    if frames > 1:
        warnings.append(f"has {frames} frames (an animation or a multi-page file); only the first is used"
                        " — pass a video file to condition on several frames, or save the frame you want alone")
    return array, size, warnings


_SIXTEEN_BIT_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N"})


def _to_rgb(image):
    """A loaded Pillow image as an 8-bit RGB Pillow image, and a list of what was dropped (warnings).

    `Image.convert("RGB")` is right for the 8-bit modes (1, L, P, RGB, CMYK, YCbCr, LAB, HSV and their alpha
    variants) but clips the high-bit ones to 0..255, turning a 16-bit grey PNG white. Those are scaled here by the
    range their format defines instead.
    """
    from PIL import Image

    mode = image.mode
    if mode in _SIXTEEN_BIT_MODES:
        grey = _from_16_bit(np.asarray(image))  # numpy honours the byte order of I;16B
    elif mode == "I":
        # 32-bit integers have no agreed white: 16-bit PNGs used to open as mode I with 0..65535, so values in
        # that range are read as 16-bit. Anything else would be a guess at the bit depth, so it is refused.
        values = np.asarray(image)
        low, high = int(values.min()), int(values.max())
        if low < 0 or high > 65535:
            raise ValueError(f"32-bit integer pixels range from {low} to {high}; only 0..65535 (16-bit) is "
                             "understood — save it as an 8-bit or 16-bit PNG")
        grey = _from_16_bit(values)
    elif mode == "F":
        # Float images mean 0..1 by convention (OpenEXR-style, numpy/torch pipelines); other ranges (depth
        # maps, HDR radiance, 0..255 floats) have no single mapping to 8 bits, so they are refused.
        values = np.asarray(image)
        if not np.isfinite(values).all():
            raise ValueError("floating-point pixels include NaN or infinite values; only 0..1 is understood — "
                             "save it as an 8-bit or 16-bit PNG")
        low, high = float(values.min()), float(values.max())
        if low < 0 or high > 1:
            raise ValueError(f"floating-point pixels range from {low:g} to {high:g}; only 0..1 is understood — "
                             "save it as an 8-bit or 16-bit PNG")
        grey = np.rint(values * 255).astype(np.uint8)
    else:
        try:
            rgb = image if mode == "RGB" else image.convert("RGB")
            # Counted over the pixels: an alpha channel that is opaque everywhere loses nothing when dropped.
            alpha = image.convert("RGBA").getchannel("A") if image.has_transparency_data else None
            see_through = alpha is not None and alpha.getextrema()[0] < 255
        except ValueError:  # a mode Pillow cannot convert (e.g. La): say which, never a Pillow traceback
            raise ValueError(f"colour mode {mode!r} is not supported — save it as an 8-bit RGB PNG or JPEG") from None
        # Dropped, not composited onto a background, like the reference's convert("RGB"): the colours stored
        # under transparent pixels are what the model sees, as in the reference.
        warnings = ["has transparent pixels; the transparency is dropped and the colours stored under them are "
                    "used — flatten it onto the background you want and save without alpha"] if see_through else []
        return rgb, warnings
    return Image.fromarray(np.repeat(grey[..., None], 3, axis=-1)), []  # the high-bit modes are all grey


def _from_16_bit(values: np.ndarray) -> np.ndarray:
    """0..65535 -> 0..255, rounded (v * 255 / 65535 == v / 257; integer arithmetic, so no float error)."""
    return ((values.astype(np.uint32) + 128) // 257).astype(np.uint8)


# ---------------------------------------------------------------------------------------------------------
# Videos
# ---------------------------------------------------------------------------------------------------------


def open_video(path: str | os.PathLike):
    """A decord VideoReader on one CPU thread: `len(reader)` frames, `reader.get_batch(indices)` (T, H, W, 3) uint8;
    ValueError (one clean line, nothing on stderr) when decord cannot open the file."""
    decord = _decord()
    with _decord_errors(path):
        return decord.VideoReader(os.fspath(path), ctx=decord.cpu(0), num_threads=1)


def _probe_video(path: str | os.PathLike) -> MediaInfo:
    reader = open_video(path)
    with _decord_errors(path):
        num_frames = len(reader)
        if num_frames < 1:
            raise ValueError("video has no frames")
        height, width = reader[0].shape[:2]
        fps = reader.get_avg_fps()
    return MediaInfo(kind="video", height=height, width=width, num_frames=num_frames, fps=fps)


def read_video(path: str | os.PathLike, num_frames: int) -> np.ndarray:
    """The first `num_frames` frames of a video as RGB uint8 (T, H, W, 3)."""
    reader = open_video(path)
    if len(reader) < num_frames:
        raise ValueError(f"{path}: has {len(reader)} frames, {num_frames} needed")
    with _decord_errors(path):
        return reader.get_batch(list(range(num_frames))).asnumpy()


@functools.cache
def _decord():
    import decord

    # ffmpeg's own log lines ("[mov,mp4 @ 0x...] moov atom not found") would reach the terminal around our
    # one-line message; the reason we need is in decord's error instead.
    decord.logging.set_level(decord.logging.QUIET)
    return decord


# decord's C++ log prefix "[19:54:52] /github/workspace/src/video/video_reader.cc:151: " (repeated when nested).
_CPP_PREFIX = re.compile(r"\[\d\d:\d\d:\d\d\] \S+?\.(?:cc|cpp|h):\d+: ")
_CHECK_FAILED = re.compile(r"Check failed: .*?\(-?\d+ vs\. -?\d+\) ")


@contextmanager
def _decord_errors(path: str | os.PathLike) -> Iterator[None]:
    """Keep decord's C++ stderr logging off the terminal and turn its exceptions into one clean ValueError.

    One thread at a time: the capture of fd 2 is shared, and C++ streams of threads logging at once interleave
    mid-line, so a file's reason could not be told from another's (or a half line could slip through).
    """
    with _decord_lock, _native_stderr_captured() as captured:
        try:
            yield
        except ValueError:
            raise  # ours, already clean
        except Exception as exc:  # decord raises DECORDError or RuntimeError with C++ text
            raise ValueError(_decord_reason(str(exc), captured(), os.fspath(path))) from None


def _decord_reason(message: str, log: str, path: str) -> str:
    """One human line from decord's exception text and what it logged, without C++ paths or check expressions."""
    if "cannot find video stream" in message:
        return "no video stream (audio only, or a damaged file?)"
    # decord raises a bare "Error reading PATH..." when opening fails and logs the ffmpeg reason instead.
    opening = re.search(rf"ERROR opening: {re.escape(path)}, (.+)", log)
    if opening:
        reason = opening[1].strip()
        return "the file ends early (truncated?)" if reason == "End of file" else f"ffmpeg cannot open it: {reason}"
    lines = (_CHECK_FAILED.sub("", _CPP_PREFIX.sub("", line)).strip() for line in message.splitlines())
    for line in lines:
        line = line.removeprefix("Thread worker: ").removeprefix("Error: ").removeprefix("ERROR ").strip().rstrip(".")
        if line and not line.startswith(("Stack trace", "[bt]")) and path not in line:
            return f"a frame fails to decode (damaged or truncated file?): {line}"
    return "not a video decord can read, or a corrupt one"


_decord_lock = threading.Lock()
# fd 2 is shared by every thread: one redirect serves all threads inside decord at once (counted), so that a
# second thread never saves the first one's capture file as "the real stderr" and leaves it redirected.
_stderr_lock = threading.Lock()
_stderr_users = 0
_stderr_saved: int | None = None
_stderr_capture: tuple[int, str] | None = None
_NATIVE_NOISE = re.compile(rf"^(?:{_CPP_PREFIX.pattern}|\[[\w,]+ @ 0x[0-9a-f]+\] )")
# Threads probing at once write their log lines into one capture, and C++ streams can interleave mid-line:
# "[t] a.cc:[t] a.cc:83: ERROR ...", then "83: ERROR ..." (the rest of the first). Both halves are noise.
_NATIVE_FRAGMENT = re.compile(rf"{_CPP_PREFIX.pattern}|^\d+: (?:ERROR|WARNING|Check failed)")


@contextmanager
def _native_stderr_captured() -> Iterator[Callable[[], str]]:
    """Redirect fd 2 (C++ writes there, below sys.stderr) to a file; yields a function reading what it got.

    On the way out the real stderr is restored and any captured line that is not decord/ffmpeg logging is
    written back to it, so other output is delayed, never lost.
    """
    global _stderr_users, _stderr_saved, _stderr_capture
    with _stderr_lock:
        if _stderr_users == 0:
            try:
                _stderr_saved = os.dup(2)
            except OSError:  # no fd 2 at all (a daemon): nothing reaches a terminal, run uncaptured
                _stderr_saved = _stderr_capture = None
            else:
                if sys.stderr is not None:
                    sys.stderr.flush()  # Python's pending text belongs before the redirect
                fd, name = tempfile.mkstemp(prefix="opensora-decord-", suffix=".log")
                os.dup2(fd, 2)
                _stderr_capture = (fd, name)
        _stderr_users += 1
        capture = _stderr_capture
    try:
        yield (lambda: Path(capture[1]).read_text(errors="replace")) if capture else (lambda: "")
    finally:
        with _stderr_lock:
            _stderr_users -= 1
            if _stderr_users == 0 and _stderr_capture is not None:
                if sys.stderr is not None:
                    sys.stderr.flush()
                fd, name = _stderr_capture
                os.dup2(_stderr_saved, 2)
                os.close(_stderr_saved)
                os.close(fd)
                text = Path(name).read_text(errors="replace")
                os.unlink(name)
                _stderr_saved = _stderr_capture = None
                kept = "".join(line for line in text.splitlines(keepends=True)
                               if not (_NATIVE_NOISE.match(line) or _NATIVE_FRAGMENT.search(line)))
                if kept:
                    os.write(2, kept.encode())
