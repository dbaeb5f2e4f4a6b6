"""Keras callbacks in a case: ``loop`` calls them as ``fit`` does and stays bit-identical to it, the
run records what they did (learning rate per epoch, an early stop, restored weights), every run
gets fresh ones, and a shorter history is diagnosed, summarised and snapshotted as what it is."""

from __future__ import annotations

import textwrap
from typing import Any

import numpy as np
import pytest

from pytest_convergence import Case, CaseError
from pytest_convergence.backend import import_keras, train

_, FLAVOUR = import_keras()
keras = FLAVOUR.keras
RNG = np.random.default_rng(0)
X = RNG.normal(size=(40, 3)).astype("float32")
SEPARABLE = (X @ np.array([1.0, -2.0, 0.5]) > 0).astype("float32")
NOISE = RNG.integers(0, 2, size=40).astype("float32")


def _case(callbacks: list[Any], *, y: np.ndarray = SEPARABLE, **changes: Any) -> Case:
    settings: dict[str, Any] = {
        "layers": [
            {"class_name": "Dense", "config": {"units": 8, "activation": "relu"}},
            {"class_name": "Dense", "config": {"units": 1}},
        ],
        "input_shape": (3,),
        "x": X,
        "y": y,
        "loss": {"class_name": "BinaryCrossentropy", "config": {"from_logits": True}},
        "optimizer": {"class_name": "Adam", "config": {"learning_rate": 0.05}},
        "epochs": 10,
        "batch_size": 8,  # 5 batches an epoch, reshuffled by fit
        "seed": 1,
        "callbacks": callbacks,
    }
    settings.update(changes)
    return Case.sequential("callbacks", **settings)


class HalveEveryOtherEpoch(keras.callbacks.Callback):  # type: ignore[misc,name-defined]
    """A user's own epoch callback that changes the learning rate."""

    def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
        if epoch % 2 == 1:
            rate = float(np.asarray(self.model.optimizer.learning_rate))
            self.model.optimizer.learning_rate = rate * 0.5


class StopBelow(keras.callbacks.Callback):  # type: ignore[misc,name-defined]
    """A user's own batch callback: stops mid-epoch once the running loss is low."""

    def on_train_batch_end(self, batch: int, logs: Any = None) -> None:
        if logs["loss"] < 0.45:
            self.model.stop_training = True


CALLBACKS: dict[str, dict[str, Any]] = {
    "LearningRateScheduler": {
        "callbacks": [lambda: keras.callbacks.LearningRateScheduler(lambda epoch, rate: rate * 0.7)]
    },
    "ReduceLROnPlateau": {
        "callbacks": [
            {
                "class_name": "ReduceLROnPlateau",
                "config": {"monitor": "loss", "factor": 0.5, "patience": 1, "min_delta": 0.05},
            }
        ]
    },
    "EarlyStopping-restore": {
        "callbacks": [
            keras.callbacks.EarlyStopping(monitor="val_loss", patience=2, restore_best_weights=True)
        ],
        "y": NOISE,
        "validation_split": 0.25,
        "epochs": 30,
    },
    "TerminateOnNaN": {
        "callbacks": ["TerminateOnNaN"],
        "loss": "mse",
        "optimizer": {"class_name": "SGD", "config": {"learning_rate": 10.0}},
    },
    "user-epoch": {"callbacks": [HalveEveryOtherEpoch()]},
    "user-batch": {"callbacks": [StopBelow]},
}


def _assert_same(fit: Any, loop: Any) -> None:
    a, b = fit.history, loop.history
    assert a.steps == b.steps
    assert np.array_equal(a.loss, b.loss, equal_nan=True)
    assert a.epoch_metrics.keys() == b.epoch_metrics.keys()
    for name, values in a.epoch_metrics.items():
        assert np.array_equal(values, b.epoch_metrics[name], equal_nan=True), name
    for name, weights in a.final_weights.items():
        assert np.array_equal(weights, b.final_weights[name], equal_nan=True), name
    assert np.array_equal(a.learning_rate, b.learning_rate)
    assert (a.stopped_epoch, a.stop_reason, a.restored_epoch) == (
        b.stopped_epoch,
        b.stop_reason,
        b.restored_epoch,
    )


