"""The package's rooms follow its imports: no cycles, TensorFlow and Keras only in ``backend/``,
and each room imports only the rooms it may (data flows case -> backend -> run -> diagnosis ->
snapshot -> results -> gate; the plugin and the CLI wire them). Read from the source with ``ast``,
so the test needs no TensorFlow and sees lazy imports inside functions too."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "pytest_convergence"
HEAVY = ("tensorflow", "keras", "tf_keras")
CORE = "core"

ALLOWED: dict[str, set[str]] = {
    CORE: {CORE},
    "backend": {CORE, "backend"},
    "snapshot": {CORE, "snapshot"},
    "spec": {CORE, "backend", "spec"},
    "gate": {CORE, "snapshot", "gate"},
    "training": {CORE, "backend", "snapshot", "training"},
    "plugin": {CORE, "backend", "snapshot", "spec", "gate", "training", "plugin"},
    "cli": {CORE, "backend", "snapshot", "spec", "gate", "cli"},
}
"""Which rooms each room may import. ``core`` is every top-level module but training and cli."""


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def room(module: str) -> str:
    parts = module.split(".")
    if len(parts) == 1:
        return CORE  # pytest_convergence/__init__.py
    if len(parts) == 2 and parts[1] in ("training", "cli"):
        return parts[1]
    if len(parts) == 2 and not (PACKAGE / parts[1]).is_dir():
        return CORE
    return parts[1]


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
    """Module -> the package modules it imports when it runs (type-checking imports left out)."""
    modules = {module_name(path): path for path in PACKAGE.rglob("*.py")}

    def counted(name: str, target: str, hint: bool) -> bool:
        # a module's own parent packages are imported before it anyway: no edge
        return target in modules and not hint and not (name + ".").startswith(target + ".")

    return {
        name: {target for target, _, hint in imports_of(path) if counted(name, target, hint)}
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


def test_each_room_imports_only_the_rooms_it_may() -> None:
    graph = package_graph()
    offenders = [
        f"{module} ({room(module)}) imports {target} ({room(target)})"
        for module, targets in sorted(graph.items())
        for target in sorted(targets)
        if room(target) not in ALLOWED[room(module)]
    ]
    assert not offenders, "\n".join(offenders)


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
