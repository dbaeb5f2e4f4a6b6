"""The diagnosis and the expectation checks on synthetic histories: no TensorFlow, no training.

Every run here is built by hand from numpy arrays, so each outcome's rule is tested on exactly the
history that should (or should not) trigger it, with the evidence it must carry.
"""

from __future__ import annotations

import math
import re
from typing import Any

import numpy as np
import pytest
from factories import make_history, make_run

from pytest_convergence.diagnosis.rules import PLATEAU_RELATIVE_CHANGE, Diagnosis, diagnose
from pytest_convergence.errors import CaseError, ExpectationFailed
from pytest_convergence.outcome import Outcome
from pytest_convergence.run import Run


def falling(steps: int, start: float = 1.0, stop: float = 0.1) -> np.ndarray:
    return np.linspace(start, stop, steps)


def stalled_history(steps: int = 100, stall_from: int = 61) -> tuple[np.ndarray, np.ndarray]:
    """Loss falls until step ``stall_from - 1``, then nothing moves: loss constant, updates 0."""
    loss = np.concatenate([falling(stall_from - 1, 1.0, 0.3), np.full(steps - stall_from + 1, 0.29)])
    update = np.concatenate([np.linspace(0.05, 0.01, stall_from - 1), np.zeros(steps - stall_from + 1)])
    return loss, update


# ---------------------------------------------------------------------------------- diverged
@pytest.mark.parametrize(("bad", "kind"), [(math.nan, "NaN"), (math.inf, "Inf"), (-math.inf, "Inf")])
def test_nonfinite_loss_at_step_k_is_diverged_at_k(bad: float, kind: str) -> None:
    loss = falling(40)
    loss[24:] = bad  # step 25 is the first bad one
    update = np.full(40, 0.02)
    update[10] = 0.5
    update[24:] = math.nan
    d = diagnose(make_history(loss, update))
    assert d.outcome is Outcome.DIVERGED
    assert d.step == 25
    assert d.loss == loss[23]
    assert d.evidence["first_nonfinite_step"] == 25
    assert d.evidence["last_finite_loss"] == loss[23]
    assert d.evidence["value"] == kind
    assert f"became {kind} at step 25" in d.explanation
    assert "loss computed in float32, weights in float32" in d.explanation
    assert "largest update before it was 0.5" in d.explanation


def test_nan_from_first_step() -> None:
    loss = np.full(30, math.nan)
    d = diagnose(make_history(loss, np.full(30, math.nan)))
    assert d.outcome is Outcome.DIVERGED
    assert d.step == 1
    assert d.loss is None
    assert d.evidence["first_nonfinite_step"] == 1
    assert d.evidence["last_finite_loss"] is None
    assert "from the first step" in d.explanation
    assert d.describe("float16").startswith("float16: diverged at step 1: the loss is NaN")


def test_finite_loss_with_nonfinite_final_weights_is_diverged() -> None:
    weights = {
        "dense/kernel": np.array([[math.inf]], np.float16),
        "dense/bias": np.array([0.5], np.float16),
    }
    loss = falling(50)
    d = diagnose(make_history(loss, variable_dtype="float16", final_weights=weights))
    assert d.outcome is Outcome.DIVERGED
    assert d.step is None
    assert d.loss == loss[-1]
    assert d.evidence["nonfinite_weights"] == ["dense/kernel"]
    assert "dense/kernel" in d.explanation


# ------------------------------------------------------------------------------ reached-zero
def test_loss_exactly_zero_at_the_end_is_reached_zero() -> None:
    loss = np.concatenate([falling(30, 1.0, 0.01), np.zeros(10)])  # zero from step 31
    d = diagnose(make_history(loss, loss_dtype="float16", variable_dtype="float16"))
    assert d.outcome is Outcome.REACHED_ZERO
    assert d.step == 31
    assert d.loss == 0.0
    assert d.evidence["first_zero_step"] == 31
    assert d.evidence["last_nonzero_loss"] == pytest.approx(0.01)
    assert d.evidence["loss_dtype"] == "float16"
    assert "exactly 0 from step 31" in d.explanation
    # no float64 recomputation of the loss: neither an exact fit nor a rounding is claimed
    assert "rounded" not in d.explanation and "exact fit" not in d.explanation
    # the synthetic weights moved until step 40: said, not "training stops moving"
    assert d.evidence["last_weight_change_step"] == 40
    assert "the weights still moved for 10 steps after it (last at step 40)" in d.explanation


