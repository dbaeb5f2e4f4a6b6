"""The suite's tiers: which end-to-end tests CI also runs in its Keras 2 environment."""

from __future__ import annotations

import ast
import importlib.util
from pathlib import Path

E2E = Path(__file__).resolve().parents[1] / "e2e"


def keras2_paths() -> dict[str, str]:
    spec = importlib.util.spec_from_file_location("e2e_conftest", E2E / "conftest.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.KERAS2_PATHS


def missing_tests(paths: dict[str, str]) -> list[str]:
    """The entries (``file`` or ``file::test``) that name no file or no test function of it."""
    missing = []
    for entry in paths:
        file, _, test = entry.partition("::")
        path = E2E / file
        if not path.exists() or (
            test
            and test
            not in {
                node.name for node in ast.parse(path.read_text()).body if isinstance(node, ast.FunctionDef)
            }
        ):
            missing.append(entry)
    return missing


def test_every_keras2_path_names_a_test_that_exists() -> None:
    """A renamed test would silently leave the Keras 2 environment: name each one that is gone."""
    assert missing_tests(keras2_paths()) == []


def test_a_renamed_test_or_file_would_be_named() -> None:
    paths = {**keras2_paths(), "test_engine.py::test_that_was_renamed": "", "test_gone.py": ""}
    assert missing_tests(paths) == ["test_engine.py::test_that_was_renamed", "test_gone.py"]
