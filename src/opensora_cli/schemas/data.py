"""Training data vocabulary: media kinds by extension, and the fields of one annotation record. No torch.

An annotation is a JSON list of records:

    {"path": "clips/a.mp4", "cap": "a dog runs" | ["...", "..."], "resolution": {"height": 720, "width": 1280},
     "num_frames": 240, "fps": 30, "cut": [120, 360], "crop": [x0, x1, y0, y1]}

`AnnotationRecord` checks what every record needs, `VideoTiming` what a video record needs besides. Each failed
check is a pydantic error whose type is the reason the record is skipped ("bad caption") and whose message
says what was found and how to fix it. Errors come in field order, so the first is the one to report.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator
from pydantic_core import PydanticCustomError

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp"})
VIDEO_EXTENSIONS = frozenset({".mp4", ".avi", ".mov", ".mkv", ".flv", ".wmv", ".webm", ".mpeg", ".mpg", ".3gp"})
DEFAULT_FPS = 24.0


def media_kind(path: str | os.PathLike) -> str | None:
    """'image', 'video' or None, from the file extension (case-insensitive)."""
    suffix = Path(path).suffix.lower()
    return "image" if suffix in IMAGE_EXTENSIONS else "video" if suffix in VIDEO_EXTENSIONS else None


def _problem(reason: str, detail: str) -> PydanticCustomError:
    """A failed record check: the error's type is `reason`, its message `detail` (a template, so braces stay)."""
    return PydanticCustomError(reason, "{detail}", {"detail": detail})


def _positive_int(value: Any, allow_zero: bool = False) -> int | None:
    """An int > 0 (>= 0 with allow_zero) from an int or an integral float; None otherwise (bools refused)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value % 1:  # a fraction, inf or nan
        return None
    return int(value) if value > 0 or (allow_zero and value == 0) else None


class AnnotationRecord(BaseModel):
    """The fields every record needs. Other keys (`aesthetic`, `aes`, `tech`, `motion`, ...) are ignored."""

    # Missing keys reach the validators as None (validate_default), so their messages say what was found.
    model_config = ConfigDict(frozen=True, validate_default=True)

    path: str = None  # relative to the record's ROOT, with an image or video extension
    cap: tuple[str, ...] = None  # one or more captions, at least one not blank
    resolution: tuple[int, int] = None  # (height, width) as stored
    crop: tuple[int, int, int, int] | None = None  # (x0, x1, y0, y1) inside `resolution`, applied after decoding

    @model_validator(mode="before")
    @classmethod
    def _object(cls, raw: Any) -> Any:
        if not isinstance(raw, dict):
            raise _problem("bad record", f"expected a JSON object, got {type(raw).__name__}")
        return raw

    @field_validator("path", mode="before")
    @classmethod
    def _path(cls, rel: Any) -> str:
        if not isinstance(rel, str) or not rel:
            raise _problem("missing path", f"'path' is {rel!r}; give the media path relative to its ROOT")
        if media_kind(rel) is None:
            raise _problem("unknown extension", "use an image or video file type (e.g. .jpg, .png, .mp4)")
        return rel

    @field_validator("cap", mode="before")
    @classmethod
    def _captions(cls, cap: Any) -> tuple[str, ...]:
        if cap is None:
            raise _problem("missing caption", "add 'cap': a string or a list of strings")
        captions = (cap,) if isinstance(cap, str) else tuple(cap) if isinstance(cap, list) else None
        if captions is None or not all(isinstance(c, str) for c in captions):
            raise _problem("bad caption", f"'cap' must be a string or a list of strings, got {cap!r:.80}")
        if not captions or not any(c.strip() for c in captions):
            raise _problem("empty caption", "write a caption (or drop the record)")
        return captions

    @field_validator("resolution", mode="before")
    @classmethod
    def _resolution(cls, resolution: Any) -> tuple[int, int]:
        sides = (resolution.get("height"), resolution.get("width")) if isinstance(resolution, dict) else (None, None)
        height, width = (_positive_int(side) for side in sides)
        if height is None or width is None:
            raise _problem("bad resolution", f"'resolution' is {resolution!r:.80}; need positive height and width")
        return height, width

    @field_validator("crop", mode="before")
    @classmethod
    def _crop(cls, crop: Any, info: ValidationInfo) -> tuple[int, ...] | None:
        if crop is None or "resolution" not in info.data:
            return None
        height, width = info.data["resolution"]
        values = [_positive_int(v, allow_zero=True) for v in crop] if isinstance(crop, list) else []
        inside = len(values) == 4 and None not in values
        if not (inside and values[0] < values[1] <= width and values[2] < values[3] <= height):
            raise _problem("bad crop", f"'crop' is {crop!r:.80}; need [x0, x1, y0, y1] inside {height}x{width}")
        return tuple(values)

    @property
    def kind(self) -> str:  # "image" or "video"
        return media_kind(self.path)

    @property
    def size(self) -> tuple[int, int]:
        """(height, width) after the crop."""
        x0, x1, y0, y1 = self.crop or (0, self.resolution[1], 0, self.resolution[0])
        return y1 - y0, x1 - x0


class VideoTiming(BaseModel):
    """The fields a video record needs besides `AnnotationRecord`'s."""

    model_config = ConfigDict(frozen=True, validate_default=True)

    num_frames: int = None  # frames in the clip (from `start` on)
    fps: float = DEFAULT_FPS
    # `cut` = [start, end]: the first frame used (end is ignored, since num_frames gives the length)
    start: int = Field(None, alias="cut")

    @field_validator("num_frames", mode="before")
    @classmethod
    def _num_frames(cls, frames: Any) -> int:
        if _positive_int(frames) is None:
            raise _problem("bad num_frames", f"'num_frames' is {frames!r}; videos need a positive count")
        return _positive_int(frames)

    @field_validator("fps", mode="before")
    @classmethod
    def _fps(cls, fps: Any) -> float:
        if isinstance(fps, bool) or not isinstance(fps, (int, float)) or not math.isfinite(fps) or fps <= 0:
            raise _problem("bad fps", f"'fps' is {fps!r}; give a positive number (or leave it out for 24)")
        return fps

    @field_validator("start", mode="before")
    @classmethod
    def _start(cls, cut: Any) -> int:
        if cut is None:
            return 0
        start = _positive_int(cut[0], allow_zero=True) if isinstance(cut, list) and cut else None
        if start is None:
            raise _problem("bad cut", f"'cut' is {cut!r:.80}; need [start_frame, end_frame] with start >= 0")
        return start
