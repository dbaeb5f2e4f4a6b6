"""The tolerance rules of a snapshot comparison, on synthetic trajectories: no TensorFlow, no training.

Every trajectory here is built by hand, rendered to the snapshot text and parsed back, so both sides
of a comparison went through text as a stored snapshot and a new run do in real use. Each test
asserts the verdict and the words of the report a reviewer reads.
"""

from __future__ import annotations

import math
import re
from typing import Any

import factories
import numpy as np
import pytest

from pytest_convergence.dtypes import DTYPES
from pytest_convergence.errors import CaseError
from pytest_convergence.run import Run
from pytest_convergence.snapshot.calibrate import calibrate
from pytest_convergence.snapshot.compare import SHOWN_POINTS, Comparison, compare, relative_error
from pytest_convergence.snapshot.format import Trajectory, checkpoint_steps, format_number
from pytest_convergence.tolerance import DEFAULT_RTOL, KEYS, Tolerance, parse_ini_rtol, resolve

FLOAT32 = Tolerance(rtol=1e-4)
KERNEL = {"dense/kernel (1, 1)": ("values", np.array([0.75]))}


def storage(dtype: str) -> np.dtype:
    """numpy has no bfloat16: such values are held in float32."""
    return np.dtype("float32") if dtype == "bfloat16" else np.dtype(dtype)


def snapshot(
    history: Any,
    *,
    outcome: str = "descending",
    events: dict[str, int] | None = None,
    weights: dict[str, tuple[str, Any]] | None = None,
    loss_dtype: str = "float32",
    weight_dtype: str = "float32",
    tolerance: Tolerance = FLOAT32,
) -> Trajectory:
    """A trajectory of a per-step loss ``history``, after a trip through the snapshot text."""
    history = np.asarray(history, np.float64).astype(storage(loss_dtype)).astype(np.float64)
    steps = checkpoint_steps(history.size)
    made = Trajectory(
        header={
            "case": "synthetic",
            "dtype": loss_dtype,
            "loss dtype": loss_dtype,
            "weights dtype": weight_dtype,
            "tolerance": tolerance.to_text(),
        },
        outcome=outcome,
        events=dict(events or {}),
        final_loss=float(history[-1]),
        weights={
            name: (kind, np.asarray(values, np.float64))
            for name, (kind, values) in (KERNEL if weights is None else weights).items()
        },
        steps=steps,
        losses=history[steps - 1],
        loss_dtype=loss_dtype,
        weight_dtype=weight_dtype,
    )
    return Trajectory.parse(made.render())


def make_run(loss: Any, *, target_loss: float | None = None) -> Run:
    """A float32 Run of the shared factory, its history rounded to float32 (NaN: no update)."""
    loss = np.asarray(loss, np.float64).astype(np.float32).astype(np.float64)
    update_size = np.where(np.isfinite(loss), 1e-2, np.nan)
    versions = {"python": "3.11", "platform": "Linux"}
    return factories.make_run(loss, update_size, target_loss=target_loss, versions=versions)


def through_text(run: Run, tolerance: Tolerance) -> Trajectory:
    return Trajectory.parse(Trajectory.from_run(run, tolerance).render())


def falling(steps: int, start: float = 2.0, stop: float = 0.1) -> np.ndarray:
    return np.geomspace(start, stop, steps)


def pct(error: float) -> str:
    """How the report writes a relative error."""
    return f"{error:.2e}" if error < 0.01 else f"{error:.1%}"


def shown_steps(comparison: Comparison) -> list[int]:
    """The steps of the checkpoint rows in the report's details (after the column titles)."""
    return [int(line.split()[0]) for line in comparison.details[1:] if line.split()[0].isdigit()]


def assert_rows_elided(comparison: Comparison, hidden: int) -> None:
    """At most SHOWN_POINTS checkpoint rows are listed, and one line says how many more missed."""
    assert len(shown_steps(comparison)) == SHOWN_POINTS
    assert sum(f"{hidden} more" in line for line in comparison.details) == 1


def assert_passes(comparison: Comparison) -> None:
    assert comparison.ok, comparison.problems
    assert comparison.problems == []


# ------------------------------------------------------------------------------ default rtol
@pytest.mark.parametrize(
    ("dtype", "rtol"),
    [
        ("float16", 1e-2),
        ("bfloat16", 2e-2),
        ("float32", 1e-4),
        ("float64", 1e-6),
        ("mixed_float16", 1e-2),
        ("mixed_bfloat16", 2e-2),
    ],
)
def test_default_rtol_of_each_dtype(dtype: str, rtol: float) -> None:
    tolerance = resolve(dtype)
    assert tolerance == Tolerance(rtol=rtol)
    assert tolerance.exact is False
    # a mixed policy computes in its low precision: it gets that dtype's tolerance
    assert tolerance.rtol == DEFAULT_RTOL[DTYPES[dtype].compute_dtype]
    assert set(DEFAULT_RTOL) == set(DTYPES)


