"""What a training run did, read from its history: the outcome and the evidence for it.

Pure numpy, so it is cheap to test on synthetic histories and costs the fast engines nothing: it
reads what the engine records anyway (the loss of every step, the largest weight update of every
step, the final weights and gradients, and the update the optimizer wanted to make at the end).

The outcomes are checked in an order that puts the most specific explanation first:
``diverged`` (a NaN or Inf), ``reached-zero`` (the loss is exactly 0), ``stalled`` (the weights
stopped changing), ``oscillating`` (an exact short cycle), then the trend of the last stretch of the
run: ``plateau`` (flat) or ``descending`` (still falling).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from .outcome import Outcome

if TYPE_CHECKING:
    from .run import Run

MAX_CYCLE = 64
"""Longest loss cycle (in steps) recognised as oscillation."""

PLATEAU_RELATIVE_CHANGE = 1e-3
"""Relative change of the loss over the last tenth of a run below which it counts as flat."""


@dataclass(frozen=True)
class Diagnosis:
    """The outcome of a run, the step it is dated from, and why, in words and in numbers."""

    outcome: Outcome
    step: int | None
    loss: float | None
    explanation: str
    evidence: dict[str, Any] = field(default_factory=dict)

    def describe(self, dtype: str) -> str:
        """One line a person reads: ``float16: stalled from step 12 at loss 0.018: ...``."""
        where = ""
        if self.step is not None:
            verb = {
                Outcome.DIVERGED: "at step",
                Outcome.REACHED_ZERO: "at step",
            }.get(self.outcome, "from step")
            where = f" {verb} {self.step}"
        at_loss = (
            f" at loss {_fmt(self.loss)}"
            if self.loss is not None and self.outcome != Outcome.REACHED_ZERO
            else ""
        )
        return f"{dtype}: {self.outcome.value}{where}{at_loss}: {self.explanation}"


def diagnose(run: Run) -> Diagnosis:
    """Classify a run's history; see the module docstring for the order of the checks."""
    loss = np.asarray(run.loss, np.float64)
    for check in (_diverged, _reached_zero, _stalled, _oscillating):
        found = check(run, loss)
        if found is not None:
            return found
    return _trend(run, loss)


# ------------------------------------------------------------------------------------ checks
def _diverged(run: Run, loss: np.ndarray) -> Diagnosis | None:
    bad = np.flatnonzero(~np.isfinite(loss))
    bad_weights = [
        name for name, w in run.final_weights.items() if not np.all(np.isfinite(w.astype(np.float64)))
    ]
    if not bad.size and not bad_weights:
        return None
    if not bad.size:
        return Diagnosis(
            Outcome.DIVERGED,
            None,
            float(loss[-1]),
            f"the loss stayed finite but weights became NaN or Inf: {', '.join(bad_weights)}",
            {"nonfinite_weights": bad_weights},
        )
    first = int(bad[0])
    last_finite = float(loss[first - 1]) if first > 0 else None
    kind = "NaN" if math.isnan(loss[first]) else "Inf"
    if first == 0:
        text = f"the loss is {kind} from the first step: check the data, the loss and the initial weights"
    else:
        text = (
            f"the loss became {kind} at step {first + 1} after {_fmt(last_finite)} at step {first}"
            f" (loss computed in {run.loss_dtype}, weights in {run.variable_dtype})"
        )
        largest = float(np.nanmax(run.update_size[:first])) if first else float("nan")
        if math.isfinite(largest):
            text += f"; the largest update before it was {_fmt(largest)}"
    return Diagnosis(
        Outcome.DIVERGED,
        first + 1,
        last_finite,
        text,
        {"first_nonfinite_step": first + 1, "last_finite_loss": last_finite, "value": kind},
    )


def _reached_zero(run: Run, loss: np.ndarray) -> Diagnosis | None:
    if loss[-1] != 0.0:
        return None
    nonzero = np.flatnonzero(loss != 0.0)
    first_zero = int(nonzero[-1]) + 1 if nonzero.size else 0
    last_nonzero = float(loss[first_zero - 1]) if first_zero > 0 else None
    tiny = _tiny(run.loss_dtype)
    text = (
        f"the loss, computed in {run.loss_dtype}, is exactly 0 from step {first_zero + 1}"
        + (f" (the step before: {_fmt(last_nonzero)})" if last_nonzero is not None else "")
        + f"; it rounded to zero (the smallest positive {run.loss_dtype} is {_fmt(tiny)}),"
        " so the gradients are zero and training stops moving"
    )
    return Diagnosis(
        Outcome.REACHED_ZERO,
        first_zero + 1,
        0.0,
        text,
        {"first_zero_step": first_zero + 1, "last_nonzero_loss": last_nonzero, "loss_dtype": run.loss_dtype},
    )


