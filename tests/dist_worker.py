"""Run by tests/test_distributed.py in 2 processes (`launch(2, [OUT_DIR], module="tests.dist_worker")`).

Each rank runs a tiny random `OpenSoraInpaint_v1_3` twice: whole on one process (the default processor) and
sequence-parallel on its slice of latent time, then writes OUT_DIR/rank{r}.json with the largest output
and gradient differences; the test judges them.
"""

from __future__ import annotations

import json
import os
import sys
import warnings
import weakref
from pathlib import Path

import torch
import torch.distributed as dist

from opensora_cli.distributed.device import distributed_context
from opensora_cli.distributed.sequence_parallel import SequenceParallelAttnProcessor, gather_time, shard_time
from opensora_cli.models import registry
from opensora_cli.models.attention import AttnProcessor

# Parameters whose gradients are compared: sparse and dense self-attention, cross-attention, embeddings.
GRAD_PARAMS = (
    "transformer_blocks.2.attn1.to_q.weight",
    "transformer_blocks.3.attn1.to_v.weight",
    "transformer_blocks.0.attn2.to_k.weight",
    "caption_projection.linear_1.weight",
    "pos_embed_mask.0.proj.weight",
)


class CountingSPProcessor(SequenceParallelAttnProcessor):
    """Counts the all-to-alls, to show that only self-attention communicates."""

    gathers = 0

    def gather_sequence(self, query, key, value):
        self.gathers += 1
        return super().gather_sequence(query, key, value)


def inputs(latent_shape, padded: bool, seed: int = 1):
    generator = torch.Generator().manual_seed(seed)
    batch, _, frames, height, width = latent_shape
    kwargs = dict(
        hidden_states=torch.randn(latent_shape, generator=generator),
        timestep=torch.tensor([637.0]),
        encoder_hidden_states=torch.randn(batch, 1, 7, 32, generator=generator),
    )
    if padded:  # the last text tokens and a corner of the video are padding; full-length masks on all ranks
        kwargs["encoder_attention_mask"] = torch.tensor([[1, 1, 1, 1, 0, 0, 0]] * batch)
        video = torch.ones(batch, frames, height, width)
        video[:, -1, :, -4:] = 0
        kwargs["attention_mask"] = video
    weights = torch.randn(batch, 8, frames, height, width, generator=generator)  # loss = sum(output*weights)
    return kwargs, weights


def compare(model, ctx, latent_shape, padded: bool) -> dict:
    kwargs, weights = inputs(latent_shape, padded)
    params = dict(model.named_parameters())

    model.set_attn_processor(AttnProcessor())
    model.zero_grad()
    reference = model(**kwargs).sample
    (reference * weights).sum().backward()
    reference_grads = {name: params[name].grad.clone() for name in GRAD_PARAMS}

    processor = CountingSPProcessor(ctx)
    model.set_attn_processor(processor)
    model.zero_grad()
    local = model(**dict(kwargs, hidden_states=shard_time(kwargs["hidden_states"], ctx))).sample
    (local * shard_time(weights, ctx)).sum().backward()  # this rank's share of the same loss
    output = gather_time(local.detach(), ctx)
    grad_errors = {}
    for name in GRAD_PARAMS:
        grad = params[name].grad.clone()
        dist.all_reduce(grad, group=ctx.group)  # the data-parallel sum of the shares
        reference_grad = reference_grads[name]
        grad_errors[name] = ((grad - reference_grad).abs().max() / reference_grad.abs().max()).item()
    return {
        "local_frames": local.shape[2],
        "output_max_abs_diff": (output - reference.detach()).abs().max().item(),
        "output_max_abs": reference.abs().max().item(),
        "grad_max_rel_diff": grad_errors,
        "gathers_per_forward": processor.gathers,
    }


def main(out_dir: str) -> int:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with distributed_context("cpu") as ctx:
            group = weakref.ref(ctx.group)
            report = run_cases(ctx)
    # shutdown freed the group (its gloo threads are joined) before the interpreter exits
    report["group_freed"] = group() is None
    report["shutdown_warnings"] = [str(w.message) for w in caught]
    Path(out_dir, f"rank{ctx.rank}.json").write_text(json.dumps(report, indent=1))
    return 0


def run_cases(ctx) -> dict:
    model = registry.build("OpenSoraInpaint_v1_3-tiny")
    registry.randomise_weights_(model, torch.Generator().manual_seed(0))
    ranks = [None] * ctx.world_size
    dist.all_gather_object(ranks, (int(os.environ["RANK"]), int(os.environ["LOCAL_RANK"])), group=ctx.group)
    report = {
        "rank": ctx.rank,
        "world_size": ctx.world_size,
        "seen_ranks": ranks,
        "num_layers": len(model.transformer_blocks),
        "cases": {
            "T4_unpadded": compare(model, ctx, (1, 20, 4, 8, 12), padded=False),
            "T4_padded": compare(model, ctx, (1, 20, 4, 8, 12), padded=True),
            # 2 x 3 x 5 = 30 tokens: Skiparse (k = 2) pads the full sequence to 32
            "T2_skiparse_pad_batch2": compare(model, ctx, (2, 20, 2, 6, 10), padded=True),
        },
    }
    return report  # the model, still holding a processor, goes with this frame


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1]))