def test_reached_zero_names_a_rounding_only_when_float64_says_the_loss_is_not_zero() -> None:
    loss = np.concatenate([falling(30, 1.0, 0.01), np.zeros(10)])
    update = np.concatenate([np.full(30, 0.01), np.zeros(10)])
    rounded = make_run(
        loss,
        update,
        loss_dtype="float16",
        variable_dtype="float16",
        output_evidence={"float64_loss": 3e-9},
    )
    d = diagnose(rounded.history)
    assert d.evidence["exact_fit"] is False and d.evidence["float64_loss"] == 3e-9
    assert "in float64 the final outputs give a loss of 3e-09: the float16 loss rounded to 0" in d.explanation
    assert "smallest positive float16 is 5.96e-08" in d.explanation
    assert "no weight moved after the loss reached 0" in d.explanation
    assert "loss_dtype" in d.remedy
    exact = make_run(loss, update, loss_dtype="float16", output_evidence={"float64_loss": 0.0})
    d = diagnose(exact.history)
    assert d.evidence["exact_fit"] is True
    assert "an exact fit" in d.explanation and "rounded" not in d.explanation


def test_weights_moving_after_zero_with_zero_gradients_are_carried_by_the_optimizer_state() -> None:
    loss = np.concatenate([falling(30, 1.0, 0.01), np.zeros(70)])
    update = np.concatenate([np.full(30, 0.01), np.full(20, 1e-3), np.zeros(50)])
    zero_gradients = np.zeros((100, 1), bool)
    zero_gradients[30:] = True
    run = make_run(
        loss,
        update,
        gradient_zero=zero_gradients,
        tensor_names=["dense/kernel"],
        tensor_update=update[:, None],
        tensor_checksum=np.cumsum(update)[:, None],
    )
    d = diagnose(run.history)
    assert d.evidence["steps_moved_after_zero"] == 20 and d.evidence["moved_without_gradient"] is True
    assert "moved for 20 steps after it (last at step 50) with every gradient exactly 0" in d.explanation
    assert "momentum" in d.explanation


def test_first_zero_step_counts_only_the_final_run_of_zeros() -> None:
    loss = falling(40, 1.0, 0.01)
    loss[9] = 0.0  # touched zero at step 10, left it
    loss[34:] = 0.0  # zero for good from step 35
    d = diagnose(make_history(loss))
    assert d.outcome is Outcome.REACHED_ZERO
    assert d.step == 35
    assert d.evidence["first_zero_step"] == 10  # the first zero, as its name says
    assert d.evidence["zero_since_step"] == 35
    assert d.evidence["last_nonzero_loss"] == loss[33]
    assert "first touched 0 at step 10 and left it again" in d.explanation


def test_loss_zero_from_the_first_step() -> None:
    d = diagnose(make_history(np.zeros(20)))
    assert d.outcome is Outcome.REACHED_ZERO
    assert d.step == 1
    assert d.evidence["last_nonzero_loss"] is None


def test_loss_that_touched_zero_and_left_is_not_reached_zero() -> None:
    loss = 1.0 / np.arange(1, 101)
    loss[19] = 0.0
    d = diagnose(make_history(loss))
    assert d.outcome is Outcome.DESCENDING


# ----------------------------------------------------------------------------------- stalled
CAST_UNDERFLOW = {
    "loss_dtype": "float32",
    "outputs_dtype": "float16",
    "loss_gradient_zero": False,
    "output_gradient_zero": True,
    "largest_loss_gradient": 2e-8,
}


