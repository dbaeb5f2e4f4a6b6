"""Data as ``fit`` takes it: a ``tf.data.Dataset`` (batched by the user, reshuffled with its own
seed, repeated with ``steps_per_epoch``), a PyDataset (``Sequence`` on Keras 2), a generator,
validation data in these forms, ``sample_weight`` and ``class_weight``.

The claim each test holds: the ``loop`` engine trains bit for bit as the user's own ``model.fit``
on a fresh copy of the same data (losses, History with ``val_*``, final weights), and what cannot
be compared (an unseeded shuffle, a case fit would refuse) is a clear error naming the field."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest
from factories import KERAS_MAJOR

from pytest_convergence import Case, CaseError
from pytest_convergence.backend import import_tensorflow, train

tf, keras = import_tensorflow()

RNG = np.random.default_rng(7)
X = RNG.normal(size=(50, 3)).astype("float32")
Y = (X[:, 0] * X[:, 1] + X[:, 2] > 0).astype("float32")
SEED = 0
LOSS = {"class_name": "BinaryCrossentropy", "config": {"from_logits": True}}


def builder(dtype: str) -> Any:
    """Weights from seeded initializers: the user's own model starts where the plugin's does."""
    return keras.Sequential(
        [
            keras.Input((3,)),
            keras.layers.Dense(4, activation="relu", kernel_initializer=keras.initializers.GlorotUniform(1)),
            keras.layers.Dense(1, kernel_initializer=keras.initializers.GlorotUniform(2)),
        ]
    )


def _py_dataset(batch: int = 16) -> Any:
    base = keras.utils.PyDataset if KERAS_MAJOR == 3 else keras.utils.Sequence

    class Batches(base):  # type: ignore[misc, valid-type]
        def __len__(self) -> int:
            return int(np.ceil(len(X) / batch))

        def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
            return X[index * batch : (index + 1) * batch], Y[index * batch : (index + 1) * batch]

    return Batches()


def _generator(batch: int = 16) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    step = 0
    while True:
        start = (step * batch) % len(X)
        yield X[start : start + batch], Y[start : start + batch]
        step += 1


def _shuffled(batch: int = 16) -> Any:
    return tf.data.Dataset.from_tensor_slices((X, Y)).shuffle(len(X), seed=1).batch(batch)


FORMS: dict[str, Callable[[], dict[str, Any]]] = {
    # reshuffled each epoch with its own seed; 3 full batches and one of 2
    "dataset": lambda: {"x": _shuffled(), "epochs": 3},
    # repeated: the batch of 2 falls at another place of each 5-step epoch
    "repeated dataset": lambda: {"x": _shuffled().repeat(), "epochs": 3, "steps_per_epoch": 5},
    "PyDataset": lambda: {"x": _py_dataset(), "epochs": 3},
    "generator": lambda: {"x": _generator(), "epochs": 3, "steps_per_epoch": 3},
    "dataset with class weights": lambda: {"x": _shuffled(), "epochs": 2, "class_weight": {0: 1.0, 1: 3.0}},
    "arrays with sample weights": lambda: {
        "x": X,
        "y": Y,
        "epochs": 2,
        "batch_size": 16,
        "sample_weight": np.linspace(0.5, 1.5, len(X)),
    },
    "arrays with class weights and a validation split": lambda: {
        "x": X,
        "y": Y,
        "epochs": 2,
        "batch_size": 16,
        "class_weight": {0: 2.0, 1: 0.5},
        "validation_split": 0.2,
    },
    "validation PyDataset": lambda: {"x": _shuffled(), "epochs": 2, "validation_data": _py_dataset(batch=8)},
    "validation dataset": lambda: {
        "x": _shuffled(),
        "epochs": 2,
        "validation_data": tf.data.Dataset.from_tensor_slices((X[:20], Y[:20])).batch(8),
    },
}


def _fresh(form: str) -> dict[str, Any]:
    """The form's data made anew, from the same global seed state: what a user's module builds."""
    tf.random.set_seed(SEED)
    settings = FORMS[form]()
    settings.setdefault("y", None)
    return settings


def _case(form: str) -> Case:
    return Case(
        name=f"user-data-{form}", model=builder, loss=LOSS, optimizer="sgd", seed=SEED, **_fresh(form)
    )


def _users_fit(form: str) -> tuple[dict[str, list[float]], list[np.ndarray]]:
    """The user's own script: seed, build, compile, fit on a fresh copy of the data."""
    settings = _fresh(form)
    keras.backend.clear_session()
    keras.utils.set_random_seed(SEED)
    model = builder("float32")
    model.compile(loss=keras.losses.BinaryCrossentropy(from_logits=True), optimizer="sgd")
    x, y = settings.pop("x"), settings.pop("y")
    history = model.fit(x, y, verbose=0, **settings)
    return history.history, [np.array(w) for w in model.get_weights()]


