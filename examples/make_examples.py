"""Regenerate the example condition media in examples/media (drawn here, deterministic).

    python examples/make_examples.py
"""

from __future__ import annotations

import math
from pathlib import Path

import imageio.v2 as imageio
import numpy as np
from PIL import Image, ImageDraw

HERE = Path(__file__).parent / "media"
HEIGHT, WIDTH = 352, 640


def meadow(ball_x: float, ball_y: float) -> Image.Image:
    image = Image.new("RGB", (WIDTH, HEIGHT))
    draw = ImageDraw.Draw(image)
    for y in range(HEIGHT):  # sky gradient, then grass
        if y < HEIGHT * 0.6:
            t = y / (HEIGHT * 0.6)
            draw.line([(0, y), (WIDTH, y)], fill=(int(90 + 80 * t), int(150 + 60 * t), 235))
        else:
            t = (y - HEIGHT * 0.6) / (HEIGHT * 0.4)
            draw.line([(0, y), (WIDTH, y)], fill=(int(60 - 20 * t), int(160 - 40 * t), int(60 - 20 * t)))
    r = 34
    draw.ellipse([ball_x - r, ball_y - r, ball_x + r, ball_y + r], fill=(210, 40, 40), outline=(120, 20, 20), width=3)
    return image


def sunset(progress: float) -> Image.Image:
    image = Image.new("RGB", (WIDTH, HEIGHT))
    draw = ImageDraw.Draw(image)
    horizon = int(HEIGHT * 0.62)
    top = np.array([250, 170, 60]) * (1 - progress) + np.array([70, 40, 110]) * progress
    bottom = np.array([255, 120, 50]) * (1 - progress) + np.array([150, 60, 120]) * progress
    for y in range(horizon):
        color = top + (bottom - top) * (y / horizon)
        draw.line([(0, y), (WIDTH, y)], fill=tuple(int(c) for c in color))
    sun_y = int(horizon - 90 + 110 * progress)
    draw.ellipse([WIDTH // 2 - 45, sun_y - 45, WIDTH // 2 + 45, sun_y + 45], fill=(255, 220, 120))
    draw.rectangle([0, horizon, WIDTH, HEIGHT], fill=(int(30 + 20 * (1 - progress)), 50, int(110 - 30 * progress)))
    return image


def pond(angle: float, ripple: float) -> Image.Image:
    image = Image.new("RGB", (WIDTH, HEIGHT), (40, 110, 140))
    draw = ImageDraw.Draw(image)
    cx, cy = WIDTH // 2 + int(120 * math.sin(angle)), HEIGHT // 2
    for k in range(4):
        radius = 40 + ripple * 60 + k * 28
        draw.ellipse([cx - radius, cy - radius * 0.4, cx + radius, cy + radius * 0.4], outline=(90, 160, 185), width=2)
    draw.polygon([(cx - 50, cy), (cx + 50, cy), (cx + 30, cy + 22), (cx - 30, cy + 22)], fill=(245, 245, 240))
    draw.polygon([(cx - 5, cy), (cx + 25, cy), (cx - 5, cy - 55)], fill=(235, 235, 228))
    return image


def main() -> None:
    HERE.mkdir(parents=True, exist_ok=True)
    meadow(110, 250).save(HERE / "ball.png")
    sunset(0.0).save(HERE / "sunset_start.png")
    sunset(1.0).save(HERE / "sunset_end.png")
    for name, (angle, ripple) in {"boat_0": (-1.2, 0.0), "boat_1": (0.0, 0.5), "boat_2": (1.2, 1.0)}.items():
        pond(angle, ripple).save(HERE / f"{name}.png")
    frames = [np.asarray(meadow(90 + 4 * i, 250 - 60 * abs(math.sin(i / 7)))) for i in range(93)]
    imageio.mimwrite(HERE / "ball.mp4", frames, fps=18, codec="libx264", quality=6, macro_block_size=16)


if __name__ == "__main__":
    main()
