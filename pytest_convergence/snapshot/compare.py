"""Compare a new trajectory with its snapshot under a tolerance, and explain the difference.

The report puts what a reviewer needs first: what the new run's header says differently from the
stored one (the optimizer's settings, the engine, the versions, the machine), then a changed
outcome, then moved event steps, the final loss, the first step where the histories part, the
checkpoints outside the tolerance with old and new values and their relative error, and the
weights that moved.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from ..config_diff import ran_changes, setting_differences
from ..fingerprint import TF32_DTYPES, tf32_difference, tf32_in_summary
from ..tolerance import Tolerance
from .format import Trajectory, format_number, parse_versions

SHOWN_POINTS = 12


def relative_error(old: np.ndarray | float, new: np.ndarray | float) -> np.ndarray:
    """``|a - b| / max(|a|, |b|)``: 0 for equal values (NaN equals NaN), 1 for 0 against nonzero,
    inf for a number against NaN. Relative to the values, so tiny losses are not equal by default."""
    a = np.asarray(old, np.float64)
    b = np.asarray(new, np.float64)
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        scale = np.maximum(np.abs(a), np.abs(b))
        error = np.abs(a - b) / scale
    same = (a == b) | (np.isnan(a) & np.isnan(b))
    error = np.where(same, 0.0, error)
    return np.where(np.isnan(error), np.inf, error)


@dataclass
class Comparison:
    """The verdict of one snapshot comparison and the lines that explain it."""

    tolerance: Tolerance
    problems: list[str] = field(default_factory=list)
    details: list[str] = field(default_factory=list)
    parting_step: int | None = None
    missed_points: int = 0

    changes: list[str] = field(default_factory=list)
    """What the new run's header says differently from the stored one (:func:`header_changes`):
    the first thing a reviewer reads, before the numbers."""

    @property
    def ok(self) -> bool:
        return not self.problems

    def lines(self, title: str) -> list[str]:
        head = f"{title}: the loss history changed ({self.tolerance.describe()})"
        changes = [f"  {CHANGES_PREFIX} {'; '.join(self.changes)}"] if self.changes else []
        return [head, *changes, *[f"  {p}" for p in self.problems], *[f"    {d}" for d in self.details]]


CHANGES_PREFIX = "what changed since the snapshot:"
"""Starts the report's line naming the header's differences (never a problem in itself: a changed
learning rate is why the history moved, not a second failure)."""
NOT_COMPARED_KEYS = ("test", "case", "calibrated", "optimizer", "optimizer ran", "loss ran", "versions")
"""Header keys :func:`header_changes` reads its own way (the optimizer and loss by what ran, the
versions one package at a time) or not at all: the test and case are the snapshot's identity, and
the calibrated tolerance is carried over from the stored header."""
MACHINE_KEYS = ("versions", "keras", "platform", "machine")
NOT_RECORDED = "(not recorded)"
"""A header line one side lacks (a snapshot written before pytest-convergence recorded it)."""
WRITTEN_WHEN_SET = {"dtype mismatch": "(none)"}
"""Header lines written only when there is something to say: their absence is this value."""


def header_changes(old: dict[str, str], new: dict[str, str]) -> list[str]:
    """Every difference between a stored header and a new run's, one phrase each, most telling
    first: the optimizer and loss that ran (class, then config: ``optimizer RMSprop learning_rate
    2.55 -> 1``), the engine, budget, seed and dtypes, the tolerance, then the versions one
    package at a time, Keras, the platform and the machine (one changed part of its description
    at a time). The fingerprint is named only when nothing else says why it changed. A float32
    run whose TF32 state differs from the snapshot's (a GPU's against a CPU's) names that before
    all of them: it moves every float32 matmul by more than float32's default rtol."""
    changes: list[str] = []
    if new.get("dtype", old.get("dtype")) in TF32_DTYPES:
        tf32 = tf32_difference(
            tf32_in_summary(old.get("machine", "")), tf32_in_summary(new.get("machine", ""))
        )
        changes += [tf32] if tf32 else []
    if old.get("optimizer ran") and new.get("optimizer ran"):
        changes += ran_changes("optimizer", old["optimizer ran"], new["optimizer ran"])
    elif old.get("optimizer", "") != new.get("optimizer", ""):
        before, after = old.get("optimizer") or NOT_RECORDED, new.get("optimizer") or NOT_RECORDED
        changes.append(f"optimizer {before} -> {after}")
    changes += ran_changes("loss", old.get("loss ran", ""), new.get("loss ran", ""))
    settings = setting_differences(
        _compared_settings(old),
        _compared_settings(new),
        one_sided=True,
        absent=NOT_RECORDED,
    )
    machine = {k: settings.pop(k) for k in MACHINE_KEYS if k in settings}
    fingerprint = settings.pop("fingerprint", None)
    changes += [f"{name} {before} -> {after}" for name, (before, after) in settings.items()]
    versions = setting_differences(
        parse_versions(old.get("versions", "")),
        parse_versions(new.get("versions", "")),
        one_sided=True,
        absent=NOT_RECORDED,
    )
    changes += [f"{name} {before} -> {after}" for name, (before, after) in versions.items()]
    if "keras" in machine and "keras" not in versions:
        changes.append("keras {} -> {}".format(*machine["keras"]))
    if "platform" in machine:
        changes.append("platform {} -> {}".format(*machine["platform"]))
    if "machine" in machine:
        changes += _machine_changes(*machine["machine"])
    if fingerprint is not None and not (versions or machine):
        changes.append("fingerprint {} -> {}".format(*fingerprint))
    return changes


