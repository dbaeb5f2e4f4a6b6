"""Fixtures shared by the unit and end-to-end tests; factories live in factories.py."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def tensorflow_loaded() -> None:
    """Import TensorFlow once, before any pytester snapshot of ``sys.modules``.

    pytester removes the modules a test imported when the test ends, and TensorFlow's extension
    modules abort the process if imported a second time; imported first, it is never removed.
    """
    from pytest_convergence.backend import import_keras

    import_keras()  # TensorFlow and the Keras it means here (keras, or tf_keras for Keras 2)


@pytest.fixture
def user_suite(
    tensorflow_loaded: None, pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> pytest.Pytester:
    """A pytester directory that behaves like a user's project (no inherited ini options).

    When this suite itself runs under pytest-xdist (CI runs it with ``-n 2``), the user's session
    must not believe it is an xdist worker: syrupy, for one, then skips its unused-snapshot report.
    """
    for name in ("PYTEST_XDIST_WORKER", "PYTEST_XDIST_WORKER_COUNT", "PYTEST_XDIST_TESTRUNUID"):
        monkeypatch.delenv(name, raising=False)
    pytester.makeini("[pytest]\n")
    return pytester
