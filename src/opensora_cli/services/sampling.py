"""sample: check everything, load the models once, generate every (line, sample), write mp4 + JSON sidecar.

Order of work, so that nothing heavy happens before the inputs are known to be good:
1. `check_sample_request`: validate-inputs' checks, the options, the model folders (config files only), the
   sampler name, the sequence-parallel divisibility rules, the output folder and the memory estimate (see
   `services.outputs` and `services.memory`). Any problem stops here.
2. `plan_outputs`: an output made with the same request is skipped; one made with another is refused (unless
   `overwrite`); each remaining output is claimed just before it is made, so runs sharing a folder share work.
3. The text encoder encodes every pending prompt, then is freed (it is the largest model and is not needed
   again); the transformer and the VAE are loaded; each video is generated with its own seed.

Seeds: every (line, sample) has its own seed derived from `--seed`, the line number and the sample index, so
a video does not depend on the number of processes, on the other prompts or on their order.
"""

from __future__ import annotations

import contextlib
import gc
import json
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from opensora_cli import __version__
from opensora_cli.errors import Interrupted, OutputError, ValidationFailed
from opensora_cli.masks.patterns import latent_frame_count
from opensora_cli.schemas.inputs import InputItem, ValidationReport
from opensora_cli.schemas.problems import Problem, problems_from
from opensora_cli.schemas.sample import SampleOptions, SampleResult, SampleSummary
from opensora_cli.services.model_folders import resolve_model_dirs, resolve_request
from opensora_cli.services.outputs import (
    check_output_dir,
    differences,
    estimate_output_bytes,
    file_sha256,
    model_fingerprints,
    remove_stale_parts,
    request_of,
    try_claim,
)
from opensora_cli.services.validation import validate_inputs
from opensora_cli.utils.seeds import stable_seed

_SLUG_LENGTH = 48


class Reporter:
    """Progress events of a run. These do nothing; the CLI's `RichReporter` draws them."""

    def phase(self, text: str) -> None: ...
    def warning(self, text: str) -> None: ...
    def start(self, videos: int, steps: int) -> None: ...
    def video_started(self, line: int, sample: int, prompt: str) -> None: ...
    def step(self, index: int, steps: int) -> None: ...
    def video_done(self, result: SampleResult) -> None: ...
    def close(self) -> None: ...


# ------------------------------------------------------------------------------------------------------------
# 1. Checks (no model is loaded)
# ------------------------------------------------------------------------------------------------------------


def _options_problems(options: Mapping[str, Any]) -> tuple[SampleOptions | None, list[Problem]]:
    try:
        return SampleOptions.model_validate(dict(options)), []
    except ValidationError as exc:
        return None, problems_from(exc, values=options)


def check_sample_request(
    inputs: Mapping[str, Any], options: Mapping[str, Any]
) -> tuple[ValidationReport, SampleOptions | None, dict[str, Path], list[Problem], dict]:
    """Everything that can be checked without loading a model.

    Returns:
        (report, options, model dirs, problems, inputs with defaults filled in).
    """
    inputs, options = resolve_request(inputs, options)
    report = validate_inputs({k: v for k, v in inputs.items()})
    opts, problems = _options_problems(options)
    problems = list(report.problems) + problems
    dirs: dict[str, Path] = {}
    if opts is None:
        return report, None, dirs, problems, inputs
    dirs, dir_problems = resolve_model_dirs(opts)
    problems += dir_problems

    from opensora_cli.pipelines.schedulers import make_scheduler

    try:
        make_scheduler(opts.sampler)
    except ValueError as exc:
        problems.append(Problem.of("--sampler", None, str(exc)))

    if opts.sp:
        if opts.nproc < 2:
            problems.append(Problem.of("--sp", None, "sequence parallel needs several processes",
                                       "add --nproc 2 (or more)"))
        elif "transformer" in dirs and (dirs["transformer"] / "config.json").is_file():
            from opensora_cli.distributed.sequence_parallel import check_sequence_parallel

            config = json.loads((dirs["transformer"] / "config.json").read_text())
            frames = inputs["num_frames"]
            if (frames - 1) % 4 == 0:
                for message in check_sequence_parallel(latent_frame_count(frames), config["num_attention_heads"],
                                                       opts.nproc):
                    what, _, fix = message.partition(": ")
                    problems.append(Problem.of("--sp", None, what, fix or None))
    from opensora_cli.distributed.device import resolve_device

    device = resolve_device(opts.device)  # raises one clear line for a missing CUDA or torch_npu
    if not problems:
        plan = plan_outputs(report, opts, inputs, dirs, dtype_name(opts, device.type))
        problems += plan.problems
        problems += check_memory(report, opts, inputs, dirs, device)
        report.warnings += prompt_length_warnings(report, opts, dirs["text_encoder"], inputs["prompts"])
    return report, opts, dirs, problems, inputs


