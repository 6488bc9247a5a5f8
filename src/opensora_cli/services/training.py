"""train: check the config, the data description and the model folders before anything is loaded; then run."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

from opensora_cli.errors import InputError, MissingDependencyError, TrainingDiverged
from opensora_cli.schemas.events import SilentTrainReporter, TrainReporter
from opensora_cli.schemas.problems import Problem, did_you_mean
from opensora_cli.schemas.train import TrainConfig, TrainResult, load_train_config


def resolve_train_dirs(config: TrainConfig) -> tuple[dict[str, Path], list[Problem]]:
    """VAE and text-encoder folders (given, or from a `--model` bundle / siblings), and the transformer folder
    when `--model` is a folder rather than a preset name (see `services.model_folders.find_model_folders`)."""
    from opensora_cli.models.registry import PRESETS
    from opensora_cli.services.model_folders import find_model_folders

    problems: list[Problem] = []
    model = None
    if config.model not in PRESETS:
        folder = Path(config.model)
        if (folder / "transformer" / "config.json").is_file() or (folder / "config.json").is_file():
            model = folder
        else:
            problems.append(Problem.of("--model", None, f"'{config.model}' is neither a model folder nor a preset",
                                       did_you_mean(config.model, tuple(PRESETS))))
    dirs, folder_problems = find_model_folders(model, {"vae": config.vae, "text_encoder": config.text_encoder})
    problems += folder_problems
    pretrained = config.pretrained_transformer_model_path
    if pretrained is not None and not pretrained.exists():
        problems.append(Problem.of("--pretrained-transformer-model-path", None, f"'{pretrained}' does not exist",
                                   "pass a transformer folder or a .safetensors file"))
    return dirs, problems


def check_train_request(
    config_file: Path | None, overrides: dict[str, Any]
) -> tuple[TrainConfig | None, dict[str, Path], list[Problem]]:
    """Everything that can be checked without loading a model or decoding a video."""
    config, problems = load_train_config(config_file, overrides)
    if config is None:
        return None, {}, problems
    dirs, dir_problems = resolve_train_dirs(config)
    problems += dir_problems
    from opensora_cli.models.registry import PRESETS

    preset = PRESETS.get(config.model)
    if preset is not None and preset.class_name != "OpenSoraInpaint_v1_3":
        problems.append(Problem.of("--model", None, f"{config.model} is not an inpainting transformer preset"))
    if config.train_modules and not any(p.file == "--model" for p in problems):
        problems += _module_problems(config, dirs)
    if not problems:
        problems += memory_problems(config, dirs)
    if config.mask_config is not None:
        from opensora_cli.schemas.mask_config import load_mask_config

        problems += load_mask_config(config.mask_config)[1]
    from opensora_cli.data.annotations import load_data_description

    try:
        load_data_description(config.data)
    except InputError as exc:
        problems.append(Problem(file="--data", message=str(exc)))
    if config.report_to == "tensorboard" and importlib.util.find_spec("tensorboard") is None:
        raise MissingDependencyError("--report-to tensorboard needs the tensorboard package: pip install tensorboard")
    if config.deepspeed is not None and importlib.util.find_spec("deepspeed") is None:
        raise MissingDependencyError("--deepspeed zero2 needs DeepSpeed: pip install 'opensora-cli[deepspeed]'")
    if config.device is not None:
        from opensora_cli.distributed.device import resolve_device

        resolve_device(config.device)  # one clear line for a missing CUDA or torch_npu
    return config, dirs, problems


def _meta_transformer(config: TrainConfig, dirs: dict[str, Path]):
    """The transformer to train, on the meta device (shapes only, no memory); None when its folder is broken
    (said again, with the file, when it loads)."""
    from opensora_cli.errors import ModelLoadError
    from opensora_cli.models.loading import build_from_config
    from opensora_cli.models.registry import build
    from opensora_cli.models.transformer_opensora import OpenSoraInpaint_v1_3

    try:
        return (build_from_config(OpenSoraInpaint_v1_3, dirs["transformer"]) if "transformer" in dirs
                else build(config.model, device="meta"))
    except ModelLoadError:
        return None


def training_memory(config: TrainConfig, model) -> tuple[int, int, int]:
    """(bytes of the weights and of what training keeps for the trained ones, trainable count, total count) of
    training `model` (on meta) as `config` says; activations come on top.

    Full fine-tuning keeps fp32 weights (mixed precision autocasts the forward); LoRA keeps the frozen base in the
    compute dtype (2 bytes on an accelerator) and the adapter in fp32."""
    from opensora_cli.schemas.train import training_state_bytes

    total = sum(p.numel() for p in model.parameters())
    if not config.lora:
        return total * 4 + training_state_bytes(total, config.use_ema), total, total
    from opensora_cli.models.lora import lora_config, lora_parameter_count

    trainable = lora_parameter_count(model, lora_config(model, config.lora_rank, config.lora_alpha,
                                                        config.lora_dropout, config.lora_targets,
                                                        config.train_modules))
    accelerator = _training_device(config) != "cpu" and config.mixed_precision != "no"
    weight_bytes = total * (2 if accelerator else 4) + trainable * 4
    return weight_bytes + training_state_bytes(trainable, config.use_ema), trainable, total + trainable


def _training_device(config: TrainConfig) -> str:
    if config.device is not None:
        return config.device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def memory_problems(config: TrainConfig, dirs: dict[str, Path]) -> list[Problem]:
    """Training refused before anything loads when its weights, gradients and optimiser state alone (one
    process's: DeepSpeed ZeRO-2 shards the optimiser, which this does not count) exceed the memory there is: the
    host's available memory on a CPU, the GPU's total on CUDA. Activations are not counted."""
    model = _meta_transformer(config, dirs)
    if model is None:
        return []
    need, trainable, total = training_memory(config, model)
    device = _training_device(config)
    have = None
    if device == "cpu":
        from opensora_cli.utils.system import available_host_memory

        have = available_host_memory()
    elif device == "cuda":
        import torch

        if torch.cuda.is_available():
            have = torch.cuda.get_device_properties(0).total_memory
    if have is None or need <= have:
        return []
    what = (f"training {trainable:,} of {total:,} parameters needs about {need / 2**30:.1f} GiB for the weights, "
            f"gradients and AdamW state alone; this {device} has {have / 2**30:.1f} GiB")
    fix = "add --lora-rank 16 (only an adapter trains)" if not config.lora else "use a smaller --lora-rank"
    return [Problem.of("--model", None, what, f"{fix}, --deepspeed zero2 on several GPUs, or a smaller --model")]


def _module_problems(config: TrainConfig, dirs: dict[str, Path]) -> list[Problem]:
    """--train-modules names that are not modules of the transformer."""
    from opensora_cli.models.lora import MODULE_GROUPS, unknown_modules

    model = _meta_transformer(config, dirs)
    if model is None:
        return []
    top = sorted({name.split(".")[0] for name, _ in model.named_children()})
    return [Problem.of("--train-modules", None, f"'{name}' is not a module of the transformer",
                       did_you_mean(name, (*MODULE_GROUPS, *top)))
            for name in unknown_modules(model, config.train_modules)]


def run_training(config: TrainConfig, dirs: dict[str, Path], reporter: TrainReporter | None = None) -> TrainResult:
    """Train (see `training.loop.train`); the reporter is closed however the run ends.

    Raises:
        TrainingInterrupted: Ctrl-C (exit code 130), with the step reached and the checkpoint to resume from;
            the command prints its message, which is not an error.
        InputError, ModelLoadError, TrainingDiverged: one line each, naming the file or option.
    """
    from opensora_cli.training.loop import train

    reporter = reporter or SilentTrainReporter()
    try:
        return train(config, dirs, reporter)
    except TrainingDiverged as exc:
        raise TrainingDiverged(f"{exc}; lower --learning-rate or use --mixed-precision bf16 instead of fp16") from None
    finally:
        reporter.close()
