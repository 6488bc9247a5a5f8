"""Sequence parallelism over latent time (the reference's `--sp`; the all-to-all of DeepSpeed-Ulysses).

Rank r of sp holds latent frames [r * T / sp, (r + 1) * T / sp) of the transformer's input: tokens are
(t, y, x) row-major, so the ranks' slices, concatenated in rank order, are the full sequence. Around every
self-attention one all-to-all trades sequence for heads, (B, N / sp, heads, Dh) -> (B, N, heads / sp, Dh), and a
second trades them back (see `models/attention.py`). Everything outside the transformer is full size and
identical on all ranks (`shard_time` and `gather_time` around the model), so results do not depend on sp.

Requirements: T % sp == 0 and heads % sp == 0 (`check_sequence_parallel` says what to change).
"""

from __future__ import annotations

import math

import torch
import torch.distributed as dist

from opensora_cli.distributed.device import DistContext
from opensora_cli.models.attention import AttnProcessor

VAE_SCALE_FACTOR_T = 4  # WF-VAE: 1 + 4k pixel frames <-> 1 + k latent frames

# ------------------------------------------------------------------------------------------------------------
# All-to-all
# ------------------------------------------------------------------------------------------------------------


def _all_to_all(x: torch.Tensor, group, to_full_sequence: bool) -> torch.Tensor:
    """(B, N / sp, heads, Dh) -> (B, N, heads / sp, Dh) when `to_full_sequence`, else the inverse."""
    sp = dist.get_world_size(group)
    batch, seq, heads, head_dim = x.shape
    # all_to_all_single sends chunk j of dim 0 to rank j; chunk j of its output is what rank j sent.
    if to_full_sequence:  # send head slice j to rank j, receive sequence slice j from rank j
        send = x.view(batch, seq, sp, heads // sp, head_dim).permute(2, 0, 1, 3, 4).contiguous()
    else:  # send sequence slice j to rank j, receive head slice j from rank j
        send = x.view(batch, sp, seq // sp, heads, head_dim).transpose(0, 1).contiguous()
    received = torch.empty_like(send)
    dist.all_to_all_single(received, send, group=group)  # (sp = source rank, B, S, H, Dh)
    if to_full_sequence:  # (sp, B, S, H/sp, Dh) -> (B, sp*S, H/sp, Dh): a view when B = 1
        return received.transpose(0, 1).reshape(batch, sp * seq, heads // sp, head_dim)
    # (sp, B, S/sp, H, Dh) -> (B, S/sp, sp*H, Dh)
    return received.permute(1, 2, 0, 3, 4).reshape(batch, seq // sp, sp * heads, head_dim)


class _SequenceAllToAll(torch.autograd.Function):
    """`_all_to_all` with autograd: the gradient of an all-to-all is the reverse all-to-all."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, group, to_full_sequence: bool) -> torch.Tensor:
        ctx.group, ctx.to_full_sequence = group, to_full_sequence
        return _all_to_all(x, group, to_full_sequence)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return _all_to_all(grad, ctx.group, not ctx.to_full_sequence), None, None


def sequence_all_to_all(x: torch.Tensor, group: dist.ProcessGroup | None = None,
                        to_full_sequence: bool = True) -> torch.Tensor:
    """The sequence <-> heads all-to-all, differentiable.

    Args:
        x: (B, N / sp, heads, Dh) to gather the sequence (`to_full_sequence`), or (B, N, heads / sp, Dh) to
            scatter it back. Sequence slices are ordered by rank in `group` (None: the default group).

    Returns:
        (B, N, heads / sp, Dh), or (B, N / sp, heads, Dh).
    """
    return _SequenceAllToAll.apply(x, group, to_full_sequence)


# ------------------------------------------------------------------------------------------------------------
# Attention processor
# ------------------------------------------------------------------------------------------------------------


class SequenceParallelAttnProcessor(AttnProcessor):
    """`AttnProcessor` for a model whose input is one rank's slice of latent time.

    Install it in every layer with `model.set_attn_processor(SequenceParallelAttnProcessor(ctx))` and give
    the model `shard_time(latents, ctx)`; full-length masks and the whole text are given unchanged.

    Args:
        ctx: the context whose group is the sequence-parallel group; its size is sp. The group is read through
            `ctx` at each call and never kept, so `shutdown(ctx)` can free it while models still hold this.
    """

    def __init__(self, ctx: DistContext):
        self.ctx = ctx
        self.sp = ctx.world_size

    @property
    def group(self) -> dist.ProcessGroup | None:
        return self.ctx.group

    def gather_sequence(self, query: torch.Tensor, key: torch.Tensor,
                        value: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Each (B, N / sp, heads, Dh) -> (B, N, heads / sp, Dh), one collective per tensor: stacking q, k, v
        saves two launches but needs a copy out of the stacked buffer (separate outputs are views when B = 1);
        on CPU (gloo, 2 ranks) it tied at 6 MiB and was 1.2-2.5x slower at 95-190 MiB."""
        heads = query.shape[2]
        if heads % self.sp:
            raise ValueError(f"{heads} attention heads are not divisible by {self.sp} processes")
        return tuple(sequence_all_to_all(x, self.group, to_full_sequence=True) for x in (query, key, value))

    def scatter_sequence(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """(B, N, heads / sp, Dh) -> (B, N / sp, heads, Dh)."""
        return sequence_all_to_all(hidden_states, self.group, to_full_sequence=False)

    def full_grid(self, grid: tuple[int, int, int]) -> tuple[int, int, int]:
        """The local token grid (T / sp, H, W) -> the full grid (T, H, W)."""
        frames, height, width = grid
        return frames * self.sp, height, width


# ------------------------------------------------------------------------------------------------------------
# Checks and sharding of the model input / output
# ------------------------------------------------------------------------------------------------------------


def _or_list(values: list[int]) -> str:
    words = [str(v) for v in values]
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " or " + words[-1]


def _frames_for(latent_frames: int) -> int:
    return (latent_frames - 1) * VAE_SCALE_FACTOR_T + 1


def check_sequence_parallel(latent_frames: int, num_heads: int, world_size: int) -> list[str]:
    """Why `world_size` processes cannot share a video of `latent_frames` latent frames; [] when they can.

    Args:
        latent_frames: T of the latents (1 + (num_frames - 1) / 4 for the WF-VAE).
        num_heads: the transformer's attention heads.
        world_size: the number of processes (the sequence-parallel degree).

    Returns:
        One message per unmet requirement, each naming the process counts (and frame counts) that work.
    """
    if world_size <= 1:
        return []
    common = math.gcd(latent_frames, num_heads)
    working = [n for n in range(2, common + 1) if common % n == 0]  # the counts that divide both
    nproc_hint = f"--nproc {_or_list(working)}" if working else "--nproc 1"
    frames = _frames_for(latent_frames)
    problems = []
    if latent_frames == 1:
        problems.append(f"{frames} frame (a single image) cannot be split across {world_size} processes: use --nproc 1")
    elif latent_frames % world_size:
        message = (f"{frames} frames give {latent_frames} latent frames, not divisible by {world_size} processes: "
                   f"use {nproc_hint}")
        if num_heads % world_size == 0:  # then a frame count fixes it too
            below = latent_frames // world_size * world_size
            counts = [_frames_for(n) for n in (below, below + world_size) if n > 1]
            message += f" (or --num-frames {_or_list(counts)})"
        problems.append(message)
    if num_heads % world_size:
        problems.append(f"the model's {num_heads} attention heads are not divisible by {world_size} processes: "
                        f"use {nproc_hint}")
    return problems


def shard_time(x: torch.Tensor, ctx: DistContext) -> torch.Tensor:
    """This rank's slice of latent time.

    Args:
        x: (B, C, T, H, W), identical on all ranks; T divisible by ctx.world_size.

    Returns:
        (B, C, T / sp, H, W), frames [rank * T / sp, (rank + 1) * T / sp) (a view).
    """
    if ctx.world_size == 1:
        return x
    frames = x.shape[2]
    if frames % ctx.world_size:
        raise ValueError(f"{frames} latent frames are not divisible by {ctx.world_size} processes")
    local = frames // ctx.world_size
    return x.narrow(2, ctx.rank * local, local)


def gather_time(x: torch.Tensor, ctx: DistContext) -> torch.Tensor:
    """Reassemble the ranks' slices of latent time (inverse of `shard_time`; not differentiable).

    Args:
        x: (B, C, T / sp, H, W), this rank's slice.

    Returns:
        (B, C, T, H, W), identical on all ranks.
    """
    if ctx.world_size == 1:
        return x
    x = x.contiguous()
    slices = [torch.empty_like(x) for _ in range(ctx.world_size)]
    dist.all_gather(slices, x, group=ctx.group)
    return torch.cat(slices, dim=2)
