"""The plugin end to end, as a user runs it: pytester sessions over a user's test file."""

from __future__ import annotations

import sys
import textwrap

import pytest
from factories import HEAVY_MODULES_CONFTEST, KERAS_MAJOR, keras3_dynamics

USER_TESTS = textwrap.dedent(
    """
    import pytest
    from pytest_convergence import Case

    seed = Case.sequential(
        "seed-logistic",
        layers=[{"class_name": "Dense", "config": {"units": 1}}], input_shape=(1,),
        x=[[-1.0], [1.0]], y=[1.0, 0.0],
        loss={"class_name": "BinaryCrossentropy", "config": {"from_logits": True}},
        optimizer={"class_name": "RMSprop", "config": {"learning_rate": 2.55}},
        steps=1000, seed=0, target_loss=1e-3,
    )

    @pytest.mark.convergence(dtypes=["float16", "float32", "float64"])
    def test_seed(convergence_train, convergence_dtype):
        run = convergence_train(seed)
        assert run.dtype == convergence_dtype
        run.expect(converged=True, final_loss_below=1e-3)

    def test_plain():
        assert True
    """
)


def test_without_the_flag_convergence_tests_are_skipped_and_tensorflow_is_not_imported(
    user_suite: pytest.Pytester,
) -> None:
    user_suite.makepyfile(test_user=USER_TESTS)
    user_suite.makeconftest(HEAVY_MODULES_CONFTEST)
    result = user_suite.runpytest_subprocess("-rs", "-s")
    result.assert_outcomes(passed=1, skipped=3)
    result.stdout.fnmatch_lines(["*HEAVY-MODULES: none"])
    result.stdout.fnmatch_lines(["SKIPPED [[]3[]] test_user.py:*: *run them with `pytest --convergence`*"])
    collected = user_suite.runpytest_subprocess("--co", "-q", "-s")
    collected.stdout.fnmatch_lines(
        [
            "test_user.py::test_seed[[]float16[]]",
            "test_user.py::test_seed[[]float64[]]",
            "*HEAVY-MODULES: none",
        ]
    )


def test_with_the_flag_each_dtype_trains_and_the_summary_shows_outcomes(user_suite: pytest.Pytester) -> None:
    user_suite.makepyfile(test_user=USER_TESTS)
    result = user_suite.runpytest("--convergence", "-v")
    result.assert_outcomes(passed=4)
    result.stdout.fnmatch_lines(
        [
            "*test_user.py::test_seed[[]float16[]] PASSED*",
            "*test_user.py::test_seed[[]float32[]] PASSED*",
            "*test_user.py::test_seed[[]float64[]] PASSED*",
            "*= convergence summary =*",
            "case*dtype*engine*outcome*final loss*steps*steps/s*target*test",
            # Keras 2 computes the float16 loss in float16 and its RMSprop multiplies by rsqrt
            # where Keras 3 divides by sqrt: there float16 stalls and float32 plateaus
            f"seed-logistic*float16*loop*{'oscillating' if KERAS_MAJOR == 3 else 'stalled'}*1,000*met*passed",
            f"seed-logistic*float32*loop*{'descending' if KERAS_MAJOR == 3 else 'plateau'}*1,000*met*passed",
            "seed-logistic*float64*loop*descending*1,000*met*passed",
        ]
    )
    # without --convergence-explain, the summary is not followed by the runs' stories
    assert not any("convergence explanations" in line for line in result.outlines)


@keras3_dynamics
def test_a_failing_expectation_explains_the_run(user_suite: pytest.Pytester) -> None:
    user_suite.makepyfile(
        test_user=textwrap.dedent(
            """
            import pytest
            from pytest_convergence import Case

            hidden = Case.sequential(
                "seed-hidden",
                layers=[{"class_name": "Dense", "config": {"units": 6, "activation": "relu"}},
                        {"class_name": "Dense", "config": {"units": 1}}],
                input_shape=(1,), x=[[-1.0], [1.0]], y=[1.0, 0.0],
                loss={"class_name": "BinaryCrossentropy", "config": {"from_logits": True}},
                optimizer={"class_name": "RMSprop", "config": {"learning_rate": 1.29}},
                steps=200,
            )

            @pytest.mark.convergence(dtypes=["float16"])
            def test_hidden(convergence_train):
                convergence_train(hidden).expect(outcome="descending")
            """
        )
    )
    result = user_suite.runpytest("--convergence")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            "*seed-hidden [[]float16, loop engine, 200 steps[]]: the run did not meet its expectation",
            "*- expected outcome descending, got stalled",
            "*diagnosis: float16: stalled from step 2 at loss *: the gradients of every weight are exactly 0"
            " in float16*computed in float32*underflowed*",
            "seed-hidden*float16*loop*stalled*200*failed",
        ]
    )


