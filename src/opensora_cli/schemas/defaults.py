"""The defaults of `sample` and `validate-inputs`, in one table: the request schemas take their field defaults
from it and the command-line help quotes it. Plain values, no imports, so that `--help` stays fast.

`RELEASED` are the released model's; a model folder's `opensora_defaults.json` may replace them (see
`services.model_folders.resolve_fields`). `SAMPLE` are the same for every model.
"""

# A model bundle's own sampling defaults (read by `services.model_folders`, written by training and exports)
MODEL_DEFAULTS_FILE = "opensora_defaults.json"

RELEASED = {
    "num_frames": 93,
    "crop_for_hw": False,
    "max_hxw": 236_544,
    "steps": 100,
    "guidance_scale": 7.5,
    "sampler": "EulerAncestralDiscrete",
    "negative_prompt": None,  # None = the reference's negative prompt
    "prompt_template": True,
    "fps": 18,
}

SAMPLE = {
    "output_dir": "samples",
    "guidance_rescale": 0.0,
    "seed": 1234,
    "num_samples_per_prompt": 1,
    "noise_strength": 0.0,
    "adain": 0.5,  # a long video's later windows: how strongly their colours are pulled to window 1's
    "nproc": 1,
    "vae_tiling": "auto",  # on, off, or auto: untiled when the estimate says it fits with room to spare
}


def model_defaults(model) -> dict:
    """`opensora_defaults.json` of a model bundle (or of the folder above a transformer folder), else {} (also
    for None or a preset name). Imports lazily: this module stays import-free for `--help`.

    Raises:
        InputError: the file is not a JSON object.
    """
    import json
    from pathlib import Path

    from opensora_cli.errors import InputError

    if model is None or not Path(model).exists():  # a preset name is no folder: ./opensora_defaults.json is not its
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
