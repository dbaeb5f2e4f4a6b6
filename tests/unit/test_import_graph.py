"""The package's rooms are its folders, and its imports follow them: no cycles, TensorFlow and
Keras only in ``backend/``, and each room imports only the rooms it may (data flows case ->
backend -> run and its history -> diagnosis -> snapshot -> results -> gate; the plugin and the CLI
wire them). Read from the source with ``ast``, so the test needs no TensorFlow and counts every
import: at module level, inside functions and under ``TYPE_CHECKING``."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "pytest_convergence"
HEAVY = ("tensorflow", "keras", "tf_keras")
CORE = "core"
"""The modules at the package root: the shared vocabulary (case, run, history, dtypes, outcome,
errors, tolerance, files, fingerprint...)."""
FACADE = "pytest_convergence"
"""The package's ``__init__``: the public API, which names what it loads lazily from every room."""

ALLOWED: dict[str, set[str]] = {
    CORE: {CORE, "diagnosis"},
    "diagnosis": {CORE, "diagnosis"},
    "backend": {CORE, "backend"},
    "snapshot": {CORE, "snapshot"},
    "spec": {CORE, "backend", "spec"},
    "gate": {CORE, "diagnosis", "snapshot", "gate"},
    "plugin": {CORE, "diagnosis", "backend", "snapshot", "spec", "gate", "plugin"},
    "cli": {CORE, "diagnosis", "backend", "snapshot", "spec", "gate", "cli"},
}
"""Which rooms each room may import. The root's only way into ``diagnosis`` is ``Run``'s
conveniences (``run.expect``, ``run.diagnosis``); the diagnosis reads a ``History`` and never a
``Run`` (``test_the_diagnosis_reads_histories_not_runs``), so no cycle runs through them."""


def rooms_on_disk() -> set[str]:
    return {CORE} | {
        path.name for path in PACKAGE.iterdir() if path.is_dir() and (path / "__init__.py").exists()
    }


def room(module: str) -> str:
    """The folder a module lives in (its first level below the package), or ``core`` at the root."""
    parts = module.split(".")
    if len(parts) >= 2 and (PACKAGE / parts[1]).is_dir():
        return parts[1]
    return CORE


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path, package: str | None = None) -> list[tuple[str, int, bool]]:
    """Every module ``path`` imports (absolute names), with the line and whether the import is
    only for type checking (under ``if TYPE_CHECKING:``); lazy imports in functions included."""
    if package is None:
        name = module_name(path)
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    tree = ast.parse(path.read_text(encoding="utf-8"))
    typing_only: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and getattr(node.test, "id", None) == "TYPE_CHECKING":
            typing_only |= {id(child) for child in ast.walk(node)}
    found: list[tuple[str, int, bool]] = []
    for node in ast.walk(tree):
        hint = id(node) in typing_only
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno, hint) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            found.append((target, node.lineno, hint))
            # "from . import results" names a module, not an attribute
            found += [(f"{target}.{alias.name}", node.lineno, hint) for alias in node.names]
    return found


def package_graph() -> dict[str, set[str]]:
    """Module -> every package module it imports: at module level, in functions and for type
    checking alike, since a cycle through any of them is a cycle in the design."""
    modules = {module_name(path): path for path in PACKAGE.rglob("*.py")}

    def counted(name: str, target: str) -> bool:
        # a module's own parent packages are imported before it anyway: no edge
        return target in modules and not (name + ".").startswith(target + ".")

    return {
        name: {target for target, _, _ in imports_of(path) if counted(name, target)}
        for name, path in modules.items()
    }


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a list of modules (first == last), or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for target in sorted(graph.get(node, ())):
            if state.get(target) == 1:
                return [*stack[stack.index(target) :], target]
            if target not in state and (cycle := visit(target)) is not None:
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)) is not None:
            return cycle
    return None


def test_the_package_has_no_import_cycle() -> None:
    cycle = find_cycle(package_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_tensorflow_and_keras_are_imported_only_in_backend() -> None:
    offenders = [
        f"{path.relative_to(PACKAGE.parent)}:{line} imports {target}"
        for path in PACKAGE.rglob("*.py")
        for target, line, _ in imports_of(path)
        if target.split(".")[0] in HEAVY and room(module_name(path)) != "backend"
    ]
    assert not offenders, "\n".join(offenders)


def test_every_folder_is_a_room_with_its_rules() -> None:
    assert rooms_on_disk() == set(ALLOWED), "give each folder of the package its rooms in ALLOWED"


def test_each_room_imports_only_the_rooms_it_may() -> None:
    graph = package_graph()
    offenders = [
        f"{module} ({room(module)}) imports {target} ({room(target)})"
        for module, targets in sorted(graph.items())
        if module != FACADE
        for target in sorted(targets)
        if room(target) not in ALLOWED[room(module)]
    ]
    assert not offenders, "\n".join(offenders)


def test_the_diagnosis_reads_histories_not_runs() -> None:
    offenders = [
        f"{module} imports {target}"
        for module, targets in sorted(package_graph().items())
        if room(module) == "diagnosis"
        for target in targets
        if target == "pytest_convergence.run"
    ]
    assert not offenders, "\n".join(offenders)


def test_a_cycle_through_a_function_or_type_checking_import_is_counted(tmp_path: Path) -> None:
    source = tmp_path / "probe.py"
    source.write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .run import Run\n"
        "def f():\n    from .diagnosis import diagnose\n"
    )
    assert {target for target, _, _ in imports_of(source, package="pkg")} >= {"pkg.run", "pkg.diagnosis"}


@pytest.mark.parametrize(
    ("graph", "expected"),
    [
        ({"a": {"b"}, "b": {"c"}, "c": {"a"}}, ["a", "b", "c", "a"]),
        ({"a": {"b"}, "b": {"c"}, "c": set()}, None),
        ({"a": {"a"}}, ["a", "a"]),
    ],
)
def test_the_cycle_finder_finds_cycles(graph: dict[str, set[str]], expected: list[str] | None) -> None:
    assert find_cycle(graph) == expected


def test_a_heavy_import_outside_backend_would_be_found(tmp_path: Path) -> None:
    source = tmp_path / "probe.py"
    source.write_text("def f():\n    import tensorflow as tf\n    from keras import layers\n")
    assert [target for target, _, _ in imports_of(source, package="probe")][:2] == ["tensorflow", "keras"]
