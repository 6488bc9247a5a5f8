"""Parsing conds lines: paths, @frame indices, stray spaces and commas."""

from __future__ import annotations

import pytest

from opensora_cli.schemas.inputs import nearest_valid_frames, parse_conds_line


def test_plain_and_indexed_items():
    items, errors = parse_conds_line(" a.png , b.png@40,c d.png@-1 ")
    assert errors == []
    assert [(i.path, i.index) for i in items] == [("a.png", None), ("b.png", 40), ("c d.png", -1)]


def test_at_sign_in_a_filename_is_kept_when_not_an_integer():
    items, _ = parse_conds_line("me@home.png,x.png@+3")
    assert [(i.path, i.index) for i in items] == [("me@home.png", None), ("x.png", 3)]


@pytest.mark.parametrize("line", ["a.png,,b.png", "a.png,", ",a.png"])
def test_empty_items_are_errors(line):
    _, errors = parse_conds_line(line)
    assert len(errors) == 1 and "empty" in errors[0]


def test_blank_line_is_text_only():
    assert parse_conds_line("   ") == ([], [])


@pytest.mark.parametrize(("frames", "expected"), [(90, (89, 93)), (2, (1, 5)), (94, (93, 97))])
def test_nearest_valid_frames(frames, expected):
    assert nearest_valid_frames(frames) == expected
