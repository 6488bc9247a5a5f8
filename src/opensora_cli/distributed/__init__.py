"""Running on several devices: device selection, process groups, the launcher and sequence parallelism.

- `device`: `resolve_device` ("cpu", "cuda", "npu"), `backend_for` (gloo, nccl, hccl), and `DistContext`
  made by `init_from_env` from the variables torchrun sets (RANK, WORLD_SIZE, LOCAL_RANK); `shutdown` (a
  barrier, then the group destroyed and freed) and `distributed_context`, which pairs the two.
- `launch`: the one launcher, for `sample` and `train`. `launch(nproc, argv)` re-runs `python -m opensora_cli
  ARGV` in nproc processes through torch's elastic agent (`accelerate_config=FILE`: through accelerate's
  launcher); the children see WORLD_SIZE (`is_distributed_child`) and die with their parent.
- `sequence_parallel`: `SequenceParallelAttnProcessor` (the all-to-all of DeepSpeed-Ulysses, latent time
  sharded across ranks), `check_sequence_parallel`, `shard_time`, `gather_time`.

A sampling run under sequence parallelism:

    with distributed_context(device_name) as ctx:
        problems = check_sequence_parallel(latent_frames, model.config.num_attention_heads, ctx.world_size)
        model.set_attn_processor(SequenceParallelAttnProcessor(ctx))
        velocity = gather_time(model(shard_time(latent_model_input, ctx), ...).sample, ctx)

Importing this package imports nothing heavy; its modules import torch.
"""