@pytest.mark.parametrize("dtype", list(DEFAULT_RTOL))
@pytest.mark.parametrize("factor", [0.7, 1.3])
def test_a_relative_change_just_inside_the_default_rtol_passes_and_just_outside_fails(
    dtype: str, factor: float
) -> None:
    tolerance = resolve(dtype)
    rtol = tolerance.rtol
    loss_dtype = DTYPES[dtype].compute_dtype
    history = falling(1000)
    old = snapshot(history, loss_dtype=loss_dtype, tolerance=tolerance)
    new = snapshot(history * (1 + factor * rtol), loss_dtype=loss_dtype, tolerance=tolerance)
    errors = relative_error(old.losses, new.losses)
    comparison = compare(old, new, tolerance)
    if factor < 1:
        assert errors.max() <= rtol
        assert_passes(comparison)
        assert comparison.missed_points == 0
        return
    assert errors.min() > rtol
    assert not comparison.ok
    n = old.steps.size
    final_error = float(relative_error(old.final_loss, new.final_loss))
    first_error = float(errors[0])
    assert comparison.problems == [
        f"final loss: {format_number(old.final_loss, loss_dtype)} -> "
        f"{format_number(new.final_loss, loss_dtype)} (relative error {pct(final_error)})",
        f"the histories part at step 1: {format_number(old.losses[0], loss_dtype)} -> "
        f"{format_number(new.losses[0], loss_dtype)} (relative error {pct(first_error)})",
        f"checkpoints outside rtol {rtol:g}: {n} of {n} (100%; {math.floor(0.01 * n)} allowed)",
    ]
    assert comparison.parting_step == 1
    assert comparison.missed_points == n
    lines = comparison.lines(f"seed [{dtype}]")
    assert lines[0] == (
        f"seed [{dtype}]: the loss history changed (rtol {rtol:g} for losses and weights, "
        "event steps ±max(2, 0.02×step), 1% of checkpoints may miss)"
    )
    assert lines[1:4] == [f"  {p}" for p in comparison.problems]
    assert lines[4].split() == ["step", "snapshot", "now", "rel.", "error"]
    assert lines[5].split()[0] == "1"
    assert_rows_elided(comparison, hidden=n - SHOWN_POINTS)


def test_a_float32_change_report_in_words() -> None:
    history = np.full(60, 0.5)
    old = snapshot(history)
    new_history = history.copy()
    new_history[39:] = 0.50025  # steps 40..60
    comparison = compare(old, snapshot(new_history), FLOAT32)
    assert comparison.problems == [
        "final loss: 0.5 -> 0.50025 (relative error 5.00e-04)",
        "the histories part at step 40: 0.5 -> 0.50025 (relative error 5.00e-04)",
        "checkpoints outside rtol 0.0001: 21 of 60 (35%; 0 allowed)",
    ]
    assert comparison.details[0] == "step       snapshot            now  rel. error"
    assert comparison.details[1] == "  40            0.5        0.50025  5.00e-04"
    assert shown_steps(comparison)[0] == 40
    assert set(shown_steps(comparison)) <= set(range(40, 61))
    assert_rows_elided(comparison, hidden=21 - SHOWN_POINTS)


# ------------------------------------------------------------------------------ near zero
@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        (math.nan, math.nan, 0.0),
        (math.nan, 1.0, math.inf),
        (1.0, math.nan, math.inf),
        (0.0, 0.0, 0.0),
        (0.0, 5.0, 1.0),
        (-3.0, 0.0, 1.0),
        (0.0, 1e-300, 1.0),
        (0.0, 1e-40, 1.0),
        (1e-30, 2e-30, 0.5),
        (2e-30, 1e-30, 0.5),
        (-1.0, 1.0, 2.0),
        (4.0, 5.0, 0.2),
        (math.inf, math.inf, 0.0),
        (math.inf, 1.0, math.inf),
        (math.inf, -math.inf, math.inf),
    ],
)
def test_relative_error_values(old: float, new: float, expected: float) -> None:
    assert float(relative_error(old, new)) == pytest.approx(expected)
    assert float(relative_error(new, old)) == pytest.approx(expected)


def test_relative_error_is_elementwise() -> None:
    errors = relative_error(np.array([1.0, 0.0, math.nan, 2.0]), np.array([1.0, 1e-30, math.nan, 1.0]))
    np.testing.assert_array_equal(errors, [0.0, 1.0, 0.0, 0.5])


def test_tiny_losses_are_compared_relative_to_themselves() -> None:
    old = snapshot(np.full(60, 1e-30))
    new = snapshot(np.full(60, 2e-30))
    comparison = compare(old, new, Tolerance(rtol=0.1))
    assert not comparison.ok
    assert comparison.problems == [
        "final loss: 1e-30 -> 2e-30 (relative error 50.0%)",
        "the histories part at step 1: 1e-30 -> 2e-30 (relative error 50.0%)",
        "checkpoints outside rtol 0.1: 60 of 60 (100%; 0 allowed)",
    ]


def test_zero_against_zero_passes() -> None:
    assert_passes(compare(snapshot(np.zeros(60)), snapshot(np.zeros(60)), Tolerance(rtol=0.5)))


@pytest.mark.parametrize("loss_dtype", ["float32", "float64"])
def test_zero_against_a_tiny_number_fails(loss_dtype: str) -> None:
    history = np.zeros(60)
    changed = history.copy()
    changed[-1] = 1e-40
    comparison = compare(
        snapshot(history, loss_dtype=loss_dtype),
        snapshot(changed, loss_dtype=loss_dtype),
        Tolerance(rtol=0.5, miss_fraction=0.1),  # the one missed checkpoint would be allowed
    )
    assert comparison.problems == ["final loss: 0 -> 1e-40 (relative error 100.0%)"]
    assert comparison.missed_points == 1
    assert comparison.parting_step == 60


# ------------------------------------------------------------------------------ NaN
def diverging(steps: int = 60, at: int = 25) -> np.ndarray:
    history = falling(steps)
    history[at - 1 :] = math.nan
    return history


