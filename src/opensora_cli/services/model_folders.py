"""Which model a command uses and the defaults it brings; shared by `sample` and `validate-inputs`. No torch.

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
from opensora_cli.schemas.problems import Problem, option_name
from opensora_cli.schemas.sample import SampleOptions

MODEL_DEFAULTS_FILE = "opensora_defaults.json"
# Options a model folder may set defaults for (what it was trained on), and the built-in defaults.
INPUT_DEFAULTS = {"num_frames": 93, "height": None, "width": None, "crop_for_hw": False, "max_hxw": 236544}
OPTION_DEFAULT_KEYS = ("steps", "guidance_scale", "fps", "sampler", "negative_prompt", "prompt_template")


def bundled_model_dir() -> Path | None:
    """The demo model shipped in the package (transformer/, vae/, text_encoder/), if this install has it."""
    folder = Path(__file__).resolve().parents[1] / "demo_model"
    return folder if (folder / "transformer" / "config.json").is_file() else None


def model_defaults(model: Path | None) -> dict[str, Any]:
    """`opensora_defaults.json` of a model bundle (or of the folder above a transformer folder), else {}.

    Raises:
        InputError: the file is not a JSON object.
    """
    if model is None:
        return {}
    for folder in (Path(model), Path(model).parent):
        path = folder / MODEL_DEFAULTS_FILE
        if path.is_file():
            try:
                data = json.loads(path.read_text(encoding="utf-8"))
            except (UnicodeDecodeError, ValueError) as exc:
                raise InputError(f"{path}: not valid JSON ({exc}) — fix the file or delete it") from None
            if not isinstance(data, dict):
                raise InputError(f"{path}: expected a JSON object of option defaults — fix the file or delete it")
            return data
    return {}


def resolve_request(inputs: Mapping[str, Any], options: Mapping[str, Any]) -> tuple[dict, dict]:
    """Fill what the user left out: the model's own defaults first (e.g. the demo model's 17 frames at 64x96),
    then the released model's. Without --model, the bundled demo model is used.

    Args:
        inputs: the input options (`InputsRequest` fields), None where not given.
        options: the generation options (`SampleOptions` fields), None where not given; "model" is read.

    Returns:
        (inputs, options) with defaults filled in; options without the keys still None.
    """
    options = dict(options)
    if options.get("model") is None:
        options["model"] = bundled_model_dir()
    elif not Path(options["model"]).is_dir():
        raise InputError(f"--model: '{options['model']}' is not a folder — pass the model folder (a bundle with "
                         "transformer/, vae/ and text_encoder/, or a transformer folder)")
    defaults = model_defaults(options["model"])
    resolved = dict(inputs)
    for key, fallback in INPUT_DEFAULTS.items():
        if resolved.get(key) is None:
            resolved[key] = defaults.get(key, fallback)
    if "max_hxw_range" in defaults:
        resolved["max_hxw_range"] = tuple(defaults["max_hxw_range"])
    for key in OPTION_DEFAULT_KEYS:
        if options.get(key) is None and key in defaults:
            options[key] = defaults[key]
    return resolved, {k: v for k, v in options.items() if v is not None}


def resolve_model_dirs(options: SampleOptions) -> tuple[dict[str, Path], list[Problem]]:
    """Transformer, VAE and text-encoder folders.

    `--model DIR` may be a bundle with transformer/, vae/ and text_encoder/ (as `write_random_model_folder`
    writes), or the transformer folder itself; then the VAE and text encoder default to sibling folders
    `vae` and `text_encoder` (or `mt5-xxl`), as in the released download.
    """
    problems: list[Problem] = []
    if options.model is None:
        problems.append(Problem.of("--model", None, "no model given and this install has no bundled demo model",
                                   "pass --model DIR (the released any93x640x640_i2v folder with --vae and "
                                   "--text-encoder, or a folder written by write_random_model_folder)"))
        return {}, problems
    model = options.model
    bundle = (model / "transformer" / "config.json").is_file()
    transformer = model / "transformer" if bundle else model
    siblings = {"vae": ["vae"], "text_encoder": ["text_encoder", "mt5-xxl"]}
    dirs = {"transformer": transformer}
    for kind, names in siblings.items():
        given = getattr(options, kind)
        if given is not None:
            dirs[kind] = given
            continue
        base = model if bundle else model.parent
        found = next((base / n for n in names if (base / n / "config.json").is_file()), None)
        if found is None:
            problems.append(Problem.of(option_name(kind), None, f"no {kind.replace('_', ' ')} folder given or found "
                                       f"next to {model}", f"pass {option_name(kind)} DIR"))
        else:
            dirs[kind] = found
    for kind, folder in dirs.items():
        if not (folder / "config.json").is_file():
            flag = "--model" if kind == "transformer" else option_name(kind)
            problems.append(Problem.of(flag, None, f"'{folder}' is not a model folder (no config.json)",
                                       "point to the folder that holds config.json and the weights"))
    return dirs, problems
