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
from opensora_cli.schemas.defaults import RELEASED
from opensora_cli.schemas.inputs import InputItem
from opensora_cli.schemas.mask_config import MaskConfig, load_mask_config
from opensora_cli.schemas.masks import MaskType
from opensora_cli.schemas.preview import MaskPreviewRequest, MaskPreviewResult, MaskSample
from opensora_cli.schemas.problems import first_problem
from opensora_cli.schemas.windows import Window

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
    window = _window_frames(request)
    item = _check_conds(request, window) if request.conds is not None else None
    _check_frames_and_size(request, item, window)
    height, width = _size(request, item)
    windows = item.windows if item is not None else _windows(request, window)

    seed = request.seed if request.seed is not None else random.SystemRandom().randrange(2**31)
    rng = random.Random(seed)
    samples = [_draw(request, config, item, rng, windows) for _ in range(request.samples)]
    latent_shape = (VAE_STRIDE[0], latent_frame_count(request.num_frames, VAE_STRIDE[0]), height // VAE_STRIDE[1],
                    width // VAE_STRIDE[2])
    result = MaskPreviewResult(seed=seed, num_frames=request.num_frames, height=height, width=width,
                               latent_shape=latent_shape, samples=samples, out=request.out,
                               conds=item.conds if item is not None else [], windows=windows)
    if request.out is not None:
        shown = windows[0].frames if windows and item is not None and item.frame_indices is None else request.num_frames
        cond_frames = _read_condition_frames(item, shown) if item is not None else {}
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
    from opensora_cli.masks.preview import render_animation, render_still, render_windows
    from opensora_cli.utils.video import write_image, write_video

    if out.suffix.lower() == ".png":
        render = render_windows if result.windows else render_still
        write_image(out, np.asarray(render(result, cond_frames)))
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


def _window_frames(request: MaskPreviewRequest) -> int | None:
    """The trained length that windows a long video: the model's (None: unknown), else the released model's."""
    if request.model is None:
        return RELEASED["num_frames"]
    from opensora_cli.services.model_folders import model_defaults, trained_frames

    if not Path(request.model).is_dir():
        raise InputError(f"--model: '{request.model}' is not a folder — pass a model folder")
    return trained_frames(request.model, model_defaults(request.model))


def _windows(request: MaskPreviewRequest, window: int | None) -> list[Window] | None:
    """The windows of a long video without conditions (a line's come from its check)."""
    from opensora_cli.schemas.windows import default_overlap, plan_windows

    if window is None or request.num_frames <= window:
        return None
    overlap = request.overlap if request.overlap is not None else default_overlap(window)
    plan = plan_windows(request.num_frames, window, overlap)
    if plan.problems:
        what, fix = plan.problems[0]
        raise InputError(f"--overlap: {what} — {fix}")
    return plan.windows


def _check_conds(request: MaskPreviewRequest, window: int | None) -> InputItem:
    """Read the conditions (a line, or line `request.line` of a .txt file) and check them like validate-inputs."""
    from opensora_cli.services.validation import LineChecker, length_problems, build_request, read_lines

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
                                          height=request.height, width=request.width, crop_for_hw=fixed,
                                          trained_frames=window, overlap=request.overlap))
    problems += length_problems(inputs)
    if problems:
        _raise_problems(problems)
    items, problems, _ = LineChecker(inputs, label, base).check([(number, "", text)])
    if problems:
        _raise_problems(problems)
    return items[0]


def _check_frames_and_size(request: MaskPreviewRequest, item: InputItem | None, window: int | None) -> None:
    if item is not None:
        return  # checked with the line
    from opensora_cli.services.validation import length_problems, build_request

    inputs, problems = build_request(dict(prompts=Path("-"), num_frames=request.num_frames, height=request.height,
                                          width=request.width, trained_frames=window, overlap=request.overlap))
    problems += length_problems(inputs)
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


def _draw(request: MaskPreviewRequest, config: MaskConfig | None, item: InputItem | None, rng,
          windows: list[Window] | None) -> MaskSample:
    frames = request.num_frames
    if windows and (item is None or item.frame_indices is None):
        # A long video keeps its keyframes and, from a video, what its first window draws; the rest is generated.
        mask_type = item.mask_type if item is not None else request.mask_type or MaskType.t2iv
        first = [1] * windows[0].frames
        if mask_type != MaskType.t2iv:
            first = frame_pattern(mask_type, windows[0].frames, rng, min_clear_ratio=INFERENCE_CLEAR_RATIO,
                                  max_clear_ratio=INFERENCE_CLEAR_RATIO)
        pattern = first + [1] * (frames - len(first))
        return MaskSample(mask_type=mask_type, frames=pattern, latent_mask=compress_pattern(pattern, VAE_STRIDE[0]))
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
