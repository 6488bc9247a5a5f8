"""TextEncoder: a real (tiny) T5 encoder and the file-less ByT5 tokenizer, loaded offline from a folder."""

from __future__ import annotations

import pytest
import torch
import transformers

from opensora_cli.errors import ModelLoadError
from opensora_cli.models.registry import build, randomise_weights_
from opensora_cli.models.text_encoder import (
    DEFAULT_NEGATIVE_PROMPT,
    POSITIVE_TEMPLATE,
    TextEncoder,
    apply_template,
)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    path = tmp_path_factory.mktemp("t5")
    model = build("t5-tiny")
    randomise_weights_(model, torch.Generator().manual_seed(0))
    model.save_pretrained(path, safe_serialization=True)
    transformers.ByT5Tokenizer().save_pretrained(path)
    return path


def test_encode_shapes_mask_and_padding(folder):
    encoder = TextEncoder.from_pretrained(folder, max_length=24)
    embeddings, mask = encoder(["a red fox", "a much longer prompt that will certainly be truncated here"])
    assert embeddings.shape == (2, 1, 24, 32) and mask.shape == (2, 1, 24)
    assert mask[0, 0].tolist() == [1] * 10 + [0] * 14  # 9 bytes + EOS, then padding
    assert mask[1].sum() == 24
    assert not embeddings.requires_grad


def test_padding_does_not_change_real_tokens(folder):
    short = TextEncoder.from_pretrained(folder, max_length=16)
    long = TextEncoder.from_pretrained(folder, max_length=40)
    a, _ = short(["cat"])
    b, _ = long(["cat"])
    assert torch.allclose(a[0, 0, :4], b[0, 0, :4], atol=1e-5)


def test_template_and_negative_prompt_are_the_reference_strings():
    assert apply_template("a cat") == "\n    high quality, high aesthetic, a cat\n    "
    assert POSITIVE_TEMPLATE.count("\n") == 2
    assert DEFAULT_NEGATIVE_PROMPT.startswith("\n    nsfw, lowres,") and DEFAULT_NEGATIVE_PROMPT.endswith("blurry.\n    ")
    assert "worst quality, \n    low quality" in DEFAULT_NEGATIVE_PROMPT


def test_dtype_and_determinism(folder):
    fp32 = TextEncoder.from_pretrained(folder, max_length=16)
    bf16 = TextEncoder.from_pretrained(folder, dtype=torch.bfloat16, max_length=16)
    a, _ = fp32(["hello"])
    b, _ = bf16(["hello"])
    assert b.dtype == torch.bfloat16
    assert torch.allclose(a, b.float(), atol=0.1, rtol=0.05)
    assert torch.equal(a, fp32(["hello"])[0])


def test_bad_folders_raise_clear_errors(tmp_path):
    with pytest.raises(ModelLoadError, match="no config.json"):
        TextEncoder.from_pretrained(tmp_path)
    (tmp_path / "config.json").write_text('{"model_type": "bert"}')
    with pytest.raises(ModelLoadError, match="not a T5-family encoder"):
        TextEncoder.from_pretrained(tmp_path)


def test_padding_to_the_longest_prompt_changes_nothing_downstream(folder):
    """"longest" padding (what sample and train use) gives the real tokens' states of 512-style padding, and the
    transformer, which masks padding out, the same velocity."""
    from opensora_cli.models.registry import build

    prompts = ["a red circle moves to the left", "a blue square moves up on a navy background"]
    full_states, full_mask = TextEncoder.from_pretrained(folder, max_length=96)(prompts)
    short = TextEncoder.from_pretrained(folder, max_length=96, padding="longest")
    states, mask = short(prompts)
    assert states.shape[2] == mask.shape[2] == len(prompts[1].encode()) + 1 < 96
    assert torch.equal(mask, full_mask[..., : mask.shape[2]])
    assert torch.allclose(states * mask[..., None], full_states[:, :, : states.shape[2]] * mask[..., None], atol=1e-5)

    transformer = build("OpenSoraInpaint_v1_3-tiny").eval()
    randomise_weights_(transformer, torch.Generator().manual_seed(1))
    latents = torch.randn(2, 20, 2, 8, 12, generator=torch.Generator().manual_seed(2))
    timestep = torch.tensor([10, 700])
    with torch.no_grad():
        a = transformer(latents, timestep, encoder_hidden_states=full_states, encoder_attention_mask=full_mask)[0]
        b = transformer(latents, timestep, encoder_hidden_states=states, encoder_attention_mask=mask)[0]
    assert torch.allclose(a, b, atol=1e-5)
    with pytest.raises(ValueError, match="padding"):
        TextEncoder.from_pretrained(folder, padding="right")
