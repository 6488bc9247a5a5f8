"""LoRA adapters for the transformer, on peft: add them for training, save and read them in peft's layout, load
several at sampling time with a scale each, fuse them into the weights.

An adapter folder (what `opensora train --lora-rank R` writes into each checkpoint):

    adapter_config.json         peft's `LoraConfig` (rank, alpha, dropout, target modules, modules_to_save)
    adapter_model.safetensors   the adapter's tensors under peft's keys: `base_model.model.<module>.lora_A.weight`,
                                `.lora_B.weight`, and the whole weights of each module in `modules_to_save`
                                (`--train-modules`) as `base_model.model.<module>.<param>`
    opensora_base.json          what the base model was: its class, its config and a fingerprint of its weight
                                files (`BASE_FILE`; see `services.lora`), so another base is refused before loading

So `PeftModel.from_pretrained(transformer, folder)` loads it as it is, and a diffusers user can load it with
`transformer.load_lora_adapter(folder, weight_name="adapter_model.safetensors", prefix="base_model.model")`
(the adapter's `lora_adapter_metadata` in the safetensors header carries its alpha and targets).

The base weights are never changed here except by `fuse_adapters`. A scale multiplies each adapter's low-rank
update (peft's `scaling`); the modules of `modules_to_save` are used as trained whatever the scale.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
BASE_FILE = "opensora_base.json"
PEFT_PREFIX = "base_model.model."  # peft's PeftModel keys: the wrapper, then the wrapped model

# --lora-targets: which nn.Linear layers get an adapter (regexes over the transformer's module names, matched
# whole by peft). Every block's self- and cross-attention projections; then their feed-forward; then every
# Linear of the model (caption projection, timestep embedding, adaLN, the inpaint branches, the output).
_ATTN = r"transformer_blocks\.\d+\.attn[12]\.(to_q|to_k|to_v|to_out\.0)"
_FF = r"transformer_blocks\.\d+\.ff\.net\.(0\.proj|2)"
LORA_TARGETS = {"attn": _ATTN, "attn+ff": f"({_ATTN}|{_FF})", "all-linear": None}  # None: listed from the model
# the modules a LoRA for i2v trained from text-to-video weights adds whole (`--train-modules inpaint`)
MODULE_GROUPS = {"inpaint": ("pos_embed_masked_hidden_states", "pos_embed_mask")}


def linear_names(model: torch.nn.Module) -> list[str]:
    """The names of every nn.Linear in `model` (a module tree; may be on the meta device)."""
    return [name for name, module in model.named_modules() if isinstance(module, torch.nn.Linear)]


def expand_modules(names: Iterable[str]) -> list[str]:
    """--train-modules values with the groups of MODULE_GROUPS expanded, in order, without repeats."""
    out: list[str] = []
    for name in names:
        for item in MODULE_GROUPS.get(name, (name,)):
            if item not in out:
                out.append(item)
    return out


def unknown_modules(model: torch.nn.Module, names: Iterable[str]) -> list[str]:
    """The names of `names` (expanded) that are not submodules of `model`."""
    known = dict(model.named_modules())
    return [name for name in expand_modules(names) if not name or name not in known]


def transformer_config(folder: Path) -> dict[str, Any]:
    """config.json of a transformer folder (raises OSError / ValueError as json does)."""
    return json.loads((folder / "config.json").read_text(encoding="utf-8"))


def architecture(config: dict[str, Any]) -> dict[str, Any]:
    """The fields of a transformer config that decide its modules and shapes: all but diffusers' `_` keys."""
    return {key: value for key, value in config.items() if not key.startswith("_")}


