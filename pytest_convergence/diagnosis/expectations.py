"""Judge a run against an expectation, failing with a message that explains the run.

A failed convergence test should answer "why?" without a debugger: the message names the dtype,
what was expected, what happened, and the diagnosis with its evidence (the stall step, the update
against the weight's spacing, the first NaN step...).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .rules import Diagnosis, diagnose

if TYPE_CHECKING:
    from ..case import Expectation
    from ..history import History


def unmet(history: History, expectation: Expectation, diagnosis: Diagnosis | None = None) -> list[str]:
    """Each unmet part of the expectation, in words; empty when the run meets it.

    ``diagnosis`` is the history's (diagnosed here when not given)."""
    problems: list[str] = []
    if expectation.raises is not None:
        return [
            f"expected the training to fail with an error containing {expectation.raises!r} "
            f"(Keras cannot train this dtype), but it trained: final loss {history.final_loss:.6g}"
        ]
    if diagnosis is None:
        diagnosis = diagnose(history)
    # a borderline decision could go either way on another machine: either outcome meets it
    if expectation.outcome is not None and not set(diagnosis.outcomes) & set(expectation.outcome):
        wanted = " or ".join(o.value for o in expectation.outcome)
        problems.append(f"expected outcome {wanted}, got {diagnosis.label}")
    if expectation.final_loss_below is not None and not (history.final_loss <= expectation.final_loss_below):
        problems.append(
            f"expected final loss <= {expectation.final_loss_below:g}, got {history.final_loss:.6g}"
        )
    if expectation.converged is not None:
        if history.target_loss is None and expectation.final_loss_below is None:
            problems.append(
                "converged=... needs a target: give the case a target_loss (or use final_loss_below)"
            )
        else:
            target = history.target_loss if history.target_loss is not None else expectation.final_loss_below
            assert target is not None
            reached = history.final_loss <= target
            if reached != expectation.converged:
                verb = "to converge" if expectation.converged else "not to converge"
                first = history.steps_to(target)
                seen = f"first reached at step {first}" if first else "never reached"
                problems.append(
                    f"expected {verb} (final loss <= {target:g}), final loss {history.final_loss:.6g}; "
                    f"target {seen}"
                )
    if expectation.steps_to_target_at_most is not None:
        target = history.target_loss
        if target is None:
            problems.append("steps_to_target_at_most needs a target_loss on the case")
        else:
            first_step = history.steps_to(target)
            if first_step is None or first_step > expectation.steps_to_target_at_most:
                got = f"step {first_step}" if first_step else f"never within {history.steps} steps"
                problems.append(
                    f"expected loss <= {target:g} within {expectation.steps_to_target_at_most} steps, "
                    f"reached at {got}"
                )
    for condition in expectation.metrics or ():
        try:
            actual = history.metric(condition.name)
        except KeyError as missing:
            problems.append(f"expected {condition}: {missing.args[0]}")
            continue
        if not condition.holds(actual):
            problems.append(f"expected {condition} (final epoch), got {condition.name} = {actual:.6g}")
    return problems


def failure_message(
    history: History,
    problems: list[str],
    *,
    case: str,
    dtype: str,
    engine: str,
    diagnosis: Diagnosis | None = None,
) -> str:
    """The message of a failed expectation: the run named by ``case``, ``dtype`` and ``engine``."""
    if diagnosis is None:
        diagnosis = diagnose(history)
    lines = [
        f"{case} [{dtype}, {engine} engine, {history.steps} steps]: the run did not meet its expectation"
    ]
    lines += [f"  - {problem}" for problem in problems]
    lines.append(f"  diagnosis: {diagnosis.describe(dtype)}")
    lines.append(
        f"  final loss {history.final_loss:.6g} ({history.final_loss_kind}, "
        f"computed in {history.loss_dtype}; weights in {history.variable_dtype}); "
        f"optimizer {history.optimizer or 'n/a'}"
    )
    return "\n".join(lines)
