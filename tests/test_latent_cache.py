"""The training latent cache (`opensora train --latent-cache-mib`): a real tiny WF-VAE, real training runs."""

from __future__ import annotations

import json

import pytest
import torch

from opensora_cli.models.registry import build
from opensora_cli.training.latent_cache import LatentCache

from .helpers import train_args


@pytest.fixture(scope="module")
def vae():
    torch.manual_seed(0)
    return build("WFVAEModel_D8_4x8x8-tiny").eval().requires_grad_(False)


def _clips(n: int, seed: int) -> torch.Tensor:
    return torch.rand(n, 3, 5, 32, 32, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def test_cached_latents_are_the_encodings_and_repeats_are_hits(vae):
    calls: list[int] = []

    def encode(x):
        calls.append(x.shape[0])
        return vae.encode_latents(x)

    cache = LatentCache(encode, max_bytes=2**20)
    a, b = _clips(3, 1), _clips(2, 2)
    first, second = cache(a, b, device=torch.device("cpu"), dtype=torch.float32)
    assert calls == [5]  # every miss of both batches in one VAE pass
    with torch.no_grad():
        assert torch.allclose(first, vae.encode_latents(a), atol=1e-5)
        assert torch.allclose(second, vae.encode_latents(b), atol=1e-5)
    mixed = torch.cat([b[:1], _clips(1, 3), a[2:]])  # two seen clips, one new
    (again,) = cache(mixed, device=torch.device("cpu"), dtype=torch.float32)
    assert calls == [5, 1] and (cache.hits, cache.misses) == (2, 6)
    assert torch.equal(again[0], second[0]) and torch.equal(again[2], first[2])
    # a clip that differs in one value is a different clip
    changed = a[:1].clone()
    changed[0, 0, 0, 0, 0] += 0.5
    cache(changed, device=torch.device("cpu"), dtype=torch.float32)
    assert cache.misses == 7


def test_the_cache_stays_within_its_memory_dropping_the_oldest(vae):
    one = vae.encode_latents(_clips(1, 0))
    size = one.numel() * 4
    cache = LatentCache(vae.encode_latents, max_bytes=2 * size)
    clips = _clips(3, 4)
    cache(clips, device=torch.device("cpu"), dtype=torch.float32)
    assert len(cache) == 2 and cache.bytes <= 2 * size
    cache(clips[2:], clips[1:2], device=torch.device("cpu"), dtype=torch.float32)  # the newest two are kept
    assert cache.hits == 2
    cache(clips[:1], device=torch.device("cpu"), dtype=torch.float32)  # the first was dropped
    assert cache.misses == 4


def test_training_with_the_cache_gives_the_same_losses(cli, data_file, model_dir, tmp_path):
    common = ("--max-train-steps", "12", "--checkpointing-steps", "12", "--vae-posterior-mean")
    plain = cli(*train_args(data_file, model_dir, tmp_path / "plain", *common))
    cached = cli(*train_args(data_file, model_dir, tmp_path / "cached", *common, "--latent-cache-mib", "64"))
    assert plain.code == 0 and cached.code == 0, plain.err + cached.err
    plain_run, cached_run = json.loads(plain.out.splitlines()[-1]), json.loads(cached.out.splitlines()[-1])
    assert plain_run["latent_cache"] is None
    stats = cached_run["latent_cache"]
    # 10 records in batches of 2 over 12 steps: later epochs reuse the clean clips' latents
    assert stats["hits"] > 0 and stats["hits"] + stats["misses"] == 2 * 2 * 12
    assert cached_run["losses"] == pytest.approx(plain_run["losses"], rel=1e-4, abs=1e-6)


def test_the_cache_refuses_posterior_samples(cli, data_file, model_dir, tmp_path):
    result = cli(*train_args(data_file, model_dir, tmp_path / "out", "--latent-cache-mib", "64"))
    assert result.code == 1
    text = result.out + result.err
    assert "--latent-cache-mib" in text and "--vae-posterior-mean" in text and "Traceback" not in text
    assert not (tmp_path / "out").exists()