def _compared_settings(header: dict[str, str]) -> dict[str, str]:
    """The header lines compared as plain settings, in the header's order, with the value a line
    written only when set has when it is absent."""
    settings = {key: value for key, value in header.items() if key not in NOT_COMPARED_KEYS}
    return {**settings, **{key: value for key, value in WRITTEN_WHEN_SET.items() if key not in settings}}


def _machine_changes(before: str, after: str) -> list[str]:
    """The parts of the machine's description (``; ``-separated: CPU, ISA, CPUs, threads,
    oneDNN) that differ, or the whole description where the parts do not line up."""
    old_parts, new_parts = before.split("; "), after.split("; ")
    if len(old_parts) != len(new_parts) or NOT_RECORDED in (before, after):
        return [f"machine {before} -> {after}"]
    return [f"machine {a} -> {b}" for a, b in zip(old_parts, new_parts) if a != b]


def compare(old: Trajectory, new: Trajectory, tolerance: Tolerance) -> Comparison:
    """Compare ``new`` against the stored ``old``; see the module docstring for the order."""
    result = Comparison(tolerance, changes=header_changes(old.header, new.header))
    if tolerance.exact:
        _compare_exact(old, new, result)
        return result
    unstable = old.outcome != new.outcome and {old.outcome, new.outcome} <= set(tolerance.outcomes)
    borderline = old.outcome != new.outcome and (new.outcome in old.outcomes or old.outcome in new.outcomes)
    if unstable:
        result.details.append(
            f"outcome {old.outcome} -> {new.outcome}: unstable, calibration saw "
            f"{' and '.join(tolerance.outcomes)} {tolerance.measured_across}"
        )
    elif borderline:
        side = "the snapshot's" if new.outcome in old.outcomes else "this"
        result.details.append(
            f"outcome {old.outcome} -> {new.outcome}: borderline, {side} run was within another "
            "machine's move of the rule that decides between them (docs/machines.md)"
        )
        unstable = True
    elif old.outcome != new.outcome:
        result.problems.append(f"OUTCOME CHANGED: {old.outcome} -> {new.outcome}")
    diverging = tolerance.divergence_unstable and _finiteness_differs(old, new)
    if diverging:
        result.details.append(
            "divergence unstable: calibration saw this run end in NaN under one one-ulp perturbation "
            "and finite under another; compared before the first non-finite loss only"
        )
    else:
        _compare_events(old, new, tolerance, result, outcome_flipped=unstable)
    final_error = 0.0 if diverging else float(relative_error(old.final_loss, new.final_loss))
    if final_error > tolerance.rtol:
        result.problems.append(
            f"final loss: {_num(old.final_loss, old.loss_dtype)} -> {_num(new.final_loss, new.loss_dtype)} "
            f"(relative error {_pct(final_error)})"
        )
    _compare_checkpoints(old, new, tolerance, result)
    if not diverging:
        _compare_weights(old, new, tolerance, result)
    return result


def _finiteness_differs(old: Trajectory, new: Trajectory) -> bool:
    """Whether one side went non-finite where the other did not (at another step, or never): in
    its losses, or in its weights while the loss stayed finite (tfkeras-image float16's batch
    normalisation variance is 412 on one CPU and Inf on another, the loss finite on both)."""
    return bool(
        np.isfinite(old.final_loss) != np.isfinite(new.final_loss)
        or old.events.get("first_nonfinite_step") != new.events.get("first_nonfinite_step")
        or nonfinite_weights(old) != nonfinite_weights(new)
    )


def nonfinite_weights(trajectory: Trajectory) -> set[tuple[str, int]]:
    """Where the weights hold a NaN or an Inf: each weight's name and the value's index."""
    return {
        (name, int(index))
        for name, (_, values) in trajectory.weights.items()
        for index in np.flatnonzero(~np.isfinite(values))
    }


