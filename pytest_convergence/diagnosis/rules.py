"""What a training run did, read from its history: the outcome, the evidence for it, and the story.

Pure numpy, so it is cheap to test on synthetic histories and costs the fast engines nothing: it
reads what the engine records anyway (the loss of every step, each weight's largest change and
whether its gradient was 0 at every step, the final weights and gradients, the update the
optimizer wanted to make at the end, and facts about the final outputs).

The outcomes are checked in an order that puts the most specific explanation first:
``diverged`` (a NaN or Inf), ``reached-zero`` (the loss is exactly 0), ``stalled`` (no weight
changes any more), ``oscillating`` (an exact cycle of the loss, of any period), ``plateau`` (the
loss exactly constant while weights move, or flat over the last tenth), else ``descending``.
A cause is named only after it is checked on the run's own numbers; where the evidence does not
decide, the explanation says less. Per-weight events (a kernel frozen while the bias moves) are
part of the explanation and of ``evidence["weights"]``, not outcomes of their own: the outcome is
what the loss did, which is what an expectation is about (docs/diagnosis.md).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import numpy as np

from ..numerics import fmt as _fmt
from ..numerics import fmt_range, fmt_relative, spacing, tiny
from ..outcome import Outcome
from . import margins as _margins_of
from .cycles import find_cycle
from .margins import Margin, closest
from .weight_events import FREEZE_CAUSES, WeightEvents, min_frozen_steps, weight_events

if TYPE_CHECKING:
    from ..history import History

PLATEAU_RELATIVE_CHANGE = 1e-3
"""Relative change (first to last value) of the loss over the last tenth of a run at or below
which it counts as flat."""


@dataclass(frozen=True)
class Diagnosis:
    """The outcome of a run, the step it is dated from, and why, in words and in numbers."""

    outcome: Outcome
    step: int | None
    loss: float | None
    explanation: str
    evidence: dict[str, Any] = field(default_factory=dict)
    remedy: str = ""
    """What would change the outcome, where the cause suggests it (empty when nothing does)."""
    weights_story: str = ""
    """What the weights did, one clause per weight that did something notable."""
    margins: tuple[Margin, ...] = ()
    """Each decision's distance from its threshold (:mod:`.margins`): the deciding rule's, and
    the near misses of the rules checked before it."""

    @property
    def borderline(self) -> Margin | None:
        """The decision another machine could flip, nearest its threshold, or None."""
        return closest(self.margins)

    @property
    def outcomes(self) -> tuple[Outcome, ...]:
        """The outcomes this run could have on another machine: its own, then each borderline
        decision's alternative, nearest first; an expectation or snapshot of any accepts it."""
        seen = [self.outcome]
        for margin in sorted((m for m in self.margins if m.borderline), key=lambda m: m.share):
            if margin.alternative is not None and margin.alternative not in seen:
                seen.append(margin.alternative)
        return tuple(seen)

    @property
    def label(self) -> str:
        """The outcome as reports show it: ``plateau``, or ``plateau (borderline: descending at
        -0.0999% vs the -0.1% plateau rule)``."""
        near = self.borderline
        if near is None or len(self.outcomes) == 1:
            return self.outcome.value
        return f"{self.outcome.value} (borderline: {near.phrase()})"

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
        return f"{dtype}: {self.label}{where}{at_loss}: {self.explanation}"

    def story_parts(self) -> list[tuple[str, str]]:
        """The story of the run, part by part: what happened and why, what the weights did, and
        what would change it (``--convergence-explain`` prints these)."""
        parts = [("what happened", self.explanation)]
        near = self.borderline
        if near is not None and len(self.outcomes) > 1:
            parts.append(
                (
                    "borderline",
                    f"{near.phrase()}, within the {near.band:.3g} another machine's kernels can move it "
                    f"(docs/machines.md): such a machine may report {near.alternative}, and an "
                    f"expectation or snapshot of either outcome accepts it",
                )
            )
        if self.weights_story:
            parts.append(("the weights", self.weights_story))
        if self.remedy:
            parts.append(("what would change it", self.remedy))
        return parts