def test_stall_with_zero_gradients_is_gradient_underflow_naming_both_dtypes() -> None:
    loss, update = stalled_history()
    grads = {"dense/kernel": np.zeros((1, 1), np.float16), "dense/bias": np.zeros(1, np.float16)}
    run = make_run(
        loss,
        update,
        variable_dtype="float16",
        loss_dtype="float32",
        final_gradients=grads,
        output_evidence=CAST_UNDERFLOW,
    )
    d = diagnose(run.history)
    assert d.outcome is Outcome.STALLED
    assert d.step == 61
    assert d.loss == pytest.approx(0.29)
    assert d.evidence["cause"] == "gradient-underflow"
    assert d.evidence["stall_step"] == 61
    assert d.evidence["unchanged_steps"] == 40
    assert d.evidence["last_update"] == update[59]
    assert d.evidence["variable_dtype"] == "float16"
    assert d.evidence["loss_dtype"] == "float32"
    assert "computed in float32" in d.explanation
    assert "(largest 2e-08 in float32) underflowed to 0 when cast to the float16 outputs" in d.explanation
    assert "smallest positive float16: 5.96e-08" in d.explanation


@pytest.mark.parametrize(
    ("probe", "cause", "said", "not_said"),
    [
        (
            {"loss_gradient_zero": True, "saturated_share": 0.75, "outputs_dtype": "float16"},
            "saturated-outputs",
            "75% of the outputs are exactly 0 or 1 in float16 (saturated)",
            "underflowed",
        ),
        ({"loss_gradient_zero": True, "saturated_share": None}, "loss-gradient-zero", "own gradient", "cast"),
        (
            {"loss_gradient_zero": False, "output_gradient_zero": False, "largest_loss_gradient": 0.3},
            "gradient-vanished-in-layers",
            "vanished in the backward pass",
            "cast",
        ),
        ({}, "gradient-zero", "exactly 0", "underflow"),
    ],
)
def test_zero_gradients_name_only_the_cause_the_probe_shows(
    probe: dict[str, Any], cause: str, said: str, not_said: str
) -> None:
    loss, update = stalled_history()
    grads = {"dense/kernel": np.zeros((1, 1), np.float16)}
    run = make_run(loss, update, variable_dtype="float16", final_gradients=grads, output_evidence=probe)
    d = diagnose(run.history)
    assert d.evidence["cause"] == cause
    assert said in d.explanation and not_said not in d.explanation


def test_stall_with_optimizer_update_below_half_spacing() -> None:
    loss, update = stalled_history()
    weights = {"dense/kernel": np.array([[-4.0]], np.float16), "dense/bias": np.array([0.5], np.float16)}
    intended = {"dense/kernel": np.array([[0.001]]), "dense/bias": np.array([1e-5])}
    run = make_run(loss, update, variable_dtype="float16", final_weights=weights, intended_update=intended)
    d = diagnose(run.history)
    assert d.outcome is Outcome.STALLED
    assert d.step == 61
    assert d.evidence["cause"] == "update-below-half-spacing"
    # the kernel's update (0.26 of its spacing) comes nearer to moving it than the bias's (0.02)
    assert d.evidence["weight"] == "dense/kernel"
    assert d.evidence["weight_value"] == -4.0
    assert d.evidence["spacing"] == 2.0**-8 == 0.00390625
    assert d.evidence["update"] == pytest.approx(0.001)
    line = d.describe("float16")
    assert line.startswith("float16: stalled from step 61 at loss 0.29: the last updates (about 0.001)")
    assert "below half the float16 spacing of the kernel (value -4, spacing 0.003906)" in line
    assert "no weight has changed for the last 40 steps" in line


def test_stall_without_intended_update_measures_the_gradient() -> None:
    loss, update = stalled_history()
    weights = {"dense/kernel": np.array([[2.0]], np.float16)}
    grads = {"dense/kernel": np.array([[3e-4]], np.float16)}
    run = make_run(loss, update, variable_dtype="float16", final_weights=weights, final_gradients=grads)
    d = diagnose(run.history)
    # without the optimizer's own update the diagnosis cannot claim rounding: it says what it knows
    assert d.evidence["cause"] == "weights-unchanged"
    assert d.evidence["largest_gradient"] == pytest.approx(3e-4, rel=1e-3)
    assert d.explanation.startswith("no weight has changed for the last")
    assert "gradients are not zero (largest 0.0002999" in d.explanation
    assert "every update rounds away" not in d.explanation


