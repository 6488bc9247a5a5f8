"""Step caching for the Open-Sora Plan transformer through diffusers' cache hooks (`CacheMixin.enable_cache`).

diffusers serves both policies of `schemas.step_cache` as they are, once it knows our block: First Block Cache
reads a block's `hidden_states` argument and output from `TransformerBlockRegistry` (our block returns the
hidden states alone, so there is no encoder-states index), and TaylorSeer hooks the modules named by
`cache_identifiers` (its default names are other models' attention classes, not ours). What diffusers cannot do
is sequence parallelism under First Block Cache: each rank would judge the change on its own slice of frames
and the ranks could disagree on whether to run the other blocks, whose all-to-alls would then wait forever.
`enable_step_cache` makes that one judgement on the whole sequence (`_agree_across_ranks`).
"""

from __future__ import annotations

import torch

from opensora_cli.schemas.step_cache import StepCache

# The modules TaylorSeer predicts between full steps: each block's self-attention, cross-attention and
# feed-forward (the norms, modulation and residual adds stay exact and cost little).
TAYLORSEER_MODULES = [r"transformer_blocks\.\d+\.(attn1|attn2|ff)"]
_HEAD_HOOK = "fbc_leader_block_hook"  # diffusers' name for First Block Cache's hook on the first block


def _register_block() -> None:
    from diffusers.hooks._helpers import TransformerBlockMetadata, TransformerBlockRegistry

    from opensora_cli.models.transformer_opensora import OpenSoraTransformerBlock

    if OpenSoraTransformerBlock not in TransformerBlockRegistry._registry:
        TransformerBlockRegistry.register(OpenSoraTransformerBlock, TransformerBlockMetadata(
            return_hidden_states_index=0, return_encoder_hidden_states_index=None))


def cache_config(policy: StepCache, dtype: torch.dtype = torch.float32):
    """The diffusers cache config of a policy (None for off); `dtype`: the transformer's."""
    from diffusers.hooks import FirstBlockCacheConfig, TaylorSeerCacheConfig

    if policy.kind == "first-block":
        return FirstBlockCacheConfig(threshold=float(policy.value))
    if policy.kind == "taylorseer":
        # Factors in the model's dtype: bf16 ones would round the predictions of an fp32 run, fp32 ones would
        # double the cache of a bf16 run (see services/memory.py). The first 3 steps gather the differences the
        # prediction needs (diffusers' default).
        return TaylorSeerCacheConfig(cache_interval=int(policy.value), disable_cache_before_step=3,
                                     max_order=1, taylor_factors_dtype=dtype,
                                     cache_identifiers=TAYLORSEER_MODULES)
    return None


def enable_step_cache(transformer, policy: StepCache, group=None) -> None:
    """Turn `policy` on for `transformer` (an `OpenSoraT2V_v1_3`); `group`: the sequence-parallel process group,
    when each rank holds a slice of the frames (None: this process holds the whole sequence).

    The pipeline opens one cache context per transformer call and resets the cache at the start of every
    video, so no state leaks from one video (or window) into the next.
    """
    config = cache_config(policy, transformer.dtype)
    if config is None:
        return
    _register_block()
    transformer.enable_cache(config)
    if group is not None and policy.kind == "first-block":
        _agree_across_ranks(transformer, group)


def _agree_across_ranks(transformer, group) -> None:
    """Make First Block Cache's skip decision on the residual of the whole sequence: the two sums its relative
    change is made of are summed over the ranks first, so every rank decides the same, and as one process
    holding every frame would (up to the order of the float additions)."""
    import torch.distributed as dist
    from diffusers.hooks import HookRegistry

    hook = HookRegistry.check_if_exists_or_initialize(transformer.transformer_blocks[0]).get_hook(_HEAD_HOOK)
    threshold = hook.threshold

    @torch.compiler.disable
    def should_compute(residual: torch.Tensor) -> bool:
        state = hook.state_manager.get_state()
        if state.head_block_residual is None:
            return True
        previous = state.head_block_residual
        sums = torch.stack([(residual - previous).abs().sum(), previous.abs().sum()]).float()
        dist.all_reduce(sums, group=group)
        return (sums[0] / sums[1]).item() > threshold

    hook._should_compute_remaining_blocks = should_compute
