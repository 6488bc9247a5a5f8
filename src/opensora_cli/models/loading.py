"""Loading model folders in the released layout, with errors that say what does not match.

A folder holds `config.json` (diffusers format, `_class_name` names the class) and its weights: one
`diffusion_pytorch_model.safetensors`, shards listed in its `.index.json` (the released transformer), or the
reference training code's `*.ckpt` (a pickled dict, read weights-only).

Unlike diffusers' `from_pretrained` (which works on our folders too), `load_pretrained` checks the config against
the constructor's signature and sizes the model on the meta device before anything is built (a model too large
for memory is refused in GiB instead of swapping for minutes), checks every key and shape before anything is
assigned, and casts while reading (fp32 weights load into bf16 without an fp32 copy of the model). Every problem
is one `ModelLoadError` line naming the file (and the field).
"""

from __future__ import annotations

import contextlib
import inspect
import json
import logging
import math
import os
import re
import types
import typing
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import torch

from opensora_cli.errors import ModelLoadError
from opensora_cli.schemas.problems import did_you_mean
from opensora_cli.utils.system import available_host_memory

WEIGHTS_NAME = "diffusion_pytorch_model.safetensors"
INDEX_NAME = "diffusion_pytorch_model.safetensors.index.json"
CONFIG_NAME = "config.json"
_SHOWN_KEYS = 8

# Config fields no constructor takes but released or diffusers-written configs carry: diffusers' EMAModel
# writes its bookkeeping into the config it saves (the released T2V config has them). `_*` keys are diffusers'.
_EMA_FIELDS = frozenset({"decay", "min_decay", "optimization_step", "update_after_step", "use_ema_warmup",
                         "inv_gamma", "power"})
# Sane ranges of integer sizes, far beyond any released model (the 2B transformer: 32 layers of 24 x 96; the
# WF-VAE: 2 resblocks, base width 128) yet small enough that a typo is refused before anything is built: the
# fields that multiply the module count get a tighter bound than widths, whose cost the memory check sees.
_INT_RANGES = {"num_layers": (1, 1024), "encoder_num_resblocks": (1, 64), "decoder_num_resblocks": (1, 64),
               "connect_res_layer_num": (1, 64)}
_DEFAULT_INT_RANGE = (1, 2**16)
_FLOAT_RANGES = {"dropout": (0.0, 1.0)}  # [low, high)
_POSITIVE_FLOATS = ("norm_eps", "interpolation_scale_h", "interpolation_scale_w", "interpolation_scale_t")

ModelT = TypeVar("ModelT", bound=torch.nn.Module)


# ------------------------------------------------------------------------------------------------------------
# Weight files
# ------------------------------------------------------------------------------------------------------------


def weight_files(folder: Path) -> list[Path]:
    """The weight files of a model folder, in load order."""
    index = folder / INDEX_NAME
    if index.is_file():
        weight_map = _read_json(index).get("weight_map")
        if not isinstance(weight_map, dict):
            raise ModelLoadError(f"{index}: no 'weight_map' object — download or save the model again")
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


def load_torch_checkpoint(path: str | os.PathLike) -> Any:
    """A pickle checkpoint (`.ckpt`, `.pt`, `.bin`) read with `torch.load(weights_only=True)`: tensors and plain
    containers only, since unpickling anything else can run arbitrary code.

    Raises:
        ModelLoadError: one line naming the file: it holds pickled Python objects (with the one-line conversion
            to safetensors, to run where the file is trusted), or it is damaged / incomplete.
    """
    import pickle

    path = Path(path)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        text = str(exc)
        target = path.parent / WEIGHTS_NAME
        convert = (
            "python -c \"import torch, safetensors.torch as st; c = torch.load(" + repr(str(path))
            + ", map_location='cpu', weights_only=False); sd = c.get('ema_state_dict') or c.get('state_dict', c); "
            "sd = sd.get('gen_model', sd); st.save_file({k.removeprefix('module.'): v.contiguous() for k, v in "
            "sd.items() if isinstance(v, torch.Tensor)}, " + repr(str(target)) + ")\""
        )
        operand = re.search(r"Unsupported operand (\d+)", text)
        if "weights only load failed" not in text.lower() or operand:
            # torch's restricted reader met bytes it does not know: a damaged file, or a pickle torch did not write
            what = f"pickle operation {operand[1]} is not allowed weights-only" if operand else _first_line(exc)
            raise ModelLoadError(
                f"{path}: not a readable checkpoint ({what}) — the file is damaged or incomplete, or a pickle of "
                "Python objects; download or save it again, or, if you trust its source, convert it to "
                f"safetensors: {convert}"
            ) from None
        found = re.search(r"GLOBAL ([\w.]+)", text)
        holds = f" such as {found[1]}" if found else ""
        raise ModelLoadError(
            f"{path}: not a weights-only checkpoint: it holds pickled Python objects{holds}, which we do not load "
            "because unpickling can run arbitrary code — if you trust the file's source, convert it to safetensors "
            f"once (then the folder loads from {WEIGHTS_NAME}): {convert}"
        ) from None
    except (RuntimeError, EOFError, KeyError, ValueError, OSError) as exc:
        raise ModelLoadError(f"{path}: not a readable checkpoint ({_first_line(exc) or type(exc).__name__}) — the "
                             "file is damaged or incomplete; download or save it again") from None


