"""Broken model folders: every problem is one ModelLoadError line naming the file (and the field), and nothing
large is built to find out."""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys

import pytest
import torch

from opensora_cli.errors import ModelLoadError
from opensora_cli.models import loading
from opensora_cli.models.autoencoder_wfvae import WFVAEModel
from opensora_cli.models.loading import WEIGHTS_NAME, load_pretrained, load_torch_checkpoint, read_state_dict
from opensora_cli.models.registry import write_random_model_folder
from opensora_cli.models.transformer_opensora import OpenSoraInpaint_v1_3


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    root = tmp_path_factory.mktemp("model")
    return write_random_model_folder(root, text_encoder=None, seed=5)


@pytest.fixture
def copy(source, tmp_path):
    """copy("vae", **config_changes) -> a fresh copy of that folder with its config.json edited."""

    def make(part: str, **changes):
        folder = tmp_path / part
        shutil.copytree(source[part], folder)
        config = json.loads((folder / "config.json").read_text())
        (folder / "config.json").write_text(json.dumps({**config, **changes}))
        return folder

    return make


def one_line(exc: pytest.ExceptionInfo) -> str:
    message = str(exc.value)
    assert "\n" not in message and "Traceback" not in message
    return message


# -- config.json ---------------------------------------------------------------------------------------------


def test_a_huge_num_layers_is_refused_before_building(copy, monkeypatch):
    folder = copy("transformer", num_layers=100_000)

    def no_build(*args, **kwargs):
        raise AssertionError("the model was built")

    monkeypatch.setattr(OpenSoraInpaint_v1_3, "from_config", no_build)
    with pytest.raises(ModelLoadError) as exc:
        load_pretrained(OpenSoraInpaint_v1_3, folder)
    assert one_line(exc).startswith(f"{folder / 'config.json'}: num_layers is 100000; expected 1 to 1024")


@pytest.mark.parametrize(
    ("part", "changes", "message"),
    [
        ("transformer", {"num_layrs": 4},
         "unknown field 'num_layrs' for OpenSoraInpaint_v1_3 — did you mean 'num_layers'?"),
        ("transformer", {"num_layers": "4"}, 'num_layers is "4"; expected an integer'),
        ("transformer", {"num_layers": 4.0}, "num_layers is 4.0; expected an integer"),
        ("transformer", {"attention_bias": 1}, "attention_bias is 1; expected true or false"),
        ("transformer", {"attention_head_dim": -24}, "attention_head_dim is -24; expected 1 to 65536"),
        ("transformer", {"sample_size_h": "big"},
         'sample_size_h is "big"; expected an integer, a list of integers or null'),
        ("transformer", {"dropout": 1.5}, "dropout is 1.5; expected at least 0 and below 1"),
        ("transformer", {"cross_attention_dim": 50}, "cross_attention_dim must equal num_attention_heads"),
        ("vae", {"base_channels": 0}, "base_channels is 0; expected 1 to 65536"),
        ("vae", {"scale": [1.0, "x"]}, 'scale is [1.0, "x"]; expected a list of numbers'),
        ("vae", {"norm_type": "batchnorm"}, "norm_type='batchnorm'; expected one of"),
    ],
)
def test_invalid_config_fields_are_named(copy, part, changes, message):
    folder = copy(part, **changes)
    model_class = OpenSoraInpaint_v1_3 if part == "transformer" else WFVAEModel
    with pytest.raises(ModelLoadError) as exc:
        load_pretrained(model_class, folder, meta_init=part == "transformer")
    assert one_line(exc).startswith(f"{folder / 'config.json'}: ") and message in str(exc.value)


def test_several_problems_are_counted(copy):
    folder = copy("transformer", num_layers=0, bogus=1)
    with pytest.raises(ModelLoadError, match=r"num_layers is 0; .* \(and 1 more problem\(s\): bogus\)"):
        load_pretrained(OpenSoraInpaint_v1_3, folder)


def test_released_bookkeeping_fields_are_accepted(copy):
    """diffusers' EMAModel writes its fields into the config it saves; `_*` fields are diffusers' own."""
    folder = copy("transformer", decay=0.9999, optimization_step=2500, _name_or_path="x", sample_size_h=[44, 80])
    assert len(load_pretrained(OpenSoraInpaint_v1_3, folder).transformer_blocks) == 4


def test_not_json_names_the_line(copy):
    folder = copy("vae")
    (folder / "config.json").write_text('{\n  "latent_dim": 8,\n  oops\n}')
    with pytest.raises(ModelLoadError) as exc:
        load_pretrained(WFVAEModel, folder)
    assert one_line(exc).startswith(f"{folder / 'config.json'}:3:3: not valid JSON")
    (folder / "config.json").write_text("[1, 2]")
    with pytest.raises(ModelLoadError, match="holds a JSON list, not an object"):
        load_pretrained(WFVAEModel, folder)


