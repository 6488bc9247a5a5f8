"""The layer picture is honest: every import in src/opensora_cli points down (or sideways on one floor), and no
files import each other in a circle. Imports inside functions count too: a lazy import is still a dependency.

The floors, from the ground up (a module may import its own floor and those below):

    0  errors, schemas        the vocabulary: import nothing of ours but each other (and no torch)
    1  utils                  files, seeds, the video writer
    2  models, masks          architectures and loading; mask patterns and tensors
    3  distributed, data      process groups and sequence parallelism; media, transforms, datasets
    4  pipelines              the diffusers pipeline and the schedulers
    5  training               the training loops
    6  services               one per command: take a request, return a result
    7  cli                    Typer commands: options -> request -> one service -> render
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "opensora_cli"
FLOORS = {
    "opensora_cli": 0, "errors": 0, "schemas": 0,
    "utils": 1,
    "models": 2, "masks": 2,
    "distributed": 3, "data": 3,
    "pipelines": 4,
    "training": 5,
    "services": 6,
    "cli": 7, "__main__": 8,
}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def floor(module: str) -> int:
    parts = module.split(".")
    return FLOORS[parts[1]] if len(parts) > 1 else FLOORS["opensora_cli"]


def imports_of(path: Path, known: set[str]) -> set[str]:
    """Our modules that `path` imports anywhere in it (`from a.b import c` is a.b.c when that is a module)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.startswith("opensora_cli")}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("opensora_cli"):
            for alias in node.names:
                found.add(f"{node.module}.{alias.name}" if f"{node.module}.{alias.name}" in known else node.module)
    return found & known


def import_graph() -> dict[str, set[str]]:
    files = {module_name(path): path for path in PACKAGE.rglob("*.py")}
    return {module: imports_of(path, set(files)) - {module} for module, path in files.items()}


def test_every_package_has_a_floor():
    assert {m.split(".")[1] for m in import_graph() if "." in m} <= set(FLOORS)


def test_no_import_runs_up_a_floor():
    upward = sorted(f"{module} (floor {floor(module)}) imports {target} (floor {floor(target)})"
                    for module, targets in import_graph().items() for target in targets
                    if floor(target) > floor(module))
    assert not upward, "\n".join(upward)


def test_the_ground_floor_imports_only_itself():
    graph = import_graph()
    ground = {m for m in graph if floor(m) == 0}
    outside = sorted(f"{m} imports {t}" for m in ground for t in graph[m] - ground)
    assert not outside, "\n".join(outside)


def test_no_import_circles():
    graph = import_graph()
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    circles = []

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        for target in sorted(graph[module]):
            if state.get(target) == 1:
                circles.append(" -> ".join(path[path.index(target):] + [target]))
            elif target not in state:
                visit(target, [*path, target])
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    assert not circles, "\n".join(circles)