def _read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    try:
        return load_file(path)
    except Exception as exc:  # safetensors' errors (SafetensorError, OSError...) all mean: this file is bad
        raise ModelLoadError(f"{path}: not a readable safetensors file ({_first_line(exc)}) — the file is damaged "
                             "or incomplete (an interrupted download?); download or save it again") from None


def state_dict_from_reference_ckpt(obj: Mapping | str | os.PathLike) -> dict[str, torch.Tensor]:
    """The VAE weights inside a reference training `.ckpt` (a loaded dict, or a path loaded weights-only).

    Prefers a non-empty `ema_state_dict`, else `state_dict` (or `state_dict["gen_model"]`), else the object
    itself; a leading `module.` (DDP) is stripped from every key.
    """
    if isinstance(obj, (str, os.PathLike)):
        obj = load_torch_checkpoint(obj)
    if obj.get("ema_state_dict"):
        state_dict = obj["ema_state_dict"]
    elif "state_dict" in obj:
        state_dict = obj["state_dict"]
        state_dict = state_dict.get("gen_model", state_dict)
    else:
        state_dict = obj
    return {key.removeprefix("module."): value for key, value in state_dict.items()}


def read_state_dict(folder: str | Path, dtype: torch.dtype | None = None) -> dict[str, torch.Tensor]:
    """All tensors of a model folder on the CPU; floating tensors cast to `dtype` while reading."""
    folder = Path(folder)
    state: dict[str, torch.Tensor] = {}
    for path in weight_files(folder):
        if path.suffix == ".ckpt":  # only the reference's VAE training code writes these
            checkpoint = load_torch_checkpoint(path)
            if not isinstance(checkpoint, dict):
                raise ModelLoadError(f"{path}: holds a {type(checkpoint).__name__}, not a dict of tensors — save "
                                     "the model's state_dict()")
            tensors = state_dict_from_reference_ckpt(checkpoint)
        else:
            tensors = _read_safetensors(path)
        for key, tensor in tensors.items():
            state[key] = tensor.to(dtype) if dtype is not None and tensor.is_floating_point() else tensor
    return state


# ------------------------------------------------------------------------------------------------------------
# Configs: read, check against the constructor, size on the meta device
# ------------------------------------------------------------------------------------------------------------


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:200] if text else ""


def _read_json(path: Path) -> dict[str, Any]:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ModelLoadError(f"{path}:{exc.lineno}:{exc.colno}: not valid JSON ({exc.msg}) — fix the file, or "
                             "download or save the model again") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ModelLoadError(f"{path}: cannot read it ({_first_line(exc)}) — it must be UTF-8 JSON") from None
    if not isinstance(value, dict):
        raise ModelLoadError(f"{path}: holds a JSON {type(value).__name__}, not an object of fields — fix the file")
    return value