def test_nan_against_nan_passes_both_runs_diverged() -> None:
    tolerance = resolve("float32")
    old = through_text(make_run(diverging()), tolerance)
    new = through_text(make_run(diverging()), tolerance)
    assert old.outcome == new.outcome == "diverged"
    assert old.events == {"first_nonfinite_step": 25}
    assert math.isnan(old.final_loss)
    assert_passes(compare(old, new, tolerance))


def test_nan_against_a_number_fails() -> None:
    tolerance = resolve("float32")
    old = through_text(make_run(diverging()), tolerance)
    new = through_text(make_run(falling(60)), tolerance)
    comparison = compare(old, new, tolerance)
    at_25 = format_number(new.losses[24], "float32")
    assert comparison.problems == [
        "OUTCOME CHANGED: diverged -> descending",
        "event first_nonfinite_step: 25 -> absent",
        "final loss: nan -> 0.1 (relative error inf)",
        f"the histories part at step 25: nan -> {at_25} (relative error inf)",
        "checkpoints outside rtol 0.0001: 36 of 60 (60%; 0 allowed)",
    ]
    assert comparison.details[1].split() == ["25", "nan", at_25, "inf"]


def test_a_single_nan_checkpoint_against_a_number_counts_as_a_miss() -> None:
    history = falling(1000)
    changed = history.copy()
    changed[19] = math.nan
    comparison = compare(snapshot(history), snapshot(changed), FLOAT32)
    assert comparison.ok  # 1 miss of 199 checkpoints is within 1% (1 allowed)
    assert comparison.missed_points == 1
    assert comparison.parting_step == 20


# ------------------------------------------------------------------------------ outcome
def test_a_changed_outcome_fails_and_is_the_first_problem() -> None:
    history = falling(100)
    old = snapshot(history, outcome="stalled", events={"stall_step": 61})
    new = snapshot(history * 1.5, outcome="descending")
    comparison = compare(old, new, FLOAT32)
    assert not comparison.ok
    assert comparison.problems[0] == "OUTCOME CHANGED: stalled -> descending"
    assert comparison.problems[1] == "event stall_step: 61 -> absent"
    assert comparison.problems[2].startswith("final loss: ")
    assert comparison.lines("t")[1] == "  OUTCOME CHANGED: stalled -> descending"


def test_a_changed_outcome_alone_fails() -> None:
    history = falling(100)
    comparison = compare(
        snapshot(history, outcome="plateau"), snapshot(history, outcome="descending"), FLOAT32
    )
    assert comparison.problems == ["OUTCOME CHANGED: plateau -> descending"]


def test_identical_trajectories_pass() -> None:
    history = falling(1000)
    events = {"stall_step": 800, "steps_to_target": 120}
    old = snapshot(history, outcome="stalled", events=events)
    comparison = compare(old, snapshot(history, outcome="stalled", events=events), FLOAT32)
    assert_passes(comparison)
    assert comparison.missed_points == 0
    assert comparison.parting_step is None


# ------------------------------------------------------------------------------ events
@pytest.mark.parametrize(
    ("before", "after", "problem"),
    [
        (500, 500, None),
        (500, 510, None),  # allowed max(2, 0.02 × 510) = 10.2
        (500, 490, None),  # allowed max(2, 0.02 × 500) = 10
        (500, 511, "event stall_step: step 500 -> 511 (moved +11, tolerance ±10.22)"),
        (511, 500, "event stall_step: step 511 -> 500 (moved -11, tolerance ±10.22)"),
        (10, 12, None),  # allowed max(2, 0.24) = 2
        (10, 8, None),
        (10, 13, "event stall_step: step 10 -> 13 (moved +3, tolerance ±2)"),
        (10, 7, "event stall_step: step 10 -> 7 (moved -3, tolerance ±2)"),
        (1, 3, None),
        (1, 4, "event stall_step: step 1 -> 4 (moved +3, tolerance ±2)"),
    ],
)
def test_event_steps_may_move_by_max_of_atol_and_rtol_times_the_step(
    before: int, after: int, problem: str | None
) -> None:
    history = falling(1000)
    old = snapshot(history, outcome="stalled", events={"stall_step": before})
    new = snapshot(history, outcome="stalled", events={"stall_step": after})
    comparison = compare(old, new, FLOAT32)
    assert comparison.problems == ([] if problem is None else [problem])


def test_event_tolerance_follows_the_tolerance_fields() -> None:
    history = falling(1000)
    old = snapshot(history, events={"cycle_start_step": 400, "period": 4})
    new = snapshot(history, events={"cycle_start_step": 430, "period": 5})
    assert compare(old, new, Tolerance(rtol=1e-4, event_rtol=0.1, event_atol=1)).ok  # ±43 and ±1
    strict = compare(old, new, Tolerance(rtol=1e-4, event_rtol=0.0, event_atol=0))
    assert strict.problems == [
        "event cycle_start_step: step 400 -> 430 (moved +30, tolerance ±0)",
        "event period: step 4 -> 5 (moved +1, tolerance ±0)",
    ]


