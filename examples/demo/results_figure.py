"""Draw the README's picture of the demo model's outputs: one row per video, every other frame.

    python examples/demo/results_figure.py samples examples/demo/results.png
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import decord
import numpy as np
from PIL import Image, ImageDraw


def main(samples: Path, out: Path) -> None:
    rows = []
    for sidecar in sorted(samples.glob("*.json")):
        meta = json.loads(sidecar.read_text())
        frames = decord.VideoReader(str(samples / meta["video"])).get_batch(list(range(meta["num_frames"]))).asnumpy()
        strip = np.concatenate([np.pad(f, ((0, 0), (0, 2), (0, 0))) for f in frames[::2]], axis=1)
        label = Image.new("RGB", (strip.shape[1], 14), (20, 20, 24))
        ImageDraw.Draw(label).text((2, 1), f"{meta['mask_type']}: {meta['prompt']}", fill=(230, 230, 230))
        rows.append(np.concatenate([np.asarray(label), strip, np.full((4, strip.shape[1], 3), 20, np.uint8)]))
    Image.fromarray(np.concatenate(rows)).save(out)
    print(f"wrote {out}")


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
