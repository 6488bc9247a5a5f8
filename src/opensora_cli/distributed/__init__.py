"""Running on several devices: `device` (device selection, process groups), `launch` (the one launcher, for
`sample` and `train`) and `sequence_parallel` (the DeepSpeed-Ulysses all-to-all over latent time).

A sampling run under sequence parallelism:

    with distributed_context(device_name) as ctx:
        problems = check_sequence_parallel(latent_frames, model.config.num_attention_heads, ctx.world_size)
        model.set_attn_processor(SequenceParallelAttnProcessor(ctx))
        velocity = gather_time(model(shard_time(latent_model_input, ctx), ...).sample, ctx)

Importing this package imports nothing heavy; its modules import torch.
"""
