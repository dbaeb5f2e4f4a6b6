"""The only place TensorFlow, JAX, PyTorch and Keras are imported: the Keras 2/3 adapters (Keras 3
on JAX and PyTorch in :mod:`.portable`), building, batches, the ``loop``, ``xla`` and ``fit``
engines and the probes. Importing this package imports none of them; the first :func:`train` (or
:func:`import_keras`) does."""

from __future__ import annotations

from typing import Any

from ..case import Case
from ..perturb import Perturbation
from ..run import Run
from .engine import Training
from .engine import train as train_here
from .frameworks import enable_op_determinism, framework_versions, import_keras, import_tensorflow


def train(
    case: Case,
    dtype: str,
    engine: str | None = None,
    *,
    trace_weights: int = 0,
    perturbation: Perturbation | None = None,
    backend: str | None = None,
) -> Run:
    """Train ``case`` in ``dtype`` (:func:`.engine.train`) on ``backend``: here when it is this
    process's Keras backend (or None), else in that backend's own process (:mod:`.elsewhere`)."""
    from .elsewhere import this_process, train_elsewhere

    if backend is None or backend == this_process():
        return train_here(case, dtype, engine, trace_weights=trace_weights, perturbation=perturbation)
    request: dict[str, Any] = {
        "case": case,
        "dtype": dtype,
        "engine": engine,
        "trace_weights": trace_weights,
        "perturbation": perturbation,
    }
    return train_elsewhere(backend, request)


def rerun(run: Run, case: Case, perturbation: Perturbation | None = None) -> Run:
    """``run``'s case trained once more (under ``perturbation``): on the same traced loop, rewound,
    where this process can (:func:`.engine.train_again`), else built and traced anew."""
    from .engine import train_again

    again = train_again(run, perturbation)
    if again is not None:
        return again
    return train(case, run.dtype, run.engine, perturbation=perturbation, backend=run.backend)


__all__ = [
    "Training",
    "enable_op_determinism",
    "framework_versions",
    "import_keras",
    "import_tensorflow",
    "rerun",
    "train",
]
