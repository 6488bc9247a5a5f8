"""Long videos: a line's windows (`schemas.windows`) made one after another into one mp4.

Window 1 is generated like a short video; window k+1 gets the last `overlap` frames window k made (its uint8
pixels) as kept frames at its start, plus the line's keyframes that fall inside it. Each window's colours are
matched to the frames it kept, then pulled part of the way to the first window's colour statistics (`--adain`),
and the video cross-fades from window k to window k+1 over their overlap (see `benchmarks/long_video.py` for
what each does to the joins). Each window's frames are encoded as soon as it
finishes, into an mp4 part in `.<video>.windows/` (with the request that made them); the
video is the parts joined without encoding again. So a long video never has to fit in memory, and a killed run
resumes at the first unfinished window and writes the same bytes as a run that was never stopped.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from opensora_cli.schemas.sample import Job, SampleRequest, SampleResult
from opensora_cli.schemas.windows import Window
from opensora_cli.utils.io import atomic_path
from opensora_cli.utils.seeds import stable_seed


def window_seed(seed: int, index: int) -> int:
    """The seed of window `index` of an output whose seed is `seed`: the first window keeps it (so a long video
    starts as the short one does); the others derive from it and their index alone."""
    return seed if index == 0 else stable_seed(seed, index, namespace="opensora-cli-window")


def window_records(windows: list[Window], seed: int, adain: float) -> list[dict[str, Any]]:
    """What the sidecar records of each window: enough to make any window again on its own (`adain`: how far
    its colours were pulled to the first window's; the first is the reference, 0)."""
    return [{"index": w.index, "start": w.start, "frames": w.frames, "overlap": w.overlap,
             "keyframes": [list(k) for k in w.keyframes], "kept_frames": w.kept, "mask_type": str(w.mask_type),
             "prompt": w.prompt, "seed": window_seed(seed, w.index), "adain": adain if w.index else 0.0}
            for w in windows]


class WindowStore:
    """The finished windows of one long video, kept beside it until the video is complete: each window's new
    frames as an mp4 part (encoded as the window finishes), the newest window's frames as pixels (the next
    window keeps its last frames), and the first window's colour statistics (the later ones are pulled to them).

    Args:
        video: the output video; the store is the hidden folder `.<stem>.windows` next to it.
        request: the output's request (its sidecar's); windows made with another request are not reused.
    """

    def __init__(self, video: Path, request: dict[str, Any]) -> None:
        self.folder = video.parent / f".{video.stem}.windows"
        self.request = request

    def part(self, index: int) -> Path:
        return self.folder / f"part-{index:04d}.mp4"

    def _pixels(self, index: int) -> Path:
        return self.folder / f"window-{index:04d}.npy"

    def _reference(self) -> Path:
        return self.folder / "reference.npy"

    def finished(self) -> tuple[int, list[int]]:
        """(how many leading windows are done for this request, the frames the first one kept); a store of
        another request is removed."""
        try:
            meta = json.loads((self.folder / "request.json").read_text())
        except (OSError, ValueError):
            meta = {}
        if meta.get("request") != json.loads(json.dumps(self.request)):
            self.remove()
            return 0, []
        count = 0
        while self.part(count).is_file():
            count += 1
        while count and not self._pixels(count - 1).is_file():  # (stopped between a part and its pixels)
            count -= 1
        return count, meta.get("first_kept", [])

    def save(self, window: Window, frames: np.ndarray, part: np.ndarray, kept: list[int], fps: float) -> None:
        """Keep a finished window: its frames (T, H, W, 3) uint8 as pixels, then its new frames as an mp4 part;
        each file is written whole or not at all, and the pixels of the window before are let go."""
        from opensora_cli.utils.video import write_video

        self.folder.mkdir(parents=True, exist_ok=True)
        if window.index == 0:
            with atomic_path(self._reference()) as tmp, open(tmp, "wb") as file:
                np.save(file, colour_statistics(frames))
            with atomic_path(self.folder / "request.json") as tmp:
                tmp.write_text(json.dumps({"request": self.request, "first_kept": kept}))
        with atomic_path(self._pixels(window.index)) as tmp, open(tmp, "wb") as file:
            np.save(file, frames)
        write_video(self.part(window.index), part, fps)
        self._pixels(window.index - 1).unlink(missing_ok=True)

    def pixels(self, index: int) -> np.ndarray:
        return np.load(self._pixels(index))

    def reference(self) -> np.ndarray:
        return np.load(self._reference())

    def remove(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


def generate(make_window: Callable[[Window, list, list[int] | None, int], tuple[np.ndarray, list[int]]], job: Job,
             request: SampleRequest, writer: bool,
             resume_from: Callable[[int, list[int]], tuple[int, list[int]]] | None = None) -> SampleResult:
    """Make a long video window by window, then join the windows' parts into `job.video`.

    Args:
        make_window: (window, conditions, frame indices, seed) -> (frames (T, H, W, 3) uint8, kept frames): one
            pipeline call.
        job: the output; `job.item.windows` are its windows.
        writer: this process writes the store and the video (False: another rank of --sp does).
        resume_from: maps this process's (finished windows, first window's kept frames) to those every process
            uses (--sp: rank 0's, which reads the store).

    Returns:
        The result (its `kept_frames` are the long timeline's conditions: the line's keyframes, and for a video
        the frames the first window kept).
    """
    from opensora_cli.utils.video import concat_videos

    windows = job.item.windows or []
    store = WindowStore(job.video, job.request)
    done, first_kept = store.finished() if writer else (0, [])
    if resume_from is not None:
        done, first_kept = resume_from(done, first_kept)
    started = time.perf_counter()
    previous = store.pixels(done - 1) if done else None
    reference = store.reference() if done else None
    for window in windows[done:]:
        conditions, indices = _window_conditions(window, job, previous)
        frames, kept = make_window(window, conditions, indices, window_seed(job.seed, window.index))
        if previous is not None:
            frames = match_colours(frames, previous[len(previous) - window.overlap:], window.overlap)
            frames = anchor_colours(frames, reference, request.window_adain)
        if window.index == 0:
            first_kept, reference = kept, colour_statistics(frames)
        if writer:
            store.save(window, frames, _part(window, windows, frames, previous), kept, request.fps)
        previous = frames
    if writer:
        concat_videos([store.part(w.index) for w in windows], job.video)
        store.remove()
    seconds = time.perf_counter() - started
    timeline_kept = sorted(set(first_kept) | {w.start + f for w in windows for f, _ in w.keyframes})
    return SampleResult(line=job.item.line, sample=job.sample, prompt=job.item.prompt, video=job.video,
                        sidecar=job.sidecar, seed=job.seed, mask_type=str(job.item.mask_type or windows[0].mask_type),
                        kept_frames=timeline_kept, seconds=seconds,
                        seconds_per_step=seconds / (request.steps * max(1, len(windows) - done)))


def _part(window: Window, windows: list[Window], frames: np.ndarray, previous: np.ndarray | None) -> np.ndarray:
    """The frames of the long video that a window writes: a cross-fade over its overlap from the window before's
    frames to its own (so the hand-over is spread over the overlap instead of one jump), then its own frames up
    to where the next window's overlap begins (the next one fades those in)."""
    following = windows[window.index + 1].overlap if window.index + 1 < len(windows) else 0
    body = frames[window.overlap:len(frames) - following]
    if previous is None:
        return body
    tail = previous[len(previous) - window.overlap:].astype(np.float64)
    weight = (np.arange(1, window.overlap + 1) / (window.overlap + 1)).reshape(-1, 1, 1, 1)
    faded = np.rint(tail * (1 - weight) + frames[:window.overlap] * weight).astype(np.uint8)
    return np.concatenate([faded, body])


def _window_conditions(window: Window, job: Job, previous: np.ndarray | None) -> tuple[list, list[int] | None]:
    """A window's conditions and their frames: the overlap (the window before's last frames, except where a
    keyframe stands) and its keyframes. The first window takes the line's video, or its keyframes."""
    conds = job.item.conds
    if window.index == 0 and window.video_mask is not None:
        return list(conds), None  # a video: the mask type draws what is kept, as for a short video
    keyframes = dict(window.keyframes)
    overlap = [] if previous is None else [(f, previous[len(previous) - window.overlap + f])
                                            for f in range(window.overlap) if f not in keyframes]
    items = sorted(overlap + [(f, conds[c]) for f, c in keyframes.items()], key=lambda pair: pair[0])
    return [item for _, item in items], [f for f, _ in items]


def match_colours(frames: np.ndarray, kept: np.ndarray, overlap: int) -> np.ndarray:
    """A window's frames with its colours brought back to the frames it kept.

    The window was generated from the overlap frames it kept, yet what it makes of them comes out shifted (the
    VAE's round trip and the denoising move the colours a little); that shift carries into its new frames and,
    window after window, adds up. Per channel, the gain and offset that map the window's own version of the
    overlap onto the kept pixels are applied to all its frames.

    Args:
        frames: the window's frames (T, H, W, 3) uint8.
        kept: the frames it kept at its start (overlap, H, W, 3) uint8.
    """
    made = frames[:overlap].reshape(-1, 3).astype(np.float64)
    target = kept.reshape(-1, 3).astype(np.float64)
    gain = target.std(axis=0) / np.maximum(made.std(axis=0), 1e-6)
    offset = target.mean(axis=0) - gain * made.mean(axis=0)
    return np.clip(np.rint(frames.astype(np.float64) * gain + offset), 0, 255).astype(np.uint8)


def colour_statistics(frames: np.ndarray) -> np.ndarray:
    """(2, 3) float64: the per-channel mean and standard deviation of (T, H, W, 3) frames."""
    pixels = frames.reshape(-1, 3).astype(np.float64)
    return np.stack([pixels.mean(axis=0), pixels.std(axis=0)])


def anchor_colours(frames: np.ndarray, reference: np.ndarray, factor: float) -> np.ndarray:
    """A later window's frames pulled `factor` of the way to the first window's colour statistics (AdaIN).

    Matching each window to the frames it kept stops a jump at the joins but not a slow creep: the model moves
    the colours a little within every window (on the demo model the background turns greener, window after
    window), and the next window keeps that. Re-normalising each channel to the first window's mean and
    deviation anchors the whole video to one palette; `factor` < 1 leaves room for colours the prompt changes
    on purpose (LTX-Video's looping sampler does the same on latents, with a factor).

    Args:
        frames: the window's frames (T, H, W, 3) uint8.
        reference: `colour_statistics` of the first window.
        factor: 0 leaves the frames as they are; 1 gives them the reference's statistics.
    """
    if factor == 0:
        return frames
    mean, std = colour_statistics(frames)
    pixels = frames.astype(np.float64)
    normalised = (pixels - mean) / np.maximum(std, 1e-6) * reference[1] + reference[0]
    return np.clip(np.rint(pixels + factor * (normalised - pixels)), 0, 255).astype(np.uint8)
