"""The pytest-benchmark glue: training speed as a benchmark, so ``--benchmark-autosave``,
``--benchmark-compare`` and ``--benchmark-compare-fail`` work as pytest-benchmark users expect.

A case is prepared and traced once (and run once to warm up: XLA compiles there, ``fit`` builds its
train function), then each pedantic round executes the whole training. ``extra_info`` carries the
case, dtype, engine, steps, steps per second and the framework versions; the machine info gets the
framework versions through pytest-benchmark's own hook.

Under pytest-xdist pytest-benchmark switches itself off (its timings would be skewed by the other
workers), and so do these benchmarks: they run as plain trainings and say so.
"""

from __future__ import annotations

import sys
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..case import Case
    from ..run import Run


def measure(benchmark: Any, case: Case, dtype: str, engine: str, *, rounds: int = 3) -> Run:
    """Benchmark one training of ``case`` and return its (last) run."""
    from ..backend import Training, framework_versions
    from ..run import Timing

    training = Training.prepare(case, dtype, engine)
    start = time.perf_counter()
    training.compile_loop()
    trace_time = time.perf_counter() - start
    training.execute()  # warm-up: compilation and first-call costs stay out of the rounds
    steps = case.total_steps
    benchmark.extra_info.update(
        {"case": case.name, "dtype": dtype, "engine": engine, "steps": steps, **framework_versions()}
    )
    timings: list[float] = []

    def one_training() -> Any:
        begin = time.perf_counter()
        record = training.execute()
        timings.append(time.perf_counter() - begin)
        return record

    record = benchmark.pedantic(one_training, rounds=rounds, iterations=1)
    stats = getattr(getattr(benchmark, "stats", None), "stats", None)
    median = float(stats.median) if stats is not None else sorted(timings)[len(timings) // 2]
    benchmark.extra_info["steps_per_second"] = steps / median if median > 0 else float("inf")
    return training.to_run(record, Timing(median, trace_time, wall_times=timings))


class MachineInfo:
    """Adds the framework versions to pytest-benchmark's machine info (if TensorFlow ran)."""

    def pytest_benchmark_update_machine_info(self, config: Any, machine_info: dict[str, Any]) -> None:
        if "tensorflow" not in sys.modules:  # never import it just for the machine info
            return
        from ..backend import framework_versions

        machine_info["frameworks"] = framework_versions()