def _describe(hint: Any) -> str:
    """`int | list[int] | None` -> "an integer, a list of integers or null"."""
    names = {int: "an integer", float: "a number", bool: "true or false", str: "a string", type(None): "null"}
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        parts = [_describe(arg) for arg in typing.get_args(hint)]
        return ", ".join(parts[:-1]) + " or " + parts[-1]
    if typing.get_origin(hint) in (list, tuple):
        plural = {int: "integers", float: "numbers", str: "strings"}
        return "a list of " + plural.get(typing.get_args(hint)[0], "values")
    return names.get(hint, getattr(hint, "__name__", str(hint)))


def _matches(value: Any, hint: Any) -> bool:
    """Whether a JSON value fits a constructor annotation (ints pass for floats; bools never pass for numbers)."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_matches(value, arg) for arg in typing.get_args(hint))
    if origin in (list, tuple):
        return isinstance(value, list) and all(_matches(v, typing.get_args(hint)[0]) for v in value)
    if hint is type(None):
        return value is None
    if hint in (int, float):
        return isinstance(value, int if hint is int else (int, float)) and not isinstance(value, bool)
    return isinstance(value, hint) if hint in (bool, str) else True  # other annotations: the constructor checks


def _value_problem(name: str, value: Any, hint: Any) -> str | None:
    if not _matches(value, hint):
        return f"{name} is {json.dumps(value)[:60]}; expected {_describe(hint)}"
    if hint is int:
        low, high = _INT_RANGES.get(name, _DEFAULT_INT_RANGE)
        if not low <= value <= high:
            return f"{name} is {value}; expected {low} to {high}"
    numbers = value if isinstance(value, list) else [value]
    if any(isinstance(v, float) and not math.isfinite(v) for v in numbers):
        return f"{name} is {json.dumps(value)[:60]}; expected finite numbers"
    if name in _FLOAT_RANGES and isinstance(value, (int, float)):
        low, high = _FLOAT_RANGES[name]
        if not low <= value < high:
            return f"{name} is {value}; expected at least {low:g} and below {high:g}"
    if name in _POSITIVE_FLOATS and isinstance(value, (int, float)) and not value > 0:
        return f"{name} is {value}; expected a number > 0"
    return None


def check_config(model_class: type, config: dict[str, Any], path: Path) -> None:
    """Refuse a config the constructor of `model_class` would not take, or would take for the wrong reasons.

    Every field must be a constructor argument (or a diffusers `_*` / EMA bookkeeping field), of the
    annotated type, and integer sizes within sane ranges (`_INT_RANGES`), so that a typo fails here in
    milliseconds instead of building a model for minutes.

    Raises:
        ModelLoadError: "FILE: FIELD is VALUE; expected ... — fix FIELD in the file" (the first problem, and how
            many more).
    """
    parameters = {name: p for name, p in inspect.signature(model_class.__init__).parameters.items()
                  if name != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}
    hints = typing.get_type_hints(model_class.__init__)
    problems = []
    for name, value in config.items():
        if name.startswith("_") or name in _EMA_FIELDS:
            continue
        if name not in parameters:
            hint = did_you_mean(name, parameters, otherwise="remove it", cutoff=0.6)
            problems.append((name, f"unknown field '{name}' for {model_class.__name__} — {hint}"))
            continue
        problem = _value_problem(name, value, hints.get(name, Any))
        if problem is not None:
            problems.append((name, f"{problem} — fix {name} in the file"))
    if len(problems) > 1:
        raise ModelLoadError(f"{path}: {problems[0][1]} (and {len(problems) - 1} more problem(s): "
                             f"{', '.join(n for n, _ in problems[1:])})")
    if problems:
        raise ModelLoadError(f"{path}: {problems[0][1]}")


def _check_fits(model: torch.nn.Module, model_class: type, config: dict[str, Any], path: Path, dtype: torch.dtype,
                device: torch.device | str, real_build: bool) -> None:
    """Refuse a model (built on the meta device) whose weights would not fit in host (or accelerator) memory."""
    numel = sum(t.numel() for t in (*model.parameters(), *model.buffers()))
    weight_bytes = numel * torch.empty((), dtype=dtype).element_size()
    # Host: the tensors read from disk, plus the fp32 model itself when it is built for real (not on meta).
    needed = {"host memory": weight_bytes + (numel * 4 if real_build else 0)}
    available = {"host memory": available_host_memory()}
    device = torch.device(device)
    if device.type == "cuda" and torch.cuda.is_available():
        needed[f"memory on {device}"] = weight_bytes
        available[f"memory on {device}"] = torch.cuda.mem_get_info(device)[0]
    for where, need in needed.items():
        have = available[where]
        if have is None or need <= have:
            continue
        defaults = {n: p.default for n, p in inspect.signature(model_class.__init__).parameters.items()}
        # The sizes furthest above the constructor's defaults (the released model's) are the likely typos.
        grown = sorted(((value / defaults[name], name, value) for name, value in config.items()
                        if type(value) is int and type(defaults.get(name)) is int and 0 < defaults[name] < value),
                       reverse=True)
        largest = ", ".join(f"{name} {value} (default {defaults[name]})" for _, name, value in grown[:3])
        raise ModelLoadError(
            f"{path}: this config describes a {numel / 1e9:,.2f} B-parameter model that needs "
            f"{need / 2**30:,.1f} GiB of {where} in {str(dtype).removeprefix('torch.')}, more than the "
            f"{have / 2**30:,.1f} GiB available — " + (f"check {largest}" if largest else "check the sizes")
            + " in the file, or free memory"
        )


def build_from_config(model_class: type[ModelT], folder: str | Path, *, dtype: torch.dtype = torch.float32,
                      device: torch.device | str = "cpu", meta: bool = True) -> ModelT:
    """`model_class` built from `folder/config.json` after `check_config` and a memory check (on meta).

    Args:
        meta: return the model on the meta device (shapes only); else built for real on the CPU, in fp32.

    Raises:
        ModelLoadError: no config, invalid JSON, a config for another class, a field the constructor refuses,
            or a model too large for the memory there is.
    """
    folder = Path(folder)
    path = folder / CONFIG_NAME
    if not path.is_file():
        raise ModelLoadError(f"{folder}: not a model folder (no {CONFIG_NAME})")
    config = _read_json(path)
    class_name = config.get("_class_name")
    named = model_class
    if class_name is not None and class_name != model_class.__name__:
        known = {c.__name__: c for c in (model_class, *model_class.__subclasses__())}
        if class_name not in known:
            raise ModelLoadError(f"{folder}: holds a {class_name}, expected a {model_class.__name__}")
        named = known[class_name]
    check_config(named, config, path)
    with _quiet_diffusers():
        try:
            with torch.device("meta"):
                model = model_class.from_config(config)
        except (ValueError, TypeError, KeyError) as exc:  # the constructor's own checks (they name the field)
            raise ModelLoadError(f"{path}: {_first_line(exc)} — fix the config") from None
        _check_fits(model, named, config, path, dtype, device, real_build=not meta)
        return model if meta else model_class.from_config(config)


# ------------------------------------------------------------------------------------------------------------
# Loading
# ------------------------------------------------------------------------------------------------------------


def _listing(keys: list[str]) -> str:
    shown = ", ".join(keys[:_SHOWN_KEYS])
    return shown + (f", ... ({len(keys) - _SHOWN_KEYS} more)" if len(keys) > _SHOWN_KEYS else "")


def check_state_dict(expected: dict[str, torch.Size], state: dict[str, torch.Tensor],
                     optional: Iterable[str] = ()) -> list[str]:
    """What does not match between a model's keys/shapes and a checkpoint, as sentences (empty = all good)."""
    optional = set(optional)
    missing = [k for k in expected if k not in state and k not in optional]
    unexpected = [k for k in state if k not in expected]
    mismatched = [f"{k} {tuple(state[k].shape)} != {tuple(expected[k])}" for k in expected
                  if k in state and tuple(state[k].shape) != tuple(expected[k])]
    found = {"missing key(s)": missing, "unexpected key(s)": unexpected, "shape mismatch(es)": mismatched}
    return [f"{len(keys)} {what}: {_listing(keys)}" for what, keys in found.items() if keys]


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


