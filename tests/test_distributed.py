"""Device selection and sequence parallelism (tests/dist_worker.py runs in 2 gloo processes, through the
launcher; the launcher itself is tested in test_launch.py)."""

from __future__ import annotations

import importlib.util
import json

import pytest
import torch

from opensora_cli.distributed.device import DistContext, backend_for, init_from_env, resolve_device, shutdown
from opensora_cli.distributed.launch import is_distributed_child, launch
from opensora_cli.distributed.sequence_parallel import check_sequence_parallel, gather_time, shard_time
from opensora_cli.errors import MissingDependencyError, UsageError

from .helpers import REPO

LAUNCHER_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


@pytest.fixture
def single_process(monkeypatch):
    for name in LAUNCHER_ENV:
        monkeypatch.delenv(name, raising=False)


# ------------------------------------------------------------------------------------------------------------
# check_sequence_parallel
# ------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("world_size", [1, 2, 3, 4, 6, 8, 12, 24])
def test_released_model_at_93_frames_accepts_every_common_divisor(world_size):
    assert check_sequence_parallel(24, 24, world_size) == []  # 3 and 6 too: the text is no longer sharded


def test_frames_not_divisible_names_the_process_and_frame_counts_that_work():
    assert check_sequence_parallel(22, 24, 4) == [
        "85 frames give 22 latent frames, not divisible by 4 processes: use --nproc 2 "
        "(or --num-frames 77 or 93)"
    ]
    # below one multiple there is no smaller frame count to offer
    assert check_sequence_parallel(7, 24, 8) == [
        "25 frames give 7 latent frames, not divisible by 8 processes: use --nproc 1 (or --num-frames 29)"
    ]


def test_heads_not_divisible_offers_no_frame_count():
    assert check_sequence_parallel(8, 6, 4) == [
        "the model's 6 attention heads are not divisible by 4 processes: use --nproc 2"
    ]
    # 5 divides neither: no frame count can help, so none is offered
    assert check_sequence_parallel(24, 24, 5) == [
        "93 frames give 24 latent frames, not divisible by 5 processes: use --nproc 2, 3, 4, 6, 8, 12 or 24",
        "the model's 24 attention heads are not divisible by 5 processes: "
        "use --nproc 2, 3, 4, 6, 8, 12 or 24",
    ]


def test_a_single_image_cannot_be_split():
    assert check_sequence_parallel(1, 24, 2) == [
        "1 frame (a single image) cannot be split across 2 processes: use --nproc 1"
    ]


# ------------------------------------------------------------------------------------------------------------
# Devices and context
# ------------------------------------------------------------------------------------------------------------


def test_resolve_device(single_process):
    assert resolve_device("cpu") == torch.device("cpu")
    if not torch.cuda.is_available() and importlib.util.find_spec("torch_npu") is None:
        assert resolve_device(None) == torch.device("cpu")
    with pytest.raises(UsageError, match=r"--device must be one of cpu, cuda, npu, got 'tpu'"):
        resolve_device("tpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_a_gpu_is_a_usage_error():
    with pytest.raises(UsageError, match="--device cuda, but no CUDA GPU is visible"):
        resolve_device("cuda")


@pytest.mark.skipif(importlib.util.find_spec("torch_npu") is not None, reason="torch_npu is installed")
def test_npu_without_torch_npu_names_the_install_command():
    with pytest.raises(MissingDependencyError) as info:
        resolve_device("npu")
    assert str(info.value) == (
        "--device npu needs torch_npu: pip install 'opensora-cli[npu]' (Ascend CANN toolkit required)"
    )


def test_backend_for():
    kinds = ("cpu", torch.device("cpu"), "cuda:1", torch.device("cuda", 0), "npu:0", "npu")
    assert [backend_for(d) for d in kinds] == ["gloo", "gloo", "nccl", "nccl", "hccl", "hccl"]


def test_single_process_context_has_no_group(single_process):
    assert not is_distributed_child()
    ctx = init_from_env("cpu")
    assert (ctx.rank, ctx.world_size, ctx.local_rank, ctx.group) == (0, 1, 0, None)
    assert ctx.device == torch.device("cpu")
    assert ctx.is_main
    shutdown(ctx)  # nothing to destroy


def test_shard_time_takes_this_ranks_contiguous_frames():
    x = torch.arange(2 * 3 * 6 * 2 * 2).reshape(2, 3, 6, 2, 2)
    slices = [shard_time(x, DistContext(r, 3, r, torch.device("cpu"))) for r in range(3)]
    assert torch.equal(torch.cat(slices, dim=2), x)
    assert torch.equal(slices[1], x[:, :, 2:4])
    single = DistContext(0, 1, 0, torch.device("cpu"))
    assert shard_time(x, single) is x and gather_time(x, single) is x
    with pytest.raises(ValueError, match="6 latent frames are not divisible by 4 processes"):
        shard_time(x, DistContext(0, 4, 0, torch.device("cpu")))


# ------------------------------------------------------------------------------------------------------------
# Several processes (gloo)
# ------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def two_rank_report(tmp_path_factory):
    """Run tests/dist_worker.py in 2 processes once; {rank: report}."""
    out = tmp_path_factory.mktemp("sp")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(REPO)  # `python -m tests.dist_worker` imports from the working directory
        assert launch(2, [str(out)], module="tests.dist_worker") == 0
    return {rank: json.loads((out / f"rank{rank}.json").read_text()) for rank in range(2)}


@pytest.mark.slow
def test_shutdown_frees_the_group_while_models_still_hold_processors(two_rank_report):
    for report in two_rank_report.values():
        assert report["group_freed"]
        assert report["shutdown_warnings"] == []


@pytest.mark.slow
def test_children_see_their_own_rank(two_rank_report):
    for rank, report in two_rank_report.items():
        assert (report["rank"], report["world_size"]) == (rank, 2)
        assert report["seen_ranks"] == [[0, 0], [1, 1]]  # (RANK, LOCAL_RANK) of each child


@pytest.mark.slow
@pytest.mark.parametrize("case", ["T4_unpadded", "T4_padded", "T2_skiparse_pad_batch2"])
def test_sequence_parallel_equals_single_process(two_rank_report, case):
    for report in two_rank_report.values():
        result = report["cases"][case]
        assert result["local_frames"] * 2 in (4, 2)
        assert result["output_max_abs_diff"] <= 1e-5, result
        assert result["output_max_abs"] > 1  # a real output, not zeros
        assert max(result["grad_max_rel_diff"].values()) <= 1e-5, result
        # only self-attention communicates: one gather per block, none for cross-attention
        assert result["gathers_per_forward"] == report["num_layers"]

