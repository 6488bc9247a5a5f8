"""Training checkpoints: atomic, resumable, and loadable by `opensora sample --model checkpoint-N`.

    output_dir/checkpoint-<step>/
        transformer/           diffusers folder (config.json + safetensors): the EMA weights with --use-ema,
                               else the trained weights — what sampling should use
        vae, text_encoder      relative symlinks to the frozen models, so the folder is a complete model bundle
        state/                 training_weights.safetensors (the raw trained weights, with EMA on),
                               optimizer.safetensors + optimizer.json, ema.safetensors, scheduler.json (the
                               LR schedule's state; a resume rebuilds it from the step)
        trainer_state.json     step, data position, loss, the config
        opensora_defaults.json frames and area range trained on: `opensora sample`'s defaults for this model

With --lora-rank a checkpoint holds the adapter instead of transformer/ (`models.lora`: adapter_config.json,
adapter_model.safetensors with the EMA of the adapter when there is one, opensora_base.json) and no links: it is
`opensora sample --model BASE --lora checkpoint-N`; state/training_adapter.safetensors holds the raw adapter
with EMA on. A base that is no folder (a preset, with random or pretrained weights) is written once to
output_dir/base/ (a bundle with links to the VAE and text encoder), which a resumed run loads.

Everything is safetensors or JSON (no pickle, so nothing to trust when loading). A checkpoint is written
into a hidden temporary folder and renamed into place, so a killed run leaves either a complete checkpoint or
none; `latest` picks the newest complete one.

The links to the frozen models are relative (`../../models/vae`), so a checkpoint keeps working when the output
folder and the model folders move together. A copy would cost the text encoder's size (about 20 GB for
mT5-XXL) per checkpoint, so links fall back to an absolute link where there is no relative path (Windows,
different drives), and to a copy of hard links (real copies where the filesystem has none) where there are no
symlinks at all.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

_NAME = re.compile(r"^checkpoint-(\d+)$")
STATE_FILE = "trainer_state.json"


def checkpoints(output_dir: Path) -> list[tuple[int, Path]]:
    """Complete checkpoints in `output_dir`, oldest first."""
    found = []
    if output_dir.is_dir():
        for entry in output_dir.iterdir():
            match = _NAME.match(entry.name)
            if match and (entry / STATE_FILE).is_file():
                found.append((int(match[1]), entry))
    return sorted(found)


def find_checkpoint(output_dir: Path, resume: str | None) -> Path | None:
    """`resume`: None (start fresh), "latest" (newest complete checkpoint, or None), or a checkpoint folder."""
    if resume is None:
        return None
    if resume == "latest":
        found = checkpoints(output_dir)
        return found[-1][1] if found else None
    path = Path(resume)
    if not (path / STATE_FILE).is_file():
        from opensora_cli.errors import InputError

        raise InputError(f"{path}: not a complete checkpoint (no {STATE_FILE}) — pass a checkpoint-N folder or "
                         "'latest'")
    return path


def _optimizer_to_files(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    state = optimizer.state_dict()
    tensors, meta = {}, {"param_groups": state["param_groups"], "state": {}}
    for pid, values in state["state"].items():
        meta["state"][str(pid)] = {}
        for name, value in values.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{pid}.{name}"] = value.detach().cpu().contiguous()
                meta["state"][str(pid)][name] = "tensor"
            else:
                meta["state"][str(pid)][name] = value
    return tensors, meta


def _optimizer_from_files(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> dict[str, Any]:
    state = {int(pid): {name: tensors[f"{pid}.{name}"] if v == "tensor" else v for name, v in values.items()}
             for pid, values in meta["state"].items()}
    return {"state": state, "param_groups": meta["param_groups"]}


def save_checkpoint(output_dir: Path, step: int, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                    lr_scheduler, ema, trainer_state: dict[str, Any], links: dict[str, Path],
                    total_limit: int | None = None, defaults: dict[str, Any] | None = None,
                    params: list[torch.nn.Parameter] | None = None, lora: dict[str, Any] | None = None) -> Path:
    """Write checkpoint-<step> atomically (main process only) and prune the oldest beyond `total_limit`.

    Args:
        model: the unwrapped transformer (fp32 master weights; with LoRA, the frozen base with the adapter).
        ema: a diffusers `EMAModel` of `params`, or None.
        links: {"vae": folder, "text_encoder": folder} symlinked into the checkpoint (not with LoRA).
        defaults: sampling defaults for `opensora sample --model` (what the model was trained on), written as
            opensora_defaults.json (not with LoRA: the base's are used).
        params: the trained parameters (default: all of the model's).
        lora: the base model's identity (`models.lora.base_identity`) when an adapter is trained, else None.
    """
    final = output_dir / f"checkpoint-{step}"
    tmp = output_dir / f".checkpoint-{step}.tmp"
    if tmp.exists():
        shutil.rmtree(tmp)
    (tmp / "state").mkdir(parents=True)
    params = list(model.parameters()) if params is None else params

    # 1. The model to sample with: EMA weights when there are some
    if lora is not None:
        from opensora_cli.models.lora import adapter_state_dict, save_adapter

        raw = adapter_state_dict(model)
        if ema is not None:
            ema.store(params)
            ema.copy_to(params)
        save_adapter(tmp, model, lora)
        if ema is not None:
            ema.restore(params)
            save_file(raw, tmp / "state" / "training_adapter.safetensors")
        links, defaults = {}, None
    else:
        if ema is not None:
            ema.store(params)
            ema.copy_to(params)
        model.save_pretrained(tmp / "transformer", safe_serialization=True)
        if ema is not None:
            ema.restore(params)
            save_file({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()},
                      tmp / "state" / "training_weights.safetensors")
    if ema is not None:
        averages = ema.state_dict()
        save_file({str(i): p.detach().cpu().contiguous() for i, p in enumerate(averages["shadow_params"])},
                  tmp / "state" / "ema.safetensors")

    # 2. Optimizer, LR schedule, trainer state
    tensors, meta = _optimizer_to_files(optimizer)
    save_file(tensors, tmp / "state" / "optimizer.safetensors")
    (tmp / "state" / "optimizer.json").write_text(json.dumps(meta))
    (tmp / "state" / "scheduler.json").write_text(json.dumps(lr_scheduler.state_dict()))
    extra = {"ema_optimization_step": averages["optimization_step"]} if ema is not None else {}
    (tmp / STATE_FILE).write_text(json.dumps({**trainer_state, **extra, "step": step}, indent=2, default=str))
    if defaults:
        (tmp / "opensora_defaults.json").write_text(json.dumps(defaults, indent=2))
    for name, target in links.items():
        link_model_folder(Path(target), tmp / name)
    if {"vae", "text_encoder"} <= set(links):  # a whole bundle: say so as diffusers pipelines do
        from opensora_cli.models.loading import write_model_index

        write_model_index(tmp)

    # 3. Into place; then prune
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    if total_limit is not None:
        for _, old in checkpoints(output_dir)[:-total_limit]:
            shutil.rmtree(old)
    return final


def link_model_folder(target: Path, link: Path) -> None:
    """Make `link` lead to the folder `target`: a relative symlink when possible (see the module docstring),
    which stays valid when `save_checkpoint` renames the folder it is made in within its parent."""
    target = target.resolve()
    try:
        pointer: str | Path = os.path.relpath(target, link.parent.resolve())
    except ValueError:  # no relative path between the two (Windows: different drives)
        pointer = target
    try:
        os.symlink(pointer, link, target_is_directory=True)
    except (OSError, NotImplementedError):  # no symlinks here: a copy, of hard links where possible
        shutil.copytree(target, link, copy_function=_hard_link_or_copy)


def _hard_link_or_copy(source: str, destination: str) -> None:
    try:
        os.link(source, destination)
    except OSError:
        shutil.copy2(source, destination)


def load_checkpoint(path: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer, ema,
                    params: list[torch.nn.Parameter] | None = None, lora: dict[str, Any] | None = None) -> dict:
    """Restore the trained weights (with `lora`, the adapter's), the optimizer's state and the EMA from `path`.

    The LR schedule is not restored: it is a function of the step, rebuilt at the step reached (see
    `training.loop`); scheduler.json only records it.

    Returns:
        the trainer state (`step`, data position, loss, the config), as `save_checkpoint` wrote it.

    Raises:
        InputError: a LoRA run resumed from a full checkpoint, or the other way round; an adapter made for
            another base.
    """
    from opensora_cli.errors import InputError
    from opensora_cli.models.lora import ADAPTER_WEIGHTS, BASE_FILE, PEFT_PREFIX

    state = json.loads((path / STATE_FILE).read_text())
    adapter = (path / ADAPTER_WEIGHTS).is_file()
    if adapter != (lora is not None):
        raise InputError(f"{path}: trained {'with' if adapter else 'without'} LoRA; resume it "
                         f"{'with its --lora-rank' if adapter else 'without --lora-rank'}, or start another "
                         "--output-dir")
    if lora is not None:
        from peft import set_peft_model_state_dict

        recorded = json.loads((path / BASE_FILE).read_text())
        if recorded.get("fingerprint") != lora["fingerprint"]:
            raise InputError(f"{path}: the adapter was trained on another base ({recorded.get('path')}); resume with "
                             "that --model, or start another --output-dir")
        raw = path / "state" / "training_adapter.safetensors"  # with EMA, the top level holds the EMA
        weights = load_file(raw if raw.is_file() else path / ADAPTER_WEIGHTS)
        set_peft_model_state_dict(model, {k.removeprefix(PEFT_PREFIX): v for k, v in weights.items()})
    else:
        weights = path / "state" / "training_weights.safetensors"
        if weights.is_file():  # with EMA, transformer/ holds the EMA weights; the trained ones are here
            model.load_state_dict(load_file(weights))
        else:
            from opensora_cli.models.loading import read_state_dict

            model.load_state_dict(read_state_dict(path / "transformer"))
    device = next(model.parameters()).device
    meta = json.loads((path / "state" / "optimizer.json").read_text())
    optimizer.load_state_dict(_optimizer_from_files(load_file(path / "state" / "optimizer.safetensors"), meta))
    if ema is not None:
        shadow = load_file(path / "state" / "ema.safetensors")
        # the averages and their step only (the decay and the rest are this run's); on the host, where
        # load_state_dict's copy of them is cheaper
        ema.load_state_dict({"shadow_params": [shadow[str(i)] for i in range(len(shadow))],
                             "optimization_step": state.get("ema_optimization_step", state["step"])})
        ema.to(device)
    return state


BASE_DIR = "base"  # output_dir/base: the base model of a LoRA run whose base is no folder


def lora_base_folder(config, dirs: dict[str, Path], transformer: torch.nn.Module, accelerator,
                     defaults: dict[str, Any]) -> tuple[Path, dict]:
    """The transformer folder a LoRA run's adapter is made for, and its identity (`models.lora.base_identity`).

    With `--model DIR` it is that folder's transformer. Otherwise the base (a preset, with random or pretrained
    weights) is written once by the main process to `output_dir/base` as a model bundle (transformer/, links to
    the VAE and text encoder, `defaults` as opensora_defaults.json) that `sample --model` loads; a resumed run
    loads its weights from there, so the adapter always goes on the same base. Every process waits for it.
    """
    from opensora_cli.models.lora import base_identity

    if "transformer" in dirs:
        folder = Path(dirs["transformer"])
        return folder, base_identity(folder)
    bundle = Path(config.output_dir) / BASE_DIR
    folder = bundle / "transformer"
    if accelerator.is_main_process and not (folder / "config.json").is_file():
        tmp = Path(config.output_dir) / f".{BASE_DIR}.tmp"
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir(parents=True)
        transformer.save_pretrained(tmp / "transformer", safe_serialization=True)
        for name in ("vae", "text_encoder"):
            link_model_folder(Path(dirs[name]), tmp / name)
        from opensora_cli.models.loading import write_model_index

        write_model_index(tmp)
        (tmp / "opensora_defaults.json").write_text(json.dumps(defaults, indent=2))
        if bundle.exists():
            shutil.rmtree(bundle)
        os.replace(tmp, bundle)
    accelerator.wait_for_everyone()
    from opensora_cli.models.loading import read_state_dict

    transformer.load_state_dict(read_state_dict(folder))  # (the same values on a fresh run; a resume's base)
    return folder, base_identity(folder)