@pytest.mark.parametrize(
    ("before", "after", "problem"),
    [
        ({"stall_step": 61}, {}, "event stall_step: 61 -> absent"),
        ({}, {"stall_step": 61}, "event stall_step: absent -> 61"),
        ({"steps_to_target": -1}, {}, "event steps_to_target: never -> absent"),
        ({"first_zero_step": 3}, {"stall_step": 3}, None),
    ],
)
def test_an_event_on_one_side_only_fails(
    before: dict[str, int], after: dict[str, int], problem: str | None
) -> None:
    history = falling(100)
    comparison = compare(snapshot(history, events=before), snapshot(history, events=after), FLOAT32)
    if problem is None:
        assert comparison.problems == [
            "event first_zero_step: 3 -> absent",
            "event stall_step: absent -> 3",
        ]
    else:
        assert comparison.problems == [problem]


def test_reaching_the_target_against_never_reaching_it() -> None:
    history = falling(100)
    old = snapshot(history, events={"steps_to_target": -1})
    assert compare(old, snapshot(history, events={"steps_to_target": -1}), FLOAT32).ok
    comparison = compare(old, snapshot(history, events={"steps_to_target": 40}), FLOAT32)
    assert comparison.problems == ["event steps_to_target: never -> 40"]


def test_steps_to_target_from_a_run() -> None:
    tolerance = resolve("float32")
    old = through_text(make_run(falling(100), target_loss=0.5), tolerance)
    new = through_text(make_run(falling(100), target_loss=0.01), tolerance)
    assert old.events == {"steps_to_target": 47}
    assert new.events == {"steps_to_target": -1}
    assert compare(old, new, tolerance).problems == ["event steps_to_target: 47 -> never"]


@pytest.mark.parametrize(("reached", "atol"), [(1, 2), (9, 10)])
def test_never_reaching_the_target_against_reaching_it_early_fails(reached: int, atol: int) -> None:
    history = falling(100)
    old = snapshot(history, events={"steps_to_target": reached})
    new = snapshot(history, events={"steps_to_target": -1})
    comparison = compare(old, new, Tolerance(rtol=1e-4, event_atol=atol))
    assert not comparison.ok


# ------------------------------------------------------------------------------ miss_fraction
def with_misses(history: np.ndarray, misses: int, factor: float = 1.01) -> tuple[np.ndarray, np.ndarray]:
    """``history`` with ``misses`` checkpoints in the middle moved by ``factor``; and their steps."""
    steps = checkpoint_steps(history.size)
    chosen = steps[5 : 5 + 3 * misses : 3]
    assert chosen.size == misses and chosen[-1] < history.size
    changed = history.copy()
    changed[chosen - 1] *= factor
    return changed, chosen


@pytest.mark.parametrize(
    ("steps", "miss_fraction"), [(1000, 0.01), (1000, 0.05), (100_000, 0.03), (60, 0.1), (200, 0.02)]
)
def test_the_allowed_share_of_checkpoints_may_miss_and_one_more_fails(
    steps: int, miss_fraction: float
) -> None:
    tolerance = Tolerance(rtol=1e-4, miss_fraction=miss_fraction)
    history = falling(steps)
    n = checkpoint_steps(steps).size
    allowed = math.floor(miss_fraction * n)
    assert allowed >= 1
    old = snapshot(history)

    within, chosen = with_misses(history, allowed)
    comparison = compare(old, snapshot(within), tolerance)
    assert_passes(comparison)
    assert comparison.missed_points == allowed
    assert comparison.parting_step == chosen[0]

    beyond, chosen = with_misses(history, allowed + 1)
    new = snapshot(beyond)
    comparison = compare(old, new, tolerance)
    assert not comparison.ok
    first = int(chosen[0])
    a = format_number(old.losses[first - 1], "float32")
    b = format_number(new.losses[first - 1], "float32")
    assert re.fullmatch(
        rf"the histories part at step {first}: {re.escape(a)} -> {re.escape(b)} "
        r"\(relative error 9\.9\de-03\)",
        comparison.problems[0],
    ), comparison.problems[0]
    share = (allowed + 1) / n
    assert comparison.problems[1] == (
        f"checkpoints outside rtol 0.0001: {allowed + 1} of {n} ({share:.0%}; {allowed} allowed)"
    )
    assert len(comparison.problems) == 2
    assert comparison.parting_step == first
    assert comparison.missed_points == allowed + 1
    assert shown_steps(comparison) == [int(s) for s in chosen]  # all of them: fewer than SHOWN_POINTS


def test_no_checkpoint_may_miss_with_a_zero_miss_fraction() -> None:
    history = falling(1000)
    changed, chosen = with_misses(history, 1)
    comparison = compare(snapshot(history), snapshot(changed), Tolerance(rtol=1e-4, miss_fraction=0.0))
    assert comparison.problems[1] == "checkpoints outside rtol 0.0001: 1 of 199 (1%; 0 allowed)"
    assert comparison.parting_step == chosen[0]


def test_the_final_loss_may_not_miss_even_within_the_share() -> None:
    history = falling(1000)
    changed = history.copy()
    changed[-1] *= 1.01
    comparison = compare(snapshot(history), snapshot(changed), Tolerance(rtol=1e-4, miss_fraction=0.05))
    assert len(comparison.problems) == 1
    assert comparison.problems[0].startswith("final loss: 0.1 -> 0.101 (relative error 9.9")
    assert comparison.missed_points == 1
    assert comparison.parting_step == 1000


def test_many_missed_checkpoints_are_listed_up_to_a_limit() -> None:
    history = falling(1000)
    changed, chosen = with_misses(history, SHOWN_POINTS + 3)
    comparison = compare(snapshot(history), snapshot(changed), FLOAT32)
    assert comparison.missed_points == SHOWN_POINTS + 3
    assert_rows_elided(comparison, hidden=3)
    shown = shown_steps(comparison)
    assert shown[0] == chosen[0]  # where the histories part
    assert set(shown) <= {int(s) for s in chosen}


