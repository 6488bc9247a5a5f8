"""`--quantize`: torchao int8 weights on the text encoder's and the transformer's Linear layers.

Floors measured on a CPU (torch 2.13, torchao 0.18; the table in MERGE-NOTES, benchmarks/quantize.py): the
int8 text states of the demo and random encoders keep a cosine of 0.998-0.9996 to the unquantised ones on
examples/demo/prompts.txt (floor 0.99: five times the distance seen); the videos' PSNR floor (25 dB) is
below every measured score (see the tests) and far above what a broken quantisation (a wrong scale, a
transposed weight) gives: noise, under 15 dB.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from opensora_cli.services.model_folders import bundled_model_dir

pytest.importorskip("torchao")

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "examples" / "demo"
PSNR_FLOOR = 25.0  # dB, int8 video against the unquantised one of the same seed
COSINE_FLOOR = 0.99  # text states, int8 encoder against the unquantised one (measured 0.998-0.9996)


def _frames(result) -> dict[int, np.ndarray]:
    from opensora_cli.services.evaluation import read_frames

    out = {}
    for entry in json.loads(result.out)["results"]:
        sidecar = json.loads(Path(entry["sidecar"]).read_text())
        out[entry["line"]] = read_frames(Path(entry["video"]), sidecar["num_frames"])
    return out


def _sidecar(result) -> dict:
    return json.loads(Path(json.loads(result.out)["results"][0]["sidecar"]).read_text())


@pytest.fixture
def lines(tmp_path):
    (tmp_path / "p.txt").write_text("a yellow triangle moves to the right\na blue square moves to the left\n")
    (tmp_path / "c.txt").write_text(f"{DEMO / 'i2v.png'}\n{DEMO / 'i2v.png'}\n")
    return ["sample", "-p", tmp_path / "p.txt", "-c", tmp_path / "c.txt", "--steps", "2", "--json"]


def test_int8_on_the_demo_model_runs_is_recorded_and_stays_close(cli, lines, tmp_path):
    from opensora_cli.services.evaluation import psnr

    plain = cli(*lines, "-o", tmp_path / "plain")
    assert plain.code == 0, plain.err
    assert _sidecar(plain)["quantize"] is None  # as before --quantize existed: old folders still skip
    again = cli(*lines, "-o", tmp_path / "plain")
    assert again.code == 0 and all(r["skipped"] for r in json.loads(again.out)["results"])
    refused = cli(*lines, "-o", tmp_path / "plain", "--quantize", "int8")
    assert refused.code == 1 and "quantize null -> 'int8'" in refused.out
    int8 = cli(*lines, "-o", tmp_path / "int8", "--quantize", "int8")
    assert int8.code == 0, int8.err
    assert _sidecar(int8)["quantize"] == "int8"
    a, b = _frames(plain), _frames(int8)
    scores = [psnr(a[line], b[line]) for line in a]
    assert min(scores) > PSNR_FLOOR, scores
    assert "Failed to load" not in int8.err and "register_constant" not in int8.err  # torchao's import noise


def test_int8_in_bf16_on_a_random_tiny_model(cli, tmp_path):
    from opensora_cli.models.registry import write_random_model_folder
    from opensora_cli.services.evaluation import psnr

    write_random_model_folder(tmp_path / "model", seed=0)
    (tmp_path / "p.txt").write_text("a red square moves up\n")
    args = ["sample", "-p", "p.txt", "--model", tmp_path / "model", "--crop-for-hw", "--height", "64", "--width",
            "96", "--num-frames", "9", "--steps", "2", "--json"]
    videos = {}
    for dtype in ("fp32", "bf16"):
        for quantize in ("none", "int8"):
            result = cli(*args, "--dtype", dtype, "--quantize", quantize, "-o", tmp_path / f"{dtype}-{quantize}")
            assert result.code == 0, result.err
            videos[dtype, quantize] = _frames(result)[1]
    # Untrained random weights amplify the rounding (25.1 dB measured at 4 steps, benchmarks/quantize.py)
    assert psnr(videos["fp32", "int8"], videos["fp32", "none"]) > 20.0
    assert psnr(videos["bf16", "int8"], videos["bf16", "none"]) > 20.0


def test_only_linear_weights_become_torchao_tensors():
    from torchao.utils import TorchAOBaseTensor

    from opensora_cli.models.loading import load_pretrained
    from opensora_cli.models.quantize import quantize_linears
    from opensora_cli.models.transformer_opensora import OpenSoraInpaint_v1_3
    from opensora_cli.services.text_cache import load_text_encoder

    demo = bundled_model_dir()
    transformer = quantize_linears(load_pretrained(OpenSoraInpaint_v1_3, demo / "transformer"), "int8")
    encoder = load_text_encoder(demo / "text_encoder", torch.float32, "cpu", "int8")
    for model in (transformer, encoder):
        linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
        assert linears and all(isinstance(m.weight, TorchAOBaseTensor) for m in linears)
        others = [p for m in model.modules() if not isinstance(m, torch.nn.Linear)
                  for p in m.parameters(recurse=False)]
        assert others and not any(isinstance(p, TorchAOBaseTensor) for p in others)  # embeddings, norms


@pytest.mark.parametrize("model", ["demo", "random"])
def test_int8_text_states_keep_their_direction(model, tmp_path):
    from opensora_cli.models.registry import write_random_model_folder
    from opensora_cli.services.text_cache import load_text_encoder

    folder = bundled_model_dir() / "text_encoder"
    if model == "random":
        folder = write_random_model_folder(tmp_path, seed=0, transformer=None, vae=None)["text_encoder"]
    plain = load_text_encoder(folder, torch.float32, "cpu")
    int8 = load_text_encoder(folder, torch.float32, "cpu", "int8")
    prompts = (DEMO / "prompts.txt").read_text().split("\n")
    with torch.no_grad():
        for prompt in filter(None, prompts):
            (a, mask), (b, _) = plain([prompt]), int8([prompt])
            keep = mask.bool().squeeze(1)
            cosine = torch.nn.functional.cosine_similarity(a.squeeze(1)[keep].flatten(),
                                                           b.squeeze(1)[keep].flatten(), dim=0).item()
            assert COSINE_FLOOR < cosine < 1.0, (prompt, cosine)  # < 1: it is quantised


def test_a_quantised_encoder_has_its_own_text_cache_entries():
    from opensora_cli.services.text_cache import Encoding

    plain = Encoding.of("enc", "", 4.5, False, "fp32", "cpu")
    assert plain == Encoding.of("enc", "", 4.5, False, "fp32", "cpu", "none")
    assert plain.key("a cat") != Encoding.of("enc", "", 4.5, False, "fp32", "cpu", "int8").key("a cat")


@pytest.mark.parametrize(("name", "message"), [
    ("fp8", "--quantize: fp8 needs a CUDA GPU of compute capability 8.9 or newer, not cpu — use --quantize int8"),
    ("int4", "--quantize: 'int4' is not a quantization — use none, int8 or fp8"),
])
def test_fp8_on_a_cpu_and_unknown_names_are_refused_in_one_line(cli, lines, tmp_path, name, message):
    result = cli(*[a for a in lines if a != "--json"], "-o", tmp_path / "out", "--quantize", name)
    said = result.out + result.err
    assert result.code == 1 and "Traceback" not in said, said
    assert [line for line in said.splitlines() if "--quantize" in line] == [message], said
    assert not (tmp_path / "out").exists()
