"""`opensora validate-inputs`: every rule, through the real command.

Most tests check the rules against the released model's defaults (93 frames, arbitrary resolution): they run
as an install without the bundled demo model would. The demo model's own defaults are tested at the end.
"""

from __future__ import annotations

import json

import pytest

from .helpers import REPO


@pytest.fixture(autouse=True)
def released_model_defaults(request, monkeypatch):
    if "demo_defaults" not in request.keywords:
        monkeypatch.setattr("opensora_cli.services.model_folders.bundled_model_dir", lambda: None)


def check(cli, prompts, conds=None, *extra):
    args = ["validate-inputs", "--prompts", prompts, "--json", *extra]
    if conds is not None:
        args[3:3] = ["--conds", conds]
    result = cli(*args)
    assert result.code in (0, 1), result
    return result.code, json.loads(result.out)


def messages(report):
    return [f"{p['file']}:{p['line']}: {p['message']}" for p in report["problems"]]


def has(report, *fragments):
    found = messages(report)
    return all(any(f in m for m in found) for f in fragments)


# ---------------------------------------------------------------------------------------------------------
# Good inputs
# ---------------------------------------------------------------------------------------------------------


def test_all_line_kinds_pass_and_json_has_the_contract_fields(cli, media):
    media.image("one.png", 720, 1280)
    media.image("a.png", 512, 512)
    media.image("b.png", 600, 600)
    for name in ("k0.png", "k1.png", "k2.png"):
        media.image(name, 352, 640)
    media.video("clip.mp4", 97, 352, 640)
    prompts = media.text("p.txt", "one", "two", "three", "four", "five")
    conds = media.text("c.txt", "one.png", "a.png, b.png", "k0.png@0,k1.png@40,k2.png@-1", "clip.mp4", "")
    code, report = check(cli, prompts, conds, "--height", "352", "--width", "640")
    assert code == 0, messages(report)
    assert report["ok"] is True and report["problems"] == []
    assert set(report) >= {"ok", "problems", "items"}
    items = report["items"]
    assert [set(i) for i in items] == [{"line", "prompt", "conds", "mask_type", "frame_indices", "output_size"}] * 5
    assert [i["mask_type"] for i in items] == ["i2v", "transition", "random_temporal", "continuation", "t2iv"]
    assert [i["frame_indices"] for i in items] == [[0], [0, 92], [0, 40, 92], None, []]
    assert [i["output_size"] for i in items] == [[352, 640], [480, 480], [352, 640], [352, 640], [352, 640]]
    assert items[0]["conds"] == [str(media.root / "one.png")]


def test_plain_output_lists_the_plan_per_line(cli, media):
    media.image("one.png", 100, 100)
    result = cli("validate-inputs", "-p", media.text("p.txt", "x"), "-c", media.text("c.txt", "one.png"),
                 "--max-hxw", "102400")
    assert result.code == 0
    assert "line 1: i2v, kept frames 0, output 96x96" in result.out
    assert "c.txt:1: output 96x96 is smaller than the trained area" in result.out and "warning: " in result.out


def test_relative_paths_try_cwd_then_the_conds_folder(cli, media, tmp_path):
    media.image("sub/pic.png")  # next to the conds file only
    media.image("here.png")
    media.image("sub/here.png", color=(0, 0, 255))  # exists in both places: cwd wins
    prompts = media.text("sub/p.txt", "a", "b")
    conds = media.text("sub/c.txt", "pic.png", "here.png")
    result = cli("-v", "validate-inputs", "-p", prompts, "-c", conds)
    assert result.code == 0, result.out
    assert f"{tmp_path / 'sub' / 'pic.png'} (image, found next to the conds file)" in result.out
    assert f"{tmp_path / 'here.png'} (image, found in the current directory)" in result.out


def test_mask_type_defaults_can_be_overridden_consistently(cli, media):
    media.video("clip.mp4", 33)
    media.image("a.png")
    media.image("b.png")
    prompts = media.text("p.txt", "x", "y")
    code, report = check(cli, prompts, media.text("c.txt", "clip.mp4", "a.png"), "-n", "33", "-m", "i2v")
    assert code == 0, messages(report)
    code, report = check(cli, prompts, media.text("c2.txt", "a.png,b.png", "a.png"), "-n", "33", "-m",
                         "continuation")
    assert code == 0, messages(report)
    assert [i["frame_indices"] for i in report["items"]] == [[0, 1], [0]]


