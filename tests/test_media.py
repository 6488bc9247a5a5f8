"""Reading condition media: every Pillow mode by its real range, warnings for what is dropped, EXIF orientation,
and one clean line (nothing on stderr) for videos decord cannot read. All files are made here, tiny."""

from __future__ import annotations

import json
import os
import subprocess
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from PIL import Image

from opensora_cli.data.media import (
    _decord_reason,
    _native_stderr_captured,
    _to_rgb,
    probe,
    read_image,
    read_video,
)

RED = (200, 30, 30)


def ffmpeg(*args: str) -> None:
    import imageio_ffmpeg

    subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-y", "-loglevel", "error", *args], check=True,
                   capture_output=True)


def assert_one_clean_line(message: str | None) -> None:
    assert message, "expected an error"
    assert "\n" not in message and ".cc" not in message and "/github" not in message, message
    assert "Check failed" not in message and "[bt]" not in message, message


# ---------------------------------------------------------------------------------------------------------
# High-bit modes: scaled by their range, never clipped
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("mode", "name"), [("I;16", "g.png"), ("I;16", "g.tif"), ("I;16B", "g.tif"),
                                            ("I;16L", "g.tif")])
def test_16_bit_grey_reads_as_value_over_257(tmp_path, mode, name):
    values = np.array([[0, 1000, 30000], [40000, 65535, 257 * 77]], np.uint16)
    dtype = ">u2" if mode == "I;16B" else "<u2"
    Image.frombytes(mode, (3, 2), values.astype(dtype).tobytes()).save(tmp_path / name)
    assert Image.open(tmp_path / name).convert("RGB").getpixel((1, 0)) == (255, 255, 255)  # the bug: clipped

    pixels = read_image(tmp_path / name)

    assert pixels.shape == (2, 3, 3) and pixels.dtype == np.uint8
    assert np.abs(pixels.astype(int) - (values / 257)[..., None]).max() <= 1
    assert pixels[1, 2].tolist() == [77, 77, 77]
    assert probe(tmp_path / name).error is None


def test_16_bit_native_order_mode_reads_the_same():
    # No file format stores I;16N (it is the machine's byte order): checked on the in-memory image.
    rgb, warnings = _to_rgb(Image.new("I;16N", (2, 2), 25700))
    assert np.asarray(rgb).tolist() == [[[100] * 3] * 2] * 2 and warnings == []


def test_32_bit_integers_in_the_16_bit_range_read_as_16_bit(tmp_path):
    Image.fromarray(np.array([[0, 65535, 514]], np.int32)).save(tmp_path / "i.tif")
    assert Image.open(tmp_path / "i.tif").mode == "I"
    assert read_image(tmp_path / "i.tif")[0, :, 0].tolist() == [0, 255, 2]


def test_32_bit_integers_beyond_16_bit_are_refused_with_the_range(tmp_path):
    Image.fromarray(np.array([[-3, 70000]], np.int32)).save(tmp_path / "i.tif")
    info = probe(tmp_path / "i.tif")
    assert info.error is not None and "from -3 to 70000" in info.error and "16-bit PNG" in info.error
    with pytest.raises(ValueError, match="from -3 to 70000"):
        read_image(tmp_path / "i.tif")


def test_float_pixels_in_0_1_map_to_0_255(tmp_path):
    Image.fromarray(np.array([[0.0, 0.5, 1.0]], np.float32)).save(tmp_path / "f.tif")
    assert Image.open(tmp_path / "f.tif").mode == "F"
    assert read_image(tmp_path / "f.tif")[0, :, 1].tolist() == [0, 128, 255]


@pytest.mark.parametrize(("values", "found"), [([[-0.5, 2.0]], "from -0.5 to 2"), ([[0.2, np.nan]], "NaN")])
def test_float_pixels_outside_0_1_are_refused_saying_what_was_found(tmp_path, values, found):
    Image.fromarray(np.array(values, np.float32)).save(tmp_path / "f.tif")
    error = probe(tmp_path / "f.tif").error
    assert error is not None and found in error and "0..1" in error and "8-bit or 16-bit PNG" in error


