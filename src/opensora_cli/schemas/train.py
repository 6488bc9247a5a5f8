"""`opensora train` configuration: a YAML file (`--config`) whose keys are the field names below, overridden by
command-line flags. Unknown keys are errors with a did-you-mean."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
)

from opensora_cli.schemas.inputs import check_num_frames
from opensora_cli.schemas.loading import load_yaml
from opensora_cli.schemas.problems import Problem, did_you_mean, error_text, option_name, with_value
from opensora_cli.schemas.resolution import MAX_MAX_HXW

NumFrames = Annotated[int, AfterValidator(check_num_frames)]  # 1 + 4k; the error names the field


class TrainConfig(BaseModel):
    """Everything a training run needs. Defaults follow the reference's GPU fine-tuning script where they make
    sense on any machine; the comments say where and why we differ."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)  # inf and nan are refused, never trained with

    # data
    data: Path = Field(description="text file of 'VIDEO_ROOT,ANNOTATION.json' lines")
    mask_config: Path | None = None  # None: the reference's training mix
    num_frames: NumFrames = 93
    max_hxw: int = MAX_MAX_HXW
    min_hxw: int | None = None  # None: max_hxw / 4, as the reference
    hw_stride: int = Field(32, ge=8)
    train_fps: float = Field(18.0, gt=0)
    default_text_ratio: float = Field(0.5, ge=0, le=1)
    cfg: float = Field(0.1, ge=0, le=1, description="share of captions dropped (for classifier-free guidance)")
    add_noise_to_condition: bool = False
    bad_data: Literal["skip", "error"] = "skip"
    dataloader_num_workers: int = Field(2, ge=0)

    # models
    model: str = Field("OpenSoraInpaint_v1_3-2B/122", description="a preset name or a transformer/bundle folder")
    pretrained_transformer_model_path: Path | None = None
    vae: Path | None = None
    text_encoder: Path | None = None
    vae_sample_posterior: bool = True  # the reference trains on posterior samples
    # host memory for cached VAE latents (0: off); needs the posterior mean, whose latents repeat
    latent_cache_mib: int = Field(0, ge=0)
    gradient_checkpointing: bool = False
    # LoRA (models.lora): with a rank the base is frozen (in the compute dtype) and only the adapter learns,
    # with the modules of train_modules trained whole beside it; checkpoints hold the adapter alone
    lora_rank: int | None = Field(None, ge=1, le=1024)
    lora_alpha: float | None = Field(None, gt=0)  # None: the rank (the update's scaling alpha / rank is 1)
    lora_dropout: float = Field(0.0, ge=0, lt=1)
    lora_targets: Literal["attn", "attn+ff", "all-linear"] = "attn"
    train_modules: list[str] = []  # module names of the transformer; "inpaint": its two inpaint input branches

    # optimisation
    learning_rate: float = Field(1e-5, gt=0)
    lr_warmup_steps: int = Field(0, ge=0)
    # after the warm-up: constant (the reference), or a decay to 0 at max_train_steps (cosine, linear)
    lr_scheduler: Literal["constant", "cosine", "linear"] = "constant"
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    adam_weight_decay: float = 1e-2
    adam_epsilon: float = 1e-8  # the reference's 1e-15 amplifies noise in near-zero second moments
    max_grad_norm: float = 1.0
    max_train_steps: int = Field(1000, ge=1)
    gradient_accumulation_steps: int = Field(1, ge=1)
    train_batch_size: int = Field(1, ge=1)
    mixed_precision: Literal["no", "fp16", "bf16"] | None = None  # None: bf16 on accelerators, no on CPU
    snr_gamma: float | None = Field(None, gt=0)
    # where the training timesteps fall: uniform over the schedule (the reference), or diffusers' SD3 densities
    # (logit_normal: sigmoid of N(logit_mean, logit_std), a positive mean leans to heavy noise; mode: mode_scale
    # bends the uniform draw towards the middle)
    timestep_sampling: Literal["uniform", "logit_normal", "mode"] = "uniform"
    logit_mean: float = 0.0
    logit_std: float = Field(1.0, gt=0)
    mode_scale: float = 1.29
    use_ema: bool = False
    ema_decay: float = Field(0.9999, gt=0, lt=1)
    seed: int = Field(1234, ge=0)

    # checkpoints and logs
    output_dir: Path = Path("train_output")
    checkpointing_steps: int = Field(500, ge=1)
    checkpoints_total_limit: int | None = Field(None, ge=1)
    resume_from_checkpoint: str | None = None  # "latest" or a checkpoint folder
    report_to: Literal["tensorboard"] | None = None

    # devices
    device: Literal["cpu", "cuda", "npu"] | None = None
    nproc: int = Field(1, ge=1)
    deepspeed: Literal["zero2"] | None = None
    accelerate_config: Path | None = None  # multi-node: accelerate's config file, passed to its launcher

    @field_validator("latent_cache_mib")
    @classmethod
    def _cache_needs_mean(cls, value: int, info: ValidationInfo) -> int:
        if value and info.data.get("vae_sample_posterior", True):  # declared above, so already validated
            raise ValueError("a latent cache needs the posterior mean (posterior samples never repeat); "
                             "add --vae-posterior-mean or drop --latent-cache-mib")
        return value

    @field_validator("lora_alpha", "lora_dropout", "lora_targets", "train_modules")
    @classmethod
    def _needs_rank(cls, value: Any, info: ValidationInfo) -> Any:
        if info.data.get("lora_rank") is None:  # declared above, so already validated (None when not given)
            raise ValueError(f"is a LoRA option; add --lora-rank R (e.g. 16) or drop --{info.field_name.replace('_', '-')}")
        return value

    @field_validator("train_modules", mode="before")
    @classmethod
    def _comma_list(cls, value: Any) -> Any:
        if isinstance(value, str):  # the flag: "a,b"
            return [item.strip() for item in value.split(",") if item.strip()]
        return value

    @property
    def lora(self) -> bool:
        return self.lora_rank is not None

    def effective_min_hxw(self) -> int:
        return self.min_hxw if self.min_hxw is not None else self.max_hxw // 4