def test_t2iv_needs_no_conds_file_but_a_size(cli, media):
    prompts = media.text("p.txt", "a cat", "a dog")
    code, report = check(cli, prompts, None, "-m", "t2iv", "--height", "352", "--width", "640")
    assert code == 0 and [i["mask_type"] for i in report["items"]] == ["t2iv", "t2iv"]
    code, report = check(cli, prompts, None)
    assert code == 1 and has(report, "no input to take its size from — pass --height and --width")


# ---------------------------------------------------------------------------------------------------------
# Files and lines
# ---------------------------------------------------------------------------------------------------------


def test_more_prompts_than_condition_lines_names_the_first_unpaired_line(cli, media):
    media.image("a.png")
    code, report = check(cli, media.text("p.txt", "a", "b", "c"), media.text("c.txt", "a.png"))
    assert code == 1
    assert has(report, "c.txt:2: prompt 2 has no conditions line (3 prompts, 1 condition lines)")


def test_more_condition_lines_than_prompts(cli, media):
    media.image("a.png")
    code, report = check(cli, media.text("p.txt", "a"), media.text("c.txt", "a.png", "a.png"))
    assert code == 1 and has(report, "p.txt:2: conditions line 2 has no prompt")


def test_empty_prompt(cli, media):
    media.image("a.png")
    code, report = check(cli, media.text("p.txt", "a", "  "), media.text("c.txt", "a.png", "a.png"))
    assert code == 1 and has(report, "p.txt:2: empty prompt")


def test_missing_and_non_utf8_files(cli, media, tmp_path):
    code, report = check(cli, tmp_path / "nope.txt", tmp_path / "nope2.txt")
    assert code == 1 and has(report, "nope.txt:None: file not found", "nope2.txt:None: file not found")
    bad = tmp_path / "latin1.txt"
    bad.write_bytes("fine\ncaf\xe9\n".encode("latin-1"))
    media.image("a.png")
    code, report = check(cli, bad, media.text("c.txt", "a.png", "a.png"))
    assert code == 1 and has(report, "latin1.txt:2: not UTF-8 text")


def test_missing_image_names_both_places(cli, media, tmp_path):
    code, report = check(cli, media.text("p.txt", "a"), media.text("sub/c.txt", "ghost.png"))
    assert code == 1 and has(report, "file not found: 'ghost.png'", str(tmp_path / "sub"))


def test_unsupported_extension_and_undecodable_files(cli, media, tmp_path):
    (tmp_path / "notes.docx").write_text("x")
    (tmp_path / "fake.png").write_bytes(b"\x89PNG not really")
    (tmp_path / "fake.mp4").write_bytes(b"\x00\x00\x00 garbage")
    prompts = media.text("p.txt", "a", "b", "c")
    code, report = check(cli, prompts, media.text("c.txt", "notes.docx", "fake.png", "fake.mp4"))
    assert code == 1
    assert has(report, "c.txt:1: 'notes.docx' is not a supported image or video",
               "c.txt:2: cannot decode image 'fake.png'", "c.txt:3: cannot decode video 'fake.mp4'")


def test_all_problems_are_reported_at_once(cli, media):
    media.image("a.png")
    prompts = media.text("p.txt", "a", "", "c", "d")
    conds = media.text("c.txt", "ghost.png", "a.png", "a.png,,a.png", "a.png@500")
    code, report = check(cli, prompts, conds)
    assert code == 1
    lines = {(p["file"].rsplit("/", 1)[-1], p["line"]) for p in report["problems"]}
    assert {("c.txt", 1), ("p.txt", 2), ("c.txt", 3), ("c.txt", 4)} <= lines


# ---------------------------------------------------------------------------------------------------------
# Inputs against mask types
# ---------------------------------------------------------------------------------------------------------


def test_video_too_short_suggests_a_frame_count(cli, media):
    media.video("short.mp4", 40)
    code, report = check(cli, media.text("p.txt", "a"), media.text("c.txt", "short.mp4"))
    assert code == 1 and has(report, "video 'short.mp4' has 40 frames, 93 needed — use --num-frames 37")