def _stalled(run: Run, loss: np.ndarray) -> Diagnosis | None:
    changed = np.asarray(run.weights_changed, bool)
    steps = changed.size
    moved = np.flatnonzero(changed)
    last_change = int(moved[-1]) + 1 if moved.size else 0  # steps 1..last_change moved something
    still = steps - last_change
    if still < _min_stall(steps):
        return None
    stall_step = last_change + 1
    at_loss = float(loss[last_change]) if last_change < steps else float(loss[-1])
    evidence: dict[str, Any] = {
        "stall_step": stall_step,
        "unchanged_steps": still,
        "variable_dtype": run.variable_dtype,
        "loss_dtype": run.loss_dtype,
    }
    if moved.size:
        evidence["last_update"] = float(run.update_size[moved[-1]])
    gradients = run.final_gradients
    all_zero = bool(gradients) and all(not np.any(g.astype(np.float64)) for g in gradients.values())
    if all_zero:
        evidence["cause"] = "gradient-underflow"
        text = (
            f"the gradients of every weight are exactly 0 in {run.variable_dtype} although the loss "
            f"({_fmt(at_loss)}, computed in {run.loss_dtype}) is not"
        )
        if run.loss_dtype != run.variable_dtype:
            text += (
                f": the loss's tiny gradient underflowed when cast to the {run.variable_dtype} weights "
                f"(smallest positive {run.variable_dtype}: {_fmt(_tiny(run.variable_dtype))})"
            )
        else:
            tiny = _fmt(_tiny(run.variable_dtype))
            text += f": they underflowed (smallest positive {run.variable_dtype}: {tiny})"
        return Diagnosis(Outcome.STALLED, stall_step, at_loss, text, evidence)
    intended = run.intended_update or {}
    expressible = run.update_in_variable_dtype or {}
    if intended and expressible and _all_zero(expressible) and not _all_zero(intended):
        largest = max(float(np.max(np.abs(u))) for u in intended.values() if np.size(u))
        evidence.update({"cause": "update-underflow", "update": largest})
        text = (
            f"the optimizer's update computes to exactly 0 in {run.variable_dtype} (in float64 it "
            f"would be about {_fmt(largest)}): its arithmetic loses the update before it reaches the "
            f"weights, e.g. a constant like Adam's beta_2=0.999 rounds to 1.0 in bfloat16; "
            f"no weight has changed for the last {still} steps"
        )
        return Diagnosis(Outcome.STALLED, stall_step, at_loss, text, evidence)
    evidence["cause"] = "update-below-half-spacing"
    closest = _closest_to_moving(run)
    if closest is None:
        text = f"no weight has changed for the last {still} steps"
    else:
        name, value, spacing, update, kind = closest
        evidence.update(
            {"weight": name, "weight_value": value, "spacing": spacing, "update": update, "update_kind": kind}
        )
        short = name.rsplit("/", 1)[-1]
        where = f"{run.variable_dtype} spacing of the {short} (value {_fmt(value)}, spacing {_fmt(spacing)})"
        if kind != "optimizer":
            evidence["cause"] = "weights-unchanged"
            text = (
                f"no weight has changed for the last {still} steps although the gradients are not zero "
                f"(the largest against its weight's spacing: {_fmt(update)} against the {where}): "
                "the optimizer's updates round away or are zero"
            )
        elif update >= spacing / 2:
            evidence["cause"] = "weights-unchanged"
            text = (
                f"no weight has changed for the last {still} steps although the optimizer's next update "
                f"(about {_fmt(update)}) is above half the {where}: rounding does not explain it; look for "
                "frozen layers or a learning-rate schedule that reached 0"
            )
        else:
            text = (
                f"the last updates (about {_fmt(update)}) are below half the {where}, so every update "
                f"rounds away; no weight has changed for the last {still} steps"
            )
    return Diagnosis(Outcome.STALLED, stall_step, at_loss, text, evidence)


def _oscillating(run: Run, loss: np.ndarray) -> Diagnosis | None:
    steps = loss.size
    for period in range(2, MAX_CYCLE + 1):
        window = max(8 * period, 64)
        if steps < window + period:
            break
        tail = loss[-window:]
        if not np.array_equal(tail, loss[-window - period : -period]):
            continue
        cycle = loss[-period:]
        if np.all(cycle == cycle[0]):
            return None  # constant: not a cycle; the trend check calls it a plateau
        start = steps - window - period
        while start > 0 and loss[start - 1] == loss[start - 1 + period]:
            start -= 1
        return Diagnosis(
            Outcome.OSCILLATING,
            start + 1,
            float(np.min(cycle)),
            (
                f"the loss repeats exactly every {period} steps between {_fmt(float(np.min(cycle)))} and "
                f"{_fmt(float(np.max(cycle)))} while the weights keep moving (largest update "
                f"{_fmt(float(np.max(run.update_size[-period:])))}): the updates overshoot back and forth"
            ),
            {
                "period": period,
                "cycle_start_step": start + 1,
                "loss_min": float(np.min(cycle)),
                "loss_max": float(np.max(cycle)),
            },
        )
    return None


