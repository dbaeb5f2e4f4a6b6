"""What trained is what the label says: a model that does not train in its dtype fails, or is recorded.

The user's report: a builder that ignores its dtype (a float32 model when asked for float16)
trained float32 while the summary and the snapshot header said ``weights dtype: float16``. Each
test runs a user's suite or spec file through pytester, on Keras 3 and Keras 2 alike (the builders
use ``tf.keras``, which is the Keras the plugin trains with in both environments).
"""

from __future__ import annotations

import json
import textwrap

import pytest
from factories import seed_spec

from pytest_convergence import Case
from pytest_convergence.errors import CaseError

BUILDERS = textwrap.dedent(
    """
    import pytest
    from pytest_convergence import Case

    def ignores_its_dtype(dtype):
        import tensorflow as tf
        keras = tf.keras
        return keras.Sequential([keras.Input((1,)), keras.layers.Dense(1, dtype="float32")])

    def float32_head(dtype):
        # the dtype policy is set while the builder runs: only the head says otherwise
        import tensorflow as tf
        keras = tf.keras
        inputs = keras.Input((1,))
        hidden = keras.layers.Dense(4, activation="tanh", name="body")(inputs)
        return keras.Model(inputs, keras.layers.Dense(1, dtype="float32", name="head")(hidden))

    def float32_softmax(dtype):
        # Keras's mixed-precision guide: a float32 output activation, which holds no weights
        import tensorflow as tf
        keras = tf.keras
        inputs = keras.Input((1,))
        logits = keras.layers.Dense(1, name="logits")(inputs)
        return keras.Model(inputs, keras.layers.Activation("linear", dtype="float32")(logits))

    def case(name, builder, steps=STEPS, **changes):
        return Case(
            name, model=builder, x=[[-1.0], [1.0]], y=[1.0, 0.0],
            loss={"class_name": "BinaryCrossentropy", "config": {"from_logits": True}},
            optimizer={"class_name": "RMSprop", "config": {"learning_rate": 0.01}},
            steps=steps, seed=0, **changes,
        )
    """
)
LONG = 2_000_000
"""A step budget that takes minutes to train: a test that fails in seconds did not train it."""


def suite(body: str, steps: int = 30) -> str:
    return BUILDERS.replace("STEPS", str(steps)) + textwrap.dedent(body)


def test_a_builder_that_ignores_its_dtype_fails_naming_the_layer_before_training(
    user_suite: pytest.Pytester,
) -> None:
    user_suite.makepyfile(
        test_user=suite(
            f"""
            @pytest.mark.convergence(dtypes=["float16", "mixed_float16"])
            def test_it(convergence_train):
                convergence_train(case("liar", ignores_its_dtype, steps={LONG}))
            """
        )
    )
    result = user_suite.runpytest("--convergence")
    result.assert_outcomes(failed=2)
    result.stdout.fnmatch_lines(
        [
            "case 'liar', dtype float16, field 'model': layer 'dense' has float32 variables (dense/kernel) "
            "and float32 computation, but float16 means float16 variables and float16 computation "
            "(1 of 1 layers with weights differ): the model builder did not build it under the dtype "
            "policy it was called with*",
            "  fix: build every layer under the policy the builder is called with*set "
            "allow_dtype_mismatch=True on the Case (allow_dtype_mismatch = true in a spec file)*",
            "case 'liar', dtype mixed_float16, field 'model': layer 'dense' has float32 variables "
            "(dense/kernel) and float32 computation, but mixed_float16 means float32 variables and "
            "float16 computation*",
        ]
    )
    result.stdout.fnmatch_lines(["liar*float16*loop*error*", "liar*mixed_float16*loop*error*"])
    assert result.duration < 60, "2,000,000 steps take minutes: it failed before training"