def test_video_cannot_be_mixed_or_indexed(cli, media):
    media.video("v.mp4", 9)
    media.image("a.png")
    prompts = media.text("p.txt", "a", "b", "c")
    code, report = check(cli, prompts, media.text("c.txt", "v.mp4,a.png", "v.mp4,v.mp4", "v.mp4@3"), "-n", "9")
    assert code == 1
    assert has(report, "c.txt:1: a video must be alone", "c.txt:2: a video must be alone",
               "c.txt:3: a frame index (@N) applies to images only")


@pytest.mark.parametrize(
    ("mask_type", "line", "expected"),
    [
        ("transition", "a.png", "transition keeps the first and last frames: give two images"),
        ("i2v", "a.png,b.png", "i2v keeps frame 0 only"),
        ("i2v", "a.png@5", "i2v keeps frame 0 only"),
        ("t2iv", "a.png", "t2iv keeps no frames, but the line has images"),
        ("t2iv", "v.mp4", "t2iv keeps no frames, but the line has a video"),
        ("clear", "a.png", "clear keeps every frame"),
        ("continuation", "a.png@0,b.png@2", "continuation keeps a leading run"),
        ("random_temporal", "a.png,b.png", "need frame indices"),
        ("i2v", "", "mask type i2v needs conditions, this line has none"),
    ],
)
def test_inputs_must_fit_the_mask_type(cli, media, mask_type, line, expected):
    media.image("a.png")
    media.image("b.png")
    media.video("v.mp4", 9)
    code, report = check(cli, media.text("p.txt", "a"), media.text("c.txt", line), "-m", mask_type, "-n", "9")
    assert code == 1 and has(report, expected), messages(report)


def test_conds_file_required_for_conditioned_types(cli, media):
    code, report = check(cli, media.text("p.txt", "a"), None, "-m", "i2v")
    assert code == 1 and has(report, "--conds:None: mask type i2v needs condition files")


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("a.png,b.png,c.png", "3 images need frame indices — write each image as path@frame"),
        ("a.png@0,b.png", "some images have a frame index and some do not"),
        ("a.png@0,b.png@-9", "two images go to the same frame"),
        ("a.png@9", "frame index 9 is outside a 9-frame video"),
        ("a.png@-10", "frame index -10 is outside a 9-frame video"),
    ],
)
def test_frame_indices(cli, media, line, expected):
    for name in ("a.png", "b.png", "c.png"):
        media.image(name)
    code, report = check(cli, media.text("p.txt", "a"), media.text("c.txt", line), "-n", "9")
    assert code == 1 and has(report, expected), messages(report)


def test_indices_decide_the_default_type(cli, media):
    media.image("a.png")
    media.image("b.png")
    prompts = media.text("p.txt", "a", "b", "c")
    code, report = check(cli, prompts, media.text("c.txt", "a.png@4", "a.png@0,b.png@8", "a.png@-1"), "-n", "9")
    assert code == 0, messages(report)
    assert [(i["mask_type"], i["frame_indices"]) for i in report["items"]] == [
        ("random_temporal", [4]), ("transition", [0, 8]), ("random_temporal", [8])]


# ---------------------------------------------------------------------------------------------------------
# Options and sizes
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["-n", "90"], "--num-frames:None: 90 is not 1 + 4k (the VAE compresses time by 4) — use 89 or 93"),
        (["-n", "0"], "--num-frames:None: 0 is not 1 + 4k"),
        (["--crop-for-hw"], "--crop-for-hw:None: needs --height and --width"),
        (["--crop-for-hw", "--height", "360", "--width", "640"], "--height:None: 360 is not a positive multiple of 16"),
        (["--max-hxw", "500000"], "--max-hxw:None: 500000 is outside the model's trained area range"),
    ],
)
def test_option_rules(cli, media, args, expected):
    media.image("a.png")
    code, report = check(cli, media.text("p.txt", "a"), media.text("c.txt", "a.png"), *args)
    assert code == 1 and has(report, expected), messages(report)