def test_a_calibrated_rtol_accepts_the_calibration_runs() -> None:
    base_history = falling(1000)
    other_history = base_history.copy()
    other_history[-1] *= 1.01
    base, other = make_run(base_history), make_run(other_history)
    calibration = calibrate(base, [other], current_rtol=1e-4, miss_fraction=0.01)
    tolerance = Tolerance(rtol=calibration.recommended_rtol)
    comparison = compare(through_text(base, tolerance), through_text(other, tolerance), tolerance)
    assert comparison.ok, comparison.problems


# ------------------------------------------------------------------------------ exact
def one_ulp_later(history: np.ndarray, step: int) -> np.ndarray:
    changed = history.astype(np.float32)
    changed[step - 1] = np.nextafter(changed[step - 1], np.float32(np.inf))
    return changed.astype(np.float64)


@pytest.mark.parametrize("tolerance", [Tolerance(rtol=0.5, exact=True), resolve("float32", exact=True)])
def test_exact_mode_fails_on_a_one_ulp_change_and_names_the_step(tolerance: Tolerance) -> None:
    history = falling(1000).astype(np.float32).astype(np.float64)
    old = snapshot(history, tolerance=tolerance)
    new = snapshot(one_ulp_later(history, 30), tolerance=tolerance)
    assert compare(old, new, Tolerance(rtol=1e-6)).ok  # one ulp is far inside any rtol
    comparison = compare(old, new, tolerance)
    assert not comparison.ok
    before = f"30 {format_number(history[29], 'float32')}"
    after = f"30 {format_number(new.losses[29], 'float32')}"
    assert before != after
    line = old.compared_text.splitlines().index(before) + 1
    assert comparison.problems == [
        f"not bit-identical: first difference in compared line {line}",
        "the histories part at step 30",
    ]
    assert comparison.details == [f"- {before}", f"+ {after}"]
    assert comparison.parting_step == 30
    assert comparison.lines("t")[0] == "t: the loss history changed (exact (bit-identical))"


def test_exact_mode_in_float16() -> None:
    tolerance = resolve("float16", exact=True)
    history = falling(100).astype(np.float16).astype(np.float64)
    changed = history.astype(np.float16)
    changed[6] = np.nextafter(changed[6], np.float16(0))
    old = snapshot(history, loss_dtype="float16", tolerance=tolerance)
    new = snapshot(changed.astype(np.float64), loss_dtype="float16", tolerance=tolerance)
    comparison = compare(old, new, tolerance)
    assert comparison.problems[-1] == "the histories part at step 7"
    assert compare(old, new, resolve("float16")).ok


def test_exact_mode_passes_identical_trajectories() -> None:
    tolerance = Tolerance(rtol=0.0, exact=True)
    history = falling(1000)
    events = {"stall_step": 900}
    old = snapshot(history, outcome="stalled", events=events, tolerance=tolerance)
    new = snapshot(history, outcome="stalled", events=events, tolerance=tolerance)
    assert_passes(compare(old, new, tolerance))


def test_exact_mode_names_a_changed_weight_line_without_a_parting_step() -> None:
    tolerance = Tolerance(rtol=1e-4, exact=True)
    history = falling(100)
    old = snapshot(history, tolerance=tolerance)
    new = snapshot(
        history, weights={"dense/kernel (1, 1)": ("values", [np.nextafter(np.float32(0.75), np.float32(1))])}
    )
    comparison = compare(old, new, tolerance)
    assert comparison.problems == ["not bit-identical: first difference in compared line 3"]
    assert comparison.details == [
        "- weight dense/kernel (1, 1) values: 0.75",
        "+ weight dense/kernel (1, 1) values: 0.75000006",
    ]
    assert comparison.parting_step is None


def test_exact_mode_with_a_different_number_of_lines() -> None:
    tolerance = Tolerance(rtol=1e-4, exact=True)
    old = snapshot(falling(100), tolerance=tolerance)
    new = snapshot(falling(100), events={"stall_step": 99}, tolerance=tolerance)
    comparison = compare(old, new, tolerance)
    assert comparison.problems == ["not bit-identical: first difference in compared line 2"]
    assert comparison.details == ["- final loss: 0.1", "+ event stall_step: 99"]


def test_exact_mode_on_trajectories_that_were_not_parsed() -> None:
    tolerance = Tolerance(rtol=1e-4, exact=True)
    history = falling(100)
    old = Trajectory.from_run(make_run(history), tolerance)
    new = Trajectory.from_run(make_run(one_ulp_later(history, 30)), tolerance)
    assert not compare(old, new, tolerance).ok


# ------------------------------------------------------------------------------ step budgets
def test_a_different_step_budget_is_reported_and_common_checkpoints_compared() -> None:
    old = snapshot(1 / np.sqrt(np.arange(1, 1001)))
    new = snapshot(1 / np.sqrt(np.arange(1, 501)))
    common = np.intersect1d(checkpoint_steps(1000), checkpoint_steps(500))
    assert common.size > 60
    comparison = compare(old, new, FLOAT32)
    assert comparison.problems[0].startswith("final loss: 0.031622775 -> 0.04472136 (relative error ")
    assert comparison.problems[1] == "steps: 1000 -> 500; comparing the common checkpoints"
    assert len(comparison.problems) == 2
    assert comparison.missed_points == 0


