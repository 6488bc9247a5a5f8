"""LoRA options, without torch: `--lora DIR[:SCALE]` values and the training choices (see `models.lora`)."""

from __future__ import annotations

import math
from pathlib import Path

from pydantic import BaseModel, ConfigDict

LORA_TARGET_CHOICES = ("attn", "attn+ff", "all-linear")  # --lora-targets (models.lora.LORA_TARGETS)
MAX_LORA_SCALE = 100.0  # a typo guard: real scales are 0-2


class LoraSpec(BaseModel):
    """One `--lora` value: an adapter folder and the scale of its low-rank update (0 = the base model)."""

    model_config = ConfigDict(frozen=True)

    path: Path
    scale: float = 1.0

    @classmethod
    def parse(cls, value: str, default_scale: float = 1.0) -> LoraSpec:
        """"DIR" or "DIR:SCALE" (the text after the last ':' is a scale only when it reads as a number, so a
        folder name with a ':' still works).

        Raises:
            ValueError: the scale is not finite or beyond +-MAX_LORA_SCALE (one line naming the value).
        """
        path, scale = value, default_scale
        head, sep, tail = value.rpartition(":")
        if sep and head:
            try:
                scale = float(tail)
            except ValueError:
                pass
            else:
                path = head
        if not math.isfinite(scale) or abs(scale) > MAX_LORA_SCALE:
            raise ValueError(f"'{value}': the scale must be a number between -{MAX_LORA_SCALE:g} and "
                             f"{MAX_LORA_SCALE:g}, e.g. DIR:0.8")
        if not path:
            raise ValueError(f"'{value}': no folder; write DIR or DIR:SCALE")
        return cls(path=Path(path), scale=scale)

    def __str__(self) -> str:
        return f"{self.path}:{self.scale:g}"
