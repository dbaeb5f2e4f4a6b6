"""Every fact a diagnosis states, re-derived from the run's raw history the plainest way.

The diagnosis finds its facts with cleverer code (a prefix function for cycles, per-weight
reductions); this module checks them with the obvious one (slices compared element by element),
written apart from it, so a bug in one is caught by the other. It checks the evidence (each step,
value, period and weight the diagnosis recorded) and the words (every step number in the
explanation is one the evidence proves; every weight named with a step is that weight's).
The catalogue runs it on every run (``./dev demo`` turns its warning into a failure).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

import numpy as np

from ..numerics import spacing
from .rules import Diagnosis, diagnose

if TYPE_CHECKING:
    from ..history import History


class DiagnosisFactWarning(UserWarning):
    """A diagnosis stated something its own run's history does not show (a bug to report)."""


def check_facts(history: History, diagnosis: Diagnosis | None = None, *, dtype: str = "") -> list[str]:
    """The facts that do not hold, in words; empty when every stated fact does.

    ``diagnosis`` is the history's (diagnosed here when not given); ``dtype`` is the dtype the run
    was asked to train in (``mixed_float16``...), which the words may name too.
    """
    if diagnosis is None:
        diagnosis = diagnose(history)
    evidence = diagnosis.evidence
    loss = np.asarray(history.loss, np.float64)
    problems: list[str] = []
    steps_proved: set[int] = set()

    def fact(ok: bool, text: str) -> None:
        if not ok:
            problems.append(text)

    def step_key(key: str) -> int | None:
        value = evidence.get(key)
        if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
            steps_proved.add(int(value))
            fact(1 <= int(value) <= loss.size, f"{key} {value} is outside the run's {loss.size} steps")
            return int(value)
        return None

    _check_nonfinite(loss, evidence, step_key, fact, steps_proved)
    _check_zero(history, loss, evidence, step_key, fact)
    _check_stall(history, evidence, step_key, fact)
    _check_cycle(loss, evidence, step_key, fact)
    _check_flat(history, loss, evidence, step_key, fact)
    _check_window(history, loss, evidence, step_key, fact, steps_proved)
    _check_weights(history, evidence, fact, steps_proved)
    _check_words(history, dtype, diagnosis, evidence, fact, steps_proved)
    return problems


# ------------------------------------------------------------------------------ evidence
def _check_nonfinite(
    loss: np.ndarray, evidence: dict[str, Any], step_key: Any, fact: Any, proved: set[int]
) -> None:
    first = step_key("first_nonfinite_step")
    if first is None:
        return
    proved.add(first - 1)  # "after <loss> at step <first - 1>"
    fact(not np.isfinite(loss[first - 1]), f"the loss at step {first} is finite")
    fact(bool(np.all(np.isfinite(loss[: first - 1]))), f"the loss is not finite before step {first}")
    if first > 1:
        fact(
            evidence.get("last_finite_loss") == loss[first - 2],
            "last_finite_loss is not the step before's loss",
        )


def _check_zero(
    history: History, loss: np.ndarray, evidence: dict[str, Any], step_key: Any, fact: Any
) -> None:
    first = step_key("first_zero_step")
    if first is not None:
        fact(loss[first - 1] == 0.0, f"the loss at step {first} is not 0")
        fact(not np.any(loss[: first - 1] == 0.0), f"the loss is 0 before step {first}")
    since = step_key("zero_since_step")
    if since is None:
        return
    fact(bool(np.all(loss[since - 1 :] == 0.0)), f"the loss is not 0 at every step from {since}")
    fact(since == 1 or loss[since - 2] != 0.0, f"the loss is 0 already at step {since - 1}")
    if since > 1:
        fact(
            evidence.get("last_nonzero_loss") == loss[since - 2], "last_nonzero_loss is not the step before's"
        )
    changed = np.asarray(history.weights_changed, bool)
    last = step_key("last_weight_change_step")
    if last is not None:
        fact(
            bool(changed[last - 1]) and not changed[last:].any(), f"step {last} is not the last weight change"
        )
    elif "last_weight_change_step" in evidence:
        fact(not changed.any(), "last_weight_change_step is None although weights changed")
    moved = evidence.get("steps_moved_after_zero")
    if moved is not None and last is not None:
        fact(moved == last - since + 1, "steps_moved_after_zero does not count the steps")
    if evidence.get("moved_without_gradient") and last is not None:
        zeros = np.asarray(history.gradient_zero, bool)
        fact(bool(zeros[since - 1 : last].all()), "a gradient was not 0 while the weights moved after zero")
    if "final_gradients_zero" in evidence:
        zero = all(not np.any(np.asarray(g, np.float64)) for g in history.final_gradients.values())
        fact(evidence["final_gradients_zero"] == zero, "final_gradients_zero is wrong")


