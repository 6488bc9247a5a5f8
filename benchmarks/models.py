"""Forward time and peak memory of the models (random weights), printed as a table.

    python benchmarks/models.py                        # CPU: tiny and medium transformer, tiny VAE
    python benchmarks/models.py --device cuda --full   # GPU: adds the full-size transformer and VAE

The full-size case is one denoising forward of the released transformer's architecture at 93x352x640 with
classifier-free guidance (batch 2: latent (2, 20, 24, 44, 80), 21,120 tokens per sample, 512 text tokens),
and a full-size WF-VAE decode of those latents with temporal tiling. Reference: 1.5 s per step on one H100.
"""

from __future__ import annotations

import argparse
import multiprocessing
import resource
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))  # run from a checkout without installing

from opensora_cli.models.registry import build  # noqa: E402

CASES = {
    # name: (preset, latent (T', h, w), text tokens)
    "tiny": ("OpenSoraInpaint_v1_3-tiny", (5, 8, 12), 64),
    "medium": ("OpenSoraInpaint_v1_3-medium", (8, 16, 24), 512),
    "full": ("OpenSoraInpaint_v1_3-2B/122", (24, 44, 80), 512),
}
VAE_CASES = {
    "tiny": ("WFVAEModel_D8_4x8x8-tiny", (5, 8, 12)),
    "full": ("WFVAEModel_D8_4x8x8", (24, 44, 80)),
}
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def materialise(name: str, device: torch.device, dtype: torch.dtype) -> torch.nn.Module:
    """A random-weight model on `device`. The transformer is built on the meta device and filled there (a CPU
    init of 2.8 B parameters takes minutes); the VAE is built directly, so its fixed Haar filters are right."""
    if "WFVAE" in name:
        return build(name, device=device).to(dtype).eval()
    model = build(name, device="meta").to_empty(device=device)
    with torch.no_grad():
        for param in model.parameters():
            param.normal_(0, 0.02)
    return model.to(dtype).eval()


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def peak_memory(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{torch.cuda.max_memory_allocated() / 2**30:.2f} GiB"
    return f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GiB RSS"


def time_call(fn, device: torch.device, repeats: int, warmup: int) -> float:
    for _ in range(warmup):
        fn()
    sync(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def bench_transformer(case: str, device, dtype, repeats: int, warmup: int) -> tuple:
    preset, (t, h, w), tokens = CASES[case]
    model = materialise(preset, device, dtype)
    config = model.config
    generator = torch.Generator(device).manual_seed(0)
    latents = torch.randn(2, 2 * config.in_channels + config.vae_scale_factor_t, t, h, w, generator=generator,
                          device=device, dtype=dtype)
    text = torch.randn(2, 1, tokens, config.caption_channels, generator=generator, device=device, dtype=dtype)
    text_mask = torch.ones(2, 1, tokens, device=device, dtype=torch.long)
    text_mask[:, :, tokens // 3 :] = 0  # padded prompts, as real prompts are
    timestep = torch.full((2,), 999.0, device=device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()

    @torch.inference_mode()
    def forward():
        return model(latents, timestep, encoder_hidden_states=text, encoder_attention_mask=text_mask,
                     return_dict=False)[0]

    seconds = time_call(forward, device, repeats, warmup)
    params = sum(p.numel() for p in model.parameters())
    shape = f"(2, {latents.shape[1]}, {t}, {h}, {w}) = {t * h * w // 4:,} tokens/sample"
    return (f"transformer {case}", f"{params / 1e6:,.1f} M", shape, seconds, peak_memory(device))


def bench_vae(case: str, device, dtype, repeats: int, warmup: int, tiling: bool) -> tuple:
    preset, (t, h, w) = VAE_CASES[case]
    vae = materialise(preset, device, dtype)
    if tiling:
        vae.enable_tiling()
    z = torch.randn(1, 8, t, h, w, device=device, dtype=dtype)
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()

    @torch.inference_mode()
    def decode():
        return vae.decode(z).sample

    seconds = time_call(decode, device, repeats, warmup)
    params = sum(p.numel() for p in vae.parameters())
    frames = 4 * t - 3
    shape = f"(1, 8, {t}, {h}, {w}) -> {frames}x{8 * h}x{8 * w}"
    return (f"vae decode {case}{' tiled' if tiling else ''}", f"{params / 1e6:,.1f} M", shape, seconds,
            peak_memory(device))


def run_job(kind: str, case: str, tiling: bool, device_name: str, dtype_name: str | None, repeats: int,
            warmup: int) -> tuple:
    device = torch.device(device_name)
    dtype = DTYPES[dtype_name or ("fp32" if device.type == "cpu" else "bf16")]
    torch.manual_seed(0)
    if kind == "transformer":
        return bench_transformer(case, device, dtype, repeats, warmup)
    if case == "full":
        repeats, warmup = max(1, repeats // 2), 1
    return bench_vae(case, device, dtype, repeats, warmup, tiling)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", choices=DTYPES, default=None, help="default: fp32 on CPU, bf16 on GPU")
    parser.add_argument("--full", action="store_true", help="also the full-size models (needs a GPU)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    args = parser.parse_args()
    device = torch.device(args.device)
    dtype = DTYPES[args.dtype or ("fp32" if device.type == "cpu" else "bf16")]

    jobs = [("transformer", "tiny", False), ("transformer", "medium", False), ("vae", "tiny", False),
            ("vae", "tiny", True)]
    if args.full:
        jobs += [("transformer", "full", False), ("vae", "full", True), ("vae", "full", False)]
    # Each case in a fresh process, so that its peak memory (CPU: the process's peak RSS) is its own.
    context = multiprocessing.get_context("spawn")
    rows = []
    for job in jobs:
        with context.Pool(1) as pool:
            rows.append(pool.apply(run_job, (*job, args.device, args.dtype, args.repeats, args.warmup)))

    name = torch.cuda.get_device_name() if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"{name}, {str(dtype).removeprefix('torch.')}, torch {torch.__version__}, median of {args.repeats}\n")
    print("| model | params | input | seconds | peak memory |\n|---|---|---|---|---|")
    for label, params, shape, seconds, memory in rows:
        print(f"| {label} | {params} | {shape} | {seconds:.4f} | {memory} |")


if __name__ == "__main__":
    main()
