"""The training dataset: video and image records with captions, bucketed by (frames, height, width).

    dataset = VideoTextDataset(data_file="data.txt", num_frames=93, mask_config=mask_config, seed=1234)
    print(dataset.summary())  # records read, used, skipped by reason, buckets
    item = dataset[(epoch, index)]  # {"pixel_values": (3, T, H, W), "masked_pixel_values", "mask", "caption", ...}

The data file has one "ROOT,ANNOTATION.json" per line; each annotation is a JSON list of records (spec 6.3):

    {"path": "clips/a.mp4", "cap": "a dog runs" | ["...", "..."], "resolution": {"height": 720, "width": 1280},
     "num_frames": 240, "fps": 30, "cut": [120, 360], "crop": [x0, x1, y0, y1]}

Building reads fields only, no media, so 100k records take about two seconds; a record that cannot be used is skipped
with a `DataProblem` (or, with bad_data="error", stops the build). Differences from the reference, on purpose:
- every image/video extension of `data.media` is accepted (the reference only took .mp4 and .jpg);
- `fps` defaults to 24 everywhere (the reference defaulted it when filtering but required it when reading);
- `cut` = [start, end]: frames are taken from `start` on; `end` is ignored, as in the reference, since
  `num_frames` already gives the clip's length;
- `crop` = [x0, x1, y0, y1] is applied after decoding and the bucket is computed from the cropped size (the
  reference bucketed on the uncropped size, so every cropped record failed its size check and was resampled);
- `aesthetic`/`aes`, `tech`, `motion` are ignored: no aesthetic sentences are added, and captions are used as
  written (the reference cleaned image captions only, quirk 19);
- the minimum clip length is min(29, num_frames), so short test configs (num_frames=17) can train on videos;
- the temporal window starts anywhere in [0, len - T] (the reference never chose the last start, quirk 26), and is
  drawn when the item is loaded, from the item's generator;
- a sample's randomness depends only on (seed, epoch, index), never on worker, rank or resume point;
- resizing is done in float32 (no uint8 re-quantisation, quirk 8); frames whose decoded size differs from the
  record's are centre-cropped to the record's aspect before resizing, so the bucket size always comes out;
- a file that fails to decode is replaced by the next record of its bucket (deterministic) and reported in the
  item's "replaced" list (the reference drew a random replacement silently).
"""

from __future__ import annotations

import json
import math
import os
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from opensora_cli.data.media import _open_video, media_kind, read_image
from opensora_cli.data.transforms import center_crop_resize, resize, stride_crop
from opensora_cli.errors import InputError
from opensora_cli.masks.processor import MaskProcessor
from opensora_cli.schemas.mask_config import MaskConfig
from opensora_cli.schemas.resolution import MAX_ASPECT, MIN_ASPECT, max_hxw_resize, stride_crop_box
from opensora_cli.utils.seeds import stable_seed

DEFAULT_FPS = 24.0
# The VAE compresses 1 + 4k frames to 1 + k latents; the reference trained on clips of 29..93 frames.
VAE_STRIDE_T = 4
MIN_VIDEO_FRAMES = 29
# A video more than this many times longer than the span one sample needs is dropped (spec 6.4 step 2).
TOO_LONG_FACTOR = 5
# How many further records of the same bucket are tried when a file does not decode.
MAX_REPLACEMENTS = 16
# Frames resized at once: bounds the float32 copy of a long high-resolution clip.
RESIZE_CHUNK = 8
DEFAULT_VIDEO_TEXT = "The video showcases a scene with coherent and clear visuals."
DEFAULT_IMAGE_TEXT = "The image showcases a scene with coherent and clear visuals."
PICKLE_SUFFIXES = (".pkl", ".pickle")


@dataclass(frozen=True)
class DataProblem:
    """Why one record was skipped or replaced.

    Args:
        path: the media path (ROOT joined with the record's path), or "" when the record has none.
        reason: a short category ("too short", "missing caption", "decode failed"...); `summary()` counts by it.
        line: 1-based position of the record in its annotation list (JSON gives records no reliable line), or None.
        detail: the values found and how to fix them.
        source: the annotation file the record came from.
    """

    path: str
    reason: str
    line: int | None = None
    detail: str = ""
    source: str = ""

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


