"""The training dataset: video and image records with captions, bucketed by (frames, height, width).

    dataset = VideoTextDataset(data_file="data.txt", num_frames=93, mask_config=mask_config, seed=1234)
    print(dataset.summary())  # records read, used, skipped by reason, buckets
    item = dataset[(epoch, index)]  # {"pixel_values": (3, T, H, W), "masked_pixel_values", "mask", "caption", ...}

Records come from `data.annotations` (which also lists how reading them differs from the reference); a record
that cannot be used is skipped with a `DataProblem` (or, with bad_data="error", stops the build). How loading
differs from the reference, on purpose:
- the temporal window starts anywhere in [0, len - T] (the reference never drew the last start), and is drawn
  when the item is loaded, from the item's generator;
- a sample's randomness depends only on (seed, epoch, index), never on worker, rank or resume point;
- resizing is done in float32 (the reference resized uint8 frames, re-quantising them before normalisation);
  frames whose decoded size differs from the record's are centre-cropped to the record's aspect before
  resizing, so the bucket size always comes out;
- a file that fails to decode is replaced by the next record of its bucket (deterministic) and reported in the
  item's "replaced" list (the reference drew a random replacement silently).
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from opensora_cli.data.annotations import (
    VAE_STRIDE_T,
    DataProblem,
    Record,
    RecordRules,
    check_record,
    load_data_description,
    read_annotation,
)
from opensora_cli.data.media import open_video, read_image
from opensora_cli.data.transforms import center_crop_resize, resize, stride_crop
from opensora_cli.errors import InputError
from opensora_cli.masks.processor import MaskProcessor
from opensora_cli.schemas.mask_config import MaskConfig
from opensora_cli.schemas.resolution import ARBITRARY_HW_STRIDE, MAX_MAX_HXW, MIN_MAX_HXW
from opensora_cli.utils.seeds import stable_seed

# How many further records of the same bucket are tried when a file does not decode.
MAX_REPLACEMENTS = 16
# Frames resized at once: bounds the float32 copy of a long high-resolution clip.
RESIZE_CHUNK = 8
DEFAULT_VIDEO_TEXT = "The video showcases a scene with coherent and clear visuals."
DEFAULT_IMAGE_TEXT = "The image showcases a scene with coherent and clear visuals."


# ------------------------------------------------------------------------------------------------------------
# Frame sampling and captions: small pure functions of the record and the item's generator
# ------------------------------------------------------------------------------------------------------------


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
        min_hxw: smallest area after the resize and stride crop, smaller records are skipped (default: the bottom of
            the released model's trained area range).
        hw_stride: height and width are centre-cropped to multiples of this.
        train_fps: frames are sampled at this rate (every fps / train_fps source frames).
        mask_config: mask-type weights for videos and images, and the kept-share bounds (frozen: one default serves).
        cfg: probability of replacing the caption (text dropout); default_text_ratio: share of those replaced by
            the default sentence instead of "".
        seed: fixes every item's randomness together with (epoch, index).
        bad_data: "skip" (report and go on) or "error" (raise on the first bad record or file).
        speed_factor: >= 1; clips longer than needed are sped up by up to this factor (frames spread evenly).

    Attributes:
        records, bucket_keys: the usable records and their (T, H, W) bucket keys, aligned.
        problems: a `DataProblem` per skipped record.
    """

    def __init__(self, data_file: str | os.PathLike, num_frames: int = 93, max_hxw: int = MAX_MAX_HXW,
                 min_hxw: int = MIN_MAX_HXW, hw_stride: int = ARBITRARY_HW_STRIDE, train_fps: float = 18.0,
                 mask_config: MaskConfig = MaskConfig(), cfg: float = 0.1, default_text_ratio: float = 0.5,
                 seed: int = 0, bad_data: str = "skip", speed_factor: float = 1.0) -> None:
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
        self.rules = RecordRules(num_frames, max_hxw, min_hxw, hw_stride, float(train_fps), float(speed_factor))
        self.mask_config, self.cfg, self.default_text_ratio = mask_config, cfg, default_text_ratio
        self.seed, self.bad_data = seed, bad_data
        clear = (mask_config.min_clear_ratio, mask_config.max_clear_ratio)
        self.video_masks = MaskProcessor(*clear, mask_config.video_ratios())
        self.image_masks = MaskProcessor(*clear, mask_config.image_ratios())

        self.records: list[Record] = []
        self.problems: list[DataProblem] = []
        self.records_read = 0
        for root, annotation, line_no in load_data_description(data_file):
            where = f"{data_file}:{line_no}"
            for position, raw in enumerate(read_annotation(annotation, where), start=1):
                self.records_read += 1
                result = check_record(raw, root, self.rules, position, annotation)
                if isinstance(result, Record):
                    self.records.append(result)
                    continue
                if bad_data == "error":
                    raise InputError(f"{where}: {result.render()} (--bad-data skip would skip it)")
                self.problems.append(result)

        self.bucket_keys: list[tuple[int, int, int]] = [record.bucket_key for record in self.records]
        self._buckets: dict[tuple[int, int, int], list[int]] = {}
        self._bucket_position: list[int] = []
        for index, key in enumerate(self.bucket_keys):
            members = self._buckets.setdefault(key, [])
            self._bucket_position.append(len(members))
            members.append(index)

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
                if self.bad_data == "error":
                    raise InputError(f"{record.path}: decode failed ({reason}) — fix or remove the file "
                                     "(--bad-data skip replaces it)")
                replaced.append(DataProblem(record.path, "decode failed", detail=reason))
                continue
            return {**self._make_item(record, frames, generator), "replaced": replaced}
        raise InputError(f"{len(replaced)} records of bucket {'x'.join(map(str, self.bucket_keys[index]))} in a row "
                         f"failed to load, the first {replaced[0].path} ({replaced[0].detail}) — check the media "
                         "files of this dataset")

    def _decode(self, record: Record, indices: list[int]) -> torch.Tensor:
        """The chosen frames as (T, 3, H, W) uint8, cropped to the record's `crop`."""
        if record.kind == "image":
            array = read_image(record.path)[None]  # (1, H, W, 3)
        else:
            reader = open_video(record.path)
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
            out.append(stride_crop(chunk, self.rules.hw_stride))
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
    batch = {key: torch.stack([s[key] for s in samples]) for key in ("pixel_values", "masked_pixel_values", "mask")}
    batch.update({key: [s[key] for s in samples] for key in ("caption", "mask_type", "path")})
    return {**batch, "replaced": [problem for s in samples for problem in s["replaced"]]}