def base_identity(folder: Path, book: Path | None = None) -> dict[str, Any]:
    """What `folder` (a transformer folder) is, as adapters record it in `BASE_FILE`:

        class        the transformer's class (`_class_name` of its config.json)
        config       its config.json without diffusers' private `_` keys: the architecture
        fingerprint  SHA-256 over the SHA-256 of its weight files (`utils.io.files_fingerprint`, each file's hash
                     remembered in `book`): the weights
        path         the folder, resolved (a hint for error messages only)

    Raises:
        OSError: a file cannot be read.
        ModelLoadError: the folder has no weights.
    """
    from opensora_cli.models.loading import weight_files
    from opensora_cli.utils.io import files_fingerprint

    config = transformer_config(folder)
    return {"class": config.get("_class_name"), "config": architecture(config),
            "fingerprint": files_fingerprint(weight_files(folder), book), "path": str(folder.resolve())}


def lora_config(model: torch.nn.Module, rank: int, alpha: float | None = None, dropout: float = 0.0,
                targets: str = "attn", train_modules: Sequence[str] = ()):
    """peft's LoraConfig for `model` (the transformer): rank R, alpha (default R: scaling 1), dropout, the
    targets of LORA_TARGETS, and `train_modules` trained whole beside the adapter (peft's modules_to_save)."""
    from peft import LoraConfig

    target = LORA_TARGETS[targets]
    saved = expand_modules(train_modules)
    if target is None:  # every Linear, but not inside a module that is trained whole
        target = [name for name in linear_names(model)
                  if not any(name == m or name.startswith(m + ".") for m in saved)]
    return LoraConfig(r=rank, lora_alpha=float(rank if alpha is None else alpha), lora_dropout=dropout,
                      target_modules=target, modules_to_save=saved or None, init_lora_weights=True)


def lora_parameter_count(model: torch.nn.Module, config) -> int:
    """The parameters `add_lora(model, config)` would make trainable, counted without injecting: rank x (inputs
    + outputs) per targeted Linear, and every parameter of the modules trained whole. `model` may be on meta."""
    import re

    saved = list(config.modules_to_save or [])
    target = config.target_modules

    def targeted(name: str) -> bool:
        if isinstance(target, str):
            return re.fullmatch(target, name) is not None
        return name in set(target)

    modules = dict(model.named_modules())
    count = sum(config.r * (m.in_features + m.out_features) for name, m in modules.items()
                if isinstance(m, torch.nn.Linear) and targeted(name)
                and not any(name == s or name.startswith(s + ".") for s in saved))
    return count + sum(p.numel() for s in saved for p in modules[s].parameters())


def add_lora(model, config, seed: int, adapter_name: str = "default") -> list[torch.nn.Parameter]:
    """Freeze `model` and inject the adapter (its B matrices start at zero: the model computes what it did).

    The A matrices are drawn from `seed` alone (peft draws them from torch's global generator, whose state
    depends on what ran before), so a run and its rerun start from the same adapter. The adapter's parameters
    (and the copies of `modules_to_save`) are made fp32 whatever the base's dtype, as they are what the
    optimiser updates.

    Returns:
        the trainable parameters, in `model.parameters()` order.
    """
    model.requires_grad_(False)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model.add_adapter(config, adapter_name=adapter_name)  # diffusers' PeftAdapterMixin -> peft's injection
    trainable = [p for p in model.parameters() if p.requires_grad]
    for parameter in trainable:
        parameter.data = parameter.data.float()
    return trainable


def adapter_state_dict(model, adapter_name: str = "default") -> dict[str, torch.Tensor]:
    """The adapter's tensors under peft's saved names (without the `PEFT_PREFIX`), on the host."""
    from peft.utils import get_peft_model_state_dict

    state = get_peft_model_state_dict(model, adapter_name=adapter_name)
    return {name: tensor.detach().cpu().contiguous() for name, tensor in state.items()}


