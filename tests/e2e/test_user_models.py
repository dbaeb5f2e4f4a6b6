"""The user's own Keras code: subclassed models (built or not), nested models, several inputs and
outputs, a user's own ``train_step`` or ``compute_loss``, custom layers, losses and metrics, and
the dtype of every variable whatever made it.

Each model trains under ``loop`` and ``fit`` and the two are compared bit for bit (losses,
History, final weights); the classes are made with ``tf.keras``, the Keras the plugin trains with
on Keras 3 and on Keras 2 alike.
"""

from __future__ import annotations

import functools
import textwrap
from dataclasses import replace
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from pytest_convergence import Case, CaseError
from pytest_convergence.backend import import_keras, train


@functools.cache
def user_code() -> SimpleNamespace:
    """The user's classes, made once (importing Keras only when a test needs them)."""
    tf, flavour = import_keras()
    keras = flavour.keras
    keras3 = flavour.major == 3

    class Mlp(keras.Model):  # type: ignore[name-defined]
        def __init__(self, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            self.hidden = keras.layers.Dense(8, activation="relu")
            self.out = keras.layers.Dense(1)

        def call(self, x: Any) -> Any:
            return self.out(self.hidden(x))

    class OwnStep(Mlp):
        """keras.io's "customizing what happens in fit" step."""

        def train_step(self, data: Any) -> Any:
            x, y = data
            with tf.GradientTape() as tape:
                y_pred = self(x, training=True)
                loss = (
                    self.compute_loss(x=x, y=y, y_pred=y_pred)
                    if keras3
                    else self.compiled_loss(y, y_pred, regularization_losses=self.losses)
                )
            gradients = tape.gradient(loss, self.trainable_variables)
            self.optimizer.apply_gradients(zip(gradients, self.trainable_variables))
            if not keras3:
                self.compiled_metrics.update_state(y, y_pred)
                return {m.name: m.result() for m in self.metrics}
            for metric in self.metrics:
                if metric.name == "loss":
                    metric.update_state(loss)
                else:
                    metric.update_state(y, y_pred)
            return {m.name: m.result() for m in self.metrics}

    class OwnTracker(Mlp):
        """A step that keeps its loss in a metric of its own, not the model's loss tracker."""

        def __init__(self) -> None:
            super().__init__()
            self.own_loss = keras.metrics.Mean(name="own_loss")

        def train_step(self, data: Any) -> Any:
            x, y = data
            with tf.GradientTape() as tape:
                loss = tf.reduce_mean(tf.square(y - self(x, training=True)))
            gradients = tape.gradient(loss, self.trainable_variables)
            self.optimizer.apply_gradients(zip(gradients, self.trainable_variables))
            self.own_loss.update_state(loss)
            return {"own_loss": self.own_loss.result()}

    class DoubleLoss(Mlp):
        """A loss of its own through compute_loss (Keras 3's hook; Keras 2 calls it too)."""

        def compute_loss(
            self, x: Any = None, y: Any = None, y_pred: Any = None, sample_weight: Any = None, **kw: Any
        ) -> Any:
            if keras3:
                return 2.0 * super().compute_loss(x=x, y=y, y_pred=y_pred, sample_weight=sample_weight, **kw)
            return 2.0 * self.compiled_loss(y, y_pred, sample_weight, regularization_losses=self.losses)

    class Scale(keras.layers.Layer):  # type: ignore[name-defined]
        """A custom layer: a learnt scale per feature, and a counter that is not a float."""

        def __init__(self, own_dtype: str | None = None, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            self.own_dtype = own_dtype

        def build(self, input_shape: Any) -> None:
            self.scale = self.add_weight(
                name="scale", shape=(int(input_shape[-1]),), initializer="ones", dtype=self.own_dtype
            )
            self.calls = self.add_weight(
                name="calls", shape=(), initializer="zeros", dtype="int32", trainable=False
            )

        def call(self, x: Any) -> Any:
            return x * tf.cast(self.scale, x.dtype)

    class MeanError(keras.metrics.Metric):  # type: ignore[name-defined]
        """A metric of the user's own: the mean absolute error, kept in two variables."""

        def __init__(self, name: str = "mean_error", **kwargs: Any) -> None:
            super().__init__(name=name, **kwargs)
            self.total = self.add_weight(name="total", initializer="zeros")
            self.count = self.add_weight(name="count", initializer="zeros")

        def update_state(self, y_true: Any, y_pred: Any, sample_weight: Any = None) -> None:
            error = tf.abs(tf.cast(y_true, y_pred.dtype) - y_pred)
            self.total.assign_add(tf.cast(tf.reduce_sum(error), self.total.dtype))
            self.count.assign_add(tf.cast(tf.size(error), self.count.dtype))

        def result(self) -> Any:
            return self.total / self.count

    class Mae(keras.losses.Loss):  # type: ignore[name-defined]
        def call(self, y_true: Any, y_pred: Any) -> Any:
            return tf.reduce_mean(tf.abs(tf.cast(y_true, y_pred.dtype) - y_pred), axis=-1)

    def nested(dtype: str) -> Any:
        base = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8, activation="relu")], name="base")
        inputs = keras.Input((4,))
        return keras.Model(inputs, keras.layers.Dense(1, name="head")(Scale(name="scale")(base(inputs))))

    def two_in_two_out(dtype: str) -> Any:
        a, b = keras.Input((4,), name="a"), keras.Input((2,), name="b")
        hidden = keras.layers.Dense(8, activation="relu")(keras.layers.Concatenate()([a, b]))
        outputs = {name: keras.layers.Dense(1, name=name)(hidden) for name in ("up", "down")}
        return keras.Model({"a": a, "b": b}, outputs)

    return SimpleNamespace(**locals())