@pytest.mark.parametrize("kind", list(CALLBACKS))
def test_loop_is_bit_identical_to_fit_with_callbacks(kind: str) -> None:
    settings = dict(CALLBACKS[kind])
    case = _case(settings.pop("callbacks"), **settings)
    fit, loop = train(case, "float32", "fit"), train(case, "float32", "loop")
    _assert_same(fit, loop)
    history = loop.history
    assert history.callbacks and len(history.learning_rate) == len(history.epoch_metrics["loss"])
    if kind in ("LearningRateScheduler", "ReduceLROnPlateau", "user-epoch"):
        assert history.learning_rate_changes, "the callback changed the learning rate"
        assert history.stopped_epoch is None and history.steps == case.total_steps
    if kind == "LearningRateScheduler":
        assert np.allclose(history.learning_rate, 0.05 * 0.7 ** np.arange(1, 11))
    if kind == "EarlyStopping-restore":
        assert history.stopped_epoch is not None and history.steps < case.total_steps
        assert history.stop_reason == "EarlyStopping on val_loss"
        assert history.restored_epoch is not None and history.restored_epoch < history.stopped_epoch
        assert "val_loss" in history.epoch_metrics
        assert "stopped training at epoch" in loop.diagnosis.explanation
        assert f"the final weights are epoch {history.restored_epoch}'s" in loop.diagnosis.explanation
    if kind == "TerminateOnNaN":
        assert history.stopped_epoch == 1 and not np.isfinite(history.loss[-1])
        assert history.stop_reason == "TerminateOnNaN"
    if kind == "user-batch":
        assert history.stopped_epoch is not None and history.steps % case.batches_per_epoch != 0


def test_every_run_gets_fresh_callbacks() -> None:
    given = keras.callbacks.EarlyStopping(monitor="loss", patience=0, restore_best_weights=True)
    case = _case([given], y=NOISE, epochs=6)
    first, second = train(case, "float32"), train(case, "float32")
    (one,), (other,) = first.in_process.callbacks, second.in_process.callbacks
    assert one is not given and other is not given and one is not other
    assert given.model is None and given.best_weights is None  # the case's own is untouched
    assert one.model is first.in_process.model and other.model is second.in_process.model


def test_a_bad_callback_names_the_case_and_the_field() -> None:
    with pytest.raises(
        CaseError, match=r"callbacks\[0\].*Keras has no callback class 'EarlyStoping'.*EarlyStopping"
    ):
        train(_case(["EarlyStoping"]), "float32")
    with pytest.raises(CaseError, match=r"callbacks\[0\]'?: expected a Keras callback"):
        _case([3])


SUITE = textwrap.dedent(
    """
    import numpy as np
    import pytest
    from pytest_convergence import Case

    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 3)).astype("float32")
    early = Case.sequential(
        "early-stop",
        layers=[{"class_name": "Dense", "config": {"units": 8, "activation": "relu"}},
                {"class_name": "Dense", "config": {"units": 1}}],
        input_shape=(3,), x=x, y=rng.integers(0, 2, size=40).astype("float32"),
        loss={"class_name": "BinaryCrossentropy", "config": {"from_logits": True}},
        optimizer={"class_name": "Adam", "config": {"learning_rate": 0.05}},
        epochs=30, batch_size=8, seed=1, validation_split=0.25,
        callbacks=[{"class_name": "EarlyStopping",
                    "config": {"monitor": "val_loss", "patience": 2, "restore_best_weights": True}}],
    )

    @pytest.mark.convergence(dtypes=["float32"])
    def test_early(convergence_train, convergence_snapshot):
        run = convergence_train(early)
        assert run.history.stopped_epoch is not None
        assert run == convergence_snapshot
    """
)


SPEC = textwrap.dedent(
    """
    name = "lr-callbacks"
    dtypes = ["float32"]
    epochs = 8
    batch_size = 4
    loss = "mse"
    callbacks = [
        { class_name = "ReduceLROnPlateau", config = { monitor = "loss", factor = 0.5, patience = 1 } },
        { class_name = "LearningRateScheduler", config = { schedule = "user_schedules:halve_at_4" } },
    ]

    [model]
    input_shape = [1]
    layers = [{ class_name = "Dense", config = { units = 1 } }]

    [optimizer]
    class_name = "SGD"
    config = { learning_rate = 0.05 }

    [data]
    generator = "linear_regression"
    samples = 16
    features = 1
    noise = 0.1
    """
)
SCHEDULE = "def halve_at_4(epoch, rate):\n    return rate / 2 if epoch == 4 else rate\n"


def test_callbacks_train_summarise_and_snapshot_in_python_and_spec_files(user_suite: pytest.Pytester) -> None:
    user_suite.makepyfile(test_user=SUITE, user_schedules=SCHEDULE)
    user_suite.makefile(".convergence.toml", **{"lr-callbacks": SPEC})
    created = user_suite.runpytest("--convergence", "--snapshot-update")
    created.assert_outcomes(passed=2)
    created.stdout.fnmatch_lines(["*= convergence summary =*"])
    created.stdout.fnmatch_lines(["early-stop*float32*loop*"])
    created.stdout.fnmatch_lines(["lr-callbacks*float32*loop*"])
    snapshots = {path.name: path.read_text() for path in user_suite.path.rglob("*.convergence.txt")}
    early = next(text for name, text in snapshots.items() if "early" in name)
    assert "callbacks: EarlyStopping" in early and "event stopped_epoch: " in early
    assert "event restored_epoch: " in early
    spec = next(text for name, text in snapshots.items() if "lr-callbacks" in name)
    assert "callbacks: ReduceLROnPlateau, LearningRateScheduler" in spec
    user_suite.runpytest("--convergence").assert_outcomes(passed=2)
