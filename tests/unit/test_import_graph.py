"""The floor plan holds: the modules and the parts of ``handler/`` import one another one way
(no circle, not even one that only type hints or a function-level import close: a circle means
two modules that cannot be read, or moved, apart); the request path is told in one short method;
keys load no libvips; tests share helpers through the kit, never through one another."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

from kit.paths import REPO

HANDLER = REPO / "handler"


def module_name(path: Path) -> str:
    parts = path.relative_to(HANDLER.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """Each module of ``handler`` and the modules of ``handler`` it imports, wherever the import
    stands (top level, ``if TYPE_CHECKING``, inside a function)."""
    modules = {module_name(path): path for path in HANDLER.rglob("*.py")}
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                targets = {node.module} | {f"{node.module}.{a.name}" for a in node.names}
            elif isinstance(node, ast.Import):
                targets = {alias.name for alias in node.names}
            else:
                continue
            graph[name] |= {target for target in targets if target in modules} - {name}
    return graph


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The circles through each module, as the path from it back to itself (depth first)."""
    found: list[list[str]] = []
    for start in sorted(graph):
        todo = [(start, [start])]
        seen: set[str] = set()
        while todo:
            current, path = todo.pop()
            for target in sorted(graph[current]):
                if target == start:
                    found.append([*path, start])
                elif target not in seen:
                    seen.add(target)
                    todo.append((target, [*path, target]))
    return found


def test_the_graph_is_read_from_the_imports() -> None:
    graph = import_graph()
    assert "handler.request.coordinator" in graph["handler.http.app"]  # a top-level import
    assert "handler.stores.base" in graph["handler.stores.guarded"]  # a package's module


def test_a_circle_is_found() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert ["a", "b", "c", "a"] in circles(graph)
    assert not any(path[0] == "d" for path in circles(graph))


def test_handler_has_no_import_circle() -> None:
    assert circles(import_graph()) == []


def part_of(module: str) -> str:
    """The part of the floor plan a module belongs to: its subpackage of ``handler``, or the
    module itself for the neutral top-level ones (``handler.model``, ...)."""
    parts = module.split(".")
    return ".".join(parts[:2])


def parts_graph(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    """Which parts of ``handler`` import which others."""
    parts: dict[str, set[str]] = {}
    for module, targets in graph.items():
        here = part_of(module)
        parts.setdefault(here, set())
        parts[here] |= {part_of(target) for target in targets} - {here}
    return parts


def test_the_parts_import_one_another_one_way() -> None:
    """Subpackages stand in layers: commands → entry → http → request → sources, pipeline →
    stores, contract → the neutral top-level modules (model, formats); no two reach each other."""
    assert circles(parts_graph(import_graph())) == []


def test_the_neutral_modules_import_no_part() -> None:
    graph = parts_graph(import_graph())
    neutral = {
        part
        for part in graph
        if (HANDLER.parent / part.replace(".", "/")).with_suffix(".py").is_file()
    }
    assert "handler.model" in neutral
    assert {part: graph[part] - neutral for part in neutral} == {part: set() for part in neutral}


def test_the_request_path_is_told_in_one_short_method() -> None:
    """``Coordinator.serve`` reads top to bottom (issue #20: under ~50 lines); each step it names
    is an object of its own in ``handler/request/``."""
    import inspect

    from handler.request.coordinator import Coordinator

    assert len(inspect.getsource(Coordinator.serve).splitlines()) <= 50


def test_keys_are_made_without_loading_libvips() -> None:
    """Hashing is vocabulary, not pixels: ``handler.request.keys`` imports no pyvips (the
    pipeline version it names is read from libvips only when the first key is made)."""
    probe = "import sys, handler.request.keys; print('pyvips' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True)
    assert done.stdout.strip() == "False", done.stderr


def imported_names(path: Path) -> set[str]:
    """The top-level module names ``path`` imports (absolute imports only)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
        elif isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
    return names


def test_no_test_module_imports_another_and_bench_imports_no_test() -> None:
    """What tests share lives in ``tests/kit`` (or ``devtools``, shared with the benches)."""
    tests = REPO / "tests"
    modules = [path for path in tests.rglob("test_*.py") if "node_modules" not in path.parts]
    test_names = {path.stem for path in modules}
    assert {path.name: imported_names(path) & test_names for path in modules} == {
        path.name: set() for path in modules
    }
    assert {
        path.name: imported_names(path) & {"tests", "kit"} for path in (REPO / "bench").glob("*.py")
    } == {path.name: set() for path in (REPO / "bench").glob("*.py")}