def test_a_different_step_budget_with_a_parting_history() -> None:
    history = 1 / np.sqrt(np.arange(1, 1001))
    shorter = history[:500].copy()
    shorter[19:] *= 1.001
    comparison = compare(snapshot(history), snapshot(shorter), FLOAT32)
    common = np.intersect1d(checkpoint_steps(1000), checkpoint_steps(500))
    parting = [p for p in comparison.problems if p.startswith("the histories part")]
    assert parting and parting[0].startswith("the histories part at step 20: ")
    missed = int(np.count_nonzero(common >= 20))
    assert f"checkpoints outside rtol 0.0001: {missed} of {common.size} " in comparison.problems[-1]
    assert comparison.problems[1] == "steps: 1000 -> 500; comparing the common checkpoints"


# ------------------------------------------------------------------------------ weights
def test_a_moved_weight_fails_naming_the_tensor_and_index() -> None:
    history = falling(100)
    old = snapshot(history, weights={"dense/kernel (3,)": ("values", [0.75, -0.25, 3.0])})
    new = snapshot(history, weights={"dense/kernel (3,)": ("values", [0.75, -0.2, 3.0])})
    comparison = compare(old, new, FLOAT32)
    assert comparison.problems == [
        "weight dense/kernel (3,)[1]: -0.25 -> -0.2 (relative error 20.0%; 1 of 3 outside rtol)"
    ]


def test_weights_within_rtol_pass() -> None:
    history = falling(100)
    old = snapshot(history, weights={"w (2,)": ("values", [0.75, -0.25])})
    new = snapshot(history, weights={"w (2,)": ("values", [0.75 * (1 + 5e-5), -0.25 * (1 - 5e-5)])})
    assert_passes(compare(old, new, FLOAT32))


def test_a_tiny_weight_near_zero_is_judged_against_the_tensor_scale() -> None:
    history = falling(100)
    old = snapshot(history, weights={"w (3,)": ("values", [100.0, -80.0, 1e-6])})
    new = snapshot(history, weights={"w (3,)": ("values", [100.0, -80.0, 5e-6])})
    assert float(relative_error(1e-6, 5e-6)) > 0.5  # alone, a large relative change
    assert_passes(compare(old, new, FLOAT32))  # but 4e-6 is negligible against weights of 100


def test_the_same_absolute_change_in_a_tensor_of_small_weights_fails() -> None:
    history = falling(100)
    old = snapshot(history, weights={"w (2,)": ("values", [2e-6, 1e-6])})
    new = snapshot(history, weights={"w (2,)": ("values", [2e-6, 5e-6])})
    comparison = compare(old, new, FLOAT32)
    assert comparison.problems == [
        "weight w (2,)[1]: 1e-06 -> 5e-06 (relative error 80.0%; 1 of 2 outside rtol)"
    ]


def test_a_moved_summarised_tensor_names_the_statistic() -> None:
    history = falling(100)
    before = [10.0, 0.5, -2.0, 3.0]
    after = [10.0, 0.5, -2.0, 3.5]
    old = snapshot(history, weights={"big (6, 8)": ("norm mean min max", before)})
    new = snapshot(history, weights={"big (6, 8)": ("norm mean min max", after)})
    comparison = compare(old, new, FLOAT32)
    assert comparison.problems == [
        "weight big (6, 8) max: 3 -> 3.5 (relative error 14.3%; 1 of 4 outside rtol)"
    ]


def test_weights_of_a_run_through_text() -> None:
    history = falling(50)
    tolerance = resolve("float32")
    run = make_run(history)
    moved = make_run(history)
    moved.history.final_weights = {
        "dense/kernel": np.array([[0.8]], np.float32),
        "dense/bias": np.array([-0.25], np.float32),
    }
    comparison = compare(through_text(run, tolerance), through_text(moved, tolerance), tolerance)
    assert comparison.problems == [
        "weight dense/kernel (1, 1)[0]: 0.75 -> 0.8 (relative error 6.3%; 1 of 1 outside rtol)"
    ]


def test_a_weight_on_one_side_only_or_stored_differently_fails() -> None:
    history = falling(100)
    old = snapshot(history, weights={"a (1,)": ("values", [1.0]), "b (40,)": ("values", np.ones(40))})
    new = snapshot(
        history, weights={"c (1,)": ("values", [1.0]), "b (40,)": ("norm mean min max", [1, 1, 1, 1])}
    )
    comparison = compare(old, new, FLOAT32)
    assert comparison.problems == [
        "weight a (1,) only in the snapshot",
        "weight b (40,): stored differently (values -> norm mean min max)",
        "weight c (1,) only now",
    ]


def test_nan_weights_against_nan_pass_and_against_a_number_fail() -> None:
    history = falling(100)
    old = snapshot(history, weights={"w (2,)": ("values", [math.nan, 1.0])})
    assert_passes(compare(old, snapshot(history, weights={"w (2,)": ("values", [math.nan, 1.0])}), FLOAT32))
    comparison = compare(old, snapshot(history, weights={"w (2,)": ("values", [0.5, 1.0])}), FLOAT32)
    assert comparison.problems == ["weight w (2,)[0]: nan -> 0.5 (relative error inf; 1 of 2 outside rtol)"]