rng = np.random.default_rng(7)
X = rng.normal(size=(40, 4)).astype("float32")
Y = (X.sum(axis=1, keepdims=True) > 0).astype("float32")


def case(model: Any, **changes: Any) -> Case:
    settings: dict[str, Any] = {
        "x": X,
        "y": Y,
        "loss": "mse",
        "optimizer": {"class_name": "SGD", "config": {"learning_rate": 0.05}},
        "epochs": 4,
        "batch_size": 16,  # two full batches and one of 8, reshuffled every epoch
        "seed": 3,
        **changes,
    }
    return Case("user-model", model=model, **settings)


def assert_fit_equals_loop(test_case: Case, dtype: str = "float32") -> tuple[Any, Any]:
    fit, loop = train(test_case, dtype, "fit"), train(test_case, dtype, "loop")
    assert np.array_equal(fit.loss, loop.loss), "per-step losses"
    assert fit.epoch_metrics == loop.epoch_metrics, "History"
    assert fit.final_weights.keys() == loop.final_weights.keys()
    for name, weights in fit.final_weights.items():
        assert np.array_equal(weights, loop.final_weights[name]), name
    return fit, loop


@pytest.mark.parametrize("built", [False, True, None], ids=["unbuilt", "built", "sequential-without-input"])
def test_a_subclassed_model_built_or_not_trains_on_every_engine_and_loop_is_fit_bit_for_bit(
    built: bool | None,
) -> None:
    def build(dtype: str) -> Any:
        if built is None:  # no variables before its first call either
            layers = user_code().flavour.keras.layers
            return user_code().flavour.keras.Sequential([layers.Dense(8, activation="relu"), layers.Dense(1)])
        model = user_code().Mlp()
        if built:
            model.build((None, 4))  # Keras 3 marks it built without building its layers
        return model

    test_case = case(build, metrics=["mae"])
    fit, loop = assert_fit_equals_loop(test_case)
    # built from the first batch before training: the initial weights are read, and they moved
    assert sorted(loop.history.initial_weights) == [
        "dense/bias",
        "dense/kernel",
        "dense_1/bias",
        "dense_1/kernel",
    ]
    assert not np.array_equal(
        loop.history.initial_weights["dense/kernel"], loop.final_weights["dense/kernel"]
    )
    assert fit.history.initial_weights.keys() == loop.history.initial_weights.keys()
    assert loop.diagnosis.outcome != "stalled" and loop.loss[-1] < loop.loss[0]
    if built is False:
        xla = train(test_case, "float32", "xla")
        np.testing.assert_allclose(xla.loss, loop.loss, rtol=1e-4)


def test_a_subclassed_model_is_built_under_the_runs_dtype_policy() -> None:
    run = train(case(lambda dtype: user_code().Mlp(), epochs=1), "mixed_float16", "loop")
    assert (run.variable_dtype, run.compute_dtype, run.dtype_mismatch) == ("float32", "float16", "")
    assert all(w.dtype == np.float32 for w in run.history.initial_weights.values())


