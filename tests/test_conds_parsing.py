"""Quoted items in conds lines: commas inside paths, `""` for a quote, @N outside the quotes, clear errors."""

from __future__ import annotations

import json

import pytest
from PIL import Image

from opensora_cli.schemas.inputs import parse_conds_line


def _parsed(line: str) -> list[tuple[str, int | None]]:
    items, errors = parse_conds_line(line)
    assert errors == []
    return [(item.path, item.index) for item in items]


def test_a_quoted_path_keeps_its_comma():
    assert _parsed('"my, file.png"@0,b.png') == [("my, file.png", 0), ("b.png", None)]


def test_a_quoted_path_with_a_negative_index_and_spaces_around():
    assert _parsed(' a.png@0 , "shots, day 1/last.png"@-1 ') == [("a.png", 0), ("shots, day 1/last.png", -1)]


def test_inside_quotes_doubled_quotes_spaces_and_at_signs_are_part_of_the_path():
    assert _parsed('"say ""hi"".png"," padded.png ","frame@3.png"') == [
        ('say "hi".png', None), (" padded.png ", None), ("frame@3.png", None)]


def test_the_item_text_is_kept_as_written():
    items, _ = parse_conds_line('"my, file.png"@0')
    assert items[0].text == '"my, file.png"@0'


def test_a_quote_inside_an_unquoted_item_is_an_ordinary_character():
    assert _parsed('my"file.png,b.png@2') == [('my"file.png', None), ("b.png", 2)]


@pytest.mark.parametrize("line", ['a.png,"my, file.png@0', '"a.png', 'a.png,"ends in a doubled quote""'])
def test_an_unterminated_quote_is_an_error_naming_the_item(line):
    items, errors = parse_conds_line(line)
    assert len(errors) == 1
    assert "never closed" in errors[0] and 'write "" for a quote inside it' in errors[0]
    assert errors[0].startswith("item 2:" if line.startswith("a.png,") else "item 1:")
    # The rest of the line is still read, as if the quote closed at its end: its files get checked too.
    assert [(i.path, i.index) for i in items] == {
        'a.png,"my, file.png@0': [("a.png", None), ("my, file.png", 0)],
        '"a.png': [("a.png", None)],
        'a.png,"ends in a doubled quote""': [("a.png", None), ('ends in a doubled quote"', None)],
    }[line]


def test_text_after_the_closing_quote_is_an_error():
    items, errors = parse_conds_line('"a.png"x,b.png')
    assert [i.path for i in items] == ["b.png"]
    assert errors == ["item 1: '\"a.png\"x' has 'x' after the closing quote (only a frame index @N may "
                      "follow it)"]


def test_an_empty_quoted_path_is_an_error():
    assert parse_conds_line('"",b.png')[1] == ["item 1 is an empty quoted path"]


def _comma_image(tmp_path):
    path = tmp_path / "shots, day 1.png"
    Image.new("RGB", (96, 64), (200, 30, 30)).save(path)
    return path


def test_validate_inputs_accepts_a_quoted_file_name_with_a_comma(cli, media, tmp_path):
    image = _comma_image(tmp_path)
    prompts = media.text("prompts.txt", "a red square", "the same, unquoted")
    conds = media.text("conds.txt", '"shots, day 1.png"@0', "shots, day 1.png")
    result = cli("validate-inputs", "-p", prompts, "-c", conds, "--json")
    report = json.loads(result.out)

    first, second = report["items"]
    assert first["conds"] == [str(image)] and first["frame_indices"] == [0] and first["mask_type"] == "i2v"
    assert all(problem["line"] == 2 for problem in report["problems"]) and report["problems"], report
    assert result.code == 1  # only because of the unquoted line 2

    conds.write_text('"shots, day 1.png"@0\n', encoding="utf-8")
    prompts.write_text("a red square\n", encoding="utf-8")
    result = cli("validate-inputs", "-p", prompts, "-c", conds, "--json")
    report = json.loads(result.out)
    assert result.code == 0 and report["ok"] and report["problems"] == [], report


def test_validate_inputs_reports_an_unterminated_quote_with_its_line(cli, media, tmp_path):
    _comma_image(tmp_path)
    prompts = media.text("prompts.txt", "a red square")
    conds = media.text("conds.txt", '"shots, day 1.png@0')
    result = cli("validate-inputs", "-p", prompts, "-c", conds, "--json")
    problems = json.loads(result.out)["problems"]
    assert result.code == 1
    # One problem: the file itself is found (read as if the quote closed at the end of the line).
    assert [p["line"] for p in problems] == [1] and "never closed" in problems[0]["message"], problems


def test_mask_preview_takes_a_quoted_conds_line(cli, tmp_path):
    _comma_image(tmp_path)
    result = cli("mask-preview", "--conds", '"shots, day 1.png"@-1', "-n", "5", "--json")
    assert result.code == 0, result.err
    assert json.loads(result.out)["frames"] == [1, 1, 1, 1, 0]
