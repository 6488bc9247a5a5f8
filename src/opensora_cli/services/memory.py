"""How much memory a sampling run will need, estimated from the model configs before anything loads. No torch.

The estimate is the largest of the run's phases (the text encoder is freed before the transformer loads):

    text phase    text-encoder weights
    denoise phase transformer + VAE weights, the per-step activations of the transformer, the condition
                  pixels and the latents
    decode phase  transformer + VAE weights, the VAE decoder's activations, the decoded video

Sizes in bytes. How each part is counted, and why:
- **Weights**: parameters x bytes of the run's dtype. The transformer's parameters are counted from its config
  (what gets built: a config that asks for 100,000 layers is refused here, not after minutes of building); the
  VAE's and the text encoder's from the tensor shapes in their safetensors headers (exact, nothing loaded).
- **Transformer activations**: the largest block of one forward, inference only: the hidden states, q/k/v, the
  attention output and the 4x feed-forward, about 14 x (batch x tokens x width) values; batch 2 with
  classifier-free guidance. Attention runs through SDPA, whose flash and memory-efficient kernels (CUDA, and
  the CPU's flash kernel with our (B, 1, 1, N) masks) keep no N x N scores, so attention adds no N^2 term.
- **VAE decoder**: `_DECODE_FACTOR` x frames x height x width x base channels x bytes for one decoder chunk
  (2 latent frames, 9 pixel frames), plus one feature map per further frame without `--vae-tiling`. CPU
  convolutions keep im2col buffers that cuDNN does not, hence a larger factor on the CPU. The CPU factor is fitted to
  benchmarks/memory.py's measurements of the demo VAE; the accelerator's is an upper bound from the
  H100 run of the released model (8.2 GiB peak in all at 93x352x640, bf16, tiled).
- **Step cache** (`--step-cache`, counted with the activations): First Block Cache keeps 3 tensors of the
  hidden-state size (the first block's residual and output, the other blocks' residual); TaylorSeer keeps 2
  (the output and its step difference) for each block's attention, cross-attention and feed-forward, which at
  the released size is tens of GiB.
- **Quantisation** (`--quantize int8|fp8`): the transformer's weights count 1 byte per parameter (all of them
  taken as Linear: its embeddings and norms are well under 1 %; the per-row scales are negligible). Each model
  loads in the run's dtype and is quantised after, so its unquantised weights are held once: the transformer's
  alone (`load`, before the VAE loads, the text encoder freed), and the text encoder's phase is not lowered at
  all (it is freed before anything else loads). So int8 lowers the peak when the denoise or decode phase is
  the largest, which a long or large video makes it.
- **Pixels**: `_PIXEL_BYTES` per output pixel and frame: the condition video, its mask and masked copy, the
  decoded video in fp32 and as uint8.

With `--cpu-offload` the accelerator holds one model at a time; the host holds them all. `benchmarks/memory.py`
prints the estimate against the measured peak on this machine.
"""

from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass
from pathlib import Path

from opensora_cli.schemas.step_cache import StepCache

GIB = 2**30
_DTYPE_BYTES = {"fp32": 4, "bf16": 2, "fp16": 2}
_HEADER_DTYPE_BYTES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1,
                       "BOOL": 1, "F8_E4M3": 1, "F8_E5M2": 1}
_DECODE_FACTOR = {"cpu": 17.0, "accelerator": 6.0}
_ACTIVATION_FACTOR = 14  # values per (batch x token x width) alive at once in one transformer block
_DECODER_CHUNK_FRAMES = 9  # WFVAEModel.enable_tiling's decoder chunk: 2 latent frames -> 9 pixel frames
# Bytes per output pixel and frame outside the models: the condition video, its mask and masked copy in fp32,
# the decoded video in fp32 and uint8, and the copies between them (fitted on the CPU, benchmarks/memory.py).
_PIXEL_BYTES = 100


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes each part needs; `peak` is the largest phase, `device_peak` what the device itself holds."""

    text_encoder: int
    transformer: int
    vae: int
    activations: int
    decode: int
    pixels: int
    cpu_offload: bool = False
    load: int = 0  # the transformer's unquantised weights, held while --quantize converts them

    @property
    def peak(self) -> int:
        weights = self.transformer + self.vae
        return max(self.text_encoder, self.load, weights + self.activations + self.pixels,
                   weights + self.decode + self.pixels)

    @property
    def device_peak(self) -> int:
        """With --cpu-offload the accelerator holds one model at a time, plus that phase's work."""
        if not self.cpu_offload:
            return self.peak
        return max(self.text_encoder, self.transformer + self.activations, self.vae + self.decode)  # load: host

    def describe(self) -> str:
        return (f"about {gib(self.peak)} (weights {gib(self.transformer + self.vae)}, text encoder "
                f"{gib(self.text_encoder)}, denoising {gib(self.activations)}, VAE decode {gib(self.decode)}, "
                f"frames {gib(self.pixels)})")


def largest_output(items, request) -> tuple[int, int]:
    """(height, width) of the largest video of checked lines (`InputItem`s): its own size, else the request's."""
    sizes = [item.output_size or (request.height or 0, request.width or 0) for item in items]
    return max(sizes, key=lambda hw: hw[0] * hw[1], default=(0, 0))


def gib(size: float) -> str:
    return f"{size / GIB:.2f} GiB" if size >= GIB / 100 else f"{size / 2**20:.0f} MiB"


