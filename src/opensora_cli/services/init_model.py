"""init-model: random-weight model folders in the released layout, from the presets of `models.registry`."""

from __future__ import annotations

from pathlib import Path

from opensora_cli.errors import InputError


def init_model(output_dir: Path, presets: dict[str, str | None], seed: int = 0) -> dict[str, Path]:
    """Write `output_dir/{transformer,vae,text_encoder}` with random weights (`write_random_model_folder`), and
    `model_index.json` when both the transformer and the VAE are written.

    Args:
        output_dir: a new or empty folder.
        presets: {"transformer" | "vae" | "text_encoder": a preset of that part, or None to leave it out}.

    Returns:
        {part: folder} for the parts written.

    Raises:
        InputError: a name that is not a preset of its part, or an output folder that is not empty.
    """
    from opensora_cli.models.registry import PRESETS, write_random_model_folder

    for kind, name in presets.items():
        if name is not None and (name not in PRESETS or PRESETS[name].kind != kind):
            known = ", ".join(n for n, p in PRESETS.items() if p.kind == kind)
            raise InputError(f"--{kind.replace('_', '-')}: '{name}' is not a {kind.replace('_', ' ')} preset — "
                             f"use one of {known}, or none")
    if output_dir.exists() and any(output_dir.iterdir()):
        raise InputError(f"{output_dir}: exists and is not empty — choose a new folder")
    from opensora_cli.models.loading import write_model_index

    written = write_random_model_folder(output_dir, seed=seed, **presets)
    if {"transformer", "vae"} <= set(written):  # a bundle `OpenSoraInpaintPipeline.from_pretrained` can read
        write_model_index(output_dir, text_encoder="text_encoder" in written)
    return written
