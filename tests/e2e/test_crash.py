"""A crash costs one run: a native abort inside a run (``os.abort()`` in the model's builder, as
TensorFlow's bfloat16 path aborts under a oneDNN ISA cap) fails that run only, under pytest-xdist
(``-n 1``) and under ``--convergence-isolate``; a session without either dies there, and its
results file still holds the runs that finished and names the ones missing.

Each session that aborts is a real ``pytest`` process (``runpytest_subprocess``): the abort must kill
a process of its own, not this one.
"""

from __future__ import annotations

import json
import signal
import textwrap
from pathlib import Path
from typing import Any

import pytest

SUITE = textwrap.dedent(
    """
    import os

    import pytest
    from pytest_convergence import Case


    def build(dtype):
        import keras

        if dtype == os.environ.get("ABORT_DTYPE"):
            os.write(2, b"tensorflow/core/kernels/fake_op.cc:42] Check failed: no kernel for this dtype\\n")
            os.abort()
        if os.environ.get("NATIVE_LINE"):
            os.write(2, b"a line printed by native code during the run\\n")
        return keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)])


    def seed():
        data = dict(x=[[-1.0], [1.0]], y=[1.0, 0.0])
        return Case("seed", model=build, **data, loss="mse", optimizer="sgd", steps=20)


    @pytest.mark.convergence(dtypes=["float32", "float64", "float16"])
    def test_seed(convergence_train):
        convergence_train(seed())
    """
)
TESTS = [f"test_user.py::test_seed[{dtype}]" for dtype in ("float32", "float64", "float16")]