def prompt_length_warnings(report: ValidationReport, opts: SampleOptions, text_encoder: Path,
                           prompts_file: Path) -> list[Problem]:
    """A warning for each prompt longer than the text encoder reads (it would be cut), with its token count.

    Only the tokenizer is loaded (no weights). The count includes the prompt template when it is on.
    """
    import transformers

    from opensora_cli.models.text_encoder import DEFAULT_MAX_LENGTH, apply_template

    try:
        tokenizer = transformers.AutoTokenizer.from_pretrained(text_encoder, local_files_only=True)
    except (OSError, ValueError):
        return []  # the text encoder's own load names the problem
    warnings = []
    for item in report.items:
        text = apply_template(item.prompt) if opts.prompt_template else item.prompt
        count = len(tokenizer(text, add_special_tokens=True).input_ids)
        if count > DEFAULT_MAX_LENGTH:
            warnings.append(Problem.of(str(prompts_file), item.line, f"the prompt is {count} tokens long; the text "
                                       f"encoder reads the first {DEFAULT_MAX_LENGTH}, the rest is cut",
                                       "shorten the prompt"))
    return warnings


def largest_output(report: ValidationReport, inputs: Mapping[str, Any]) -> tuple[int, int]:
    sizes = [item.output_size or (inputs["height"] or 0, inputs["width"] or 0) for item in report.items]
    return max(sizes, key=lambda hw: hw[0] * hw[1], default=(0, 0))


def check_memory(report: ValidationReport, opts: SampleOptions, inputs: Mapping[str, Any], dirs: dict[str, Path],
                 device) -> list[Problem]:
    """The run's estimated peak (services/memory.py) against the device's free memory.

    Host memory is shared by all processes on a CPU; each accelerator holds one process (its share of the
    tokens under --sp).
    """
    from opensora_cli.services import memory
    from opensora_cli.utils.system import available_host_memory

    height, width = largest_output(report, inputs)
    try:
        estimate = memory.estimate(dirs, inputs["num_frames"], height, width, dtype_name(opts, device.type),
                                   device.type, opts.guidance_scale > 1.0, opts.vae_tiling, opts.cpu_offload)
    except (KeyError, ValueError, TypeError) as exc:
        return [Problem.of("--model", None, f"{dirs['transformer'] / 'config.json'}: cannot read the model's sizes "
                           f"({type(exc).__name__}: {exc})", "use the config.json the model was saved with")]
    if device.type == "cpu":
        processes = opts.nproc
        needed, free, where = estimate.peak * processes, available_host_memory(), "this machine's free memory"
    else:
        needed = estimate.device_peak
        if opts.sp and opts.nproc > 1:
            needed -= estimate.activations - estimate.activations // opts.nproc
        free, where = _accelerator_free_memory(device), f"free memory of {device.type}"
    if free is None or needed <= free:
        return []
    return [Problem.of("--num-frames", None, f"a {inputs['num_frames']}-frame {height}x{width} video needs "
                       f"{estimate.describe()}{f' per process x {opts.nproc}' if device.type == 'cpu' and opts.nproc > 1 else ''}"
                       f"; {where} is {memory.gib(free)}",
                       "use " + memory.ways_out(opts.vae_tiling, opts.cpu_offload, device.type, inputs["num_frames"]))]


def _accelerator_free_memory(device) -> int | None:
    import torch

    index = device.index if device.index is not None else 0
    if device.type == "cuda":
        return torch.cuda.mem_get_info(index)[0]
    if device.type == "npu":
        import torch_npu

        return torch_npu.npu.mem_get_info(index)[0]
    return None


# ------------------------------------------------------------------------------------------------------------
# 2. Outputs
# ------------------------------------------------------------------------------------------------------------


