"""LoRA adapters around the model folders: whether an adapter was made for a base (`models.lora.base_identity`,
checked from files, before any model loads), the sidecar's record of the adapters, and `opensora lora merge`."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from opensora_cli.schemas.lora import LoraSpec
from opensora_cli.schemas.problems import Problem


def _differing_fields(recorded: dict[str, Any], current: dict[str, Any]) -> list[str]:
    keys = sorted(set(recorded) | set(current))
    return [f"{key} {recorded.get(key)} -> {current.get(key)}" for key in keys if recorded.get(key) != current.get(key)]


def adapter_problems(specs: Sequence[LoraSpec], transformer_dir: Path | None, book: Path | None = None,
                     option: str = "--lora") -> list[Problem]:
    """Every reason the adapters of `specs` cannot go on the transformer in `transformer_dir`, from the files
    alone: a folder that is not an adapter, another architecture (the config fields that differ), other
    weights (the fingerprint), two adapters that train the same module whole. Nothing is loaded."""
    from opensora_cli.models.lora import base_identity, read_adapter

    problems: list[Problem] = []
    if not specs:
        return problems
    current: dict[str, Any] | None = None
    whole: dict[str, Path] = {}
    for spec in specs:
        try:
            files = read_adapter(spec.path)
        except ValueError as exc:
            head, sep, tail = str(spec.path).rpartition(":")
            if sep and head and not spec.path.exists() and Path(head).is_dir():  # DIR:0,8 or DIR:half
                problems.append(Problem.of(option, None, f"'{spec.path}': '{tail}' is not a scale",
                                           f"write the scale as a number, e.g. {head}:0.8"))
            else:
                problems.append(Problem.of(option, None, str(exc)))
            continue
        for module in files.modules_to_save:
            if module in whole:
                problems.append(Problem.of(option, None, f"{spec.path} and {whole[module]} both train {module} "
                                           "whole", "use one of them"))
            whole.setdefault(module, spec.path)
        if transformer_dir is None or files.base is None:
            continue  # an adapter made elsewhere: peft checks its tensors against the model when it loads
        if current is None:
            try:
                current = base_identity(transformer_dir, book)
            except (OSError, ValueError) as exc:
                problems.append(Problem.of(option, None, f"{transformer_dir}: cannot read the base model ({exc})"))
                return problems
        hint = f"use the --model it was trained on ({files.base.get('path', 'not recorded')})"
        if files.base.get("class") != current["class"]:
            problems.append(Problem.of(option, None, f"{spec.path} was made for a {files.base.get('class')}, "
                                       f"this model is a {current['class']}", hint))
        elif files.base.get("config") != current["config"]:
            changed = _differing_fields(files.base.get("config") or {}, current["config"])
            problems.append(Problem.of(option, None, f"{spec.path} was made for another architecture ("
                                       + ", ".join(changed[:4]) + (", ..." if len(changed) > 4 else "") + ")", hint))
        elif files.base.get("fingerprint") != current["fingerprint"]:
            problems.append(Problem.of(option, None, f"{spec.path} was made for other weights of this architecture "
                                       f"(base {str(files.base.get('fingerprint'))[:12]}, this model "
                                       f"{current['fingerprint'][:12]})", hint))
    return problems


def adapter_records(specs: Sequence[LoraSpec]) -> list[dict[str, Any]] | None:
    """The sidecar's "lora": each adapter's folder, the SHA-256 of its weights and its scale; None for none
    (outputs made before adapters existed keep matching)."""
    from opensora_cli.models.lora import ADAPTER_WEIGHTS
    from opensora_cli.services.outputs import file_sha256

    if not specs:
        return None
    return [{"path": str(spec.path.resolve()), "sha256": file_sha256(spec.path / ADAPTER_WEIGHTS),
             "scale": spec.scale} for spec in specs]


# ------------------------------------------------------------------------------------------------------------
# `opensora lora merge`
# ------------------------------------------------------------------------------------------------------------


MERGE_DTYPES = ("base", "fp32", "bf16", "fp16")


def merge_lora(model: Path | None, specs: Sequence[LoraSpec], output_dir: Path, overwrite: bool = False,
               on_phase=None, dtype: str = "base") -> dict[str, Any]:
    """Write a model bundle to `output_dir`: the base's transformer with the adapters fused in (each at its
    scale; what `sample --lora` computes, within float rounding), and links to the base's VAE and text encoder,
    its opensora_defaults.json, a model_index.json. Written into a temporary folder and renamed into place.

    Args:
        model: the base bundle (None: the bundled demo model).
        dtype: the merged weights' dtype, one of MERGE_DTYPES; "base" keeps the base's (the demo model's fp16),
            "fp32" keeps the fused sum unrounded, so the videos equal `sample --lora`'s in fp32.
        on_phase: called with a line before each long part.

    Returns:
        {"output_dir", "transformer", "adapters": [records], "seconds"}.

    Raises:
        InputError: every problem found before loading (the adapters, the folders), in one line.
    """
    import os
    import shutil
    import time

    from opensora_cli.errors import InputError
    from opensora_cli.services.model_folders import bundled_model_dir, model_defaults, resolve_model_dirs

    started = time.perf_counter()
    say = on_phase or (lambda text: None)
    model = Path(model) if model is not None else bundled_model_dir()
    dirs, problems = resolve_model_dirs(model)
    if "transformer" in dirs and (dirs["transformer"] / "config.json").is_file():
        problems = []  # a transformer folder alone is enough: the VAE and text encoder are linked when there
    if not specs:
        problems.append(Problem.of("--lora", None, "no adapter given", "pass --lora DIR[:SCALE]"))
    if dtype not in MERGE_DTYPES:
        problems.append(Problem.of("--dtype", None, f"unknown dtype '{dtype}'", "use one of "
                                   + ", ".join(MERGE_DTYPES)))
    if "transformer" in dirs:
        problems += adapter_problems(specs, dirs["transformer"])
    output_dir = Path(output_dir)
    if output_dir.exists() and (not output_dir.is_dir() or any(output_dir.iterdir())) and not overwrite:
        problems.append(Problem.of("--output-dir", None, f"'{output_dir}' exists and is not empty",
                                   "pick a new folder or add --overwrite"))
    if problems:
        raise InputError("; ".join(p.render() for p in problems))

    from opensora_cli.models.loading import load_pretrained, write_model_index
    from opensora_cli.models.lora import fuse_adapters, load_adapters
    from opensora_cli.models.transformer_opensora import OpenSoraInpaint_v1_3
    from opensora_cli.training.checkpointing import link_model_folder

    say(f"loading {dirs['transformer']}")
    transformer = load_pretrained(OpenSoraInpaint_v1_3, dirs["transformer"])  # fp32: the sum is exact enough
    say("fusing " + ", ".join(str(spec) for spec in specs))
    load_adapters(transformer, [(spec.path, spec.scale) for spec in specs])
    fuse_adapters(transformer)
    tmp = output_dir.parent / f".{output_dir.name}.tmp"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    say(f"writing {output_dir}")
    import torch

    from opensora_cli.distributed.device import DTYPES

    weights = DTYPES.get(dtype)  # None for "base"
    # torch's own .to: diffusers' warns on every dtype cast that no module asked to stay in fp32
    torch.nn.Module.to(transformer, weights or load_safetensors_dtype(dirs["transformer"]))
    transformer.save_pretrained(tmp / "transformer", safe_serialization=True)
    for kind in ("vae", "text_encoder"):
        if kind in dirs:
            link_model_folder(dirs[kind], tmp / kind)
    defaults = model_defaults(model)
    if defaults:
        (tmp / "opensora_defaults.json").write_text(json.dumps(defaults, indent=2) + "\n")
    write_model_index(tmp, text_encoder="text_encoder" in dirs)
    records = adapter_records(specs)
    (tmp / "merged_lora.json").write_text(json.dumps({"base": str(dirs["transformer"].resolve()),
                                                      "adapters": records}, indent=2) + "\n")
    if output_dir.exists():
        shutil.rmtree(output_dir) if output_dir.is_dir() else output_dir.unlink()
    os.replace(tmp, output_dir)
    return {"output_dir": str(output_dir), "transformer": str(output_dir / "transformer"), "adapters": records,
            "dtype": str(next(transformer.parameters()).dtype).removeprefix("torch."),
            "seconds": round(time.perf_counter() - started, 2)}


def load_safetensors_dtype(folder: Path):
    """The dtype of the first floating tensor in a transformer folder's weights (the merged model keeps it:
    the demo model's fp16 stays fp16), read from the header; fp32 when there is none."""
    import torch
    from safetensors import safe_open

    from opensora_cli.models.loading import weight_files

    names = {"F16": torch.float16, "BF16": torch.bfloat16, "F32": torch.float32}
    for path in weight_files(folder):
        if path.suffix != ".safetensors":
            break
        with safe_open(str(path), framework="pt") as handle:
            for key in handle.keys():  # noqa: SIM118  (safe_open is not a mapping)
                dtype = names.get(handle.get_slice(key).get_dtype())
                if dtype is not None:
                    return dtype
    return torch.float32
