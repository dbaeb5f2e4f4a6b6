"""The output evidence of real trained models (``probes.output_evidence``, ``loss_compute_dtype``):
each fact the diagnosis will check before it names a cause, on a run where it is known to hold,
confirmed by what the training itself did (weights that never moved, a loss exactly 0)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from factories import KERAS_MAJOR, SEED_X, SEED_Y, seed_case

from pytest_convergence import Case
from pytest_convergence.backend import import_keras, probes, train
from pytest_convergence.backend.capture import LossCapture
from pytest_convergence.run import Run

ADAM_2_55 = {"class_name": "Adam", "config": {"learning_rate": 2.55}}

# a softmax classifier whose logits differ by 30: exp(-30) is 0 in float16, so its float16
# probabilities are exactly 0 and 1; the third sample's is confidently wrong (loss ~16.1)
SATURATING_X = np.array([[1, 0], [0, 1], [-1, 0], [0, -1]], "float32")
SATURATING_Y = np.eye(3, dtype="float32")[[0, 1, 0, 2]]
SATURATING_KERNEL = 30 * np.array([[1, -1, 0], [0, 1, -1]], "float32")


def saturated_classifier(**changes: Any) -> Case:
    settings: dict[str, Any] = {
        "layers": [{"class_name": "Dense", "config": {"units": 3, "activation": "softmax"}}],
        "input_shape": (2,),
        "x": SATURATING_X,
        "y": SATURATING_Y,
        "loss": {"class_name": "CategoricalCrossentropy", "config": {}},
        "optimizer": {"class_name": "SGD", "config": {"learning_rate": 0.1}},
        "steps": 20,
        "batch_size": 4,
        "initial_weights": [SATURATING_KERNEL, np.zeros(3, "float32")],
    }
    settings.update(changes)
    return Case.sequential("saturated-softmax", **settings)


def evidence_of(run: Run, case: Case) -> dict[str, Any]:
    """The probe on the run's first batch (as the engine probes it), checked to change nothing."""
    _, flavour = import_keras()
    model = run.model
    batch = next(flavour.epochs(model, case))[0]
    before = [np.array(v.numpy()) for v in model.variables]  # Keras 3: seed generators too
    evidence = probes.output_evidence(flavour, model, batch)
    assert all(np.array_equal(b, np.array(v.numpy())) for b, v in zip(before, model.variables))
    assert tuple(evidence) == probes.OUTPUT_EVIDENCE_KEYS
    assert all(v is None or type(v) in (bool, float, str) for v in evidence.values())
    return evidence


def moved(run: Run) -> bool:
    return any(not np.array_equal(run.initial_weights[n], w) for n, w in run.final_weights.items())


@pytest.mark.parametrize("dtype", ["float16", "mixed_float16"])
def test_saturated_float16_probabilities_leave_the_float32_loss_a_gradient_of_exactly_0(dtype: str) -> None:
    # Keras 3 computes the loss in float32: it casts the float16 probabilities, so it cannot read
    # the logits behind the softmax, and its clipping of exact 0 and 1 has no gradient. Keras 2
    # computes in the outputs' dtype and reads the logits; pinned to float32, it casts as Keras 3.
    case = saturated_classifier(loss_dtype=None if KERAS_MAJOR == 3 else "float32")
    run = train(case, dtype)
    evidence = evidence_of(run, case)
    assert not moved(run)  # what training did: no weight ever changed
    assert evidence["loss_dtype"] == "float32" and evidence["outputs_dtype"] == "float16"
    assert evidence["loss_gradient_zero"] is True and evidence["largest_loss_gradient"] == 0.0
    assert evidence["output_gradient_zero"] is True
    assert evidence["saturated_share"] == 1.0
    # the loss is far from 0: one sample is confidently wrong, -log(1e-7) (Keras's clip) of 4
    assert evidence["float64_loss"] == pytest.approx(-np.log(1e-7) / 4, rel=1e-6)
    assert run.loss[-1] == pytest.approx(evidence["float64_loss"], rel=1e-6)
    assert evidence["outputs_equal_targets"] is False


