"""`opensora sample`: generate videos from prompt and condition files."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import typer

from opensora_cli.cli.common import TextCacheOption, VerboseOption, console, state
from opensora_cli.cli.validate import (CondsOption, HeightOption, MaskTypeOption, OverlapOption, PromptsOption,
                                       WidthOption)
from opensora_cli.schemas.defaults import RELEASED, SAMPLE
from opensora_cli.schemas.masks import MaskType


def sample_command(
    prompts: Path = PromptsOption,
    conds: Optional[Path] = CondsOption,
    mask_type: Optional[MaskType] = MaskTypeOption,
    model: Optional[Path] = typer.Option(
        None, "--model", help="Transformer folder (released any93x640x640_i2v), or a folder with transformer/, "
        "vae/ and text_encoder/ (a train checkpoint) [default: the bundled demo model]."),
    vae: Optional[Path] = typer.Option(None, "--vae", help="WF-VAE folder [default: vae/ next to --model]."),
    text_encoder: Optional[Path] = typer.Option(
        None, "--text-encoder", help="mT5/T5 encoder folder [default: text_encoder/ or mt5-xxl/ next to --model]."),
    output_dir: Path = typer.Option(Path(SAMPLE["output_dir"]), "--output-dir", "-o",
                                    help="Where videos and sidecars go."),
    num_frames: Optional[int] = typer.Option(
        None, "--num-frames", "-n",
        help=f"Frames, 1 + 4k [default: the model's; {RELEASED['num_frames']} for the released model]."),
    overlap: Optional[int] = OverlapOption,
    adain: Optional[float] = typer.Option(
        None, "--adain", help="A video in windows: how strongly each window after the first is pulled to the "
        f"first one's colours (AdaIN, in [0, 1]; 0: off) [default: {SAMPLE['adain']}]."),
    height: Optional[int] = HeightOption,
    width: Optional[int] = WidthOption,
    crop_for_hw: Optional[bool] = typer.Option(
        None, "--crop-for-hw/--no-crop-for-hw", help="Fixed size: centre-crop and resize inputs to --height x "
        "--width [default: the model's; off for the released model]."),
    max_hxw: Optional[int] = typer.Option(
        None, "--max-hxw",
        help=f"Arbitrary-resolution mode: largest output area [default: the model's; {RELEASED['max_hxw']}]."),
    steps: Optional[int] = typer.Option(
        None, "--steps", help=f"Denoising steps [default: the model's; {RELEASED['steps']}]."),
    guidance_scale: Optional[float] = typer.Option(
        None, "--guidance-scale",
        help=f"Classifier-free guidance, <= 1: off [default: the model's; {RELEASED['guidance_scale']}]."),
    guidance_rescale: float = typer.Option(SAMPLE["guidance_rescale"], "--guidance-rescale",
                                           help="CFG rescale phi in [0, 1]."),
    sampler: Optional[str] = typer.Option(
        None, "--sampler", help=f"Sampler (see README) [default: the model's; {RELEASED['sampler']}]."),
    seed: int = typer.Option(SAMPLE["seed"], "--seed", help="Base seed; each line and sample derives its own from it."),
    num_samples_per_prompt: int = typer.Option(SAMPLE["num_samples_per_prompt"], "--num-samples-per-prompt",
                                               help="Videos per prompt."),
    noise_strength: float = typer.Option(SAMPLE["noise_strength"], "--noise-strength",
                                         help="Noise on kept frames, in [0, 1]."),
    negative_prompt: Optional[str] = typer.Option(
        None, "--negative-prompt", help="Negative prompt [default: the model's; the reference's]; '' for none."),
    prompt_template: Optional[bool] = typer.Option(
        None, "--prompt-template/--no-prompt-template", help="Wrap prompts in the reference's 'high quality, "
        "high aesthetic' template [default: the model's; on for the released model]."),
    fps: Optional[int] = typer.Option(
        None, "--fps", help=f"Frames per second of the mp4 [default: the model's; {RELEASED['fps']}]."),
    device: Optional[str] = typer.Option(None, "--device", help="cpu, cuda or npu [default: cuda, npu, cpu]."),
    dtype: Optional[str] = typer.Option(None, "--dtype", help="fp32, bf16 or fp16 [default: fp32 on CPU, else bf16]."),
    nproc: int = typer.Option(SAMPLE["nproc"], "--nproc",
                              help="Processes (one per device); prompts are split between them."),
    sp: bool = typer.Option(False, "--sp", help="Sequence parallel: the --nproc processes share each video."),
    cfg_parallel: bool = typer.Option(
        False, "--cfg-parallel", help="The two halves of classifier-free guidance on two processes (--nproc 2; "
        "--nproc 2S with --sp: S processes per half)."),
    vae_tiling: str = typer.Option(
        SAMPLE["vae_tiling"], "--vae-tiling", help="Decode in temporal chunks: on, off, or auto (untiled, "
        "which is faster, when the memory estimate leaves room)."),
    no_vae_tiling: bool = typer.Option(False, "--no-vae-tiling", hidden=True, help="--vae-tiling off."),
    cpu_offload: bool = typer.Option(False, "--cpu-offload", help="Keep models on the CPU until they run."),
    step_cache: str = typer.Option(
        "off", "--step-cache", help="Reuse the transformer's work on steps where it barely changes: off, "
        "first-block[:THRESHOLD] (diffusers' First Block Cache; 0 = uncached) or taylorseer[:INTERVAL] (full "
        "steps every INTERVAL; 1 = uncached). See README."),
    quantize: str = typer.Option(
        "none", "--quantize", help="Quantise the text encoder's and the transformer's Linear weights with torchao: "
        "none, int8 (weight-only, CPU or GPU) or fp8 (CUDA, compute capability 8.9+). Needs the [quant] extra."),
    lora: Optional[list[str]] = typer.Option(
        None, "--lora", metavar="DIR[:SCALE]", help="A LoRA adapter folder (a checkpoint of `train --lora-rank`), DIR or DIR:SCALE; "
        "repeat for several at once. Scale 0 = the base model."),
    lora_scale: float = typer.Option(1.0, "--lora-scale", help="The scale of each --lora given without one."),
    compile_model: bool = typer.Option(False, "--compile", help="torch.compile the transformer blocks (GPU)."),
    sample_posterior: bool = typer.Option(
        False, "--vae-sample-posterior", help="Encode conditions with a posterior sample (the reference)."),
    replace_kept_latents: bool = typer.Option(
        False, "--replace-kept-latents", help="Hold the latent frames that the kept frames alone determine (a run "
        "of kept frames from frame 0) at their encoding at every step, so they come back as the VAE "
        "reconstructs them (see README)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Redo outputs that already exist."),
    text_cache: Optional[Path] = TextCacheOption,
    no_text_cache: bool = typer.Option(False, "--no-text-cache",
                                       help="Encode every prompt, read and store no cached embedding."),
    json_output: bool = typer.Option(False, "--json", help="Print the list of outputs as JSON."),
    verbose: bool = VerboseOption,
) -> None:
    """Generate one video per prompt line (and sample) from its conditions; each written as mp4 + JSON sidecar."""
    from opensora_cli.distributed.launch import is_distributed_child
    from opensora_cli.errors import ValidationFailed
    from opensora_cli.schemas.sample import SamplePlan
    from opensora_cli.services import sampling

    options = dict(prompts=prompts, conds=conds, mask_type=mask_type, model=model, vae=vae, text_encoder=text_encoder,
                   output_dir=output_dir, num_frames=num_frames, overlap=overlap, adain=adain, height=height, width=width, crop_for_hw=crop_for_hw,
                   max_hxw=max_hxw, steps=steps, guidance_scale=guidance_scale, guidance_rescale=guidance_rescale,
                   sampler=sampler, seed=seed, num_samples_per_prompt=num_samples_per_prompt,
                   noise_strength=noise_strength, negative_prompt=negative_prompt, prompt_template=prompt_template,
                   fps=fps, device=device, dtype=dtype, nproc=nproc, sp=sp, cfg_parallel=cfg_parallel,
                   vae_tiling="off" if no_vae_tiling else vae_tiling,
                   cpu_offload=cpu_offload, step_cache=step_cache, quantize=quantize, lora=lora or [],
                   lora_scale=lora_scale, compile=compile_model,
                   sample_posterior=sample_posterior, replace_kept_latents=replace_kept_latents, overwrite=overwrite, text_cache=text_cache, no_text_cache=no_text_cache)
    if text_cache is not None and no_text_cache:
        from opensora_cli.errors import UsageError

        raise UsageError("--text-cache and --no-text-cache do not go together")
    if lora_scale != 1.0 and not lora:
        from opensora_cli.errors import UsageError

        raise UsageError(f"--lora-scale {lora_scale:g} scales the --lora adapters given without a scale, and none "
                         "is given — add --lora DIR or drop --lora-scale")
    is_main = os.environ.get("RANK", "0") == "0"
    child = is_distributed_child()
    try:
        if child and sampling.PLAN_ENV in os.environ:  # the parent checked and planned: run its plan
            plan = SamplePlan.model_validate_json(Path(os.environ[sampling.PLAN_ENV]).read_text(encoding="utf-8"))
        else:
            plan = sampling.plan(options)
    except ValidationFailed as exc:
        if is_main:
            from opensora_cli.cli.render import print_problems

            problems = exc.report.problems
            if json_output:  # stdout holds the same report as `validate-inputs --json`; people read stderr
                print(exc.report.model_dump_json(indent=None))
            else:
                print_problems(problems, console(), "problem", "red")
            console(stderr=json_output).print(f"[red]{len(problems)} problem(s)[/red]; no model was loaded and "
                                              "nothing was written.")
        raise typer.Exit(1) from None
    if nproc > 1 and not child:
        raise typer.Exit(_launch_with_plan(plan, nproc))

    from opensora_cli.cli.progress import RichReporter

    summary = sampling.run(plan, RichReporter(enabled=is_main))  # stderr: --json stays clean
    if not is_main:
        return
    if json_output:
        print(summary.model_dump_json())
        return
    from opensora_cli.cli.render import print_sample_summary

    print_sample_summary(summary, console())


def _launch_with_plan(plan, nproc: int) -> int:
    """Start the `--nproc` processes on this command line; they read the plan instead of checking again."""
    import tempfile

    from opensora_cli.distributed.launch import launch
    from opensora_cli.services.sampling import PLAN_ENV

    with tempfile.TemporaryDirectory(prefix="opensora-plan-") as folder:
        path = Path(folder) / "plan.json"
        path.write_text(plan.model_dump_json(), encoding="utf-8")
        os.environ[PLAN_ENV] = str(path)
        try:
            return launch(nproc, state.argv)
        finally:
            del os.environ[PLAN_ENV]


