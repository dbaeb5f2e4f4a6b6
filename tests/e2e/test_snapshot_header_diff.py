"""A snapshot failure says first what differs from the stored header (issue 22): the optimizer's
settings, the engine, the versions, the machine, before the numbers."""

from __future__ import annotations

import textwrap

import pytest

SUITE = textwrap.dedent(
    """
    import pytest
    from pytest_convergence import Case

    seed = Case.sequential(
        "seed-logistic",
        layers=[{"class_name": "Dense", "config": {"units": 1}}], input_shape=(1,),
        x=[[-1.0], [1.0]], y=[1.0, 0.0],
        loss={"class_name": "BinaryCrossentropy", "config": {"from_logits": True}},
        optimizer={"class_name": "RMSprop", "config": {"learning_rate": 2.55}},
        steps=60, seed=0, engine="loop",
    )

    @pytest.mark.convergence(dtypes=["float32"])
    def test_seed(convergence_train, convergence_snapshot):
        assert convergence_train(seed) == convergence_snapshot
    """
)


def report_lines(result: pytest.RunResult) -> list[str]:
    """The snapshot report as pytest prints it, without its ``E`` prefixes."""
    lines = result.stdout.lines
    start = next(i for i, line in enumerate(lines) if "the loss history changed" in line)
    return [line.removeprefix("E").strip() for line in lines[start:] if line.startswith("E ")]


def test_a_learning_rate_change_is_named_first(user_suite: pytest.Pytester) -> None:
    user_suite.makepyfile(test_user=SUITE)
    user_suite.runpytest("--convergence", "--snapshot-update").assert_outcomes(passed=1)

    user_suite.makepyfile(
        test_user=SUITE.replace('"learning_rate": 2.55', '"learning_rate": 1.0').replace(
            'engine="loop"', 'engine="fit"'
        )
    )
    result = user_suite.runpytest("--convergence")
    result.assert_outcomes(failed=1)
    lines = report_lines(result)
    assert "seed-logistic [float32]: the loss history changed (rtol 0.0001" in lines[0]
    assert lines[1] == (
        "what changed since the snapshot: optimizer RMSprop learning_rate 2.55 -> 1; engine loop -> fit"
    )
    # then the numbers
    assert lines[2].startswith(("OUTCOME CHANGED", "event ", "final loss", "the histories part"))


def test_nothing_is_named_when_the_header_is_the_same(user_suite: pytest.Pytester) -> None:
    """A history that moved under the same header: no line of changes (the cause is elsewhere)."""
    user_suite.makepyfile(test_user=SUITE)
    user_suite.runpytest("--convergence", "--snapshot-update").assert_outcomes(passed=1)
    path = user_suite.path / "__snapshots__" / "test_user" / "test_seed[float32].convergence.txt"
    text = path.read_text()
    start = text.index("final loss: ")
    end = text.index("\n", start)
    path.write_text(text[:start] + "final loss: 12345" + text[end:])
    result = user_suite.runpytest("--convergence")
    result.assert_outcomes(failed=1)
    lines = report_lines(result)
    assert not any("what changed since the snapshot" in line for line in lines)
    assert lines[1].startswith("final loss: 12345 -> ")
