"""YAML files for the schemas: read, parse and index the line of every key, so that a problem names its line."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from opensora_cli.schemas.problems import Problem


def load_yaml(
    path: str | Path, kind: str, option: str, example_fix: str
) -> tuple[dict[str, Any] | None, dict[tuple, int], list[Problem]]:
    """A YAML mapping, the 1-based line of each key path, and the problems (then the mapping is None).

    Args:
        kind: what the file is, for messages ("mask config").
        option: the option that named the file, for the fix of a missing file ("--mask-config").
        example_fix: the fix when the file is not a mapping (where to find an example).
    """
    label = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        return None, {}, [Problem.of(label, None, f"{kind} file not found", f"check the {option} path")]
    except (OSError, UnicodeDecodeError) as exc:
        return None, {}, [Problem.of(label, None, f"cannot read the {kind} ({exc})", "save it as UTF-8 text")]
    try:
        node = yaml.compose(text)
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        what = getattr(exc, "problem", None) or str(exc)
        return None, {}, [Problem.of(label, line, f"not valid YAML: {what}", "fix the YAML syntax")]
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        return None, {}, [Problem.of(label, 1, f"the {kind} must be a mapping of keys to values", example_fix)]
    return raw, _line_index(node), []


def _line_index(node: yaml.Node | None, path: tuple = (), out: dict | None = None) -> dict[tuple, int]:
    """Map each key path of a YAML mapping to the 1-based line it is written on."""
    out = {} if out is None else out
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            key_path = (*path, key_node.value)
            out[key_path] = key_node.start_mark.line + 1
            _line_index(value_node, key_path, out)
    return out