def test_saturated_probabilities_alone_do_not_flatten_a_loss_that_reads_the_logits() -> None:
    # the loss computed in float16 takes the softmax output uncast, so Keras (2 and 3) reads the
    # logits behind it: the same saturated outputs, a gradient, weights that move
    case = saturated_classifier(loss_dtype="compute")
    run = train(case, "float16")
    evidence = evidence_of(run, case)
    assert moved(run)
    assert evidence["loss_dtype"] == "float16"
    assert evidence["saturated_share"] == 1.0
    assert evidence["loss_gradient_zero"] is False and evidence["output_gradient_zero"] is False
    assert evidence["largest_loss_gradient"] == 0.25  # (softmax - one-hot) / 4 samples


def test_a_tiny_float32_loss_gradient_underflows_when_cast_to_the_float16_outputs() -> None:
    # the seed with Adam at 2.55 and the loss in float32 (Keras 3's default, pinned for Keras 2)
    # stalls with logits near 17: the loss's gradient ~1e-8 is below half float16's smallest
    # subnormal (2**-24), so it is 0 once cast to the outputs' dtype
    case = seed_case(optimizer=ADAM_2_55, steps=500, loss_dtype="float32")
    run = train(case, "float16")
    evidence = evidence_of(run, case)
    assert all(not np.any(g) for g in run.final_gradients.values())
    assert not run.weights_changed[-100:].any()
    assert evidence["loss_dtype"] == "float32" and evidence["outputs_dtype"] == "float16"
    assert evidence["loss_gradient_zero"] is False
    assert 0 < evidence["largest_loss_gradient"] < 2.0**-25
    assert evidence["output_gradient_zero"] is True
    assert evidence["saturated_share"] is None  # logits: no probabilities to saturate
    assert 0 < evidence["float64_loss"] < 1e-7


def test_an_exact_fit_has_a_float64_loss_of_exactly_0() -> None:
    case = seed_case(loss="mean_squared_error", optimizer="rmsprop", steps=600)
    run = train(case, "float16")
    evidence = evidence_of(run, case)
    assert run.loss[-1] == 0.0
    assert run.final_weights["dense/kernel"].ravel().tolist() == [-0.5]
    assert run.final_weights["dense/bias"].ravel().tolist() == [0.5]
    assert evidence["float64_loss"] == 0.0
    assert evidence["outputs_equal_targets"] is True
    assert evidence["loss_gradient_zero"] is True
    assert evidence["saturated_share"] is None  # a regression


def test_a_loss_that_rounded_to_0_in_float16_is_positive_in_float64() -> None:
    # Adam drives the seed's logits past 40; the loss computed in float16 (log1p(exp(-40)))
    # is exactly 0 there, the same outputs' loss in float64 is not
    case = seed_case(optimizer=ADAM_2_55, steps=60, loss_dtype="compute")
    run = train(case, "float16")
    evidence = evidence_of(run, case)
    assert run.loss[-1] == 0.0
    assert evidence["loss_dtype"] == "float16"
    assert 0 < evidence["float64_loss"] < 1e-10
    assert evidence["outputs_equal_targets"] is False
    assert evidence["loss_gradient_zero"] is True  # flat in float16 too: nothing to underflow


@pytest.mark.skipif(KERAS_MAJOR != 3, reason="Keras 2's losses take no dtype")
def test_a_loss_objects_own_dtype_is_the_dtype_the_loss_is_computed_in() -> None:
    # built directly: the tracker is handed a float32 value whatever the loss computed in
    _, flavour = import_keras()
    keras = flavour.keras
    first_losses = {}
    for name, loss, expected in [
        (
            "float16 loss object",
            keras.losses.BinaryCrossentropy(from_logits=True, dtype="float16"),
            "float16",
        ),
        ("loss name", "binary_crossentropy", "float32"),
    ]:
        keras.backend.clear_session()
        model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)])
        model.set_weights([np.array([[0.3]], "float32"), np.array([0.1], "float32")])
        model.compile(loss=loss, optimizer=keras.optimizers.SGD(0.0))
        capture = LossCapture(flavour, model)
        x, y = np.array(SEED_X, "float32"), np.array(SEED_Y, "float32")
        first_losses[name] = model.fit(x, y, epochs=1, verbose=0, shuffle=False).history["loss"][0]
        assert capture.loss_dtype() == "float32", name
        assert probes.loss_compute_dtype(flavour, model, capture.loss_dtype()) == expected, name
        evidence = probes.output_evidence(flavour, model, (x, y))
        assert evidence["loss_dtype"] == expected and evidence["outputs_dtype"] == "float32"
    # what Keras really computed in: a float16 value, and a float32 one that is not
    assert float(np.float16(first_losses["float16 loss object"])) == first_losses["float16 loss object"]
    assert float(np.float16(first_losses["loss name"])) != first_losses["loss name"]


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_a_loss_given_by_name_is_computed_in_floatx_on_keras_3_and_the_outputs_dtype_on_keras_2(
    dtype: str,
) -> None:
    case = seed_case(loss="mse", steps=3)
    run = train(case, dtype)
    _, flavour = import_keras()
    expected = "float32" if KERAS_MAJOR == 3 else dtype
    assert probes.loss_compute_dtype(flavour, run.model, run.loss_dtype) == expected
    assert evidence_of(run, case)["loss_dtype"] == expected