def test_the_report_order() -> None:
    history = falling(1000)
    old = snapshot(
        history, outcome="plateau", events={"stall_step": 100}, weights={"w (1,)": ("values", [1.0])}
    )
    new = snapshot(
        history * 1.1, outcome="descending", events={"stall_step": 200}, weights={"w (1,)": ("values", [2.0])}
    )
    problems = compare(old, new, FLOAT32).problems
    assert [p.split(":")[0] for p in problems] == [
        "OUTCOME CHANGED",
        "event stall_step",
        "final loss",
        "the histories part at step 1",
        "checkpoints outside rtol 0.0001",
        "weight w (1,)[0]",
    ]


# ------------------------------------------------------------------------------ resolve
def test_resolve_precedence_default_ini_case_marker_exact() -> None:
    assert resolve("float32").rtol == 1e-4
    assert resolve("float32", ini_rtol={"float32": 1e-3}).rtol == 1e-3
    assert resolve("float32", ini_rtol={"float16": 0.5}).rtol == 1e-4
    assert resolve("float32", ini_rtol={"float32": 1e-3}, case=2e-3).rtol == 2e-3
    assert resolve("float32", ini_rtol={"float32": 1e-3}, case=2e-3, marker=3e-3).rtol == 3e-3
    assert resolve("float32", case=2e-3, marker={"miss_fraction": 0.1}).rtol == 2e-3
    exact = resolve("float32", ini_rtol={"float32": 1e-3}, case=2e-3, marker=3e-3, exact=True)
    assert exact == Tolerance(rtol=3e-3, exact=True)
    assert resolve("float32", marker={"exact": True}).exact is True
    assert resolve("float32", marker={"exact": False}, exact=True).exact is True


def test_resolve_merges_fields_from_each_source() -> None:
    tolerance = resolve(
        "float16",
        ini_rtol={"float16": 0.05},
        case={"miss_fraction": 0.05, "event_atol": 5},
        marker={"event_atol": 7, "event_rtol": 0.1},
    )
    assert tolerance == Tolerance(rtol=0.05, event_rtol=0.1, event_atol=7, miss_fraction=0.05)


def test_resolve_per_dtype_rtol_dicts() -> None:
    case = {"rtol": {"float16": 0.05, "float32": 1e-3}}
    assert resolve("float16", case=case).rtol == 0.05
    assert resolve("float32", case=case).rtol == 1e-3
    assert resolve("float64", case=case).rtol == 1e-6
    assert resolve("float64", ini_rtol={"float64": 1e-9}, case=case).rtol == 1e-9
    marker = {"rtol": {"float32": 5e-3}, "miss_fraction": 0.02}
    assert resolve("float32", case=case, marker=marker) == Tolerance(rtol=5e-3, miss_fraction=0.02)
    assert resolve("float16", case=case, marker=marker) == Tolerance(rtol=0.05, miss_fraction=0.02)


@pytest.mark.parametrize(
    ("kwargs", "field", "message"),
    [
        ({"case": {"rtl": 0.1}}, "snapshot_tolerance", "unknown tolerance key(s) rtl; valid keys are: "),
        (
            {"marker": {"bogus": 1, "alsobad": 2}},
            "@pytest.mark.convergence(tolerance=...)",
            "unknown tolerance key(s) alsobad, bogus",
        ),
        (
            {"case": {"rtol": {"float8": 0.1}}},
            "snapshot_tolerance.rtol",
            "unknown dtype 'float8'; valid dtypes",
        ),
        (
            {"marker": {"rtol": {"fp16": 0.1}}},
            "@pytest.mark.convergence(tolerance=...).rtol",
            "unknown dtype 'fp16'",
        ),
        ({"case": "0.1"}, "snapshot_tolerance", "a tolerance is a number (rtol) or a dict of"),
        ({"case": True}, "snapshot_tolerance", "got bool"),
        ({"case": -0.1}, "tolerance.rtol", "must be a finite number >= 0, got -0.1"),
        ({"case": math.nan}, "tolerance.rtol", "must be a finite number >= 0, got nan"),
        ({"marker": {"rtol": math.inf}}, "tolerance.rtol", "must be a finite number >= 0, got inf"),
        ({"case": {"rtol": "0.1"}}, "tolerance.rtol", "must be a finite number >= 0"),
        ({"case": {"event_rtol": -1}}, "tolerance.event_rtol", "must be a finite number >= 0"),
        ({"case": {"miss_fraction": -0.5}}, "tolerance.miss_fraction", "must be a finite number >= 0"),
        ({"case": {"miss_fraction": 1.0}}, "tolerance.miss_fraction", "must be below 1, got 1.0"),
        ({"marker": {"miss_fraction": 1.5}}, "tolerance.miss_fraction", "must be below 1, got 1.5"),
        ({"case": {"event_atol": 2.5}}, "tolerance.event_atol", "must be a whole number of steps >= 0"),
        ({"case": {"event_atol": -1}}, "tolerance.event_atol", "must be a whole number of steps >= 0"),
        ({"case": {"exact": "yes"}}, "tolerance.exact", "must be true or false, got 'yes'"),
    ],
)
def test_resolve_rejects_bad_tolerances_naming_the_field(
    kwargs: dict[str, Any], field: str, message: str
) -> None:
    with pytest.raises(CaseError) as error:
        resolve("float32", case_name="seed", **kwargs)
    assert error.value.field == field
    assert message in error.value.detail
    assert error.value.case == "seed"
    assert error.value.dtype == "float32"
    assert f"field {field!r}" in str(error.value)