@pytest.mark.parametrize("form", list(FORMS))
def test_loop_and_fit_train_bit_for_bit_as_the_users_own_fit(form: str) -> None:
    expected_history, expected_weights = _users_fit(form)
    for engine in ("loop", "fit"):
        history = train(_case(form), "float32", engine).history
        assert history.epoch_metrics.keys() == expected_history.keys(), engine
        for name, values in expected_history.items():
            assert history.epoch_metrics[name] == [float(v) for v in values], (engine, name)
        final = list(history.final_weights.values())
        assert len(final) == len(expected_weights)
        for got, want in zip(final, expected_weights):
            assert np.array_equal(got, want), engine


def test_every_run_of_a_reshuffling_dataset_trains_on_the_batches_fit_drew_first() -> None:
    """A reshuffling dataset's second pass is another order: drawn once, every run of the case
    (each dtype, each engine, a changed copy) trains on the first drawing."""
    case = _case("dataset")
    first = train(case, "float32", "loop").history
    again = train(case.with_(optimizer="sgd"), "float32", "loop").history
    assert np.array_equal(first.loss, again.loss)
    assert first.epoch_metrics == again.epoch_metrics


def _raises(field: str, text: str, **settings: Any) -> None:
    with pytest.raises(CaseError) as caught:
        Case(name="bad", model=builder, loss=LOSS, epochs=1, **settings)
    assert caught.value.field == field
    assert text in str(caught.value)


@pytest.mark.parametrize(
    ("field", "text", "settings"),
    [
        ("y", "y must be None", {"x": _shuffled, "y": Y}),
        ("batch_size", "batch the data yourself", {"x": _shuffled, "y": None, "batch_size": 8}),
        (
            "validation_split",
            "give validation_data instead",
            {"x": _shuffled, "y": None, "validation_split": 0.2},
        ),
        (
            "sample_weight",
            "yield (x, y, sample_weight)",
            {"x": _shuffled, "y": None, "sample_weight": np.ones(50)},
        ),
        ("steps_per_epoch", "repeats forever", {"x": lambda: _shuffled().repeat(), "y": None}),
        ("steps_per_epoch", "a generator has no length", {"x": _generator, "y": None}),
        (
            "steps_per_epoch",
            "fewer than steps_per_epoch=9",
            {"x": _shuffled, "y": None, "steps_per_epoch": 9},
        ),
        (
            "validation_data",
            "used up by the first evaluation",
            {"x": _shuffled, "y": None, "validation_data": _generator},
        ),
        ("steps_per_epoch", "with arrays the batches per epoch", {"x": X, "y": Y, "steps_per_epoch": 2}),
        (
            "validation_data",
            "never ends",
            {"x": _shuffled, "y": None, "validation_data": lambda: _shuffled().repeat()},
        ),
        ("sample_weight", "one weight per sample (50)", {"x": X, "y": Y, "sample_weight": np.ones(49)}),
        (
            "class_weight",
            "not both",
            {"x": X, "y": Y, "sample_weight": np.ones(50), "class_weight": {0: 1.0}},
        ),
        ("class_weight", "not a class index", {"x": X, "y": Y, "class_weight": {"a": 1.0}}),
    ],
)
def test_what_fit_would_refuse_is_a_case_error_naming_the_field_and_the_fix(
    field: str, text: str, settings: dict[str, Any]
) -> None:
    made = {
        key: value() if key in ("x", "validation_data") and callable(value) else value
        for key, value in settings.items()
    }
    _raises(field, text, **made)


