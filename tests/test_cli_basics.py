"""The `opensora` command itself: help, version, start-up without torch, usage errors."""

from __future__ import annotations

import subprocess
import sys

import pytest

from .helpers import NO_HEAVY_IMPORTS, REPO


@pytest.mark.parametrize(
    "args",
    [
        ["--help"],
        ["validate-inputs", "-p", "examples/demo/prompts.txt", "-c", "examples/demo/conds.txt", "--json"],
        ["validate-inputs", "-p", "examples/prompts.txt", "-c", "examples/conds.txt", "--num-frames", "93", "--json"],
        ["mask-preview", "-m", "random_temporal", "--json"],
        ["mask-preview", "--conds", "examples/conds.txt", "--line", "3", "--json"],
    ],
)
def test_light_commands_do_not_import_torch(args):
    proc = subprocess.run([sys.executable, "-c", NO_HEAVY_IMPORTS.format(args=args)], cwd=REPO, capture_output=True,
                          text=True, timeout=120)
    assert "HEAVY: [] CODE: 0" in proc.stdout, proc.stdout + proc.stderr


def test_help_lists_the_commands(installed_cli):
    result = installed_cli("--help")
    assert result.code == 0
    assert "validate-inputs" in result.out and "mask-preview" in result.out


def test_version(cli):
    from opensora_cli import __version__

    result = cli("--version")
    assert result.code == 0 and __version__ in result.out


def test_unknown_command_is_a_usage_error(cli):
    result = cli("transmogrify")
    assert result.code == 2 and "No such command 'transmogrify'" in result.err and result.err.count("\n") == 1


def test_python_dash_m_works(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "opensora_cli", "mask-preview", "-m", "i2v", "-n", "5", "--json"],
                          capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert proc.returncode == 0 and '"frames": [0, 1, 1, 1, 1]' in proc.stdout