def _compare_exact(old: Trajectory, new: Trajectory, result: Comparison) -> None:
    old_text = old.compared_text or old.body_text()
    new_text = new.compared_text or new.body_text()
    if old_text == new_text:
        return
    old_lines = old_text.splitlines()
    new_lines = new_text.splitlines()
    for number, (a, b) in enumerate(zip(old_lines, new_lines)):
        if a != b:
            result.problems.append(f"not bit-identical: first difference in compared line {number + 1}")
            result.details += [f"- {a}", f"+ {b}"]
            break
    else:
        result.problems.append(
            f"not bit-identical: {len(old_lines)} compared lines before, {len(new_lines)} now"
        )
    exact_points = relative_error(*_aligned(old, new)[1:]) > 0
    steps = _aligned(old, new)[0]
    if exact_points.any():
        result.parting_step = int(steps[np.argmax(exact_points)])
        result.problems.append(f"the histories part at step {result.parting_step}")


def allowed_misses(miss_fraction: float, points: int) -> int:
    """How many of ``points`` checkpoints may miss (0.29 of 100 is 29, whatever float rounding says)."""
    return math.floor(miss_fraction * points + 1e-9)


def required_rtol(
    old: Trajectory, new: Trajectory, miss_fraction: float, divergence_unstable: bool = False
) -> float:
    """The smallest rtol under which ``new``'s losses would match ``old``'s: final loss and the
    checkpoints (all but the allowed share). Used by calibration, so what it recommends is what
    compare accepts."""
    diverging = divergence_unstable and _finiteness_differs(old, new)
    needed = 0.0 if diverging else float(relative_error(old.final_loss, new.final_loss))
    _, before, after = _aligned(old, new, divergence_unstable)
    if before.size:
        errors = np.sort(relative_error(before, after))
        allowed = allowed_misses(miss_fraction, errors.size)
        needed = max(needed, float(errors[errors.size - 1 - allowed]))
    return needed


def required_weight_rtol(old: Trajectory, new: Trajectory, divergence_unstable: bool = False) -> float:
    """The smallest rtol under which ``new``'s final weights would match ``old``'s. Apart from the
    losses': a big tensor's mean near 0 moves by 100% under one ulp while the loss moves by 1e-6."""
    needed = 0.0
    if divergence_unstable and _finiteness_differs(old, new):
        return needed  # compare does not judge them
    floor = _weight_floor(old, new)
    for name, (_, values) in old.weights.items():
        if name in new.weights and new.weights[name][1].shape == values.shape:
            errors = weight_errors(values, new.weights[name][1], floor)
            needed = max(needed, float(np.max(errors, initial=0.0)))
    return needed


def _compare_events(
    old: Trajectory,
    new: Trajectory,
    tolerance: Tolerance,
    result: Comparison,
    *,
    outcome_flipped: bool = False,
) -> None:
    if tolerance.unstable:
        # an outcome that one ulp flips has chaotic events too (seed-mse float16 reached zero at step
        # 549 or at 87,395): they are shown in the snapshot, not compared
        return
    for key in sorted(set(old.events) | set(new.events)):
        before, after = old.events.get(key), new.events.get(key)
        if outcome_flipped and (before is None or after is None):
            continue  # an unstable outcome's own events (a cycle's start) come and go with it
        if before is None or after is None or (before == -1) != (after == -1):
            # absent on one side, or never reached (-1) against a step: never within tolerance
            result.problems.append(f"event {key}: {_event(before)} -> {_event(after)}")
            continue
        allowed = max(tolerance.event_atol, tolerance.event_rtol * max(abs(before), abs(after)))
        if abs(after - before) > allowed:
            result.problems.append(
                f"event {key}: step {_event(before)} -> {_event(after)} (moved {after - before:+d}, "
                f"tolerance ±{allowed:g})"
            )