def diagnose(history: History) -> Diagnosis:
    """Classify a run's history; see the module docstring for the order of the checks."""
    loss = np.asarray(history.loss, np.float64)
    weights = weight_events(history)
    found = _diverged(history, loss, weights)
    if found is not None:  # a NaN is no threshold's matter: no margin
        return _with_weights(found, history, weights)
    for index, check in enumerate(THRESHOLD_CHECKS):
        found = check(history, loss, weights)
        if found is not None:
            return _with_weights(found, history, weights, _margins(history, loss, weights, index, found))
    found = _trend(history, loss, weights)
    return _with_weights(
        found, history, weights, _margins(history, loss, weights, len(THRESHOLD_CHECKS), found)
    )


def _decided_after(history: History, loss: np.ndarray, weights: list[WeightEvents], index: int) -> Outcome:
    """The outcome the rules after ``THRESHOLD_CHECKS[index]`` decide: a crossed decision's alternative."""
    for check in THRESHOLD_CHECKS[index + 1 :]:
        found = check(history, loss, weights)
        if found is not None:
            return found.outcome
    return _trend(history, loss, weights).outcome


def _margins(
    history: History, loss: np.ndarray, weights: list[WeightEvents], index: int, found: Diagnosis
) -> tuple[Margin, ...]:
    """The deciding rule's margin and the near misses of the rules checked before it."""
    steps = int(loss.size)
    evidence = found.evidence
    half = _computes_in_half(history)
    found_margins: list[Margin] = []
    if index > THRESHOLD_CHECKS.index(_stalled):
        missed = _margins_of.stall_near_miss(history.weights_changed, min_frozen_steps(steps), half)
        if missed is not None and missed.borderline:
            found_margins.append(missed)
    if index > THRESHOLD_CHECKS.index(_oscillating):
        checked = {"cycle"} | ({"flat"} if index > THRESHOLD_CHECKS.index(_flat) else set())
        found_margins += [
            m for m in _margins_of.tail_near_misses(loss, _flat_span(steps), half) if m.rule in checked
        ]
    if index == len(THRESHOLD_CHECKS):
        found_margins += _margins_of.trend(
            evidence["relative_change"],
            evidence["swing"],
            evidence["swing_ratio"],
            evidence["relative_swing"],
            PLATEAU_RELATIVE_CHANGE,
            half,
        )
        return tuple(found_margins)
    check = THRESHOLD_CHECKS[index]
    if check is _reached_zero:
        zero_since = int(evidence["zero_since_step"])
        own = _margins_of.counted("zero", steps - zero_since + 1, 1, steps, None, half)
    elif check is _stalled:
        own = _margins_of.counted(
            "stall", int(evidence["unchanged_steps"]), min_frozen_steps(steps), steps, None, half
        )
    elif check is _oscillating:
        span = steps - int(evidence["cycle_start_step"]) + 1
        needed = _margins_of.cycle_needed(int(evidence["period"]))
        own = _margins_of.counted("cycle", span, needed, steps, None, half)
    else:
        own = _margins_of.counted("flat", int(evidence["flat_steps"]), _flat_span(steps), steps, None, half)
    if own.borderline:  # what the run would be across the threshold: worked out only when near
        own = replace(own, alternative=_across(history, loss, weights, index, evidence))
    return (own, *found_margins)


def _across(
    history: History, loss: np.ndarray, weights: list[WeightEvents], index: int, evidence: dict[str, Any]
) -> Outcome:
    """The outcome when the deciding rule ``THRESHOLD_CHECKS[index]`` does not fire: the rules
    after it decide; a zero reached later than the end leaves the trend of the loss before it."""
    if THRESHOLD_CHECKS[index] is _reached_zero:
        before = loss[: int(evidence["zero_since_step"]) - 1]
        return _trend(history, before, weights).outcome if before.size >= 2 else Outcome.DESCENDING
    return _decided_after(history, loss, weights, index)


RULE_CHECK = {"zero": 0, "stall": 1, "cycle": 2, "flat": 3}
"""The deciding rule of each step-count margin, as its index in :data:`THRESHOLD_CHECKS`."""


def outcome_across(history: History, margin: Margin) -> Outcome:
    """The outcome on the other side of ``margin``'s threshold: its alternative where worked
    out, else what the rules decide without the deciding one (calibration asks when a measured
    move reaches a decision that looked clear)."""
    if margin.alternative is not None:
        return margin.alternative
    return _across(
        history,
        np.asarray(history.loss, np.float64),
        weight_events(history),
        RULE_CHECK[margin.rule],
        diagnose(history).evidence,
    )


