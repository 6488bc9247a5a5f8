"""Request and results of `opensora sample`."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, field_validator

from opensora_cli.schemas.problems import Problem

DTYPE_NAMES = ("fp32", "bf16", "fp16")
DEVICE_NAMES = ("cpu", "cuda", "npu")


class SampleOptions(BaseModel):
    """Generation options (the inputs half is `schemas.inputs.InputsRequest`). Field names map to --kebab-case."""

    model_config = ConfigDict(allow_inf_nan=False)  # --guidance-scale inf or nan is refused, never run

    model: Path | None = None
    vae: Path | None = None
    text_encoder: Path | None = None
    output_dir: Path = Path("samples")
    steps: int = Field(100, ge=1, le=1000)
    guidance_scale: float = Field(7.5, ge=0.0)
    guidance_rescale: float = Field(0.0, ge=0.0, le=1.0)
    sampler: str = "EulerAncestralDiscrete"
    seed: int = Field(1234, ge=0)
    num_samples_per_prompt: int = Field(1, ge=1, le=64)
    noise_strength: float = Field(0.0, ge=0.0, le=1.0)
    negative_prompt: str | None = None  # None = the reference's negative prompt
    prompt_template: bool = True  # wrap prompts in the reference's "high quality, high aesthetic, ..." template
    fps: int = Field(18, ge=1, le=120)
    device: str | None = None  # None = cuda, else npu, else cpu
    dtype: str | None = None  # None = fp32 on cpu, bf16 on accelerators
    nproc: int = Field(1, ge=1, le=64)
    sp: bool = False
    vae_tiling: bool = True
    cpu_offload: bool = False
    compile: bool = False
    sample_posterior: bool = False
    overwrite: bool = False

    @field_validator("dtype")
    @classmethod
    def _dtype(cls, value: str | None) -> str | None:
        if value is not None and value not in DTYPE_NAMES:
            raise ValueError(f"'{value}' is not a dtype; use one of {', '.join(DTYPE_NAMES)}")
        return value

    @field_validator("device")
    @classmethod
    def _device(cls, value: str | None) -> str | None:
        if value is not None and value not in DEVICE_NAMES:
            raise ValueError(f"'{value}' is not a device; use one of {', '.join(DEVICE_NAMES)}")
        return value


class SampleResult(BaseModel):
    """One output video (or image, for num_frames = 1) and its JSON sidecar."""

    line: int
    sample: int
    prompt: str
    video: Path
    sidecar: Path
    seed: int
    mask_type: str
    kept_frames: list[int]
    skipped: bool = False
    skip_reason: str | None = None  # "exists" (same request made it) or "being made by HOST:PID"
    seconds: float = 0.0
    seconds_per_step: float = 0.0
    rank: int = 0


class SampleSummary(BaseModel):
    results: list[SampleResult]
    warnings: list[Problem] = Field(default_factory=list)  # from the checks: media, sizes, prompt lengths
    device: str
    dtype: str
    world_size: int = 1
    mode: str = "single"  # "single", "ddp" or "sp"
    load_seconds: float = 0.0
    peak_memory_gib: float | None = None