def _check_stall(history: History, evidence: dict[str, Any], step_key: Any, fact: Any) -> None:
    stall = step_key("stall_step")
    if stall is None:
        return
    changed = np.asarray(history.weights_changed, bool)
    fact(not changed[stall - 1 :].any(), f"a weight changed at or after the stall step {stall}")
    fact(stall == 1 or bool(changed[stall - 2]), f"no weight changed at step {stall - 1} either")
    fact(
        evidence.get("unchanged_steps") == changed.size - stall + 1,
        "unchanged_steps does not count the steps",
    )
    name = evidence.get("weight")
    if name is not None:
        weights = np.asarray(history.final_weights[name])
        fact(
            float(evidence["weight_value"]) in weights.astype(np.float64),
            f"{name} holds no {evidence['weight_value']}",
        )
        gap = float(spacing(np.asarray([evidence["weight_value"]]), history.variable_dtype)[0])
        fact(evidence.get("spacing") == gap, f"the spacing of {evidence['weight_value']} is {gap}")


def _check_cycle(loss: np.ndarray, evidence: dict[str, Any], step_key: Any, fact: Any) -> None:
    start = step_key("cycle_start_step")
    period = evidence.get("period")
    if start is None or period is None:
        return
    begin = start - 1
    fact(_repeats(loss[begin:], period), f"the loss does not repeat every {period} steps from step {start}")
    fact(
        begin == 0 or loss[begin - 1] != loss[begin - 1 + period],
        f"the cycle of the loss already runs at step {start - 1}",
    )
    smaller = [q for q in range(1, period) if _repeats(loss[begin:], q)]
    fact(not smaller, f"the loss repeats every {smaller[0] if smaller else 0} steps, not {period}")
    last = loss[-period:]
    fact(evidence.get("loss_min") == float(np.min(last)), "loss_min is not the cycle's smallest loss")
    fact(evidence.get("loss_max") == float(np.max(last)), "loss_max is not the cycle's largest loss")


def _check_flat(
    history: History, loss: np.ndarray, evidence: dict[str, Any], step_key: Any, fact: Any
) -> None:
    since = step_key("flat_since_step")
    if since is None:
        return
    value = evidence.get("flat_loss")
    fact(bool(np.all(loss[since - 1 :] == value)), f"the loss is not {value} at every step from {since}")
    fact(since == 1 or loss[since - 2] != value, f"the loss is {value} already at step {since - 1}")
    fact(evidence.get("flat_steps") == loss.size - since + 1, "flat_steps does not count the steps")
    moves = np.asarray(history.update_size, np.float64)[since - 1 :]
    fact(evidence.get("largest_recent_update") == float(np.nanmax(moves)), "largest_recent_update is wrong")


def _check_window(
    history: History, loss: np.ndarray, evidence: dict[str, Any], step_key: Any, fact: Any, proved: set[int]
) -> None:
    start = step_key("window_start_step")
    end = step_key("window_end_step")
    if start is None or end is None:
        return
    per = history.steps_per_epoch if evidence.get("window_unit") == "epoch" else 1
    values = loss[start - 1 : end].reshape(-1, per).mean(axis=1)
    first, last = float(values[0]), float(values[-1])
    fact(evidence.get("window_first_loss") == first, f"the window's first loss is {first}")
    fact(evidence.get("window_last_loss") == last, f"the window's last loss is {last}")
    fact(evidence.get("window_min_loss") == float(values.min()), "window_min_loss is wrong")
    fact(evidence.get("window_max_loss") == float(values.max()), "window_max_loss is wrong")
    relative = (last - first) / max(abs(first), np.finfo(np.float64).tiny)
    fact(evidence.get("relative_change") == relative, f"the relative change is {relative}")
    if "largest_recent_update" in evidence:
        moves = np.asarray(history.update_size, np.float64)[start - 1 :]
        fact(evidence["largest_recent_update"] == float(np.nanmax(moves)), "largest_recent_update is wrong")
    accuracy = evidence.get("training_accuracy")
    if accuracy is not None:
        fact(accuracy == 1.0, "separable data is claimed below 100% accuracy")