# ------------------------------------------------------------------------------------------------------------
# Data description file
# ------------------------------------------------------------------------------------------------------------


def load_data_description(data_file: str | os.PathLike) -> list[tuple[Path, Path, int]]:
    """Parse a data description file: one "ROOT,ANNOTATION.json" per non-empty line.

    Relative paths resolve against the data file's folder. Annotations are JSON lists of records; pickle is
    refused (unpickling a file can run arbitrary code).

    Returns:
        (video_root, annotation, line_no) per line, line_no 1-based.

    Raises:
        InputError: "FILE:LINE: what — how to fix" for a missing data file, a malformed line, a missing root or
            annotation, or a pickle annotation.
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
            raise InputError(
                f"{where}: expected 'ROOT,ANNOTATION.json', got {line.strip()!r} — write the media folder and the "
                "annotation file separated by one comma"
            )
        root, annotation = (base / part for part in parts)
        if annotation.suffix.lower() in PICKLE_SUFFIXES:
            raise InputError(
                f"{where}: {parts[1]} is a pickle file, which is not supported (loading pickle can run arbitrary "
                "code) — convert it to a JSON list of records, e.g. json.dump(pickle.load(f), out)"
            )
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
        raise InputError(
            f"{where}: {annotation} holds a JSON {type(records).__name__}, not a list — write a list of records "
            '[{"path": ..., "cap": ..., "resolution": {...}}, ...]'
        )
    return records


# ------------------------------------------------------------------------------------------------------------
# Frame sampling, sizes, captions: small pure functions of the record and the item's generator
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


def sample_frame_indices(record: Record, generator: torch.Generator) -> list[int]:
    """Source frame indices of one item: a window of `record.num_frames` clip frames, start drawn uniformly."""
    if record.kind == "image":
        return [0]
    last_start = record.candidates - record.num_frames
    start = int(torch.randint(0, last_start + 1, (1,), generator=generator)) if last_start > 0 else 0
    positions = range(start, start + record.num_frames)
    if record.candidates != record.source_candidates:  # speed-up: candidates spread evenly over the source ones
        spread = torch.linspace(0, record.source_candidates - 1, record.candidates, dtype=torch.float64)
        positions = [int(spread[i]) for i in positions]
    return [record.start + int(i * record.interval) for i in positions]


def choose_caption(captions: Sequence[str], generator: torch.Generator) -> str:
    """One caption, uniformly, when the record has several."""
    if len(captions) == 1:
        return captions[0]
    return captions[int(torch.randint(0, len(captions), (1,), generator=generator))]


def drop_text(caption: str, kind: str, cfg: float, default_text_ratio: float, generator: torch.Generator) -> str:
    """Text dropout for classifier-free guidance: with probability `cfg` the caption is replaced, by the default
    sentence with probability `default_text_ratio`, else by "" (defaults: 5 % / 5 % / 90 %)."""
    if float(torch.rand((), generator=generator)) >= cfg:
        return caption
    if float(torch.rand((), generator=generator)) < default_text_ratio:
        return DEFAULT_IMAGE_TEXT if kind == "image" else DEFAULT_VIDEO_TEXT
    return ""


# ------------------------------------------------------------------------------------------------------------
# The dataset
# ------------------------------------------------------------------------------------------------------------


class VideoTextDataset(torch.utils.data.Dataset):
    """Video and image records for inpainting training, indexed by (epoch, index) keys.

    Args:
        data_file: the data description file ("ROOT,ANNOTATION.json" lines).
        num_frames: longest clip, 1 + 4k (videos get the longest 1 + 4k their frames allow, at least
            min(29, num_frames)).
        max_hxw: largest area; bigger media are shrunk (aspect kept).
        min_hxw: smallest area after the resize and stride crop; smaller records are skipped.
        hw_stride: height and width are centre-cropped to multiples of this.
        train_fps: frames are sampled at this rate (every fps / train_fps source frames).
        mask_config: mask-type weights for videos and images, and the kept-share bounds.
        cfg: probability of replacing the caption (text dropout); default_text_ratio: share of those replaced by
            the default sentence instead of "".
        seed: fixes every item's randomness together with (epoch, index).
        bad_data: "skip" (report and go on) or "error" (raise on the first bad record or file).
        speed_factor: >= 1; clips longer than needed are sped up by up to this factor (frames spread evenly).

    Attributes:
        records, bucket_keys: the usable records and their (T, H, W) bucket keys, aligned.
        problems: a `DataProblem` per skipped record.
    """

    def __init__(
        self,
        data_file: str | os.PathLike,
        num_frames: int = 93,
        max_hxw: int = 236_544,
        min_hxw: int = 102_400,
        hw_stride: int = 32,
        train_fps: float = 18.0,
        mask_config: MaskConfig = MaskConfig(),  # frozen, so one shared default is safe
        cfg: float = 0.1,
        default_text_ratio: float = 0.5,
        seed: int = 0,
        bad_data: str = "skip",
        speed_factor: float = 1.0,
    ) -> None:
        bad = []
        if num_frames < 1 or (num_frames - 1) % VAE_STRIDE_T:
            bad.append(f"num_frames must be 1 + 4k (e.g. 29, 93), got {num_frames}")
        if not 0 < min_hxw <= max_hxw or hw_stride < 1:
            bad.append(f"need 0 < min_hxw <= max_hxw and hw_stride >= 1, got {min_hxw}, {max_hxw}, {hw_stride}")
        if not train_fps > 0 or not speed_factor >= 1:
            bad.append(f"need train_fps > 0 and speed_factor >= 1, got {train_fps}, {speed_factor}")
        if not (0 <= cfg <= 1 and 0 <= default_text_ratio <= 1):
            bad.append(f"cfg and default_text_ratio must lie in [0, 1], got {cfg}, {default_text_ratio}")
        if bad_data not in ("skip", "error"):
            bad.append(f"bad_data must be 'skip' or 'error', got {bad_data!r}")
        if bad:
            raise InputError("; ".join(bad))
        self.num_frames = num_frames
        self.max_hxw, self.min_hxw, self.hw_stride = max_hxw, min_hxw, hw_stride
        self.train_fps = float(train_fps)
        self.speed_factor = float(speed_factor)
        self.mask_config = mask_config
        self.cfg, self.default_text_ratio = cfg, default_text_ratio
        self.seed = seed
        self.bad_data = bad_data
        self.video_masks = MaskProcessor(
            self.mask_config.min_clear_ratio, self.mask_config.max_clear_ratio, self.mask_config.video_ratios()
        )
        self.image_masks = MaskProcessor(
            self.mask_config.min_clear_ratio, self.mask_config.max_clear_ratio, self.mask_config.image_ratios()
        )

        self.records: list[Record] = []
        self.problems: list[DataProblem] = []
        self.records_read = 0
        for root, annotation, line_no in load_data_description(data_file):
            where = f"{data_file}:{line_no}"
            for position, raw in enumerate(read_annotation(annotation, where), start=1):
                self.records_read += 1
                result = self._build_record(raw, os.fspath(root))
                if isinstance(result, Record):
                    self.records.append(result)
                    continue
                problem = DataProblem(result[0], result[1], position, result[2], os.fspath(annotation))
                if bad_data == "error":
                    raise InputError(f"{where}: {problem.render()} (--bad-data skip would skip it)")
                self.problems.append(problem)

        self.bucket_keys: list[tuple[int, int, int]] = [record.bucket_key for record in self.records]
        self._buckets: dict[tuple[int, int, int], list[int]] = {}
        self._bucket_position: list[int] = []
        for index, key in enumerate(self.bucket_keys):
            members = self._buckets.setdefault(key, [])
            self._bucket_position.append(len(members))
            members.append(index)

    # -- build ---------------------------------------------------------------------------------------------

    def _build_record(self, raw: Any, root: str) -> Record | tuple[str, str, str]:
        """A `Record`, or (path, reason, detail) saying why the record cannot be used. Reads no media."""
        if not isinstance(raw, dict):
            return "", "bad record", f"expected a JSON object, got {type(raw).__name__}"
        rel = raw.get("path")
        if not isinstance(rel, str) or not rel:
            return "", "missing path", f"'path' is {rel!r}; give the media path relative to its ROOT"
        path = os.path.join(root, rel)
        kind = media_kind(rel)
        if kind is None:
            return path, "unknown extension", "use an image or video file type (e.g. .jpg, .png, .mp4)"

        cap = raw.get("cap")
        if cap is None:
            return path, "missing caption", "add 'cap': a string or a list of strings"
        captions = (cap,) if isinstance(cap, str) else tuple(cap) if isinstance(cap, list) else None
        if captions is None or not all(isinstance(c, str) for c in captions):
            return path, "bad caption", f"'cap' must be a string or a list of strings, got {cap!r:.80}"
        if not captions or not any(c.strip() for c in captions):
            return path, "empty caption", "write a caption (or drop the record)"

        resolution = raw.get("resolution")
        height = _positive_int(resolution.get("height")) if isinstance(resolution, dict) else None
        width = _positive_int(resolution.get("width")) if isinstance(resolution, dict) else None
        if height is None or width is None:
            return path, "bad resolution", f"'resolution' is {resolution!r:.80}; need positive height and width"

        crop = raw.get("crop")
        if crop is not None:
            values = [_positive_int(v, allow_zero=True) for v in crop] if isinstance(crop, list) else []
            inside = len(values) == 4 and None not in values
            inside = inside and values[0] < values[1] <= width and values[2] < values[3] <= height
            if not inside:
                return path, "bad crop", f"'crop' is {crop!r:.80}; need [x0, x1, y0, y1] inside {height}x{width}"
            crop = tuple(values)
            height, width = crop[3] - crop[2], crop[1] - crop[0]

        # Size (spec 6.5, area mode): shrink to max_hxw, centre-crop to the stride, then filter.
        resize_h, resize_w = max_hxw_resize(height, width, self.max_hxw)
        _, _, bucket_h, bucket_w = stride_crop_box(resize_h, resize_w, self.hw_stride)
        if bucket_h < 1 or bucket_w < 1 or bucket_h * bucket_w < self.min_hxw:
            return path, "too small", (
                f"{height}x{width} becomes {bucket_h}x{bucket_w}, below the minimum area {self.min_hxw}"
            )
        if not MIN_ASPECT <= bucket_h / bucket_w <= MAX_ASPECT:
            return path, "bad aspect", f"{bucket_h}x{bucket_w}: height/width must lie in [1/2, 2]"
        sizes = dict(height=bucket_h, width=bucket_w, resize_height=resize_h, resize_width=resize_w,
                     source_height=height, source_width=width, crop=crop)
        if kind == "image":
            return Record(path, kind, captions, num_frames=1, **sizes)

        # Frames (spec 6.4): sample at train_fps from the cut's start.
        frames = _positive_int(raw.get("num_frames"))
        if frames is None:
            return path, "bad num_frames", f"'num_frames' is {raw.get('num_frames')!r}; videos need a positive count"
        fps = raw.get("fps", DEFAULT_FPS)
        if isinstance(fps, bool) or not isinstance(fps, (int, float)) or not math.isfinite(fps) or fps <= 0:
            return path, "bad fps", f"'fps' is {fps!r}; give a positive number (or leave it out for 24)"
        start = 0
        cut = raw.get("cut")
        if cut is not None:
            start = _positive_int(cut[0], allow_zero=True) if isinstance(cut, list) and cut else None
            if start is None:
                return path, "bad cut", f"'cut' is {cut!r:.80}; need [start_frame, end_frame] with start >= 0"
        if frames > TOO_LONG_FACTOR * self.num_frames * fps / self.train_fps * self.speed_factor:
            return path, "too long", (
                f"{frames} frames at {fps:g} fps is over {TOO_LONG_FACTOR}x the span of one sample; cut it into clips"
            )
        interval = 1.0 if abs(fps - self.train_fps) < 0.1 else fps / self.train_fps
        source_candidates = candidate_count(frames, interval)
        candidates = source_candidates
        if self.speed_factor > 1 and candidates > self.num_frames:
            candidates = max(self.num_frames, int(candidates / self.speed_factor))
        length = clip_length(candidates, self.num_frames)
        if length == 0:
            return path, "too short", (
                f"{frames} frames at {fps:g} fps give {candidates} at {self.train_fps:g} fps; need at least "
                f"{min(MIN_VIDEO_FRAMES, self.num_frames)}"
            )
        return Record(path, kind, captions, num_frames=length, start=start, interval=interval,
                      source_candidates=source_candidates, candidates=candidates, **sizes)

    def summary(self) -> dict[str, Any]:
        """Counts for the start-of-training report (JSON-friendly: bucket keys as "TxHxW")."""
        return {
            "records_read": self.records_read,
            "records_used": len(self.records),
            "skipped": dict(Counter(problem.reason for problem in self.problems).most_common()),
            "buckets": {"x".join(map(str, key)): len(members) for key, members in self._buckets.items()},
        }

    # -- load ----------------------------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self.records)

    def item_generator(self, epoch: int, index: int, attempt: int = 0) -> torch.Generator:
        """The generator all of one item's randomness comes from."""
        return torch.Generator().manual_seed(stable_seed("item", self.seed, epoch, index, attempt))

    def draw_mask(
        self, num_frames: int, height: int, width: int, generator: torch.Generator
    ) -> tuple[torch.Tensor, str]:
        """A (T, 1, H, W) mask (1 = generate) and its type, drawn with the image ratios when T == 1."""
        processor = self.image_masks if num_frames == 1 else self.video_masks
        mask, mask_type = processor.get_mask(None, num_frames, height, width, generator)
        return mask, str(mask_type)

    def __getitem__(self, key: tuple[int, int] | int) -> dict[str, Any]:
        epoch, index = key if isinstance(key, tuple) else (0, key)
        members = self._buckets[self.bucket_keys[index]]
        position = self._bucket_position[index]
        replaced: list[DataProblem] = []
        for attempt in range(min(MAX_REPLACEMENTS + 1, len(members))):
            record = self.records[members[(position + attempt) % len(members)]]
            generator = self.item_generator(epoch, index, attempt)
            indices = sample_frame_indices(record, generator)
            try:
                frames = self._decode(record, indices)
            except Exception as exc:  # any decoder failure is a property of the file: report it, use another
                reason = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
                problem = DataProblem(record.path, "decode failed", detail=reason)
                if self.bad_data == "error":
                    raise InputError(f"{record.path}: decode failed ({reason}) — fix or remove the file "
                                     "(--bad-data skip replaces it)")
                replaced.append(problem)
                continue
            item = self._make_item(record, frames, generator)
            item["replaced"] = replaced
            return item
        raise InputError(
            f"{len(replaced)} records of bucket {'x'.join(map(str, self.bucket_keys[index]))} in a row failed to "
            f"load, the first {replaced[0].path} ({replaced[0].detail}) — check the media files of this dataset"
        )

    def _decode(self, record: Record, indices: list[int]) -> torch.Tensor:
        """The chosen frames as (T, 3, H, W) uint8, cropped to the record's `crop`."""
        if record.kind == "image":
            array = read_image(record.path)[None]  # (1, H, W, 3)
        else:
            reader = _open_video(record.path)
            if len(reader) <= indices[-1]:
                raise ValueError(f"has {len(reader)} frames; the record needs frame {indices[-1]}")
            array = reader.get_batch(indices).asnumpy()  # (T, H, W, 3)
        # Pillow's arrays are read-only, which torch.from_numpy warns about: copy those (and only those).
        frames = torch.from_numpy(np.require(array, requirements=["C", "W"])).permute(0, 3, 1, 2)
        if record.crop is not None:
            x0, x1, y0, y1 = record.crop
            frames = frames[..., y0:y1, x0:x1]
        return frames

    def _resize(self, frames: torch.Tensor, record: Record) -> torch.Tensor:
        """uint8 (T, 3, H, W) -> float32 (T, 3, bucket H, bucket W) in [0, 255]: area resize, stride crop."""
        out = []
        for chunk in frames.split(RESIZE_CHUNK):
            chunk = chunk.to(torch.float32)
            if chunk.shape[-2:] != (record.source_height, record.source_width):  # the record's size was wrong
                chunk = center_crop_resize(chunk, record.resize_height, record.resize_width)
            elif (record.resize_height, record.resize_width) != (record.source_height, record.source_width):
                chunk = resize(chunk, record.resize_height, record.resize_width)
            out.append(stride_crop(chunk, self.hw_stride))
        return torch.cat(out)

    def _make_item(self, record: Record, frames: torch.Tensor, generator: torch.Generator) -> dict[str, Any]:
        # 1. pixels: (T, 3, H, W) uint8 -> float32 in [-1, 1]
        pixels = self._resize(frames, record) / 127.5 - 1.0
        num_frames, _, height, width = pixels.shape
        # 2. caption and text dropout
        caption = choose_caption(record.captions, generator)
        caption = drop_text(caption, record.kind, self.cfg, self.default_text_ratio, generator)
        # 3. mask (T, 1, H, W); frames to generate become black (-1), as the reference's uint8 zeroing does
        mask, mask_type = self.draw_mask(num_frames, height, width, generator)
        masked = torch.where(mask < 0.5, pixels, torch.full_like(pixels, -1.0))
        return {
            "pixel_values": pixels.permute(1, 0, 2, 3).contiguous(),  # (3, T, H, W)
            "masked_pixel_values": masked.permute(1, 0, 2, 3).contiguous(),  # (3, T, H, W)
            "mask": mask.permute(1, 0, 2, 3).contiguous(),  # (1, T, H, W)
            "caption": caption,
            "mask_type": mask_type,
            "path": record.path,
        }


