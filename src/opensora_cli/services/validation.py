"""validate-inputs: check prompts, conditions, options and mask config before any model work.

Every problem is collected (not only the first) with its file and line. Nothing here imports torch.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from pydantic import ValidationError

from opensora_cli.data.media import MediaInfo, probe
from opensora_cli.masks.planning import plan_line
from opensora_cli.schemas.data import IMAGE_EXTENSIONS, VIDEO_EXTENSIONS, media_kind
from opensora_cli.schemas.inputs import (
    CondItem,
    CondSpec,
    InputItem,
    InputsRequest,
    ValidationReport,
    nearest_valid_frames,
    parse_conds_line,
)
from opensora_cli.schemas.mask_config import load_mask_config
from opensora_cli.schemas.defaults import RELEASED
from opensora_cli.schemas.masks import MaskType
from opensora_cli.schemas.problems import Problem, problems_from
from opensora_cli.schemas.windows import SEGMENT_SEPARATOR, Window, plan_windows
from opensora_cli.schemas.resolution import (
    ARBITRARY_HW_STRIDE,
    MAX_ASPECT,
    MIN_ASPECT,
    MIN_MAX_HXW,
    arbitrary_output_size,
    aspect_crop_box,
)

RequestT = TypeVar("RequestT", bound=InputsRequest)
_TRAINED_STRIDE = 32
# A long video may be this many times the trained length (a guard against a typo, not a limit of the method).
MAX_LENGTH_FACTOR = 100
# Files at least this big are decoded in threads (see LineChecker._probe_all).
_LARGE_FILE_BYTES = 64 * 1024


def validate_inputs(options: Mapping[str, Any]) -> ValidationReport:
    """Check the inputs of a sampling run, with the defaults `sample` would use (see `resolve_fields`).

    Args:
        options: the fields of `InputsRequest` as given on the command line (unchecked), None where not given.

    Returns:
        A report with every problem and warning, one item per line that could be paired, and the memory
        estimate of its largest video.
    """
    from opensora_cli.services.model_folders import resolve_fields

    request, problems = build_request(resolve_fields(options))
    report = check_inputs(request, problems)
    report.memory = estimate_memory(report, request)
    return report


def check_inputs(request: InputsRequest, problems: Sequence[Problem] = ()) -> ValidationReport:
    """The checks of `validate-inputs` on a resolved request (an invalid field is None: its checks are skipped).

    Args:
        problems: those already found in the request's fields; reported with the rest.
    """
    problems = list(problems)
    warnings: list[Problem] = []

    if request.mask_config is not None:
        _, config_problems, config_warnings = load_mask_config(request.mask_config)
        problems += config_problems
        warnings += config_warnings

    prompts_label = str(request.prompts)
    prompts, file_problems = read_lines(request.prompts, "--prompts")
    problems += file_problems
    conds_label = str(request.conds) if request.conds is not None else "--conds"
    if request.conds is not None:
        cond_lines, file_problems = read_lines(request.conds, "--conds")
        problems += file_problems
    elif request.mask_type in (None, MaskType.t2iv):
        cond_lines = None if prompts is None else [""] * len(prompts)  # text only: every line is t2iv
    else:
        cond_lines = None
        problems.append(Problem.of("--conds", None, f"mask type {request.mask_type} needs condition files",
                                   "pass --conds FILE with one line of images or a video per prompt"))

    problems += length_problems(request)
    if request.overlap is not None and request.num_frames is not None and request.window_overlap is None:
        warnings.append(Problem.of("--overlap", None, f"a {request.num_frames}-frame video is one window, so the "
                                   "overlap is not used", "leave --overlap out, or ask for a longer video"))
    if getattr(request, "adain", None) is not None and request.num_frames is not None and request.window_overlap is None:
        warnings.append(Problem.of("--adain", None, f"a {request.num_frames}-frame video is one window, so "
                                   "--adain is not used", "leave --adain out, or ask for a longer video"))
    items: list[InputItem] = []
    if prompts is not None and cond_lines is not None:
        if not prompts:
            problems.append(Problem.of(prompts_label, None, "the prompts file is empty", "write one prompt per line"))
        number = min(len(prompts), len(cond_lines)) + 1  # the first line that the shorter file lacks
        counts = f"({len(prompts)} prompts, {len(cond_lines)} condition lines)"
        if len(prompts) > len(cond_lines):
            problems.append(Problem.of(conds_label, number, f"prompt {number} has no conditions line {counts}",
                                       f"add a line to {conds_label} or remove the prompt"))
        elif len(cond_lines) > len(prompts):
            problems.append(Problem.of(prompts_label, number, f"conditions line {number} has no prompt {counts}",
                                       f"add a prompt to {prompts_label} or remove the conditions line"))
        for number, prompt in enumerate(prompts, start=1):
            if not prompt:
                problems.append(Problem.of(prompts_label, number, "empty prompt", "write a prompt or delete the line"))
        conds_dir = request.conds.parent.resolve() if request.conds is not None else Path.cwd()
        items, line_problems, line_warnings = LineChecker(request, conds_label, conds_dir).check(
            [(n, p, c) for n, (p, c) in enumerate(zip(prompts, cond_lines), start=1)])
        problems += line_problems
        warnings += line_warnings

    problems.sort(key=lambda p: (not p.file.startswith("--"), p.file, p.line or 0))  # options first
    return ValidationReport(ok=not problems, problems=problems, warnings=warnings, items=items)


def length_problems(request: InputsRequest) -> list[Problem]:
    """A video longer than the model's trained length is made in windows: that length must be known, and the
    overlap must leave each window something to generate."""
    frames, window, overlap = request.num_frames, request.window_frames, request.window_overlap
    if frames is None:
        return []
    if request.trained_frames is None and frames > RELEASED["num_frames"]:
        where = f"{request.model}/opensora_defaults.json" if request.model else "the model folder"
        return [Problem.of("--num-frames", None, f"{frames} frames is longer than {RELEASED['num_frames']} and the "
                           "model's trained length is unknown, so the windows of a long video cannot be planned",
                           f"write {{\"num_frames\": N}} (the frames it was trained on) to {where}, or use "
                           f"--num-frames {RELEASED['num_frames']} or fewer")]
    if request.trained_frames is not None and frames > MAX_LENGTH_FACTOR * request.trained_frames:
        most = (MAX_LENGTH_FACTOR * request.trained_frames - 1) // 4 * 4 + 1
        return [Problem.of("--num-frames", None, f"{frames} frames is over {MAX_LENGTH_FACTOR} times the model's "
                           f"trained length ({request.trained_frames})", f"use --num-frames {most} or fewer")]
    if overlap is not None and overlap > window - 4:
        return [Problem.of("--overlap", None, f"{overlap} kept frames leave nothing to generate in a {window}-frame "
                           "window", f"use --overlap {window - 4} or less (1 + 4k)")]
    return []


def build_request(options: Mapping[str, Any], model: type[RequestT] = InputsRequest) -> tuple[RequestT, list[Problem]]:
    """Validate the options; an invalid field becomes None so that checks not needing it still run.

    A problem with an input field reads `--field: what`; one with a generation option (a `SampleRequest`
    field) starts with the value received, `--steps: 0: ...`.
    """
    try:
        return model.model_validate(dict(options)), []
    except ValidationError as exc:
        values = {k: v for k, v in options.items() if k not in InputsRequest.model_fields}
        problems = problems_from(exc, values=values)
        bad = {str(error["loc"][0]) if error["loc"] else "options" for error in exc.errors()}
        defaults = {name: info.default for name, info in model.model_fields.items()}
        fields = {**defaults, **{k: v for k, v in options.items() if k in defaults}}
        fields.update({name: None for name in bad})
        return model.model_construct(**fields), problems


def read_lines(path: Path | None, option: str) -> tuple[list[str] | None, list[Problem]]:
    """A text file as stripped lines (a final newline ends the last line, it does not start another)."""
    if path is None:
        return None, [Problem.of(option, None, "missing", f"pass {option} FILE")]
    label = str(path)
    if not path.exists():
        return None, [Problem.of(label, None, "file not found", f"check the {option} path")]
    if not path.is_file():
        return None, [Problem.of(label, None, "is not a file", f"pass a text file to {option}")]
    data = path.read_bytes()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        return None, [Problem.of(label, line, f"not UTF-8 text (byte 0x{data[exc.start]:02x})",
                                 "save the file as UTF-8")]
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return [line.strip() for line in lines], []


@dataclass
class _Resolved:
    spec: CondSpec
    path: Path | None = None
    resolved_from: str | None = None
    kind: str | None = None


@dataclass
class LineChecker:
    """Checks conds lines against the request: paths, decoding, mask type, frame indices, output size.

    Args:
        request: the (possibly partly invalid) request; a None field skips the checks that need it.
        conds_label: how the conds file is named in messages.
        conds_dir: second place a relative path is looked up (after the current directory).
    """

    request: InputsRequest
    conds_label: str
    conds_dir: Path
    workers: int | None = None  # threads decoding large files; None = one per CPU
    infos: dict[Path, MediaInfo] = field(default_factory=dict)

    def check(self, lines: Sequence[tuple[int, str, str]]) -> tuple[list[InputItem], list[Problem], list[Problem]]:
        """Check (line number, prompt, conds text) triples; files are probed once each, in parallel."""
        parsed, problems = [], []
        for number, prompt, text in lines:
            specs, errors = parse_conds_line(text)
            problems += [Problem.of(self.conds_label, number, e, None if "quote" in e else
                                    "separate paths with single commas") for e in errors]  # quote errors say the fix
            parsed.append((number, prompt, [self._resolve(spec) for spec in specs]))
        self._probe_all(r.path for _, _, resolved in parsed for r in resolved if r.path is not None)

        warnings: list[Problem] = []
        items = [self._check_line(number, prompt, resolved, problems, warnings) for number, prompt, resolved in parsed]
        return items, problems, warnings

    # -- paths and probing ---------------------------------------------------------------------------------

    def _resolve(self, spec: CondSpec) -> _Resolved:
        candidate = Path(spec.path).expanduser()
        kind = media_kind(candidate)
        if candidate.is_absolute():
            return _Resolved(spec, candidate if candidate.exists() else None, "absolute", kind)
        for base, name in ((Path.cwd(), "cwd"), (self.conds_dir, "conds-dir")):
            if (base / candidate).exists():
                return _Resolved(spec, (base / candidate).resolve(), name, kind)
        return _Resolved(spec, None, None, kind)

    def _probe_all(self, paths: Iterable[Path]) -> None:
        """Decode every new file once.

        Large files (and videos) go to a thread pool: their decoders release the GIL, so threads scale. Small
        images are mostly Python work under the GIL, where threads are slower than one loop, so the main thread
        does those meanwhile (benchmarks/validate.py measures both cases).
        """
        todo = sorted({p for p in paths if p not in self.infos and media_kind(p) is not None and p.is_file()})
        large_set = {p for p in todo if media_kind(p) == "video" or p.stat().st_size >= _LARGE_FILE_BYTES}
        large = sorted(large_set)
        small = [p for p in todo if p not in large_set]
        workers = min(self.workers or (os.cpu_count() or 1), len(large))
        if workers <= 1:
            self.infos.update(zip(todo, map(probe, todo)))
            return
        with ThreadPoolExecutor(max_workers=workers) as pool:
            pending = pool.map(probe, large)
            self.infos.update(zip(small, map(probe, small)))
            self.infos.update(zip(large, pending))

    # -- one line ------------------------------------------------------------------------------------------

    def _check_line(self, number: int, prompt: str, resolved: list[_Resolved], problems: list[Problem],
                    warnings: list[Problem]) -> InputItem:
        """One line's item; its problems and warnings are appended to the lists given."""

        def bad(what: str, fix: str) -> None:
            problems.append(Problem.of(self.conds_label, number, what, fix))

        usable: list[_Resolved] = []
        for r in resolved:
            stem, at, index = r.spec.path.rpartition("@")
            if r.kind is None and at and media_kind(stem.rstrip()) is not None:
                # parse_conds_line only splits off integer indices, so "img.png@x" arrives as a path: say why.
                if re.fullmatch(r"[+-]?\d+", index.strip(), re.ASCII):
                    bad(f"'{r.spec.path}': spaces around '@'", f"write the index right after the path, e.g. "
                        f"'{stem.strip()}@{index.strip()}'")
                else:
                    bad(f"'{r.spec.path}': frame index '{index}' is not an integer",
                        "write @N with an integer N, e.g. @0 or @-1")
            elif r.kind is None:
                bad(f"'{r.spec.path}' is not a supported image or video",
                    f"use one of {', '.join(sorted(IMAGE_EXTENSIONS | VIDEO_EXTENSIONS))}")
            elif r.path is None:
                places = sorted({str(Path.cwd()), str(self.conds_dir)})
                where = "" if Path(r.spec.path).is_absolute() else f" (looked in {' and '.join(places)})"
                hint = " — a frame index is written @N with an integer N" if "@" in r.spec.path else ""
                bad(f"file not found: '{r.spec.path}'{where}{hint}", "fix the path or create the file")
            elif not r.path.is_file():
                bad(f"'{r.spec.path}' is not a file", "point to an image or video file")
            else:
                info = self.infos[r.path]
                if info.error:
                    bad(f"cannot decode {r.kind} '{r.spec.path}': {info.error}", f"replace it with a readable {r.kind}")
                else:
                    usable.append(r)
                    for warning in info.warnings:  # the file loads, but loses something on the way
                        what, _, fix = warning.partition(" — ")
                        warnings.append(Problem.of(self.conds_label, number, f"'{r.spec.path}': {what}", fix or None))

        plan = plan_line([r.kind for r in resolved], [r.spec.index for r in resolved], self.request.mask_type,
                         self.request.num_frames)
        for what, fix in plan.problems:
            bad(what, fix)

        windows = self._windows(prompt, resolved, plan, bad)
        frames = self.request.window_frames  # a long video's first window takes the video's frames
        for r in usable:
            info = self.infos[r.path]
            if r.kind == "video" and frames is not None and info.num_frames < frames:
                below = nearest_valid_frames(info.num_frames)[0] if info.num_frames >= 1 else 1
                bad(f"video '{r.spec.path}' has {info.num_frames} frames, {frames} needed",
                    f"use --num-frames {below} or a longer video")

        infos = [self.infos[r.path] for r in usable]
        output_size = self._output_size(number, infos, bad, warnings) if len(usable) == len(resolved) else None
        return InputItem(line=number, prompt=prompt, conds=[str(r.path or r.spec.path) for r in resolved],
                         mask_type=plan.mask_type, frame_indices=plan.frame_indices, output_size=output_size,
                         windows=windows,
                         cond_items=[CondItem(path=str(r.path or r.spec.path), kind=r.kind or "unknown",
                                              index=r.spec.index, resolved_from=r.resolved_from) for r in resolved])

    def _windows(self, prompt: str, resolved: list[_Resolved], plan, bad) -> list[Window] | None:
        """A long video's windows (None for a video of one window, or when the line's plan failed)."""
        req = self.request
        overlap = req.window_overlap
        if overlap is None or plan.problems or overlap > req.window_frames - 4:  # (a bad overlap: an option problem)
            if SEGMENT_SEPARATOR in prompt and overlap is None and req.num_frames is not None:  # (bad -n: its own)
                bad(f"the prompt has stretches ('{SEGMENT_SEPARATOR}'), but a {req.num_frames}-frame video is one "
                    "window", f"use one prompt, or more than {req.window_frames} frames")
            return None
        video = any(r.kind == "video" for r in resolved)
        keyframes = [] if video or plan.frame_indices is None else list(zip(plan.frame_indices, range(len(resolved))))
        windows = plan_windows(req.num_frames, req.window_frames, overlap, keyframes, prompt,
                               video_mask=plan.mask_type if video else None)
        for what, fix in windows.problems:
            bad(what, fix)
        return windows.windows or None

    def _output_size(self, number: int, infos: list[MediaInfo], bad, warnings: list[Problem]):
        req = self.request
        if req.crop_for_hw:
            if req.height is None or req.width is None:
                return None
            size = (req.height, req.width)
            for info in infos:
                _, _, crop_h, crop_w = aspect_crop_box(info.height, info.width, *size)
                if crop_h < 1 or crop_w < 1:
                    bad(f"a {info.height}x{info.width} input has no {size[0]}:{size[1]} window to crop "
                        f"for the fixed size {size[0]}x{size[1]}", "use a larger input")
                    return None
            if size[0] % _TRAINED_STRIDE or size[1] % _TRAINED_STRIDE:
                warnings.append(Problem.of(self.conds_label, number,
                                           f"{size[0]}x{size[1]} is not a multiple of 32, the stride the model was "
                                           "trained on", "prefer multiples of 32"))
        elif not infos:
            if req.height is None or req.width is None:
                bad("a line without conditions has no input to take its size from",
                    "pass --height and --width (e.g. --height 352 --width 640)")
                return None
            size = (req.height, req.width)
        else:
            if req.max_hxw is None:
                return None
            size = arbitrary_output_size([(i.height, i.width) for i in infos], req.max_hxw, ARBITRARY_HW_STRIDE)
            if min(size) < ARBITRARY_HW_STRIDE:
                smallest = min(infos, key=lambda i: i.height * i.width)
                bad(f"inputs are too small ({smallest.height}x{smallest.width}) for a "
                    f"{ARBITRARY_HW_STRIDE}-pixel grid (output would be {size[0]}x{size[1]})",
                    "use larger inputs, or --crop-for-hw --height H --width W to resize them")
                return None
        area, aspect = size[0] * size[1], size[0] / size[1]
        trained_min = req.max_hxw_range[0] if req.max_hxw_range else MIN_MAX_HXW
        if area < trained_min:
            warnings.append(Problem.of(self.conds_label, number,
                                       f"output {size[0]}x{size[1]} is smaller than the trained area "
                                       f"(>= {trained_min:,} pixels); quality may suffer",
                                       "use larger inputs or --crop-for-hw with a larger size"))
        if not MIN_ASPECT <= aspect <= MAX_ASPECT:
            warnings.append(Problem.of(self.conds_label, number,
                                       f"output aspect {size[0]}x{size[1]} is outside the trained range 1:2 to 2:1",
                                       "crop the inputs or use --crop-for-hw"))
        return size


