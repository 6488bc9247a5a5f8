"""Request, plan and results of `opensora sample`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from opensora_cli.schemas.defaults import RELEASED, SAMPLE
from opensora_cli.schemas.inputs import InputItem, InputsRequest
from opensora_cli.schemas.lora import MAX_LORA_SCALE, LoraSpec
from opensora_cli.schemas.problems import Problem
from opensora_cli.schemas.step_cache import StepCache

DTYPE_NAMES = ("fp32", "bf16", "fp16")
DEVICE_NAMES = ("cpu", "cuda", "npu")
QUANTIZATIONS = ("none", "int8", "fp8")  # --quantize: the text encoder's and transformer's Linear weights
# What a model folder's `opensora_defaults.json` may set: what it was trained on and how to sample it.
MODEL_DEFAULT_FIELDS = ("num_frames", "height", "width", "crop_for_hw", "max_hxw", "max_hxw_range", "steps",
                        "guidance_scale", "fps", "sampler", "negative_prompt", "prompt_template")


class SampleRequest(InputsRequest):
    """Everything `opensora sample` is asked: the inputs and how to generate. Field names map to --kebab-case.

    As for the inputs, the field defaults are the released model's, and a model folder's defaults fill what the
    user left out (`services.model_folders.resolve_fields`).
    """

    model_config = ConfigDict(allow_inf_nan=False)  # --guidance-scale inf or nan is refused, never run

    vae: Path | None = None
    text_encoder: Path | None = None
    output_dir: Path = Path(SAMPLE["output_dir"])
    steps: int = Field(RELEASED["steps"], ge=1, le=1000)
    guidance_scale: float = Field(RELEASED["guidance_scale"], ge=0.0)
    guidance_rescale: float = Field(SAMPLE["guidance_rescale"], ge=0.0, le=1.0)
    sampler: str = RELEASED["sampler"]
    seed: int = Field(SAMPLE["seed"], ge=0)
    num_samples_per_prompt: int = Field(SAMPLE["num_samples_per_prompt"], ge=1, le=64)
    noise_strength: float = Field(SAMPLE["noise_strength"], ge=0.0, le=1.0)
    # A long video's windows after the first: how far their colour statistics are pulled to the first window's
    # (`services.long_video.anchor_colours`). None: the default, SAMPLE["adain"].
    adain: float | None = Field(None, ge=0.0, le=1.0)
    step_cache: str = "off"  # a `schemas.step_cache` policy, kept in its canonical spelling
    quantize: str = "none"  # one of QUANTIZATIONS (`models.quantize`)
    # LoRA adapters on the transformer (`models.lora`): --lora DIR[:SCALE], each without a scale at lora_scale
    lora_scale: float = Field(1.0, ge=-MAX_LORA_SCALE, le=MAX_LORA_SCALE)
    lora: list[LoraSpec] = []
    negative_prompt: str | None = RELEASED["negative_prompt"]  # None = the reference's negative prompt
    prompt_template: bool = RELEASED["prompt_template"]  # the reference's "high quality, high aesthetic" template
    fps: int = Field(RELEASED["fps"], ge=1, le=120)
    device: str | None = None  # None = cuda, else npu, else cpu
    dtype: str | None = None  # None = fp32 on cpu, bf16 on accelerators
    nproc: int = Field(SAMPLE["nproc"], ge=1, le=64)
    sp: bool = False
    cfg_parallel: bool = False  # the two guidance halves on two processes (`distributed.cfg_parallel`)
    # Decode in temporal chunks: True, False, or None = auto (`services.sampling.plan` picks untiled, which is
    # faster, when the run's estimate fits in half the free memory; the plan's request holds the choice).
    vae_tiling: bool | None = None
    cpu_offload: bool = False
    compile: bool = False
    sample_posterior: bool = False
    # the latent frames that kept frames alone determine are set to their encoding at each step (pipeline doc)
    replace_kept_latents: bool = False
    overwrite: bool = False
    # The text cache (services/text_cache.py): where; None = $OPENSORA_TEXT_CACHE, else
    # ~/.cache/opensora-cli/text. Not in a sidecar's request: a cached embedding is the one the encoder makes,
    # so the video is the same.
    text_cache: Path | None = None
    no_text_cache: bool = False

    @field_validator("dtype", "device")
    @classmethod
    def _known_name(cls, value: str | None, info: ValidationInfo) -> str | None:
        names = DTYPE_NAMES if info.field_name == "dtype" else DEVICE_NAMES
        if value is not None and value not in names:
            raise ValueError(f"'{value}' is not a {info.field_name}; use one of {', '.join(names)}")
        return value

    @property
    def sp_size(self) -> int:
        """Processes that share each video's frames: all of them under --sp, half with --cfg-parallel too."""
        if not self.sp:
            return 1
        return self.nproc // 2 if self.cfg_parallel else self.nproc

    @field_validator("vae_tiling", mode="before")
    @classmethod
    def _tiling(cls, value: Any) -> bool | None:
        names = {"on": True, "off": False, "auto": None}
        if isinstance(value, str):
            if value not in names:
                raise ValueError(f"'{value}' is not a tiling choice; use on, off or auto")
            return names[value]
        return value

    @field_validator("lora", mode="before")
    @classmethod
    def _lora(cls, value: Any, info: ValidationInfo) -> Any:
        if value is None:
            return []
        if isinstance(value, (str, Path)):
            value = [value]
        scale = info.data.get("lora_scale", 1.0)  # declared above: already checked (absent when it failed)
        return [LoraSpec.parse(str(v), scale) if isinstance(v, (str, Path)) else v for v in value]

    @property
    def active_lora(self) -> list[LoraSpec]:
        """The adapters that change the video: a scale of 0 leaves its adapter out (the base model's video)."""
        return [spec for spec in self.lora if spec.scale != 0]

    @field_validator("quantize")
    @classmethod
    def _quantize(cls, value: str) -> str:
        if value not in QUANTIZATIONS:
            raise ValueError(f"'{value}' is not a quantization; use {', '.join(QUANTIZATIONS[:-1])} or "
                             f"{QUANTIZATIONS[-1]}")
        return value

    @field_validator("step_cache")
    @classmethod
    def _step_cache(cls, value: str) -> str:
        return str(StepCache.parse(value))

    @property
    def step_cache_policy(self) -> StepCache:
        return StepCache.parse(self.step_cache)

    @property
    def window_adain(self) -> float:
        return SAMPLE["adain"] if self.adain is None else self.adain

    def dtype_for(self, device_type: str) -> str:
        """fp32, bf16 or fp16: the option, else fp32 on a CPU and bf16 on an accelerator."""
        return self.dtype or ("fp32" if device_type == "cpu" else "bf16")