def _computes_in_half(history: History) -> bool:
    """Whether any of the run's dtypes (weights, compute, loss) is float16 or bfloat16."""
    return bool({history.variable_dtype, history.compute_dtype, history.loss_dtype} & {"float16", "bfloat16"})


def _flat_span(steps: int) -> int:
    """The span an exactly constant tail needs to be a plateau (:func:`_flat`, :func:`find_cycle`)."""
    return max(min_frozen_steps(steps), steps // 10, _margins_of.cycle_needed(1))


def _with_weights(
    found: Diagnosis, history: History, weights: list[WeightEvents], margins: tuple[Margin, ...] = ()
) -> Diagnosis:
    """The diagnosis with every weight's events and every decision's margin in its evidence."""
    evidence = dict(found.evidence)
    if weights:
        evidence["weights"] = [w.as_evidence() for w in weights]
    if margins:
        evidence["margins"] = [m.as_evidence() for m in margins]
    explanation = found.explanation + _callbacks_clause(history, found, evidence)
    return Diagnosis(
        found.outcome,
        found.step,
        found.loss,
        explanation,
        evidence,
        remedy=found.remedy,
        weights_story=found.weights_story or _weights_story(history, weights),
        margins=margins,
    )


# ------------------------------------------------------------------------------------ checks
def _diverged(history: History, loss: np.ndarray, weights: list[WeightEvents]) -> Diagnosis | None:
    bad = np.flatnonzero(~np.isfinite(loss))
    bad_weights = [
        name for name, w in history.final_weights.items() if not np.all(np.isfinite(w.astype(np.float64)))
    ]
    if not bad.size and not bad_weights:
        return None
    remedy = "a smaller learning rate, gradient clipping (clipnorm), or a dtype with a wider range"
    if not bad.size:
        return Diagnosis(
            Outcome.DIVERGED,
            None,
            float(loss[-1]),
            f"the loss stayed finite but weights became NaN or Inf: {', '.join(bad_weights)}",
            {"nonfinite_weights": bad_weights},
            remedy=remedy,
        )
    first = int(bad[0])
    last_finite = float(loss[first - 1]) if first > 0 else None
    kind = "NaN" if math.isnan(loss[first]) else "Inf"
    if first == 0:
        text = f"the loss is {kind} from the first step: check the data, the loss and the initial weights"
    else:
        text = (
            f"the loss became {kind} at step {first + 1} after {_fmt(last_finite)} at step {first}"
            f" (loss computed in {history.loss_dtype}, weights in {history.variable_dtype})"
        )
        largest = float(np.nanmax(history.update_size[:first])) if first else float("nan")
        if math.isfinite(largest):
            text += f"; the largest update before it was {_fmt(largest)}"
    return Diagnosis(
        Outcome.DIVERGED,
        first + 1,
        last_finite,
        text,
        {"first_nonfinite_step": first + 1, "last_finite_loss": last_finite, "value": kind},
        remedy=remedy,
    )


def _reached_zero(history: History, loss: np.ndarray, weights: list[WeightEvents]) -> Diagnosis | None:
    if loss[-1] != 0.0:
        return None
    zeros = np.flatnonzero(loss == 0.0)
    nonzero = np.flatnonzero(loss != 0.0)
    first_zero = int(zeros[0]) + 1
    zero_since = int(nonzero[-1]) + 2 if nonzero.size else 1
    last_nonzero = float(loss[zero_since - 2]) if zero_since > 1 else None
    dtype = history.loss_dtype
    evidence: dict[str, Any] = {
        "first_zero_step": first_zero,
        "zero_since_step": zero_since,
        "last_nonzero_loss": last_nonzero,
        "loss_dtype": dtype,
    }
    text = f"the loss, computed in {dtype}, is exactly 0 from step {zero_since} to the end"
    if last_nonzero is not None:
        text += f" (the step before: {_fmt(last_nonzero)})"
    if first_zero < zero_since:
        text += f"; it first touched 0 at step {first_zero} and left it again"
    probe = history.output_evidence or {}
    exact = probe.get("float64_loss")
    remedy = ""
    if exact is not None:
        evidence["float64_loss"] = exact
        evidence["exact_fit"] = exact == 0.0
        if exact == 0.0:
            text += (
                "; in float64 the same outputs give a loss of exactly 0 too: an exact fit "
                "(the outputs equal the targets), not a rounding"
            )
        else:
            text += (
                f"; in float64 the final outputs give a loss of {_fmt(exact)}: the {dtype} loss "
                f"rounded to 0 (the smallest positive {dtype} is {_fmt(tiny(dtype))})"
            )
            remedy = (
                "pinning the loss's dtype to float32 or float64 (the case's loss_dtype) "
                "keeps it from rounding to 0"
            )
    text += _after_zero(history, zero_since, evidence)
    return Diagnosis(Outcome.REACHED_ZERO, zero_since, 0.0, text, evidence, remedy=remedy)


def _after_zero(history: History, zero_since: int, evidence: dict[str, Any]) -> str:
    """What the gradients and weights did once the loss was 0, each checked, not assumed."""
    gradients = history.final_gradients
    text = ""
    if gradients:
        all_zero = all(not np.any(np.asarray(g, np.float64)) for g in gradients.values())
        evidence["final_gradients_zero"] = all_zero
        text += "; the final gradients are exactly 0" if all_zero else "; the final gradients are not all 0"
    changed = np.flatnonzero(np.asarray(history.weights_changed, bool))
    last_change = int(changed[-1]) + 1 if changed.size else None
    evidence["last_weight_change_step"] = last_change
    if last_change is None or last_change < zero_since:
        return text + ", and no weight moved after the loss reached 0"
    carried = last_change - zero_since + 1
    evidence["steps_moved_after_zero"] = carried
    zero_flags = np.asarray(history.gradient_zero, bool)
    window = zero_flags[zero_since - 1 : last_change] if zero_flags.ndim == 2 else np.zeros((0, 0))
    if window.size and window.all():
        evidence["moved_without_gradient"] = True
        return text + (
            f"; the weights still moved for {carried} steps after it (last at step {last_change}) with "
            "every gradient exactly 0: the optimizer's own state (momentum, moving averages) carried them"
        )
    return text + f"; the weights still moved for {carried} steps after it (last at step {last_change})"


def _stalled(history: History, loss: np.ndarray, weights: list[WeightEvents]) -> Diagnosis | None:
    changed = np.asarray(history.weights_changed, bool)
    steps = changed.size
    moved = np.flatnonzero(changed)
    last_change = int(moved[-1]) + 1 if moved.size else 0  # steps 1..last_change moved something
    still = steps - last_change
    if still < min_frozen_steps(steps):
        return None
    stall_step = last_change + 1
    at_loss = float(loss[last_change]) if last_change < steps else float(loss[-1])
    evidence: dict[str, Any] = {
        "stall_step": stall_step,
        "unchanged_steps": still,
        "variable_dtype": history.variable_dtype,
        "loss_dtype": history.loss_dtype,
    }
    if moved.size:
        evidence["last_update"] = float(history.update_size[moved[-1]])
    gradients = history.final_gradients
    all_zero = bool(gradients) and all(not np.any(g.astype(np.float64)) for g in gradients.values())
    if all_zero:
        text, remedy = _zero_gradient_cause(history, at_loss, evidence)
        return Diagnosis(Outcome.STALLED, stall_step, at_loss, text, evidence, remedy=remedy)
    intended = history.intended_update or {}
    expressible = history.update_in_variable_dtype or {}
    finer = "float32" if history.variable_dtype in ("float16", "bfloat16") else "float64"
    if intended and expressible and _all_zero(expressible) and not _all_zero(intended):
        largest = max(float(np.max(np.abs(u))) for u in intended.values() if np.size(u))
        evidence.update({"cause": "update-underflow", "update": largest})
        text = (
            f"the optimizer's update computes to exactly 0 in {history.variable_dtype} (in float64 it "
            f"would be about {_fmt(largest)}): its arithmetic loses the update before it reaches the weights"
            + (
                " (Adam's beta_2=0.999, for one, rounds to 1.0 in bfloat16)"
                if history.variable_dtype == "bfloat16"
                else ""
            )
            + f"; no weight has changed for the last {still} steps"
        )
        remedy = (
            f"{finer} weights (a mixed policy keeps them so), "
            f"or an optimizer whose constants survive {history.variable_dtype}"
        )
        return Diagnosis(Outcome.STALLED, stall_step, at_loss, text, evidence, remedy=remedy)
    evidence["cause"] = "update-below-half-spacing"
    closest = _closest_to_moving(history)
    remedy = ""
    if closest is None:
        evidence["cause"] = "weights-unchanged"
        text = f"no weight has changed for the last {still} steps"
        if gradients:
            largest = max(
                float(np.max(np.abs(g.astype(np.float64)), initial=0.0)) for g in gradients.values()
            )
            evidence["largest_gradient"] = largest
            text += (
                f" although the gradients are not zero (largest {_fmt(largest)}); without the "
                "optimizer's own next update, whether it rounds away cannot be told"
            )
    else:
        name, value, gap, update = closest
        evidence.update({"weight": name, "weight_value": value, "spacing": gap, "update": update})
        short = name.rsplit("/", 1)[-1]
        where = f"{history.variable_dtype} spacing of the {short} (value {_fmt(value)}, spacing {_fmt(gap)})"
        if update >= gap / 2:
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
            remedy = (
                f"{finer} weights (finer spacing; mixed precision keeps weights in float32) "
                "or a larger learning rate"
            )
    return Diagnosis(Outcome.STALLED, stall_step, at_loss, text, evidence, remedy=remedy)


def _zero_gradient_cause(history: History, at_loss: float, evidence: dict[str, Any]) -> tuple[str, str]:
    """Why every gradient is 0, from the probe of the final outputs: a saturated output (the loss
    itself is flat there), a cast underflow (the loss's gradient is not 0 but is in the outputs'
    dtype), or a gradient lost inside the layers. Without the probe, no cause is named."""
    probe = history.output_evidence or {}
    loss_dtype = probe.get("loss_dtype") or history.loss_dtype
    outputs_dtype = probe.get("outputs_dtype") or history.compute_dtype
    text = (
        f"the gradients of every weight are exactly 0 in {history.variable_dtype} although the loss "
        f"({_fmt(at_loss)}, computed in {loss_dtype}) is not"
    )
    flat_loss = probe.get("loss_gradient_zero")
    cast_zero = probe.get("output_gradient_zero")
    saturated = probe.get("saturated_share")
    if flat_loss is True:
        if saturated:
            evidence["cause"] = "saturated-outputs"
            evidence["saturated_share"] = saturated
            text += (
                f": {saturated:.0%} of the outputs are exactly 0 or 1 in {outputs_dtype} (saturated), "
                "where the loss is flat: its own gradient with respect to the outputs is exactly 0 "
                f"in {loss_dtype}, "
                "so the zero comes from the loss itself, not from a cast to a narrower dtype"
            )
            return text, (
                "a smaller learning rate, or logits out of the model with from_logits=True "
                "(the loss then never sees a probability rounded to exactly 0 or 1)"
            )
        evidence["cause"] = "loss-gradient-zero"
        text += f": the loss's own gradient with respect to the outputs is exactly 0 in {loss_dtype}"
        return text, ""
    if flat_loss is False and cast_zero is True:
        evidence["cause"] = "gradient-underflow"
        evidence["largest_loss_gradient"] = probe.get("largest_loss_gradient")
        text += (
            f": the loss's gradient (largest {_fmt(probe.get('largest_loss_gradient'))} in {loss_dtype}) "
            f"underflowed to 0 when cast to the {outputs_dtype} outputs "
            f"(smallest positive {outputs_dtype}: {_fmt(tiny(outputs_dtype))})"
        )
        return text, "loss scaling (mixed_float16 scales the loss for you) or a wider compute dtype"
    if flat_loss is False and cast_zero is False:
        evidence["cause"] = "gradient-vanished-in-layers"
        text += (
            f": the loss's gradient reaches the outputs (largest {_fmt(probe.get('largest_loss_gradient'))} "
            f"in {outputs_dtype}) but is 0 at every weight: it vanished in the backward pass through the "
            "layers (dead activations, or an underflow inside them)"
        )
        return text, ""
    evidence["cause"] = "gradient-zero"
    return text, ""


def _oscillating(history: History, loss: np.ndarray, weights: list[WeightEvents]) -> Diagnosis | None:
    cycle = find_cycle(loss)
    if cycle is None or cycle.period < 2:
        return None
    period, start = cycle.period, cycle.start
    values = loss[-period:]
    low, high = float(np.min(values)), float(np.max(values))
    moving = [w for w in weights if w.frozen_since_step is None]
    frozen = [w for w in weights if w.frozen_since_step is not None]
    evidence: dict[str, Any] = {
        "period": period,
        "cycle_start_step": start + 1,
        "loss_min": low,
        "loss_max": high,
    }
    low_text, high_text = fmt_range(low, high)
    text = (
        f"the loss repeats exactly every {period} steps between {low_text} and {high_text} "
        f"from step {start + 1} to the end"
    )
    cycling = [w for w in moving if w.cycle_period is not None]
    if frozen and moving:
        text += "; " + _frozen_clause(frozen, history) + f", only the {_names(moving)} still {_verb(moving)}"
        if cycling:
            text += (
                " ("
                + ", ".join(f"the {w.short_name} in a cycle of {w.cycle_period} steps" for w in cycling)
                + ")"
            )
    elif cycling:
        text += (
            "; the weights return to the same values ("
            + ", ".join(f"the {w.short_name} every {w.cycle_period} steps" for w in cycling)
            + ")"
        )
    else:
        largest = float(np.max(history.update_size[-period:]))
        text += f" while the weights keep moving (largest update {_fmt(largest)})"
    remedy = "a smaller learning rate, or a dtype with finer spacing"
    return Diagnosis(Outcome.OSCILLATING, start + 1, low, text, evidence, remedy=remedy)


def _flat(history: History, loss: np.ndarray, weights: list[WeightEvents]) -> Diagnosis | None:
    """The loss has been one exact value over the whole last tenth of the run (the trend's
    window) or longer while some weight still moves. A shorter flat stretch is a tread of a
    staircase (float16 outputs change only in steps while float32 weights move): the trend
    over the window judges that."""
    cycle = find_cycle(loss)
    shortest = max(min_frozen_steps(loss.size), loss.size // 10)
    if cycle is None or cycle.period != 1 or cycle.span(loss.size) < shortest:
        return None
    since = cycle.start + 1
    value = float(loss[-1])
    moves = np.asarray(history.update_size, np.float64)[cycle.start :]
    largest = float(np.nanmax(moves)) if moves.size else 0.0
    evidence: dict[str, Any] = {
        "flat_since_step": since,
        "flat_steps": loss.size - cycle.start,
        "flat_loss": value,
        "largest_recent_update": largest,
    }
    text = (
        f"the loss has been exactly {_fmt(value)} (in {history.loss_dtype}) from step {since} to the end, "
        f"{loss.size - cycle.start} steps, while weights still move (largest change {_fmt(largest)})"
    )
    frozen = [w for w in weights if w.frozen_since_step is not None]
    moving = [w for w in weights if w.frozen_since_step is None]
    if frozen and moving:
        text += (
            "; "
            + _frozen_clause(frozen, history)
            + f", only the {_names(moving)} still {_verb(moving)}, too little to change the loss"
        )
    return Diagnosis(
        Outcome.PLATEAU,
        since,
        value,
        text,
        evidence,
        remedy="a dtype with finer spacing for the frozen weights, or a larger learning rate"
        if frozen
        else "",
    )


def _trend(history: History, loss: np.ndarray, weights: list[WeightEvents]) -> Diagnosis:
    series, unit = _smoothed(loss, history.steps_per_epoch)
    per = history.steps_per_epoch if unit == "epoch" else 1
    n = series.size
    window = max(2, n // 10)
    tail = series[-window:]
    first, last = float(tail[0]), float(tail[-1])
    low, high = float(np.min(tail)), float(np.max(tail))
    scale = max(abs(first), np.finfo(np.float64).tiny)
    change = (last - first) / scale
    start_step = (n - window) * per + 1
    end_step = min(n * per, loss.size)
    swing_ratio = (high - low) / (2 * abs(last - first)) if last != first else math.inf
    relative_swing = (high - low) / max(abs(high), scale)
    swing = swing_ratio > 1.0 and relative_swing > PLATEAU_RELATIVE_CHANGE
    what = "step" if unit == "step" else "epoch's mean"
    evidence: dict[str, Any] = {
        "window_start_step": start_step,
        "window_end_step": end_step,
        "window_unit": unit,
        "window_first_loss": first,
        "window_last_loss": last,
        "window_min_loss": low,
        "window_max_loss": high,
        "relative_change": change,
        "swing": bool(swing),
        "swing_ratio": swing_ratio,
        "relative_swing": relative_swing,
    }
    where = f"over the last {window} {unit}s (steps {start_step} to {end_step})"
    if change == 0:
        moved = f"the loss ({what}) is {_fmt(first)} at both ends"
    else:
        moved = f"the loss ({what}) went from {_fmt(first)} to {_fmt(last)} ({fmt_relative(change)})"
    if swing:
        moved += ", swinging between {} and {} on the way".format(*fmt_range(low, high))
    if swing or abs(change) <= PLATEAU_RELATIVE_CHANGE or change > 0:
        recent = np.asarray(history.update_size, np.float64)[start_step - 1 :]
        moving = float(np.nanmax(recent)) if recent.size else 0.0
        evidence["largest_recent_update"] = moving
        judged = "it is not falling" if swing or change > 0 else "it is flat"
        return Diagnosis(
            Outcome.PLATEAU,
            start_step,
            last,
            f"{where} {moved}: {judged} while the weights still move (largest change {_fmt(moving)})",
            evidence,
        )
    exponent = _power_law_exponent(series)
    evidence["power_law_exponent"] = exponent
    stopped = history.stopped_epoch
    ended = "the budget ran out"
    if stopped is not None:
        ended = f"{_stopper(history)} stopped training at epoch {stopped}"
    text = f"still falling when {ended}: {where} {moved}"
    if exponent is not None:
        text += f"; loss ~ {unit}s^{exponent:.2f} over the second half"
        if -1.25 <= exponent <= -0.75:
            text += " (loss x steps roughly constant"
            accuracy = _training_accuracy(history)
            if accuracy == 1.0:
                evidence["training_accuracy"] = accuracy
                text += (
                    ", with every training sample classified correctly: the logistic-loss signature "
                    "on separable data, where the weights grow without bound and the loss only approaches 0"
                )
            text += ")"
    remedy = (
        "more steps"
        if stopped is None
        else f"{_stopper(history)} ended it, not the budget: more patience for it, or no early stop"
    )
    return Diagnosis(Outcome.DESCENDING, start_step, float(loss[-1]), text, evidence, remedy=remedy)


THRESHOLD_CHECKS = (_reached_zero, _stalled, _oscillating, _flat)
"""The rules that compare a quantity with a threshold, in the order they are checked; the trend
decides what none of them does."""


# ---------------------------------------------------------------------------- callback words
MAX_LEARNING_RATE_CHANGES_NAMED = 3


def _stopper(history: History) -> str:
    return history.stop_reason or "a callback"


def _callbacks_clause(history: History, found: Diagnosis, evidence: dict[str, Any]) -> str:
    """What the case's callbacks did, as evidence and as a clause after the explanation: a
    learning-rate change explains a drop (a staircase) or a flattening of the loss, an early stop
    is why the run is shorter than its budget, restored weights are why the final weights are not
    the last step's. Epochs, not steps: the callbacks act between epochs."""
    clauses = []
    changes = history.learning_rate_changes
    if changes:
        evidence["learning_rate_changes"] = [
            {"epoch": epoch, "before": before, "after": after} for epoch, before, after in changes
        ]
        named = ", ".join(
            f"{_fmt(before)} -> {_fmt(after)} from epoch {epoch}"
            for epoch, before, after in changes[:MAX_LEARNING_RATE_CHANGES_NAMED]
        )
        more = len(changes) - MAX_LEARNING_RATE_CHANGES_NAMED
        clauses.append(
            f"a callback changed the learning rate {named}" + (f" and {more} more times" if more > 0 else "")
        )
    if history.stopped_epoch is not None:
        evidence["stopped_epoch"] = history.stopped_epoch
        evidence["stop_reason"] = history.stop_reason
        if found.outcome != Outcome.DESCENDING:  # the trend's own words say it there
            clauses.append(f"{_stopper(history)} stopped training at epoch {history.stopped_epoch}")
    if history.restored_epoch is not None:
        evidence["restored_epoch"] = history.restored_epoch
        clauses.append(
            f"the final weights are epoch {history.restored_epoch}'s, restored by a callback at the end"
        )
    return "".join(f"; {clause}" for clause in clauses)


# ------------------------------------------------------------------------------ weight words
def _weights_story(history: History, weights: list[WeightEvents]) -> str:
    """One clause per weight that froze, lost its gradient or cycles (the others just moved)."""
    clauses = []
    for w in weights:
        parts = []
        if w.frozen_since_step is not None:
            cause = FREEZE_CAUSES.get(w.freeze_cause or "unknown", "")
            if w.frozen_since_step == 1:
                parts.append(f"never changed ({cause})")
            else:
                parts.append(f"frozen since step {w.frozen_since_step} ({cause})")
        if w.first_zero_gradient_step is not None:
            if (
                w.zero_gradient_since_step is not None
                and w.zero_gradient_since_step == w.first_zero_gradient_step
            ):
                parts.append(f"its gradient is exactly 0 from step {w.first_zero_gradient_step} on")
            elif w.zero_gradient_since_step is not None:
                parts.append(
                    f"its gradient was first exactly 0 at step {w.first_zero_gradient_step}, "
                    f"and at every step from {w.zero_gradient_since_step} on"
                )
            else:
                parts.append(
                    f"its gradient was exactly 0 at some steps (first at step {w.first_zero_gradient_step})"
                )
        if w.cycle_period is not None:
            parts.append(f"its values repeat every {w.cycle_period} steps from step {w.cycle_start_step}")
        if parts:
            clauses.append(f"{w.name}: " + "; ".join(parts))
    return ". ".join(clauses)


def _frozen_clause(frozen: list[WeightEvents], history: History) -> str:
    texts = []
    for w in frozen:
        cause = {
            "update-below-half-spacing": f"its updates round away at {history.variable_dtype}'s spacing",
            "gradient-zero": "its gradient is exactly 0",
            "update-arithmetic-zero": f"its update computes to 0 in {history.variable_dtype}",
        }.get(w.freeze_cause or "", "")
        since = (
            "never moved" if w.frozen_since_step == 1 else f"has been frozen since step {w.frozen_since_step}"
        )
        texts.append(f"the {w.short_name} {since}" + (f" ({cause})" if cause else ""))
    return "; ".join(texts)


def _names(weights: list[WeightEvents]) -> str:
    return " and ".join(w.short_name for w in weights)


def _verb(weights: list[WeightEvents]) -> str:
    return "moves" if len(weights) == 1 else "move"


# ----------------------------------------------------------------------------------- helpers
def _all_zero(arrays: dict[str, np.ndarray]) -> bool:
    return all(not np.any(np.asarray(a, np.float64)) for a in arrays.values())


def _training_accuracy(history: History) -> float | None:
    """The final epoch's training accuracy, when an accuracy metric was recorded."""
    for name, values in history.epoch_metrics.items():
        if "accuracy" in name and not name.startswith("val_") and values:
            return float(values[-1])
    return None


def _closest_to_moving(history: History) -> tuple[str, float, float, float] | None:
    """The weight whose intended update comes nearest its spacing: if even that rounds away, all
    do. None without the optimizer's intended update (a gradient says nothing about rounding)."""
    intended = history.intended_update or {}
    best: tuple[float, tuple[str, float, float, float]] | None = None
    for name, update in intended.items():
        if name not in history.final_weights:
            continue
        weights = np.asarray(history.final_weights[name])
        gaps = spacing(weights, history.variable_dtype).reshape(-1)
        size = np.abs(np.asarray(update, np.float64)).reshape(-1)
        if not size.size:
            continue
        ratio = size / gaps
        index = int(np.nanargmax(ratio))
        candidate = (
            float(ratio[index]),
            (name, float(weights.reshape(-1)[index]), float(gaps[index]), float(size[index])),
        )
        if best is None or candidate[0] > best[0]:
            best = candidate
    return None if best is None else best[1]


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
