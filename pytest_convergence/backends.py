"""Which framework under Keras 3 trains a run: TensorFlow, JAX or PyTorch, read as Keras reads it.

Keras picks its backend once, at import, from ``KERAS_BACKEND`` or else ``keras.json`` in
``KERAS_HOME`` (``~/.keras``), and cannot change it in a process that has imported it. So this
module reads the choice without importing anything heavy: the plugin decides before any framework
is loaded which backends a session trains on, and which one this process is (the others train in a
process of their own, :mod:`.backend.elsewhere`).
"""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

from .errors import ConvergenceError

BACKENDS = ("tensorflow", "jax", "torch")
"""The Keras 3 backends a run can train on, in the order the summary lists them."""
DEFAULT = "tensorflow"
"""Keras's own default; its test ids carry no backend, so suites written before backends keep
their ids, snapshots and results names."""
ALIASES = {"tf": "tensorflow", "pytorch": "torch"}
MODULE = {"tensorflow": "tensorflow", "jax": "jax", "torch": "torch"}
EXTRA = {"tensorflow": "tensorflow-cpu", "jax": "jax", "torch": "torch"}
ENVIRONMENT = "KERAS_BACKEND"


class BackendError(ConvergenceError):
    """A backend asked for that Keras has not, or that is not installed here."""


def configured() -> str:
    """The backend Keras will load in this process: ``KERAS_BACKEND``, else ``keras.json``'s
    ``backend``, else TensorFlow (Keras's own order, ``keras/src/backend/config.py``)."""
    named = os.environ.get(ENVIRONMENT, "").strip()
    if named:
        return ALIASES.get(named.lower(), named.lower())
    home = os.environ.get("KERAS_HOME") or str(Path.home() / ".keras")
    try:
        stored = json.loads((Path(home) / "keras.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return DEFAULT
    backend = str(stored.get("backend", DEFAULT)) if isinstance(stored, dict) else DEFAULT
    return ALIASES.get(backend.lower(), backend.lower())


def parse(text: str | list[str] | tuple[str, ...], where: str) -> list[str]:
    """Backends named in ``text`` (comma-separated, or a list), checked and in the order given;
    ``where`` names the option, ini key or marker in the error."""
    names = [part.strip() for part in text.split(",")] if isinstance(text, str) else [str(n) for n in text]
    chosen: list[str] = []
    for name in filter(None, names):
        backend = ALIASES.get(name.lower(), name.lower())
        if backend not in BACKENDS:
            raise BackendError(
                f"{where}: unknown backend {name!r}; Keras 3 trains on {', '.join(BACKENDS)}\n"
                f"  fix: {where}={','.join(BACKENDS[:2])} (any of {', '.join(BACKENDS)})"
            )
        if backend not in chosen:
            chosen.append(backend)
    if not chosen:
        raise BackendError(f"{where} names no backend\n  fix: {where}=tensorflow (or jax, torch)")
    return chosen


def installed(backend: str) -> bool:
    """Whether the backend's framework can be imported here (found, not imported)."""
    return importlib.util.find_spec(MODULE[backend]) is not None


def not_installed(backend: str, where: str) -> BackendError:
    return BackendError(
        f"{where} asks for the {backend} backend, but {MODULE[backend]} is not installed here\n"
        f"  fix: pip install 'pytest-convergence[{EXTRA[backend]}]', or drop {backend} from {where}"
    )


def label(backend: str, dtype: str) -> str:
    """A test id's part for one run: ``float16`` on TensorFlow, ``jax-float16`` elsewhere."""
    return dtype if backend == DEFAULT else f"{backend}-{dtype}"


class BackendDtype(str):
    """A dtype parameter that also names its backend: equal to the dtype (so everything that reads
    a test's dtype reads it unchanged), with ``backend`` beside it."""

    backend: str

    def __new__(cls, dtype: str, backend: str) -> BackendDtype:
        value = super().__new__(cls, dtype)
        value.backend = backend
        return value

    def __reduce__(self) -> tuple[type, tuple[str, str]]:
        return (BackendDtype, (str(self), self.backend))
