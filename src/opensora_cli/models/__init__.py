"""Model components of Open-Sora Plan v1.3, checkpoint-compatible with the released weights.

- `autoencoder_wfvae.WFVAEModel`: the WF-VAE (video <-> latents, 4x8x8 compression, 8 channels).
- `transformer_opensora.OpenSoraT2V_v1_3` / `OpenSoraInpaint_v1_3`: the diffusion transformer.
- `text_encoder.TextEncoder`: mT5 / T5 / UMT5 encoder and tokenizer from a local folder.
- `registry`: named presets (full size and tiny) and random-weight model folders in the released layout.

Importing a submodule imports torch; this package's __init__ imports nothing heavy.
"""
