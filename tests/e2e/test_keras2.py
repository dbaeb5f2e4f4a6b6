"""Keras 2 and Keras 3: which one ran, what each computes the loss in, and pinning that dtype.

Every test here runs on both; where the two differ, the test says what each does. CI runs the
suite on TensorFlow 2.21 (Keras 3, and Keras 2 through tf-keras) and on TensorFlow 2.15.1 (Keras 2).
"""

from __future__ import annotations

import importlib.util
import textwrap

import numpy as np
import pytest
from factories import KERAS_MAJOR, seed_case, seed_spec

from pytest_convergence.backend import import_keras, train
from pytest_convergence.backend.keras_adapter import installed_major
from pytest_convergence.errors import CaseError
from pytest_convergence.perturb import Perturbation, nudge_dtype
from pytest_convergence.snapshot.format import render_run
from pytest_convergence.tolerance import Tolerance


def test_the_keras_major_known_without_importing_is_the_one_that_loads() -> None:
    _, flavour = import_keras()
    assert installed_major() == flavour.major == KERAS_MAJOR


def test_a_run_records_which_keras_it_ran_on() -> None:
    run = train(seed_case(steps=5), "float32")
    _, flavour = import_keras()
    versions = run.versions
    assert versions["keras_major"] == str(flavour.major)
    assert versions["keras"] == flavour.keras.__version__
    assert versions["keras_backend"] == "tensorflow"
    assert versions["keras_package"] == flavour.keras.__name__.split(".")[0]
    header = render_run(run, Tolerance(rtol=1e-4)).split("# compared")[0]
    assert f"keras: Keras {flavour.major} ({versions['keras_package']} {versions['keras']}" in header


def test_each_keras_computes_a_float16_models_loss_in_its_own_dtype() -> None:
    # The first mechanism of the Keras 2 -> 3 migration: Keras 3 losses default to float32.
    run = train(seed_case(steps=5), "float16")
    assert run.loss_dtype == ("float32" if KERAS_MAJOR == 3 else "float16")


def test_pinning_the_loss_dtype_this_keras_uses_anyway_changes_nothing() -> None:
    # Keras 3 computes in float32 and Keras 2 in the output's dtype: pinning that is a no-op,
    # bit for bit, which shows the pin changes only the dtype and nothing else about the loss.
    pin = "float32" if KERAS_MAJOR == 3 else "compute"
    plain = train(seed_case(steps=300), "float16")
    pinned = train(seed_case(steps=300, loss_dtype=pin), "float16")
    assert np.array_equal(plain.loss, pinned.loss)
    assert len(np.unique(plain.loss)) > 50  # a history that moves, so equality means something


@pytest.mark.parametrize(
    ("dtype", "pin"),
    [("float16", "float32"), ("float16", "compute"), ("float64", "float64"), ("float64", "float32")],
)
def test_pinning_another_loss_dtype_changes_the_history_and_is_recorded(dtype: str, pin: str) -> None:
    plain = train(seed_case(steps=300), dtype)
    pinned = train(seed_case(steps=300, loss_dtype=pin), dtype)
    resolved = dtype if pin == "compute" else pin
    assert pinned.loss_dtype == resolved
    if resolved == plain.loss_dtype:
        pytest.skip(f"this Keras computes the loss in {resolved} already (see the no-op test)")
    assert not np.array_equal(plain.loss, pinned.loss)


def test_an_unknown_loss_dtype_is_rejected_naming_the_field_and_the_choices() -> None:
    with pytest.raises(CaseError) as raised:
        seed_case(loss_dtype="float8")
    assert raised.value.field == "loss_dtype"
    assert "compute, float16, bfloat16, float32, float64" in str(raised.value)


def test_a_spec_file_pins_the_loss_dtype(user_suite: pytest.Pytester) -> None:
    user_suite.makefile(
        ".convergence.toml",
        pinned=seed_spec('name = "pinned"\ndtypes = ["float16"]\nsteps = 20\nloss_dtype = "float64"'),
        typo=seed_spec('name = "typo"\ndtypes = ["float16"]\nsteps = 20\nloss_dtype = "float61"'),
    )
    result = user_suite.runpytest(
        "--convergence", "--snapshot-update", "--convergence-results=out.json", "-p", "no:cacheprovider"
    )
    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines(["*typo.convergence.toml*loss_dtype*"])
    import json

    (run,) = json.loads((user_suite.path / "out.json").read_text())["runs"]
    assert run["loss_dtype"] == "float64"


def test_loop_matches_fits_own_history_at_the_precision_history_keeps() -> None:
    # fit's History is the running mean of a float32 Mean metric in both Keras versions, so a
    # float64 model's losses are there rounded to float32: compare at that precision. 60 steps: fit
    # costs about 44 ms an epoch (one step) on Keras 3
    case = seed_case(steps=60)
    fit = train(case, "float64", "fit")
    loop = train(case, "float64", "loop")
    history = np.asarray(fit.epoch_metrics["loss"])  # one batch an epoch: one entry a step
    assert np.array_equal(loop.loss.astype(np.float32), history.astype(np.float32))
    assert np.array_equal(loop.loss, fit.loss)  # the values handed to the metric agree in float64


LEGACY_SUITE = textwrap.dedent(
    """
    import numpy as np
    import pytest
    from pytest_convergence import Case

    seed = Case.sequential(
        "seed", layers=[{"class_name": "Dense", "config": {"units": 1}}], input_shape=(1,),
        x=[[-1.0], [1.0]], y=[1.0, 0.0],
        loss={"class_name": "BinaryCrossentropy", "config": {"from_logits": True}},
        optimizer={"class_name": "RMSprop", "config": {"learning_rate": 2.55}}, steps=200)

    @pytest.mark.convergence(dtypes=["float16", "float32", "mixed_float16"])
    def test_legacy(convergence_train):
        loop, fit = convergence_train(seed, engine="loop"), convergence_train(seed, engine="fit")
        assert np.array_equal(loop.loss, fit.loss)
        assert loop.versions["keras_major"] == "2" and loop.versions["keras_package"] == "tf_keras"
    """
)


@pytest.mark.skipif(
    KERAS_MAJOR != 3 or importlib.util.find_spec("tf_keras") is None,
    reason="needs TensorFlow 2.16+ with the tf-keras package installed",
)
def test_tf_keras_under_the_legacy_switch_is_keras_2_and_loop_still_equals_fit(
    user_suite: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TF_USE_LEGACY_KERAS", "1")
    user_suite.makepyfile(test_legacy=LEGACY_SUITE)
    result = user_suite.runpytest_subprocess("--convergence", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=3)


def test_calibration_nudges_by_one_ulp_of_the_coarsest_dtype_the_run_computes_in() -> None:
    # Keras 3 computes a float64 model's loss in float32: an upgrade's rounding is a float32 ulp
    case = seed_case(steps=5)
    run = train(case, "float64")
    expected = "float32" if KERAS_MAJOR == 3 else "float64"
    assert nudge_dtype(run.variable_dtype, run.compute_dtype, run.loss_dtype) == expected
    copy = train(case, "float64", perturbation=Perturbation(1, stream="calibrate"))
    for name, kernel in run.initial_weights.items():
        kernel = np.asarray(kernel, np.float64)
        moved = np.abs(np.asarray(copy.initial_weights[name], np.float64) - kernel)
        assert np.array_equal(moved, np.abs(np.spacing(kernel.astype(expected))).astype(np.float64))