def derive_seed(seed: int, line: int, sample: int) -> int:
    """A 63-bit seed for one (line, sample), independent of the other prompts and of the process count."""
    return stable_seed(seed, line, sample, namespace="opensora-cli")


def slugify(prompt: str) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", prompt.lower()).strip("-")
    return slug[:_SLUG_LENGTH].rstrip("-") or "prompt"


def output_paths(output_dir: Path, item: InputItem, sample: int, num_frames: int) -> tuple[Path, Path]:
    stem = f"{item.line:04d}_{slugify(item.prompt)}_s{sample}"
    suffix = ".png" if num_frames == 1 else ".mp4"
    return output_dir / f"{stem}{suffix}", output_dir / f"{stem}.json"


def dtype_name(opts: SampleOptions, device_type: str) -> str:
    """fp32, bf16 or fp16: the option, else fp32 on a CPU and bf16 on an accelerator."""
    return opts.dtype or ("fp32" if device_type == "cpu" else "bf16")


@dataclass
class Job:
    """One output to make: its line, sample index, seed, paths and the request its sidecar will record.

    `index` is its place among all the run's outputs, so processes split the work the same way whatever each
    found on disk.
    """

    index: int
    item: InputItem
    sample: int
    seed: int
    video: Path
    sidecar: Path
    request: dict[str, Any]


@dataclass
class OutputPlan:
    jobs: list[Job] = field(default_factory=list)  # to generate (or to claim first)
    done: list[Job] = field(default_factory=list)  # made before with the same request: skipped
    problems: list[Problem] = field(default_factory=list)


def _request(item: InputItem, sample: int, seed: int, opts: SampleOptions, inputs: Mapping[str, Any],
             models: dict, dtype: str, hashes: dict[str, str]) -> dict[str, Any]:
    height, width = item.output_size or (inputs["height"], inputs["width"])
    return request_of({
        "prompt": item.prompt, "line": item.line, "sample": sample, "seed": seed,
        "mask_type": str(item.mask_type) if item.mask_type is not None else None,
        "conds": [{"path": path, "sha256": hashes[path]} for path in item.conds],
        "frame_indices": item.frame_indices, "num_frames": inputs["num_frames"], "height": height,
        "width": width, "crop_for_hw": inputs["crop_for_hw"], "max_hxw": inputs["max_hxw"], "steps": opts.steps,
        "guidance_scale": opts.guidance_scale, "guidance_rescale": opts.guidance_rescale, "sampler": opts.sampler,
        "negative_prompt": opts.negative_prompt, "prompt_template": opts.prompt_template,
        "noise_strength": opts.noise_strength, "sample_posterior": opts.sample_posterior, "fps": opts.fps,
        "dtype": dtype, "models": models,
    })


def finished_request(video: Path, sidecar: Path) -> dict[str, Any] | None:
    """The request recorded beside a finished output (video and a readable sidecar), else None."""
    if not (video.is_file() and sidecar.is_file()):
        return None
    try:
        return request_of(json.loads(sidecar.read_text()))
    except (OSError, ValueError):
        return None


def plan_outputs(report: ValidationReport, opts: SampleOptions, inputs: Mapping[str, Any],
                 dirs: dict[str, Path], dtype: str) -> OutputPlan:
    """Each (line, sample): skip (same request made it), make, or refuse (made with another request).

    Also checks that the output folder can take the outputs still to make (see `services.outputs`).
    """
    plan = OutputPlan()
    output_dir = opts.output_dir.resolve()
    models = model_fingerprints(dirs)
    hashes = {path: file_sha256(path) for item in report.items for path in item.conds}
    changed: list[tuple[Path, list[str]]] = []
    for item in report.items:
        for sample in range(opts.num_samples_per_prompt):
            video, sidecar = output_paths(output_dir, item, sample, inputs["num_frames"])
            seed = derive_seed(opts.seed, item.line, sample)
            job = Job(len(plan.jobs) + len(plan.done) + len(changed), item, sample, seed, video, sidecar,
                      _request(item, sample, seed, opts, inputs, models, dtype, hashes))
            before = None if opts.overwrite else finished_request(video, sidecar)
            if before is None:
                plan.jobs.append(job)
            elif before == job.request:
                plan.done.append(job)
            else:
                changed.append((video, differences(before, job.request)))
    if changed:
        groups: dict[tuple[str, ...], list[str]] = {}  # outputs that differ the same way are listed once
        for video, fields in changed:
            groups.setdefault(tuple(fields), []).append(video.name)
        shown = "; ".join(
            f"{', '.join(fields)} ({', '.join(names[:2])}{f' and {len(names) - 2} more' if len(names) > 2 else ''})"
            for fields, names in groups.items()
        )
        plan.problems.append(Problem.of(
            "--output-dir", None, f"{len(changed)} output(s) in '{opts.output_dir}' were made with other "
            f"parameters: {shown}", "add --overwrite to replace them, or pick another --output-dir"))
    needed = 0
    for job in plan.jobs:
        height, width = job.request["height"] or 0, job.request["width"] or 0
        needed += estimate_output_bytes(inputs["num_frames"], height, width)
    plan.problems += check_output_dir(output_dir, needed)
    return plan