def test_a_dataset_that_runs_out_mid_training_names_the_epoch_and_the_fix() -> None:
    tf.random.set_seed(SEED)
    case = Case(
        name="short", model=builder, loss=LOSS, x=_shuffled().take(3), y=None, epochs=2, steps_per_epoch=2
    )
    with pytest.raises(CaseError, match=r"ran out in epoch 2: it gave 1 of the 2 batches") as caught:
        train(case, "float32", "loop")
    assert "repeat()" in str(caught.value.fix)


def test_a_user_suite_trains_a_dataset_and_refuses_an_unseeded_shuffle(user_suite: pytest.Pytester) -> None:
    """As a user runs it: the dataset is built at import, before any seed is set; a shuffle
    without a seed is refused as not repeatable, naming x and the fix, not reported later as a
    snapshot or upgrade difference."""
    user_suite.makepyfile(
        test_data="""
        import numpy as np
        import pytest
        import tensorflow as tf
        from pytest_convergence import Case

        x = np.linspace(-1, 1, 40, dtype="float32").reshape(20, 2)
        y = (x[:, 0] > 0).astype("float32")

        def model(dtype):
            import keras
            return keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])

        def case(name, data):
            return Case(name=name, model=model, x=data, y=None, loss="mse", optimizer="sgd", epochs=2)

        seeded = case("seeded", tf.data.Dataset.from_tensor_slices((x, y)).shuffle(20, seed=3).batch(8))
        unseeded = case("unseeded", tf.data.Dataset.from_tensor_slices((x, y)).shuffle(20).batch(8))

        @pytest.mark.convergence(dtypes=["float32"])
        def test_seeded(convergence_train):
            convergence_train(seeded)

        @pytest.mark.convergence(dtypes=["float32"])
        def test_unseeded(convergence_train):
            convergence_train(unseeded)
        """
    )
    # a process of its own: a global seed set by an earlier test here would seed the shuffle
    result = user_suite.runpytest_subprocess("--convergence", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*field 'x': x is not repeatable: its shuffle has no seed*"])
    result.stdout.fnmatch_lines(["*dataset.shuffle(buffer, seed=0)*"])


def test_a_function_given_as_x_says_to_call_it_and_lists_what_x_takes() -> None:
    with pytest.raises(CaseError) as caught:
        Case(name="bad", model=builder, loss=LOSS, epochs=1, x=_shuffled, y=None)
    assert caught.value.field == "x"
    assert "got the function _shuffled" in str(caught.value)
    assert "tf.data.Dataset, a PyDataset" in str(caught.value.fix)


def test_the_budget_of_data_that_is_not_arrays_counts_batches_not_samples() -> None:
    def case(**settings: Any) -> Case:
        return Case(name="budget", model=builder, loss=LOSS, y=None, **settings)

    generator = case(x=_generator(), steps_per_epoch=3, epochs=4)
    assert (generator.data_kind, generator.num_samples) == ("generator", None)
    assert (generator.batches_per_epoch, generator.total_steps, generator.total_epochs) == (3, 12, 4)
    dataset = case(x=_shuffled(), steps=6)  # 50 samples in batches of 16: 4 batches an epoch
    assert (dataset.data_kind, dataset.batches_per_epoch, dataset.total_steps, dataset.total_epochs) == (
        "dataset",
        4,
        6,
        2,
    )
    fewer = case(x=_shuffled(), steps_per_epoch=2, epochs=3)
    assert (fewer.batches_per_epoch, fewer.total_steps) == (2, 6)
    sequence = case(x=_py_dataset(), epochs=2, validation_data=_py_dataset(batch=8))
    assert (sequence.data_kind, sequence.validation_kind, sequence.total_steps) == (
        "pydataset",
        "pydataset",
        8,
    )
