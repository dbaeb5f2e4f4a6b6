"""The shared factories of the test suite, in one module: small real cases (tens to hundreds of
steps), spec-file text, and what each Keras does. Imported as ``from factories import ...``
(pyproject puts tests/ on the path)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from pytest_convergence import Case
from pytest_convergence.backend.keras_adapter import installed_major
from pytest_convergence.history import History
from pytest_convergence.run import Run, Timing

KERAS_MAJOR = installed_major()
"""2 or 3, known without importing TensorFlow, so tests can state what each Keras does."""

keras3_dynamics = pytest.mark.skipif(
    KERAS_MAJOR != 3,
    reason="asserts a training trajectory of Keras 3, whose float16 losses are computed in float32 "
    "and whose RMSprop is written differently; Keras 2 trains this case to another outcome "
    "(see test_keras2.py for what it does there)",
)

BCE_LOGITS = {"class_name": "BinaryCrossentropy", "config": {"from_logits": True}}
SEED_X = [[-1.0], [1.0]]
SEED_Y = [1.0, 0.0]


def seed_case(name: str = "seed", **changes: Any) -> Case:
    """The user's seed model (one Dense unit, two samples), shortened for tests."""
    settings: dict[str, Any] = {
        "layers": [{"class_name": "Dense", "config": {"units": 1}}],
        "input_shape": (1,),
        "x": SEED_X,
        "y": SEED_Y,
        "loss": BCE_LOGITS,
        "optimizer": {"class_name": "RMSprop", "config": {"learning_rate": 2.55}},
        "steps": 300,
        "seed": 0,
    }
    settings.update(changes)
    return Case.sequential(name, **settings)


HIDDEN_RELU6 = [
    {"class_name": "Dense", "config": {"units": 6, "activation": "relu"}},
    {"class_name": "Dense", "config": {"units": 1}},
]


SEED_SPEC_BODY = """
[model]
input_shape = [1]
layers = [{ class_name = "Dense", config = { units = 1 } }]

[loss]
class_name = "BinaryCrossentropy"
config = { from_logits = true }

[optimizer]
class_name = "RMSprop"
config = { learning_rate = 2.55 }

[data]
x = [[-1.0], [1.0]]
y = [1.0, 0.0]
"""


def seed_spec(header: str, footer: str = "") -> str:
    """A spec file of the seed model: ``header`` (name, dtypes, steps...) + model, data + ``footer``."""
    return header.rstrip("\n") + "\n" + SEED_SPEC_BODY + footer


HEAVY_MODULES_CONFTEST = """
import sys
def pytest_sessionfinish(session):
    loaded = sorted(m for m in ("tensorflow", "keras") if m in sys.modules)
    print("HEAVY-MODULES:", loaded or "none")
"""


def _storage_dtype(dtype: str) -> np.dtype:
    """numpy has no bfloat16: store such weights in float32, as the engine widens them."""
    return np.dtype("float32") if dtype == "bfloat16" else np.dtype(dtype)


def make_history(
    loss: Any,
    update_size: Any = None,
    *,
    variable_dtype: str = "float32",
    compute_dtype: str | None = None,
    final_weights: dict[str, np.ndarray] | None = None,
    final_gradients: dict[str, np.ndarray] | None = None,
    steps_per_epoch: int = 1,
    epoch_metrics: dict[str, list[float]] | None = None,
    **fields: Any,
) -> History:
    """A synthetic History: the given per-step losses (and largest updates, 1e-2 by default) and
    plausible values for the rest; ``fields`` sets any other History field (``loss_dtype``,
    ``output_evidence``...). Without ``epoch_metrics``, its ``loss`` is each epoch's last step loss."""
    loss = np.asarray(loss, np.float64)
    update_size = np.asarray(np.full(loss.size, 1e-2) if update_size is None else update_size, np.float64)
    assert update_size.shape == loss.shape
    storage = _storage_dtype(variable_dtype)
    if final_weights is None:
        final_weights = {
            "dense/kernel": np.array([[0.75]], storage),
            "dense/bias": np.array([-0.25], storage),
        }
    if final_gradients is None:
        final_gradients = {name: np.full(w.shape, 1e-3, storage) for name, w in final_weights.items()}
    if epoch_metrics is None:
        ends = loss[steps_per_epoch - 1 :: steps_per_epoch][: max(1, loss.size // steps_per_epoch)]
        epoch_metrics = {"loss": [float(v) for v in ends]}
    fields.setdefault("loss_dtype", "float32")
    fields.setdefault("optimizer", "SGD")
    return History(
        loss=loss,
        variable_dtype=variable_dtype,
        compute_dtype=compute_dtype or variable_dtype,
        weights_changed=(update_size != 0) | np.isnan(update_size),
        update_size=update_size,
        initial_weights={name: np.zeros_like(w) for name, w in final_weights.items()},
        final_weights=final_weights,
        final_gradients=final_gradients,
        epoch_metrics=epoch_metrics,
        steps_per_epoch=steps_per_epoch,
        **fields,
    )


def make_run(
    loss: Any,
    update_size: Any = None,
    *,
    case: str = "synthetic",
    dtype: str | None = None,
    seed: int = 0,
    versions: dict[str, str] | None = None,
    **history: Any,
) -> Run:
    """A synthetic Run of :func:`make_history` (``history`` are its keywords), trained in its
    ``variable_dtype`` unless ``dtype`` says otherwise, by the loop engine in one second."""
    made = make_history(loss, update_size, **history)
    return Run(
        case=case,
        dtype=dtype or made.variable_dtype,
        engine="loop",
        seed=seed,
        history=made,
        timing=Timing(wall_time=1.0, trace_time=0.0),
        versions=dict(versions or {}),
    )


def hidden_suite(*, steps: int, dtypes: list[str]) -> str:
    """A user's test file: a two-layer tanh model on XOR, trained with Adam, compared with its snapshot."""
    return f"""
import pytest
from pytest_convergence import Case

CASE = Case.sequential(
    "hidden",
    layers=[
        {{"class_name": "Dense", "config": {{"units": 4, "activation": "tanh"}}}},
        {{"class_name": "Dense", "config": {{"units": 1}}}},
    ],
    input_shape=(2,),
    x=[[0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0]], y=[0.0, 1.0, 1.0, 0.0],
    loss={{"class_name": "BinaryCrossentropy", "config": {{"from_logits": True}}}},
    optimizer={{"class_name": "Adam", "config": {{"learning_rate": 0.05}}}},
    steps={steps}, seed=0,
)

@pytest.mark.convergence(dtypes={dtypes!r})
def test_hidden(convergence_train, convergence_snapshot):
    assert convergence_train(CASE) == convergence_snapshot
"""
