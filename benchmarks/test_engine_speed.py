"""Steps per second of each engine on the seed case, measured in one run, on the Keras backend
of the session (docs/backends.md):

    pytest benchmarks
    KERAS_BACKEND=jax pytest benchmarks -k seed_case      # JAX: fit and its scanned loop
    KERAS_BACKEND=torch pytest benchmarks -k seed_case    # PyTorch: fit and its Python loop

Each engine is prepared and warmed up first (fit traces its train function, loop traces its
loop, xla also compiles), then timed over several rounds of a budget sized so that a round takes
about a second. The summary prints the time per step and the speed-up over ``fit``.
"""

from __future__ import annotations

import pytest

from pytest_convergence import Case
from pytest_convergence.backend import Training, framework_versions
from pytest_convergence.backends import configured

BACKEND = configured()
STEPS = {
    "tensorflow": {"fit": 20, "loop": 20_000, "xla": 1_000_000},
    "jax": {"fit": 20, "loop": 20_000},  # xla is JAX's loop itself
    "torch": {"fit": 20, "loop": 200},  # an eager step either way; xla is refused
}[BACKEND]


def seed_case(steps: int) -> Case:
    return Case.sequential(
        "seed-rmsprop-2.55",
        layers=[{"class_name": "Dense", "config": {"units": 1}}],
        input_shape=(1,),
        x=[[-1.0], [1.0]],
        y=[1.0, 0.0],
        loss={"class_name": "BinaryCrossentropy", "config": {"from_logits": True}},
        optimizer={"class_name": "RMSprop", "config": {"learning_rate": 2.55}},
        steps=steps,
    )


@pytest.mark.parametrize("engine", list(STEPS))
def test_seed_case_training_speed(benchmark, engine: str, per_step_times: dict[str, float]) -> None:
    steps = STEPS[engine]
    training = Training.prepare(seed_case(steps), "float32", engine)
    training.compile_loop()
    training.execute()  # warm-up: tracing, XLA compilation, fit's first-epoch setup
    benchmark.extra_info.update(
        {
            "case": "seed-rmsprop-2.55",
            "dtype": "float32",
            "engine": engine,
            "steps": steps,
            "backend": BACKEND,
        }
    )
    benchmark.extra_info.update(framework_versions())
    record = benchmark.pedantic(training.execute, rounds=3, iterations=1)
    assert record.loss.shape == (steps,)
    per_step = benchmark.stats.stats.median / steps
    benchmark.extra_info["steps_per_second"] = 1 / per_step
    per_step_times[engine] = per_step
