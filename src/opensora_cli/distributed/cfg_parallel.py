"""CFG-parallel: the two halves of classifier-free guidance (unconditional, conditional) on two devices.

With `--cfg-parallel` the processes form a 2 x S grid: rank r runs guidance half r // S and, under `--sp`, the
slice r % S of every video's latent frames. Each half is one forward of batch B instead of 2B, and one
all-gather per step brings both halves' outputs to every rank; every rank then takes the same scheduler step
(same generator, same inputs), so the ranks keep identical latents, as under `--sp`.
"""

from __future__ import annotations

import torch
import torch.distributed as dist

from opensora_cli.distributed.device import DistContext


def grid_contexts(ctx: DistContext, sequence_parallel: bool) -> tuple[DistContext, DistContext | None]:
    """(this rank's guidance-half context, its sequence-parallel context or None) within the 2 x S grid.

    Every rank creates every group (torch requires it, in the same order), and keeps its own two.

    Raises:
        ValueError: the world is not 2 (without --sp) or 2 x S with S >= 2 (with --sp).
    """
    world = ctx.world_size
    sp_size = world // 2 if sequence_parallel else 1
    if world != 2 * sp_size or (sequence_parallel and sp_size < 2):
        raise ValueError(f"--cfg-parallel needs 2 processes, or 2 x S (S >= 2) with --sp; got {world}")
    half, slot = divmod(ctx.rank, sp_size)
    cfg_groups = [dist.new_group([h * sp_size + s for h in range(2)]) for s in range(sp_size)]
    sp_groups = [dist.new_group([h * sp_size + s for s in range(sp_size)]) for h in range(2)] if sequence_parallel \
        else None
    cfg = DistContext(half, 2, ctx.local_rank, ctx.device, cfg_groups[slot])
    sp = DistContext(slot, sp_size, ctx.local_rank, ctx.device, sp_groups[half]) if sp_groups else None
    return cfg, sp


def gather_halves(x: torch.Tensor, cfg: DistContext) -> torch.Tensor:
    """(B, ...) this rank's half -> (2B, ...) [unconditional; conditional] on both ranks of its pair."""
    x = x.contiguous()
    halves = [torch.empty_like(x) for _ in range(2)]
    dist.all_gather(halves, x, group=cfg.group)
    return torch.cat(halves)
