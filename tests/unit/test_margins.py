"""Outcomes with margins: a decision near its threshold is borderline, reported with the outcome
across it, and accepted either way by an expectation (docs/machines.md, "the margin rule")."""

from __future__ import annotations

import numpy as np
import pytest
from factories import make_history

from pytest_convergence.case import Expectation
from pytest_convergence.diagnosis.expectations import unmet
from pytest_convergence.diagnosis.margins import RELATIVE_BAND, STEPS_BAND
from pytest_convergence.diagnosis.rules import PLATEAU_RELATIVE_CHANGE, diagnose
from pytest_convergence.outcome import Outcome


def tail_change(change: float, steps: int = 200) -> np.ndarray:
    """A loss that falls fast, then changes by exactly ``change`` (relative) over the last tenth."""
    head = np.linspace(2.0, 1.0, steps - steps // 10)
    tail = np.linspace(1.0, 1.0 + change, steps // 10)
    return np.r_[head, tail]


@pytest.mark.parametrize(
    ("factor", "outcome", "alternative"),
    [
        (0.99, Outcome.PLATEAU, Outcome.DESCENDING),
        (1.01, Outcome.DESCENDING, Outcome.PLATEAU),
        (1 - RELATIVE_BAND / 2, Outcome.PLATEAU, Outcome.DESCENDING),
    ],
)
def test_a_change_near_the_plateau_rule_is_borderline(
    factor: float, outcome: Outcome, alternative: Outcome
) -> None:
    found = diagnose(make_history(tail_change(-PLATEAU_RELATIVE_CHANGE * factor)))
    assert found.outcome == outcome
    assert found.borderline is not None and found.borderline.rule == "plateau"
    assert found.outcomes == (outcome, alternative)
    assert found.label.startswith(f"{outcome.value} (borderline: {alternative.value} at -0.")
    assert "vs the -0.1% plateau rule)" in found.label
    assert found.describe("float32").startswith(f"float32: {found.label} from step")
    assert found.evidence["margins"][0]["borderline"] is True


@pytest.mark.parametrize("factor", [0.5, 2.0])
def test_a_change_far_from_the_rule_is_one_word(factor: float) -> None:
    found = diagnose(make_history(tail_change(-PLATEAU_RELATIVE_CHANGE * factor)))
    assert found.borderline is None
    assert found.outcomes == (found.outcome,)
    assert found.label == found.outcome.value
    assert found.evidence["margins"][0]["borderline"] is False


def test_an_expectation_accepts_either_side_of_a_borderline_decision() -> None:
    history = make_history(tail_change(-PLATEAU_RELATIVE_CHANGE * 0.99))
    for outcome in ("plateau", "descending"):
        assert unmet(history, Expectation(outcome=outcome)) == []
    assert unmet(history, Expectation(outcome="stalled")) == [
        "expected outcome stalled, got plateau (borderline: descending at -0.099% vs the -0.1% plateau rule)"
    ]
    clear = make_history(tail_change(-PLATEAU_RELATIVE_CHANGE * 0.5))
    assert unmet(clear, Expectation(outcome="descending")) == ["expected outcome descending, got plateau"]


def stall(steps: int, still: int) -> tuple[np.ndarray, np.ndarray]:
    """A loss falling while every weight moves, then ``still`` steps where none does."""
    moving = steps - still
    loss = np.r_[np.linspace(1.0, 0.5, moving), np.full(still, 0.5)]
    update = np.r_[np.full(moving, 1e-2), np.zeros(still)]
    return loss, update


def test_a_stall_just_long_enough_is_borderline_with_what_the_rules_after_it_say() -> None:
    steps = 1000  # a stall needs 100 unchanged steps; the band is 2% of the run, 20 steps
    found = diagnose(make_history(*stall(steps, 105)))
    assert found.outcome == Outcome.STALLED
    assert found.borderline is not None and found.borderline.rule == "stall"
    assert found.borderline.alternative == Outcome.PLATEAU
    assert "no weight changed for the last 105 steps, a stall needs 100" in found.label
    assert diagnose(make_history(*stall(steps, 100 + int(STEPS_BAND * steps) + 5))).borderline is None


def test_a_stall_just_too_short_is_a_near_miss_of_the_earlier_rule() -> None:
    found = diagnose(make_history(*stall(1000, 95)))
    assert found.outcome != Outcome.STALLED
    near = [m for m in found.margins if m.borderline and m.rule == "stall"]
    assert near and near[0].alternative == Outcome.STALLED
    assert Outcome.STALLED in found.outcomes


def test_a_zero_reached_at_the_last_steps_is_borderline() -> None:
    late = diagnose(make_history(np.r_[np.linspace(1.0, 0.1, 497), np.zeros(3)]))
    assert late.outcome == Outcome.REACHED_ZERO
    assert late.outcomes == (Outcome.REACHED_ZERO, Outcome.DESCENDING)
    assert "the loss is exactly 0 for only the last 3 steps" in late.label
    early = diagnose(make_history(np.r_[np.linspace(1.0, 0.1, 300), np.zeros(200)]))
    assert early.outcome == Outcome.REACHED_ZERO and early.borderline is None


def test_a_cycle_just_long_enough_is_borderline() -> None:
    period, steps = 2, 1000
    needed = 64 + period  # max(9 * 2, 64 + 2)
    cycle = np.tile([0.5, 0.6], steps)[: needed + 3]
    found = diagnose(make_history(np.r_[np.linspace(2.0, 1.0, steps - cycle.size), cycle]))
    assert found.outcome == Outcome.OSCILLATING
    assert found.borderline is not None and found.borderline.rule == "cycle"
    assert found.borderline.alternative is not None and found.borderline.alternative != Outcome.OSCILLATING


# ------------------------------------------------------------------------- snapshots and gates
def test_a_borderline_snapshot_says_so_and_accepts_the_other_outcome() -> None:
    from factories import make_run

    from pytest_convergence.snapshot.compare import compare
    from pytest_convergence.snapshot.format import Trajectory
    from pytest_convergence.tolerance import Tolerance

    tolerance = Tolerance(rtol=1e-2)
    near = Trajectory.from_run(make_run(tail_change(-PLATEAU_RELATIVE_CHANGE * 0.99)), tolerance)
    assert "outcome: plateau (borderline: descending)" in near.render()
    stored = Trajectory.parse(near.render())
    assert stored.outcome == "plateau" and stored.borderline == ("descending",)
    other_machine = Trajectory.parse(
        Trajectory.from_run(make_run(tail_change(-PLATEAU_RELATIVE_CHANGE * 1.3)), tolerance).render()
    )
    assert other_machine.outcome == "descending" and other_machine.borderline == ()
    result = compare(stored, other_machine, tolerance)
    assert not any("OUTCOME CHANGED" in p for p in result.problems)
    assert any("outcome plateau -> descending: borderline" in d for d in result.details)
    # a clear outcome is held to its word: the same change against a clear plateau is a change
    clear = Trajectory.parse(
        Trajectory.from_run(make_run(tail_change(-PLATEAU_RELATIVE_CHANGE * 0.5)), tolerance).render()
    )
    assert "OUTCOME CHANGED: plateau -> descending" in compare(clear, other_machine, tolerance).problems


def test_half_precision_runs_have_a_wider_band_for_the_loss_s_relative_change() -> None:
    """Other kernels move a float16 run's last-tenth change by a large share of the 0.1% rule
    (two-moons mixed_float16: -0.036% here, -0.080% capped to AVX2): a plateau at -0.036% is
    borderline in float16, and clear in float32, whose changes moved by thousandths of the rule."""
    loss = tail_change(-3.6e-4)
    half = diagnose(make_history(loss, variable_dtype="float16"))
    single = diagnose(make_history(loss, variable_dtype="float32"))
    assert half.outcome == single.outcome == Outcome.PLATEAU
    assert half.outcomes == (Outcome.PLATEAU, Outcome.DESCENDING)
    assert single.outcomes == (Outcome.PLATEAU,)


def test_a_run_whose_weights_move_at_every_step_is_not_near_a_stall() -> None:
    """100 unchanged steps make a stall in a run of 100,000; 2% of the run (2,000 steps) would make
    every such run "near" one: short of the rule, the count must reach half of it first."""
    steps = 5000  # a stall needs 100 unchanged steps, 2% of the run is 100 steps
    moving = diagnose(make_history(np.linspace(1.0, 0.5, steps)))
    assert not any(m.rule == "stall" and m.borderline for m in moving.margins)
    assert any(m.rule == "stall" and m.borderline for m in diagnose(make_history(*stall(steps, 60))).margins)