# ---------------------------------------------------------------------------------------------------------
# 8-bit modes: as the reference's convert("RGB") reads them; transparency dropped with a warning
# ---------------------------------------------------------------------------------------------------------


def palette_image(transparent: bool = False) -> Image.Image:
    image = Image.new("P", (6, 4), 1)
    image.putpalette([0, 0, 0, *RED] + [0] * (254 * 3))
    image.putpixel((0, 0), 0)
    if transparent:
        image.info["transparency"] = 0  # index 0 (the black top-left pixel) is see-through
    return image


@pytest.mark.parametrize(
    ("mode", "name", "expected"),
    [("1", "a.png", (255, 255, 255)), ("L", "a.png", (81, 81, 81)), ("LA", "a.png", (81, 81, 81)),
     ("P", "a.png", RED), ("PA", "a.tif", RED), ("RGB", "a.png", RED), ("RGBA", "a.png", RED),
     ("CMYK", "a.jpg", RED), ("CMYK", "a.tif", RED), ("YCbCr", "a.tif", RED), ("LAB", "a.tif", RED)],
)
def test_8_bit_modes_read_like_the_reference(tmp_path, mode, name, expected):
    source = palette_image() if mode in ("P", "PA") else Image.new("RGB", (6, 4), RED)
    source = Image.new("1", (6, 4), 1) if mode == "1" else source.convert(mode)
    source.save(tmp_path / name)
    assert Image.open(tmp_path / name).mode == mode

    pixels = read_image(tmp_path / name)
    info = probe(tmp_path / name)

    assert pixels.shape == (4, 6, 3) and pixels.dtype == np.uint8
    assert np.array_equal(pixels, np.asarray(Image.open(tmp_path / name).convert("RGB")))
    assert np.abs(pixels[2, 3].astype(int) - expected).max() <= 4
    assert (info.height, info.width, info.error, info.warnings) == (4, 6, None, ())  # opaque: nothing dropped


def test_hsv_reads_back_as_its_colour():
    # No file format stores HSV: checked on the in-memory image.
    rgb, _ = _to_rgb(Image.new("RGB", (2, 2), RED).convert("HSV"))
    assert np.abs(np.asarray(rgb)[0, 0].astype(int) - RED).max() <= 2


def test_a_mode_pillow_cannot_convert_is_refused_by_name():
    # La (premultiplied alpha) exists only in memory; Pillow has no conversion from it to RGB.
    with pytest.raises(ValueError, match="colour mode 'La' is not supported — save it as an 8-bit RGB PNG"):
        _to_rgb(Image.new("La", (2, 2)))


def test_see_through_pixels_warn_and_keep_their_stored_colour(tmp_path):
    rgba = np.zeros((4, 6, 4), np.uint8)
    rgba[...] = (*RED, 255)
    rgba[0, 0] = (10, 20, 30, 0)
    Image.fromarray(rgba).save(tmp_path / "t.png")
    palette_image(transparent=True).save(tmp_path / "p.png")
    palette_image(transparent=False).save(tmp_path / "opaque.png")

    for name in ("t.png", "p.png"):
        (warning,) = probe(tmp_path / name).warnings
        assert "transparent pixels" in warning and "dropped" in warning and " — " in warning
    assert probe(tmp_path / "opaque.png").warnings == ()
    # Dropped, not composited: the colour stored under the see-through pixel comes through.
    assert read_image(tmp_path / "t.png")[0, 0].tolist() == [10, 20, 30]
    assert read_image(tmp_path / "p.png")[0, 0].tolist() == [0, 0, 0]