def test_dtypes_option_narrows_a_run_and_engine_option_overrides(user_suite: pytest.Pytester) -> None:
    user_suite.makepyfile(
        test_user=USER_TESTS.replace("steps=1000", "steps=50").replace(
            "run.expect(converged=True, final_loss_below=1e-3)", "assert run.engine == 'xla'"
        )
    )
    result = user_suite.runpytest(
        "--convergence", "--convergence-dtypes=float32", "--convergence-engine=xla", "-v"
    )
    result.assert_outcomes(passed=2, deselected=2)
    result.stdout.fnmatch_lines(["*test_seed[[]float32[]] PASSED*", "seed-logistic*float32*xla*"])


@pytest.mark.parametrize(
    ("marker", "message"),
    [
        (
            'dtypes=["float17"]',
            "*unknown dtype 'float17'; valid dtypes are: float16, bfloat16, float32, float64,"
            " mixed_float16, mixed_bfloat16*",
        ),
        (
            'dtype=["float16"]',
            "*unknown keyword(s) dtype in @pytest.mark.convergence; valid keywords are: dtypes, engine*",
        ),
        ('engine="turbo"', "*unknown engine 'turbo'; valid engines are: loop, xla, fit*"),
    ],
)
def test_bad_markers_fail_collection_with_the_valid_choices(
    user_suite: pytest.Pytester, marker: str, message: str
) -> None:
    user_suite.makepyfile(
        test_user=f"""
import pytest

@pytest.mark.convergence({marker})
def test_x(convergence_dtype):
    pass

def test_other():
    pass
"""
    )
    result = user_suite.runpytest("--convergence")
    result.stdout.fnmatch_lines([message])
    assert result.ret != 0


def test_unknown_dtype_on_the_command_line_is_a_usage_error(user_suite: pytest.Pytester) -> None:
    user_suite.makepyfile(test_user=USER_TESTS)
    result = user_suite.runpytest("--convergence-dtypes=float8")
    result.stderr.fnmatch_lines(["*unknown dtype 'float8'; valid dtypes are:*"])
    assert result.ret == pytest.ExitCode.USAGE_ERROR


def test_the_ini_option_switches_convergence_on(user_suite: pytest.Pytester) -> None:
    pytester = user_suite
    pytester.makeini("[pytest]\nconvergence = true\nconvergence_dtypes = float32\n")
    pytester.makepyfile(
        test_user=USER_TESTS.replace(
            '@pytest.mark.convergence(dtypes=["float16", "float32", "float64"])', "@pytest.mark.convergence()"
        )
    )
    result = pytester.runpytest("-v")
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(["*test_seed[[]float32[]] PASSED*"])


def test_a_case_error_fails_the_test_without_a_tensorflow_traceback(user_suite: pytest.Pytester) -> None:
    user_suite.makepyfile(
        test_user="""
import pytest
from pytest_convergence import Case

bad = Case.sequential("bad-loss", layers=[{"class_name": "Dense", "config": {"units": 1}}], input_shape=(1,),
                      x=[[1.0]], y=[1.0], loss="mean_squared_errr", steps=5)

@pytest.mark.convergence(dtypes=["float32"])
def test_bad(convergence_train):
    convergence_train(bad)
"""
    )
    result = user_suite.runpytest("--convergence")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        ["*case 'bad-loss', dtype float32, field 'loss': Keras does not know this loss*"]
    )
    assert "tensorflow/python" not in result.stdout.str()


def test_the_plugin_module_itself_imports_neither_numpy_nor_tensorflow() -> None:
    import subprocess

    code = (
        "import sys, pytest_convergence.plugin.hooks; "
        "print(sorted(m for m in ('numpy', 'tensorflow') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_without_tensorflow_a_convergence_run_says_how_to_install_it(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\n")
    pytester.makeconftest("import sys\nsys.modules['tensorflow'] = None  # as if it were not installed\n")
    pytester.makepyfile(
        test_user=USER_TESTS.replace('dtypes=["float16", "float32", "float64"]', 'dtypes=["float32"]')
    )
    result = pytester.runpytest_subprocess("--convergence")
    result.assert_outcomes(failed=1, passed=1)
    result.stdout.fnmatch_lines(["*pip install 'pytest-convergence[[]tensorflow[]]'*"])
    assert "During handling" not in result.stdout.str()
