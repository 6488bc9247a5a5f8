"""sample: plan (every check, no model loaded), then run (load the models once, make every output).

1. `plan(options)`: the model folder's defaults fill what the user left out; validate-inputs' checks, the
   options, the model folders (config files only), the sampler name, the sequence-parallel divisibility rules,
   the output folder and the memory estimate (see `services.outputs` and `services.memory`). Any problem stops
   here. The plan lists every output: an output made with the same request is skipped; one made with another is
   refused (unless `overwrite`). The processes of `--nproc` receive this plan; they do not check again.
2. `run(plan)`: every pending prompt's embedding is read from the text cache or encoded (as the pipeline's
   `encode_prompt` does, see `services.text_cache`); the text encoder is freed after (it is the largest model
   and is not needed again), and not loaded at all when every prompt is cached; the transformer and the VAE
   are loaded; each output is claimed just before it is made (so runs sharing a folder share work) and
   generated with its own seed.

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
from pathlib import Path
from typing import Any

from opensora_cli import __version__
from opensora_cli.errors import GenerationError, Interrupted, OutputError, ValidationFailed
from opensora_cli.masks.patterns import latent_frame_count
from opensora_cli.schemas.events import SampleReporter, SilentSampleReporter
from opensora_cli.schemas.inputs import InputItem, InputsRequest
from opensora_cli.schemas.problems import Problem, option_name
from opensora_cli.schemas.sample import Job, SamplePlan, SampleRequest, SampleResult, SampleSummary
from opensora_cli.schemas.windows import window_spans
from opensora_cli.services import text_cache
from opensora_cli.services.model_folders import resolve_fields, resolve_model_dirs
from opensora_cli.services.outputs import (
    REQUEST_FIELDS,
    check_output_dir,
    differences,
    estimate_output_bytes,
    file_sha256,
    model_fingerprints,
    remove_stale_parts,
    request_of,
    try_claim,
)
from opensora_cli.services.validation import build_request, check_inputs
from opensora_cli.utils.seeds import stable_seed

PLAN_ENV = "OPENSORA_SAMPLE_PLAN"  # the JSON file of the plan that `--nproc` hands to its processes
_SLUG_LENGTH = 48
_INPUT_OPTIONS = frozenset(option_name(name) for name in InputsRequest.model_fields)


# ------------------------------------------------------------------------------------------------------------
# 1. The plan (no model is loaded)
# ------------------------------------------------------------------------------------------------------------


def plan(options: Mapping[str, Any]) -> SamplePlan:
    """Resolve, check and plan a run: what `run` will make, skip or refuse.

    Args:
        options: the fields of `SampleRequest` as given on the command line (unchecked), None where not given.

    Raises:
        ValidationFailed: every problem found (nothing loaded, nothing written).
        InputError: `--model` is not a folder or its `opensora_defaults.json` is broken.
    """
    resolved, problems = build_request(resolve_fields(options), SampleRequest)
    option_problems = [p for p in problems if p.file not in _INPUT_OPTIONS]
    report = check_inputs(resolved, [p for p in problems if p.file in _INPUT_OPTIONS])
    problems = list(report.problems) + option_problems
    dirs: dict[str, Path] = {}
    cache_dir, cache_writable, cache_warnings = None, False, []
    if not option_problems:
        dirs, dir_problems = resolve_model_dirs(resolved.model, resolved.vae, resolved.text_encoder)
        problems += dir_problems + _sampler_problems(resolved) + _cfg_parallel_problems(resolved)
        problems += _sequence_parallel_problems(resolved, dirs)
        cache_dir, cache_writable, cache_problems, cache_warnings = text_cache.resolve_dir(
            resolved.text_cache, resolved.no_text_cache)
        problems += cache_problems
        if resolved.lora and not dir_problems:  # made for this base? from the files, before anything loads
            from opensora_cli.services.lora import adapter_problems

            book = cache_dir / text_cache.HASHES_FILE if cache_dir is not None and cache_writable else None
            problems += adapter_problems(resolved.lora, dirs["transformer"], book)
    if problems:
        raise ValidationFailed(report.model_copy(update={"ok": False, "problems": problems}))

    from opensora_cli.distributed.device import resolve_device

    device = resolve_device(resolved.device)  # raises one clear line for a missing CUDA or torch_npu
    dtype = resolved.dtype_for(device.type)
    from opensora_cli.models.quantize import quantization_problem

    refused = quantization_problem(resolved.quantize, device)  # fp8 on a CPU: said before anything loads
    if refused:
        raise ValidationFailed(report.model_copy(update={"ok": False, "problems": [
            Problem.of("--quantize", None, *refused)]}))
    if resolved.vae_tiling is None:
        resolved = resolved.model_copy(update={"vae_tiling": choose_vae_tiling(report.items, resolved, dirs, device)})
    outputs, problems = plan_outputs(report.items, resolved, dirs, dtype)
    problems += check_memory(report.items, resolved, dirs, device)
    if problems:
        raise ValidationFailed(report.model_copy(update={"ok": False, "problems": problems}))
    warnings = [*report.warnings, *prompt_length_warnings(report.items, resolved, dirs["text_encoder"]),
                *cache_warnings]
    fingerprint = None
    if cache_dir is not None and outputs[0]:  # hashed once here, not by each process of --nproc
        try:
            fingerprint = text_cache.encoder_fingerprint(dirs["text_encoder"], cache_dir, cache_writable)
        except OSError:
            cache_dir = None  # an unreadable encoder: its load names the problem
    return SamplePlan(request=resolved, model_dirs=dirs, dtype=dtype, jobs=outputs[0], done=outputs[1],
                      warnings=warnings, text_cache=cache_dir if fingerprint else None,
                      text_cache_writable=cache_writable, text_encoder_fingerprint=fingerprint)


def _sampler_problems(request: SampleRequest) -> list[Problem]:
    from opensora_cli.pipelines.schedulers import make_scheduler

    try:
        make_scheduler(request.sampler)
    except ValueError as exc:
        return [Problem.of("--sampler", None, str(exc))]
    return []


def _cfg_parallel_problems(request: SampleRequest) -> list[Problem]:
    if not request.cfg_parallel:
        return []
    if request.guidance_scale <= 1.0:
        return [Problem.of("--cfg-parallel", None, f"guidance is off (--guidance-scale {request.guidance_scale:g}), "
                           "so there are no halves to share", "leave --cfg-parallel out, or use a scale above 1")]
    if not request.sp and request.nproc != 2:
        return [Problem.of("--cfg-parallel", None, f"it runs on 2 processes, not {request.nproc}",
                           "use --nproc 2, or --nproc 4 (or 6, 8, ...) with --sp")]
    if request.sp and (request.nproc % 2 or request.nproc < 4):
        return [Problem.of("--cfg-parallel", None, f"with --sp it needs an even number of processes, 4 or more, "
                           f"not {request.nproc}", "use --nproc 4 (2 halves x 2 processes each)")]
    return []


def _sequence_parallel_problems(request: SampleRequest, dirs: dict[str, Path]) -> list[Problem]:
    if not request.sp:
        return []
    if request.nproc < 2:
        return [Problem.of("--sp", None, "sequence parallel needs several processes", "add --nproc 2 (or more)")]
    if request.cfg_parallel and (request.nproc % 2 or request.nproc < 4):
        return []  # (_cfg_parallel_problems says it)
    config_file = dirs.get("transformer", Path()) / "config.json"
    if not config_file.is_file() or request.num_frames is None or (request.num_frames - 1) % 4:
        return []
    from opensora_cli.distributed.sequence_parallel import check_sequence_parallel

    heads = json.loads(config_file.read_text())["num_attention_heads"]
    problems = []
    lengths = {request.num_frames}
    if request.window_overlap is not None and request.window_overlap <= request.window_frames - 4:
        lengths = {frames for _, frames in window_spans(request.num_frames, request.window_frames,
                                                        request.window_overlap)}  # each window is sharded
    messages = dict.fromkeys(m for frames in sorted(lengths, reverse=True)
                             for m in check_sequence_parallel(latent_frame_count(frames), heads, request.sp_size))
    for message in messages:
        what, _, fix = message.partition(": ")
        problems.append(Problem.of("--sp", None, what, fix or None))
    return problems


def prompt_length_warnings(items: list[InputItem], request: SampleRequest, text_encoder: Path) -> list[Problem]:
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
    for item in items:
        text = apply_template(item.prompt) if request.prompt_template else item.prompt
        count = len(tokenizer(text, add_special_tokens=True).input_ids)
        if count > DEFAULT_MAX_LENGTH:
            warnings.append(Problem.of(str(request.prompts), item.line, f"the prompt is {count} tokens long; the text "
                                       f"encoder reads the first {DEFAULT_MAX_LENGTH}, the rest is cut",
                                       "shorten the prompt"))
    return warnings


# `--vae-tiling auto` decodes untiled (about twice as fast where memory is not short) only when the untiled
# estimate needs at most this share of the free memory: the estimate is within about 2x of the measured peak
# (services/memory.py, benchmarks/memory.py), so the rest is the margin for its error.
UNTILED_SHARE = 0.5


def choose_vae_tiling(items: list[InputItem], request: SampleRequest, dirs: dict[str, Path], device) -> bool:
    """`--vae-tiling auto`: True (tiled) unless the untiled run's estimated peak fits in `UNTILED_SHARE` of the
    free memory; tiled too when the free memory or the estimate is unknown."""
    try:
        needed, free, _ = _memory_need(items, request.model_copy(update={"vae_tiling": False}), dirs, device)
    except (KeyError, ValueError, TypeError):
        return True  # (check_memory names the broken config)
    return free is None or needed > UNTILED_SHARE * free


def _memory_need(items: list[InputItem], request: SampleRequest, dirs: dict[str, Path], device):
    """(bytes the run needs on the device that matters, its free bytes or None when unknown, the estimate).

    Raises:
        KeyError, ValueError, TypeError: the model config lacks a size field.
    """
    from opensora_cli.services import memory
    from opensora_cli.utils.system import available_host_memory

    height, width = memory.largest_output(items, request)
    estimate = memory.estimate(dirs, request.window_frames, height, width, request.dtype_for(device.type),
                               device.type, request.guidance_scale > 1.0, bool(request.vae_tiling),
                               request.cpu_offload, request.step_cache, request.quantize)
    if device.type == "cpu":  # host memory is shared by all processes on a CPU
        return estimate.peak * request.nproc, available_host_memory(), estimate
    needed = estimate.device_peak
    share = request.sp_size * (2 if request.cfg_parallel else 1)  # of the tokens and of the guidance batch
    if share > 1:  # each accelerator holds its share of the activations
        needed -= estimate.activations - estimate.activations // share
    return needed, _accelerator_free_memory(device), estimate


def check_memory(items: list[InputItem], request: SampleRequest, dirs: dict[str, Path], device) -> list[Problem]:
    """The run's estimated peak (services/memory.py) against the device's free memory.

    Host memory is shared by all processes on a CPU; each accelerator holds one process (its share of the
    tokens under --sp).
    """
    from opensora_cli.services import memory

    try:
        needed, free, estimate = _memory_need(items, request, dirs, device)
    except (KeyError, ValueError, TypeError) as exc:
        return [Problem.of("--model", None, f"{dirs['transformer'] / 'config.json'}: cannot read the model's sizes "
                           f"({type(exc).__name__}: {exc})", "use the config.json the model was saved with")]
    if free is None or needed <= free:
        return []
    height, width = memory.largest_output(items, request)
    frames = request.window_frames  # a long video holds one window at a time
    per_process = f" per process x {request.nproc}" if device.type == "cpu" and request.nproc > 1 else ""
    where = "this machine's free memory" if device.type == "cpu" else f"free memory of {device.type}"
    return [Problem.of("--num-frames", None, f"a {frames}-frame {height}x{width} video needs "
                       f"{estimate.describe()}{per_process}; {where} is {memory.gib(free)}",
                       "use " + memory.ways_out(request.vae_tiling, request.cpu_offload, device.type, frames,
                                                request.quantize, _int8_helps(estimate, dirs, frames, height,
                                                                              width, request, device.type)))]


def _int8_helps(estimate, dirs: dict[str, Path], frames: int, height: int, width: int, request: SampleRequest,
                device_type: str) -> bool:
    """Whether --quantize int8 lowers this run's estimate (not when the text encoder's phase is the peak: it
    loads unquantised, see services/memory.py)."""
    from opensora_cli.services import memory

    if request.quantize != "none":
        return False
    int8 = memory.estimate(dirs, frames, height, width, request.dtype_for(device_type), device_type,
                           request.guidance_scale > 1.0, request.vae_tiling, request.cpu_offload,
                           request.step_cache, "int8")
    return int8.peak < estimate.peak if device_type == "cpu" else int8.device_peak < estimate.device_peak


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


def _sidecar_request(item: InputItem, sample: int, seed: int, request: SampleRequest, models: dict, dtype: str,
                     hashes: dict[str, str], lora: list[dict] | None = None) -> dict[str, Any]:
    """What made an output: a rerun skips it only when this is the same."""
    from opensora_cli.services.long_video import window_records

    height, width = item.output_size or (request.height, request.width)
    return request_of({
        **request.model_dump(include=set(REQUEST_FIELDS)),  # the generation options (steps, sampler, fps, ...)
        "prompt": item.prompt, "line": item.line, "sample": sample, "seed": seed, "height": height, "width": width,
        "mask_type": str(item.mask_type) if item.mask_type is not None else None,
        "conds": [{"path": path, "sha256": hashes[path]} for path in item.conds],
        "frame_indices": item.frame_indices, "dtype": dtype, "models": models,
        "windows": window_records(item.windows, seed, request.window_adain) if item.windows else None,
        "step_cache": None if request.step_cache_policy.off else request.step_cache,  # (off: as before it existed)
        "quantize": None if request.quantize == "none" else request.quantize,  # (none: as before it existed)
        "lora": lora,  # (none: None, as before adapters existed)
        "replace_kept_latents": request.replace_kept_latents or None,  # (off: as before it existed)
    })


def finished_request(video: Path, sidecar: Path) -> dict[str, Any] | None:
    """The request recorded beside a finished output (video and a readable sidecar), else None."""
    if not (video.is_file() and sidecar.is_file()):
        return None
    try:
        return request_of(json.loads(sidecar.read_text()))
    except (OSError, ValueError):
        return None


def plan_outputs(items: list[InputItem], request: SampleRequest, dirs: dict[str, Path],
                 dtype: str) -> tuple[tuple[list[Job], list[Job]], list[Problem]]:
    """Each (line, sample): make, skip (the same request made it) or refuse (another request made it).

    Also checks that the output folder can take the outputs still to make (see `services.outputs`).

    Returns:
        ((jobs to make, jobs done before), problems).
    """
    jobs: list[Job] = []
    done: list[Job] = []
    output_dir = request.output_dir.resolve()
    models = model_fingerprints(dirs)
    hashes = {path: file_sha256(path) for item in items for path in item.conds}
    from opensora_cli.services.lora import adapter_records

    lora = adapter_records(request.active_lora)  # (scale 0: left out, the base model's video)
    changed: list[tuple[Path, list[str]]] = []
    for item in items:
        for sample in range(request.num_samples_per_prompt):
            video, sidecar = output_paths(output_dir, item, sample, request.num_frames)
            seed = derive_seed(request.seed, item.line, sample)
            job = Job(index=len(jobs) + len(done) + len(changed), item=item, sample=sample, seed=seed, video=video,
                      sidecar=sidecar, request=_sidecar_request(item, sample, seed, request, models, dtype, hashes,
                                                                lora))
            before = None if request.overwrite else finished_request(video, sidecar)
            if before is None:
                jobs.append(job)
            elif before == job.request:
                done.append(job)
            else:
                changed.append((video, differences(before, job.request)))
    problems = []
    if changed:
        groups: dict[tuple[str, ...], list[str]] = {}  # outputs that differ the same way are listed once
        for video, fields in changed:
            groups.setdefault(tuple(fields), []).append(video.name)
        shown = "; ".join(
            f"{', '.join(fields)} ({', '.join(names[:2])}{f' and {len(names) - 2} more' if len(names) > 2 else ''})"
            for fields, names in groups.items()
        )
        problems.append(Problem.of(
            "--output-dir", None, f"{len(changed)} output(s) in '{request.output_dir}' were made with other "
            f"parameters: {shown}", "add --overwrite to replace them, or pick another --output-dir"))
    needed = 0
    for job in jobs:
        height, width = job.request["height"] or 0, job.request["width"] or 0
        video = estimate_output_bytes(request.num_frames, height, width)
        # A long video also holds its parts until they are joined, and two windows of pixels.
        needed += 2 * video + 2 * request.window_frames * height * width * 3 if job.item.windows else video
    problems += check_output_dir(output_dir, needed)
    return (jobs, done), problems


# ------------------------------------------------------------------------------------------------------------
# 3. The run
# ------------------------------------------------------------------------------------------------------------


def run(plan: SamplePlan, reporter: SampleReporter | None = None) -> SampleSummary:
    """Make the plan's outputs. In a process of `--nproc`, this process's share of them.

    Raises:
        Interrupted: Ctrl-C (the message says how much was written).
        OutputError, GenerationError: an output could not be written or came out as NaN.
    """
    reporter = reporter or SilentSampleReporter()
    for warning in plan.warnings:
        reporter.warning(warning.render())

    from opensora_cli.distributed.device import distributed_context

    try:
        with distributed_context(plan.request.device) as ctx:
            return _make_outputs(plan, ctx, reporter)
    finally:
        reporter.close()


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


def _make_outputs(plan: SamplePlan, ctx, reporter: SampleReporter) -> SampleSummary:
    import torch

    from opensora_cli.distributed.device import torch_dtype

    request, dirs = plan.request, plan.model_dirs
    world, rank = ctx.world_size, ctx.rank
    # Under --sp and --cfg-parallel every process works on every video (a share of it); rank 0 writes
    mode = "single" if world == 1 else ("+".join(name for name, on in (("cfg-parallel", request.cfg_parallel),
                                                                        ("sp", request.sp)) if on) or "ddp")
    shared = mode not in ("single", "ddp")
    writer = not shared or rank == 0
    dtype = torch_dtype(plan.dtype)

    # 1. This process's jobs (DDP splits them by their place in the plan, whatever each process finds on disk)
    if writer:
        remove_stale_parts(request.output_dir.resolve())
    mine = (lambda jobs: [job for job in jobs if job.index % world == rank]) if mode == "ddp" else (lambda jobs: jobs)
    results = [_skipped(job, rank, "exists") for job in mine(plan.done)]
    jobs = mine(plan.jobs)

    load_seconds, written = 0.0, 0
    try:
        if jobs:
            # 2. Text: every pending prompt's embedding, from the text cache or encoded once; the encoder (the
            # largest model of the three) is freed after, and not even loaded when every prompt is cached
            started = time.perf_counter()
            embeddings, hidden_size = _embed_prompts(plan, jobs, ctx, dtype, writer, reporter)
            gc.collect()
            if ctx.device.type == "cuda":
                torch.cuda.empty_cache()
            pipe = _pipeline(request)

            # 3. Transformer and VAE
            reporter.phase("loading the transformer and the VAE")
            _load_models(pipe, request, dirs, ctx, dtype, hidden_size)
            load_seconds = time.perf_counter() - started
            if ctx.device.type == "cuda":
                torch.cuda.reset_peak_memory_stats()

            # 4. Generate: claim each output just before making it, so that runs sharing the folder share the work
            reporter.start(len(jobs), request.steps)
            for job in jobs:
                claim, reason = _take(job, ctx, writer, shared, request.overwrite)
                if reason is not None:
                    results.append(_skipped(job, rank, reason))
                    reporter.video_done(results[-1])
                    continue
                try:
                    result, frames = _generate(pipe, job, embeddings, request, ctx, reporter, claim, writer)
                    if writer:
                        _write_outputs(frames, result, job, request, ctx)
                        written += 1
                finally:
                    if claim is not None:
                        claim.release()
                results.append(result)
                reporter.video_done(result)
    except KeyboardInterrupt:
        total = len(plan.jobs) if mode != "ddp" else len(jobs)
        where = "" if mode != "ddp" else f" by process {rank}"
        resumes = ", a long video resumes at its first unfinished window" if any(j.item.windows for j in jobs) else ""
        raise Interrupted(f"{written} of {total} video(s) written{where}; rerun the same command to "
                          f"finish (finished videos are skipped{resumes})") from None

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
    return SampleSummary(results=sorted(results, key=lambda r: (r.line, r.sample)), warnings=plan.warnings,
                         device=str(ctx.device), dtype=str(dtype).removeprefix("torch."), world_size=world,
                         mode=mode, load_seconds=load_seconds, peak_memory_gib=peak)


def _generate(pipe, job: Job, embeddings: dict, request: SampleRequest, ctx, reporter: SampleReporter,
              claim, writer: bool) -> tuple[SampleResult, Any]:
    """One output through the pipeline, from the plan's mask type, kept frames and size; the claim's heartbeat
    beats at every step. A long video (`job.item.windows`) is made window by window and written as it goes
    (frames None); a short one returns its frames (T, H, W, 3) uint8."""
    import torch

    item = job.item
    windows = item.windows or []
    reporter.video_started(item.line, job.sample, item.prompt)
    total_steps = request.steps * max(1, len(windows))
    height, width = item.output_size

    def call(prompt: str, conditions, frame_indices, mask_type, num_frames: int, seed: int, first_step: int,
             fixed_size: bool):
        def on_step(pipe, index: int, t, tensors: dict) -> dict:
            reporter.step(first_step + index, total_steps)
            if claim is not None:
                claim.refresh()
            return tensors

        try:
            return pipe(prompt, conditions=conditions, mask_type=mask_type, frame_indices=frame_indices,
                        num_frames=num_frames, height=height, width=width, crop_for_hw=fixed_size,
                        max_hxw=request.max_hxw, num_inference_steps=request.steps,
                        guidance_scale=request.guidance_scale, guidance_rescale=request.guidance_rescale,
                        noise_strength=request.noise_strength, sample_posterior=request.sample_posterior,
                        replace_kept_latents=request.replace_kept_latents,
                        generator=torch.Generator(ctx.device).manual_seed(seed), prompt_embeds=embeddings[prompt],
                        callback_on_step_end=on_step)
        except FloatingPointError as exc:
            raise GenerationError(f"line {item.line}: {exc} — try --dtype bf16 or fp32") from None

    started = time.perf_counter()
    if windows:
        from opensora_cli.services import long_video

        # Later windows keep pixels of the one before at the planned size; a line without conditions of its own
        # has no input to take the size from in arbitrary mode, so those go through the fixed-size path.
        fixed_later = request.crop_for_hw or not item.conds

        def make_window(window, conditions, frame_indices, seed):
            fixed = request.crop_for_hw if window.index == 0 else fixed_later
            out = call(window.prompt, conditions or None, frame_indices, window.mask_type, window.frames, seed,
                       window.index * request.steps, fixed)
            return out.videos[0], out.kept_frames

        resume = _broadcast_from_rank0(ctx) if request.sp or request.cfg_parallel else None
        try:
            result = long_video.generate(make_window, job, request, writer, resume)
        except OSError as exc:
            raise _output_error(job, exc) from exc
        return result.model_copy(update={"rank": ctx.rank}), None
    out = call(item.prompt, item.conds, item.frame_indices if item.conds and item.frame_indices is not None else None,
               item.mask_type, request.num_frames, job.seed, 0, request.crop_for_hw)
    seconds = time.perf_counter() - started
    result = SampleResult(line=item.line, sample=job.sample, prompt=item.prompt, video=job.video,
                          sidecar=job.sidecar, seed=job.seed, mask_type=str(out.mask_type),
                          kept_frames=out.kept_frames, seconds=seconds, seconds_per_step=seconds / request.steps,
                          rank=ctx.rank)
    return result, out.videos[0]


def _prompts(job: Job) -> list[str]:
    """The prompts an output is made with: one, or one per window of a long video (a stretch each)."""
    return [w.prompt for w in job.item.windows] if job.item.windows else [job.item.prompt]


def _broadcast_from_rank0(ctx):
    """Under --sp every rank resumes a long video where rank 0 (the writer, which reads the store) does."""
    import torch.distributed as dist

    def resume(done: int, first_kept: list[int]) -> tuple[int, list[int]]:
        decision = [(done, first_kept)]
        dist.broadcast_object_list(decision, src=0, group=ctx.group)
        return decision[0]

    return resume


def _embed_prompts(plan: SamplePlan, jobs: list[Job], ctx, dtype, writer: bool,
                   reporter: SampleReporter) -> tuple[dict, int]:
    """{prompt: (states (R, 1, L, C), mask (R, 1, L)) on the CPU} of every prompt of `jobs`, and C.

    With a text cache (see `services.text_cache`), cached prompts are read and only the others encoded (and
    stored, by the processes that write outputs; under --sp that is rank 0 alone); when all are cached the
    text encoder is never loaded. Same tensors either way: an entry is what this encoding makes.
    """
    request = plan.request
    prompts = list(dict.fromkeys(p for job in jobs for p in _prompts(job)))
    encoding = text_cache.Encoding.of(plan.text_encoder_fingerprint or "", request.negative_prompt,
                                      request.guidance_scale, request.prompt_template, plan.dtype,
                                      ctx.device.type, request.quantize)
    cache = None
    if plan.text_cache is not None:
        cache = text_cache.TextCache(plan.text_cache, encoding, plan.text_cache_writable and writer)
    found = cache.lookup(prompts) if cache is not None else {}
    misses = [p for p in prompts if p not in found]
    if not misses:
        reporter.phase(f"{len(prompts)} prompt(s) from the text cache, no text encoder")
        return found, text_cache.hidden_size_of(found)
    cached = f" ({len(found)} of {len(prompts)} from the text cache)" if found else ""
    reporter.phase(f"encoding prompts{cached}")
    encoded = text_cache.encode(misses, encoding, lambda: text_cache.load_text_encoder(
        plan.model_dirs["text_encoder"], dtype, ctx.device, request.quantize), cache)
    if encoded.unstored:
        reporter.warning(f"{plan.text_cache}: {encoded.unstored} prompt embedding(s) could not be stored in "
                         "the text cache (disk full?); this run goes on")
    return {**found, **encoded.embeddings}, encoded.hidden_size


def _pipeline(request: SampleRequest):
    """The pipeline with only its scheduler: the transformer and VAE load next; the prompts are embedded
    already (`_embed_prompts`), so it has no text encoder."""
    from opensora_cli.pipelines.pipeline_inpaint import OpenSoraInpaintPipeline
    from opensora_cli.pipelines.schedulers import make_scheduler

    pipe = OpenSoraInpaintPipeline(text_encoder=None, vae=None, transformer=None,
                                   scheduler=make_scheduler(request.sampler))
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _load_models(pipe, request: SampleRequest, dirs: dict[str, Path], ctx, dtype, hidden_size: int) -> None:
    from opensora_cli.errors import ModelLoadError
    from opensora_cli.models.autoencoder_wfvae import WFVAEModel
    from opensora_cli.models.loading import load_pretrained
    from opensora_cli.models.transformer_opensora import OpenSoraInpaint_v1_3

    target = "cpu" if request.cpu_offload else ctx.device
    transformer = load_pretrained(OpenSoraInpaint_v1_3, dirs["transformer"], dtype=dtype, device=target)
    if request.active_lora:
        from opensora_cli.models.lora import fuse_adapters, load_adapters

        try:
            load_adapters(transformer, [(spec.path, spec.scale) for spec in request.active_lora])
        except ValueError as exc:  # (the plan checked the files; this is peft's check of the tensors)
            raise ModelLoadError(f"--lora: {exc}") from None
        # Folded into the weights once: every step then costs what the base model's does (peft's layers add two
        # small matmuls per layer and call), and quantisation, compilation and the step caches see plain layers.
        fuse_adapters(transformer)
    if request.quantize != "none":  # before the VAE loads: the unquantised weights are freed first
        from opensora_cli.models.quantize import quantize_linears

        quantize_linears(transformer, request.quantize)
    if transformer.config.caption_channels != hidden_size:
        raise ModelLoadError(
            f"{dirs['text_encoder']}: text states are {hidden_size} wide, the transformer expects "
            f"{transformer.config.caption_channels} — use the text encoder the transformer was trained with"
        )
    vae = load_pretrained(WFVAEModel, dirs["vae"], dtype=dtype, device=target)
    if request.vae_tiling:
        vae.enable_tiling()
    if request.compile:  # each transformer block compiled once and reused by all 32 (about 10 % faster on a GPU)
        transformer.compile_repeated_blocks()
    pipe.register_modules(vae=vae, transformer=transformer)
    if request.cpu_offload:
        pipe.enable_model_cpu_offload(device=ctx.device)
    sp_ctx = ctx if request.sp else None
    if request.cfg_parallel:
        from opensora_cli.distributed.cfg_parallel import grid_contexts

        cfg_ctx, sp_ctx = grid_contexts(ctx, request.sp)
        pipe.enable_cfg_parallel(cfg_ctx)
    if sp_ctx is not None:
        pipe.enable_sequence_parallel(sp_ctx)
    if not request.step_cache_policy.off:
        from opensora_cli.models.step_cache import enable_step_cache

        enable_step_cache(transformer, request.step_cache_policy, sp_ctx.group if sp_ctx is not None else None)


def _write_outputs(frames, result: SampleResult, job: Job, request: SampleRequest, ctx) -> None:
    """The video, then its sidecar (the request plus run facts). A failure of either leaves neither: the
    sidecar is what marks an output finished, and a video without one is removed."""
    from opensora_cli.utils.io import atomic_path
    from opensora_cli.utils.video import write_video

    sidecar = {"opensora_cli_version": __version__, "video": result.video.name, **job.request,
               "base_seed": request.seed, "kept_frames": result.kept_frames, "device": str(ctx.device),
               "world_size": ctx.world_size, "sequence_parallel": request.sp,
               "cfg_parallel": request.cfg_parallel,
               "vae_tiling": request.vae_tiling, "seconds": round(result.seconds, 3)}
    text = json.dumps(sidecar, indent=2) + "\n"
    try:
        if frames is not None:  # (a long video is written as its windows finish)
            write_video(result.video, frames, request.fps)
        with atomic_path(result.sidecar) as tmp:
            tmp.write_text(text)
    except BaseException as exc:
        for path in (result.video, result.sidecar):
            with contextlib.suppress(OSError):
                if path.is_file():
                    path.unlink()
        if isinstance(exc, OSError):
            raise _output_error(job, exc) from exc
        raise


def _output_error(job: Job, exc: OSError) -> OutputError:
    return OutputError(f"{job.video}: cannot write the output ({exc.strerror or exc}); nothing of it was kept — "
                       "free some space or fix the folder, then rerun")
