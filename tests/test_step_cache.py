"""`--step-cache`: diffusers' First Block Cache and TaylorSeer on our transformer.

At threshold 0 (First Block Cache) or interval 1 (TaylorSeer) the video is the uncached one, bit for bit; with
caching on, fewer blocks run; the cache starts afresh with every video; the policy is part of the request;
--sp ranks agree on every skip.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from opensora_cli.schemas.step_cache import StepCache

DEMO = Path(__file__).resolve().parents[1] / "examples" / "demo"


@pytest.fixture(scope="module")
def pipe():
    from opensora_cli.pipelines.pipeline_inpaint import OpenSoraInpaintPipeline
    from opensora_cli.services.model_folders import bundled_model_dir

    pipeline = OpenSoraInpaintPipeline.from_pretrained(bundled_model_dir())
    pipeline.set_progress_bar_config(disable=True)
    return pipeline


def _video(pipe, seed: int = 1, steps: int = 6) -> np.ndarray:
    return pipe("a yellow triangle moves to the right", conditions=[str(DEMO / "i2v.png")], num_frames=17,
                num_inference_steps=steps, guidance_scale=4.5, generator=torch.Generator().manual_seed(seed)).videos[0]


def _with_cache(pipe, policy: str):
    from opensora_cli.models.step_cache import enable_step_cache

    enable_step_cache(pipe.transformer, StepCache.parse(policy))


def _feed_forward_calls(pipe, monkeypatch) -> list[int]:
    calls = [0]
    for block in pipe.transformer.transformer_blocks:
        forward = block.ff.forward

        def counted(*args, _forward=forward, **kwargs):
            calls[0] += 1
            return _forward(*args, **kwargs)

        monkeypatch.setattr(block.ff, "forward", counted)
    return calls


@pytest.mark.parametrize("policy", ["first-block:0", "taylorseer:1"])
def test_the_uncached_setting_of_each_policy_is_the_uncached_video(pipe, policy):
    base = _video(pipe)
    _with_cache(pipe, policy)
    try:
        assert np.array_equal(_video(pipe), base)
    finally:
        pipe.transformer.disable_cache()


# the most feed-forward calls of 6 steps for a model of `blocks` blocks
@pytest.mark.parametrize(("policy", "most"), [("first-block:10", lambda blocks: 6 + (blocks - 1)),
                                              ("taylorseer:3", lambda blocks: 4 * blocks)])
def test_caching_runs_fewer_blocks_and_starts_afresh_with_every_video(pipe, monkeypatch, policy, most):
    blocks = len(pipe.transformer.transformer_blocks)
    most = most(blocks)
    calls = _feed_forward_calls(pipe, monkeypatch)
    base = _video(pipe)
    assert calls[0] == 6 * blocks
    _with_cache(pipe, policy)
    try:
        calls[0] = 0
        first = _video(pipe, seed=2)
        # first-block:10 runs block 1 on every step and the others on the first step only; taylorseer:3 runs
        # every block on the first 3 steps, then on every 3rd
        assert calls[0] <= most < 6 * blocks
        second = _video(pipe, seed=2)  # nothing of the first video's cache is left: the same video again
        assert np.array_equal(first, second)
        assert not np.array_equal(_video(pipe), base)
    finally:
        pipe.transformer.disable_cache()


def test_the_policy_is_part_of_the_request_and_bad_ones_are_refused(cli, tmp_path):
    args = ["sample", "--prompts", DEMO / "prompts.txt", "--conds", DEMO / "conds.txt", "--steps", "2", "--json"]
    off = cli(*args, "-o", tmp_path / "out")
    assert off.code == 0, off.err
    assert json.loads(Path(json.loads(off.out)["results"][0]["sidecar"]).read_text())["step_cache"] is None
    refused = cli(*args, "-o", tmp_path / "out", "--step-cache", "first-block")
    assert refused.code == 1 and "step_cache null -> 'first-block:0.1'" in refused.out
    cached = cli(*args, "-o", tmp_path / "cached", "--step-cache", "taylorseer")
    sidecar = json.loads(Path(json.loads(cached.out)["results"][0]["sidecar"]).read_text())
    assert cached.code == 0 and sidecar["step_cache"] == "taylorseer:2"
    for policy, message in [("tylorseer", "did you mean 'taylorseer'?"), ("first-block:-1", "must be >= 0"),
                            ("taylorseer:0", "whole number >= 1"), ("first-block:nan", "must be >= 0")]:
        result = cli(*args, "-o", tmp_path / "bad", "--step-cache", policy)
        text = result.out + result.err
        assert result.code == 1 and "--step-cache" in text and message in text and "Traceback" not in text, text


@pytest.fixture(scope="module")
def sp_model(tmp_path_factory):
    from .helpers import write_short_model

    return write_short_model(tmp_path_factory.mktemp("sp-model"), steps=4)


@pytest.mark.slow
def test_sequence_parallel_ranks_agree_on_every_skip(installed_cli, sp_model, tmp_path):
    """Each rank holds half the frames; with First Block Cache they must still skip the same steps (else the
    skipped blocks' all-to-alls would wait forever), and make the single process's video."""
    from .helpers import write_image

    write_image(tmp_path / "start.png", 64, 96, color=(200, 30, 30))
    (tmp_path / "p.txt").write_text("a red square\n")
    (tmp_path / "c.txt").write_text("start.png\n")
    args = ["sample", "-p", "p.txt", "-c", "c.txt", "--model", sp_model, "--json", "--step-cache", "first-block:10"]
    one_thread = {"OMP_NUM_THREADS": "1"}
    single = installed_cli(*args, "-o", "single", cwd=tmp_path, timeout=300, env=one_thread)
    multi = installed_cli(*args, "-o", "sp", "--nproc", "2", "--sp", cwd=tmp_path, timeout=300, env=one_thread)
    assert single.code == 0 and multi.code == 0, multi.err
    import decord

    name = json.loads(single.out)["results"][0]["video"].rsplit("/", 1)[-1]
    a, b = (decord.VideoReader(str(tmp_path / folder / name)).get_batch(list(range(13))).asnumpy()
            for folder in ("single", "sp"))
    diff = np.abs(a.astype(int) - b.astype(int))  # attention sums in another order over the gathered sequence
    assert diff.mean() < 0.1 and diff.max() <= 24


def test_the_memory_estimate_counts_what_each_cache_keeps():
    from opensora_cli.services import memory
    from opensora_cli.services.model_folders import bundled_model_dir

    root = bundled_model_dir()
    dirs = {name: root / name for name in ("transformer", "vae", "text_encoder")}
    peak = {policy: memory.estimate(dirs, 17, 64, 96, "fp32", "cpu", True, True, step_cache=policy).activations
            for policy in ("off", "first-block:0.2", "taylorseer:3")}
    assert peak["off"] < peak["first-block:0.2"] < peak["taylorseer:3"]
