"""mask-preview: draw masks the way sampling (or, with a mask config, training) would, and picture them.

No torch: the frame patterns come from `masks.patterns`, the same code the tensor masks are built from. The
pictures are drawn by `masks.preview`; reading the conditioning media and writing the file happen here.
"""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
from pydantic import ValidationError

from opensora_cli.errors import InputError, UsageError
from opensora_cli.masks.patterns import (
    INFERENCE_CLEAR_RATIO,
    choose_mask_type,
    compress_pattern,
    frame_pattern,
    latent_frame_count,
    pattern_from_indices,
)
from opensora_cli.schemas.inputs import InputItem
from opensora_cli.schemas.mask_config import MaskConfig, load_mask_config
from opensora_cli.schemas.masks import MaskType
from opensora_cli.schemas.preview import MaskPreviewRequest, MaskPreviewResult, MaskSample
from opensora_cli.schemas.problems import first_problem

DEFAULT_PREVIEW_SIZE = (352, 640)
VAE_STRIDE = (4, 8, 8)
ANIMATION_FPS = 8
# x264 at CRF 10: the flat colours and thin lines of the drawing stay sharp.
ANIMATION_CRF = 10


def preview_masks(options: dict) -> MaskPreviewResult:
    """Draw `samples` masks and, with `out`, write a picture of them.

    Raises:
        UsageError: no mask type and nothing to take one from.
        InputError: an invalid option value, mask config or conditions line (the first problem, with a count).
    """
    try:
        request = MaskPreviewRequest.model_validate(options)
    except ValidationError as exc:
        raise InputError(first_problem(exc)) from None
    if request.mask_type is None and request.mask_config is None and request.conds is None:
        raise UsageError("give --mask-type, or --conds or --mask-config to take mask types from")

    config = _load_config(request.mask_config)
    item = _check_conds(request) if request.conds is not None else None
    _check_frames_and_size(request, item)
    height, width = _size(request, item)

    seed = request.seed if request.seed is not None else random.SystemRandom().randrange(2**31)
    rng = random.Random(seed)
    samples = [_draw(request, config, item, rng) for _ in range(request.samples)]
    latent_shape = (VAE_STRIDE[0], latent_frame_count(request.num_frames, VAE_STRIDE[0]), height // VAE_STRIDE[1],
                    width // VAE_STRIDE[2])
    result = MaskPreviewResult(seed=seed, num_frames=request.num_frames, height=height, width=width,
                               latent_shape=latent_shape, samples=samples, out=request.out,
                               conds=item.conds if item is not None else [])
    if request.out is not None:
        cond_frames = _read_condition_frames(item, request.num_frames) if item is not None else {}
        _write_preview(result, cond_frames, request.out)
    return result


def _read_condition_frames(item: InputItem, num_frames: int) -> dict[int, np.ndarray]:
    """Pixel frame index -> RGB uint8 (H, W, 3) for the frames a conditions line provides."""
    from opensora_cli.data.media import read_image, read_video

    if not item.conds:
        return {}
    if item.frame_indices is None:  # a video: its first num_frames frames
        return dict(enumerate(read_video(item.conds[0], num_frames)))
    return {index: read_image(path) for index, path in zip(item.frame_indices, item.conds)}


def _write_preview(result: MaskPreviewResult, cond_frames: dict[int, np.ndarray], out: Path) -> None:
    """Write `out` atomically: .png a still grid, .gif / .mp4 an animation at ANIMATION_FPS."""
    from opensora_cli.masks.preview import render_animation, render_still
    from opensora_cli.utils.video import write_image, write_video

    if out.suffix.lower() == ".png":
        write_image(out, np.asarray(render_still(result, cond_frames)))
    else:
        frames = np.stack([np.asarray(picture) for picture in render_animation(result, cond_frames)])
        write_video(out, frames, ANIMATION_FPS, crf=ANIMATION_CRF)


def _load_config(path: Path | None) -> MaskConfig | None:
    if path is None:
        return None
    config, problems, _ = load_mask_config(path)
    if problems:
        _raise_problems(problems)
    return config


def _raise_problems(problems) -> None:
    more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
    raise InputError(problems[0].render() + more)


def _check_conds(request: MaskPreviewRequest) -> InputItem:
    """Read the conditions (a line, or line `request.line` of a .txt file) and check them like validate-inputs."""
    from opensora_cli.services.validation import LineChecker, build_request, read_lines

    text, label, base, number = request.conds, "--conds", Path.cwd(), 1
    candidate = Path(request.conds).expanduser()
    if candidate.suffix.lower() == ".txt":
        lines, problems = read_lines(candidate, "--conds")
        if problems:
            _raise_problems(problems)
        if request.line > len(lines):
            raise InputError(f"{candidate}: has {len(lines)} line(s), --line {request.line} asked for")
        text, label, base, number = lines[request.line - 1], str(candidate), candidate.parent, request.line
    fixed = request.height is not None or request.width is not None
    inputs, problems = build_request(dict(prompts=Path("-"), mask_type=request.mask_type, num_frames=request.num_frames,
                                          height=request.height, width=request.width, crop_for_hw=fixed))
    if problems:
        _raise_problems(problems)
    items, problems, _ = LineChecker(inputs, label, base).check([(number, "", text)])
    if problems:
        _raise_problems(problems)
    return items[0]


def _check_frames_and_size(request: MaskPreviewRequest, item: InputItem | None) -> None:
    if item is not None:
        return  # checked with the line
    from opensora_cli.services.validation import build_request

    _, problems = build_request(dict(prompts=Path("-"), num_frames=request.num_frames, height=request.height,
                                     width=request.width))
    if problems:
        _raise_problems(problems)
    if (request.height is None) != (request.width is None):
        raise UsageError("give both --height and --width, or neither")


def _size(request: MaskPreviewRequest, item: InputItem | None) -> tuple[int, int]:
    if request.height is not None and request.width is not None:
        return request.height, request.width
    if item is not None and item.output_size is not None:
        return item.output_size
    return DEFAULT_PREVIEW_SIZE


def _draw(request: MaskPreviewRequest, config: MaskConfig | None, item: InputItem | None, rng) -> MaskSample:
    frames = request.num_frames
    if item is not None and item.frame_indices is not None and item.mask_type != MaskType.t2iv:
        mask_type, pattern = item.mask_type, pattern_from_indices(frames, item.frame_indices)
    else:
        if item is not None:
            mask_type = item.mask_type
        elif request.mask_type is not None:
            mask_type = request.mask_type
        else:
            ratios = config.image_ratios() if frames == 1 else config.video_ratios()
            mask_type = choose_mask_type(ratios, rng)
        low = config.min_clear_ratio if config is not None else INFERENCE_CLEAR_RATIO
        high = config.max_clear_ratio if config is not None else INFERENCE_CLEAR_RATIO
        pattern = frame_pattern(mask_type, frames, rng, min_clear_ratio=low, max_clear_ratio=high)
    return MaskSample(mask_type=mask_type, frames=pattern, latent_mask=compress_pattern(pattern, VAE_STRIDE[0]))
