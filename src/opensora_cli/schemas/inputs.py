"""Input files and the options that go with them: the contract of `validate-inputs` and `sample`.

Prompts file: UTF-8, one prompt per line. Conds file: the same number of lines, each one of
- nothing (text only: t2iv),
- one image, or several comma-separated images, each optionally with a frame index: `a.png@0,b.png@-1`
  (negative indices count from the end; without indices one image goes to frame 0, two to the first and
  last frames, and three or more need indices),
- one video (its first `num_frames` frames are the clip to condition on).

Spaces around an item are ignored. A path with a comma (or leading or trailing spaces, or an `@N` of its
own) is written in double quotes, with the frame index outside them and `""` for a quote inside them:
`"shots, day 1/a.png"@0,b.png@-1` and `"say ""hi"".png"`. A quote anywhere but at the start of an item
is an ordinary character.
"""

from __future__ import annotations

import re
from pathlib import Path

from pydantic import BaseModel, Field, ValidationInfo, field_validator, model_serializer

from opensora_cli.schemas.defaults import RELEASED
from opensora_cli.schemas.masks import MaskType
from opensora_cli.schemas.problems import Problem
from opensora_cli.schemas.resolution import MODEL_HW_STRIDE
from opensora_cli.schemas.windows import Window, default_overlap

_INDEX_SUFFIX = re.compile(r"^(?P<path>.+)@(?P<index>[+-]?\d+)$")
# A quoted item: the path (`""` inside for a quote; the closing quote is the one no quote follows), then what
# stands before the next comma, which may only be an @N index.
_QUOTED_ITEM = re.compile(r'"(?P<path>(?:[^"]|"")*)"(?!")(?P<rest>[^,]*)')
_AFTER_QUOTE = re.compile(r"\s*(?:@(?P<index>[+-]?\d+))?\s*")


class CondSpec(BaseModel):
    """One item of a conds line as written: a path and an optional frame index."""

    text: str
    path: str
    index: int | None = None


def parse_conds_line(text: str) -> tuple[list[CondSpec], list[str]]:
    """Split a conds line into items (the rules are in the module docstring).

    Returns:
        (items, errors): errors are messages for items that cannot be parsed (empty items between commas,
        a quote that is never closed, text other than @N after a closing quote). The other items are still
        returned, so that a check reports all of a line's problems; an unclosed quote is read as closed at
        the end of the line.
    """
    stripped = text.strip()
    if not stripped:
        return [], []
    items, errors = [], []
    start, position = 0, 1
    while True:
        item_start = len(stripped) - len(stripped[start:].lstrip())
        if stripped.startswith('"', item_start):
            match = _QUOTED_ITEM.match(stripped, item_start)
            if match is None:
                errors.append(f"item {position}: the quote in '{stripped[item_start:]}' is never closed "
                              '(end a quoted path with ", and write "" for a quote inside it)')
                # Read on as if it closed at the end of the line, so that the line's files are still checked.
                rest = stripped[item_start + 1:].replace('""', '"')
                match = _INDEX_SUFFIX.match(rest)
                if rest:
                    items.append(CondSpec(text=stripped[item_start:], path=match["path"] if match else rest,
                                          index=int(match["index"]) if match else None))
                return items, errors
            end = match.end()
            written = stripped[item_start:end].strip()
            after = _AFTER_QUOTE.fullmatch(match["rest"])
            path = match["path"].replace('""', '"')
            if after is None:
                errors.append(f"item {position}: '{written}' has '{match['rest'].strip()}' after the closing "
                              "quote (only a frame index @N may follow it)")
            elif not path:
                errors.append(f"item {position} is an empty quoted path")
            else:
                index = after["index"]
                items.append(CondSpec(text=written, path=path, index=None if index is None else int(index)))
        else:
            end = stripped.find(",", start)
            end = len(stripped) if end < 0 else end
            part = stripped[start:end].strip()
            if not part:
                errors.append(f"item {position} is empty (two commas in a row, or a comma at an end)")
            elif match := _INDEX_SUFFIX.match(part):
                items.append(CondSpec(text=part, path=match["path"].strip(), index=int(match["index"])))
            else:
                items.append(CondSpec(text=part, path=part))
        if end >= len(stripped):
            return items, errors
        start, position = end + 1, position + 1