class ErrorsAsItems(torch.utils.data.Dataset):
    """A dataset for a DataLoader whose `InputError`s come back as items, {"error": message}, instead of being
    raised where the item is loaded; `collate` turns a batch with one into {"error": message}.

    Why: an exception in a DataLoader worker reaches the main process re-created as `type(exc)(text)`, the text
    holding the worker's traceback, so the user's one-line error would arrive as two tracebacks. As data, the
    message crosses the process boundary intact and the training loop raises it (with what it adds: the last
    checkpoint). Without workers it behaves the same, so there is one path.
    """

    def __init__(self, dataset: torch.utils.data.Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: Any) -> dict[str, Any]:
        try:
            return self.dataset[key]
        except InputError as exc:
            return {"error": str(exc)}


def collate(samples: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Stack one bucket's items: tensors (B, C, T, H, W), lists of captions / mask types / paths, and every
    `DataProblem` of the batch's replacements. A batch with an error item (`ErrorsAsItems`) is {"error": the
    first message}."""
    errors = [s["error"] for s in samples if "error" in s]
    if errors:
        return {"error": errors[0]}
    return {
        "pixel_values": torch.stack([s["pixel_values"] for s in samples]),
        "masked_pixel_values": torch.stack([s["masked_pixel_values"] for s in samples]),
        "mask": torch.stack([s["mask"] for s in samples]),
        "caption": [s["caption"] for s in samples],
        "mask_type": [s["mask_type"] for s in samples],
        "path": [s["path"] for s in samples],
        "replaced": [problem for s in samples for problem in s["replaced"]],
    }


def _positive_int(value: Any, allow_zero: bool = False) -> int | None:
    """An int > 0 (>= 0 with allow_zero) from an int or an integral float; None otherwise (bools refused)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    if isinstance(value, float) and not value.is_integer():
        return None
    value = int(value)
    return value if value > 0 or (allow_zero and value == 0) else None
