"""The diagnosis on real (short) runs of the seed variants: each outcome, with its evidence."""

from __future__ import annotations

import numpy as np
import pytest
from factories import HIDDEN_RELU6, KERAS_MAJOR, keras3_dynamics, seed_case

from pytest_convergence import Case
from pytest_convergence.backend import train
from pytest_convergence.diagnosis.fact_check import check_facts

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


def test_float16_mse_reaches_exactly_zero_by_an_exact_fit_not_a_rounding() -> None:
    run = train(seed_case(loss="mean_squared_error", optimizer=DEFAULT_RMSPROP, steps=600), "float16")
    assert run.outcome == "reached-zero"
    evidence = run.diagnosis.evidence
    first_zero = evidence["first_zero_step"]
    assert run.loss[first_zero - 1] == 0.0 and run.loss[first_zero - 2] > 0.0
    assert not run.weights_changed[first_zero:].any()  # nothing moves once the loss is 0
    # the weights are exactly -0.5 and 0.5: the outputs equal the targets, in float64 too
    assert run.final_weights["dense/kernel"].item() == -0.5 and run.final_weights["dense/bias"].item() == 0.5
    assert evidence["exact_fit"] is True and evidence["float64_loss"] == 0.0
    assert "an exact fit" in run.diagnosis.explanation and "rounded" not in run.diagnosis.explanation
    assert check_facts(run.history, run.diagnosis, dtype=run.dtype) == []


@keras3_dynamics
def test_float16_loss_rounding_to_zero_with_adam_carrying_the_weights_on() -> None:
    # the loss computed in float16 (pinned) rounds to 0, which float64 disproves; Adam's moving
    # averages then move the weights for dozens of steps with every gradient exactly 0
    adam = {"class_name": "Adam", "config": {"learning_rate": 1.0}}
    run = train(seed_case(steps=200, loss_dtype="compute", optimizer=adam), "float16")
    evidence = run.diagnosis.evidence
    assert run.outcome == "reached-zero"
    assert evidence["exact_fit"] is False and evidence["float64_loss"] > 0.0
    assert "the float16 loss rounded to 0" in run.diagnosis.explanation
    since, last = evidence["zero_since_step"], evidence["last_weight_change_step"]
    assert last > since and evidence["moved_without_gradient"] is True
    assert run.weights_changed[last - 1] and not run.weights_changed[last:].any()
    assert run.gradient_zero[since - 1 : last].all()
    assert "momentum" in run.diagnosis.explanation and "stops moving" not in run.diagnosis.explanation
    assert check_facts(run.history, run.diagnosis, dtype=run.dtype) == []


@keras3_dynamics
def test_float32_mse_cycles_with_period_92_and_its_weights_with_period_184() -> None:
    # found beyond the old ceiling of 64: this run used to be called a plateau
    run = train(seed_case(loss="mean_squared_error", optimizer=DEFAULT_RMSPROP, steps=3000), "float32")
    diagnosis = run.diagnosis
    assert diagnosis.outcome.value == "oscillating"
    period, start = diagnosis.evidence["period"], diagnosis.evidence["cycle_start_step"] - 1
    assert period == 92
    assert np.array_equal(run.loss[start + period :], run.loss[start:-period])
    assert not np.array_equal(run.loss[start - 1 + period], run.loss[start - 1])
    weights = {w["name"]: w for w in diagnosis.evidence["weights"]}
    assert weights["dense/kernel"]["cycle_period"] == weights["dense/bias"]["cycle_period"] == 184
    assert "the kernel every 184 steps" in diagnosis.explanation
    assert check_facts(run.history, run.diagnosis, dtype=run.dtype) == []


@keras3_dynamics
def test_float16_kernel_frozen_while_the_bias_alone_cycles_is_said_so() -> None:
    run = train(seed_case(steps=1000), "float16")
    diagnosis = run.diagnosis
    weights = {w["name"]: w for w in diagnosis.evidence["weights"]}
    kernel, bias = weights["dense/kernel"], weights["dense/bias"]
    frozen = kernel["frozen_since_step"]
    assert frozen is not None and kernel["freeze_cause"] == "update-below-half-spacing"
    column = run.tensor_names.index("dense/kernel")
    assert not run.tensor_update[frozen - 1 :, column].any() and run.tensor_update[frozen - 2, column] != 0
    assert bias["frozen_since_step"] is None and bias["cycle_period"] == 2
    assert f"the kernel has been frozen since step {frozen}" in diagnosis.explanation
    assert "only the bias still moves (the bias in a cycle of 2 steps)" in diagnosis.explanation
    assert check_facts(run.history, run.diagnosis, dtype=run.dtype) == []


@keras3_dynamics  # Keras 2 computes this loss in float16 from the logits behind the softmax
def test_saturated_float16_classifier_is_not_called_an_underflow() -> None:
    # softmax outputs exactly 0 or 1 in float16: the float32 loss's own gradient is 0 (Keras clips
    # probabilities), so a cast underflow would be a cause that did not happen
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 4)).astype("float32")
    case = Case.sequential(
        "saturated",
        layers=[
            {"class_name": "Dense", "config": {"units": 16, "activation": "relu"}},
            {"class_name": "Dense", "config": {"units": 2, "activation": "softmax"}},
        ],
        input_shape=(4,),
        x=x,
        y=(x[:, 0] + 0.5 * rng.normal(size=64) > 0).astype("int64"),
        loss="sparse_categorical_crossentropy",
        optimizer={"class_name": "SGD", "config": {"learning_rate": 50.0}},
        steps=60,
    )
    run = train(case, "float16")
    diagnosis = run.diagnosis
    assert diagnosis.outcome.value == "stalled"
    assert diagnosis.evidence["cause"] == "saturated-outputs"
    assert run.output_evidence["loss_gradient_zero"] is True
    assert diagnosis.evidence["saturated_share"] > 0.5
    assert "underflowed" not in diagnosis.explanation
    assert check_facts(run.history, run.diagnosis, dtype=run.dtype) == []


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
    # checked, not assumed: the float32 loss's gradient is not 0 but is 0 once cast to float16
    assert run.output_evidence["loss_gradient_zero"] is False
    assert run.output_evidence["output_gradient_zero"] is True
    assert check_facts(run.history, run.diagnosis, dtype=run.dtype) == []


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


@pytest.mark.skipif(KERAS_MAJOR != 3, reason="Keras 2's loss objects have no dtype of their own")
def test_a_loss_object_with_its_own_float16_dtype_computes_and_is_reported_in_float16() -> None:
    import keras

    loss = keras.losses.BinaryCrossentropy(from_logits=True, dtype="float16")
    run = train(seed_case(loss=loss, steps=20), "float32")
    # the case's copy of the loss keeps its dtype (Keras 3.15's get_config drops it) ...
    assert run.loss[0] == np.float16(run.loss[0])
    assert train(seed_case(steps=20), "float32").loss[0] != run.loss[0]
    # ... and the run says what computed the loss, not what the tracker was handed (float32)
    assert run.loss_dtype == "float16"
