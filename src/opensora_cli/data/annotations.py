"""Training data files -> records: the data description file, its annotation lists, and each record's checks.

    for root, annotation, line_no in load_data_description("data.txt"):  # "ROOT,ANNOTATION.json" lines
        for position, raw in enumerate(read_annotation(annotation, f"data.txt:{line_no}"), start=1):
            record = check_record(raw, root, rules, position, annotation)  # a Record, or a DataProblem

The record fields are those of `schemas.data` (checked there by pydantic); this module adds what depends on
the training options: the bucket size and the frames one sample takes. No media is read, so 100k records take
about three seconds. No torch. Differences from the reference, on purpose:
- every image/video extension of `schemas.data` is accepted (the reference only took .mp4 and .jpg);
- `fps` defaults to 24 everywhere (the reference defaulted it when filtering but required it when reading);
- `cut` = [start, end]: frames are taken from `start` on; `end` is ignored, as in the reference, since
  `num_frames` already gives the clip's length;
- `crop` = [x0, x1, y0, y1] is applied after decoding and the bucket is computed from the cropped size (the
  reference bucketed on the uncropped size, so every cropped record failed its size check and was resampled);
- `aesthetic`/`aes`, `tech`, `motion` are ignored: no aesthetic sentences are added, and captions are used as
  written (the reference cleaned image captions only, and mangled them on the way);
- the minimum clip length is min(29, num_frames), so short test configs (num_frames=17) can train on videos.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from opensora_cli.errors import InputError
from opensora_cli.schemas.data import AnnotationRecord, VideoTiming
from opensora_cli.schemas.resolution import MAX_ASPECT, MIN_ASPECT, max_hxw_resize, stride_crop_box

# The VAE compresses 1 + 4k frames to 1 + k latents; the reference trained on clips of 29..93 frames.
VAE_STRIDE_T = 4
MIN_VIDEO_FRAMES = 29
# Videos longer than this many times the span one sample needs are dropped, as the reference's filter does.
TOO_LONG_FACTOR = 5
PICKLE_SUFFIXES = (".pkl", ".pickle")


@dataclass(frozen=True)
class DataProblem:
    """Why one record was skipped or replaced."""

    path: str  # the media path (ROOT joined with the record's path), or "" when the record has none
    reason: str  # a short category ("too short", "missing caption", "decode failed"...); `summary()` counts by it
    line: int | None = None  # 1-based position in its annotation list (JSON gives records no reliable line)
    detail: str = ""  # the values found and how to fix them
    source: str = ""  # the annotation file the record came from

    def render(self) -> str:
        where = f"{self.source} record {self.line}: " if self.source and self.line is not None else ""
        return f"{where}{self.path or '<no path>'}: {self.reason}" + (f" — {self.detail}" if self.detail else "")

    __str__ = render


@dataclass(frozen=True, slots=True)
class Record:
    """A usable record, with everything loading needs precomputed (no decoding was done to get it).

    Frame i of the clip (0 <= i < candidates) is source frame floor(start + position_i * interval), where
    position_i = i without speed-up, or the i-th of `candidates` positions spread evenly over `source_candidates`.
    An item takes `num_frames` consecutive clip frames from a random window start in [0, candidates - num_frames].
    """

    path: str
    kind: str  # "video" | "image"
    captions: tuple[str, ...]
    num_frames: int  # T of the bucket (1 for images)
    height: int  # bucket size
    width: int
    resize_height: int  # size after the area resize, before the stride crop
    resize_width: int
    source_height: int  # the record's size (after `crop`)
    source_width: int
    crop: tuple[int, int, int, int] | None = None  # x0, x1, y0, y1
    start: int = 0
    interval: float = 1.0
    source_candidates: int = 1  # candidate frames at train_fps before the speed-up
    candidates: int = 1  # clip frames after the speed-up

    @property
    def bucket_key(self) -> tuple[int, int, int]:
        return (self.num_frames, self.height, self.width)


@dataclass(frozen=True)
class RecordRules:
    """The training options a record is checked against (see `VideoTextDataset` for each one's meaning)."""

    num_frames: int
    max_hxw: int
    min_hxw: int
    hw_stride: int
    train_fps: float
    speed_factor: float


# ------------------------------------------------------------------------------------------------------------
# Files
# ------------------------------------------------------------------------------------------------------------


def load_data_description(data_file: str | os.PathLike) -> list[tuple[Path, Path, int]]:
    """(video_root, annotation, line_no) per non-empty "ROOT,ANNOTATION.json" line of a data description file.

    Relative paths resolve against the data file's folder; line_no is 1-based. Pickle annotations are refused
    (unpickling a file can run arbitrary code). Raises InputError "FILE:LINE: what — how to fix".
    """
    data_file = Path(data_file)
    try:
        text = data_file.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError(f"{data_file}: data file not found — check the path") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{data_file}: cannot read the data file ({exc}) — save it as UTF-8 text") from None
    base = data_file.parent
    entries = []
    for line_no, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{data_file}:{line_no}"
        parts = [part.strip() for part in line.split(",")]
        if len(parts) != 2 or not all(parts):
            raise InputError(f"{where}: expected 'ROOT,ANNOTATION.json', got {line.strip()!r} — write the media "
                             "folder and the annotation file separated by one comma")
        root, annotation = (base / part for part in parts)
        if annotation.suffix.lower() in PICKLE_SUFFIXES:
            raise InputError(f"{where}: {parts[1]} is a pickle file, which is not supported (loading pickle can run "
                             "arbitrary code) — convert it to a JSON list of records, e.g. "
                             "json.dump(pickle.load(f), out)")
        if not annotation.is_file():
            raise InputError(f"{where}: annotation file {annotation} not found — check the path (relative paths "
                             f"resolve against {base})")
        if not root.is_dir():
            raise InputError(f"{where}: media folder {root} not found — check the path (relative paths resolve "
                             f"against {base})")
        entries.append((root, annotation, line_no))
    if not entries:
        raise InputError(f"{data_file}: the data file lists no annotations — add lines 'ROOT,ANNOTATION.json'")
    return entries


def read_annotation(annotation: Path, where: str) -> list[Any]:
    """The JSON list of records in `annotation`; `where` ("DATA_FILE:LINE") prefixes every error."""
    try:
        with open(annotation, encoding="utf-8") as f:
            records = json.load(f)
    except json.JSONDecodeError as exc:
        raise InputError(
            f"{where}: {annotation}:{exc.lineno}:{exc.colno}: not valid JSON ({exc.msg}) — fix the annotation file"
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{where}: cannot read {annotation} ({exc}) — save it as UTF-8 JSON") from None
    if not isinstance(records, list):
        raise InputError(f"{where}: {annotation} holds a JSON {type(records).__name__}, not a list — write a list of "
                         'records [{"path": ..., "cap": ..., "resolution": {...}}, ...]')
    return records


# ------------------------------------------------------------------------------------------------------------
# Records
# ------------------------------------------------------------------------------------------------------------


def clip_length(num_frames: int, target: int, min_frames: int = MIN_VIDEO_FRAMES) -> int:
    """The longest 1 + 4k <= min(num_frames, target), or 0 when that is below min(min_frames, target)."""
    length = min(num_frames, target)
    length = (length - 1) // VAE_STRIDE_T * VAE_STRIDE_T + 1
    return length if length >= min(min_frames, target) else 0


def candidate_count(num_frames: int, interval: float) -> int:
    """How many k >= 0 have floor(k * interval) < num_frames (the reference's arange over the clip)."""
    count = math.ceil(num_frames / interval)
    while count > 0 and int((count - 1) * interval) >= num_frames:  # float noise at the boundary
        count -= 1
    return count


def check_record(raw: Any, root: str | os.PathLike, rules: RecordRules, line: int, source: str | os.PathLike
                 ) -> Record | DataProblem:
    """One annotation record as a `Record`, or the `DataProblem` that says why it cannot be used. Reads no media.

    `raw` (as parsed from JSON) is record `line` (1-based) of the annotation file `source`; its path is relative
    to `root`, and it must fit the training options `rules`.
    """
    rel = raw.get("path") if isinstance(raw, dict) else None
    path = os.path.join(root, rel) if isinstance(rel, str) and rel else ""

    def problem(reason: str, detail: str) -> DataProblem:
        return DataProblem(path, reason, line, detail, os.fspath(source))

    try:  # the first error of either model is the record's problem
        fields = AnnotationRecord.model_validate(raw)
        # Size, as the reference's area mode: shrink to max_hxw, centre-crop to the stride, then filter.
        height, width = fields.size
        resize_h, resize_w = max_hxw_resize(height, width, rules.max_hxw)
        _, _, bucket_h, bucket_w = stride_crop_box(resize_h, resize_w, rules.hw_stride)
        if bucket_h < 1 or bucket_w < 1 or bucket_h * bucket_w < rules.min_hxw:
            return problem("too small", f"{height}x{width} becomes {bucket_h}x{bucket_w}, below the minimum area "
                                        f"{rules.min_hxw}")
        if not MIN_ASPECT <= bucket_h / bucket_w <= MAX_ASPECT:
            return problem("bad aspect", f"{bucket_h}x{bucket_w}: height/width must lie in [1/2, 2]")
        sizes = dict(height=bucket_h, width=bucket_w, resize_height=resize_h, resize_width=resize_w,
                     source_height=height, source_width=width, crop=fields.crop)
        if fields.kind == "image":
            return Record(path, "image", fields.cap, num_frames=1, **sizes)
        # Frames: sampled at train_fps from the cut's start.
        timing = VideoTiming.model_validate(raw)
    except ValidationError as exc:
        return problem(exc.errors()[0]["type"], exc.errors()[0]["msg"])
    frames, fps = timing.num_frames, timing.fps
    if frames > TOO_LONG_FACTOR * rules.num_frames * fps / rules.train_fps * rules.speed_factor:
        return problem("too long", f"{frames} frames at {fps:g} fps is over {TOO_LONG_FACTOR}x the span of one "
                                   "sample; cut it into clips")
    interval = 1.0 if abs(fps - rules.train_fps) < 0.1 else fps / rules.train_fps
    source_candidates = candidate_count(frames, interval)
    candidates = source_candidates
    if rules.speed_factor > 1 and candidates > rules.num_frames:
        candidates = max(rules.num_frames, int(candidates / rules.speed_factor))
    length = clip_length(candidates, rules.num_frames)
    if length == 0:
        return problem("too short", f"{frames} frames at {fps:g} fps give {candidates} at {rules.train_fps:g} fps; "
                                    f"need at least {min(MIN_VIDEO_FRAMES, rules.num_frames)}")
    return Record(path, "video", fields.cap, num_frames=length, start=timing.start, interval=interval,
                  source_candidates=source_candidates, candidates=candidates, **sizes)
