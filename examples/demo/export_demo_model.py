"""Install a trained demo model into the package (src/opensora_cli/demo_model), weights in fp16.

    python examples/demo/export_demo_model.py WORK/train [--dest src/opensora_cli/demo_model]

Takes the newest checkpoint of a `opensora train` output folder (its transformer/ holds the EMA weights, and
its vae/ and text_encoder/ links point at the frozen models) and writes a self-contained bundle with the
sampling defaults the model was trained for (17 frames at 64x96).
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
from pathlib import Path

from safetensors.torch import load_file, save_file

from opensora_cli.models.loading import write_model_index

DEFAULTS = {
    "num_frames": 17,
    "height": 64,
    "width": 96,
    "crop_for_hw": True,
    "max_hxw": 6144,
    "max_hxw_range": [1024, 6144],
    "steps": 25,
    # measured on 48 held-out i2v videos at 3500 steps (the quick recipe's model): CFG 4.5 melted the shapes
    # (silhouette IoU 0.70), 2 kept them best (0.78) and followed every direction; 1 and 1.5 lost directions
    # (95.8 %), 3 kept shapes less (0.75). At 12500 steps (the full recipe) 1 does best: --guidance-scale 1.
    "guidance_scale": 2.0,
    "fps": 8,
    # trained on plain captions with "" as the dropped caption: no template, no reference negative prompt
    "prompt_template": False,
    "negative_prompt": "",
}


def newest_checkpoint(path: Path) -> Path:
    if (path / "transformer").is_dir():
        return path
    found = sorted((int(m[1]), p) for p in path.iterdir() if (m := re.match(r"checkpoint-(\d+)$", p.name)))
    if not found:
        raise SystemExit(f"{path}: no checkpoint-N folder")
    return found[-1][1]


def copy_half(src: Path, dst: Path) -> None:
    """Copy a model folder, storing floating-point weights as fp16 (they load back as fp32)."""
    dst.mkdir(parents=True, exist_ok=True)
    for item in src.iterdir():
        if item.suffix == ".safetensors":
            tensors = {k: (v.half() if v.is_floating_point() else v) for k, v in load_file(item).items()}
            save_file(tensors, dst / item.name, metadata={"format": "pt"})
        elif item.is_file():
            shutil.copy2(item, dst / item.name)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("train_output", type=Path)
    parser.add_argument("--dest", type=Path, default=Path(__file__).resolve().parents[2] / "src/opensora_cli/demo_model")
    parser.add_argument("--guidance-scale", type=float, default=DEFAULTS["guidance_scale"],
                        help="the bundle's default CFG [%(default)s]")
    args = parser.parse_args()
    checkpoint = newest_checkpoint(args.train_output)
    if args.dest.exists():
        shutil.rmtree(args.dest)
    for part in ("transformer", "vae", "text_encoder"):
        copy_half((checkpoint / part).resolve(), args.dest / part)
    state = json.loads((checkpoint / "trainer_state.json").read_text())
    write_model_index(args.dest)  # so that OpenSoraInpaintPipeline.from_pretrained(dest) loads the bundle
    defaults = {**DEFAULTS, "guidance_scale": args.guidance_scale}
    (args.dest / "opensora_defaults.json").write_text(json.dumps(defaults, indent=2) + "\n")
    # where the run started: a preset's name, or the checkpoint a fine-tune (the full recipe's cool-down) began
    # from, so that "step" reads as steps of this run, not of the model
    start = Path(state.get("config", {}).get("model") or "")
    started_from = start.parent.name if start.name == "transformer" else start.name
    (args.dest / "TRAINING.json").write_text(json.dumps({
        "run": args.train_output.absolute().name, "started_from": started_from or None,
        "checkpoint": checkpoint.name, "step": state["step"], "loss": state.get("loss")}, indent=2) + "\n")
    size = sum(f.stat().st_size for f in args.dest.rglob("*") if f.is_file()) / 2**20
    print(f"installed {checkpoint} into {args.dest} ({size:.1f} MiB)")


if __name__ == "__main__":
    main()
