"""A rerun of a case (``--convergence-calibrate``'s perturbed runs) trains on the model and
traced loop of its first run, rewound to where that training began: its history must be bit for
bit a freshly built run's, for models whose state lies beyond their weights (Dropout's seed
generator, BatchNormalization's statistics, Adam's moments, metrics, a callback that moves the
learning rate, validation), plain and perturbed, and the first run's model keeps its weights."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from pytest_convergence import Case
from pytest_convergence.backend import import_keras, rerun, train
from pytest_convergence.perturb import Perturbation
from pytest_convergence.run import Run

_, FLAVOUR = import_keras()
RNG = np.random.default_rng(3)
X = RNG.normal(size=(48, 4)).astype("float32")
Y = (X[:, 0] - X[:, 1] * X[:, 2] > 0).astype("float32")


def halve(epoch: int, rate: float) -> float:
    """A schedule that moves the optimizer's learning rate variable every epoch."""
    return rate * 0.5 if epoch else rate


def stateful_case(**changes: Any) -> Case:
    settings: dict[str, Any] = {
        "layers": [
            {"class_name": "Dense", "config": {"units": 8, "activation": "relu"}},
            {"class_name": "BatchNormalization", "config": {}},
            {"class_name": "Dropout", "config": {"rate": 0.3}},
            {"class_name": "Dense", "config": {"units": 1}},
        ],
        "input_shape": (4,),
        "x": X,
        "y": Y,
        "loss": {"class_name": "BinaryCrossentropy", "config": {"from_logits": True}},
        "optimizer": {"class_name": "Adam", "config": {"learning_rate": 0.02}},
        "metrics": ["accuracy"],
        "validation_split": 0.25,
        "epochs": 4,
        "batch_size": 8,
        "seed": 5,
    }
    settings.update(changes)
    return Case.sequential("stateful", **settings)


def assert_same_training(again: Run, fresh: Run) -> None:
    np.testing.assert_array_equal(again.loss, fresh.loss)
    assert again.history.epoch_metrics.keys() == fresh.history.epoch_metrics.keys()
    for name, values in fresh.history.epoch_metrics.items():
        np.testing.assert_array_equal(again.history.epoch_metrics[name], values, err_msg=name)
    assert again.final_weights.keys() == fresh.final_weights.keys()
    for name, values in fresh.final_weights.items():
        np.testing.assert_array_equal(again.final_weights[name], values, err_msg=name)


needs_rewind = pytest.mark.skipif(
    FLAVOUR.major < 3,
    reason="Keras 2's random ops keep their state outside variables: reruns are trained anew",
)


@needs_rewind
@pytest.mark.parametrize("dtype", ["float32", "mixed_float16"])
def test_a_rerun_is_a_fresh_run_bit_for_bit(dtype: str) -> None:
    case = stateful_case(callbacks=[lambda: FLAVOUR.keras.callbacks.LearningRateScheduler(halve)])
    first = train(case, dtype)
    trained = {name: np.array(w.numpy()) for name, w in zip(first.final_weights, first.model.weights)}
    again = rerun(first, case)
    assert "trace" not in again.timing.phases  # the first run's traced loop, not another
    assert_same_training(again, train(case, dtype))
    assert_same_training(again, first)
    perturbed = Perturbation(2)
    assert_same_training(rerun(first, case, perturbed), train(case, dtype, perturbation=perturbed))
    # the user's run.model is still the first training's
    for name, weight in zip(first.final_weights, first.model.weights):
        np.testing.assert_array_equal(np.asarray(weight.numpy()), trained[name])


def test_fit_is_trained_anew() -> None:
    case = stateful_case(epochs=2)
    first = train(case, "float32", "fit")
    again = rerun(first, case)
    assert again.timing.phases.get("build", 0.0) > 0  # built again: fit makes its own function
    assert_same_training(again, first)
