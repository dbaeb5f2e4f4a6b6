"""End-to-end time of one training per engine on a real model: build, trace, train, evaluate the
validation data each epoch, probe. What a user waits for, tracing included; measured side by side
in one run (``pytest benchmarks -k end_to_end``), with a warm-up training first so that TensorFlow's
first-use costs in the process are not charged to the first engine.

A short run (3 epochs) is where tracing dominates, 10 epochs is past the crossover, and a long
one (300 epochs) is where the per-epoch cost of ``fit`` does.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from pytest_convergence.backend import framework_versions, train
from pytest_convergence.spec.loader import load_spec

SPEC = Path(__file__).resolve().parents[1] / "fixtures" / "nlp-sentiment.convergence.toml"
ENGINES = ("fit", "loop", "xla")


@pytest.fixture(scope="module")
def warmed_up() -> None:
    train(load_spec(SPEC).case.with_(epochs=1), "float32", "loop")


@pytest.mark.parametrize("epochs", [3, 10, 300])
@pytest.mark.parametrize("engine", ENGINES)
def test_end_to_end_training_time(
    benchmark, warmed_up: None, engine: str, epochs: int, end_to_end_times: dict[tuple[int, str], float]
) -> None:
    case = load_spec(SPEC).case.with_(epochs=epochs)
    benchmark.extra_info.update(
        {"case": case.name, "engine": engine, "epochs": epochs, **framework_versions()}
    )
    run = benchmark.pedantic(
        train, args=(case, "float32", engine), rounds=1 if epochs > 10 else 3, iterations=1
    )
    assert "val_accuracy" in run.epoch_metrics and len(run.epoch_metrics["loss"]) == epochs
    end_to_end_times[(epochs, engine)] = benchmark.stats.stats.median
