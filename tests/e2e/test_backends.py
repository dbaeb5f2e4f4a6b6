"""Keras 3 on JAX and PyTorch, end to end: each backend's loop is its fit bit for bit, a session on
another backend names it in ids and summary and keeps TensorFlow's snapshots, one session trains
several backends (the others in a process of their own), and a backend's own expectations hold.

The runs of a backend other than this process's TensorFlow train in that backend's own process
(:mod:`pytest_convergence.backend.elsewhere`), as a session asking for several backends does."""

from __future__ import annotations

import json

import numpy as np
import pytest
from factories import seed_case, seed_spec

from pytest_convergence import Case, CaseError
from pytest_convergence.backend import train
from pytest_convergence.backends import installed

on_jax = pytest.mark.skipif(not installed("jax"), reason="JAX is not installed: pip install '.[jax]'")
on_torch = pytest.mark.skipif(
    not installed("torch"), reason="PyTorch is not installed: pip install '.[torch]'"
)
OTHER_BACKENDS = [pytest.param("jax", marks=on_jax), pytest.param("torch", marks=on_torch)]


def shuffled_case(**changes: object) -> Case:
    """Shuffled multi-batch epochs with a smaller last batch and a metric: fit's own batch drawing."""
    rng = np.random.default_rng(3)
    x = rng.normal(size=(40, 3)).astype("float32")
    y = (x[:, 0] * x[:, 1] + x[:, 2] > 0).astype("float32")
    settings: dict[str, object] = {
        "layers": [
            {"class_name": "Dense", "config": {"units": 8, "activation": "relu"}},
            {"class_name": "Dense", "config": {"units": 1}},
        ],
        "input_shape": (3,),
        "x": x,
        "y": y,
        "loss": {"class_name": "BinaryCrossentropy", "config": {"from_logits": True}},
        "optimizer": "adam",
        "epochs": 3,
        "batch_size": 16,  # 2 full batches and one of 8, reshuffled every epoch
        "metrics": ["accuracy"],
    }
    settings.update(changes)
    return Case.sequential("shuffled", **settings)  # type: ignore[arg-type]


def assert_same_run(reference, candidate) -> None:
    differs = np.flatnonzero(reference.loss != candidate.loss)
    assert np.array_equal(reference.loss, candidate.loss, equal_nan=True), (
        f"first differing step: {differs[:1] + 1}"
    )
    assert reference.epoch_metrics == candidate.epoch_metrics
    for name, weights in reference.final_weights.items():
        assert np.array_equal(weights, candidate.final_weights[name]), name
    assert np.array_equal(reference.weights_changed, candidate.weights_changed)


@pytest.mark.parametrize("backend", OTHER_BACKENDS)
def test_each_backends_loop_is_its_fit_bit_for_bit(backend: str) -> None:
    """The seed case in every kind of dtype (pure, mixed, float64: JAX's 64-bit switch), and
    shuffled multi-batch epochs with a partial batch: loop draws and trains what fit does."""
    steps = 120 if backend == "jax" else 40  # PyTorch's loop pays Python per step, as its fit
    for dtype in ("float16", "mixed_float16", "float64"):
        case = seed_case(steps=steps)
        fit = train(case, dtype, "fit", backend=backend)
        loop = train(case, dtype, "loop", backend=backend)
        assert fit.backend == loop.backend == backend
        assert fit.versions["keras_backend"] == backend and backend in fit.versions
        assert_same_run(fit, loop)
        assert loop.variable_dtype == ("float32" if dtype == "mixed_float16" else dtype)
    case = shuffled_case()
    assert_same_run(
        train(case, "float32", "fit", backend=backend), train(case, "float32", "loop", backend=backend)
    )


@on_jax
def test_a_backend_trains_its_own_numbers_and_its_errors_name_the_field() -> None:
    """JAX draws its initial weights from its own generator: the same case starts elsewhere than
    on TensorFlow; the xla engine is JAX's own loop there and is refused on PyTorch."""
    case = seed_case(steps=30)
    on_tensorflow, on_jax_ = train(case, "float32"), train(case, "float32", backend="jax")
    assert on_tensorflow.backend == "tensorflow" and on_jax_.backend == "jax"
    assert not np.array_equal(on_tensorflow.loss, on_jax_.loss)
    xla = train(case, "float32", "xla", backend="jax")
    assert_same_run(on_jax_, xla)
    if installed("torch"):
        with pytest.raises(
            CaseError, match=r"field 'engine'.*xla engine compiles TensorFlow's or JAX's loop"
        ):
            train(case, "float32", "xla", backend="torch")


SPEC = seed_spec(
    'name = "seed"\ndtypes = ["float32", "float64"]\nsteps = 60\n',
    # measured: float64 ends at 3.8e-05 on TensorFlow, at 1.5e-04 on JAX (its own initial weights)
    "\n[expect.float64]\nfinal_loss_below = 6e-5\n\n[expect.jax.float64]\nfinal_loss_below = 3e-4\n",
)


