"""Mask config YAML: the reference's file loads; every kind of mistake is named with its line."""

from __future__ import annotations

from pathlib import Path

import pytest

from opensora_cli.masks import MaskType
from opensora_cli.schemas.mask_config import MaskConfig, load_mask_config

# The values of the reference's scripts/train_configs/mask_config.yaml (v1.3), trailing space included.
REFERENCE_YAML = """# mask processor args
min_clear_ratio: 0.0
max_clear_ratio: 1.0 

mask_type_ratio_dict_video:
  t2iv: 1
  i2v: 8
  transition: 8
  continuation: 2
  clear: 0
  random_temporal: 1

mask_type_ratio_dict_image:
  t2iv: 0
  clear: 0
"""


def load(tmp_path: Path, text: str):
    path = tmp_path / "mask_config.yaml"
    path.write_text(text, encoding="utf-8")
    return load_mask_config(path)


def test_reference_config_loads_with_a_warning_about_all_zero_images(tmp_path):
    config, problems, warnings = load(tmp_path, REFERENCE_YAML)
    assert problems == []
    assert config.video_ratios()[MaskType.i2v] == pytest.approx(0.4)
    assert config.video_ratios()[MaskType.clear] == 0
    assert config.image_ratios() == {MaskType.t2iv: 0.5, MaskType.clear: 0.5}
    assert len(warnings) == 1 and warnings[0].line == 13 and "every weight is 0" in warnings[0].message


def test_empty_file_gives_defaults(tmp_path):
    config, problems, warnings = load(tmp_path, "# nothing\n")
    assert problems == [] and warnings == [] and config == MaskConfig()


def test_unknown_key_and_type_with_did_you_mean_and_lines(tmp_path):
    _, problems, _ = load(
        tmp_path,
        "min_clear_ratoi: 0.1\nmask_type_ratio_dict_video:\n  i2v: 1\n  transitoin: 2\n",
    )
    rendered = [p.render() for p in problems]
    assert any(":1: unknown key 'min_clear_ratoi' — did you mean 'min_clear_ratio'?" in r for r in rendered)
    assert any(":4: mask_type_ratio_dict_video: unknown mask type 'transitoin' — did you mean 'transition'?" in r
               for r in rendered)


def test_every_problem_is_reported(tmp_path):
    text = (
        "min_clear_ratio: 0.8\nmax_clear_ratio: 0.3\nmask_type_ratio_dict_video:\n  i2v: -1\n"
        "mask_type_ratio_dict_image:\n  i2v: 1\nbogus: 1\n"
    )
    config, problems, _ = load(tmp_path, text)
    assert config is None
    by_line = {p.line: p.message for p in problems}
    assert "below min_clear_ratio" in by_line[2]
    assert ">= 0" in by_line[3] or ">= 0" in by_line.get(4, "")
    assert "cannot apply to images" in by_line[5]
    assert "unknown key 'bogus'" in by_line[7]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("min_clear_ratio: 1.5\n", "between 0 and 1"),
        ("max_clear_ratio: lots\n", "write a number"),
        ("mask_type_ratio_dict_video: 3\n", "mapping"),
        ("mask_type_ratio_dict_video: {}\n", "is empty"),
        ("- a\n- b\n", "must be a mapping"),
        ("min_clear_ratio: [\n", "not valid YAML"),
        ("mask_type_ratio_dict_video:\n  i2v: .nan\n", "finite"),
    ],
)
def test_bad_values(tmp_path, text, expected):
    config, problems, _ = load(tmp_path, text)
    assert config is None and problems
    assert any(expected in p.message for p in problems), [p.message for p in problems]


def test_missing_file(tmp_path):
    config, problems, _ = load_mask_config(tmp_path / "nope.yaml")
    assert config is None and "not found" in problems[0].message


def test_model_rejects_bad_values_directly():
    with pytest.raises(ValueError):
        MaskConfig(min_clear_ratio=0.9, max_clear_ratio=0.1)
    with pytest.raises(ValueError):
        MaskConfig(mask_type_ratio_dict_image={"i2v": 1})
    with pytest.raises(ValueError):
        MaskConfig(unknown=1)
