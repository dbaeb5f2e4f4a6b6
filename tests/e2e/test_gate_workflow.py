"""The upgrade gate and the speed benchmarks end to end, as CI and users run them."""

from __future__ import annotations

import json
import textwrap

import pytest

SUITE = textwrap.dedent(
    """
    import pytest
    from pytest_convergence import Case

    def seed(name, learning_rate):
        return Case.sequential(
            name,
            layers=[{"class_name": "Dense", "config": {"units": 1}}], input_shape=(1,),
            x=[[-1.0], [1.0]], y=[1.0, 0.0],
            loss={"class_name": "BinaryCrossentropy", "config": {"from_logits": True}},
            optimizer={"class_name": "RMSprop", "config": {"learning_rate": learning_rate}},
            steps=300, seed=0, target_loss=1e-3,
        )

    STEADY = seed("steady", 0.001)
    TUNED = seed("tuned", LEARNING_RATE)

    @pytest.mark.convergence(dtypes=["float32"])
    @pytest.mark.parametrize("case", [STEADY, TUNED], ids=lambda c: c.name)
    def test_cases(case, convergence_train):
        convergence_train(case)
    """
)


def suite(learning_rate: float) -> str:
    return SUITE.replace("LEARNING_RATE", repr(learning_rate))


def test_an_unchanged_suite_passes_the_gate_and_a_changed_learning_rate_fails_it_naming_the_case(
    user_suite: pytest.Pytester,
) -> None:
    user_suite.makepyfile(test_user=suite(2.55))
    first = user_suite.runpytest("--convergence", "--convergence-results=old.json")
    first.assert_outcomes(passed=2)
    stored = json.loads((user_suite.path / "old.json").read_text())
    assert stored["schema"] == 1 and len(stored["runs"]) == 2
    assert {run["case"] for run in stored["runs"]} == {"steady", "tuned"}
    assert stored["versions"]["tensorflow"]

    # the same suite again: the gate passes
    again = user_suite.runpytest("--convergence", "--convergence-baseline=old.json")
    again.assert_outcomes(passed=2)
    assert again.ret == pytest.ExitCode.OK
    again.stdout.fnmatch_lines(["verdict: PASS (0 of 2 failed)"])

    # one case's learning rate 5% up: every test passes, the gate fails the session
    user_suite.makepyfile(test_user=suite(2.55 * 1.05))
    second = user_suite.runpytest(
        "--convergence", "--convergence-baseline=old.json", "--convergence-results=new.json"
    )
    second.assert_outcomes(passed=2)  # every test passes; the gate fails the session
    assert second.ret == pytest.ExitCode.TESTS_FAILED
    second.stdout.fnmatch_lines(
        [
            "*= convergence gate =*",
            "convergence gate: tensorflow *, keras * -> tensorflow *, keras *",
            "case*dtype*outcome old -> new*final loss old -> new*parts at*speed*verdict",
            "steady*float32*descending -> descending*pass",
            "tuned*float32*FAIL",
            "FAIL: tuned [[]float32[]]: history outside rtol 0.0001 from step 2 (*",
            "verdict: FAIL (1 of 2 failed)",
        ]
    )

    # the same comparison from the command line, with a markdown summary
    from pytest_convergence.cli import main

    code = main(
        [
            "compare",
            str(user_suite.path / "old.json"),
            str(user_suite.path / "new.json"),
            "--markdown",
            str(user_suite.path / "gate.md"),
        ]
    )
    assert code == 1
    summary = (user_suite.path / "gate.md").read_text()
    assert "❌ FAIL" in summary and "| tuned | float32 |" in summary


def test_a_broken_baseline_is_a_clear_usage_error(user_suite: pytest.Pytester) -> None:
    user_suite.makepyfile(test_user=suite(2.55))
    (user_suite.path / "old.json").write_text('{"schema": 1, "runs": [')
    result = user_suite.runpytest("--convergence", "--convergence-baseline=old.json")
    result.stderr.fnmatch_lines(  # before any test trains (tests/e2e/test_early_checks.py)
        ["ERROR: --convergence-baseline: *old.json: not valid JSON at line 1*truncated or not a results*"]
    )
    assert result.ret == pytest.ExitCode.USAGE_ERROR


def test_benchmark_autosave_then_compare(user_suite: pytest.Pytester) -> None:
    user_suite.makepyfile(
        test_speed=textwrap.dedent(
            """
            import pytest
            from pytest_convergence import Case

            seed = Case.sequential(
                "seed", layers=[{"class_name": "Dense", "config": {"units": 1}}], input_shape=(1,),
                x=[[-1.0], [1.0]], y=[1.0, 0.0], loss="mse", optimizer="sgd", steps=500)

            @pytest.mark.convergence(dtypes=["float32"])
            def test_speed(convergence_benchmark):
                assert convergence_benchmark(seed, rounds=2).steps == 500
            """
        )
    )
    saved = user_suite.runpytest("--convergence", "--benchmark-autosave")
    saved.assert_outcomes(passed=1)
    files = list((user_suite.path / ".benchmarks").rglob("*.json"))
    assert len(files) == 1
    stored = json.loads(files[0].read_text())
    info = stored["benchmarks"][0]["extra_info"]
    assert info["case"] == "seed" and info["engine"] == "loop" and info["steps"] == 500
    assert info["steps_per_second"] > 0 and info["tensorflow"]
    assert stored["machine_info"]["frameworks"]["keras"]

    compared = user_suite.runpytest(
        "--convergence", "--benchmark-compare", "--benchmark-compare-fail=mean:1000%"
    )
    compared.assert_outcomes(passed=1)
    output = compared.stdout.str() + compared.stderr.str()  # pytest-benchmark writes this to stderr
    assert "Comparing against benchmarks from" in output and "0001_" in output
