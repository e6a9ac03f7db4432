"""The package's rooms do not lean on each other: no import cycle between the subpackages of ``di3cl_hf`` (``data``,
``training``, ``inference``, ``hub``, ``cli``, ...) and its top-level modules (``loading``, ``runtime``, the model
files, ...), and no module over 800 lines.

Every ``import`` / ``from ... import`` of every module (read from its syntax tree, so imports inside functions
count too) is mapped to the unit it reaches: a subpackage, or a top-level module. Imports inside one subpackage
are its own business; between units the graph must be acyclic, so that each unit can be read, tested and
changed with only the units below it.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "di3cl_hf"
MAX_MODULE_LINES = 800


def _unit(module: str) -> str | None:
    """The unit of a dotted module name inside the package: ``data`` for ``di3cl_hf.data.sario``, ``loading`` for
    ``di3cl_hf.loading``, ``di3cl_hf`` for the package itself; ``None`` outside the package."""
    parts = module.split(".")
    if parts[0] != PACKAGE.name:
        return None
    return parts[1] if len(parts) > 1 else PACKAGE.name


def _imported_modules(path: Path) -> list[str]:
    """Dotted names of everything ``path`` imports (relative imports resolved; ``from X import y`` gives ``X.y``,
    which is ``X``'s unit whenever ``y`` is not a module of its own)."""
    relative = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(relative.parts)
    package = parts[:-1] if parts[-1] != "__init__" else parts[:-1]
    names = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            module = ".".join([*base, *([node.module] if node.module else [])])
            names += [f"{module}.{alias.name}" for alias in node.names]
    return names


def import_graph() -> dict[str, dict[str, set[str]]]:
    """unit -> unit it imports -> the files that do (imports within a unit left out)."""
    graph: dict[str, dict[str, set[str]]] = defaultdict(lambda: defaultdict(set))
    for path in sorted(PACKAGE.rglob("*.py")):
        source = _unit(".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts))
        for name in _imported_modules(path):
            target = _unit(name)
            if target is not None and target != source:
                graph[source][target].add(str(path.relative_to(PACKAGE.parent)))
    return graph


def find_cycle(graph: dict[str, dict[str, set[str]]]) -> list[str] | None:
    """One cycle of ``graph`` as a list of units (first == last), or ``None``."""
    state: dict[str, str] = {}
    stack: list[str] = []

    def visit(unit: str) -> list[str] | None:
        state[unit] = "open"
        stack.append(unit)
        for target in sorted(graph.get(unit, {})):
            if state.get(target) == "open":
                return stack[stack.index(target) :] + [target]
            if target not in state and (cycle := visit(target)):
                return cycle
        stack.pop()
        state[unit] = "done"
        return None

    for unit in sorted(graph):
        if unit not in state and (cycle := visit(unit)):
            return cycle
    return None


def test_the_finder_sees_a_cycle() -> None:
    graph = {"hub": {"training": {"a.py"}}, "training": {"hub": {"b.py"}}, "data": {}}
    assert find_cycle(graph) in (["hub", "training", "hub"], ["training", "hub", "training"])
    assert find_cycle({"training": {"data": {"a.py"}}, "data": {}}) is None


def test_no_import_cycle_between_the_subpackages() -> None:
    graph = import_graph()
    assert {"data", "training", "inference", "hub", "cli"} <= set(graph) | {
        target for targets in graph.values() for target in targets
    }
    cycle = find_cycle(graph)
    if cycle:
        edges = [
            f"{source} -> {target} ({', '.join(sorted(graph[source][target]))})"
            for source, target in zip(cycle, cycle[1:])
        ]
        raise AssertionError("import cycle between units of di3cl_hf:\n  " + "\n  ".join(edges))


def test_no_module_over_800_lines() -> None:
    long = {
        str(path.relative_to(PACKAGE.parent)): lines
        for path in sorted(PACKAGE.rglob("*.py"))
        if (lines := path.read_text(encoding="utf-8").count("\n")) > MAX_MODULE_LINES
    }
    assert not long, f"modules over {MAX_MODULE_LINES} lines (split them by what they do): {long}"
