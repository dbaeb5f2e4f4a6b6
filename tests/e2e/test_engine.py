"""The engines on real (small) Keras models: loop equals model.fit bit for bit, xla stays near it,
and a user's mistakes become errors that name the case, the dtype and the field."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from factories import HIDDEN_RELU6, KERAS_MAJOR, keras3_dynamics, seed_case

from pytest_convergence import Case, CaseError
from pytest_convergence.backend import import_tensorflow, train


def _multi_batch_case(**changes: object) -> Case:
    rng = np.random.default_rng(3)
    x = rng.normal(size=(100, 3)).astype("float32")
    y = (x[:, 0] * x[:, 1] + x[:, 2] > 0).astype("float32")
    settings: dict[str, object] = {
        "layers": [
            {"class_name": "Dense", "config": {"units": 8, "activation": "relu"}},
            {"class_name": "Dense", "config": {"units": 1}},
        ],
        "input_shape": (3,),
        "x": x,
        "y": y,
        "loss": {"class_name": "BinaryCrossentropy", "config": {"from_logits": True}},
        "optimizer": "adam",
        "epochs": 3,
        "batch_size": 16,  # 6 full batches and a partial one of 4, reshuffled by fit
        "metrics": ["accuracy"],
    }
    settings.update(changes)
    return Case.sequential("multi-batch", **settings)  # type: ignore[arg-type]


def _assert_same_run(reference, candidate) -> None:
    assert np.array_equal(reference.loss, candidate.loss, equal_nan=True), (
        f"first differing step: {int(np.flatnonzero(reference.loss != candidate.loss)[0]) + 1}"
    )
    assert reference.epoch_metrics == candidate.epoch_metrics
    assert reference.final_weights.keys() == candidate.final_weights.keys()
    for name, weights in reference.final_weights.items():
        assert np.array_equal(weights, candidate.final_weights[name]), name
    assert np.array_equal(reference.weights_changed, candidate.weights_changed)


@pytest.mark.parametrize("dtype", ["float16", "float32", "float64"])
def test_loop_is_bit_identical_to_fit_on_the_seed_case(dtype: str) -> None:
    # 120 steps: one epoch each, and fit's cost is per epoch (about 44 ms on Keras 3)
    case = seed_case(steps=120)
    fit = train(case, dtype, "fit")
    loop = train(case, dtype, "loop")
    assert fit.steps == loop.steps == 120
    assert len(fit.epoch_metrics["loss"]) == 120  # one batch per epoch: one History entry a step
    _assert_same_run(fit, loop)
    # the high learning rate moves the loss through a new value at almost every step, so equality
    # is not trivial
    assert len(np.unique(loop.loss)) > 50


@pytest.mark.parametrize("dtype", ["float32", "mixed_float16"])
def test_loop_is_bit_identical_to_fit_with_shuffled_batches(dtype: str) -> None:
    case = _multi_batch_case()
    fit = train(case, dtype, "fit")
    loop = train(case, dtype, "loop")
    assert loop.steps == 21 and loop.history.steps_per_epoch == 7
    assert set(loop.epoch_metrics) == {"loss", "accuracy"}
    assert len(loop.epoch_metrics["accuracy"]) == 3
    _assert_same_run(fit, loop)


def test_a_step_budget_that_ends_mid_epoch_matches_fit() -> None:
    case = _multi_batch_case(epochs=None, steps=10)
    fit = train(case, "float32", "fit")
    loop = train(case, "float32", "loop")
    assert loop.steps == fit.steps == 10
    _assert_same_run(fit, loop)


def test_xla_stays_within_its_documented_tolerance_of_fit() -> None:
    case = _multi_batch_case()
    fit = train(case, "float32", "fit")
    xla = train(case, "float32", "xla")
    assert xla.engine == "xla"
    np.testing.assert_allclose(xla.loss, fit.loss, rtol=1e-5)
    for name, weights in fit.final_weights.items():
        np.testing.assert_allclose(xla.final_weights[name], weights, rtol=1e-4, atol=1e-6)


def test_same_seed_gives_bit_identical_histories_and_another_seed_does_not() -> None:
    first = train(seed_case(steps=100), "float32")
    again = train(seed_case(steps=100), "float32")
    other = train(seed_case(steps=100, seed=1), "float32")
    assert np.array_equal(first.loss, again.loss)
    assert not np.array_equal(first.loss, other.loss)


def test_pinned_initial_weights_override_the_initialiser() -> None:
    pinned = [np.array([[0.5]]), np.array([0.25])]
    a = train(seed_case(steps=20, seed=0, initial_weights=pinned), "float32")
    b = train(seed_case(steps=20, seed=7, initial_weights=pinned), "float32")
    assert [w.tolist() for w in a.initial_weights.values()] == [[[0.5]], [0.25]]
    assert np.array_equal(a.loss, b.loss)


def test_a_run_records_what_it_ran_on_and_how_fast() -> None:
    run = train(seed_case(steps=50), "float16")
    assert run.steps == 50 and run.loss.dtype == np.float64
    # Keras 3 computes a float16 model's loss in float32, Keras 2 in float16
    assert run.loss_dtype == ("float32" if KERAS_MAJOR == 3 else "float16")
    assert run.variable_dtype == "float16"
    assert set(run.versions) >= {"python", "numpy", "tensorflow", "keras"}
    assert run.steps_per_second > 0 and run.wall_time > 0
    assert run.final_weights.keys() == run.initial_weights.keys() == run.final_gradients.keys()
    assert run.optimizer == "RMSprop(learning_rate=2.55)"


def test_a_shared_optimizer_object_is_copied_for_each_run() -> None:
    import keras

    case = seed_case(steps=30, optimizer=keras.optimizers.SGD(learning_rate=0.5))
    first = train(case, "float32")
    second = train(case, "float32")
    assert np.array_equal(first.loss, second.loss)


def test_a_nan_mid_run_is_a_diverged_outcome_not_a_crash() -> None:
    case = seed_case(
        steps=60,
        loss="mean_squared_error",
        optimizer={"class_name": "SGD", "config": {"learning_rate": 40.0}},
        x=[[-3.0], [3.0]],
    )
    run = train(case, "float16")
    assert run.outcome == "diverged"
    assert run.diagnosis.step is not None and run.diagnosis.step > 1
    assert not np.isfinite(run.loss[run.diagnosis.step - 1])


@keras3_dynamics
def test_the_hidden_layer_variant_stalls_because_float16_gradients_underflow() -> None:
    case = seed_case(
        layers=HIDDEN_RELU6, optimizer={"class_name": "RMSprop", "config": {"learning_rate": 1.29}}
    )
    run = train(case, "float16")
    assert run.outcome == "stalled"
    assert run.diagnosis.evidence["cause"] == "gradient-underflow"
    assert "float32" in run.diagnosis.explanation and "float16" in run.diagnosis.explanation


# ----------------------------------------------------------------------------------- bad input
def _raises(case: Case, dtype: str = "float32", engine: str = "loop") -> CaseError:
    with pytest.raises(CaseError) as caught:
        train(case, dtype, engine)
    return caught.value


def test_a_builder_that_raises_is_reported_with_case_dtype_and_field() -> None:
    def broken(dtype: str) -> None:
        raise RuntimeError("no such layer: Dnese")

    error = _raises(Case("broken", model=broken, x=[[1.0]], y=[1.0], loss="mse", steps=5), "float16")
    assert (error.case, error.dtype, error.field) == ("broken", "float16", "model")
    assert "no such layer: Dnese" in str(error)


def test_a_builder_must_return_a_keras_model() -> None:
    error = _raises(Case("not-a-model", model=lambda dtype: 42, x=[[1.0]], y=[1.0], loss="mse", steps=5))
    assert "must return a keras.Model" in str(error) and error.field == "model"


@pytest.mark.parametrize(
    ("field", "change"),
    [("loss", {"loss": "binary_crossentropie"}), ("optimizer", {"optimizer": "adamm"})],
)
def test_unknown_keras_names_are_reported_with_the_fix(field: str, change: dict[str, str]) -> None:
    error = _raises(seed_case(steps=5, **change))
    assert error.field == field
    assert change[field] in str(error)
    assert "fix:" in str(error)


def test_data_the_model_cannot_take_is_reported_before_training() -> None:
    error = _raises(seed_case(steps=5, x=[[1.0, 2.0], [3.0, 4.0]]))
    assert error.field == "x"
    assert "x has samples of shape [2], but the model's input takes samples of shape [1]" in str(error)
    assert "drop float32" not in str(error)  # the dtype is not what is wrong


def test_a_dtype_the_model_cannot_run_in_names_the_dtype() -> None:
    import keras
    import tensorflow as tf

    def with_lgamma(dtype: str) -> keras.Model:
        return keras.Sequential(
            [
                keras.Input((1,)),
                keras.layers.Dense(2),
                keras.layers.Lambda(lambda t: tf.math.lgamma(t * t + 1.0)),
                keras.layers.Dense(1),
            ]
        )

    case = Case("lgamma", model=with_lgamma, x=[[1.0], [2.0]], y=[0.0, 1.0], loss="mse", steps=3)
    assert train(case, "float32").steps == 3
    error = _raises(case, "bfloat16")
    assert (error.dtype, error.field) == ("bfloat16", "dtype")
    assert "Lgamma" in str(error) and "drop bfloat16" in str(error)


def test_a_loss_that_is_nan_from_the_first_step_is_an_error_naming_the_loss() -> None:
    tf, keras = import_tensorflow()

    def log_of_negative(dtype: str) -> Any:
        return keras.Sequential(
            [
                keras.Input((1,)),
                keras.layers.Dense(1),
                keras.layers.Lambda(lambda t: tf.math.log(t * 0.0 - 1.0)),
            ]
        )

    error = _raises(
        Case("nan-loss", model=log_of_negative, x=[[1.0], [2.0]], y=[0.0, 1.0], loss="mse", steps=5)
    )
    assert error.field == "loss"
    assert "first step" in str(error)


def test_an_unknown_engine_is_rejected_with_the_valid_ones() -> None:
    error = _raises(seed_case(steps=5), engine="turbo")
    assert "loop, xla, fit" in str(error)


def test_a_missing_private_keras_api_is_an_unsupported_keras_version_not_a_data_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The engines read a few private Keras APIs; when one is gone (a Keras version the plugin does
    not know), the error says so and names the API, instead of blaming the user's x."""
    from pytest_convergence.backend import import_keras
    from pytest_convergence.errors import KerasVersionError

    _, flavour = import_keras()
    if flavour.major == 3:
        from keras.src.backend.tensorflow import trainer

        monkeypatch.delattr(trainer, "TFEpochIterator")
        api = "TFEpochIterator"
    else:
        monkeypatch.delattr(flavour.keras.__internal__.utils, "get_data_handler")
        api = "get_data_handler"
    with pytest.raises(KerasVersionError) as caught:
        train(seed_case(steps=3), "float32")
    message = str(caught.value)
    assert message.startswith(f"unsupported Keras version {flavour.version}")
    assert api in message and "field 'x'" not in message
    assert not isinstance(caught.value, CaseError)


def test_a_model_without_a_loss_tracker_is_an_unsupported_keras_version(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from pytest_convergence.backend import import_keras
    from pytest_convergence.errors import KerasVersionError

    _, flavour = import_keras()
    monkeypatch.setattr(type(flavour), "loss_tracker", lambda self, model: None)
    with pytest.raises(KerasVersionError, match="loss tracker"):
        train(seed_case(steps=3), "float32")