@pytest.mark.parametrize("pin", ["float16", "float64"])
def test_a_pinned_loss_dtype_is_read_back_from_the_pinned_loss(pin: str) -> None:
    case = seed_case(steps=3, loss_dtype=pin)
    run = train(case, "float32")
    _, flavour = import_keras()
    assert run.loss_dtype == pin
    # read from the loss itself, not from what the tracker was handed
    assert probes.loss_compute_dtype(flavour, run.model, "float32") == pin
    evidence = evidence_of(run, case)
    assert evidence["loss_dtype"] == pin and evidence["outputs_dtype"] == "float32"
    assert evidence["float64_loss"] is not None  # the pinned loss's own function, re-run


def test_the_probe_restores_batch_norm_statistics_and_says_none_where_it_cannot_compute() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(16, 3)).astype("float32")
    case = Case.sequential(
        "batch-norm",
        layers=[
            {"class_name": "Dense", "config": {"units": 4}},
            {"class_name": "BatchNormalization", "config": {}},
            {"class_name": "Dropout", "config": {"rate": 0.5}},
            {"class_name": "Dense", "config": {"units": 1, "activation": "sigmoid"}},
        ],
        input_shape=(3,),
        x=x,
        y=(x[:, 0] > 0).astype("float32"),
        loss="binary_crossentropy",
        optimizer="adam",
        steps=5,
        batch_size=16,
    )
    run = train(case, "float32")
    evidence = evidence_of(run, case)  # weights, moving statistics among them, unchanged
    assert evidence["saturated_share"] is not None  # sigmoid probabilities, not from_logits
    _, flavour = import_keras()
    nothing = probes.output_evidence(flavour, run.model, (np.zeros((2, 7), "float32"), np.zeros(2)))
    assert nothing == dict.fromkeys(probes.OUTPUT_EVIDENCE_KEYS)


def float32_squared_error(y_true: Any, y_pred: Any) -> Any:
    """A custom loss that computes in float32 whatever it is given."""
    tf, _ = import_keras()
    return tf.reduce_mean(tf.square(tf.cast(y_true, "float32") - tf.cast(y_pred, "float32")), axis=-1)


def test_a_custom_loss_that_casts_has_no_float64_loss_and_sparse_labels_no_comparison() -> None:
    case = seed_case(loss=float32_squared_error, steps=3)
    evidence = evidence_of(train(case, "float32"), case)
    assert evidence["float64_loss"] is None  # it would be a float32 loss called float64
    assert evidence["outputs_equal_targets"] is False and evidence["saturated_share"] is None
    sparse = Case.sequential(
        "sparse-labels",
        layers=[{"class_name": "Dense", "config": {"units": 3, "activation": "softmax"}}],
        input_shape=(2,),
        x=SATURATING_X,
        y=np.array([0, 1, 0, 2]),
        loss="sparse_categorical_crossentropy",
        steps=3,
    )
    evidence = evidence_of(train(sparse, "float32"), sparse)
    assert evidence["outputs_equal_targets"] is None  # labels, not one value per output
    assert evidence["saturated_share"] is not None and evidence["float64_loss"] > 0
