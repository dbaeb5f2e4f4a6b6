"""End-to-end time of one training per engine on real models: build, trace, train, evaluate the
validation data each epoch, probe. What a user waits for, tracing included; measured side by side
in one run (``pytest benchmarks -k end_to_end``), with warm-up trainings first (each case, each
engine, one epoch) so that TensorFlow's first-use costs in the process are charged to no engine.

- ``nlp-sentiment`` (the catalogue's): a short run (3 epochs) is where tracing dominates, 10
  epochs is past the crossover, and a long one (300 epochs, ``--bench-long``) is where the
  per-epoch cost of ``fit`` does.
- a keras.io "simple MNIST convnet" scaled to scikit-learn's 8x8 digits (1797 images, 10
  classes), 20 epochs of batch 128: a real convnet, skipped where scikit-learn is missing
  (``pip install -e .[bench]``). ``xla`` only with ``--bench-long``: XLA's CPU convolutions
  made its 20 epochs take 60-100 s here, against about 10 s for ``fit``.

The summary (benchmarks/conftest.py) prints each engine's median time with the phase split of
its median round (build, trace, train, other: ``run.timing.phases``) and issue 25's targets:
``loop`` >= 3x ``fit`` on the digits convnet at 20 epochs, >= 1.5x on nlp-sentiment at 3 epochs.
"""

from __future__ import annotations

import functools
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pytest_convergence import Case
from pytest_convergence.backend import framework_versions, train
from pytest_convergence.spec.loader import load_spec

SPEC = Path(__file__).resolve().parents[1] / "fixtures" / "nlp-sentiment.convergence.toml"
ENGINES = ("fit", "loop", "xla")
LONG = pytest.mark.bench_long
DIGITS = "digits convnet"
NLP = "nlp-sentiment"
Times = dict[tuple[str, int, str], tuple[float, dict[str, float]]]
"""(case label, epochs, engine) -> (median seconds, phases of the median round): conftest's summary."""


@functools.cache
def digits_data() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's digits as keras.io's MNIST example prepares MNIST: pixels scaled to [0, 1],
    a channel axis, one-hot labels."""
    datasets = pytest.importorskip(
        "sklearn.datasets",
        reason="the digits convnet benchmark needs scikit-learn: pip install -e .[bench] (./dev setup)",
    )
    digits = datasets.load_digits()
    x = (digits.images / 16.0).astype("float32")[..., np.newaxis]  # (1797, 8, 8, 1)
    y = np.eye(10, dtype="float32")[digits.target]
    return x, y


def conv(filters: int) -> dict[str, Any]:
    config = {"filters": filters, "kernel_size": 3, "activation": "relu", "padding": "same"}
    return {"class_name": "Conv2D", "config": config}


def digits_convnet(epochs: int) -> Case:
    """keras.io's "Simple MNIST convnet" (two Conv2D 3x3 with max pooling, Flatten, Dropout 0.5,
    Dense softmax; Adam, categorical crossentropy, batch 128, validation_split 0.1), on 8x8
    images: padding "same" so that two poolings leave a 2x2 map."""
    x, y = digits_data()
    return Case.sequential(
        "digits-convnet",
        layers=[
            conv(32),
            {"class_name": "MaxPooling2D", "config": {"pool_size": 2}},
            conv(64),
            {"class_name": "MaxPooling2D", "config": {"pool_size": 2}},
            {"class_name": "Flatten", "config": {}},
            {"class_name": "Dropout", "config": {"rate": 0.5}},
            {"class_name": "Dense", "config": {"units": 10, "activation": "softmax"}},
        ],
        input_shape=(8, 8, 1),
        x=x,
        y=y,
        loss="categorical_crossentropy",
        optimizer={"class_name": "Adam", "config": {"learning_rate": 0.001}},
        metrics=["accuracy"],
        batch_size=128,
        validation_split=0.1,
        epochs=epochs,
        seed=0,
    )


def nlp_sentiment(epochs: int) -> Case:
    return load_spec(SPEC).case.with_(epochs=epochs)


@pytest.fixture(scope="module")
def warmed_up() -> set[str]:
    """One epoch of each case in fit and loop: the first-use costs of the process (kernels,
    Keras's data adapters, the first tracing) paid before any engine is timed. Returns the
    cases warmed up; the digits convnet is missing where scikit-learn is."""
    done = set()
    for label, make in ((NLP, nlp_sentiment), (DIGITS, digits_convnet)):
        try:
            case = make(1)
        except pytest.skip.Exception:
            continue
        for engine in ("fit", "loop"):
            train(case, "float32", engine)
        done.add(label)
    return done


def timed(benchmark: Any, label: str, case: Case, engine: str, rounds: int, times: Times) -> Any:
    """``train(case, "float32", engine)`` timed end to end over ``rounds`` rounds; records the
    median and the phases of the median round under ``(label, epochs, engine)``."""
    rounds_done: list[tuple[float, dict[str, float]]] = []

    def once() -> Any:
        start = time.perf_counter()
        run = train(case, "float32", engine)
        rounds_done.append((time.perf_counter() - start, dict(run.timing.phases)))
        return run

    benchmark.extra_info.update(
        {"case": case.name, "engine": engine, "epochs": case.epochs, **framework_versions()}
    )
    run = benchmark.pedantic(once, rounds=rounds, iterations=1)
    seconds = statistics.median(t for t, _ in rounds_done)
    middle = sorted(rounds_done, key=lambda item: item[0])[(len(rounds_done) - 1) // 2]
    times[(label, int(case.epochs or 0), engine)] = (seconds, middle[1])
    benchmark.extra_info["phases"] = middle[1]
    return run


@pytest.mark.parametrize("epochs", [3, 10, pytest.param(300, marks=LONG)])
@pytest.mark.parametrize("engine", ENGINES)
def test_end_to_end_training_time(
    benchmark, warmed_up: set[str], engine: str, epochs: int, end_to_end_times: Times
) -> None:
    run = timed(benchmark, NLP, nlp_sentiment(epochs), engine, 1 if epochs > 10 else 3, end_to_end_times)
    assert "val_accuracy" in run.epoch_metrics and len(run.epoch_metrics["loss"]) == epochs


@pytest.mark.parametrize("engine", ["fit", "loop", pytest.param("xla", marks=LONG)])
def test_end_to_end_digits_convnet(
    benchmark, warmed_up: set[str], engine: str, end_to_end_times: Times
) -> None:
    case = digits_convnet(20)  # skips where scikit-learn is missing
    run = timed(benchmark, DIGITS, case, engine, 1 if engine == "xla" else 3, end_to_end_times)
    assert len(run.epoch_metrics["loss"]) == 20
    assert run.epoch_metrics["val_accuracy"][-1] > 0.8  # it learns: about 0.93 after 20 epochs
