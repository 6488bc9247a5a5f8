"""Bits shared by the command modules: global state, the verbose option, consoles."""

from __future__ import annotations

from dataclasses import dataclass, field

import typer


@dataclass
class State:
    verbose: bool = False
    argv: list[str] = field(default_factory=list)  # the arguments main() ran with (relaunched by --nproc)


state = State()


def _set_verbose(value: bool) -> bool:
    if value:
        state.verbose = True
    return value


VerboseOption = typer.Option(False, "--verbose", "-v", callback=_set_verbose, help="More detail; tracebacks on errors.")
TextCacheOption = typer.Option(
    None, "--text-cache", help="Folder of prompt embeddings computed once (see `opensora encode-prompts`) "
    "[default: $OPENSORA_TEXT_CACHE, else ~/.cache/opensora-cli/text].")


def console(stderr: bool = False):
    """A rich Console (imported lazily: rich costs start-up time that --help does not need)."""
    from rich.console import Console

    return Console(stderr=stderr, highlight=False, soft_wrap=False, emoji=False)  # ":x:" in a path stays text