# ------------------------------------------------------------------------------------------------------------
# 3. The run
# ------------------------------------------------------------------------------------------------------------


def run_sampling(
    inputs: Mapping[str, Any], options: Mapping[str, Any], reporter: Reporter | None = None
) -> SampleSummary:
    """Generate the videos of a prompts/conds pair. In a torchrun child, this process's share of them.

    Raises:
        ValidationFailed: any problem found by `check_sample_request` (nothing loaded, nothing written).
    """
    reporter = reporter or Reporter()
    report, opts, dirs, problems, inputs = check_sample_request(inputs, options)
    if problems:
        raise ValidationFailed(report.model_copy(update={"ok": False, "problems": problems}))
    for warning in report.warnings:
        reporter.warning(warning.render())

    from opensora_cli.distributed.device import distributed_context

    try:
        with distributed_context(opts.device) as ctx:
            return _run(report, opts, dirs, dict(inputs), ctx, reporter)
    finally:
        reporter.close()


def _dtype_for(opts: SampleOptions, device) -> Any:
    import torch

    return {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[dtype_name(opts, device.type)]


def _skipped(job: Job, rank: int, reason: str) -> SampleResult:
    """The result of an output this process does not make; what its sidecar says, if it has one yet."""
    data = {}
    with contextlib.suppress(OSError, ValueError):
        data = json.loads(job.sidecar.read_text())
    mask_type = data.get("mask_type") or job.request["mask_type"] or "?"
    return SampleResult(line=job.item.line, sample=job.sample, prompt=job.item.prompt, video=job.video,
                        sidecar=job.sidecar, seed=job.seed, mask_type=mask_type,
                        kept_frames=data.get("kept_frames", []), skipped=True, skip_reason=reason, rank=rank)


def _take(job: Job, ctx, writer: bool, sp: bool, overwrite: bool):
    """Claim a job's output (see `services.outputs`); under --sp rank 0 decides for all ranks.

    Returns:
        (claim or None, skip reason or None): a reason when another process made or is making this output.
    """
    claim, reason = None, None

    def made() -> bool:  # by another run sharing the folder, since the plan: theirs is as good as ours
        return not overwrite and finished_request(job.video, job.sidecar) == job.request

    if writer:
        if made():
            reason = "exists"
        else:
            claim, owner = try_claim(job.video)
            if claim is None:
                reason = f"being made by {owner}"
            elif made():
                claim.release()
                claim, reason = None, "exists"
    if sp:
        import torch.distributed as dist

        decision = [reason]
        dist.broadcast_object_list(decision, src=0, group=ctx.group)
        reason = decision[0]
    return claim, reason


def _run(report: ValidationReport, opts: SampleOptions, dirs: dict[str, Path], inputs: dict, ctx,
         reporter: Reporter) -> SampleSummary:
    import torch

    world, rank = ctx.world_size, ctx.rank
    mode = "single" if world == 1 else ("sp" if opts.sp else "ddp")
    writer = mode != "sp" or rank == 0
    dtype = _dtype_for(opts, ctx.device)

    # 1. This process's jobs: outputs made with the same request are skipped (others were refused already)
    plan = plan_outputs(report, opts, inputs, dirs, dtype_name(opts, ctx.device.type))
    if plan.problems:  # the folder changed since the check (another run wrote to it)
        raise ValidationFailed(report.model_copy(update={"ok": False, "problems": plan.problems}))
    if writer:
        remove_stale_parts(opts.output_dir.resolve())
    mine = (lambda jobs: [job for job in jobs if job.index % world == rank]) if mode == "ddp" else (lambda jobs: jobs)
    results = [_skipped(job, rank, "exists") for job in mine(plan.done)]
    jobs = mine(plan.jobs)

    load_seconds, written = 0.0, 0
    try:
        if jobs:
            # 2. Text: encode every pending prompt once, then free the encoder (the largest model of the three)
            started = time.perf_counter()
            from opensora_cli.models.text_encoder import DEFAULT_NEGATIVE_PROMPT, TextEncoder, apply_template

            reporter.phase("encoding prompts")
            # padded to the longer of prompt and negative prompt, not 512: same video, less work per step
            text_encoder = TextEncoder.from_pretrained(dirs["text_encoder"], dtype=dtype, device=ctx.device,
                                                       padding="longest")
            do_cfg = opts.guidance_scale > 1.0
            negative = DEFAULT_NEGATIVE_PROMPT if opts.negative_prompt is None else opts.negative_prompt
            embeddings = {}
            for prompt in dict.fromkeys(job.item.prompt for job in jobs):
                texts = ([negative] if do_cfg else []) + [apply_template(prompt) if opts.prompt_template else prompt]
                states, mask = text_encoder(texts)
                embeddings[prompt] = (states.cpu(), mask.cpu())
            hidden_size = text_encoder.hidden_size
            del text_encoder
            gc.collect()
            if ctx.device.type == "cuda":
                torch.cuda.empty_cache()

            # 3. Transformer, VAE, scheduler, pipeline
            reporter.phase("loading the transformer and the VAE")
            pipe = _load_pipeline(opts, dirs, ctx, dtype, hidden_size)
            load_seconds = time.perf_counter() - started
            if ctx.device.type == "cuda":
                torch.cuda.reset_peak_memory_stats()

            # 4. Generate: claim each output just before making it, so that runs sharing the folder share the work
            reporter.start(len(jobs), opts.steps)
            for job in jobs:
                claim, reason = _take(job, ctx, writer, mode == "sp", opts.overwrite)
                if reason is not None:
                    results.append(_skipped(job, rank, reason))
                    reporter.video_done(results[-1])
                    continue
                try:
                    result = _generate(pipe, job, embeddings[job.item.prompt], opts, inputs, ctx, reporter, rank,
                                       claim)
                    if writer:
                        _write_outputs(result.frames, result.result, job, opts, dirs, ctx, dtype)
                        written += 1
                finally:
                    if claim is not None:
                        claim.release()
                results.append(result.result)
                reporter.video_done(result.result)
    except KeyboardInterrupt:
        total = len(plan.jobs) if mode != "ddp" else len(jobs)
        where = "" if mode != "ddp" else f" by process {rank}"
        raise Interrupted(f"{written} of {total} video(s) written{where}; rerun the same command to "
                          "finish (finished videos are skipped)") from None

    # 5. All results on every rank (rank 0 reports them)
    if world > 1:
        gathered: list = [None] * world
        torch.distributed.all_gather_object(gathered, [r.model_dump(mode="json") for r in results], group=ctx.group)
        merged = {}
        for part in gathered:
            for data in part:
                merged.setdefault((data["line"], data["sample"]), SampleResult.model_validate(data))
        results = [merged[key] for key in sorted(merged)]
    peak = torch.cuda.max_memory_allocated() / 2**30 if ctx.device.type == "cuda" and jobs else None
    return SampleSummary(results=sorted(results, key=lambda r: (r.line, r.sample)), warnings=report.warnings,
                         device=str(ctx.device),
                         dtype=str(dtype).removeprefix("torch."), world_size=world, mode=mode,
                         load_seconds=load_seconds, peak_memory_gib=peak)


@dataclass
class _Made:
    result: SampleResult
    frames: Any  # (T, H, W, 3) uint8


def _generate(pipe, job: Job, embeddings, opts: SampleOptions, inputs: dict, ctx, reporter: Reporter,
              rank: int, claim) -> _Made:
    """One video through the pipeline; the claim's heartbeat beats at every step."""
    import torch

    item = job.item
    reporter.video_started(item.line, job.sample, item.prompt)
    generator = torch.Generator(ctx.device).manual_seed(job.seed)
    fixed = inputs["crop_for_hw"] or not item.conds

    def on_step(index: int, steps: int, t) -> None:
        reporter.step(index, steps)
        if claim is not None:
            claim.refresh()

    started = time.perf_counter()
    out = pipe(
        item.prompt,
        conditions=item.conds,
        frame_indices=item.frame_indices if item.conds and item.frame_indices is not None else None,
        mask_type=item.mask_type,
        num_frames=inputs["num_frames"],
        height=inputs["height"] if fixed else None,
        width=inputs["width"] if fixed else None,
        crop_for_hw=inputs["crop_for_hw"],
        max_hxw=inputs["max_hxw"],
        num_inference_steps=opts.steps,
        guidance_scale=opts.guidance_scale,
        guidance_rescale=opts.guidance_rescale,
        noise_strength=opts.noise_strength,
        sample_posterior=opts.sample_posterior,
        generator=generator,
        prompt_embeds=embeddings,
        callback=on_step,
    )
    seconds = time.perf_counter() - started
    result = SampleResult(line=item.line, sample=job.sample, prompt=item.prompt, video=job.video,
                          sidecar=job.sidecar, seed=job.seed, mask_type=str(out.mask_type),
                          kept_frames=out.kept_frames, seconds=seconds, seconds_per_step=seconds / opts.steps,
                          rank=rank)
    return _Made(result, out.videos[0])


def _load_pipeline(opts: SampleOptions, dirs: dict[str, Path], ctx, dtype, hidden_size: int):
    from opensora_cli.errors import ModelLoadError
    from opensora_cli.models.autoencoder_wfvae import WFVAEModel
    from opensora_cli.models.loading import load_pretrained
    from opensora_cli.models.transformer_opensora import OpenSoraInpaint_v1_3
    from opensora_cli.pipelines.pipeline_inpaint import OpenSoraInpaintPipeline
    from opensora_cli.pipelines.schedulers import make_scheduler

    target = "cpu" if opts.cpu_offload else ctx.device
    transformer = load_pretrained(OpenSoraInpaint_v1_3, dirs["transformer"], dtype=dtype, device=target)
    if transformer.config.caption_channels != hidden_size:
        raise ModelLoadError(
            f"{dirs['text_encoder']}: text states are {hidden_size} wide, the transformer expects "
            f"{transformer.config.caption_channels} — use the text encoder the transformer was trained with"
        )
    vae = load_pretrained(WFVAEModel, dirs["vae"], dtype=dtype, device=target)
    if opts.vae_tiling:
        vae.enable_tiling()
    if opts.compile:  # each transformer block compiled once and reused by all 32 (about 10 % faster on a GPU)
        transformer.compile_repeated_blocks()
    pipe = OpenSoraInpaintPipeline(text_encoder=None, vae=vae, transformer=transformer,
                                   scheduler=make_scheduler(opts.sampler))
    if opts.cpu_offload:
        pipe.enable_model_cpu_offload(device=ctx.device)
    if opts.sp:
        from opensora_cli.distributed.sequence_parallel import SequenceParallelAttnProcessor

        transformer.set_attn_processor(SequenceParallelAttnProcessor(ctx))
        pipe.sequence_parallel = ctx
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _write_outputs(frames, result: SampleResult, job: Job, opts: SampleOptions, dirs: dict[str, Path], ctx,
                   dtype) -> None:
    """The video, then its sidecar (the request plus run facts). A failure of either leaves neither: the
    sidecar is what marks an output finished, and a video without one is removed."""
    from opensora_cli.utils.io import atomic_path
    from opensora_cli.utils.video import write_video

    sidecar = {
        "opensora_cli_version": __version__,
        "video": result.video.name,
        **job.request,
        "base_seed": opts.seed,
        "kept_frames": result.kept_frames,
        "device": str(ctx.device),
        "world_size": ctx.world_size,
        "sequence_parallel": opts.sp,
        "seconds": round(result.seconds, 3),
    }
    text = json.dumps(sidecar, indent=2) + "\n"
    try:
        write_video(result.video, frames, opts.fps)
        with atomic_path(result.sidecar) as tmp:
            tmp.write_text(text)
    except BaseException as exc:
        for path in (result.video, result.sidecar):
            with contextlib.suppress(OSError):
                if path.is_file():
                    path.unlink()
        if isinstance(exc, OSError):
            raise OutputError(f"{result.video}: cannot write the output ({exc.strerror or exc}); "
                              "nothing of it was kept — free some space or fix the folder, then rerun") from exc
        raise