@pytest.fixture
def suite(user_suite: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    pytest.importorskip("xdist")
    user_suite.makepyfile(test_user=SUITE)
    monkeypatch.setenv("ABORT_DTYPE", "float64")
    return user_suite


def results(directory: Path, name: str = "results.json") -> dict[str, Any]:
    return dict(json.loads((directory / name).read_text()))


def assert_the_abort_cost_one_run(result: pytest.RunResult, directory: Path) -> None:
    """The aborted run failed with its case, dtype, signal and TensorFlow's last line; the other
    two passed, with their summary rows, and the results file holds them and names the crash."""
    result.assert_outcomes(passed=2, failed=1)
    result.stdout.fnmatch_lines(
        [
            "*_ test_seed[[]float64[]] _*",
            "seed [[]float64[]] crashed: the process training it (engine loop, 20 steps) was killed by "
            "SIGABRT (Fatal Python error: Aborted)",
            "  the test test_user.py::test_seed[[]float64[]] ran in pytest-xdist worker gw0; only this "
            "test is lost*",
            "  the last 1 line(s) it printed to stderr:",
            "    | tensorflow/core/kernels/fake_op.cc:42] Check failed: no kernel for this dtype",
            "  where Python was (faulthandler, innermost first):",
            '    File "*test_user.py", line * in build',
        ]
    )
    result.stdout.fnmatch_lines(
        [
            "*= convergence summary =*",
            "case*dtype*engine*outcome*test",
            "seed*float32*loop*passed",
            "seed*float64*loop*error*-*crashed",
            "seed*float16*loop*passed",
        ]
    )
    result.stdout.fnmatch_lines(["FAILED test_user.py::test_seed[[]float64[]] - seed [[]float64[]] crashed*"])
    stored = results(directory)
    assert sorted((run["case"], run["dtype"]) for run in stored["runs"]) == [
        ("seed", "float16"),
        ("seed", "float32"),
    ]
    session = stored["session"]
    assert session["finished"] is True and session["missing"] == []
    assert session["planned"] == TESTS
    assert session["crashed"] == [
        {
            "test": "test_user.py::test_seed[float64]",
            "case": "seed",
            "dtype": "float64",
            "engine": "loop",
            "signal": "SIGABRT",
            "detail": "Fatal Python error: Aborted",
        }
    ]


def test_under_xdist_an_abort_fails_its_run_only(suite: pytest.Pytester) -> None:
    result = suite.runpytest_subprocess("--convergence", "-n", "1", "--convergence-results=results.json")
    assert_the_abort_cost_one_run(result, suite.path)
    result.stdout.fnmatch_lines(["replacing crashed worker gw0"])


def test_isolate_runs_a_session_without_n_in_one_worker_and_an_abort_fails_its_run_only(
    suite: pytest.Pytester,
) -> None:
    suite.makeini("[pytest]\nconvergence_isolate = true\n")  # the ini key; the option is the same switch
    result = suite.runpytest_subprocess("--convergence", "--convergence-results=results.json")
    assert_the_abort_cost_one_run(result, suite.path)
    result.stdout.fnmatch_lines(["created: 1/1 worker"])


def test_a_session_that_dies_leaves_the_runs_that_finished_and_names_the_missing(
    suite: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("ABORT_DTYPE")
    # nothing aborts in the old session: it runs in this process (the new one dies in its own)
    whole = suite.runpytest("--convergence", "--convergence-results=old.json")
    whole.assert_outcomes(passed=3)
    assert results(suite.path, "old.json")["session"] == {
        "finished": True,
        "ended": "",
        "planned": TESTS,
        "missing": [],
        "crashed": [],
    }

    monkeypatch.setenv("ABORT_DTYPE", "float64")
    died = suite.runpytest_subprocess("--convergence", "--convergence-results=new.json")
    assert died.ret == -signal.SIGABRT, died.stdout.str()
    stored = results(suite.path, "new.json")
    assert [(run["case"], run["dtype"]) for run in stored["runs"]] == [("seed", "float32")]
    assert stored["session"]["finished"] is False
    assert stored["session"]["missing"] == TESTS[1:]
    assert not list(suite.path.glob(".new.json.*"))  # the atomic write left no temporary file

    from pytest_convergence.cli import main

    code = main(["compare", str(suite.path / "old.json"), str(suite.path / "new.json")])
    said = capsys.readouterr().out
    assert code == 1, said
    assert (
        "FAIL: seed [float64]: not run: the new session ended before "
        "test_user.py::test_seed[float64] finished" in said
    )
    assert (
        "warning: the new results: not a whole session (written while the session ran; it then died, or "
        "still runs): 2 of 3 planned tests have no result: test_user.py::test_seed[float64], "
        "test_user.py::test_seed[float16]"
    ) in said


def test_a_runs_native_output_still_reaches_pytests_capture_in_a_worker(
    suite: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    """During a run a worker sends fd 2 to its crash log; afterwards the log is copied back, so a
    failing test's captured stderr still shows what native code printed."""
    monkeypatch.delenv("ABORT_DTYPE")
    monkeypatch.setenv("NATIVE_LINE", "1")
    suite.makepyfile(
        test_fails=textwrap.dedent(
            """
            import pytest
            from test_user import seed

            @pytest.mark.convergence(dtypes=["float32"])
            def test_fails(convergence_train):
                convergence_train(seed())
                assert False, "failed after training"
            """
        )
    )
    result = suite.runpytest_subprocess("--convergence", "-n", "1", "test_fails.py")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        ["*- Captured stderr call -*", "a line printed by native code during the run"]
    )


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (
            ("-p", "no:xdist"),
            "ERROR: --convergence-isolate runs the session in a pytest-xdist worker, so that a crash costs "
            "one run, but pytest-xdist is not installed (or was disabled with -p no:xdist)",
        ),
        (
            ("--pdb",),
            "ERROR: --convergence-isolate runs the tests in a pytest-xdist worker, and --pdb cannot work "
            "there (a worker has no terminal for the debugger)",
        ),
        (
            ("-s",),
            "ERROR: --convergence-isolate runs the tests in a pytest-xdist worker, and -s cannot work there "
            "(a worker's output does not reach this terminal)",
        ),
    ],
    ids=["no-xdist", "pdb", "no-capture"],
)
def test_isolate_refuses_what_cannot_work_in_a_worker_with_the_fix(
    user_suite: pytest.Pytester, arguments: tuple[str, ...], message: str
) -> None:
    pytest.importorskip("xdist")
    user_suite.makepyfile(test_user=SUITE)
    result = user_suite.runpytest("--convergence", "--convergence-isolate", *arguments)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([message, "  fix: *"])


def test_isolate_is_off_under_n_0_and_without_convergence(user_suite: pytest.Pytester) -> None:
    """``-n 0`` turns workers off (to debug with --pdb); without --convergence nothing trains."""
    pytest.importorskip("xdist")
    user_suite.makepyfile(test_plain="def test_plain():\n    pass\n")
    for arguments in (("--convergence", "-n", "0"), ()):
        result = user_suite.runpytest("--convergence-isolate", *arguments)
        result.assert_outcomes(passed=1)
        assert not any("worker" in line for line in result.outlines), result.outlines