def test_a_model_too_large_for_memory_is_refused_with_its_size(copy, monkeypatch):
    # 8 heads x 768 and 32 layers: 19.7 B parameters (73 GiB in fp32), sized on the meta device.
    folder = copy("transformer", num_attention_heads=8, attention_head_dim=768, cross_attention_dim=6144,
                  num_layers=32)
    monkeypatch.setattr(loading, "available_host_memory", lambda: 8 * 2**30)
    with pytest.raises(ModelLoadError) as exc:
        load_pretrained(OpenSoraInpaint_v1_3, folder)
    message = one_line(exc)
    assert message.startswith(f"{folder / 'config.json'}: this config describes a 19.7")
    assert re.search(r"B-parameter model that needs 73\.\d GiB of host memory in float32", message)
    assert "more than the 8.0 GiB available" in message and "attention_head_dim 768 (default 96)" in message


def test_available_memory_is_a_plausible_number():
    available = loading.available_host_memory()
    assert available is None or 0 < available < 2**50


def test_the_memory_check_counts_the_real_build_of_the_vae(source, monkeypatch):
    """The VAE is built for real (fp32) and its weights read on top: both must fit."""
    model = load_pretrained(WFVAEModel, source["vae"])
    numel = sum(t.numel() for t in (*model.parameters(), *model.buffers()))
    monkeypatch.setattr(loading, "available_host_memory", lambda: numel * 4 + numel * 2 - 1)
    with pytest.raises(ModelLoadError, match="GiB of host memory in float16"):
        load_pretrained(WFVAEModel, source["vae"], dtype=torch.float16)
    monkeypatch.setattr(loading, "available_host_memory", lambda: numel * 4 + numel * 2)
    assert load_pretrained(WFVAEModel, source["vae"], dtype=torch.float16) is not None


# -- weight files --------------------------------------------------------------------------------------------


def test_a_truncated_safetensors_file_is_named(copy):
    folder = copy("vae")
    weights = folder / WEIGHTS_NAME
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    with pytest.raises(ModelLoadError) as exc:
        load_pretrained(WFVAEModel, folder)
    assert one_line(exc).startswith(f"{weights}: not a readable safetensors file (")
    assert "damaged or incomplete" in str(exc.value)


def test_a_corrupt_shard_index_is_named(copy):
    folder = copy("transformer")
    (folder / loading.INDEX_NAME).write_text("{")
    with pytest.raises(ModelLoadError, match=r"index\.json:1:2: not valid JSON"):
        load_pretrained(OpenSoraInpaint_v1_3, folder)


def _ckpt_folder(copy, payload) -> tuple:
    folder = copy("vae")
    state = read_state_dict(folder)
    (folder / WEIGHTS_NAME).unlink()
    ckpt = folder / "model.ckpt"
    torch.save(payload(state), ckpt)
    return folder, ckpt, state


def test_a_weights_only_ckpt_loads(copy):
    folder, _, state = _ckpt_folder(copy, lambda state: {"state_dict": {"module." + k: v for k, v in state.items()}})
    model = load_pretrained(WFVAEModel, folder)
    assert torch.equal(model.state_dict()["decoder.conv_out.weight"], state["decoder.conv_out.weight"])


def test_a_pickled_ckpt_is_refused_with_a_conversion_that_works(copy):
    folder, ckpt, state = _ckpt_folder(copy, lambda state: {"state_dict": state, "args": argparse.Namespace(lr=1)})
    with pytest.raises(ModelLoadError) as exc:
        load_pretrained(WFVAEModel, folder)
    message = one_line(exc)
    assert message.startswith(f"{ckpt}: not a weights-only checkpoint: it holds pickled Python objects such as "
                              "argparse.Namespace")
    assert "weights_only=False" not in message.split("python -c")[0]  # torch's advice is not passed on
    # The suggested one-liner, run as given, makes the folder load.
    command = message.split("python -c ", 1)[1]
    assert command.startswith('"') and command.endswith('"')
    subprocess.run([sys.executable, "-c", command[1:-1]], check=True)
    ckpt.unlink()
    model = load_pretrained(WFVAEModel, folder)
    assert torch.equal(model.state_dict()["encoder.conv_out.conv.weight"], state["encoder.conv_out.conv.weight"])


@pytest.mark.parametrize("damage", ["truncate", "garbage", "empty"])
def test_a_damaged_ckpt_is_named(tmp_path, damage):
    path = tmp_path / "model.ckpt"
    torch.save({"state_dict": {"w": torch.ones(64)}}, path)
    data = path.read_bytes()
    path.write_bytes({"truncate": data[: len(data) // 2], "garbage": b"not a checkpoint", "empty": b""}[damage])
    with pytest.raises(ModelLoadError) as exc:
        load_torch_checkpoint(path)
    assert one_line(exc).startswith(f"{path}: not a readable checkpoint (")
    assert "damaged or incomplete" in str(exc.value)


def test_a_pickle_that_would_run_code_is_not_run(tmp_path):
    import pickle

    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    path = tmp_path / "model.ckpt"
    path.write_bytes(pickle.dumps({"state_dict": Payload()}, protocol=2))
    with pytest.raises(ModelLoadError) as exc:
        load_torch_checkpoint(path)
    assert not marker.exists()
    assert one_line(exc).startswith(f"{path}: not a weights-only checkpoint: it holds pickled Python objects such "
                                    "as io.open")