def save_adapter(folder: Path, model, base: dict[str, Any], adapter_name: str = "default",
                 state: dict[str, torch.Tensor] | None = None) -> None:
    """Write the adapter folder (see the module docstring) into `folder` (which exists).

    Args:
        model: the transformer with the adapter injected.
        base: what the base model was (`BASE_FILE`'s content: class, config, fingerprint, path).
        state: the tensors to write instead of the model's own (an EMA of them), names as `adapter_state_dict`.
    """
    from safetensors.torch import save_file

    config = model.peft_config[adapter_name]
    config.save_pretrained(str(folder))  # adapter_config.json
    tensors = state if state is not None else adapter_state_dict(model, adapter_name)
    # diffusers' load_lora_adapter reads the LoraConfig from here, under the same prefix as the tensors
    described = {PEFT_PREFIX + key: value for key, value in config.to_dict().items()
                 if key not in ("peft_type", "task_type", "base_model_name_or_path", "revision")}
    metadata = {"format": "pt", "lora_adapter_metadata": json.dumps(described, default=_jsonable)}
    save_file({PEFT_PREFIX + name: tensor for name, tensor in tensors.items()}, folder / ADAPTER_WEIGHTS,
              metadata=metadata)
    (folder / BASE_FILE).write_text(json.dumps(base, indent=2, sort_keys=True) + "\n")


def _jsonable(value: Any) -> Any:
    return sorted(value) if isinstance(value, (set, frozenset)) else str(value)


@dataclass
class AdapterFiles:
    """An adapter folder as read from disk, without loading its tensors."""

    folder: Path
    config: dict[str, Any]  # adapter_config.json
    base: dict[str, Any] | None  # opensora_base.json; None for an adapter made elsewhere
    shapes: dict[str, list[int]]  # tensor name (without PEFT_PREFIX) -> shape, from the safetensors header

    @property
    def rank(self) -> int:
        return int(self.config.get("r", 0))

    @property
    def modules_to_save(self) -> list[str]:
        return list(self.config.get("modules_to_save") or [])


