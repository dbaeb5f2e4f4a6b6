"""pytest-convergence: training dynamics of Keras models as a tested, reviewed artifact.

The public API is loaded lazily, so that pytest loading the plugin (on every run, with or without
``--convergence``) costs no numpy or TensorFlow import.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS = {
    "Case": "case",
    "Expectation": "case",
    "Run": "run",
    "History": "history",
    "Outcome": "outcome",
    "Diagnosis": "diagnosis",
    "diagnose": "diagnosis",
    "train": "backend",
    "CaseError": "errors",
    "ConvergenceError": "errors",
    "ExpectationFailed": "errors",
    "TensorFlowMissingError": "errors",
    "DTYPES": "dtypes",
    "ENGINES": "outcome",
}

__all__ = [
    "DTYPES",
    "ENGINES",
    "Case",
    "CaseError",
    "ConvergenceError",
    "Diagnosis",
    "Expectation",
    "ExpectationFailed",
    "History",
    "Outcome",
    "Run",
    "TensorFlowMissingError",
    "diagnose",
    "train",
]

if TYPE_CHECKING:
    from .backend import train
    from .case import Case, Expectation
    from .diagnosis.rules import Diagnosis, diagnose
    from .dtypes import DTYPES
    from .errors import CaseError, ConvergenceError, ExpectationFailed, TensorFlowMissingError
    from .history import History
    from .outcome import ENGINES, Outcome
    from .run import Run


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'pytest_convergence' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value