def test_stall_whose_intended_update_exceeds_half_the_spacing_is_not_blamed_on_rounding() -> None:
    loss, update = stalled_history()
    weights = {"dense/kernel": np.array([[-4.0]], np.float16)}
    grads = {"dense/kernel": np.array([[0.5]], np.float16)}
    extra = {"intended_update": {"dense/kernel": np.array([[0.01]])}}
    run = make_run(
        loss, update, variable_dtype="float16", final_weights=weights, final_gradients=grads, **extra
    )
    d = diagnose(run.history)
    assert d.outcome is Outcome.STALLED
    assert d.evidence["cause"] == "weights-unchanged"
    assert "above half the float16 spacing" in d.explanation
    assert "rounds away" not in d.explanation


def test_stall_with_update_lost_in_variable_dtype_is_update_underflow() -> None:
    loss, update = stalled_history()
    extra = {
        "intended_update": {"dense/kernel": np.array([[-2.5e-4]]), "dense/bias": np.array([1e-5])},
        "update_in_variable_dtype": {"dense/kernel": np.zeros((1, 1)), "dense/bias": np.zeros(1)},
    }
    d = diagnose(make_history(loss, update, variable_dtype="bfloat16", loss_dtype="bfloat16", **extra))
    assert d.outcome is Outcome.STALLED
    assert d.step == 61
    assert d.evidence["cause"] == "update-underflow"
    assert d.evidence["update"] == pytest.approx(2.5e-4)
    assert "computes to exactly 0 in bfloat16" in d.explanation
    assert "about 0.00025" in d.explanation
    assert "for the last 40 steps" in d.explanation


def test_nonzero_update_in_variable_dtype_is_not_update_underflow() -> None:
    loss, update = stalled_history()
    weights = {"dense/kernel": np.array([[-4.0]], np.float16)}
    extra = {
        "intended_update": {"dense/kernel": np.array([[0.001]])},
        "update_in_variable_dtype": {"dense/kernel": np.array([[0.001]])},
    }
    run = make_run(loss, update, variable_dtype="float16", final_weights=weights, **extra)
    assert diagnose(run.history).evidence["cause"] == "update-below-half-spacing"


@pytest.mark.parametrize(("steps", "minimum"), [(20, 3), (100, 10), (2000, 100)])
def test_stall_needs_the_minimum_number_of_unchanged_steps(steps: int, minimum: int) -> None:
    loss = 1.0 / np.arange(1, steps + 1)
    update = np.full(steps, 0.01)
    update[-minimum:] = 0.0
    stalled = diagnose(make_history(loss, update))
    assert stalled.outcome is Outcome.STALLED
    assert stalled.evidence["unchanged_steps"] == minimum
    assert stalled.step == steps - minimum + 1

    update[-minimum] = 0.01  # one unchanged step fewer
    assert diagnose(make_history(loss, update)).outcome is Outcome.DESCENDING


def test_nothing_ever_moved_stalls_from_step_1() -> None:
    loss = np.full(50, 0.7)
    d = diagnose(make_history(loss, np.zeros(50)))
    assert d.outcome is Outcome.STALLED
    assert d.step == 1
    assert d.evidence["unchanged_steps"] == 50
    assert "last_update" not in d.evidence


# ------------------------------------------------------------------------------- oscillating
@pytest.mark.parametrize(
    ("cycle", "prefix", "repeats"),
    [([0.3, 0.7], 10, 45), ([0.5, 0.9, 0.2, 0.4, 0.7], 7, 30)],
    ids=["period-2", "period-5"],
)
def test_exact_cycle_with_moving_weights_is_oscillating(
    cycle: list[float], prefix: int, repeats: int
) -> None:
    loss = np.concatenate([np.linspace(3.0, 2.0, prefix), np.tile(cycle, repeats)])
    update = np.full(loss.size, 0.2)
    d = diagnose(make_history(loss, update))
    assert d.outcome is Outcome.OSCILLATING
    assert d.evidence["period"] == len(cycle)
    assert d.evidence["cycle_start_step"] == prefix + 1
    assert d.step == prefix + 1
    assert d.loss == min(cycle)
    assert d.evidence["loss_min"] == min(cycle)
    assert d.evidence["loss_max"] == max(cycle)
    assert f"repeats exactly every {len(cycle)} steps" in d.explanation