def safetensors_parameters(folder: Path) -> int | None:
    """Parameters of the safetensors files in a folder, from their headers; None when there are none."""
    files = sorted(Path(folder).glob("*.safetensors"))
    if not files:
        return None
    total = 0
    for path in files:
        try:
            with open(path, "rb") as handle:
                (length,) = struct.unpack("<Q", handle.read(8))
                if length > 100 * 2**20:  # not a header: a damaged file, reported when it loads
                    return None
                header = json.loads(handle.read(length))
        except (OSError, ValueError, struct.error):
            return None
        total += sum(math.prod(int(dim) for dim in entry.get("shape", [])) for name, entry in header.items()
                     if name != "__metadata__")
    return total


def transformer_parameters(config: dict) -> int:
    """Parameters of an OpenSoraInpaint_v1_3 / OpenSoraT2V_v1_3 from its config (within a few per cent).

    Per block: self-attention 4 D^2, cross-attention 2 D^2 + 2 C D, the 4x feed-forward 8 D^2 (D the width,
    C `cross_attention_dim`); once: the caption projection, the timestep embedding and the patch embeddings.
    """
    width = int(config["num_attention_heads"]) * int(config["attention_head_dim"])
    cross = int(config.get("cross_attention_dim") or width)
    caption = int(config.get("caption_channels") or cross)
    layers = int(config["num_layers"])
    patch = int(config.get("patch_size", 2)) ** 2 * int(config.get("patch_size_t", 1))
    channels = int(config.get("in_channels", 8)) + int(config.get("out_channels", 8))
    per_block = 14 * width * width + 2 * cross * width
    once = caption * width + width * width + 8 * width * width + 3 * patch * channels * width
    return layers * per_block + once


def estimate(model_dirs: dict[str, Path], num_frames: int, height: int, width: int, dtype: str, device_type: str,
             guidance: bool, vae_tiling: bool, cpu_offload: bool = False, step_cache: str = "off",
             quantize: str = "none") -> MemoryEstimate:
    """The memory a run will need.

    Args:
        model_dirs: {"transformer", "vae", "text_encoder": folder}; config.json and weights are read, no model.
        num_frames, height, width: the output video (pixels).
        dtype: "fp32", "bf16" or "fp16".
        device_type: "cpu", "cuda" or "npu".
        guidance: classifier-free guidance on (two transformer passes per step, batched).
        step_cache: the `--step-cache` policy (`schemas.step_cache`).
        quantize: `--quantize`: none, int8 or fp8 (1 byte per transformer weight; see the module).

    Raises:
        KeyError, ValueError: a config lacks a size field (reported by the caller).
    """
    size = _DTYPE_BYTES[dtype]
    transformer_config = json.loads((Path(model_dirs["transformer"]) / "config.json").read_text())
    vae_config = json.loads((Path(model_dirs["vae"]) / "config.json").read_text())
    transformer = transformer_parameters(transformer_config) * size
    load = 0
    if quantize != "none":
        load, transformer = transformer, transformer // size
    vae = (safetensors_parameters(model_dirs["vae"]) or 0) * size
    text = (safetensors_parameters(model_dirs["text_encoder"]) or 0) * size

    latent_frames = (num_frames - 1) // int(transformer_config.get("vae_scale_factor_t", 4)) + 1
    patch = int(transformer_config.get("patch_size", 2))
    tokens = latent_frames * (height // 8 // patch) * (width // 8 // patch)
    hidden = int(transformer_config["num_attention_heads"]) * int(transformer_config["attention_head_dim"])
    batch = 2 if guidance else 1
    activations = _ACTIVATION_FACTOR * batch * tokens * hidden * size
    kind = StepCache.parse(step_cache).kind
    if kind != "off":  # tensors of the hidden-state size the cache holds between steps
        kept = 3 if kind == "first-block" else 2 * 3 * int(transformer_config["num_layers"])
        activations += kept * batch * tokens * hidden * size

    base = int(vae_config.get("base_channels", 128))
    chunk = min(num_frames, _DECODER_CHUNK_FRAMES)
    factor = _DECODE_FACTOR["cpu" if device_type == "cpu" else "accelerator"]
    decode = factor * chunk * height * width * base * size
    if not vae_tiling:  # every frame's decoder features at once, beyond the working set of one chunk
        decode += (num_frames - chunk) * height * width * base * size
    pixels = num_frames * height * width * _PIXEL_BYTES
    return MemoryEstimate(text, transformer, vae, activations, int(decode), pixels, cpu_offload, load)


def ways_out(vae_tiling: bool, cpu_offload: bool, device_type: str, frames: int, quantize: str = "none",
             int8_helps: bool = True) -> str:
    """The options that lower a refused run's memory, those it does not use already; `int8_helps`: whether
    --quantize int8 lowers this run's estimate (the caller knows)."""
    hints = []
    if quantize == "none" and int8_helps:
        hints.append("--quantize int8")
    if not vae_tiling:
        hints.append("--vae-tiling on")
    if device_type != "cpu" and not cpu_offload:
        hints.append("--cpu-offload")
    hints.append(f"fewer frames (--num-frames {max(1, (frames - 1) // 2 // 4 * 4 + 1)})")
    hints.append("a smaller size (--max-hxw, or --crop-for-hw with a smaller --height/--width)")
    if device_type != "cpu":
        hints.append("--nproc N --sp to share each video across devices")
    return ", ".join(hints)
