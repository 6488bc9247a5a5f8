"""Resolution rules against the reference's table (exact integers)."""

from __future__ import annotations

import json

import pytest

from opensora_cli.schemas.resolution import arbitrary_output_size, max_hxw_resize, stride_crop_box

from .helpers import GOLDENS

TABLE = json.loads((GOLDENS / "resize" / "maxhwresize.json").read_text())


@pytest.mark.parametrize("row", TABLE["maxhwresize"], ids=lambda r: f"{r['h']}x{r['w']}@{r['max_hxw']}")
def test_max_hxw_resize_and_stride_crop_match_reference(row):
    resized = max_hxw_resize(row["h"], row["w"], row["max_hxw"])
    assert resized == (row["resized_h"], row["resized_w"])
    for stride, box in row["stride_crop"].items():
        assert stride_crop_box(*resized, int(stride)) == (box["top"], box["left"], box["h"], box["w"])


@pytest.mark.parametrize("row", TABLE["spatial_stride_crop"], ids=lambda r: f"{r['h']}x{r['w']}/{r['stride']}")
def test_stride_crop_matches_reference(row):
    assert stride_crop_box(row["h"], row["w"], row["stride"]) == (row["top"], row["left"], row["out_h"], row["out_w"])


@pytest.mark.parametrize(
    ("sizes", "expected"),
    [
        ([(1080, 1920)], (352, 640)),
        ([(720, 1280)], (352, 640)),
        ([(512, 512)], (480, 480)),
        ([(300, 400)], (288, 384)),
        ([(720, 1280), (480, 1920)], (288, 768)),  # per-axis minimum: 480 x 1280 -> 297 x 794 -> 288 x 768
    ],
)
def test_arbitrary_output_size(sizes, expected):
    assert arbitrary_output_size(sizes, 236544) == expected
