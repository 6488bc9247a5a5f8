"""Long videos as a chain of windows of the model's trained length, each continuing the one before. No torch.

A video of N frames, longer than the W frames the model was trained on, is made window by window. Window 1 is
a video of its own; window k+1 keeps the last `overlap` frames of window k as conditions (a continuation mask)
and generates the rest. Every length sits on the causal VAE's temporal grid 1 + 4k: a window of 1 + 4k frames
whose first 1 + 4j frames are kept encodes them as exactly j + 1 latent frames, so the kept overlap and the
new frames never share a latent frame. The last window may be shorter (still 1 + 4k).

Conditions live on the long timeline: an image at global frame f is kept by every window that holds f (in an
overlap it replaces the frame the window before made, so a keyframe is kept exactly); a prompt line may hold
one prompt per stretch of the timeline (`SEGMENT_SEPARATOR`), and each window takes the prompt of the stretch
that holds the middle of its new frames.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from pydantic import BaseModel, ConfigDict, computed_field

from opensora_cli.schemas.masks import MaskType, mask_type_of

# The VAE's temporal compression: lengths are 1 + TEMPORAL_STRIDE * k frames.
TEMPORAL_STRIDE = 4
# Between the prompts of the stretches of a long video: "a boat drifts left ||| @120 the boat turns".
SEGMENT_SEPARATOR = "|||"
_POSITION = re.compile(r"^@(-?\d+)\s+")


def on_grid(frames: int) -> bool:
    """Whether `frames` is 1 + 4k (k >= 0)."""
    return frames >= 1 and (frames - 1) % TEMPORAL_STRIDE == 0


def default_overlap(window: int) -> int:
    """About a quarter of the window on the grid, at least 5 frames (two latent frames) where the window leaves
    4 to generate: 25 of 93, 5 of 17, 1 of 5."""
    quarter = 1 + TEMPORAL_STRIDE * max(1, round((window - 1) / (4 * TEMPORAL_STRIDE)))
    return max(1, min(quarter, window - TEMPORAL_STRIDE))


class Window(BaseModel):
    """One window of a long video.

    Attributes:
        index: 0-based place in the chain.
        start: its first frame on the long timeline.
        frames: its length (1 + 4k).
        overlap: how many leading frames it keeps from the window before (0 for the first window).
        keyframes: (frame in the window, index of the image among the line's conditions) of the images it keeps.
        prompt: the prompt of the stretch it covers.
        prompt_index: which stretch (0-based) that is.
    """

    model_config = ConfigDict(frozen=True)

    index: int
    start: int
    frames: int
    overlap: int
    keyframes: tuple[tuple[int, int], ...] = ()
    prompt: str = ""
    prompt_index: int = 0
    video_mask: MaskType | None = None  # the first window of a line with a video: the mask its generator draws

    @property
    def end(self) -> int:
        """One past its last frame on the long timeline."""
        return self.start + self.frames

    @computed_field
    @property
    def kept(self) -> list[int]:
        """The frames of the window that are conditions, sorted: the overlap and the keyframes."""
        return sorted(set(range(self.overlap)) | {frame for frame, _ in self.keyframes})

    @computed_field
    @property
    def mask_type(self) -> MaskType:
        """The mask its kept frames make (a window after the first keeps at least its overlap)."""
        if self.video_mask is not None:
            return self.video_mask
        return mask_type_of(self.kept, self.frames, leading_run=True)


@dataclass(frozen=True)
class Segment:
    """One stretch of a long video's prompt: it holds from frame `start` to the next segment's start."""

    start: int
    prompt: str


@dataclass
class WindowPlan:
    """The windows of one long video, or the problems ((what is wrong, how to fix it) pairs) that stop it."""

    num_frames: int
    windows: list[Window] = field(default_factory=list)
    segments: list[Segment] = field(default_factory=list)
    problems: list[tuple[str, str]] = field(default_factory=list)


def window_spans(num_frames: int, window: int, overlap: int) -> list[tuple[int, int]]:
    """(start, frames) of each window of an N-frame video: W-frame windows that overlap by `overlap` frames, the
    last one shorter where N needs it. N <= W gives one window of N frames.

    Raises:
        ValueError: a length off the 1 + 4k grid, or an overlap that leaves no frame to generate.
    """
    for name, value in (("frames", num_frames), ("window", window), ("overlap", overlap)):
        if not on_grid(value):
            raise ValueError(f"{name} {value} is not 1 + 4k")
    if num_frames <= window:
        return [(0, num_frames)]
    if overlap >= window:
        raise ValueError(f"overlap {overlap} leaves no new frame in a {window}-frame window")
    spans, start = [], 0
    while True:
        frames = min(window, num_frames - start)
        spans.append((start, frames))
        if start + frames == num_frames:
            return spans
        start += frames - overlap


def stretch_prompts(text: str) -> list[str]:
    """The prompt of each stretch of a prompt line, without its @frame: what the windows are encoded with (one
    prompt for a line without `SEGMENT_SEPARATOR`). No checks: see `parse_segments`."""
    parts = [part.strip() for part in text.split(SEGMENT_SEPARATOR)]
    if len(parts) == 1:
        return parts
    return [part[match.end():].strip() if (match := _POSITION.match(part)) else part for part in parts]


def parse_segments(text: str, num_frames: int) -> tuple[list[Segment], list[tuple[str, str]]]:
    """The stretches of a prompt line: `p1 ||| p2 ||| p3` splits the timeline evenly; `p1 ||| @40 p2` starts p2
    at frame 40 (then every stretch after the first needs its @frame). Returns (segments, problems)."""
    parts = [part.strip() for part in text.split(SEGMENT_SEPARATOR)]
    if len(parts) == 1:
        return [Segment(0, parts[0])], []
    starts: list[int | None] = [int(match[1]) if (match := _POSITION.match(part)) else None for part in parts]
    prompts = stretch_prompts(text)
    fix_syntax = f"write the stretches as 'first prompt {SEGMENT_SEPARATOR} @FRAME next prompt'"
    if any(not prompt for prompt in prompts):
        return [], [(f"stretch {prompts.index('') + 1} of the prompt is empty", fix_syntax)]
    if starts[0] not in (None, 0):
        return [], [(f"the first stretch starts at frame 0, not {starts[0]}", "remove its @frame")]
    given = [start is not None for start in starts[1:]]
    if any(given) and not all(given):
        return [], [("some stretches have an @frame and some do not", "give every stretch after the first its @frame")]
    if not any(given):
        starts = [round(i * num_frames / len(parts)) for i in range(len(parts))]
    starts[0] = 0
    if any(not 0 < start < num_frames for start in starts[1:]):
        bad = next(start for start in starts[1:] if not 0 < start < num_frames)
        return [], [(f"stretch start @{bad} is outside the {num_frames}-frame video",
                     f"use starts in [1, {num_frames - 1}]")]
    if any(a >= b for a, b in zip(starts, starts[1:])):
        return [], [("the stretches' @frames must increase", "order the stretches by their start frame")]
    return [Segment(start, prompt) for start, prompt in zip(starts, prompts)], []



def plan_windows(
    num_frames: int,
    window: int,
    overlap: int,
    keyframes: list[tuple[int, int]] | None = None,
    prompt: str = "",
    video_mask: MaskType | None = None,
) -> WindowPlan:
    """Plan one long video.

    Args:
        num_frames: N, the length of the whole video (1 + 4k).
        window: W, the model's trained length (1 + 4k).
        overlap: frames each window keeps from the one before (1 + 4k, below W).
        keyframes: (frame on the long timeline, index of the image among the line's conditions); negative frames
            count from the end.
        prompt: the line's prompt, one or several stretches (see `parse_segments`).
        video_mask: for a line with a video, the mask the first window draws on it (continuation by default).
    """
    plan = WindowPlan(num_frames)
    try:
        spans = window_spans(num_frames, window, overlap)
    except ValueError as exc:
        plan.problems.append((str(exc), "use frame counts of the form 1 + 4k (…, 89, 93, 97, …), the overlap below "
                                        "the window"))
        return plan
    segments, problems = parse_segments(prompt, num_frames)
    if problems:
        plan.problems.extend(problems)
        return plan
    placed = []
    for frame, condition in keyframes or []:
        if not -num_frames <= frame < num_frames:
            plan.problems.append((f"frame index {frame} is outside the {num_frames}-frame video",
                                  f"use indices in [{-num_frames}, {num_frames - 1}] (negative count from the end)"))
            return plan
        placed.append((frame % num_frames, condition))
    plan.segments = segments
    for index, (start, frames) in enumerate(spans):
        kept_overlap = overlap if index else 0
        inside = tuple((frame - start, condition) for frame, condition in placed if start <= frame < start + frames)
        middle = (start + kept_overlap + start + frames - 1) / 2  # of the frames it generates
        stretch = max(i for i, segment in enumerate(segments) if segment.start <= middle)
        plan.windows.append(Window(index=index, start=start, frames=frames, overlap=kept_overlap, keyframes=inside,
                                   prompt=segments[stretch].prompt, prompt_index=stretch,
                                   video_mask=video_mask if index == 0 else None))
    return plan
