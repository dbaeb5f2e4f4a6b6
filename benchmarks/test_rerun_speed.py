"""What a calibration costs per extra run (``--convergence-calibrate=N`` trains N-1 perturbed
reruns): a rerun rewinds the first run's model and reuses its traced loop (``backend.rerun``),
so it pays its training and probes, not another build and trace. Measured side by side on real
catalogue models (``pytest benchmarks -k rerun``)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from pytest_convergence.backend import rerun, train
from pytest_convergence.perturb import Perturbation
from pytest_convergence.spec.loader import load_spec

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
CASES = ("tfkeras-image", "nlp-sentiment", "mlp-circles")


@pytest.mark.parametrize("name", CASES)
def test_a_rerun_against_a_first_run(benchmark, name: str, rerun_times: dict) -> None:
    case = load_spec(FIXTURES / f"{name}.convergence.toml").case
    train(case, "float32")  # TensorFlow's first-use costs, charged to neither side
    first = benchmark.pedantic(train, args=(case, "float32"), rounds=3, iterations=1)
    rerun_times[(name, "first")] = benchmark.stats.stats.median
    seeds = iter(range(1, 100))
    timings = []
    for _ in range(3):
        start = time.perf_counter()
        again = rerun(first, case, Perturbation(next(seeds)))
        timings.append(time.perf_counter() - start)
        assert "trace" not in again.timing.phases  # the first run's traced loop
    rerun_times[(name, "rerun")] = sorted(timings)[1]
    benchmark.extra_info.update({"case": name, "rerun_seconds": sorted(timings)[1]})