def test_nested_models_custom_layers_losses_and_metrics_and_several_inputs_and_outputs_match_fit() -> None:
    code = user_code()
    nested = case(code.nested, loss=code.Mae(), metrics=[code.flavour.keras.metrics.MeanAbsoluteError()])
    _, loop = assert_fit_equals_loop(nested)
    assert {"base/dense/kernel", "scale/scale", "scale/calls", "head/kernel"} <= set(loop.final_weights)
    assert "mean_absolute_error" in loop.epoch_metrics
    two = case(
        code.two_in_two_out,
        x={"a": X, "b": X[:, :2]},
        y={"up": Y, "down": -Y},
        loss={"up": "mse", "down": code.Mae()},
        loss_weights={"up": 1.0, "down": 0.25},
    )  # 40 samples in batches of 16: the per-output losses of a smaller last batch, as fit has them
    _, loop = assert_fit_equals_loop(two)
    assert {"loss", "up_loss", "down_loss"} <= set(loop.epoch_metrics)
    unweighted = train(replace(two, loss_weights=None), "float32", "loop")
    assert unweighted.loss[0] > loop.loss[0]  # the same start, the down loss counted a quarter
    with pytest.raises(
        CaseError, match=r"field 'loss_weights.upp': the model has no output 'upp' \(its outputs: down, up\)"
    ):
        train(replace(two, loss_weights={"upp": 1.0}), "float32")
    with pytest.raises(CaseError, match=r"field 'loss_weights.up': must be a finite non-negative number"):
        replace(two, loss_weights={"up": -1})


def test_a_metric_object_of_the_users_own_starts_afresh_in_every_run() -> None:
    code = user_code()
    shared = case(lambda dtype: code.Mlp(), metrics=[code.MeanError()], epochs=2)
    loop = train(shared, "float32", "loop")
    train(shared, "float16", "loop")
    fit = train(shared, "float32", "fit")  # the object the two runs before it used: copied per run
    assert fit.epoch_metrics == loop.epoch_metrics
    assert loop.epoch_metrics["mean_error"][0] > 0


def test_a_users_own_train_step_and_compute_loss_match_fit() -> None:
    code = user_code()
    _, own_step = assert_fit_equals_loop(case(lambda dtype: code.OwnStep(), metrics=["mae"]))
    assert set(own_step.epoch_metrics) == {"loss", "mae"}  # compile_metrics' dict flattened, as fit does
    _, doubled = assert_fit_equals_loop(case(lambda dtype: code.DoubleLoss()))
    plain = train(case(lambda dtype: code.Mlp()), "float32", "loop")
    # the same start, its own loss as the loss tracker receives it (and History shows it): Keras 3's
    # train_step hands it compute_loss's result, Keras 2's compiled_loss hands it its own value
    factor = 2 if code.keras3 else 1
    assert doubled.loss[0] == pytest.approx(factor * plain.loss[0], rel=1e-6)


@pytest.mark.parametrize("engine", ["loop", "fit"])
def test_a_train_step_that_bypasses_the_loss_tracker_is_named_with_what_to_change(engine: str) -> None:
    with pytest.raises(CaseError) as raised:
        train(case(lambda dtype: user_code().OwnTracker()), "float32", engine)
    assert (
        "field 'model': the model's own train_step does not hand its loss to the model's loss tracker"
        in str(raised.value)
    )
    assert "metric.update_state(loss)" in str(raised.value)


def test_a_keras_model_object_where_its_builder_belongs_is_told_to_pass_a_function() -> None:
    with pytest.raises(CaseError) as raised:
        case(user_code().Mlp())
    message = str(raised.value)
    assert (
        "field 'model': got a Keras Mlp object, where a function that builds the model is expected" in message
    )
    assert "each dtype trains a model of its own" in message
    assert "model=lambda dtype: Mlp(...)" in message
    with pytest.raises(CaseError, match=r"(?s)got the class Mlp.*model=lambda dtype: Mlp\(\)"):
        train(case(user_code().Mlp), "float32")