def read_adapter(folder: Path) -> AdapterFiles:
    """Read an adapter folder's config, base record and tensor shapes (the header only).

    Raises:
        ValueError: a file is missing or unreadable, or the adapter is not a LoRA (one line, naming the file).
    """
    from safetensors import safe_open

    config_path, weights = folder / ADAPTER_CONFIG, folder / ADAPTER_WEIGHTS
    for path in (config_path, weights):
        if not path.is_file():
            raise ValueError(f"{folder}: no {path.name} — pass a LoRA folder (a checkpoint of `opensora train "
                             "--lora-rank`)")
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ValueError(f"{config_path}: not readable JSON ({exc})") from None
    if not isinstance(config, dict) or config.get("peft_type") != "LORA":
        raise ValueError(f"{config_path}: not a LoRA adapter (peft_type {config.get('peft_type')!r})")
    base = None
    if (folder / BASE_FILE).is_file():
        try:
            base = json.loads((folder / BASE_FILE).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ValueError(f"{folder / BASE_FILE}: not readable JSON ({exc})") from None
    try:
        with safe_open(str(weights), framework="pt") as handle:
            shapes = {name.removeprefix(PEFT_PREFIX): list(handle.get_slice(name).get_shape())
                      for name in handle.keys()}  # noqa: SIM118  (safe_open is not a mapping)
    except Exception as exc:  # noqa: BLE001  (safetensors raises its own error types for a damaged header)
        raise ValueError(f"{weights}: not a readable safetensors file ({exc})") from None
    return AdapterFiles(folder, config, base, shapes)


def shape_problems(adapter: AdapterFiles, model: torch.nn.Module) -> list[str]:
    """What in `adapter` does not fit `model` (a module tree, may be on the meta device): missing modules, or
    low-rank matrices whose outer sizes are not the layer's. Empty when it fits."""
    modules = dict(model.named_modules())
    params = dict(model.named_parameters())
    problems = []
    for name, shape in sorted(adapter.shapes.items()):
        for kind in (".lora_A.weight", ".lora_B.weight"):
            if name.endswith(kind):
                layer = modules.get(name[: -len(kind)])
                if not isinstance(layer, torch.nn.Linear):
                    problems.append(f"{name[: -len(kind)]} is not a Linear of this model")
                elif kind == ".lora_A.weight" and shape[1:] != [layer.in_features]:
                    problems.append(f"{name}: {shape} does not fit a layer of {layer.in_features} inputs")
                elif kind == ".lora_B.weight" and shape[:1] != [layer.out_features]:
                    problems.append(f"{name}: {shape} does not fit a layer of {layer.out_features} outputs")
                break
        else:
            if name not in params:
                problems.append(f"{name} is not a parameter of this model")
            elif list(params[name].shape) != shape:
                problems.append(f"{name}: {shape}, the model's is {list(params[name].shape)}")
    return problems


def load_adapters(model, adapters: Sequence[tuple[Path, float]]) -> list[str]:
    """Inject each adapter folder into `model` (the transformer, any dtype and device) with its scale, all
    active at once; returns the adapter names ("lora0", "lora1", ...). Tensors are cast to the layers' dtype.

    Raises:
        ValueError: an adapter does not fit (peft names the tensor), or two adapters train the same module
            whole (only one copy of a module can be active).
    """
    from peft import LoraConfig, inject_adapter_in_model, set_peft_model_state_dict
    from safetensors.torch import load_file

    names, whole = [], {}
    for index, (folder, _scale) in enumerate(adapters):
        files = read_adapter(folder)
        for module in files.modules_to_save:
            if module in whole:
                raise ValueError(f"{folder} and {whole[module]} both train {module} whole; use one of them")
            whole[module] = folder
        config = LoraConfig.from_pretrained(str(folder))
        name = f"lora{index}"
        with warnings.catch_warnings():  # peft warns that a second adapter makes several: that is the point
            warnings.filterwarnings("ignore", message="Already found a `peft_config` attribute")
            inject_adapter_in_model(config, model, adapter_name=name)
        if not getattr(model, "_hf_peft_config_loaded", False):
            model._hf_peft_config_loaded = True  # what diffusers' add_adapter sets: its set_adapters needs it
        model.peft_config = {**getattr(model, "peft_config", {}), name: config}
        state = {key.removeprefix(PEFT_PREFIX): tensor for key, tensor in load_file(folder / ADAPTER_WEIGHTS).items()}
        result = set_peft_model_state_dict(model, state, adapter_name=name)
        missing = [key for key in result.missing_keys if f".{name}." in key or key.endswith(f".{name}")]
        if result.unexpected_keys or missing:
            raise ValueError(f"{folder}: the adapter's tensors do not match its config "
                             f"({len(result.unexpected_keys)} unexpected, {len(missing)} missing)")
        names.append(name)
    _activate(model, names, [scale for _, scale in adapters])
    model.requires_grad_(False)
    return names


def _activate(model, names: list[str], scales: list[float]) -> None:
    """Every adapter of `names` active at once, each low-rank update times its scale."""
    from peft.tuners.tuners_utils import BaseTunerLayer
    from peft.utils.other import ModulesToSaveWrapper

    for module in model.modules():
        if isinstance(module, BaseTunerLayer):
            active = [name for name in names if name in getattr(module, "lora_A", {})]
            module.set_adapter(active)
            for name, scale in zip(names, scales):
                if name in active:
                    module.set_scale(name, scale)
        elif isinstance(module, ModulesToSaveWrapper):
            owner = [name for name in names if name in module.modules_to_save]
            if owner:
                module.set_adapter(owner)


def fuse_adapters(model) -> None:
    """Fold the active adapters into the base weights and take peft's layers out: afterwards `model` is the plain
    transformer again (its state dict has the released keys), computing what it computed with the adapters."""
    from peft.tuners.tuners_utils import BaseTunerLayer
    from peft.utils.other import ModulesToSaveWrapper

    for parent in list(model.modules()):
        for child_name, child in list(parent.named_children()):
            if isinstance(child, BaseTunerLayer):
                child.merge(safe_merge=True)  # raises on a NaN in the merged weights
                setattr(parent, child_name, child.get_base_layer())
            elif isinstance(child, ModulesToSaveWrapper):
                active = child.active_adapters
                setattr(parent, child_name, child.modules_to_save[active[0]] if active else child.original_module)
    for attribute in ("peft_config", "_hf_peft_config_loaded"):  # (the class keeps its own defaults)
        model.__dict__.pop(attribute, None)