@on_jax
def test_a_session_on_jax_names_its_backend_and_keeps_tensorflows_snapshots(
    user_suite: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    """KERAS_BACKEND=jax, as Keras reads it: ids and summary say jax, the backend's own
    expectation replaces the dtype's ([expect.jax.float64]), --snapshot-update writes JAX's
    snapshots beside TensorFlow's and deletes none of them, and a second session matches."""
    user_suite.makefile(".convergence.toml", seed=SPEC)
    monkeypatch.delenv("KERAS_BACKEND", raising=False)
    user_suite.runpytest_subprocess(
        "--convergence", "--snapshot-update", "-p", "no:cacheprovider"
    ).assert_outcomes(passed=2)
    snapshots = user_suite.path / "__snapshots__" / "seed.convergence"
    tensorflows = {p.name: p.read_bytes() for p in snapshots.iterdir()}
    assert set(tensorflows) == {"seed[float32].convergence.txt", "seed[float64].convergence.txt"}
    monkeypatch.setenv("KERAS_BACKEND", "jax")
    jax = user_suite.runpytest_subprocess(
        "--convergence", "--snapshot-update", "-p", "no:cacheprovider", "--convergence-results=jax.json"
    )
    jax.assert_outcomes(passed=2)
    jax.stdout.fnmatch_lines(
        ["*2 snapshots generated*", "case*dtype*backend*engine*outcome*", "seed*float32*jax*loop*"]
    )
    assert "deleted" not in jax.stdout.str()
    after = {p.name: p.read_bytes() for p in snapshots.iterdir()}
    assert {name: after[name] for name in tensorflows} == tensorflows
    assert set(after) - set(tensorflows) == {
        "seed[jax-float32].convergence.txt",
        "seed[jax-float64].convergence.txt",
    }
    records = json.loads((user_suite.path / "jax.json").read_text(encoding="utf-8"))["runs"]
    assert {record["versions"]["keras_backend"] for record in records} == {"jax"}
    again = user_suite.runpytest_subprocess("--convergence", "-p", "no:cacheprovider", "-v")
    again.assert_outcomes(passed=2)
    again.stdout.fnmatch_lines(["*seed[[]jax-float32[]] PASSED*", "*seed[[]jax-float64[]] PASSED*"])
    monkeypatch.setenv("KERAS_BACKEND", "torch")
    torch = user_suite.runpytest_subprocess("--convergence", "-p", "no:cacheprovider", "--collect-only", "-q")
    if installed("torch"):
        torch.stdout.fnmatch_lines(["*seed[[]torch-float32[]]*"])
    else:  # a fresh clone's ./dev test, where PyTorch's CPU wheel is not at hand: the fix is named
        torch.stdout.fnmatch_lines(
            [
                "*KERAS_BACKEND asks for the torch backend, but torch is not installed here*",
                "*fix: pip install 'pytest-convergence[[]torch[]]'*",
            ]
        )


SUITE = """
import pytest
from pytest_convergence import Case

CASE = Case.sequential(
    "seed",
    layers=[{"class_name": "Dense", "config": {"units": 1}}],
    input_shape=(1,),
    x=[[-1.0], [1.0]],
    y=[1.0, 0.0],
    loss={"class_name": "BinaryCrossentropy", "config": {"from_logits": True}},
    optimizer={"class_name": "SGD", "config": {"learning_rate": 2.0}},
    steps=50,
)


@pytest.mark.convergence(dtypes=["float32"])
def test_everywhere(convergence_train):
    run = convergence_train(CASE)
    print("TRAINED-ON", run.backend, run.loss[-1])


@pytest.mark.convergence(dtypes=["float32"], backends=["tensorflow"])
def test_tensorflow_only(convergence_train):
    convergence_train(CASE)
"""


@on_jax
def test_one_session_trains_several_backends_the_others_in_their_own_process(
    user_suite: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--convergence-backends=tensorflow,jax: one instance per backend; TensorFlow's here, JAX's in
    a process of its own, both in the results file; a test the marker keeps to TensorFlow is
    skipped on JAX with the reason."""
    monkeypatch.delenv("KERAS_BACKEND", raising=False)
    user_suite.makepyfile(test_suite=SUITE)
    result = user_suite.runpytest_subprocess(
        "--convergence",
        "--convergence-backends=tensorflow,jax",
        "--convergence-results=both.json",
        "-p",
        "no:cacheprovider",
        "-v",
        "-s",
        "-rs",
    )
    result.assert_outcomes(passed=3, skipped=1)
    result.stdout.fnmatch_lines(
        [
            "*test_everywhere[[]float32[]]*TRAINED-ON tensorflow*",
            "*test_everywhere[[]jax-float32[]]*TRAINED-ON jax*",
            "*SKIPPED*trains on tensorflow only (its marker's backends)*",
        ]
    )
    records = json.loads((user_suite.path / "both.json").read_text(encoding="utf-8"))["runs"]
    assert sorted(record["versions"]["keras_backend"] for record in records) == [
        "jax",
        "tensorflow",
        "tensorflow",
    ]
    unknown = user_suite.runpytest_subprocess("--convergence", "--convergence-backends=tensorflow,mxnet")
    unknown.stderr.fnmatch_lines(
        ["*--convergence-backends: unknown backend 'mxnet'*", "*fix: --convergence-backends=*"]
    )
    assert unknown.ret == pytest.ExitCode.USAGE_ERROR


@on_jax
def test_a_case_that_cannot_cross_to_its_backends_process_says_how_to_fix_it() -> None:
    """A builder given as a lambda cannot be pickled to the other backend's process."""
    case = Case(
        name="closure",
        model=lambda: __import__("keras").Sequential([__import__("keras").layers.Dense(1)]),
        x=[[-1.0], [1.0]],
        y=[1.0, 0.0],
        loss="mse",
        steps=5,
    )
    with pytest.raises(Exception, match=r"(?s)cannot be sent to the jax backend's process.*at module level"):
        train(case, "float32", backend="jax")
