"""What callbacks cost: ``loop`` and ``fit`` with none, an epoch-level and a batch-level callback,
on a small multi-batch model, measured side by side in one run (``pytest benchmarks -k callbacks``).

With an epoch-level callback (``LearningRateScheduler``) ``loop`` calls its compiled loop once an
epoch, between ``on_epoch_begin`` and ``on_epoch_end``; with a batch-level one (``TerminateOnNaN``
overrides ``on_batch_end``) once a step, between the batch hooks, as ``fit`` does. Each engine is
prepared and warmed up first (tracing, fit's first-epoch setup), then one execution (all epochs)
is timed; the summary prints the time per epoch and the ratios, no assertion on time.
"""

from __future__ import annotations

import numpy as np
import pytest

from pytest_convergence import Case
from pytest_convergence.backend import Training, framework_versions

EPOCHS = {"fit": 10, "loop": 50}


def same(epoch: int, rate: float) -> float:
    """The epoch-level callback's schedule: keeps the rate (the cost is the call, not a change)."""
    return rate


def epoch_callback() -> object:
    from pytest_convergence.backend import import_keras

    return import_keras()[1].keras.callbacks.LearningRateScheduler(same)


CALLBACKS: dict[str, list[object]] = {"none": [], "epoch": [epoch_callback], "batch": ["TerminateOnNaN"]}


def small_case(epochs: int, callbacks: list[object]) -> Case:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(256, 8)).astype("float32")
    y = (x[:, 0] * x[:, 1] + x[:, 2] > 0).astype("float32")
    return Case.sequential(
        "callbacks-speed",
        layers=[
            {"class_name": "Dense", "config": {"units": 16, "activation": "relu"}},
            {"class_name": "Dense", "config": {"units": 1}},
        ],
        input_shape=(8,),
        x=x,
        y=y,
        loss={"class_name": "BinaryCrossentropy", "config": {"from_logits": True}},
        optimizer="adam",
        epochs=epochs,
        batch_size=32,  # 8 batches an epoch
        callbacks=callbacks,
    )


@pytest.mark.parametrize("callbacks", list(CALLBACKS))
@pytest.mark.parametrize("engine", list(EPOCHS))
def test_callbacks_speed(benchmark, engine: str, callbacks: str, callback_times: dict) -> None:
    epochs = EPOCHS[engine]
    case = small_case(epochs, CALLBACKS[callbacks])
    training = Training.prepare(case, "float32", engine)
    training.compile_loop()
    training.execute()  # warm-up
    benchmark.extra_info.update(
        {
            "case": case.name,
            "engine": engine,
            "callbacks": callbacks,
            "epochs": epochs,
            **framework_versions(),
        }
    )
    record = benchmark.pedantic(training.execute, rounds=3, iterations=1)
    assert record.loss.shape == (case.total_steps,)
    callback_times[(engine, callbacks)] = benchmark.stats.stats.median / epochs
