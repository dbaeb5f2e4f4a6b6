"""What the case's callbacks did, in the diagnosis: an early stop is not a budget run out, a
learning-rate change is named where it explains the loss, restored weights are said."""

from __future__ import annotations

import numpy as np
from factories import make_history

from pytest_convergence.diagnosis.fact_check import check_facts
from pytest_convergence.diagnosis.rules import diagnose
from pytest_convergence.outcome import Outcome

FALLING = 1.0 / np.arange(1, 41)


def test_an_early_stop_is_not_the_budget_running_out():
    history = make_history(
        FALLING, stopped_epoch=10, stop_reason="EarlyStopping on val_loss", steps_per_epoch=4
    )
    found = diagnose(history)
    assert found.outcome == Outcome.DESCENDING
    assert "EarlyStopping on val_loss stopped training at epoch 10" in found.explanation
    assert "budget" not in found.explanation
    assert found.remedy != "more steps" and "EarlyStopping" in found.remedy
    assert found.evidence["stopped_epoch"] == 10
    assert check_facts(history, found) == []


def test_without_callbacks_the_budget_ran_out():
    found = diagnose(make_history(FALLING))
    assert "the budget ran out" in found.explanation and found.remedy == "more steps"
    assert "learning_rate_changes" not in found.evidence


def test_a_learning_rate_drop_is_named_with_its_epoch():
    # a staircase: flat treads, a drop after each learning-rate cut
    loss = np.repeat([1.0, 0.5, 0.25, 0.125], 10) + np.linspace(0, 1e-3, 40)[::-1]
    history = make_history(
        loss, steps_per_epoch=5, learning_rate=np.array([0.1] * 2 + [0.05] * 2 + [0.025] * 4)
    )
    found = diagnose(history)
    assert "a callback changed the learning rate 0.1 -> 0.05 from epoch 3, 0.05 -> 0.025 from epoch 5" in (
        found.explanation
    )
    assert found.evidence["learning_rate_changes"][0] == {"epoch": 3, "before": 0.1, "after": 0.05}
    assert check_facts(history, found) == []


def test_restored_weights_are_said():
    history = make_history(FALLING, restored_epoch=7, stopped_epoch=10, stop_reason="EarlyStopping on loss")
    found = diagnose(history)
    assert "the final weights are epoch 7's, restored by a callback at the end" in found.explanation
    assert found.evidence["restored_epoch"] == 7
