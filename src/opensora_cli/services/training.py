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