@pytest.mark.parametrize("name", ["anim.gif", "anim.png", "pages.tif"])
def test_extra_frames_warn_and_the_first_frame_is_read(tmp_path, name):
    frames = [Image.new("RGB", (6, 4), color) for color in ((255, 0, 0), (0, 255, 0), (0, 0, 255))]
    frames[0].save(tmp_path / name, save_all=True, append_images=frames[1:], duration=100)

    info = probe(tmp_path / name)

    assert (info.height, info.width, info.num_frames) == (4, 6, 1)
    assert len(info.warnings) == 1 and "has 3 frames" in info.warnings[0] and "only the first" in info.warnings[0]
    assert read_image(tmp_path / name)[2, 3].tolist() == [255, 0, 0]


def test_a_single_frame_gif_does_not_warn(tmp_path):
    Image.new("RGB", (6, 4), RED).save(tmp_path / "one.gif")
    assert probe(tmp_path / "one.gif").warnings == ()


# ---------------------------------------------------------------------------------------------------------
# EXIF orientation
# ---------------------------------------------------------------------------------------------------------


def sideways_jpeg(path, height: int, width: int):
    """A JPEG stored `height` x `width` with orientation 6 (shown rotated 90 degrees clockwise)."""
    stored = np.zeros((height, width, 3), np.uint8)
    stored[: height // 2, : width // 2] = 255  # a white corner, top-left as stored
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(stored).save(path, exif=exif, quality=95)
    return path


def test_exif_orientation_is_applied_to_size_and_pixels(tmp_path):
    path = sideways_jpeg(tmp_path / "phone.jpg", 4, 8)

    info = probe(path)
    pixels = read_image(path)

    assert (info.height, info.width) == (8, 4)
    assert pixels.shape == (8, 4, 3)
    stored = np.asarray(Image.open(path).convert("RGB"))
    assert stored.shape == (4, 8, 3)
    assert np.array_equal(pixels, np.rot90(stored, k=-1))  # orientation 6: turn clockwise to display


def test_condition_frames_for_sampling_are_upright(tmp_path):
    from opensora_cli.data.transforms import load_condition_frames

    (frames,) = load_condition_frames([str(sideways_jpeg(tmp_path / "phone.jpg", 4, 8))], "image", 1)
    assert tuple(frames.shape) == (1, 3, 8, 4)


# ---------------------------------------------------------------------------------------------------------
# Videos decord cannot read: one clean line, nothing on stderr
# ---------------------------------------------------------------------------------------------------------


def test_audio_only_mp4_says_no_video_stream(tmp_path, capfd):
    path = tmp_path / "audio.mp4"
    ffmpeg("-f", "lavfi", "-i", "sine=frequency=440:duration=1", "-c:a", "aac", str(path))
    capfd.readouterr()

    error = probe(path).error

    assert error == "no video stream (audio only, or a damaged file?)"
    assert capfd.readouterr().err == ""


def test_corrupt_mp4_gives_one_clean_line_and_nothing_on_stderr(tmp_path, capfd):
    path = tmp_path / "corrupt.mp4"
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 3000, dtype=np.uint8).tobytes())
    capfd.readouterr()

    error = probe(path).error
    with pytest.raises(ValueError) as raised:
        read_video(path, 1)

    assert_one_clean_line(error)
    assert error == str(raised.value) == "ffmpeg cannot open it: Invalid data found when processing input"
    assert capfd.readouterr().err == ""