def _check_weights(history: History, evidence: dict[str, Any], fact: Any, proved: set[int]) -> None:
    records = evidence.get("weights") or []
    if not records:
        return
    updates = np.asarray(history.tensor_update)
    zeros = np.asarray(history.gradient_zero, bool)
    sums = np.asarray(history.tensor_checksum)
    for record in records:
        name = record["name"]
        column = history.tensor_names.index(name)
        frozen = record["frozen_since_step"]
        if frozen is not None:
            proved.add(frozen)
            fact(not np.any(updates[frozen - 1 :, column]), f"{name} changed after step {frozen}")
            fact(
                frozen == 1 or updates[frozen - 2, column] != 0, f"{name} did not change at step {frozen - 1}"
            )
        first = record["first_zero_gradient_step"]
        if first is not None:
            proved.add(first)
            fact(bool(zeros[first - 1, column]), f"{name}'s gradient at step {first} is not 0")
            fact(not zeros[: first - 1, column].any(), f"{name}'s gradient is 0 before step {first}")
        since = record["zero_gradient_since_step"]
        if since is not None:
            proved.add(since)
            fact(
                bool(zeros[since - 1 :, column].all()),
                f"{name}'s gradient is not 0 at every step from {since}",
            )
            fact(
                since == 1 or not zeros[since - 2, column],
                f"{name}'s gradient is 0 already at step {since - 1}",
            )
        period, start = record["cycle_period"], record["cycle_start_step"]
        if period is not None:
            proved.add(start)
            column_sums = sums[start - 1 :, column]
            fact(_repeats(column_sums, period), f"{name} does not repeat every {period} steps from {start}")
            smaller = [q for q in range(1, period) if _repeats(column_sums, q)]
            fact(not smaller, f"{name} repeats every {smaller[0] if smaller else 0} steps, not {period}")


# ----------------------------------------------------------------------------------- words
STEP = re.compile(r"\bsteps? (\d+)\b|\bfrom (\d+) on\b|\bfirst at step (\d+)")
FROZEN = re.compile(r"the (\w+) has been frozen since step (\d+)")
CYCLING = re.compile(r"the (\w+) (?:every|in a cycle of) (\d+) steps")


def _check_words(
    history: History, label: str, diagnosis: Diagnosis, evidence: dict[str, Any], fact: Any, proved: set[int]
) -> None:
    text = " ".join(part for _, part in diagnosis.story_parts())
    for match in STEP.finditer(text):
        step = int(next(group for group in match.groups() if group))
        fact(step in proved, f"the words name step {step}, which no checked fact is about")
    records = {r["name"].rsplit("/", 1)[-1]: r for r in evidence.get("weights") or []}
    for short, step in FROZEN.findall(diagnosis.explanation):
        record = records.get(short)
        fact(
            record is not None and record["frozen_since_step"] == int(step),
            f"the words say the {short} froze at step {step}",
        )
    for short, period in CYCLING.findall(diagnosis.explanation):
        record = records.get(short)
        fact(
            record is not None and record["cycle_period"] == int(period),
            f"the words say the {short} cycles every {period} steps",
        )
    for dtype in re.findall(r"\b(b?float\d+)\b", text):
        known = {
            label,
            history.variable_dtype,
            history.compute_dtype,
            history.loss_dtype,
            "float32",
            "float64",
        }
        known |= {str(v) for v in (history.output_evidence or {}).values() if isinstance(v, str)}
        fact(dtype in known or dtype in label, f"the words name {dtype}, a dtype this run did not use")


def _repeats(values: np.ndarray, period: int) -> bool:
    """Whether ``values`` repeat with ``period`` throughout (compared by bits)."""
    if values.shape[0] <= period:
        return False
    bits = np.ascontiguousarray(values, np.float64).view(np.int64)
    return bool(np.array_equal(bits[period:], bits[:-period]))
