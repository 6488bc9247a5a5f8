"""Rich output: our markup is rendered (in a log: dropped); file names and prompts print as written."""

from __future__ import annotations

import io
import re
from pathlib import Path

from rich.console import Console

from opensora_cli.schemas.problems import Problem

OUR_TAGS = re.compile(r"\[/?(yellow|dim|red|green|bold)\]")


def _log_console() -> Console:
    """What a log file gets: a Console writing to a file that is not a terminal."""
    console = Console(file=io.StringIO(), width=200)
    assert not console.is_terminal
    return console


def _terminal_console() -> Console:
    return Console(file=io.StringIO(), width=200, force_terminal=True, color_system=None)


def test_train_reporter_in_a_log_prints_no_tags_and_file_names_as_written():
    from opensora_cli.cli.progress import RichTrainReporter
    from opensora_cli.data.annotations import DataProblem

    reporter = RichTrainReporter()
    reporter.console = _log_console()
    reporter.phase("resumed from runs[a]/checkpoint-2 at step 2")
    reporter.data_report({"records": 3}, [DataProblem("clip[1].mp4", "too short"),
                                          DataProblem("clip[bold].mp4", "decode failed")], {(9, 64, 96): 1})
    reporter.start(total_steps=2, first_step=0)
    reporter.replaced([DataProblem("clip[1].mp4", "decode failed", detail="[dim]moov atom[/dim] not found")])
    reporter.step(1, loss=0.5, seconds=0.1, samples_per_second=10.0, lr=1e-5)
    reporter.checkpoint(Path("out[red]") / "checkpoint-2")
    reporter.step(2, loss=0.25, seconds=0.1, samples_per_second=10.0, lr=1e-5)
    reporter.close()
    out = reporter.console.file.getvalue()

    assert "bad data clip[1].mp4: decode failed — [dim]moov atom[/dim] not found" in out
    assert "skipped clip[1].mp4: too short" in out
    assert "skipped clip[bold].mp4: decode failed" in out
    assert "resumed from runs[a]/checkpoint-2 at step 2" in out
    assert f"saved {Path('out[red]') / 'checkpoint-2'}" in out
    assert "bucket (9, 64, 96) has 1 sample(s)" in out
    assert "step 2/2: loss 0.2500" in out
    user_text = ("clip[bold].mp4", "[dim]moov atom[/dim]", "out[red]")
    stripped = out
    for text in user_text:
        stripped = stripped.replace(text, "")
    assert not OUR_TAGS.search(stripped), out


def test_sample_reporter_shows_a_prompt_with_brackets_as_written():
    from opensora_cli.cli.progress import RichReporter

    reporter = RichReporter()
    reporter.console = _log_console()
    reporter.phase("loading models[bold]")
    reporter.start(videos=1, steps=2)
    reporter.video_started(1, 0, "a [red]cat[/red] walks")
    reporter.step(0, 2)
    reporter.step(1, 2)
    reporter.video_done(None)
    reporter.close()
    out = reporter.console.file.getvalue()

    assert "loading models[bold]..." in out
    assert "line 1 #0: a [red]cat[/red] walks" in out
    assert "[dim]" not in out


def test_problem_table_on_a_terminal_shows_file_names_as_written():
    from opensora_cli.cli.render import print_problems

    console = _terminal_console()
    problems = [Problem.of("conds[red].txt", 2, "clip[bold].mp4 not found", "check [dim] the path")]
    print_problems(problems, console, "problem", "red")
    out = console.file.getvalue()

    assert "conds[red].txt:2" in out and "clip[bold].mp4 not found" in out and "check [dim] the path" in out


def test_validate_report_in_a_log_has_no_tags(cli, media):
    media.image("a[1].png")
    prompts = media.text("prompts.txt", "a cat")
    conds = media.text("conds.txt", "a[1].png")
    result = cli("validate-inputs", "-p", prompts, "-c", conds, "-n", "1")
    assert result.code == 0, result.out + result.err
    assert "OK: 1 line checked" in result.out and not OUR_TAGS.search(result.out), result.out