class Job(BaseModel):
    """One output to make: a checked line (mask type, kept frames, output size), its sample index and seed, its
    paths and the request its sidecar records."""

    index: int  # its place among all the run's outputs: processes split the work by it, whatever is on disk
    item: InputItem
    sample: int
    seed: int
    video: Path
    sidecar: Path
    request: dict[str, Any]


class SamplePlan(BaseModel):
    """What `services.sampling.run` does, decided once by `services.sampling.plan` (and handed as JSON to the
    processes of `--nproc`): the resolved request, the model folders, and every output to make or skip."""

    request: SampleRequest
    model_dirs: dict[str, Path]
    dtype: str  # fp32, bf16 or fp16
    jobs: list[Job] = Field(default_factory=list)  # to generate (each claimed just before)
    done: list[Job] = Field(default_factory=list)  # made before with the same request: skipped
    warnings: list[Problem] = Field(default_factory=list)
    text_cache: Path | None = None  # the text cache folder; None: no cache
    text_cache_writable: bool = False  # False: cached embeddings are read, new ones are not stored
    text_encoder_fingerprint: str | None = None  # services.text_cache.encoder_fingerprint, with a cache


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
    mode: str = "single"  # "single", "ddp", "sp", "cfg-parallel" or "cfg-parallel+sp"
    load_seconds: float = 0.0
    peak_memory_gib: float | None = None
