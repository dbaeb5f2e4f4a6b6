"""The real-models catalogue's models (tf-keras's integration models and an NLP-style one) as a
Keras team trains them: every engine trains them, ``loop`` is ``fit`` bit for bit (losses, History
with validation metrics, final weights with BatchNormalization's statistics), and the plugin's
own expectations judge their validation accuracy. Shortened to a few epochs: the catalogue
(``pytest --convergence fixtures``) trains them in full."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from factories import KERAS_MAJOR

from pytest_convergence import Case, CaseError, ExpectationFailed
from pytest_convergence.backend import train
from pytest_convergence.run import Run
from pytest_convergence.spec.loader import load_spec

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"
REAL_MODELS = [
    "tfkeras-vector",
    "tfkeras-shared",
    "tfkeras-timeseries",
    "tfkeras-image",
    "tfkeras-token",
    "nlp-sentiment",
]


def real_case(name: str, epochs: int = 3) -> Case:
    return load_spec(FIXTURES / f"{name}.convergence.toml").case.with_(epochs=epochs)


@pytest.mark.parametrize("name", REAL_MODELS)
def test_loop_is_bit_identical_to_fit_on_the_real_models(name: str) -> None:
    case = real_case(name)
    loop, fit = train(case, "float32", "loop"), train(case, "float32", "fit")
    np.testing.assert_array_equal(loop.loss, fit.loss)
    assert {"loss", "accuracy", "val_loss", "val_accuracy"} <= set(fit.epoch_metrics)
    assert loop.epoch_metrics == fit.epoch_metrics  # History, validation metrics included
    assert loop.final_weights.keys() == fit.final_weights.keys()
    for weight, values in fit.final_weights.items():
        np.testing.assert_array_equal(loop.final_weights[weight], values, err_msg=weight)
    if "BatchNormalization" in str(case.model) or name == "tfkeras-shared":
        assert any(weight.endswith("moving_variance") for weight in loop.final_weights)
    if KERAS_MAJOR == 3:  # what the loop run shows besides, checked once, on Keras 3
        SHOWN_BY_THE_LOOP_RUN.get(name, lambda case, run: None)(case, loop)


def the_trained_model_evaluates_as_historys_last_validation_epoch(case: Case, run: Run) -> None:
    assert case.validation is not None
    x, y = case.validation
    logs = run.model.evaluate(x, y, batch_size=case.effective_batch_size, verbose=0, return_dict=True)
    assert logs["loss"] == run.metric("val_loss") and logs["accuracy"] == run.metric("val_accuracy")


def an_embedding_models_sparse_gradient_is_recorded_dense(case: Case, run: Run) -> None:
    gradient = run.final_gradients["embedding/embeddings"]
    assert gradient.shape == (50, 8) and np.count_nonzero(gradient) > 0


def weight_names_are_paths_inside_the_model_whatever_the_model_is_called(case: Case, run: Run) -> None:
    if case.name == "tfkeras-vector":  # a Sequential model
        assert list(run.final_weights) == ["dense/kernel", "dense/bias", "dense_1/kernel", "dense_1/bias"]
    else:  # a model nested in another
        assert "base/dense/kernel" in run.final_weights and "dense_1/kernel" in run.final_weights


SHOWN_BY_THE_LOOP_RUN: dict[str, Callable[[Case, Run], None]] = {
    "tfkeras-image": the_trained_model_evaluates_as_historys_last_validation_epoch,
    "nlp-sentiment": an_embedding_models_sparse_gradient_is_recorded_dense,
    "tfkeras-vector": weight_names_are_paths_inside_the_model_whatever_the_model_is_called,
    "tfkeras-shared": weight_names_are_paths_inside_the_model_whatever_the_model_is_called,
}
"""Facts of one model's run, checked on the loop run above instead of training the model again."""


@pytest.mark.parametrize("name", REAL_MODELS)
def test_xla_trains_the_real_models(name: str) -> None:
    run = train(real_case(name, epochs=1), "float32", "xla")
    assert np.all(np.isfinite(run.loss)) and "val_accuracy" in run.epoch_metrics


def test_float32_validation_accuracy_is_judged_by_the_plugins_own_expectations() -> None:
    run = train(real_case("tfkeras-vector", epochs=10), "float32")
    run.expect(metrics=["val_accuracy > 0.7"])
    with pytest.raises(
        ExpectationFailed, match=r"expected val_accuracy > 1 \(final epoch\), got val_accuracy"
    ):
        run.expect(metrics=["val_accuracy > 1"])


@pytest.mark.parametrize("engine", ["loop", "fit"])
def test_a_model_that_cannot_train_on_the_data_is_a_clear_error_in_every_engine(engine: str) -> None:
    case = real_case("tfkeras-vector", epochs=1).with_(loss="sparse_categorical_crossentropy")
    with pytest.raises(CaseError) as caught:
        train(case, "float32", engine)
    message = str(caught.value)
    assert message.startswith("case 'tfkeras-vector', dtype float32, field 'model': the model cannot train")
    assert "Traceback" not in message and "\n  fix: check the model's input shape" in message


@pytest.mark.skipif(KERAS_MAJOR != 3, reason="Keras 3 adds float64 regularisation losses to a float32 loss")
def test_keras_refuses_the_shared_model_in_float64_as_the_spec_declares() -> None:
    spec = load_spec(FIXTURES / "tfkeras-shared.convergence.toml")
    expected = spec.case.expectations["float64"].raises
    assert expected is not None
    with pytest.raises(CaseError, match=expected):
        train(spec.case.with_(epochs=1), "float64")


def two_inputs_two_outputs(dtype: str) -> object:
    """A functional model with two named inputs and two named outputs."""
    from pytest_convergence.backend import import_tensorflow

    _, keras = import_tensorflow()
    left, right = keras.Input((3,), name="left"), keras.Input((2,), name="right")
    joined = keras.layers.Concatenate()([keras.layers.Dense(4, activation="relu")(left), right])
    first = keras.layers.Dense(1, name="first")(joined)
    second = keras.layers.Dense(2, activation="softmax", name="second")(joined)
    return keras.Model({"left": left, "right": right}, {"first": first, "second": second})


def test_a_model_with_two_inputs_and_two_outputs_trains_as_fit_does() -> None:
    rng = np.random.default_rng(0)
    x = {
        "left": rng.normal(size=(50, 3)).astype("float32"),
        "right": rng.normal(size=(50, 2)).astype("float32"),
    }
    labels = (x["left"][:, 0] > 0).astype("int64")
    y = {"first": x["right"][:, :1] * 2.0, "second": np.eye(2, dtype="float32")[labels]}
    case = Case(
        "two-by-two",
        model=two_inputs_two_outputs,
        x=x,
        y=y,
        loss={"first": "mean_squared_error", "second": "categorical_crossentropy"},
        optimizer="adam",
        epochs=3,
        batch_size=8,
        validation_split=0.2,
    )
    loop, fit = train(case, "float32", "loop"), train(case, "float32", "fit")
    np.testing.assert_array_equal(loop.loss, fit.loss)
    assert loop.epoch_metrics == fit.epoch_metrics and "val_loss" in fit.epoch_metrics
    for weight, values in fit.final_weights.items():
        np.testing.assert_array_equal(loop.final_weights[weight], values, err_msg=weight)