def test_cycle_too_short_to_be_sure_is_not_oscillating() -> None:
    # period 2 needs 64 + 2 steps of history; 60 steps of an exact cycle are not enough
    loss = np.tile([0.3, 0.7], 30)
    assert diagnose(make_history(loss)).outcome is not Outcome.OSCILLATING


# ---------------------------------------------------------------------------------- plateau
def test_flat_loss_with_moving_weights_is_plateau() -> None:
    rng = np.random.default_rng(1)
    loss = 0.25 + 1e-6 * rng.standard_normal(200)
    update = rng.uniform(0.01, 0.05, 200)
    d = diagnose(make_history(loss, update))
    assert d.outcome is Outcome.PLATEAU
    assert d.step == 181
    assert d.evidence["window_start_step"] == 181
    assert d.evidence["window_unit"] == "step"
    assert abs(d.evidence["relative_change"]) <= 1e-3
    assert d.evidence["largest_recent_update"] == float(np.max(update[-20:]))
    assert d.loss == pytest.approx(0.25, abs=1e-5)
    assert "over the last 20 steps" in d.explanation


def test_constant_loss_with_moving_weights_is_plateau_not_oscillating() -> None:
    d = diagnose(make_history(np.full(200, 0.5), np.full(200, 0.03)))
    assert d.outcome is Outcome.PLATEAU
    assert d.evidence["flat_since_step"] == 1 and d.evidence["flat_loss"] == 0.5
    assert d.evidence["largest_recent_update"] == 0.03
    assert "exactly 0.5 (in float32) from step 1 to the end, 200 steps" in d.explanation


def test_a_loss_constant_since_a_freeze_is_a_plateau_from_that_step_not_descending() -> None:
    # the kernel froze at step 401; the bias drifts by 1e-11 a step, too little to move the loss:
    # a window straddling the freeze would read "still falling"
    steps = 4000
    loss = np.concatenate([np.linspace(1.0, 0.21, 400), np.full(steps - 400, 0.2)])
    kernel = np.r_[np.full(400, 1e-3), np.zeros(steps - 400)]
    bias = np.full(steps, 1e-11)
    per_weight = np.stack([kernel, bias], axis=1)
    run = make_run(
        loss,
        per_weight.max(axis=1),
        tensor_names=["dense/kernel", "dense/bias"],
        tensor_update=per_weight,
        tensor_checksum=np.cumsum(per_weight, axis=0),
        gradient_zero=np.zeros((steps, 2), bool),
        intended_update={"dense/kernel": np.array([[1e-9]]), "dense/bias": np.array([1e-11])},
    )
    d = diagnose(run.history)
    assert d.outcome is Outcome.PLATEAU and d.step == 401
    assert d.evidence["flat_since_step"] == 401 and d.evidence["flat_steps"] == 3600
    kernel_events, bias_events = d.evidence["weights"]
    assert kernel_events["frozen_since_step"] == 401
    assert kernel_events["freeze_cause"] == "update-below-half-spacing"
    assert bias_events["frozen_since_step"] is None
    assert "the kernel has been frozen since step 401" in d.explanation
    assert "only the bias still move" in d.explanation