def load_pretrained(model_class: type[ModelT], folder: str | Path, *, dtype: torch.dtype = torch.float32,
                    device: torch.device | str = "cpu", optional_keys: Iterable[str] | None = None,
                    meta_init: bool | None = None) -> ModelT:
    """Build `model_class` from `folder/config.json` and load its weights, checking every key first.

    Args:
        model_class: a diffusers ModelMixin/ConfigMixin class (or a parent of the folder's `_class_name`).
        dtype, device: where the weights end up; tensors are cast while reading.
        optional_keys: keys the checkpoint may lack (the model's own values are kept); default: the class's
            `_optional_checkpoint_keys` (e.g. the WF-VAE's fixed Haar filters, which the model builds itself).
        meta_init: build on the meta device and assign the loaded tensors (no random init of a large model);
            default: on unless there are optional keys, whose constructed values must then exist.

    Raises:
        ModelLoadError: no config, an invalid config (see `build_from_config`), unreadable weight files, or
            keys/shapes that do not match.
    """
    folder = Path(folder)
    if optional_keys is None:
        optional_keys = getattr(model_class, "_optional_checkpoint_keys", frozenset())
    if meta_init is None:
        meta_init = not optional_keys
    model = build_from_config(model_class, folder, dtype=dtype, device=device, meta=meta_init)
    state = read_state_dict(folder, dtype=dtype)
    expected = {k: v.shape for k, v in model.state_dict().items()}
    problems = check_state_dict(expected, state, optional_keys)
    if problems:
        raise ModelLoadError(f"{folder}: weights do not match {model_class.__name__}: " + "; ".join(problems))
    model.load_state_dict(state, strict=False, assign=meta_init)
    with _quiet_diffusers():  # diffusers warns on every .to(dtype) that no module asked to stay in fp32
        return model.to(device=device, dtype=dtype).eval()


