"""train-vae: check the options and the data description before a model is built; then train the VAE."""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from opensora_cli.errors import InputError, TrainingDiverged
from opensora_cli.schemas.events import SilentTrainReporter, TrainReporter
from opensora_cli.schemas.problems import first_problem
from opensora_cli.schemas.train import VaeTrainConfig, VaeTrainResult


def train_vae(options: dict[str, Any], reporter: TrainReporter | None = None) -> VaeTrainResult:
    """Check `options` (the fields of `VaeTrainConfig`) and the data description, then train (see
    `training.vae.train_vae`); the reporter is closed however the run ends.

    Raises:
        InputError: a bad option value or data description (before any model is built), bad data.
        ModelLoadError: an `init` folder that is not a VAE folder.
        TrainingDiverged: the loss became NaN or infinite.
    """
    try:
        config = VaeTrainConfig.model_validate(options)
    except ValidationError as exc:
        raise InputError(first_problem(exc)) from None
    from opensora_cli.data.annotations import load_data_description
    from opensora_cli.training import vae

    load_data_description(config.data)
    reporter = reporter or SilentTrainReporter()
    try:
        return vae.train_vae(config, reporter)
    except TrainingDiverged as exc:
        raise TrainingDiverged(f"{exc}: lower --learning-rate") from None
    finally:
        reporter.close()
