"""A borderline outcome, end to end with real training: reported as borderline, met either way.

The seed model in float16 at learning rate 1.0 stalls (every update rounds away) from a step this
test measures first; trained for just enough steps that the stall is as long as the stall rule
needs, one step shorter on another machine would make it the outcome the rules after it decide.
"""

from __future__ import annotations

import pytest
from factories import seed_case

from pytest_convergence.backend import train
from pytest_convergence.diagnosis.weight_events import min_frozen_steps

OPTIMIZER = {"class_name": "RMSprop", "config": {"learning_rate": 1.0}}

SUITE = """
import pytest
from pytest_convergence import Case

CASE = Case.sequential(
    "seed-stall",
    layers=[{{"class_name": "Dense", "config": {{"units": 1}}}}],
    input_shape=(1,),
    x=[[-1.0], [1.0]], y=[1.0, 0.0],
    loss={{"class_name": "BinaryCrossentropy", "config": {{"from_logits": True}}}},
    optimizer={{"class_name": "RMSprop", "config": {{"learning_rate": 1.0}}}},
    steps={steps}, seed=0,
)

@pytest.mark.convergence(dtypes=["float16"])
def test_expects_stalled(convergence_train):
    convergence_train(CASE).expect(outcome="stalled")

@pytest.mark.convergence(dtypes=["float16"])
def test_expects_the_alternative(convergence_train):
    convergence_train(CASE).expect(outcome="{alternative}")

@pytest.mark.convergence(dtypes=["float16"])
def test_expects_neither(convergence_train):
    convergence_train(CASE).expect(outcome="diverged")
"""


def just_long_enough(stall_step: int) -> int:
    """The fewest steps whose unchanged tail (from ``stall_step``) is as long as a stall needs."""
    steps = stall_step
    while steps - stall_step + 1 < min_frozen_steps(steps):
        steps += 1
    return steps


def test_a_borderline_outcome_is_reported_as_borderline_and_met_either_way(
    user_suite: pytest.Pytester,
) -> None:
    long_run = train(seed_case(steps=1000, optimizer=OPTIMIZER), "float16", "loop")
    assert long_run.outcome == "stalled", long_run.diagnosis.describe("float16")
    steps = just_long_enough(int(long_run.diagnosis.evidence["stall_step"]))
    short_run = train(seed_case(steps=steps, optimizer=OPTIMIZER), "float16", "loop")
    near = short_run.diagnosis.borderline
    assert short_run.outcome == "stalled" and near is not None and near.rule == "stall"
    alternative = short_run.diagnosis.outcomes[1].value
    assert alternative != "stalled"

    user_suite.makepyfile(test_user=SUITE.format(steps=steps, alternative=alternative))
    result = user_suite.runpytest("--convergence")
    result.assert_outcomes(passed=2, failed=1)
    result.stdout.fnmatch_lines(
        [
            f"*expected outcome diverged, got stalled (borderline: {alternative}: no weight changed for the "
            f"last * steps, a stall needs *)*",
            f"*seed-stall*float16*stalled (borderline: {alternative})*",
            "borderline: the outcome's deciding quantity is within another machine's move of its threshold*",
        ]
    )
