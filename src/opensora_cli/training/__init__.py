"""Fine-tuning the inpainting transformer: the loop (`loop.train`) and checkpoints (`checkpointing`)."""