def init_from_pretrained(model: torch.nn.Module, path: Path) -> str:
    """Initialise an inpaint transformer from an inpaint or text-to-video checkpoint (folder or .safetensors).

    Keys present in both with equal shapes are copied. From a T2V checkpoint the masked-latent branch's patch
    embedding starts as a copy of the noisy-latent one and the two branch Linears stay zero, so training
    starts exactly from the T2V model (the reference's rule). Returns a one-line account of what was loaded.
    """
    if path.is_dir():
        state = read_state_dict(path)
    elif path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(path)
    else:
        raise ModelLoadError(f"{path}: pass a model folder or a .safetensors file (pickled checkpoints are unsafe)")
    own = model.state_dict()
    usable = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    if not usable:
        raise ModelLoadError(f"{path}: no weight matches the transformer (wrong model or architecture)")
    copied_branch = False
    if "pos_embed_masked_hidden_states.0.proj.weight" not in usable and "pos_embed.proj.weight" in usable:
        usable["pos_embed_masked_hidden_states.0.proj.weight"] = usable["pos_embed.proj.weight"].clone()
        usable["pos_embed_masked_hidden_states.0.proj.bias"] = usable["pos_embed.proj.bias"].clone()
        copied_branch = True
    model.load_state_dict(usable, strict=False)
    missing = sorted(set(own) - set(usable))
    ignored = sorted(set(state) - set(usable))
    note = f"initialised {len(usable)}/{len(own)} tensors from {path}"
    if copied_branch:
        note += " (text-to-video checkpoint: masked-latent branch copied from the patch embedding)"
    if missing:
        note += f"; kept the model's own values for {len(missing)}: {', '.join(missing[:4])}"
    if ignored:
        note += f"; ignored {len(ignored)} checkpoint tensor(s)"
    return note


def write_model_index(folder: str | Path, text_encoder: bool = True) -> Path:
    """`model_index.json` of a model bundle (transformer/, vae/, text_encoder/), as diffusers lays out pipelines,
    so that `OpenSoraInpaintPipeline.from_pretrained(folder)` and other tools see what the folders hold. There is
    no scheduler/ folder: the pipeline makes its scheduler from the sampler name (see `pipelines.schedulers`)."""
    import diffusers

    index = {
        "_class_name": "OpenSoraInpaintPipeline",
        "_diffusers_version": diffusers.__version__,
        "scheduler": [None, None],
        "text_encoder": ["opensora_cli", "TextEncoder"] if text_encoder else [None, None],
        "transformer": ["opensora_cli", "OpenSoraInpaint_v1_3"],
        "vae": ["opensora_cli", "WFVAEModel"],
    }
    path = Path(folder) / "model_index.json"
    path.write_text(json.dumps(index, indent=2) + "\n", encoding="utf-8")
    return path