def test_fixed_size_mode_reports_the_fixed_size(cli, media):
    media.image("a.png", 1000, 700)
    code, report = check(cli, media.text("p.txt", "a"), media.text("c.txt", "a.png"),
                         "--crop-for-hw", "--height", "336", "--width", "624")
    assert code == 0 and report["items"][0]["output_size"] == [336, 624]
    assert any("not a multiple of 32" in w["message"] for w in report["warnings"])


def test_tiny_inputs_are_refused_in_arbitrary_mode(cli, media):
    media.image("tiny.png", 20, 300)
    code, report = check(cli, media.text("p.txt", "a"), media.text("c.txt", "tiny.png"))
    assert code == 1 and has(report, "inputs are too small (20x300)")


def test_aspect_warning(cli, media):
    media.image("wide.png", 200, 1000)
    code, report = check(cli, media.text("p.txt", "a"), media.text("c.txt", "wide.png"))
    assert code == 0 and any("aspect" in w["message"] for w in report["warnings"])


def test_mask_config_problems_are_part_of_the_report(cli, media, tmp_path):
    media.image("a.png")
    config = tmp_path / "mask.yaml"
    config.write_text("min_clear_ratio: 2\n")
    code, report = check(cli, media.text("p.txt", "a"), media.text("c.txt", "a.png"), "--mask-config", config)
    assert code == 1 and has(report, "mask.yaml:1: min_clear_ratio")


# ---------------------------------------------------------------------------------------------------------
# Exit codes and output forms through the installed command
# ---------------------------------------------------------------------------------------------------------


def test_installed_command_exit_codes_and_one_line_errors(installed_cli, media):
    media.image("a.png")
    prompts, conds = media.text("p.txt", "a"), media.text("c.txt", "a.png")
    assert installed_cli("validate-inputs", "-p", prompts, "-c", conds).code == 0

    bad = installed_cli("validate-inputs", "-p", prompts, "-c", media.text("c2.txt", "ghost.png"))
    assert bad.code == 1 and "c2.txt:1: file not found: 'ghost.png'" in bad.out and "Traceback" not in bad.err

    unknown = installed_cli("validate-inputs", "-p", prompts, "-c", conds, "--mask-type", "i2vv")
    assert unknown.code == 2 and unknown.err.count("\n") == 1 and "'i2vv' is not one of" in unknown.err

    missing = installed_cli("validate-inputs", "-c", conds)
    assert missing.code == 2 and "Missing option '--prompts'" in missing.err and unknown.err.count("\n") == 1


@pytest.mark.demo_defaults
def test_the_default_model_is_the_one_sample_uses(cli):
    demo = REPO / "examples" / "demo"
    ok = cli("validate-inputs", "-p", demo / "prompts.txt", "-c", demo / "conds.txt", "--json")
    assert ok.code == 0, ok.out
    report = json.loads(ok.out)
    assert [item["output_size"] for item in report["items"]] == [[64, 96]] * 4  # the demo model's fixed size


@pytest.mark.demo_defaults
def test_model_defaults_come_from_the_given_model(cli, media, tmp_path):
    media.image("one.png", 120, 160)
    prompts, conds = media.text("p.txt", "x"), media.text("c.txt", "one.png")
    model = tmp_path / "m"
    model.mkdir()
    (model / "opensora_defaults.json").write_text(json.dumps({"num_frames": 9, "height": 32, "width": 48,
                                                              "crop_for_hw": True}))
    code, report = check(cli, prompts, conds, "--model", model)
    assert code == 0 and report["items"][0]["output_size"] == [32, 48]
    tiny = media.image("tiny.png", 1, 1)
    code, report = check(cli, prompts, media.text("c2.txt", str(tiny)), "--model", model)
    assert code == 1 and "a 1x1 input has no 32:48 window to crop" in report["problems"][0]["message"]
    (model / "opensora_defaults.json").write_text("{not json")
    broken = cli("validate-inputs", "-p", prompts, "-c", conds, "--model", model)
    assert broken.code == 1 and "opensora_defaults.json: not valid JSON" in broken.err
    missing = cli("validate-inputs", "-p", prompts, "-c", conds, "--model", tmp_path / "nowhere")
    assert missing.code == 1 and "--model: '" in missing.err and "is not a folder" in missing.err