# ------------------------------------------------------------------------------- descending
def test_loss_falling_as_one_over_step_is_descending_with_logistic_signature() -> None:
    loss = 3.0 / np.arange(1, 201)
    d = diagnose(make_history(loss, epoch_metrics={"loss": [float(loss[-1])], "accuracy": [1.0]}))
    assert d.outcome is Outcome.DESCENDING
    assert d.step == 181
    assert d.loss == loss[-1]
    assert d.evidence["window_unit"] == "step"
    assert d.evidence["relative_change"] < -PLATEAU_RELATIVE_CHANGE
    assert d.evidence["power_law_exponent"] == pytest.approx(-1.0, abs=1e-6)
    assert "steps^-1.00" in d.explanation
    assert "logistic-loss signature" in d.explanation
    # the window's numbers are its first and last values, labelled as such
    assert d.evidence["window_first_loss"] == loss[180] and d.evidence["window_last_loss"] == loss[-1]
    assert d.evidence["relative_change"] == (loss[-1] - loss[180]) / loss[180]
    assert f"went from {loss[180]:.4g} to {loss[-1]:.4g} (-9.5%)" in d.explanation


@pytest.mark.parametrize("metrics", [{"accuracy": [0.99]}, {}], ids=["99-percent", "no-accuracy"])
def test_separable_data_is_claimed_only_when_every_sample_is_classified(metrics: dict[str, Any]) -> None:
    loss = 3.0 / np.arange(1, 201)
    d = diagnose(make_history(loss, epoch_metrics={"loss": [float(loss[-1])], **metrics}))
    assert d.outcome is Outcome.DESCENDING
    assert "loss x steps roughly constant" in d.explanation
    assert "separable" not in d.explanation


def test_a_window_that_swings_is_described_by_its_range_not_as_a_rise() -> None:
    rng = np.random.default_rng(3)
    tail = np.where(rng.random(100) < 0.5, 2e-17, 0.5)
    tail[0], tail[-1] = 0.5, 0.516  # ends 3.2% higher than it starts
    loss = np.concatenate([np.linspace(1.0, 0.6, 900), tail])
    d = diagnose(make_history(loss))
    assert d.outcome is Outcome.PLATEAU
    assert "swinging between 2e-17 and 0.516" in d.explanation
    assert "rose" not in d.explanation


def test_a_window_that_did_not_change_says_so_not_changed_by_zero() -> None:
    loss = np.concatenate([np.linspace(1.0, 0.5, 180), [0.5, 0.50001] * 10])
    loss[-1] = 0.5
    d = diagnose(make_history(loss))
    assert d.evidence["relative_change"] == 0.0
    assert "is 0.5 at both ends" in d.explanation and "by only 0" not in d.explanation


def test_exponential_decay_is_descending_without_logistic_signature() -> None:
    steps = np.arange(1, 101)
    loss = np.exp(-steps / 20.0)
    d = diagnose(make_history(loss))
    assert d.outcome is Outcome.DESCENDING
    assert d.evidence["power_law_exponent"] < -1.25
    assert "logistic-loss signature" not in d.explanation


def test_short_run_has_no_power_law() -> None:
    d = diagnose(make_history(1.0 / np.arange(1, 11)))
    assert d.outcome is Outcome.DESCENDING
    assert d.evidence["power_law_exponent"] is None


# -------------------------------------------------------------------- multi-batch smoothing
def noisy_epochs(epochs: int = 40, steps_per_epoch: int = 10) -> np.ndarray:
    """Per-epoch means fall as 1/epoch; within an epoch the first two batches are much lower."""
    rng = np.random.default_rng(0)
    means = 1.0 / np.arange(1, epochs + 1)
    pattern = 0.1 * np.array([-2.0, -2.0] + [0.5] * (steps_per_epoch - 2))
    noise = rng.normal(0.0, 0.005, (epochs, steps_per_epoch))
    noise -= noise.mean(axis=1, keepdims=True)
    loss = means[:, None] + pattern[None, :] + noise + 0.3
    return loss.reshape(-1)


def test_noisy_batches_are_judged_per_epoch() -> None:
    loss = noisy_epochs()
    d = diagnose(make_history(loss, steps_per_epoch=10))
    assert d.outcome is Outcome.DESCENDING
    assert d.evidence["window_unit"] == "epoch"
    assert d.evidence["window_start_step"] == (40 - 4) * 10 + 1
    assert d.step == 361
    assert "over the last 4 epochs" in d.explanation


