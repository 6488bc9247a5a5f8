"""Which mask a line's inputs make: its mask type and, for images, the frames they are kept at. No torch.

Shared by `validate-inputs` (which reports the problems with file and line) and the sampling pipeline (which
raises on them), so both always agree.

Defaults, as the reference: no input -> t2iv; one image -> i2v (frame 0); two images -> transition (first and
last frames); a video -> continuation. Three or more images need `@N` indices; images with indices make
random_temporal unless their frames are exactly those of i2v, transition or clear. An explicit mask type must
fit the inputs (the reference silently ignored it for images).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from opensora_cli.schemas.masks import MaskType, mask_type_of


@dataclass
class LinePlan:
    """The outcome: `problems` holds (what is wrong, how to fix it) pairs; empty when the plan is usable.

    `frame_indices` are the kept pixel frames (0-based) for image inputs, [] for text only, None for a video
    (its mask is drawn by the mask type's generator) or when the inputs are unusable.
    """

    mask_type: MaskType | None
    frame_indices: list[int] | None
    problems: list[tuple[str, str]] = field(default_factory=list)


def plan_line(
    kinds: Sequence[str | None],
    indices: Sequence[int | None],
    mask_type: MaskType | str | None,
    num_frames: int | None,
) -> LinePlan:
    """Plan one line.

    Args:
        kinds: per input "image", "video", or None (unsupported file).
        indices: per input its `@N` frame index, or None.
        mask_type: the requested type, or None for the default from the inputs.
        num_frames: T, or None when unknown (index checks are then skipped).
    """
    requested = MaskType(mask_type) if mask_type is not None else None
    problems: list[tuple[str, str]] = []

    def fail(what: str, fix: str, planned: MaskType | None = requested) -> LinePlan:
        problems.append((what, fix))
        return LinePlan(planned, None, problems)

    if not kinds:
        if requested not in (None, MaskType.t2iv):
            return fail(f"mask type {requested} needs conditions, this line has none",
                        "add images or a video to the line, or use --mask-type t2iv")
        return LinePlan(MaskType.t2iv, [], problems)
    if "video" in kinds:
        if len(kinds) > 1:
            problems.append(("a video must be alone on its line", "put images and videos on separate lines"))
        if any(i is not None for i in indices):
            problems.append(("a frame index (@N) applies to images only", "remove the @N after the video"))
        if requested == MaskType.t2iv:
            problems.append(("t2iv keeps no frames, but the line has a video",
                             "remove the video or choose another --mask-type"))
        return LinePlan(requested or MaskType.continuation, None, problems)
    if None in kinds:
        return LinePlan(requested, None, problems)

    # Images: explicit indices, or defaults by count and type.
    count = len(kinds)
    if any(i is not None for i in indices) and any(i is None for i in indices):
        return fail("some images have a frame index and some do not",
                    "give every image an index (a.png@0,b.png@40) or none")
    if num_frames is None:
        return LinePlan(requested, None, problems)
    if requested == MaskType.t2iv:
        return fail("t2iv keeps no frames, but the line has images", "remove the images or choose another --mask-type")
    if indices[0] is not None:
        out_of_range = [i for i in indices if not -num_frames <= i < num_frames]
        if out_of_range:
            return fail(f"frame index {out_of_range[0]} is outside a {num_frames}-frame video",
                        f"use indices in [{-num_frames}, {num_frames - 1}] (negative count from the end)")
        kept = [i % num_frames for i in indices]
    else:
        kept = _default_indices(requested, count, num_frames)
        if kept is None:
            what = f"{count} images" if requested is None else f"mask type {requested} with {count} images"
            return fail(f"{what} need frame indices", "write each image as path@frame, e.g. a.png@0,b.png@40,c.png@92")
    if len(set(kept)) != len(kept):
        return fail(f"two images go to the same frame ({', '.join(map(str, kept))})",
                    "give each image its own frame index")
    fitted = requested or mask_type_of(kept, num_frames)
    message = _mismatch(fitted, kept, num_frames)
    if message:
        problems.append((message, "change the images or their @frame indices, or choose another --mask-type"))
    return LinePlan(fitted, kept, problems)


def _default_indices(mask_type: MaskType | None, count: int, frames: int) -> list[int] | None:
    """Frame indices for images written without @N, or None when they must be given."""
    if mask_type is None:
        return [0] if count == 1 else [0, frames - 1] if count == 2 else None
    if mask_type == MaskType.transition and count == 2:
        return [0, frames - 1]
    if mask_type in (MaskType.i2v, MaskType.transition, MaskType.continuation, MaskType.clear):
        return list(range(count))  # in order from frame 0; `_mismatch` says when that cannot fit the type
    return None  # random_temporal: where the images go is the user's choice


def _mismatch(mask_type: MaskType, indices: list[int], frames: int) -> str | None:
    """Why images at `indices` do not make a `mask_type` mask, or None when they do."""
    kept = sorted(indices)
    shown = ", ".join(map(str, kept))
    rules = {
        MaskType.i2v: (kept == [0], "i2v keeps frame 0 only: give exactly one image at frame 0"),
        MaskType.transition: (
            kept == sorted({0, frames - 1}) and len(kept) == 2,
            f"transition keeps the first and last frames: give two images, at 0 and {frames - 1}",
        ),
        MaskType.continuation: (
            kept == list(range(len(kept))),
            "continuation keeps a leading run of frames: give images at 0, 1, 2, ...",
        ),
        MaskType.clear: (kept == list(range(frames)), f"clear keeps every frame: give {frames} images or a video"),
        MaskType.random_temporal: (True, ""),
    }
    fits, why = rules[mask_type]
    return None if fits else f"{why} (got frames {shown})"
