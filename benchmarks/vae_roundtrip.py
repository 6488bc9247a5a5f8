"""What the VAE alone gives back: the held-out clips of `opensora make-demo-data` encoded and decoded, scored
like generated videos (PSNR and the re-centred silhouette IoU of `services.evaluation.shape_iou`), frame by
frame. It bounds what any transformer can reach through this VAE.

    opensora make-demo-data demo_data --clips 1 --images 1 --heldout 48 --seed 2027
    python benchmarks/vae_roundtrip.py --eval demo_data/eval [--vae FOLDER] [--json out.json]

Prints a markdown table: all frames, frame 0 (its own latent frame) and frames 1-16, for each VAE given.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np


def roundtrip(vae_dir: Path, eval_dir: Path) -> dict:
    """Per-frame mean PSNR and shape IoU of the eval set's clips through the VAE at `vae_dir` (posterior mean)."""
    import torch

    from opensora_cli.models.autoencoder_wfvae import WFVAEModel
    from opensora_cli.models.loading import load_pretrained
    from opensora_cli.services.evaluation import load_eval_set, psnr, read_frames, shape_iou

    vae = load_pretrained(WFVAEModel, vae_dir).eval()
    psnrs, ious = [], []
    for entry in load_eval_set(eval_dir):
        clip = read_frames(eval_dir / entry["video"], int(entry["frames"]))  # (T, H, W, 3) uint8
        pixels = torch.from_numpy(clip).permute(3, 0, 1, 2)[None].float() / 127.5 - 1  # (1, 3, T, H, W)
        with torch.no_grad():
            decoded = vae.decode_latents(vae.encode_latents(pixels, sample_posterior=False))[:, :, :len(clip)]
        back = ((decoded[0].permute(1, 2, 3, 0) / 2 + 0.5).clamp(0, 1) * 255).round().to(torch.uint8).numpy()
        psnrs.append([psnr(a, b) for a, b in zip(back, clip)])
        ious.append(shape_iou(back, clip, entry["rgb"]))
    psnrs, ious = np.array(psnrs), np.array(ious)  # (clips, T)
    return {"vae": str(vae_dir), "clips": len(psnrs),
            "psnr": {"all": round(float(psnrs.mean()), 2), "frame0": round(float(psnrs[:, 0].mean()), 2),
                     "later": round(float(psnrs[:, 1:].mean()), 2)},
            "shape_iou": {"all": round(float(ious.mean()), 3), "frame0": round(float(ious[:, 0].mean()), 3),
                          "later": round(float(ious[:, 1:].mean()), 3)},
            "psnr_by_frame": [round(float(v), 2) for v in psnrs.mean(0)],
            "shape_iou_by_frame": [round(float(v), 3) for v in ious.mean(0)]}


def main(argv: list[str] | None = None) -> int:
    from opensora_cli.errors import InputError
    from opensora_cli.services.model_folders import bundled_model_dir

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--eval", required=True, type=Path, help="the eval/ folder of make-demo-data")
    parser.add_argument("--vae", type=Path, action="append", help="a VAE folder (repeat to compare) "
                        "[default: the bundled demo model's]")
    parser.add_argument("--json", dest="json_path", help="also write the numbers to this JSON file")
    args = parser.parse_args(argv)
    try:
        results = [roundtrip(folder, args.eval) for folder in args.vae or [bundled_model_dir() / "vae"]]
    except InputError as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return 1
    print("| VAE | clips | PSNR all / frame 0 / 1+ (dB) | shape IoU all / frame 0 / 1+ |")
    print("| --- | ---: | ---: | ---: |")
    for r in results:
        p, s = r["psnr"], r["shape_iou"]
        print(f"| {r['vae']} | {r['clips']} | {p['all']:.2f} / {p['frame0']:.2f} / {p['later']:.2f} | "
              f"{s['all']:.3f} / {s['frame0']:.3f} / {s['later']:.3f} |")
    if args.json_path:
        Path(args.json_path).write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