def test_same_noisy_batches_read_step_by_step_look_flat() -> None:
    # the control for the test above: without smoothing, the batch noise hides the descent
    d = diagnose(make_history(noisy_epochs(), steps_per_epoch=1))
    assert d.evidence["window_unit"] == "step"
    assert d.outcome is Outcome.PLATEAU


def test_epoch_plateau_reports_the_largest_update_of_the_whole_window() -> None:
    loss = 0.5 + 1e-7 * np.sin(np.arange(400) * 0.37)  # flat, but not one exact value
    update = np.full(400, 0.01)
    update[364] = 0.05  # step 365: inside the window of the last 4 epochs (steps 361..400)
    d = diagnose(make_history(loss, update, steps_per_epoch=10))
    assert d.outcome is Outcome.PLATEAU
    assert d.evidence["window_unit"] == "epoch"
    assert d.evidence["window_start_step"] == 361
    assert d.evidence["largest_recent_update"] == 0.05


def test_too_few_epochs_are_not_smoothed() -> None:
    d = diagnose(make_history(1.0 / np.arange(1, 16), steps_per_epoch=10))
    assert d.evidence["window_unit"] == "step"


# ---------------------------------------------------------------------------- priority order
def test_nan_beats_stall() -> None:
    loss, update = stalled_history()
    assert diagnose(make_history(loss, update)).outcome is Outcome.STALLED  # control
    loss[-1] = math.nan
    d = diagnose(make_history(loss, update))
    assert d.outcome is Outcome.DIVERGED
    assert d.step == 100


def test_reached_zero_beats_stall() -> None:
    loss, update = stalled_history()
    assert diagnose(make_history(loss, update)).outcome is Outcome.STALLED  # control
    loss[60:] = 0.0
    d = diagnose(make_history(loss, update))
    assert d.outcome is Outcome.REACHED_ZERO
    assert d.step == 61


def test_stall_beats_oscillation() -> None:
    loss = np.concatenate([np.linspace(3.0, 2.0, 10), np.tile([0.3, 0.7], 45)])
    update = np.full(loss.size, 0.2)
    update[-20:] = 0.0
    assert diagnose(make_history(loss, update)).outcome is Outcome.STALLED


# ---------------------------------------------------------------------------------- describe
def _examples() -> list[tuple[str, Run, Outcome, str]]:
    stall_loss, stall_update = stalled_history()
    nan_loss = falling(20)
    nan_loss[4] = math.nan
    return [
        ("float16", make_run(stall_loss, stall_update), Outcome.STALLED, "from step 61 at loss 0.29: "),
        ("bfloat16", make_run(nan_loss), Outcome.DIVERGED, "at step 5 at loss 0.8"),
        ("float64", make_run(np.r_[falling(9), np.zeros(40)]), Outcome.REACHED_ZERO, "at step 10: the loss"),
        ("mixed_float16", make_run(np.full(100, 0.5)), Outcome.PLATEAU, "from step 1 at loss 0.5: "),
        ("float32", make_run(1.0 / np.arange(1, 101)), Outcome.DESCENDING, "from step 91 at loss 0.01: "),
    ]


@pytest.mark.parametrize("index", range(5))
def test_describe_starts_with_dtype_and_outcome(index: int) -> None:
    dtype, run, outcome, where = _examples()[index]
    line = diagnose(run.history).describe(dtype)
    assert line.startswith(f"{dtype}: {outcome.value} {where}")


def test_describe_without_step() -> None:
    d = Diagnosis(Outcome.DIVERGED, None, 0.5, "weights became NaN")
    assert d.describe("float32") == "float32: diverged at loss 0.5: weights became NaN"


def test_run_diagnosis_is_the_diagnose_result() -> None:
    run = make_run(1.0 / np.arange(1, 101))
    assert run.diagnosis == diagnose(run.history)
    assert run.outcome == "descending"


# ------------------------------------------------------------------------------------ checks
def descending_run(**changes: Any) -> Run:
    """Loss 1/step for 200 steps in float16: descending, reaches 0.1 at step 10."""
    return make_run(1.0 / np.arange(1, 201), variable_dtype="float16", **changes)


