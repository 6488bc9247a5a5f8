"""Repository contracts: CI runs the README's test command; the changelog keeps its format."""

from __future__ import annotations

import re

from .helpers import REPO


def test_ci_runs_the_readme_test_command():
    readme = (REPO / "README.md").read_text()
    blocks = re.findall(r"```bash\n(.*?)```", readme, flags=re.S)
    test_command = next(line for block in blocks for line in block.splitlines() if "pytest" in line)
    ci = (REPO / ".ci" / "run").read_text()
    assert test_command.split("#")[0].strip() in ci


def test_changelog_has_an_unreleased_section():
    text = (REPO / "CHANGELOG.md").read_text()
    assert text.startswith("# Changelog") and "## [Unreleased]" in text