def estimate_memory(report: ValidationReport, request: InputsRequest) -> dict | None:
    """What `opensora sample` will estimate for the largest video of the report (services/memory.py), for a
    CPU in fp32 and an accelerator in bf16 (validate-inputs knows no device); None without model folders."""
    from opensora_cli.services import memory
    from opensora_cli.services.model_folders import resolve_model_dirs
    from opensora_cli.utils.system import available_host_memory

    dirs, problems = resolve_model_dirs(request.model)
    if problems or not any(item.output_size for item in report.items) or request.num_frames is None:
        return None
    height, width = memory.largest_output(report.items, request)
    frames = request.window_frames  # a long video holds one window at a time
    try:
        quantize = getattr(request, "quantize", "none")  # (validate-inputs has no --quantize: none)
        cpu = memory.estimate(dirs, frames, height, width, "fp32", "cpu", True, True, quantize=quantize)
        gpu = memory.estimate(dirs, frames, height, width, "bf16", "cuda", True, True, quantize=quantize)
    except (OSError, KeyError, ValueError, TypeError):
        return None  # sample names the broken config
    unit = "window" if any(item.windows for item in report.items) else "video"  # a long video holds one at a time
    return {"video": f"{frames}x{height}x{width}", "unit": unit, "cpu_fp32_gib": round(cpu.peak / memory.GIB, 3),
            "gpu_bf16_gib": round(gpu.peak / memory.GIB, 3), "host_free_gib":
            round((available_host_memory() or 0) / memory.GIB, 2)}