def test_a_custom_layers_own_float32_variable_in_a_float16_run_is_named_or_recorded() -> None:
    code = user_code()
    keras = code.flavour.keras

    def build(dtype: str) -> Any:
        inputs = keras.Input((4,))
        return keras.Model(inputs, keras.layers.Dense(1)(code.Scale("float32", name="scale")(inputs)))

    with pytest.raises(CaseError) as raised:
        train(case(build, epochs=1), "float16")
    assert (
        "case 'user-model', dtype float16, field 'model': variable 'scale/scale' of layer 'scale' (Scale) "
        "is float32, but float16 means float16 variables and float16 computation: it was made with its "
        "own dtype"
    ) in str(raised.value)
    assert "create the variable and its layer without dtype=" in str(raised.value)
    assert "allow_dtype_mismatch=True" in str(raised.value)
    run = train(case(build, epochs=1, allow_dtype_mismatch=True), "float16")
    assert run.dtype_mismatch == (
        "1 variable of the model's own layers ('scale/scale') is float32, where float16 means float16 "
        "variables and float16 computation"
    )
    assert run.variable_dtype == "float32"  # what trained, widest first
    # under mixed_float16 a float32 variable is what the policy says; its int32 counter is never checked
    mixed = train(case(build, epochs=1), "mixed_float16")
    assert mixed.dtype_mismatch == ""

    class Block(keras.layers.Layer):  # type: ignore[name-defined]
        """A custom layer holding a Keras layer built with a dtype of its own."""

        def __init__(self, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            self.inner = keras.layers.Dense(4, dtype="float32", name="inner")

        def call(self, x: Any) -> Any:
            return self.inner(x)

    def blocky(dtype: str) -> Any:
        inputs = keras.Input((4,))
        return keras.Model(inputs, keras.layers.Dense(1)(Block(name="block")(inputs)))

    with pytest.raises(
        CaseError, match=r"variable '(block/)?inner/kernel' of layer 'inner' \(Dense\) is float32"
    ):
        train(case(blocky, epochs=1), "float16")


def test_keras_own_layers_keep_the_variables_keras_gives_them() -> None:
    keras = user_code().flavour.keras

    def build(dtype: str) -> Any:
        # Keras 2 keeps BatchNormalization's parameters float32 under float16 by design
        inputs = keras.Input((4,))
        hidden = keras.layers.BatchNormalization()(keras.layers.Dense(8)(inputs))
        return keras.Model(inputs, keras.layers.Dense(1)(hidden))

    for dtype in ("float16", "mixed_float16"):
        assert train(case(build, epochs=1), dtype).dtype_mismatch == ""


def test_a_custom_layer_named_in_a_spec_points_to_a_builder(user_suite: pytest.Pytester) -> None:
    user_suite.makefile(
        ".convergence.toml",
        scaled=textwrap.dedent(
            """
            name = "scaled"
            dtypes = ["float32"]
            steps = 5
            loss = "mse"

            [model]
            input_shape = [1]
            layers = [{ class_name = "Scale", config = {} }]

            [data]
            x = [[-1.0], [1.0]]
            y = [1.0, 0.0]
            """
        ),
    )
    result = user_suite.runpytest("--convergence")
    result.stdout.fnmatch_lines(
        [
            "*scaled.convergence.toml: model.layers[[]0[]].class_name: Keras has no layer class 'Scale': "
            "if Scale is a layer of your own, build the model in a Python function (called with the dtype "
            'policy name) and give [[]model[]] builder = "module:function" instead of layers*'
        ]
    )


def test_a_users_subclassed_model_in_a_test_trains_and_snapshots_as_fit_would(
    user_suite: pytest.Pytester,
) -> None:
    user_suite.makepyfile(
        test_user=textwrap.dedent(
            """
            import numpy as np
            import pytest
            import tensorflow as tf
            from pytest_convergence import Case

            keras = tf.keras

            class Mlp(keras.Model):
                def __init__(self):
                    super().__init__()
                    self.hidden = keras.layers.Dense(8, activation="tanh")
                    self.out = keras.layers.Dense(1)

                def call(self, x):
                    return self.out(self.hidden(x))

            rng = np.random.default_rng(0)
            x = rng.normal(size=(64, 4)).astype("float32")
            CASE = Case(
                "subclassed", model=lambda dtype: Mlp(), x=x, y=x.sum(axis=1, keepdims=True),
                loss="mse", optimizer={"class_name": "Adam", "config": {"learning_rate": 0.05}},
                epochs=30, batch_size=16, seed=0,
            )

            @pytest.mark.convergence(dtypes=["float32"])
            def test_it(convergence_train, convergence_snapshot):
                run = convergence_train(CASE)
                fit = convergence_train(CASE, engine="fit")
                assert np.array_equal(run.loss, fit.loss)
                assert run.diagnosis.outcome != "stalled"
                run.expect(final_loss_below=0.2)
                assert run == convergence_snapshot
            """
        )
    )
    result = user_suite.runpytest("--convergence", "--snapshot-update")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["*subclassed*float32*loop*passed*"])
    snapshot = (
        user_suite.path / "__snapshots__" / "test_user" / "test_it[float32].convergence.txt"
    ).read_text()
    assert "hidden" in snapshot or "dense/kernel" in snapshot  # the weights are there: built before training
