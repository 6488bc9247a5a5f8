"""Request and result of `mask-preview`."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, Field, field_validator

from opensora_cli.schemas.masks import MaskType
from opensora_cli.schemas.windows import Window

PREVIEW_SUFFIXES = (".png", ".gif", ".mp4")


class MaskPreviewRequest(BaseModel):
    """What to preview. Without --conds or --mask-config a mask type is required (checked by the service)."""

    mask_type: MaskType | None = None
    num_frames: int = 93
    height: int | None = None
    width: int | None = None
    seed: int | None = None
    mask_config: Path | None = None
    samples: int = Field(1, ge=1, le=64)
    conds: str | None = None
    line: int = Field(1, ge=1)
    out: Path | None = None
    model: Path | None = None  # whose trained length makes the windows of a long video (None: the released 93)
    overlap: int | None = None

    @field_validator("out")
    @classmethod
    def _suffix(cls, value: Path | None) -> Path | None:
        if value is not None and value.suffix.lower() not in PREVIEW_SUFFIXES:
            raise ValueError(f"'{value}' must end in {', '.join(PREVIEW_SUFFIXES)}")
        return value


class MaskSample(BaseModel):
    """One drawn mask: its type, pixel frame pattern and latent mask."""

    mask_type: MaskType
    frames: list[int] = Field(description="one value per pixel frame: 1 = generate, 0 = keep")
    latent_mask: list[list[float]] = Field(description="[latent frame][channel] of the compressed mask")


class MaskPreviewResult(BaseModel):
    seed: int
    num_frames: int
    height: int
    width: int
    latent_shape: tuple[int, int, int, int] = Field(description="(channels, latent frames, height/8, width/8)")
    samples: list[MaskSample]
    conds: list[str] = Field(default_factory=list, description="condition files shown in kept frames")
    out: Path | None = None
    windows: list[Window] | None = Field(None, description="a long video's windows (None: one window)")
