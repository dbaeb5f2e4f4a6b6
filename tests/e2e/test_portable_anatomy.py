"""Step anatomy on JAX (and PyTorch): numpy digests that are TensorFlow's bit for bit, and a gate
between a TensorFlow results file and a JAX one that names the first stage of a step that differs
(:mod:`pytest_convergence.backend.portable_anatomy`)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from factories import seed_spec

from pytest_convergence.backend import digests
from pytest_convergence.backend import portable_anatomy as numpy_digests
from pytest_convergence.backends import installed

on_jax = pytest.mark.skipif(not installed("jax"), reason="JAX is not installed: pip install '.[jax]'")


def values() -> list[object]:
    """Tensors and nests as batches, weights and outputs come: every float width, integers,
    bools, signed zeros, non-finite values, a batch with ``None`` sample weights, a dict."""
    import ml_dtypes

    rng = np.random.default_rng(0)
    return [
        *[rng.normal(size=(5, 3)).astype(dtype) for dtype in ("float16", "float32", "float64")],
        rng.normal(size=(4, 2)).astype(ml_dtypes.bfloat16),
        rng.integers(-5, 5, size=(3, 4)).astype(np.int32),
        np.array([True, False, True]),
        np.array(3.5, np.float32),
        -np.zeros((2,), np.float32),
        np.array([np.nan, np.inf, -np.inf], np.float32),
        (rng.normal(size=(4, 1)).astype(np.float32), rng.normal(size=(4,)).astype(np.float32)),
        (rng.normal(size=(4, 1)).astype(np.float32), rng.normal(size=(4,)).astype(np.float32), None),
        {"b": rng.normal(size=(2, 2)).astype(np.float32), "a": rng.normal(size=(2,)).astype(np.float64)},
        rng.normal(size=(1000, 7)).astype(np.float32) * 1e6,  # products that wrap around int64
    ]


def test_the_numpy_digests_are_tensorflows_bit_for_bit() -> None:
    import tensorflow as tf

    for value in values():
        tensors = tf.nest.map_structure(lambda a: None if a is None else tf.constant(a), value)
        assert int(numpy_digests.digest(value)) == int(digests.digest(tf, tensors)), value
        assert int(numpy_digests.row_set_digest(value)) == int(digests.row_set_digest(tf, tensors)), value
        # a float64 sum: the same up to the order of its additions
        np.testing.assert_allclose(
            float(numpy_digests.value_sum(value)), float(digests.value_sum(tf, tensors)), rtol=1e-12
        )


def test_the_row_set_digest_ignores_the_order_of_rows_and_the_digest_does_not() -> None:
    x = np.array([[-1.0], [1.0]], np.float32)
    y = np.array([1.0, 0.0], np.float32)
    batch, reordered = (x, y), (x[::-1], y[::-1])
    assert numpy_digests.digest(batch) != numpy_digests.digest(reordered)
    assert numpy_digests.row_set_digest(batch) == numpy_digests.row_set_digest(reordered)


SEED_HEADER = """
name = "seed"
dtypes = ["float32"]
steps = 30
seed = 0
"""

PINNED_HEADER = """
name = "seed-pinned"
dtypes = ["float32"]
steps = 30
seed = 0
shuffle = false
initial_weights = "start.npz"
"""


@on_jax
def test_a_gate_between_tensorflow_and_jax_names_the_first_stage_that_differs(
    pytester, monkeypatch, capsys
) -> None:
    """The seed model on TensorFlow and on JAX: the initial weights differ (each backend's
    initializer draws from its own generator); with the weights pinned and the batches in one
    order, the forward pass and the loss agree bit for bit and the gradients are the first
    difference. Each side's anatomy reproduces its run's losses."""
    pytester.makefile(".convergence.toml", seed=seed_spec(SEED_HEADER), pinned=seed_spec(PINNED_HEADER))
    np.savez(pytester.path / "start.npz", np.array([[0.5]], np.float32), np.array([0.0], np.float32))
    monkeypatch.setenv("KERAS_BACKEND", "tensorflow")
    tf_session = pytester.runpytest_subprocess(
        "--convergence", "--convergence-results=tf.json", "--convergence-anatomy=3"
    )
    monkeypatch.setenv("KERAS_BACKEND", "jax")
    jax_session = pytester.runpytest_subprocess(
        "--convergence", "--convergence-results=jax.json", "--convergence-anatomy=3"
    )
    for session in (tf_session, jax_session):  # no snapshot yet: the tests fail, the results are written
        session.assert_outcomes(failed=2)
    for name, backend in (("tf.json", "tensorflow"), ("jax.json", "jax")):
        runs = json.loads((pytester.path / name).read_text())["runs"]
        assert [run["versions"]["keras_backend"] for run in runs] == [backend, backend]
        assert [run["anatomy"]["matches_run"] for run in runs] == [True, True], name
        assert [run["stages_unavailable"] for run in runs] == ["", ""]
    jax_runs = json.loads((pytester.path / "jax.json").read_text())["runs"]
    assert jax_runs[0]["anatomy"]["configuration"]["jit_compile"] == "on (jax.jit)"

    from pytest_convergence.cli import main

    code = main(["compare", str(pytester.path / "tf.json"), str(pytester.path / "jax.json")])
    said = capsys.readouterr().out
    assert code == 1, said
    assert (
        "why: seed [float32]: first difference: the initial weights of dense/kernel, before any step: "
        "the same seed draws other initial values now" in said
    ), said
    assert (
        "why: seed-pinned [float32]: first difference: the gradient of dense/kernel at step 1, with equal "
        "loss" in said
    ), said

    # a run trained in another backend's process has no anatomy: the verdict says why
    other = json.loads((pytester.path / "jax.json").read_text())
    for run in other["runs"]:
        run["anatomy"] = {}
        run["stages_unavailable"] = (
            "step anatomy is not available for a run trained in another backend's process; run that "
            "backend alone (KERAS_BACKEND=jax pytest --convergence) for it"
        )
    (pytester.path / "elsewhere.json").write_text(json.dumps(other))
    main(["compare", str(pytester.path / "tf.json"), str(pytester.path / "elsewhere.json")])
    said = capsys.readouterr().out
    assert (
        "why: seed [float32]: not localised: the new side's step anatomy is not available for a run "
        "trained in another backend's process; run that backend alone (KERAS_BACKEND=jax pytest "
        "--convergence) for it" in said
    ), said
