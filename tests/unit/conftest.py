"""Unit tests: plain Python and numpy, no TensorFlow. Each test is checked not to import it, so the
sub-minute loop (``./dev unit``) stays TensorFlow-free as the package grows."""

from __future__ import annotations

import sys
from collections.abc import Iterator

import pytest

HEAVY = ("tensorflow", "keras", "tf_keras")


@pytest.fixture(autouse=True)
def no_tensorflow_import(request: pytest.FixtureRequest) -> Iterator[None]:
    before = {name for name in HEAVY if name in sys.modules}
    yield
    imported = sorted(name for name in HEAVY if name in sys.modules and name not in before)
    if imported:
        pytest.fail(
            f"{request.node.nodeid} imported {', '.join(imported)}: unit tests are TensorFlow-free; "
            "move it to tests/e2e",
            pytrace=False,
        )