FIELDS = tuple(TrainConfig.model_fields)


def training_state_bytes(trainable: int, ema: bool) -> int:
    """What training keeps per trained parameter besides the weights: an fp32 gradient and AdamW's two fp32
    moments (12 bytes), and the fp32 EMA copy (4 more). The full fine-tuning of the released 2.78 B model needs
    31 GiB of it (and 10 GiB of fp32 weights); a rank-16 LoRA on its attention trains 18.9 M parameters: 0.2 GiB
    (beside 5.2 GiB of frozen bf16 weights)."""
    return trainable * (12 + (4 if ema else 0))


def load_train_config(config_file: Path | None, overrides: dict[str, Any]) -> tuple[TrainConfig | None, list[Problem]]:
    """Merge the YAML file (if any) with command-line values (those that are not None win).

    Returns:
        (config or None, problems): every unknown key and invalid value, each naming the file/line or flag.
    """
    raw: dict[str, Any] = {}
    label = str(config_file) if config_file is not None else None
    problems: list[Problem] = []
    lines: dict[tuple, int] = {}
    if config_file is not None:
        raw, lines, problems = load_yaml(config_file, "config", "--config", "see README.md")
        if raw is None:
            return None, problems
        for key in list(raw):
            normalised = str(key).replace("-", "_")
            if normalised not in FIELDS:
                problems.append(Problem.of(label, lines.get((key,)), f"unknown key '{key}'",
                                           did_you_mean(normalised, FIELDS)))
                raw.pop(key)
            elif normalised != key:
                raw[normalised] = raw.pop(key)
    merged = {**raw, **{k: v for k, v in overrides.items() if v is not None}}
    try:
        config = TrainConfig.model_validate(merged)
    except ValidationError as exc:
        for error in exc.errors():
            name = str(error["loc"][0]) if error["loc"] else "config"
            what, fix = error_text(error)
            flag = option_name(name)
            if error["type"] == "missing":
                problems.append(Problem.of(flag, None, "required", f"give {flag} or '{name}:' in the --config file"))
            elif overrides.get(name) is not None:  # the flag names the field: say the value instead
                problems.append(Problem.of(flag, None, with_value(what, overrides[name]), fix))
            elif label is None:
                problems.append(Problem.of(flag, None, f"{name}: {what}", fix))
            else:
                problems.append(Problem.of(label, lines.get((name,)), f"{name}: {what}", fix))
        return None, problems
    return (config, problems) if not problems else (None, problems)