def nearest_valid_frames(num_frames: int) -> tuple[int, int]:
    """The 1 + 4k frame counts just below and above `num_frames`."""
    below = max(1, (num_frames - 1) // 4 * 4 + 1)
    return below, below + 4


def check_num_frames(value: int) -> int:
    """A frame count the VAE can encode (1 + 4k), else a ValueError suggesting the nearest ones."""
    if value < 1 or (value - 1) % 4:
        below, above = nearest_valid_frames(max(value, 1))
        raise ValueError(f"{value} is not 1 + 4k (the VAE compresses time by 4); use {below} or {above}")
    return value


class InputsRequest(BaseModel):
    """The options of `validate-inputs` (and the input half of `sample`). Field names map to `--kebab-case`.

    The field defaults are the released model's; `services.model_folders.resolve_fields` lays a model folder's
    own defaults (`opensora_defaults.json`) over those the user left out.
    """

    model: Path | None = None  # whose defaults and trained sizes apply (None: the bundled demo model)
    prompts: Path
    conds: Path | None = None
    mask_type: MaskType | None = None
    num_frames: int = RELEASED["num_frames"]
    height: int | None = None
    width: int | None = None
    crop_for_hw: bool = RELEASED["crop_for_hw"]
    # The area range the model was trained on; None until the model is known (then max_hxw is checked).
    max_hxw_range: tuple[int, int] | None = None
    max_hxw: int = RELEASED["max_hxw"]
    mask_config: Path | None = None
    # Videos longer than the model's trained length (None: unknown) are made in windows of that length, each
    # keeping `overlap` frames of the one before (None: about a quarter window, `schemas.windows.default_overlap`).
    trained_frames: int | None = None
    overlap: int | None = None

    _frames = field_validator("num_frames")(staticmethod(check_num_frames))

    @field_validator("overlap")
    @classmethod
    def _overlap(cls, value: int | None) -> int | None:
        return value if value is None else check_num_frames(value)

    @property
    def window_frames(self) -> int | None:
        """The frames of one window: the trained length when the video is longer, else the whole video."""
        if self.num_frames is None:
            return None
        return min(self.num_frames, self.trained_frames or self.num_frames)

    @property
    def window_overlap(self) -> int | None:
        """The overlap of a long video's windows (None for a video of one window)."""
        if self.num_frames is None or self.window_frames is None or self.num_frames <= self.window_frames:
            return None
        return self.overlap if self.overlap is not None else default_overlap(self.window_frames)

    @field_validator("height", "width")
    @classmethod
    def _size(cls, value: int | None) -> int | None:
        if value is not None and (value < MODEL_HW_STRIDE or value % MODEL_HW_STRIDE):
            lower = max(MODEL_HW_STRIDE, value // MODEL_HW_STRIDE * MODEL_HW_STRIDE)
            raise ValueError(f"{value} is not a positive multiple of {MODEL_HW_STRIDE} (VAE x8, patch x2); "
                             f"use {lower} or {lower + MODEL_HW_STRIDE}")
        return value

    @field_validator("max_hxw")
    @classmethod
    def _area(cls, value: int, info: ValidationInfo) -> int:
        if info.data.get("max_hxw_range") is None:
            return value
        low, high = info.data["max_hxw_range"]
        if not low <= value <= high:
            raise ValueError(f"{value} is outside the model's trained area range [{low}, {high}]; "
                             "pick a value inside it")
        return value

    @field_validator("crop_for_hw")
    @classmethod
    def _fixed_needs_size(cls, value: bool, info: ValidationInfo) -> bool:
        # A size that failed its own check is absent from info.data and already reported; only None is missing.
        missing = [f"--{name}" for name in ("height", "width") if name in info.data and info.data[name] is None]
        if value and missing:
            raise ValueError(f"needs {' and '.join(missing)}, e.g. --height 352 --width 640")
        return value


class CondItem(BaseModel):
    """A resolved condition file of one line."""

    path: str
    kind: str
    index: int | None = None
    resolved_from: str | None = Field(
        None, description="'absolute', 'cwd' (current directory) or 'conds-dir' (the conds file's folder)"
    )


class InputItem(BaseModel):
    """One checked line: what `sample` will do with it."""

    line: int
    prompt: str
    conds: list[str]
    mask_type: MaskType | None
    frame_indices: list[int] | None = Field(
        None, description="kept pixel frames for image inputs (0-based); None for a video (drawn at sampling)"
    )
    output_size: tuple[int, int] | None = Field(None, description="(height, width) of the generated video")
    windows: list[Window] | None = Field(None, description="a long video's windows (absent: one video)")

    @model_serializer(mode="wrap")
    def _short_without_windows(self, handler):
        data = handler(self)
        if self.windows is None:  # the report of a short video reads as it always did
            data.pop("windows", None)
        return data
    cond_items: list[CondItem] = Field(default_factory=list, exclude=True)


class ValidationReport(BaseModel):
    """Everything `validate-inputs` found. `ok` is True when there is no problem (warnings allowed)."""

    ok: bool
    problems: list[Problem]
    warnings: list[Problem] = Field(default_factory=list)
    items: list[InputItem]
    memory: dict[str, float | str] | None = Field(
        None, description="estimated peak memory of the largest video (GiB): on a CPU in fp32, on a GPU in bf16")