def test_unknown_keys_message_lists_the_valid_keys() -> None:
    with pytest.raises(CaseError) as error:
        resolve("float32", case={"rtl": 0.1})
    assert error.value.detail.endswith("valid keys are: " + ", ".join(KEYS))
    assert KEYS == ("rtol", "event_rtol", "event_atol", "miss_fraction", "exact")


def test_a_bad_ini_rtol_is_refused_when_resolved() -> None:
    with pytest.raises(CaseError) as error:
        resolve("float32", ini_rtol={"float32": -1.0})
    assert error.value.field == "tolerance.rtol"


@pytest.mark.parametrize("value", [-1e-9, math.nan, math.inf, "0.1", None])
def test_tolerance_rejects_a_bad_rtol(value: Any) -> None:
    with pytest.raises(CaseError) as error:
        Tolerance(rtol=value)
    assert error.value.field == "tolerance.rtol"


# ------------------------------------------------------------------------------ ini
def test_parse_ini_rtol_one_number_applies_to_every_dtype() -> None:
    assert parse_ini_rtol("0.05") == dict.fromkeys(DTYPES, 0.05)
    assert parse_ini_rtol("  1e-3 ") == dict.fromkeys(DTYPES, 1e-3)
    assert parse_ini_rtol("") == {}
    assert parse_ini_rtol("   ") == {}


@pytest.mark.parametrize(
    "text", ["float16=0.02 float32=1e-5", "float16=0.02, float32=1e-5", "  float16=0.02\n  float32=1e-5  "]
)
def test_parse_ini_rtol_per_dtype(text: str) -> None:
    rtol = parse_ini_rtol(text)
    assert rtol == {"float16": 0.02, "float32": 1e-5}
    assert resolve("float16", ini_rtol=rtol).rtol == 0.02
    assert resolve("float32", ini_rtol=rtol).rtol == 1e-5
    assert resolve("float64", ini_rtol=rtol).rtol == 1e-6


@pytest.mark.parametrize(
    "text", ["abc", "float16=abc", "float16=", "float16:0.02", "0.1 0.2", "float16=0.02 0.1"]
)
def test_parse_ini_rtol_refuses_bad_text(text: str) -> None:
    with pytest.raises(CaseError) as error:
        parse_ini_rtol(text)
    assert error.value.field == "ini convergence_rtol"
    assert error.value.detail.startswith("cannot read ")
    assert "dtype=number pairs like 'float16=0.02 float32=1e-5'" in error.value.detail


def test_parse_ini_rtol_refuses_an_unknown_dtype() -> None:
    with pytest.raises(CaseError) as error:
        parse_ini_rtol("float8=0.1")
    assert error.value.field == "ini convergence_rtol"


def test_parse_ini_rtol_names_the_unknown_dtype() -> None:
    with pytest.raises(CaseError, match=r"unknown dtype 'float8'; valid dtypes are: float16"):
        parse_ini_rtol("float8=0.1")


# ------------------------------------------------------------------------------ text form
@pytest.mark.parametrize(
    "tolerance",
    [
        Tolerance(rtol=1e-4),
        Tolerance(rtol=0.0),
        Tolerance(rtol=1e-12, event_rtol=0.5, event_atol=0, miss_fraction=0.0),
        Tolerance(rtol=0.1 + 0.2, event_rtol=1 / 3, event_atol=17, miss_fraction=0.999, exact=True),
        resolve("bfloat16", exact=True),
    ],
)
def test_tolerance_text_round_trip(tolerance: Tolerance) -> None:
    text = tolerance.to_text()
    assert "\n" not in text
    assert Tolerance.from_text(text) == tolerance


def test_tolerance_text_and_description() -> None:
    tolerance = Tolerance(rtol=1e-4)
    assert tolerance.to_text() == "rtol=0.0001 event_rtol=0.02 event_atol=2 miss_fraction=0.01 exact=false"
    assert tolerance.describe() == (
        "rtol 0.0001 for losses and weights, event steps ±max(2, 0.02×step), 1% of checkpoints may miss"
    )
    assert Tolerance(rtol=1e-4, exact=True).to_text().endswith("exact=true")
    assert Tolerance(rtol=1e-4, exact=True).describe() == "exact (bit-identical)"
    assert Tolerance.from_text("rtol=0.5") == Tolerance(rtol=0.5)


def test_the_tolerance_a_snapshot_carries_is_the_one_it_was_made_with() -> None:
    tolerance = resolve("float16", case={"miss_fraction": 0.05})
    assert snapshot(falling(60), loss_dtype="float16", tolerance=tolerance).tolerance == tolerance


def test_a_weight_inf_on_one_cpu_and_finite_on_another_is_an_unstable_divergence() -> None:
    """tfkeras-image float16: its loss stays finite, but a batch normalisation variance is 412 on
    one CPU and Inf on another; calibration that saw both compares the history only."""
    loss = falling(200)
    finite = {"bn/moving_variance (3,)": ("values", [412.0, 3.0, math.inf])}
    infinite = {"bn/moving_variance (3,)": ("values", [math.inf, 3.0, math.inf])}
    old = snapshot(loss, outcome="diverged", weights=finite)
    new = snapshot(loss, outcome="diverged", weights=infinite)
    unstable = Tolerance(rtol=1e-4, divergence_unstable=True)
    assert compare(old, new, unstable).problems == []
    assert any("divergence unstable" in d for d in compare(old, new, unstable).details)
    assert compare(old, new, FLOAT32).problems  # without calibration it is a change
