"""The fact check catches a diagnosis that states what its history does not show: each kind of fact
(a step, a period, a value, a weight's freeze) tampered with by one, on synthetic histories."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np
import pytest
from factories import make_history

from pytest_convergence.diagnosis.fact_check import check_facts
from pytest_convergence.diagnosis.rules import diagnose
from pytest_convergence.history import History


def per_weight(loss: np.ndarray, kernel: np.ndarray, bias: np.ndarray, **extra: Any) -> History:
    updates = np.stack([kernel, bias], axis=1)
    return make_history(
        loss,
        updates.max(axis=1),
        tensor_names=["dense/kernel", "dense/bias"],
        tensor_update=updates,
        tensor_checksum=np.cumsum(np.where(np.arange(loss.size)[:, None] % 2 == 0, updates, -updates), 0),
        gradient_zero=np.zeros((loss.size, 2), bool),
        **extra,
    )


def runs() -> dict[str, History]:
    diverged = np.linspace(1.0, 0.5, 40)
    diverged[24:] = math.nan
    zero = np.concatenate([np.linspace(1.0, 0.01, 30), np.zeros(10)])
    zero[9] = 0.0
    cycle = np.concatenate([np.linspace(3.0, 2.0, 10), np.tile([0.3, 0.7, 0.5], 40)])
    stall = np.concatenate([np.linspace(1.0, 0.3, 60), np.full(40, 0.29)])
    stall_update = np.concatenate([np.full(60, 0.01), np.zeros(40)])
    flat = np.concatenate([np.linspace(1.0, 0.21, 400), np.full(3600, 0.2)])
    return {
        "diverged": make_history(diverged),
        "reached-zero": make_history(zero, np.r_[np.full(30, 0.01), np.zeros(10)]),
        "oscillating": make_history(cycle, np.full(cycle.size, 0.2)),
        "stalled": make_history(stall, stall_update),
        "descending": make_history(3.0 / np.arange(1, 201)),
        "plateau-frozen-kernel": per_weight(
            flat, np.r_[np.full(400, 1e-3), np.zeros(3600)], np.full(4000, 1e-11)
        ),
    }


@pytest.mark.parametrize("name", list(runs()))
def test_every_fact_of_a_true_diagnosis_holds(name: str) -> None:
    history = runs()[name]
    assert diagnose(history).outcome.value == name.split("-frozen")[0]
    assert check_facts(history) == []


def tampered(history: History, **evidence: Any) -> list[str]:
    true = diagnose(history)
    return check_facts(history, dataclasses.replace(true, evidence={**true.evidence, **evidence}))


@pytest.mark.parametrize(
    ("name", "change", "caught"),
    [
        ("diverged", {"first_nonfinite_step": 24}, "the loss at step 24 is finite"),
        ("reached-zero", {"first_zero_step": 31}, "the loss is 0 before step 31"),
        ("reached-zero", {"zero_since_step": 10}, "not 0 at every step from 10"),
        ("oscillating", {"period": 6}, "repeats every 3 steps, not 6"),
        ("oscillating", {"cycle_start_step": 20}, "already runs at step 19"),
        ("oscillating", {"loss_min": 0.5}, "loss_min"),
        ("stalled", {"stall_step": 50}, "a weight changed at or after the stall step 50"),
        ("descending", {"relative_change": -0.08}, "the relative change is"),
        ("descending", {"window_first_loss": 0.02}, "the window's first loss"),
        ("plateau-frozen-kernel", {"flat_since_step": 300}, "is not 0.2 at every step from 300"),
    ],
)
def test_a_stated_fact_that_does_not_hold_is_caught(name: str, change: dict[str, Any], caught: str) -> None:
    problems = tampered(runs()[name], **change)
    assert any(caught in p for p in problems), problems


def test_a_wrong_freeze_step_of_one_weight_is_caught_in_the_evidence_and_in_the_words() -> None:
    history = runs()["plateau-frozen-kernel"]
    true = diagnose(history)
    records = [dict(r) for r in true.evidence["weights"]]
    records[0]["frozen_since_step"] = 390
    wrong_words = true.explanation.replace("frozen since step 401", "frozen since step 390")
    problems = check_facts(
        history,
        dataclasses.replace(true, evidence={**true.evidence, "weights": records}, explanation=wrong_words),
    )
    assert any("dense/kernel changed after step 390" in p for p in problems), problems
    # the words' step is checked against the (true) weight it names too
    words_only = check_facts(history, dataclasses.replace(true, explanation=wrong_words))
    assert any("the kernel froze at step 390" in p for p in words_only), words_only


def test_a_step_in_the_words_that_no_fact_is_about_is_caught() -> None:
    history = runs()["stalled"]
    true = diagnose(history)
    problems = check_facts(
        history, dataclasses.replace(true, explanation=true.explanation + " (since step 7)")
    )
    assert problems == ["the words name step 7, which no checked fact is about"]


def test_a_dtype_the_run_did_not_use_is_caught() -> None:
    history = runs()["stalled"]
    true = diagnose(history)
    problems = check_facts(history, dataclasses.replace(true, explanation=true.explanation + " in bfloat16"))
    assert problems == ["the words name bfloat16, a dtype this run did not use"]