def test_expect_met_returns_the_run() -> None:
    run = descending_run(target_loss=0.1)
    assert run.expect(outcome="descending") is run
    assert run.expect(outcome=["plateau", "descending"], converged=True, steps_to_target_at_most=10) is run
    assert run.expect(final_loss_below=0.006) is run


def test_expect_unmet_outcome_explains_the_run() -> None:
    run = descending_run()
    with pytest.raises(ExpectationFailed) as caught:
        run.expect(outcome="plateau")
    assert isinstance(caught.value, AssertionError)
    message = str(caught.value)
    lines = message.splitlines()
    assert lines[0] == "synthetic [float16, loop engine, 200 steps]: the run did not meet its expectation"
    assert "  - expected outcome plateau, got descending" in lines
    assert "  diagnosis: float16: descending from step 181 at loss 0.005: still falling" in message
    assert "computed in float32; weights in float16" in message


def test_expect_lists_every_unmet_part() -> None:
    run = descending_run(target_loss=0.001)
    with pytest.raises(ExpectationFailed) as caught:
        run.expect(outcome=("stalled", "plateau"), final_loss_below=0.001, converged=True)
    message = str(caught.value)
    assert "expected outcome stalled or plateau, got descending" in message
    assert "expected final loss <= 0.001, got 0.005" in message
    assert "expected to converge (final loss <= 0.001), final loss 0.005; target never reached" in message


def test_converged_without_any_target_asks_for_target_loss() -> None:
    with pytest.raises(ExpectationFailed, match="give the case a target_loss"):
        descending_run().expect(converged=True)


def test_converged_uses_final_loss_below_without_target() -> None:
    run = descending_run()
    assert run.expect(converged=True, final_loss_below=0.01) is run
    with pytest.raises(ExpectationFailed, match=r"expected not to converge \(final loss <= 0.01\)"):
        run.expect(converged=False, final_loss_below=0.01)


def test_converged_false_reports_when_target_was_first_reached() -> None:
    with pytest.raises(ExpectationFailed, match="target first reached at step 10"):
        descending_run(target_loss=0.1).expect(converged=False)


def test_steps_to_target_at_most() -> None:
    run = descending_run(target_loss=0.1)
    assert run.steps_to_target == 10
    run.expect(steps_to_target_at_most=10)
    with pytest.raises(
        ExpectationFailed, match=re.escape("expected loss <= 0.1 within 9 steps, reached at step 10")
    ):
        run.expect(steps_to_target_at_most=9)
    never = descending_run(target_loss=1e-6)
    with pytest.raises(ExpectationFailed, match="reached at never within 200 steps"):
        never.expect(steps_to_target_at_most=100)
    with pytest.raises(ExpectationFailed, match="steps_to_target_at_most needs a target_loss"):
        descending_run().expect(steps_to_target_at_most=100)


@pytest.mark.parametrize("outcome", ["converged", ["converged"]])
def test_outcome_converged_is_rejected_pointing_to_converged_true(outcome: Any) -> None:
    with pytest.raises(CaseError) as caught:
        descending_run().expect(outcome=outcome)
    assert caught.value.fix is not None and "converged=True" in caught.value.fix
    assert "converged=True" in str(caught.value)


def test_unknown_expectation_keyword_lists_valid_ones() -> None:
    with pytest.raises(CaseError) as caught:
        descending_run().expect(outcome="descending", converge=True)
    message = str(caught.value)
    assert "unknown expectation keyword(s) converge" in message
    assert "valid ones are: converged, outcome, final_loss_below, steps_to_target_at_most" in message


def test_unknown_outcome_lists_valid_outcomes() -> None:
    with pytest.raises(CaseError, match="valid outcomes are: reached-zero, stalled, oscillating"):
        descending_run().expect(outcome="exploded")


def test_declared_expectation_is_checked() -> None:
    from pytest_convergence.case import Expectation

    run = descending_run()
    run.expectation = Expectation(outcome="stalled")
    with pytest.raises(ExpectationFailed, match="expected outcome stalled, got descending"):
        run.check_declared_expectation()
    run.expectation = None
    assert run.check_declared_expectation() is run
