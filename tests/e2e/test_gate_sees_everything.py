"""The gate end to end on what it used to miss: a weight that moved alone, a failed snapshot, the
optimizer that actually ran, a speed-only change, and a busy machine that is no slowdown."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap

import pytest
from factories import KERAS_MAJOR

# x's second feature is always 0: the kernel's second weight gets no gradient and changes no loss,
# so its initial value moves the final weights and nothing else.
WEIGHT_SUITE = textwrap.dedent(
    """
    import numpy as np
    import pytest
    from pytest_convergence import Case

    CASE = Case.sequential(
        "dead-feature",
        layers=[{"class_name": "Dense", "config": {"units": 1}}], input_shape=(2,),
        x=[[-1.0, 0.0], [1.0, 0.0]], y=[1.0, 0.0],
        loss={"class_name": "BinaryCrossentropy", "config": {"from_logits": True}},
        optimizer={"class_name": "SGD", "config": {"learning_rate": 0.5}},
        steps=50, seed=0,
        initial_weights=[np.array([[0.3], [DEAD]]), np.array([0.0])],
    )

    @pytest.mark.convergence(dtypes=["float32"])
    def test_dead_feature(convergence_train, convergence_snapshot):
        assert convergence_train(CASE) == convergence_snapshot
    """
)


def weight_suite(dead: float) -> str:
    return WEIGHT_SUITE.replace("DEAD", repr(dead))


def test_a_weight_that_moved_alone_and_its_snapshot_failure_fail_the_gate_and_the_summary_line(
    user_suite: pytest.Pytester,
) -> None:
    user_suite.makepyfile(test_user=weight_suite(0.5))
    first = user_suite.runpytest("--convergence", "--snapshot-update", "--convergence-results=old.json")
    first.assert_outcomes(passed=1)
    user_suite.makepyfile(test_user=weight_suite(0.7))
    second = user_suite.runpytest(
        "--convergence", "--convergence-baseline=old.json", "--convergence-results=new.json"
    )
    second.assert_outcomes(failed=1)  # the snapshot assertion: every loss equal, one weight not
    old, new = (
        json.loads((user_suite.path / name).read_text())["runs"][0] for name in ("old.json", "new.json")
    )
    assert old["checkpoint_losses"] == new["checkpoint_losses"]
    second.stdout.fnmatch_lines(
        [
            "FAIL: dead-feature [[]float32[]]: weight dense/kernel (2, 1) values[[]1[]] 0.5 -> 0.7 "
            "(beyond rtol 0.0001); snapshot: weight dense/kernel (2, 1)[[]1[]]: 0.5 -> 0.7 "
            "(relative error 28.6%; 1 of 2 outside rtol)",
            "verdict: FAIL (1 of 1 failed)",
            "*1 failed,*1 failing in the convergence gate*",
        ]
    )

    # without the snapshot assertion (and its file, which syrupy would fail as unused) every test
    # passes: pytest's summary line counts the gate's failure
    unsnapshotted = weight_suite(0.7).replace(
        "assert convergence_train(CASE) == convergence_snapshot", "convergence_train(CASE)"
    )
    user_suite.makepyfile(test_user=unsnapshotted)
    shutil.rmtree(user_suite.path / "__snapshots__")
    third = user_suite.runpytest("--convergence", "--convergence-baseline=old.json")
    third.assert_outcomes(passed=1)
    assert third.ret == pytest.ExitCode.TESTS_FAILED
    third.stdout.fnmatch_lines(["*= 1 passed,*1 failing in the convergence gate in *"])


LEGACY_SUITE = textwrap.dedent(
    """
    import pytest
    import tensorflow as tf
    from pytest_convergence import Case

    CASE = Case.sequential(
        "adam",
        layers=[{"class_name": "Dense", "config": {"units": 1}}], input_shape=(1,),
        x=[[-1.0], [1.0]], y=[1.0, 0.0],
        loss={"class_name": "BinaryCrossentropy", "config": {"from_logits": True}},
        optimizer=OPTIMIZER,
        steps=30, seed=0,
    )

    @pytest.mark.convergence(dtypes=["float32"])
    def test_adam(convergence_train):
        convergence_train(CASE)
    """
)


def test_a_legacy_optimizer_against_the_new_one_is_named_in_the_verdict(
    user_suite: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Keras 2's legacy Adam (what an optimizer dict becomes there) and its new one: the same name
    and learning rate in the header (``Adam(learning_rate=0.01)``); only the module path differs."""
    if KERAS_MAJOR == 3:  # Keras 2 through tf-keras; in the Keras 2 environment tf.keras is Keras 2
        pytest.importorskip("tf_keras")
        monkeypatch.setenv("TF_USE_LEGACY_KERAS", "1")
    # Keras 2 deserializes an optimizer dict into its legacy class (a string or an object: the new one)
    user_suite.makepyfile(
        test_user=LEGACY_SUITE.replace(
            "OPTIMIZER", '{"class_name": "Adam", "config": {"learning_rate": 0.01}}'
        )
    )
    first = user_suite.runpytest_subprocess("--convergence", "--convergence-results=old.json")
    first.assert_outcomes(passed=1)
    user_suite.makepyfile(
        test_user=LEGACY_SUITE.replace("OPTIMIZER", "tf.keras.optimizers.Adam(learning_rate=0.01)")
    )
    second = user_suite.runpytest_subprocess("--convergence", "--convergence-baseline=old.json")
    second.stdout.fnmatch_lines(
        [
            "note: adam [[]float32[]]: optimizer that ran: "
            "*.optimizers.legacy.adam.Adam (legacy) -> *.optimizers.adam.Adam"
        ]
    )


