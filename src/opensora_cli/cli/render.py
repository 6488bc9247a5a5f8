"""Rendering results for people: rich tables on a terminal, `FILE:LINE: message` lines otherwise.

Table cells and lines with our markup get outside text (file names, messages) escaped; lines without any
styling print with markup=False.
"""

from __future__ import annotations

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from opensora_cli.schemas.inputs import ValidationReport
from opensora_cli.schemas.problems import Problem

_RESOLVED = {"cwd": "found in the current directory", "conds-dir": "found next to the conds file", "absolute": "absolute path"}


def print_problems(problems: list[Problem], console: Console, title: str, style: str) -> None:
    if not problems:
        return
    if not console.is_terminal:
        for problem in problems:
            console.print(f"{title}: {problem.render()}" if title == "warning" else problem.render(), markup=False,
                          soft_wrap=True)
        return
    table = Table(title=f"{len(problems)} {title}{'s' if len(problems) != 1 else ''}", title_style=style,
                  show_lines=False, expand=False)
    table.add_column("where", style="bold", no_wrap=True)
    table.add_column("what is wrong", style=style)
    table.add_column("how to fix it")
    for problem in problems:
        what, _, fix = problem.message.partition(" — ")
        table.add_row(escape(problem.location), escape(what), escape(fix))
    console.print(table)


def _frames_text(indices: list[int] | None) -> str:
    if indices is None:
        return "from video"
    if not indices:
        return "none"
    return ",".join(map(str, indices))


def _windows_text(item) -> str:
    """A long video's window plan in a line: `3 windows: 0-16 i2v "a boat", 12-28 continuation, 24-32 ...`."""
    shown, prompt = [], None
    for w in item.windows:
        text = f"{w.start}-{w.end - 1} {w.mask_type}"
        if w.keyframes:
            text += f" (keyframes {','.join(str(w.start + f) for f, _ in w.keyframes)})"
        if w.prompt != prompt:
            text += f' "{w.prompt}"'
            prompt = w.prompt
        shown.append(text)
    window = item.windows[0].frames
    # Each window is one pipeline call of its length (the denoising dominates, about linear in frames at the
    # trained length): the time relative to one short video, which validate-inputs can say without a device.
    cost = sum(w.frames for w in item.windows) / window
    return f"{len(item.windows)} windows of {window} (overlap {item.windows[1].overlap}; time about {cost:.1f}x " \
        f"one {window}-frame video): " + ", ".join(shown)


def print_report(report: ValidationReport, console: Console, verbose: bool = False) -> None:
    """Problems, warnings, the per-line plan, and a one-line verdict."""
    print_problems(report.problems, console, "problem", "red")
    print_problems(report.warnings, console, "warning", "yellow")
    if report.ok or verbose:
        if console.is_terminal:
            table = Table(title="lines")
            for name in ("line", "mask type", "kept frames", "output (h x w)", "conditions"):
                table.add_column(name, no_wrap=name != "conditions")
            for item in report.items:
                size = f"{item.output_size[0]} x {item.output_size[1]}" if item.output_size else "?"
                table.add_row(str(item.line), str(item.mask_type or "?"), _frames_text(item.frame_indices), size,
                              escape(", ".join(c.rsplit("/", 1)[-1] for c in item.conds)) or "(text only)")
            console.print(table)
        else:
            for item in report.items:
                size = f"{item.output_size[0]}x{item.output_size[1]}" if item.output_size else "?"
                console.print(f"line {item.line}: {item.mask_type or '?'}, kept frames {_frames_text(item.frame_indices)}"
                              f", output {size}", markup=False, soft_wrap=True)
        for item in report.items:
            if item.windows:
                console.print(f"line {item.line}: {_windows_text(item)}", markup=False, soft_wrap=True)
    if verbose:
        for item in report.items:
            for cond in item.cond_items:
                where = _RESOLVED.get(cond.resolved_from or "", "not found")
                console.print(f"line {item.line}: {cond.path} ({cond.kind}, {where})", markup=False, soft_wrap=True)
    if report.memory:
        m = report.memory
        console.print(f"memory: the largest {m.get('unit', 'video')} ({m['video']}) needs about {m['cpu_fp32_gib']:.2f} GiB on a CPU "
                      f"in fp32 ({m['host_free_gib']:.2f} GiB free here), {m['gpu_bf16_gib']:.2f} GiB on a GPU in "
                      "bf16", markup=False, soft_wrap=True)
    lines = len(report.items)
    if report.ok:
        console.print(f"[green]OK[/green]: {lines} line{'s' if lines != 1 else ''} checked, no problems"
                      + (f", {len(report.warnings)} warning(s)" if report.warnings else "") + ".")
    else:
        console.print(f"[red]{len(report.problems)} problem(s)[/red] in {lines} line(s); nothing was run.")


def print_sample_summary(summary, console: Console) -> None:
    """A table of the outputs on a terminal (plain lines otherwise), then one line of totals."""
    def kept(r) -> str:
        return (",".join(map(str, r.kept_frames[:6])) + ("..." if len(r.kept_frames) > 6 else "")) or "-"

    def timing(r) -> str:
        return f"skipped ({r.skip_reason or 'exists'})" if r.skipped else f"{r.seconds:.1f} s ({r.seconds_per_step:.3f} s/step)"

    if console.is_terminal:
        table = Table(title=f"{len(summary.results)} output(s) — {summary.mode}, {summary.world_size} process(es), "
                            f"{summary.device}, {summary.dtype}")
        for name in ("line", "sample", "mask", "kept", "time", "video"):
            table.add_column(name, no_wrap=True, overflow="ellipsis", min_width=len(name),
                             max_width=32 if name == "video" else None)
        for r in summary.results:
            table.add_row(str(r.line), str(r.sample), r.mask_type, kept(r), timing(r), escape(r.video.name))
        console.print(table)
        if summary.results:
            console.print(f"in {summary.results[0].video.parent}", soft_wrap=True, markup=False)
    else:
        for r in summary.results:
            console.print(f"line {r.line} #{r.sample}: {r.mask_type} (kept {kept(r)}), {timing(r)} -> {r.video}",
                          markup=False, soft_wrap=True)
    made = [r for r in summary.results if not r.skipped]
    memory = f", peak GPU memory {summary.peak_memory_gib:.2f} GiB" if summary.peak_memory_gib is not None else ""
    console.print(f"{len(made)} generated, {len(summary.results) - len(made)} skipped (already there); "
                  f"{summary.mode} on {summary.world_size} process(es), {summary.device}, {summary.dtype}; models "
                  f"loaded in {summary.load_seconds:.1f} s{memory}.", soft_wrap=True)