def test_one_layer_with_its_own_dtype_is_named_and_a_float32_softmax_is_not_a_mismatch(
    user_suite: pytest.Pytester,
) -> None:
    user_suite.makepyfile(
        test_user=suite(
            """
            @pytest.mark.convergence(dtypes=["mixed_float16"])
            def test_head(convergence_train):
                convergence_train(case("head", float32_head))

            @pytest.mark.convergence(dtypes=["mixed_float16", "float16"])
            def test_softmax(convergence_train, convergence_dtype):
                run = convergence_train(case("softmax", float32_softmax))
                assert run.dtype_mismatch == "" and run.trained_dtype == convergence_dtype
                wanted = "float32" if convergence_dtype == "mixed_float16" else "float16"
                assert run.variable_dtype == wanted
            """
        )
    )
    result = user_suite.runpytest("--convergence")
    result.assert_outcomes(passed=2, failed=1)
    result.stdout.fnmatch_lines(
        [
            "case 'head', dtype mixed_float16, field 'model': layer 'head' has float32 variables "
            "(head/kernel) and float32 computation, but mixed_float16 means float32 variables and "
            "float16 computation (1 of 2 layers with weights differ)*"
        ]
    )


def test_an_allowed_mismatch_is_recorded_in_the_run_summary_snapshot_and_results(
    user_suite: pytest.Pytester,
) -> None:
    user_suite.makepyfile(
        test_user=suite(
            """
            import numpy as np

            @pytest.mark.convergence(dtypes=["float16"])
            def test_it(convergence_train, convergence_snapshot):
                run = convergence_train(case("liar", ignores_its_dtype, allow_dtype_mismatch=True))
                # what trained is float32, and the run says so
                assert (run.variable_dtype, run.compute_dtype, run.trained_dtype) == ("float32",) * 3
                assert run.dtype_mismatch.startswith("1 of 1 layers with weights ('dense') trained with "
                    "float32 variables and float32 computation, where float16 means float16 variables")
                allowed = case("honest", ignores_its_dtype, allow_dtype_mismatch=True)
                honest = convergence_train(allowed, "float32")
                assert honest.dtype_mismatch == ""
                assert np.array_equal(run.loss, honest.loss)  # bit for bit: it was a float32 training
                assert run == convergence_snapshot
            """
        )
    )
    result = user_suite.runpytest("--convergence", "--snapshot-update", "--convergence-results=res.json")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["liar*float16 (trained float32)*loop*passed"])
    snapshot = (
        user_suite.path / "__snapshots__" / "test_user" / "test_it[float16].convergence.txt"
    ).read_text()
    header = snapshot.split("# compared")[0].splitlines()
    assert "weights dtype: float32" in header
    assert (
        "dtype mismatch: 1 of 1 layers with weights ('dense') trained with float32 variables and float32 "
        "computation, where float16 means float16 variables and float16 computation"
    ) in header
    runs = {run["case"]: run for run in json.loads((user_suite.path / "res.json").read_text())["runs"]}
    assert runs["liar"]["dtype"] == "float16" and runs["liar"]["variable_dtype"] == "float32"
    assert runs["liar"]["dtype_mismatch"].startswith("1 of 1 layers with weights ('dense')")
    assert runs["honest"]["dtype_mismatch"] == ""


SPEC_HEADER = 'name = "pinned"\ndtypes = ["float16"]\nsteps = 20\nseed = 0\n'


def test_a_spec_file_layer_with_its_own_dtype_fails_unless_the_spec_allows_it(
    user_suite: pytest.Pytester,
) -> None:
    spec = seed_spec(SPEC_HEADER).replace(
        "config = { units = 1 }", 'config = { units = 1, dtype = "float32" }'
    )
    assert 'dtype = "float32"' in spec
    user_suite.makefile(".convergence.toml", refused=spec)
    user_suite.makefile(
        ".convergence.toml", allowed="allow_dtype_mismatch = true\n" + spec.replace("pinned", "allowed")
    )
    result = user_suite.runpytest("--convergence", "--snapshot-update")  # a spec item snapshots its run
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(
        [
            "*case 'pinned', dtype float16, field 'model': layer 'dense' has float32 variables*",
            "*allowed*float16 (trained float32)*passed*",
        ]
    )


def test_allow_dtype_mismatch_takes_true_or_false() -> None:
    with pytest.raises(
        CaseError, match="field 'allow_dtype_mismatch': allow_dtype_mismatch must be true or false, got 'yes'"
    ):
        Case(
            "c", model=lambda dtype: None, x=[[1.0]], y=[1.0], loss="mse", steps=1, allow_dtype_mismatch="yes"
        )  # type: ignore[arg-type]
