"""Which model a command uses, where its parts are and the defaults it brings: for `sample`, `validate-inputs`
and `train`. No torch.

A model folder may hold `opensora_defaults.json`: what it was trained on (frames, size, area range) and how to
sample it (steps, guidance, fps, sampler, negative prompt, template). Options the user leaves out take these
values first, then the released model's. So `validate-inputs` accepts exactly what `sample` runs.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from opensora_cli.errors import InputError
from opensora_cli.schemas.defaults import RELEASED, model_defaults  # noqa: F401  (model_defaults: re-exported)
from opensora_cli.schemas.problems import Problem, option_name
from opensora_cli.schemas.resolution import MAX_MAX_HXW, MIN_MAX_HXW
from opensora_cli.schemas.sample import MODEL_DEFAULT_FIELDS

_RELEASED_LATENT_FRAMES = 1 + (RELEASED["num_frames"] - 1) // 4  # 24


def bundled_model_dir() -> Path | None:
    """The demo model shipped in the package (transformer/, vae/, text_encoder/), if this install has it."""
    folder = Path(__file__).resolve().parents[1] / "demo_model"
    return folder if (folder / "transformer" / "config.json").is_file() else None


def resolve_fields(given: Mapping[str, Any]) -> dict[str, Any]:
    """Fill what the user left out (None): the model folder's defaults (e.g. the demo model's 17 frames at
    64x96); the rest keep the request model's field defaults, which are the released model's. Without a model,
    the bundled demo model is used.

    Args:
        given: request fields (`InputsRequest` or `SampleRequest`), None where not given.

    Returns:
        The fields to validate: the given ones, the model's defaults and `max_hxw_range` (the model's trained
        area range, else the released model's).

    Raises:
        InputError: `model` is not a folder, or its defaults file is broken.
    """
    fields = {key: value for key, value in given.items() if value is not None}
    model = fields.get("model") or bundled_model_dir()
    if model is not None and not Path(model).is_dir():
        raise InputError(f"--model: '{model}' is not a folder — pass the model folder (a bundle with "
                         "transformer/, vae/ and text_encoder/, or a transformer folder)")
    fields["model"] = model
    defaults = model_defaults(model)
    for key in MODEL_DEFAULT_FIELDS:
        if key not in fields and key in defaults:
            fields[key] = defaults[key]
    fields["max_hxw_range"] = tuple(fields.get("max_hxw_range", (MIN_MAX_HXW, MAX_MAX_HXW)))
    fields["trained_frames"] = trained_frames(model, defaults)
    return fields


def trained_frames(model: Path | None, defaults: Mapping[str, Any]) -> int | None:
    """The video length the model was trained on: its `opensora_defaults.json` `num_frames`; for a folder without
    one, 93 when the transformer config is the released model's (`sample_size_t` 24, its latent length; our tiny
    presets carry other values that no training set), else None (unknown)."""
    if isinstance(defaults.get("num_frames"), int):
        return defaults["num_frames"]
    for config in (Path(model) / "transformer" / "config.json", Path(model) / "config.json") if model else ():
        try:
            latent = json.loads(config.read_text(encoding="utf-8")).get("sample_size_t")
        except (OSError, ValueError, AttributeError):
            continue
        return RELEASED["num_frames"] if latent == _RELEASED_LATENT_FRAMES else None
    return None


# Where a bundle or the released download keeps each component (text_encoder/ or the released mt5-xxl/).
_COMPONENT_NAMES = {"vae": ("vae",), "text_encoder": ("text_encoder", "mt5-xxl")}


def find_model_folders(
    model: Path | None, given: Mapping[str, Path | None]
) -> tuple[dict[str, Path], list[Problem]]:
    """Transformer, VAE and text-encoder folders, for `sample`, `train` and `validate-inputs`.

    `model` may be a bundle with transformer/, vae/ and text_encoder/ (what `init-model` and `train` write), or
    the transformer folder itself; the VAE and text encoder then default to the sibling folders `vae` and
    `text_encoder` (or `mt5-xxl`), as in the released download. Folders in `given` win.

    Args:
        model: the bundle or transformer folder, or None (then only `given` folders are used).
        given: "vae" and "text_encoder" folders the user named, None where not named.
    """
    problems: list[Problem] = []
    folders: dict[str, Path] = {}
    base = None
    if model is not None:
        bundle = (model / "transformer" / "config.json").is_file()
        folders["transformer"] = model / "transformer" if bundle else model
        base = model if bundle else model.parent
    for kind, names in _COMPONENT_NAMES.items():
        flag = option_name(kind)
        if given.get(kind) is not None:
            folders[kind] = Path(given[kind])
            continue
        found = next((base / n for n in names if (base / n / "config.json").is_file()), None) if base else None
        if found is None:
            near = f" or found next to {model}" if model is not None else ""
            problems.append(Problem.of(flag, None, f"no {kind.replace('_', ' ')} folder given{near}",
                                       f"pass {flag} DIR"))
        else:
            folders[kind] = found
    for kind, folder in folders.items():
        if not (folder / "config.json").is_file():
            flag = "--model" if kind == "transformer" else option_name(kind)
            problems.append(Problem.of(flag, None, f"'{folder}' is not a model folder (no config.json)",
                                       "point to the folder that holds config.json and the weights"))
    return folders, problems


def resolve_model_dirs(model: Path | None, vae: Path | None = None,
                       text_encoder: Path | None = None) -> tuple[dict[str, Path], list[Problem]]:
    """The folders `sample` loads: `find_model_folders`, with a model required."""
    if model is None:
        return {}, [Problem.of("--model", None, "no model given and this install has no bundled demo model",
                               "pass --model DIR (the released any93x640x640_i2v folder with --vae and "
                               "--text-encoder, or a folder written by `opensora init-model`)")]
    return find_model_folders(Path(model), {"vae": vae, "text_encoder": text_encoder})
