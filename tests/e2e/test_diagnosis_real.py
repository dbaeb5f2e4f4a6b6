"""The diagnosis on real (short) runs of the seed variants: each outcome, with its evidence."""

from __future__ import annotations

import numpy as np
import pytest
from factories import HIDDEN_RELU6, keras3_dynamics, seed_case

from pytest_convergence import Case
from pytest_convergence.backend import train

DEFAULT_RMSPROP = "rmsprop"  # learning rate 0.001


def test_bfloat16_stalls_from_the_first_step_because_updates_are_below_half_its_spacing() -> None:
    run = train(seed_case(optimizer=DEFAULT_RMSPROP, steps=50), "bfloat16")
    diagnosis = run.diagnosis
    assert diagnosis.outcome.value == "stalled" and diagnosis.step == 1
    evidence = diagnosis.evidence
    assert evidence["cause"] == "update-below-half-spacing"
    assert evidence["weight"].endswith("kernel")
    # bfloat16 keeps 8 significant bits: the spacing in [1, 2) is 2**-7
    assert 1 <= abs(evidence["weight_value"]) < 2 and evidence["spacing"] == 2.0**-7
    assert evidence["update"] < evidence["spacing"] / 2
    assert np.isclose(evidence["update"], 0.001, rtol=0.1)  # RMSprop moves about its learning rate
    assert "below half the bfloat16 spacing of the kernel" in diagnosis.describe("bfloat16")


def test_float16_mse_reaches_exactly_zero() -> None:
    run = train(seed_case(loss="mean_squared_error", optimizer=DEFAULT_RMSPROP, steps=600), "float16")
    assert run.outcome == "reached-zero"
    first_zero = run.diagnosis.evidence["first_zero_step"]
    assert run.loss[first_zero - 1] == 0.0 and run.loss[first_zero - 2] > 0.0
    assert not run.weights_changed[first_zero:].any()  # nothing moves once the loss is 0


@keras3_dynamics
def test_float16_at_a_high_learning_rate_oscillates_in_a_two_step_cycle() -> None:
    run = train(seed_case(steps=1000), "float16")
    diagnosis = run.diagnosis
    assert diagnosis.outcome.value == "oscillating"
    period = diagnosis.evidence["period"]
    assert period == 2
    start = diagnosis.evidence["cycle_start_step"] - 1
    assert np.array_equal(run.loss[start + period :], run.loss[start:-period])
    assert run.weights_changed[start:].all()


def test_float32_mse_plateaus_while_the_weights_keep_moving() -> None:
    run = train(seed_case(loss="mean_squared_error", optimizer=DEFAULT_RMSPROP, steps=3000), "float32")
    assert run.outcome == "plateau"
    assert run.diagnosis.evidence["largest_recent_update"] > 0
    assert abs(run.diagnosis.evidence["relative_change"]) < 1e-3


def test_float32_default_rmsprop_is_still_descending_after_300_steps() -> None:
    run = train(seed_case(optimizer=DEFAULT_RMSPROP, steps=300), "float32")
    assert run.outcome == "descending"
    assert run.diagnosis.evidence["relative_change"] < -1e-3
    assert run.loss[-1] < run.loss[0]


@keras3_dynamics
@pytest.mark.parametrize("dtype", ["float16", "mixed_float16"])
def test_the_hidden_relu_variant_stalls_with_underflowed_gradients(dtype: str) -> None:
    case = seed_case(
        layers=HIDDEN_RELU6, optimizer={"class_name": "RMSprop", "config": {"learning_rate": 1.29}}
    )
    run = train(case, dtype)
    assert run.outcome == "stalled"
    assert run.diagnosis.evidence["cause"] == "gradient-underflow"
    assert all(not np.any(g) for g in run.final_gradients.values())
    assert run.final_loss > 0


def test_adam_in_bfloat16_never_moves_because_its_update_computes_to_zero() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 2)).astype("float32")
    case = Case.sequential(
        "adam-bfloat16",
        layers=[
            {"class_name": "Dense", "config": {"units": 4, "activation": "relu"}},
            {"class_name": "Dense", "config": {"units": 1}},
        ],
        input_shape=(2,),
        x=x,
        y=(x[:, 0] > 0).astype("float32"),
        loss={"class_name": "BinaryCrossentropy", "config": {"from_logits": True}},
        optimizer="adam",
        epochs=3,
        batch_size=16,
    )
    run = train(case, "bfloat16")
    assert run.outcome == "stalled"
    assert run.diagnosis.evidence["cause"] == "update-underflow"
    assert "exactly 0 in bfloat16" in run.diagnosis.explanation
    assert train(case, "float32").weights_changed.all()  # the same case moves in float32