SPEED_SUITE = textwrap.dedent(
    """
    import pytest
    from pytest_convergence import Case

    CASE = Case.sequential(
        "batches",
        layers=[{"class_name": "Dense", "config": {"units": 1}}], input_shape=(1,),
        x=[[v / 32] for v in range(-32, 32)], y=[float(v < 0) for v in range(-32, 32)],
        loss={"class_name": "BinaryCrossentropy", "config": {"from_logits": True}},
        optimizer={"class_name": "SGD", "config": {"learning_rate": 0.1}},
        epochs=EPOCHS, batch_size=BATCH, seed=0,
    )

    @pytest.mark.convergence(dtypes=["float32"])
    def test_batches(convergence_train):
        convergence_train(CASE)
    """
)


def speed_suite(epochs: int, batch: int) -> str:
    return SPEED_SUITE.replace("EPOCHS", str(epochs)).replace("BATCH", str(batch))


def test_a_speed_only_difference_is_a_speed_warning(user_suite: pytest.Pytester) -> None:
    """``fit`` trains the same history as ``loop`` (bit-identical), several times slower."""
    user_suite.makeini("[pytest]\nconvergence_speed_min_time = 0.01\n")
    # 8 batches an epoch: Keras 2's fit refuses many more get_next() calls in one traced function
    user_suite.makepyfile(test_user=speed_suite(epochs=24, batch=8))
    repeat = "--convergence-repeat=3"
    user_suite.runpytest("--convergence", repeat, "--convergence-results=old.json").assert_outcomes(passed=1)
    second = user_suite.runpytest(
        "--convergence", repeat, "--convergence-engine=fit", "--convergence-baseline=old.json"
    )
    second.assert_outcomes(passed=1)
    assert second.ret == pytest.ExitCode.OK  # a warning by default
    second.stdout.fnmatch_lines(
        [
            "batches*float32*descending -> descending*slower",
            "SLOWER (speed only, a warning): batches [[]float32[]]: speed: *x the CPU time per step (*",
            "verdict: PASS (0 of 1 failed, 1 slower (speed warnings))",
        ]
    )
    strict = user_suite.runpytest(
        "--convergence",
        repeat,
        "--convergence-engine=fit",
        "--convergence-baseline=old.json",
        "--convergence-speed=fail",
    )
    assert strict.ret == pytest.ExitCode.TESTS_FAILED


def test_a_busy_machine_is_no_slowdown(user_suite: pytest.Pytester) -> None:
    """The same suite and version, the new session beside a process burning a core: the speed
    rule (CPU time per step, beyond both sides' spread) reports no failure, even when asked to fail."""
    user_suite.makeini("[pytest]\nconvergence_speed_min_time = 0.2\n")
    user_suite.makepyfile(test_user=speed_suite(epochs=400, batch=4))  # 6,400 steps, about 0.7 s of CPU
    repeat = "--convergence-repeat=3"
    user_suite.runpytest("--convergence", repeat, "--convergence-results=old.json").assert_outcomes(passed=1)
    burner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        loaded = user_suite.runpytest(
            "--convergence", repeat, "--convergence-baseline=old.json", "--convergence-speed=fail"
        )
    finally:
        burner.kill()
        burner.wait()
    loaded.assert_outcomes(passed=1)
    assert loaded.ret == pytest.ExitCode.OK, loaded.stdout.str()
    loaded.stdout.fnmatch_lines(
        ["batches*float32*descending -> descending*-*x*pass", "verdict: PASS (0 of 1 failed)"]
    )
