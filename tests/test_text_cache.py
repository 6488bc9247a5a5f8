"""The text cache (services/text_cache.py) with the bundled demo model: the same video with or without it, a
run whose prompts are all cached loads no text encoder, every input of an embedding is in its key,
`encode-prompts` fills what `sample` looks up, a damaged entry is recomputed, a bad cache folder is one
line."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from opensora_cli.services.model_folders import bundled_model_dir

FAST = ["--steps", "2"]


@pytest.fixture
def loads(monkeypatch):
    """The folders `TextEncoder.from_pretrained` was called with (it passes through to the real one)."""
    from opensora_cli.models.text_encoder import TextEncoder

    calls: list[Path] = []
    real = TextEncoder.from_pretrained

    def spy(path, *args, **kwargs):
        calls.append(Path(path))
        return real(path, *args, **kwargs)

    monkeypatch.setattr(TextEncoder, "from_pretrained", staticmethod(spy))
    return calls


@pytest.fixture
def prompts(tmp_path):
    path = tmp_path / "p.txt"
    path.write_text("a red square moves left\n")
    return path


def _sample(cli, prompts, out, *extra):
    result = cli("sample", "-p", prompts, "-o", out, "--json", *FAST, *extra)
    assert result.code == 0, result.out + result.err
    return json.loads(result.out)["results"][0]


def _encode(cli, prompts, *extra):
    result = cli("encode-prompts", "-p", prompts, "--json", *extra)
    assert result.code == 0, result.out + result.err
    return json.loads(result.out)


def _entries(folder: Path) -> list[Path]:
    return sorted((folder / "entries").glob("*/*.safetensors"))


def test_same_video_with_and_without_the_cache_and_a_cached_run_loads_no_text_encoder(
        cli, prompts, tmp_path, loads, text_cache_dir):
    first = _sample(cli, prompts, tmp_path / "a")  # fills the (empty) cache
    assert len(loads) == 1 and len(_entries(text_cache_dir)) == 1
    cached = _sample(cli, prompts, tmp_path / "b")
    assert len(loads) == 1, "a run whose prompts are all cached loaded the text encoder"
    fresh = _sample(cli, prompts, tmp_path / "c", "--no-text-cache")
    assert len(loads) == 2
    video = Path(first["video"]).read_bytes()
    assert Path(cached["video"]).read_bytes() == video and Path(fresh["video"]).read_bytes() == video
    # The cache is not part of what made a video: a rerun without it skips the outputs made with it.
    sidecar = json.loads(Path(first["sidecar"]).read_text())
    assert not any("text_cache" in key for key in sidecar)  # (step_cache changes the video; this does not)
    assert _sample(cli, prompts, tmp_path / "a", "--no-text-cache")["skipped"]


def test_every_input_of_an_embedding_is_in_its_key(cli, prompts, tmp_path, text_cache_dir):
    assert _encode(cli, prompts)["computed"] == 1
    assert _encode(cli, prompts) == {"prompts": 1, "computed": 0, "cached": 1,
                                     "text_cache": str(text_cache_dir), "device": "cpu", "dtype": "fp32",
                                     "quantize": "none"}
    # the demo model's defaults: CFG 1 (so no negative prompt is encoded, whichever is given), no template
    assert _encode(cli, prompts, "--negative-prompt", "blurry")["cached"] == 1
    for extra in (["--negative-prompt", "blurry", "--guidance-scale", "2"], ["--prompt-template"],
                  ["--guidance-scale", "2"],
                  ["--dtype", "bf16"]):
        assert _encode(cli, prompts, *extra)["computed"] == 1, extra
        assert _encode(cli, prompts, *extra)["cached"] == 1, extra
    assert len(_entries(text_cache_dir)) == 5

    # A copy of the encoder is the same encoder (its identity is its bytes); other weights are another one.
    import torch
    from safetensors.torch import load_file, save_file

    copy = tmp_path / "encoder"
    shutil.copytree(bundled_model_dir() / "text_encoder", copy)
    assert _encode(cli, prompts, "--text-encoder", copy)["cached"] == 1
    weights = load_file(copy / "model.safetensors")
    name = next(iter(weights))
    weights[name] = weights[name] + torch.ones_like(weights[name])
    save_file(weights, copy / "model.safetensors")
    assert _encode(cli, prompts, "--text-encoder", copy)["computed"] == 1


def test_encode_prompts_then_sample_hits_for_every_prompt_and_stretch(cli, tmp_path, loads, text_cache_dir):
    from .helpers import write_image

    write_image(tmp_path / "start.png", 64, 96)
    prompts = tmp_path / "p.txt"
    prompts.write_text("a red square moves left ||| @12 a red square moves right\na blue square moves up\n")
    conds = tmp_path / "c.txt"
    conds.write_text("start.png\nstart.png\n")
    assert _encode(cli, prompts) == {"prompts": 3, "computed": 3, "cached": 0,
                                     "text_cache": str(text_cache_dir), "device": "cpu", "dtype": "fp32",
                                     "quantize": "none"}
    assert len(loads) == 1
    result = cli("sample", "-p", prompts, "-c", conds, "-o", tmp_path / "out", "-n", "29", "--json", *FAST)
    assert result.code == 0, result.out + result.err
    assert len(loads) == 1, "sample loaded the text encoder although encode-prompts had cached every prompt"
    windows = json.loads(Path(json.loads(result.out)["results"][0]["sidecar"]).read_text())["windows"]
    assert {w["prompt"] for w in windows} == {"a red square moves left", "a red square moves right"}
    assert "3 prompt(s) from the text cache" in result.err


def test_encode_prompts_quantize_fills_what_a_quantised_sample_looks_up(cli, prompts, tmp_path, loads):
    pytest.importorskip("torchao")
    encoded = _encode(cli, prompts, "--quantize", "int8")
    assert encoded["computed"] == 1 and encoded["quantize"] == "int8"
    assert _encode(cli, prompts)["computed"] == 1, "an unquantised encoder's states were taken from int8 ones"
    assert len(loads) == 2
    _sample(cli, prompts, tmp_path / "out", "--quantize", "int8")
    assert len(loads) == 2, "sample --quantize int8 loaded the text encoder although encode-prompts had cached it"


def test_encode_prompts_refuses_fp8_on_a_cpu_in_one_line(cli, prompts, loads):
    result = cli("encode-prompts", "-p", prompts, "--quantize", "fp8", "--device", "cpu")
    assert result.code == 1 and "Traceback" not in result.err, result.err
    assert "--quantize" in result.err and "fp8" in result.err and len(result.err.strip().splitlines()) == 1
    assert not loads
    result = cli("encode-prompts", "-p", prompts, "--quantize", "int4")
    assert result.code in (1, 2) and "'int4' is not a quantization" in result.err, result.err


def test_a_damaged_entry_is_recomputed(cli, prompts, tmp_path, text_cache_dir):
    import torch
    from safetensors.torch import load_file as load_mapped

    def load_file(path: Path) -> dict:  # copies: the file is truncated below, under a mapping of it
        return {name: tensor.clone() for name, tensor in load_mapped(path).items()}

    def same_tensors(a: dict, b: dict) -> bool:  # (the header's key order may differ from write to write)
        return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)

    _encode(cli, prompts)
    (entry,) = _entries(text_cache_dir)
    good, tensors = entry.read_bytes(), load_file(entry)
    entry.write_bytes(good[: len(good) // 2])  # truncated
    assert _encode(cli, prompts)["computed"] == 1
    assert same_tensors(load_file(entry), tensors)
    entry.write_bytes(b"not a safetensors file")
    first = _sample(cli, prompts, tmp_path / "a")
    assert same_tensors(load_file(entry), tensors)
    assert Path(first["video"]).read_bytes() == Path(_sample(cli, prompts, tmp_path / "b", "--no-text-cache")
                                                      ["video"]).read_bytes()


def test_a_text_cache_that_is_a_file_is_one_line_and_exit_code_1(cli, prompts, tmp_path, loads):
    file = tmp_path / "cache.txt"
    file.write_text("x")
    result = cli("sample", "-p", prompts, "-o", tmp_path / "out", "--text-cache", file, *FAST)
    assert result.code == 1
    problems = [line for line in (result.out + result.err).splitlines() if "--text-cache" in line]
    assert len(problems) == 1 and "is a file" in problems[0], result.out + result.err
    assert "no model was loaded" in result.out + result.err and not loads
    assert not (tmp_path / "out").exists()

    result = cli("encode-prompts", "-p", prompts, "--text-cache", file)
    assert result.code == 1 and result.out == ""
    assert result.err.count("\n") == 1 and "--text-cache" in result.err and "is a file" in result.err
    assert not loads

    result = cli("sample", "-p", prompts, "--text-cache", tmp_path / "c", "--no-text-cache")
    assert result.code == 2 and "do not go together" in result.err


def test_the_default_folder_and_a_bad_one_nobody_named(monkeypatch, tmp_path):
    from opensora_cli.services.text_cache import ENV, default_dir, resolve_dir

    monkeypatch.delenv(ENV)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert default_dir() == (tmp_path / "opensora-cli" / "text", None)
    (tmp_path / "opensora-cli").write_text("x")  # the default folder cannot be made: run without a cache
    folder, _, problems, warnings = resolve_dir(None)
    assert folder is None and not problems and "running without the text cache" in warnings[0].message
    monkeypatch.setenv(ENV, str(tmp_path / "opensora-cli"))  # named by the variable: refused
    folder, _, problems, _ = resolve_dir(None)
    assert folder is None and problems[0].file == ENV and "is a file" in problems[0].message
    assert resolve_dir(tmp_path / "new") == (tmp_path / "new", True, [], [])
    assert resolve_dir(tmp_path / "new", disabled=True)[0] is None
