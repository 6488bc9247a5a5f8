"""Window planning of long videos (schemas/windows.py): lengths and overlaps on the VAE's 1 + 4k grid, keyframes on
the long timeline, the end image in the last window, prompts per stretch."""

from __future__ import annotations

import pytest

from opensora_cli.schemas.windows import (
    Segment,
    default_overlap,
    on_grid,
    parse_segments,
    plan_windows,
    window_spans,
)
from opensora_cli.schemas.masks import MaskType


@pytest.mark.parametrize("num_frames", [17, 29, 45, 93, 97, 161, 173, 929, 1001])
@pytest.mark.parametrize("window,overlap", [(17, 5), (17, 1), (93, 25), (93, 9), (29, 13)])
def test_spans_cover_the_video_on_the_grid(num_frames, window, overlap):
    spans = window_spans(num_frames, window, overlap)
    assert spans[0][0] == 0 and spans[-1][0] + spans[-1][1] == num_frames
    for (start, frames), (next_start, _) in zip(spans, spans[1:]):
        assert frames == window  # only the last window may be shorter
        assert next_start == start + frames - overlap  # the next keeps exactly `overlap` frames
    for _, frames in spans:
        assert on_grid(frames) and frames <= window
    if len(spans) > 1:
        assert spans[-1][1] > overlap  # the last window generates at least one latent frame


def test_a_short_video_is_one_window():
    assert window_spans(17, 17, 5) == [(0, 17)]
    assert window_spans(9, 17, 5) == [(0, 9)]


def test_known_plans():
    assert window_spans(29, 17, 5) == [(0, 17), (12, 17)]
    assert window_spans(33, 17, 5) == [(0, 17), (12, 17), (24, 9)]
    assert window_spans(93 + 68 * 5, 93, 25) == [(68 * i, 93) for i in range(6)]
    assert window_spans(929, 93, 25)[-1] == (884, 45)  # ten times the trained length: 14 windows, a short last


@pytest.mark.parametrize("args", [(18, 17, 5), (29, 16, 5), (29, 17, 4), (29, 17, 17), (29, 17, 21)])
def test_off_grid_or_useless_overlap_is_refused(args):
    with pytest.raises(ValueError):
        window_spans(*args)


def test_default_overlap():
    assert default_overlap(93) == 25 and default_overlap(17) == 5 and default_overlap(5) == 1
    for window in (5, 9, 17, 29, 45, 61, 77, 93):
        assert on_grid(default_overlap(window)) and default_overlap(window) < window


def test_first_window_is_todays_plan_and_later_ones_continue():
    plan = plan_windows(33, 17, 5)
    assert not plan.problems
    first, second, third = plan.windows
    assert first.mask_type == MaskType.t2iv and first.kept == []
    assert second.mask_type == MaskType.continuation and second.kept == [0, 1, 2, 3, 4]
    assert third.frames == 9 and third.kept == [0, 1, 2, 3, 4]


def test_first_and_last_images_go_to_the_first_and_last_windows():
    plan = plan_windows(45, 17, 5, keyframes=[(0, 0), (-1, 1)])
    first, *middle, last = plan.windows
    assert first.keyframes == ((0, 0),) and first.mask_type == MaskType.i2v
    assert all(not w.keyframes for w in middle)
    assert last.keyframes == ((last.frames - 1, 1),)
    assert last.kept == [0, 1, 2, 3, 4, last.frames - 1] and last.mask_type == MaskType.random_temporal


def test_keyframes_go_to_every_window_that_holds_them():
    plan = plan_windows(45, 17, 5, keyframes=[(14, 0), (20, 1)])  # windows at 0, 12, 24, 36
    by_window = [w.keyframes for w in plan.windows]
    assert by_window[0] == ((14, 0),)
    assert by_window[1] == ((2, 0), (8, 1))  # 14 lies in the overlap of window 2: kept as the image itself
    assert by_window[2] == () and by_window[3] == ()


def test_keyframe_outside_the_video_is_a_problem():
    plan = plan_windows(45, 17, 5, keyframes=[(45, 0)])
    assert plan.problems and "outside the 45-frame video" in plan.problems[0][0]


def test_off_grid_length_is_a_problem_not_an_exception():
    plan = plan_windows(46, 17, 5)
    assert plan.problems and "1 + 4k" in plan.problems[0][0]


def test_segments_split_evenly_or_at_their_frames():
    assert parse_segments("a boat", 93) == ([Segment(0, "a boat")], [])
    segments, problems = parse_segments("left ||| right", 100)
    assert not problems and segments == [Segment(0, "left"), Segment(50, "right")]
    segments, problems = parse_segments("left ||| @70 right ||| @90 up", 100)
    assert not problems and [s.start for s in segments] == [0, 70, 90]


@pytest.mark.parametrize(
    "text,problem",
    [
        ("left ||| ", "empty"),
        ("@5 left ||| right", "starts at frame 0"),
        ("a ||| @40 b ||| c", "some stretches have an @frame"),
        ("a ||| @400 b", "outside"),
        ("a ||| @60 b ||| @40 c", "must increase"),
    ],
)
def test_bad_segments(text, problem):
    segments, problems = parse_segments(text, 100)
    assert not segments and problem in problems[0][0]


def test_each_window_takes_the_prompt_of_the_stretch_of_its_new_frames():
    plan = plan_windows(45, 17, 5, prompt="left ||| @30 right")  # windows 0-16, 12-28, 24-40, 36-44
    assert [w.prompt for w in plan.windows] == ["left", "left", "right", "right"]
    assert [w.prompt_index for w in plan.windows] == [0, 0, 1, 1]
