"""`--help` on narrow terminals: every command's option names show in full; no line runs past the width."""

from __future__ import annotations

import re

import pytest
import typer

from opensora_cli.cli.app import app, main

COMMANDS = ["validate-inputs", "mask-preview", "sample", "encode-prompts", "train", "make-demo-data",
            "train-vae", "init-model"]

# A line of the options list: two spaces, then the names column (names, metavar), then two spaces or the end.
_NAMES_COLUMN = re.compile(r"^  (-\S.*?)(?: {2,}|$)")
_OPTION = re.compile(r"(?<![\w-])--?[A-Za-z][\w-]*")


def _declared(name: str | None) -> set[str]:
    group = typer.main.get_command(app)
    command = group if name is None else group.commands[name]
    return {opt for param in command.params if not getattr(param, "hidden", False)  # (kept for old scripts)
            for opt in (*param.opts, *param.secondary_opts)
            if opt.startswith("-")}


def _help(capsys, monkeypatch, columns: int, *args: str) -> str:
    monkeypatch.setenv("COLUMNS", str(columns))
    capsys.readouterr()
    assert main([*args, "--help"]) == 0
    return capsys.readouterr().out


@pytest.mark.parametrize("columns", [80, 60])
@pytest.mark.parametrize("name", [None, *COMMANDS])
def test_help_shows_every_option_name_in_full(capsys, monkeypatch, name, columns):
    out = _help(capsys, monkeypatch, columns, *([name] if name else []))
    names_column = [m[1] for line in out.splitlines() if (m := _NAMES_COLUMN.match(line))]
    shown = {opt for names in names_column for opt in _OPTION.findall(names)}
    declared = _declared(name)
    assert declared, name
    assert declared <= shown, f"missing or cut: {sorted(declared - shown)}\n{out}"
    assert "…" not in out
    too_long = [line for line in out.splitlines() if len(line) > columns]
    assert not too_long, too_long


def test_default_notes_in_help_texts_are_shown_not_eaten_as_markup(capsys, monkeypatch):
    # "[default: ...]" written in our help texts looks like a rich markup tag; it must reach the reader.
    out = _help(capsys, monkeypatch, 80, "sample")
    assert "[default: the bundled demo" in out
    assert "[default: from each" in out
