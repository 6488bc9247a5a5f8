"""Pictures of masks for people: a labelled grid or the frames of an animation. numpy + Pillow, no torch, no files.

Kept frames are framed in green and show the conditioning image or video frame when one is given; frames to
generate are grey with diagonal stripes. Under each mask a row shows the latent mask: one box per latent
frame, split into its channels (one per pixel frame the latent frame encodes).
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from opensora_cli.masks.patterns import kept_indices
from opensora_cli.schemas.preview import MaskPreviewResult, MaskSample

BACKGROUND = (24, 24, 28)
KEEP = (46, 160, 67)
GENERATE = (68, 68, 76)
STRIPE = (92, 92, 102)
TEXT = (235, 235, 235)
MUTED = (150, 150, 160)
_PAD = 6


@lru_cache(maxsize=4)
def _font(size: int) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow without FreeType: fixed-size bitmap font
        return ImageFont.load_default()


def _fit(frame: np.ndarray, width: int, height: int) -> Image.Image:
    """Centre-crop to width:height and resize."""
    image = Image.fromarray(frame)
    src_w, src_h = image.size
    if src_w * height > src_h * width:
        crop_w = max(1, round(src_h * width / height))
        left = (src_w - crop_w) // 2
        image = image.crop((left, 0, left + crop_w, src_h))
    else:
        crop_h = max(1, round(src_w * height / width))
        top = (src_h - crop_h) // 2
        image = image.crop((0, top, src_w, top + crop_h))
    return image.resize((width, height), Image.Resampling.BILINEAR)


def _cell(keep: bool, width: int, height: int, frame: np.ndarray | None, label: str | None) -> Image.Image:
    if keep and frame is not None:
        cell = _fit(frame, width, height)
    else:
        cell = Image.new("RGB", (width, height), KEEP if keep else GENERATE)
        if not keep:
            draw = ImageDraw.Draw(cell)
            for x in range(-height, width, 6):
                draw.line([(x, height), (x + height, 0)], fill=STRIPE, width=2)
    draw = ImageDraw.Draw(cell)
    border = max(1, min(width, height) // 24)
    draw.rectangle([0, 0, width - 1, height - 1], outline=KEEP if keep else BACKGROUND, width=border)
    if label and width >= 28 and height >= 14:
        font = _font(max(9, min(14, height // 4)))
        box = draw.textbbox((3, 2), label, font=font)
        draw.rectangle([box[0] - 2, box[1] - 1, box[2] + 2, box[3] + 1], fill=BACKGROUND)
        draw.text((3, 2), label, fill=TEXT, font=font)
    return cell


def _latent_row(sample: MaskSample, stripe: int, height: int) -> Image.Image:
    """One box per latent frame, split into channels: green = kept, grey = to generate, mixed = blend."""
    channels = len(sample.latent_mask[0])
    box_w = stripe * channels
    row = Image.new("RGB", (len(sample.latent_mask) * (box_w + 2), height), BACKGROUND)
    draw = ImageDraw.Draw(row)
    for j, values in enumerate(sample.latent_mask):
        x0 = j * (box_w + 2)
        for c, value in enumerate(values):
            color = tuple(int(round(k * (1 - value) + g * value)) for k, g in zip(KEEP, GENERATE))
            draw.rectangle([x0 + c * stripe, 0, x0 + (c + 1) * stripe - 1, height - 1], fill=color)
    return row


def _summary(sample: MaskSample) -> str:
    kept = kept_indices(sample.frames)
    shown = ",".join(map(str, kept[:12])) + ("..." if len(kept) > 12 else "")
    return f"{sample.mask_type}: keeps {len(kept)}/{len(sample.frames)} frames" + (f" [{shown}]" if kept else "")


def render_still(result: MaskPreviewResult, cond_frames: dict[int, np.ndarray]) -> Image.Image:
    """A labelled grid: one block per sample (all frames), each with its latent row.

    Args:
        result: the masks drawn, with their frame count, size and latent shape.
        cond_frames: pixel frame index -> RGB uint8 (H, W, 3) shown in that kept frame (any size: centre-cropped
            to the frame's aspect and resized); kept frames without one are plain green.

    Returns:
        An RGB image.
    """
    frames, many = result.num_frames, len(result.samples) > 1
    columns = frames if many else min(frames, 16)
    cell_w = max(10, min(40, 1600 // frames)) if many else 96
    cell_h = max(12 if many else 24, round(cell_w * result.height / result.width))
    rows_per_sample = -(-frames // columns)
    grid_w = columns * (cell_w + 2)
    stripe = max(2, min(cell_w // 4, (grid_w // result.latent_shape[1] - 2) // result.latent_shape[0]))
    latent_h = 12
    title_font, text_font = _font(16), _font(12)
    block_h = 18 + rows_per_sample * (cell_h + 2) + latent_h + 18
    width = max(_PAD * 2 + grid_w, _PAD * 2 + result.latent_shape[1] * (stripe * result.latent_shape[0] + 2), 480)
    canvas = Image.new("RGB", (width, 34 + block_h * len(result.samples)), BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    c, t, h, w = result.latent_shape
    draw.text((_PAD, 8), f"{frames} frames, {result.height}x{result.width}, latent {c}x{t}x{h}x{w}, seed "
              f"{result.seed}   (green = kept, grey = generated)", fill=TEXT, font=title_font)
    y = 34
    for number, sample in enumerate(result.samples, start=1):
        draw.text((_PAD, y), (f"{number}. " if many else "") + _summary(sample), fill=TEXT, font=text_font)
        y += 18
        for index, value in enumerate(sample.frames):
            row, col = divmod(index, columns)
            label = None if many else str(index)
            cell = _cell(value == 0, cell_w, cell_h, cond_frames.get(index), label)
            canvas.paste(cell, (_PAD + col * (cell_w + 2), y + row * (cell_h + 2)))
        y += rows_per_sample * (cell_h + 2)
        canvas.paste(_latent_row(sample, stripe, latent_h), (_PAD, y + 2))
        if number == len(result.samples):
            draw.text((_PAD, y + latent_h + 3), "latent frames (one box each, one stripe per channel)", fill=MUTED,
                      font=_font(10))
        y += latent_h + 18
    return canvas


def render_animation(result: MaskPreviewResult, cond_frames: dict[int, np.ndarray]) -> list[Image.Image]:
    """One picture per pixel frame: each sample's frame, big, over a timeline with the current frame marked.

    Args:
        result, cond_frames: as for `render_still`.

    Returns:
        `result.num_frames` RGB images of one size, a multiple of 16 on both sides.
    """
    cell_w = 320
    cell_h = max(32, round(cell_w * result.height / result.width))
    tick = max(2, min(8, (cell_w - 2 * _PAD) // result.num_frames))
    block_h = 20 + cell_h + 16
    width = max(cell_w, result.num_frames * tick) + 2 * _PAD
    height = block_h * len(result.samples) + _PAD
    width, height = -(-width // 16) * 16, -(-height // 16) * 16  # video encoders want multiples of 16
    pictures = []
    for index in range(result.num_frames):
        canvas = Image.new("RGB", (width, height), BACKGROUND)
        draw = ImageDraw.Draw(canvas)
        y = _PAD
        for sample in result.samples:
            keep = sample.frames[index] == 0
            state = "kept (condition)" if keep else "generated"
            draw.text((_PAD, y), f"{sample.mask_type}  frame {index}/{result.num_frames - 1}: {state}", fill=TEXT,
                      font=_font(13))
            canvas.paste(_cell(keep, cell_w, cell_h, cond_frames.get(index), None), (_PAD, y + 18))
            bar_y = y + 20 + cell_h + 2
            for j, value in enumerate(sample.frames):
                x = _PAD + j * tick
                draw.rectangle([x, bar_y, x + tick - 1, bar_y + 8], fill=KEEP if value == 0 else GENERATE)
            x = _PAD + index * tick
            draw.rectangle([x, bar_y - 2, x + tick - 1, bar_y + 10], outline=TEXT, width=1)
            y += block_h
        pictures.append(canvas)
    return pictures


OVERLAP = (52, 120, 170)


def render_windows(result: MaskPreviewResult, cond_frames: dict[int, np.ndarray]) -> Image.Image:
    """A long video's windows on its timeline: one row per window, one cell per frame (blue = kept from the
    window before, green = a keyframe, showing its image where `cond_frames` has one, grey = generated).

    Args:
        result: a preview with `windows`.
        cond_frames: long-timeline frame index -> RGB uint8 (H, W, 3), as for `render_still`.
    """
    windows, frames = result.windows, result.num_frames
    cell_w = max(4, min(24, 1600 // frames))
    cell_h = max(8, round(cell_w * result.height / result.width))
    width = max(2 * _PAD + frames * cell_w, 480)
    canvas = Image.new("RGB", (width, 34 + len(windows) * (cell_h + 22) + 18), BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    draw.text((_PAD, 8), f"{frames} frames in {len(windows)} windows of {windows[0].frames}, {result.height}x"
              f"{result.width}   (blue = kept from the window before, green = keyframe, grey = generated)",
              fill=TEXT, font=_font(14))
    y = 34
    for window in windows:
        draw.text((_PAD, y), f"window {window.index + 1}: frames {window.start}-{window.end - 1}, "
                  f"{window.mask_type}" + (f", \"{window.prompt}\"" if window.prompt else ""), fill=TEXT,
                  font=_font(11))
        y += 16
        keyframes = {window.start + f for f, _ in window.keyframes}
        for frame in range(window.start, window.end):
            x = _PAD + frame * cell_w
            if frame in keyframes:
                cell = _cell(True, cell_w, cell_h, cond_frames.get(frame), None)
            elif frame < window.start + window.overlap:
                cell = Image.new("RGB", (cell_w, cell_h), OVERLAP)
            else:
                cell = _cell(False, cell_w, cell_h, None, None)
            canvas.paste(cell, (x, y))
        y += cell_h + 6
    ruler = ImageDraw.Draw(canvas)
    for frame in range(0, frames, 10 if frames <= 200 else 50):
        ruler.text((_PAD + frame * cell_w, y), str(frame), fill=MUTED, font=_font(10))
    return canvas