def _aligned(
    old: Trajectory, new: Trajectory, before_divergence: bool = False
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The checkpoints both sides have; with ``before_divergence``, only those before the first
    non-finite loss of either side (a chaotic divergence: what follows it is not comparable)."""
    common, old_index, new_index = np.intersect1d(old.steps, new.steps, return_indices=True)
    before, after = old.losses[old_index], new.losses[new_index]
    if before_divergence:
        finite = np.isfinite(before) & np.isfinite(after)
        keep = np.cumprod(finite).astype(bool)
        return common[keep], before[keep], after[keep]
    return common, before, after


def _compare_checkpoints(old: Trajectory, new: Trajectory, tolerance: Tolerance, result: Comparison) -> None:
    if old.total_steps != new.total_steps:
        result.problems.append(
            f"steps: {old.total_steps} -> {new.total_steps}; comparing the common checkpoints"
        )
    steps, before, after = _aligned(old, new, tolerance.divergence_unstable)
    if not steps.size:
        if tolerance.divergence_unstable:
            return  # diverged before the first checkpoint: nothing comparable
        result.problems.append("no checkpoint in common")
        return
    errors = relative_error(before, after)
    missed = errors > tolerance.rtol
    result.missed_points = int(missed.sum())
    if not missed.any():
        return
    result.parting_step = int(steps[np.argmax(missed)])
    allowed = allowed_misses(tolerance.miss_fraction, steps.size)
    first = int(np.argmax(missed))
    line = (
        f"the histories part at step {result.parting_step}: "
        f"{_num(before[first], old.loss_dtype)} -> {_num(after[first], new.loss_dtype)} "
        f"(relative error {_pct(float(errors[first]))})"
    )
    if result.missed_points <= allowed:
        return  # within the share of checkpoints allowed to miss
    result.problems.append(line)
    result.problems.append(
        f"checkpoints outside rtol {tolerance.rtol:g}: {result.missed_points} of {steps.size} "
        f"({result.missed_points / steps.size:.0%}; {allowed} allowed)"
    )
    width = max(len(str(int(steps[-1]))), 4)
    result.details.append(f"{'step':>{width}}  {'snapshot':>13}  {'now':>13}  rel. error")
    shown = np.flatnonzero(missed)
    if shown.size > SHOWN_POINTS:  # where they part, and how it ends
        shown = np.concatenate([shown[: SHOWN_POINTS - 4], [-1], shown[-4:]])
    for index in shown:
        if index < 0:
            result.details.append(f"{'...':>{width}}  ({result.missed_points - SHOWN_POINTS} more)")
            continue
        result.details.append(
            f"{int(steps[index]):>{width}}  {_num(before[index], old.loss_dtype):>13}  "
            f"{_num(after[index], new.loss_dtype):>13}  {_pct(float(errors[index]))}"
        )


WEIGHT_FLOOR = 1e-3
"""Weights smaller than this share of the model's largest weight are judged against that share:
a bias of 1e-5 beside kernels of 10 moving to 4e-5 is not a change worth a review."""


def _weight_floor(old: Trajectory, new: Trajectory) -> float:
    return weight_floor(
        np.concatenate([v for _, v in [*old.weights.values(), *new.weights.values()]] or [np.zeros(0)])
    )


def weight_floor(values: np.ndarray) -> float:
    """:data:`WEIGHT_FLOOR` times the largest finite weight of both sides."""
    return WEIGHT_FLOOR * float(np.max(np.abs(values[np.isfinite(values)]), initial=0.0))


def weight_errors(before: np.ndarray, after: np.ndarray, floor: float) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        scale = np.maximum(np.maximum(np.abs(before), np.abs(after)), floor)
        errors = np.where(relative_error(before, after) == 0, 0.0, np.abs(after - before) / scale)
    return np.where(np.isnan(errors), np.inf, errors)


def _compare_weights(old: Trajectory, new: Trajectory, tolerance: Tolerance, result: Comparison) -> None:
    floor = _weight_floor(old, new)
    for name in sorted(set(old.weights) | set(new.weights)):
        if name not in old.weights or name not in new.weights:
            where = "now" if name in new.weights else "in the snapshot"
            result.problems.append(f"weight {name} only {where}")
            continue
        kind_old, before = old.weights[name]
        kind_new, after = new.weights[name]
        if kind_old != kind_new or before.shape != after.shape:
            result.problems.append(f"weight {name}: stored differently ({kind_old} -> {kind_new})")
            continue
        errors = weight_errors(before, after, floor)
        worst = int(np.argmax(errors))
        if errors[worst] > tolerance.weights_rtol:
            count = int((errors > tolerance.weights_rtol).sum())
            label = f" {kind_old.split()[worst]}" if kind_old != "values" else f"[{worst}]"
            result.problems.append(
                f"weight {name}{label}: "
                f"{_num(before[worst], old.weight_dtype)} -> {_num(after[worst], new.weight_dtype)} "
                f"(relative error {_pct(float(errors[worst]))}; {count} of {errors.size} outside rtol)"
            )


def _event(value: int | None) -> str:
    if value is None:
        return "absent"
    return "never" if value == -1 else str(value)


def _num(value: float, dtype: str) -> str:
    return format_number(float(value), dtype)


def _pct(error: float) -> str:
    if math.isinf(error):
        return "inf"
    return f"{error:.2e}" if error < 0.01 else f"{error:.1%}"