def test_truncated_mp4s_give_one_clean_line_and_nothing_on_stderr(tmp_path, capfd):
    whole = tmp_path / "whole.mp4"
    ffmpeg("-f", "lavfi", "-i", "testsrc=size=96x64:rate=8:duration=2", "-c:v", "libx264", "-pix_fmt", "yuv420p",
           "-movflags", "+faststart", str(whole))
    data = whole.read_bytes()
    capfd.readouterr()

    errors = []
    for size in (100, 600, 1000, len(data) // 2, len(data) - 100):  # in the header, at its end, in the frames
        (tmp_path / "cut.mp4").write_bytes(data[:size])
        errors.append(probe(tmp_path / "cut.mp4").error)

    assert probe(whole).error is None
    for error in errors:
        assert_one_clean_line(error)
        assert error.startswith(("no video stream", "ffmpeg cannot open it: ", "the file ends early",
                                 "a frame fails to decode (damaged or truncated file?): ")), error
    assert capfd.readouterr().err == ""


def test_ffmpeg_end_of_file_reads_as_truncated():
    log = "[19:54:52] /github/workspace/src/video/video_reader.cc:83: ERROR opening: /d/cut.mp4, End of file\n"
    assert _decord_reason("Error reading /d/cut.mp4...", log, "/d/cut.mp4") == "the file ends early (truncated?)"
    assert _decord_reason("Error reading /d/x.mp4...", "", "/d/x.mp4") == \
        "not a video decord can read, or a corrupt one"


def test_decoder_check_failures_lose_their_cpp_frames():
    # The text decord raised for a video whose packets were garbled (seen with decord 0.6.0).
    message = ("[19:55:09] /github/workspace/src/video/ffmpeg/threaded_decoder.cc:292: [19:55:09] "
               "/github/workspace/src/video/ffmpeg/threaded_decoder.cc:218: Check failed: "
               "avcodec_send_packet(dec_ctx_.get(), pkt.get()) >= 0 (-1094995529 vs. 0) Thread worker: "
               "Error sending packet.\n\nStack trace returned 10 entries:\n[bt] (0) /usr/lib/libdecord.so(+0x1234) [0x7f]")
    reason = _decord_reason(message, "", "/data/clip.mp4")
    assert reason == "a frame fails to decode (damaged or truncated file?): Error sending packet"
    assert_one_clean_line(reason)


def test_stderr_is_restored_after_concurrent_probes_and_other_output_is_kept(tmp_path, capfd):
    paths = []
    for i in range(6):
        paths.append(tmp_path / f"bad{i}.mp4")
        paths[-1].write_bytes(np.random.default_rng(i).integers(0, 256, 3000, dtype=np.uint8).tobytes())
    capfd.readouterr()

    with ThreadPoolExecutor(max_workers=4) as pool:
        errors = list(pool.map(lambda p: probe(p).error, paths))
    with _native_stderr_captured():
        os.write(2, b"[19:55:09] /github/workspace/src/video/video_reader.cc:83: ERROR opening: x\n")
        os.write(2, b"not decord: keep me\n")
    os.write(2, b"after\n")

    # Each thread found its own file's reason in the shared capture.
    assert errors == ["ffmpeg cannot open it: Invalid data found when processing input"] * len(paths)
    assert capfd.readouterr().err == "not decord: keep me\nafter\n"


def test_log_lines_that_threads_interleave_are_dropped_too(capfd):
    capfd.readouterr()
    with _native_stderr_captured():
        os.write(2, b"[20:36:52] /github/workspace/src/video/video_reader.cc:")
        os.write(2, b"[20:36:52] /github/workspace/src/video/video_reader.cc:83: ERROR opening: b.mp4, bad\n")
        os.write(2, b"83: ERROR opening: a.mp4, bad\n")
        os.write(2, b"mine\n")
    assert capfd.readouterr().err == "mine\n"


def test_overlapping_captures_restore_stderr_whichever_thread_leaves_first(capfd):
    import threading

    entered = [threading.Event(), threading.Event()]
    leave = [threading.Event(), threading.Event()]
    left = [threading.Event(), threading.Event()]

    def hold(i):
        with _native_stderr_captured():
            entered[i].set()
            leave[i].wait(10)
        left[i].set()

    threads = [threading.Thread(target=hold, args=(i,)) for i in range(2)]
    capfd.readouterr()
    threads[0].start()
    entered[0].wait(10)
    threads[1].start()
    entered[1].wait(10)
    os.write(2, b"during\n")  # captured while both are inside, written back when the last leaves
    leave[0].set()  # the first to enter leaves first: a naive save/restore would now restore the other's file
    left[0].wait(10)
    leave[1].set()
    for thread in threads:
        thread.join(10)
    os.write(2, b"after\n")

    assert capfd.readouterr().err == "during\nafter\n"


# ---------------------------------------------------------------------------------------------------------
# Through `opensora validate-inputs`
# ---------------------------------------------------------------------------------------------------------


def test_validate_inputs_shows_media_warnings_and_the_upright_size(cli, media, monkeypatch):
    # the released model's arbitrary-resolution sizing, as an install without the bundled demo model has it
    monkeypatch.setattr("opensora_cli.services.model_folders.bundled_model_dir", lambda: None)
    sideways_jpeg(media.root / "phone.jpg", 320, 640)  # shown 640 high, 320 wide
    rgba = np.full((352, 640, 4), 255, np.uint8)
    rgba[:10, :10, 3] = 0
    Image.fromarray(rgba).save(media.root / "logo.png")
    frames = [Image.new("RGB", (640, 352), color) for color in ((255, 0, 0), (0, 255, 0), (0, 0, 255))]
    frames[0].save(media.root / "anim.gif", save_all=True, append_images=frames[1:], duration=100)
    prompts = media.text("p.txt", "a", "b", "c")
    conds = media.text("c.txt", "phone.jpg", "logo.png", "anim.gif")

    result = cli("validate-inputs", "-p", prompts, "-c", conds, "--json")
    report = json.loads(result.out)

    assert result.code == 0, report["problems"]
    size = report["items"][0]["output_size"]
    assert size[0] > size[1], size  # portrait, as displayed (stored landscape)
    messages = [f"{w['file']}:{w['line']}: {w['message']}" for w in report["warnings"]]
    assert any(m.startswith(f"{conds}:2: 'logo.png': has transparent pixels") for m in messages), messages
    assert any(m.startswith(f"{conds}:3: 'anim.gif': has 3 frames") for m in messages), messages
    assert not any(":1: 'phone.jpg'" in m for m in messages), messages

    plain = cli("validate-inputs", "-p", prompts, "-c", conds)
    assert plain.code == 0
    assert f"warning: {conds}:3: 'anim.gif': has 3 frames (an animation or a multi-page file); only the first is " \
           "used — pass a video" in plain.out


def test_validate_inputs_refuses_unreadable_media_in_one_line(cli, media):
    (media.root / "bad.mp4").write_bytes(b"\0" * 100)
    Image.fromarray(np.array([[5.0]], np.float32)).save(media.root / "depth.tif")
    prompts = media.text("p.txt", "a", "b")
    conds = media.text("c.txt", "bad.mp4", "depth.tif")

    result = cli("validate-inputs", "-p", prompts, "-c", conds, "--json")
    problems = [p["message"] for p in json.loads(result.out)["problems"]]

    assert result.code == 1
    assert "cannot decode video 'bad.mp4': ffmpeg cannot open it: Invalid data found when processing input — " \
           "replace it with a readable video" in problems
    refused = "cannot decode image 'depth.tif': floating-point pixels range from 5 to 5; only 0..1 is understood"
    assert any(p.startswith(refused) for p in problems), problems


@pytest.mark.parametrize(("spec", "expected"), [
    ("img.png@x", "'img.png@x': frame index 'x' is not an integer — write @N with an integer N, e.g. @0 or @-1"),
    ("img.png@1.5", "'img.png@1.5': frame index '1.5' is not an integer"),
    ("clip.mp4@", "'clip.mp4@': frame index '' is not an integer"),
    ("img.png@ 3", "'img.png@ 3': spaces around '@' — write the index right after the path, e.g. 'img.png@3'"),
])
def test_a_non_integer_frame_index_is_named(cli, media, spec, expected):
    media.image("img.png")
    media.video("clip.mp4", 9)
    result = cli("validate-inputs", "-p", media.text("p.txt", "a"), "-c", media.text("c.txt", spec), "--json")
    problems = [p["message"] for p in json.loads(result.out)["problems"]]
    assert result.code == 1
    assert any(p.startswith(expected) for p in problems), problems
    assert not any("not a supported image or video" in p for p in problems), problems
