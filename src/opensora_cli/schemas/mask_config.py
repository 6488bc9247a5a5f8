"""Mask config (`mask_config.yaml`): which mask types training draws, and how much of a clip they keep.

    min_clear_ratio: 0.0          # kept share bounds for continuation / random_temporal
    max_clear_ratio: 1.0
    mask_type_ratio_dict_video:   # weights, normalised; 0 = never drawn
      t2iv: 1
      i2v: 8
      transition: 8
      continuation: 2
      clear: 0
      random_temporal: 1
    mask_type_ratio_dict_image:   # images have one frame: only t2iv and clear
      t2iv: 1
      clear: 1

`load_mask_config` reports every problem with its YAML line, and a did-you-mean for misspelt names.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator

from opensora_cli.schemas.loading import load_yaml
from opensora_cli.schemas.masks import IMAGE_MASK_TYPES, MASK_TYPE_NAMES, MaskType, normalise_ratios
from opensora_cli.schemas.problems import Problem, did_you_mean, error_text

# The reference's training mix for videos (scripts/train_configs/mask_config.yaml of v1.3).
DEFAULT_VIDEO_RATIOS: dict[MaskType, float] = {
    MaskType.t2iv: 1.0,
    MaskType.i2v: 8.0,
    MaskType.transition: 8.0,
    MaskType.continuation: 2.0,
    MaskType.clear: 0.0,
    MaskType.random_temporal: 1.0,
}
# What the reference effectively does for images (its all-zero dict normalises to uniform), made explicit.
DEFAULT_IMAGE_RATIOS: dict[MaskType, float] = {MaskType.t2iv: 1.0, MaskType.clear: 1.0}


def _check_weights(ratios: dict[MaskType, float]) -> dict[MaskType, float]:
    if not ratios:
        raise ValueError("is empty; give at least one mask type a weight")
    bad = [f"{t}: {w}" for t, w in ratios.items() if not math.isfinite(w) or w < 0]
    if bad:
        raise ValueError(f"weights must be finite and >= 0, got {', '.join(bad)}; use 0 for types never drawn")
    return ratios


class MaskConfig(BaseModel):
    """Validated mask config. Weights are stored as given; `video_ratios()` / `image_ratios()` normalise."""

    # inf and nan are refused, never trained with
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    min_clear_ratio: float = Field(0.0, ge=0.0, le=1.0)
    max_clear_ratio: float = Field(1.0, ge=0.0, le=1.0)
    mask_type_ratio_dict_video: dict[MaskType, float] = Field(default_factory=lambda: dict(DEFAULT_VIDEO_RATIOS))
    mask_type_ratio_dict_image: dict[MaskType, float] = Field(default_factory=lambda: dict(DEFAULT_IMAGE_RATIOS))

    @field_validator("mask_type_ratio_dict_video")
    @classmethod
    def _video_weights(cls, value: dict[MaskType, float]) -> dict[MaskType, float]:
        return _check_weights(value)

    @field_validator("mask_type_ratio_dict_image")
    @classmethod
    def _image_weights(cls, value: dict[MaskType, float]) -> dict[MaskType, float]:
        not_for_images = sorted(str(t) for t in value if t not in IMAGE_MASK_TYPES)
        if not_for_images:
            raise ValueError(f"{', '.join(not_for_images)} cannot apply to images (one frame); use only t2iv and clear")
        return _check_weights(value)

    @field_validator("max_clear_ratio")
    @classmethod
    def _ordered_bounds(cls, value: float, info: ValidationInfo) -> float:
        low = info.data.get("min_clear_ratio")
        if low is not None and low > value:
            raise ValueError(f"is {value}, below min_clear_ratio {low}; make min_clear_ratio <= max_clear_ratio")
        return value

    def video_ratios(self) -> dict[MaskType, float]:
        return normalise_ratios(self.mask_type_ratio_dict_video)

    def image_ratios(self) -> dict[MaskType, float]:
        return normalise_ratios(self.mask_type_ratio_dict_image)


_FIELDS = tuple(MaskConfig.model_fields)
_RATIO_FIELDS = ("mask_type_ratio_dict_video", "mask_type_ratio_dict_image")


def load_mask_config(path: str | Path) -> tuple[MaskConfig | None, list[Problem], list[Problem]]:
    """Load and check a mask config YAML.

    Returns:
        (config or None, problems, warnings). The config is None whenever there is a problem.
    """
    label = str(path)
    raw, lines, problems = load_yaml(path, "mask config", "--mask-config", _EXAMPLE_FIX)
    if raw is None:
        return None, problems, []

    # Unknown names first, with a did-you-mean; they are then dropped so that the rest is checked too.
    problems, known = [], {}
    for key, value in raw.items():
        if key not in _FIELDS:
            problems.append(Problem.of(label, lines.get((key,)), f"unknown key '{key}'", did_you_mean(key, _FIELDS)))
        elif key in _RATIO_FIELDS and isinstance(value, dict):
            known[key] = {}
            for name, weight in value.items():
                if name in MASK_TYPE_NAMES:
                    known[key][name] = weight
                else:
                    problems.append(Problem.of(label, lines.get((key, name)), f"{key}: unknown mask type '{name}'",
                                               did_you_mean(name, MASK_TYPE_NAMES)))
        else:
            known[key] = value

    try:
        config = MaskConfig.model_validate(known)
    except ValidationError as exc:
        for error in exc.errors():
            loc = tuple(str(part) for part in error["loc"])
            line = lines.get(loc[:2]) or lines.get(loc[:1]) or (lines.get(("min_clear_ratio",)) if not loc else None)
            where = ".".join(loc) if loc else "min_clear_ratio/max_clear_ratio"
            what, fix = error_text(error)
            problems.append(Problem.of(label, line, f"{where}: {what}", fix or _fix_for(error)))
    if problems:
        return None, sorted(problems, key=lambda p: p.line or 0), []

    warnings = [Problem.of(label, lines.get((field,)), f"{field}: every weight is 0, so all its types are drawn "
                           "equally often (the reference's rule)", "give the types you want a positive weight")
                for field in _RATIO_FIELDS if field in raw and sum(getattr(config, field).values()) == 0]
    return config, [], warnings


_EXAMPLE_FIX = "see `opensora mask-preview --help` or README.md for an example"


def _fix_for(error: dict[str, Any]) -> str:
    kind = error.get("type", "")
    if kind in ("greater_than_equal", "less_than_equal"):
        return "use a number between 0 and 1"
    if kind in ("float_parsing", "float_type"):
        return "write a number, e.g. 0.5"
    if kind == "dict_type":
        return "write a mapping of mask type to weight, e.g. {i2v: 8, transition: 8}"
    return "fix the value"