class VaeTrainConfig(BaseModel):
    """Options of `opensora train-vae` (field names map to --kebab-case flags)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)  # inf and nan are refused, never trained with

    data: Path
    output_dir: Path = Path("vae_output")
    preset: str = "WFVAEModel_D8_4x8x8-demo"
    init: Path | None = None  # a VAE folder to continue from (e.g. trained on short clips first: cheaper)
    num_frames: NumFrames = 9
    max_hxw: int = 6144
    min_hxw: int = 1024
    hw_stride: int = Field(16, ge=8)
    train_fps: float = Field(8.0, gt=0)
    train_batch_size: int = Field(4, ge=1)
    learning_rate: float = Field(1e-3, gt=0)
    max_train_steps: int = Field(1500, ge=1)
    kl_weight: float = Field(1e-6, ge=0)
    edge_weight: float = Field(1.0, ge=0)  # L1 of spatial gradients: sharper edges
    foreground_weight: float = Field(4.0, ge=0)  # see reconstruction_loss
    seed: int = Field(0, ge=0)
    device: str | None = None
    # bf16 autocast of the forward (weights, Adam and the loss stay fp32), for GPUs and CPUs with native bf16.
    # On this project's 2-core AMX CPU the demo VAE's 5-frame steps ran 1.3x faster and its 13-frame steps
    # hardly at all, and a shortened bf16 run trained clearly worse, so the demo recipe stays in fp32.
    mixed_precision: Literal["no", "bf16"] = "no"
    dataloader_num_workers: int = Field(2, ge=0)
    calibration_batches: int = Field(16, ge=1)


# ------------------------------------------------------------------------------------------------------------
# Results (what `--json` prints)
# ------------------------------------------------------------------------------------------------------------


class LatentCacheStats(BaseModel):
    """How much VAE work `--latent-cache-mib` saved: encodes reused and done, latents kept and their size."""

    hits: int
    misses: int
    entries: int
    mib: float


class TrainResult(BaseModel):
    """A finished (or already finished) `opensora train` run."""

    steps: int  # optimisation steps done in all, counting those before a resume
    first_step: int  # the step this run started from (0, or the checkpoint's)
    last_checkpoint: Path | None
    losses: list[float] = Field(default_factory=list)  # one per step of this run
    seconds_per_step: float = 0.0
    samples_per_second: float = 0.0  # all processes together
    peak_memory_gib: float | None = None  # CUDA only
    latent_cache: LatentCacheStats | None = None
    trainable_parameters: int = 0  # given to the optimiser (LoRA: the adapter's and --train-modules')
    parameters: int = 0  # of the transformer, the adapter included
    lora_base: Path | None = None  # with --lora-rank: the --model to sample the adapter with


class VaeTrainResult(BaseModel):
    """A trained and calibrated `opensora train-vae` VAE folder."""

    output: Path
    steps: int
    psnr_db: float = 0.0  # reconstruction of the calibration clips (training data)
    seconds_per_step: float = 0.0
    losses: list[float] = Field(default_factory=list)
    scale: list[float] = Field(default_factory=list)  # per latent channel, written into config.json
    shift: list[float] = Field(default_factory=list)
