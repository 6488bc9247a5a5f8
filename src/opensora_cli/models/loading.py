"""Loading model folders in the released layout, with errors that say what does not match.

A folder holds `config.json` (diffusers format, `_class_name` names the class) and its weights as
- one `diffusion_pytorch_model.safetensors`, or
- shards listed in `diffusion_pytorch_model.safetensors.index.json` (the released transformer), or
- the reference training code's `*.ckpt` (a pickled dict; read with `weights_only=True`).

diffusers' own `from_pretrained` works on our folders too; `load_pretrained` adds the released variants, a
check of every key and shape before anything is assigned, casting while reading (an fp32 checkpoint loads
into bf16 without an fp32 copy of the whole model), and building large models on the meta device.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Iterable
from pathlib import Path
from typing import TypeVar

import torch

from opensora_cli.errors import ModelLoadError

WEIGHTS_NAME = "diffusion_pytorch_model.safetensors"
INDEX_NAME = "diffusion_pytorch_model.safetensors.index.json"
_SHOWN_KEYS = 8

ModelT = TypeVar("ModelT", bound=torch.nn.Module)


def weight_files(folder: Path) -> list[Path]:
    """The weight files of a model folder, in load order."""
    index = folder / INDEX_NAME
    if index.is_file():
        weight_map = json.loads(index.read_text())["weight_map"]
        shards = sorted({folder / name for name in weight_map.values()})
        missing = [s.name for s in shards if not s.is_file()]
        if missing:
            raise ModelLoadError(f"{folder}: the index lists shards that are not there: {', '.join(missing)}")
        return shards
    if (folder / WEIGHTS_NAME).is_file():
        return [folder / WEIGHTS_NAME]
    candidates = sorted(folder.glob("*.safetensors"))
    if len(candidates) == 1:
        return candidates
    if len(candidates) > 1:
        raise ModelLoadError(f"{folder}: several .safetensors files and no {INDEX_NAME} to say how they go together")
    ckpts = sorted(folder.glob("*.ckpt"))
    if ckpts:
        return ckpts[-1:]  # the reference loads the last one it globs
    raise ModelLoadError(f"{folder}: no weights found (expected {WEIGHTS_NAME}, an index with shards, or a .ckpt)")


def read_state_dict(folder: str | Path, dtype: torch.dtype | None = None) -> dict[str, torch.Tensor]:
    """All tensors of a model folder on the CPU; floating tensors cast to `dtype` while reading."""
    from safetensors import safe_open

    folder = Path(folder)
    state: dict[str, torch.Tensor] = {}
    for path in weight_files(folder):
        if path.suffix == ".ckpt":  # only the reference's VAE training code writes these
            from opensora_cli.models.autoencoder_wfvae import state_dict_from_reference_ckpt

            tensors = state_dict_from_reference_ckpt(path)
        else:
            tensors = {}
            with safe_open(path, framework="pt", device="cpu") as handle:
                for key in handle.keys():
                    tensors[key] = handle.get_tensor(key)
        for key, tensor in tensors.items():
            state[key] = tensor.to(dtype) if dtype is not None and tensor.is_floating_point() else tensor
    return state


def _listing(keys: list[str]) -> str:
    shown = ", ".join(keys[:_SHOWN_KEYS])
    return shown + (f", ... ({len(keys) - _SHOWN_KEYS} more)" if len(keys) > _SHOWN_KEYS else "")


def check_state_dict(
    expected: dict[str, torch.Size], state: dict[str, torch.Tensor], optional: Iterable[str] = ()
) -> list[str]:
    """What does not match between a model's keys/shapes and a checkpoint, as sentences (empty = all good)."""
    optional = set(optional)
    missing = [k for k in expected if k not in state and k not in optional]
    unexpected = [k for k in state if k not in expected]
    mismatched = [
        f"{k} {tuple(state[k].shape)} != {tuple(expected[k])}"
        for k in expected
        if k in state and tuple(state[k].shape) != tuple(expected[k])
    ]
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing key(s): {_listing(missing)}")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected key(s): {_listing(unexpected)}")
    if mismatched:
        problems.append(f"{len(mismatched)} shape mismatch(es): {_listing(mismatched)}")
    return problems


@contextlib.contextmanager
def _quiet_diffusers():
    """from_config warns about config keys the class does not take (e.g. the T2V config's EMA fields)."""
    logger = logging.getLogger("diffusers")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def load_pretrained(
    model_class: type[ModelT],
    folder: str | Path,
    *,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
    optional_keys: Iterable[str] = (),
    meta_init: bool = True,
) -> ModelT:
    """Build `model_class` from `folder/config.json` and load its weights, checking every key first.

    Args:
        model_class: a diffusers ModelMixin/ConfigMixin class (or a parent of the folder's `_class_name`).
        dtype, device: where the weights end up; tensors are cast while reading.
        optional_keys: keys the checkpoint may lack (the model's own values are kept), e.g. fixed Haar filters.
        meta_init: build on the meta device and assign the loaded tensors (no random init of a large model);
            must be False when `optional_keys` can be absent, so their constructed values exist.

    Raises:
        ModelLoadError: no config, a config for another class, or keys/shapes that do not match.
    """
    folder = Path(folder)
    if not (folder / "config.json").is_file():
        raise ModelLoadError(f"{folder}: not a model folder (no config.json)")
    config = model_class.load_config(folder)
    class_name = config.get("_class_name")
    if class_name is not None and class_name != model_class.__name__:
        known = {model_class.__name__, *(c.__name__ for c in model_class.__subclasses__())}
        if class_name not in known:
            raise ModelLoadError(f"{folder}: holds a {class_name}, expected a {model_class.__name__}")
    with _quiet_diffusers(), (torch.device("meta") if meta_init else contextlib.nullcontext()):
        model = model_class.from_config(config)
    state = read_state_dict(folder, dtype=dtype)
    expected = {k: v.shape for k, v in model.state_dict().items()}
    problems = check_state_dict(expected, state, optional_keys)
    if problems:
        raise ModelLoadError(f"{folder}: weights do not match {model_class.__name__}: " + "; ".join(problems))
    model.load_state_dict(state, strict=False, assign=meta_init)
    with _quiet_diffusers():  # diffusers warns on every .to(dtype) that no module asked to stay in fp32
        return model.to(device=device, dtype=dtype).eval()