def _trend(run: Run, loss: np.ndarray) -> Diagnosis:
    series, unit = _smoothed(loss, run.steps_per_epoch)
    n = series.size
    window = max(2, n // 10)
    tail = series[-window:]
    head_mean = float(np.mean(tail[: max(1, window // 5)]))
    end_mean = float(np.mean(tail[-max(1, window // 5) :]))
    scale = max(abs(head_mean), abs(end_mean), np.finfo(np.float64).tiny)
    change = (end_mean - head_mean) / scale
    start_step = (n - window) * (run.steps_per_epoch if unit == "epoch" else 1) + 1
    evidence: dict[str, Any] = {
        "window_start_step": start_step,
        "relative_change": change,
        "window_unit": unit,
    }
    if abs(change) <= PLATEAU_RELATIVE_CHANGE or change > 0:
        window_steps = window * (run.steps_per_epoch if unit == "epoch" else 1)
        moving = float(np.max(run.update_size[-window_steps:])) if run.update_size.size else 0.0
        direction = "rose" if change > PLATEAU_RELATIVE_CHANGE else "changed"
        evidence["largest_recent_update"] = moving
        return Diagnosis(
            Outcome.PLATEAU,
            start_step,
            end_mean,
            (
                f"over the last {window} {unit}s the loss {direction} by only {abs(change):.2g} "
                f"(relative) while the weights still move (largest update {_fmt(moving)})"
                if direction == "changed"
                else f"over the last {window} {unit}s the loss rose by {change:.2g} (relative) "
                f"while the weights still move (largest update {_fmt(moving)})"
            ),
            evidence,
        )
    exponent = _power_law_exponent(series)
    evidence["power_law_exponent"] = exponent
    text = f"still falling when the budget ran out: {-change:.2g} lower over the last {window} {unit}s"
    if exponent is not None:
        text += f"; loss ~ {unit}s^{exponent:.2f} over the second half"
        if -1.25 <= exponent <= -0.75:
            text += (
                " (loss x steps roughly constant: the logistic-loss signature on separable data, "
                "where the weights grow without bound and the loss only approaches 0)"
            )
    return Diagnosis(Outcome.DESCENDING, start_step, float(loss[-1]), text, evidence)


# ----------------------------------------------------------------------------------- helpers
def _all_zero(arrays: dict[str, np.ndarray]) -> bool:
    return all(not np.any(np.asarray(a, np.float64)) for a in arrays.values())


def _min_stall(steps: int) -> int:
    """Unchanged trailing steps that make a stall: 10% of the run, at least 3, at most 100."""
    return max(3, min(100, steps // 10))


def _closest_to_moving(run: Run) -> tuple[str, float, float, float, str] | None:
    """The weight whose update comes nearest its spacing: if even that rounds away, all do."""
    intended = run.intended_update or {}
    kind = "optimizer" if intended else "gradient"
    sources = intended or run.final_gradients
    best: tuple[float, tuple[str, float, float, float, str]] | None = None
    for name, update in sources.items():
        if name not in run.final_weights:
            continue
        weights = np.asarray(run.final_weights[name])
        spacing = _spacing(weights, run.variable_dtype)
        size = np.abs(np.asarray(update, np.float64)).reshape(-1)
        ratio = size / spacing.reshape(-1)
        index = int(np.nanargmax(ratio)) if ratio.size else 0
        if not ratio.size:
            continue
        candidate = (
            float(ratio[index]),
            (
                name,
                float(weights.reshape(-1)[index]),
                float(spacing.reshape(-1)[index]),
                float(size[index]),
                kind,
            ),
        )
        if best is None or candidate[0] > best[0]:
            best = candidate
    return None if best is None else best[1]


def _spacing(weights: np.ndarray, dtype: str) -> np.ndarray:
    """Distance to the next representable number away from zero, in the weights' dtype."""
    if dtype == "bfloat16":
        values = np.abs(weights.astype(np.float32))
        exponent = np.floor(np.log2(np.maximum(values, 2.0**-126)))
        return (2.0 ** (exponent - 7)).astype(np.float64)
    typed = np.asarray(weights).astype(np.dtype(dtype))
    return np.abs(np.spacing(np.abs(typed))).astype(np.float64)


def _tiny(dtype: str) -> float:
    """Smallest positive (subnormal) number of a dtype."""
    if dtype == "bfloat16":
        return 2.0**-133
    info = np.finfo(np.dtype(dtype))
    return float(info.smallest_subnormal)


def _smoothed(loss: np.ndarray, steps_per_epoch: int) -> tuple[np.ndarray, str]:
    """Per-epoch means when an epoch has several batches: a batch's loss is noisy, an epoch's is not."""
    if steps_per_epoch <= 1 or loss.size < 2 * steps_per_epoch:
        return loss, "step"
    whole = loss.size // steps_per_epoch * steps_per_epoch
    return loss[:whole].reshape(-1, steps_per_epoch).mean(axis=1), "epoch"


def _power_law_exponent(series: np.ndarray) -> float | None:
    """Slope of log(loss) against log(step) over the second half of the run."""
    n = series.size
    if n < 20:
        return None
    steps = np.arange(n // 2, n) + 1.0
    values = series[n // 2 :]
    if np.any(values <= 0):
        return None
    slope = np.polyfit(np.log(steps), np.log(values), 1)[0]
    return float(slope)


def _fmt(value: float | None) -> str:
    if value is None:
        return "n/a"
    return f"{value:.4g}"
