"""Cases (what to train) and expectations (what a dtype must achieve).

Both are plain dataclasses validated on construction, so a mistake in a declaration is reported
where it was written, at collection, not minutes later from inside a training graph. A case has no
dtype: the same case is trained in every dtype a test asks for.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from .dtypes import DTYPES, dtype_info
from .dtypes import suggest as suggest_dtype
from .errors import CaseError
from .outcome import Outcome, check_engine

ModelSpec = Callable[[str], Any] | Mapping[str, Any]
"""A builder called with the dtype policy name, or a Keras model config (``model.get_config()``
wrapped as ``{"class_name": ..., "config": ...}``, as ``keras.saving.deserialize_keras_object``
takes it)."""

KerasSpec = str | Mapping[str, Any] | Any
"""A name, a ``{"class_name", "config"}`` dict, or a Keras object, as ``keras.losses.get`` and
``keras.optimizers.get`` take them."""

FIT_DEFAULT_BATCH_SIZE = 32
LOSS_DTYPES = ("compute", "float16", "bfloat16", "float32", "float64")
"""What ``Case.loss_dtype`` takes: a float dtype, or the model's own compute dtype."""


COMPARISONS = (">=", "<=", ">", "<", "==")


@dataclass(frozen=True)
class MetricCondition:
    """A condition on a metric's final value as History records it: ``val_accuracy >= 0.7``."""

    name: str
    op: str
    value: float

    @classmethod
    def parse(cls, text: Any, *, where: str = "metrics") -> MetricCondition:
        """Read ``"NAME OP NUMBER"`` (OP one of >=, <=, >, <, ==)."""
        if isinstance(text, MetricCondition):
            return text
        fix = 'write it as "NAME OP NUMBER", e.g. "val_accuracy >= 0.7" or "val_loss <= 0.5"'
        if not isinstance(text, str):
            raise CaseError(f"expected a condition string, got {type(text).__name__}", field=where, fix=fix)
        parts = text.split()
        if len(parts) != 3 or parts[1] not in COMPARISONS:
            raise CaseError(f"cannot read the metric condition {text!r}", field=where, fix=fix)
        name, op, number = parts
        try:
            value = float(number)
        except ValueError:
            raise CaseError(f"{number!r} in {text!r} is not a number", field=where, fix=fix) from None
        if not math.isfinite(value):
            raise CaseError(f"the bound in {text!r} must be finite", field=where, fix=fix)
        return cls(name, op, value)

    def holds(self, actual: float) -> bool:
        return bool(
            {
                ">=": actual >= self.value,
                "<=": actual <= self.value,
                ">": actual > self.value,
                "<": actual < self.value,
                "==": actual == self.value,
            }[self.op]
        )

    def __str__(self) -> str:
        return f"{self.name} {self.op} {self.value:g}"


def _metric_conditions(value: Any, where: str) -> tuple[MetricCondition, ...]:
    """Conditions from a string, a list of strings, or a dict ``{name: "op value"}``."""
    if isinstance(value, str):
        value = [value]
    if isinstance(value, Mapping):
        value = [f"{name} {condition}" for name, condition in value.items()]
    if not isinstance(value, Sequence) or not value:
        raise CaseError(
            "metrics takes a non-empty list of conditions",
            field=where,
            fix='e.g. metrics=["val_accuracy >= 0.7"]',
        )
    return tuple(MetricCondition.parse(item, where=f"{where}[{index}]") for index, item in enumerate(value))


@dataclass(frozen=True)
class Expectation:
    """What one dtype of a case must achieve; every field is optional and checked independently.

    ``metrics`` are conditions on the final value of any metric History records, training or
    validation: ``["val_accuracy >= 0.7", "val_loss <= 0.4"]``. ``raises`` says that Keras itself
    cannot train this dtype (``model.fit`` fails the same way): the training must fail with an
    error containing that text, and the run is reported as such rather than as a failure.
    """

    converged: bool | None = None
    outcome: tuple[Outcome, ...] | None = None
    final_loss_below: float | None = None
    steps_to_target_at_most: int | None = None
    metrics: tuple[MetricCondition, ...] | None = None
    raises: str | None = None

    def __post_init__(self) -> None:
        if self.raises is not None:
            if not isinstance(self.raises, str) or not self.raises.strip():
                raise CaseError("raises takes the text the training error must contain", field="raises")
            others = [
                f
                for f in ("converged", "outcome", "final_loss_below", "steps_to_target_at_most", "metrics")
                if getattr(self, f) is not None
            ]
            if others:
                raise CaseError(
                    f"raises says the training fails, so {', '.join(others)} cannot be judged",
                    field="raises",
                    fix=f"drop {', '.join(others)} from this dtype's expectation",
                )
        if self.metrics is not None:
            object.__setattr__(self, "metrics", _metric_conditions(self.metrics, "metrics"))
        if self.outcome is not None:
            raw = (self.outcome,) if isinstance(self.outcome, (str, Outcome)) else tuple(self.outcome)
            object.__setattr__(self, "outcome", tuple(Outcome.parse(o, where="outcome") for o in raw))
        if self.final_loss_below is not None:
            _check_number(self.final_loss_below, "final_loss_below", case=None, allow_zero=True)
        if self.steps_to_target_at_most is not None:
            _check_positive_int(self.steps_to_target_at_most, "steps_to_target_at_most", case=None)

    @classmethod
    def from_kwargs(cls, kwargs: Mapping[str, Any], *, where: str = "expectation") -> Expectation:
        """Build from user keywords, rejecting unknown ones with the list of valid ones."""
        valid = [f.name for f in cls.__dataclass_fields__.values()]
        unknown = sorted(set(kwargs) - set(valid))
        if unknown:
            raise CaseError(
                f"unknown expectation keyword(s) {', '.join(unknown)}; valid ones are: {', '.join(valid)}",
                field=where,
            )
        if kwargs.get("outcome") == "converged":
            raise CaseError(
                "'converged' is not an outcome but whether the target was met",
                field=f"{where}.outcome",
                fix="write converged=True (and final_loss_below=... or a target_loss on the case)",
            )
        return cls(**kwargs)


def is_keras_layer(value: Any) -> bool:
    """Whether ``value`` is a Keras model or layer object (not a class), by what every Keras
    layer has: a case is checked without importing Keras."""
    return not isinstance(value, type) and all(hasattr(value, a) for a in ("add_weight", "trainable_weights"))


def model_object_error(model: Any, case: str | None = None, dtype: str | None = None) -> CaseError:
    """The error for a Keras model (or layer) object given where the function that builds it belongs."""
    kind = type(model).__name__
    return CaseError(
        f"got a Keras {kind} object, where a function that builds the model is expected: each dtype "
        "trains a model of its own, built under that dtype's policy from the case's seed, so one "
        "object (built once, in one dtype, and changed by training) cannot serve every run",
        case=case,
        dtype=dtype,
        field="model",
        fix=f"pass the function that builds it, called with the dtype policy name: model=lambda dtype: "
        f"{kind}(...), or def build(dtype): ... return model, then model=build (a spec file: "
        'builder = "module:function")',
    )


@dataclass(frozen=True)
class Case:
    """What to train: model, data, loss, optimizer, budget and seed. Has no dtype.

    ``steps`` counts optimizer steps (batches); ``epochs`` counts passes over the data as
    ``model.fit`` does. Give one of them. Batching and shuffling follow ``model.fit`` exactly
    (default batch size 32, shuffled each epoch), so the ``fit`` engine is a faithful reference.
    """

    name: str
    model: ModelSpec
    x: Any
    y: Any
    loss: KerasSpec
    optimizer: KerasSpec = "rmsprop"
    steps: int | None = None
    epochs: int | None = None
    batch_size: int | None = None
    shuffle: bool = True
    seed: int = 0
    initial_weights: Sequence[Any] | None = None
    target_loss: float | None = None
    metrics: Sequence[Any] = ()
    engine: str | None = None
    expectations: Mapping[str, Expectation] = field(default_factory=dict)
    loss_dtype: str | None = None
    """Pin the dtype the loss is computed in: a float dtype (``"float32"``), or ``"compute"`` for
    the model's compute dtype. Unset, each Keras does as it does: Keras 3 computes losses in
    float32 whatever the model's dtype, Keras 2 in the dtype of the model's output. Pinning holds
    this constant across the Keras 2 to Keras 3 migration, or shows its effect on purpose."""
    validation_data: Any = None
    """``(x, y)`` to evaluate at the end of every epoch, as ``fit(validation_data=...)``: History's
    ``val_*`` metrics, recorded per epoch and usable in expectations."""
    validation_split: float | None = None
    """The last fraction of x and y held out for validation, as ``fit(validation_split=...)``
    takes it (before shuffling); training then sees the rest."""
    steps_per_epoch: int | None = None
    """Batches in one epoch, as ``fit(steps_per_epoch=...)``: needed for a generator and for a
    dataset that repeats (or whose length TensorFlow cannot tell); with arrays, batch_size decides."""
    sample_weight: Any = None
    """A weight per sample of x, as ``fit(sample_weight=...)`` (arrays only: a dataset, PyDataset
    or generator yields ``(x, y, sample_weight)`` itself, as fit requires)."""
    class_weight: Mapping[Any, float] | None = None
    """``{class index: weight}``, as ``fit(class_weight=...)``."""
    snapshot_tolerance: Any = None
    """Overrides of the snapshot tolerance: a number (rtol) or a dict of Tolerance fields, where
    rtol may be a dict per dtype; see :mod:`pytest_convergence.tolerance`."""

    callbacks: Sequence[Any] = ()
    """Keras callbacks, called when ``fit`` calls them (both engines; ``loop`` runs the epochs between
    their calls). Each entry is a Keras callback object, a zero-argument factory (a class or a
    function) that returns one, a ``{"class_name": ..., "config": {...}}`` dict naming a class of
    ``keras.callbacks``, or an importable ``"package.module:Name"`` (in a dict's ``class_name`` too).
    Every run gets fresh callbacks: a factory is called and a dict built per run, an object is
    deep-copied per run, so one dtype's ``ReduceLROnPlateau`` wait counter or ``EarlyStopping``
    best weights never leak into the next dtype's run (the run's own objects are on
    ``run.in_process.callbacks``)."""

    allow_dtype_mismatch: bool = False
    """Train a model whose layers do not all follow the requested dtype (a layer built with
    ``dtype="float32"`` on purpose) and record what trained on the run, instead of failing: by
    default a builder that ignores its dtype fails, so no summary or snapshot names a dtype that
    did not train."""

    loss_weights: Any = None
    """How much each output's loss counts in the total, as ``compile(loss_weights=...)`` takes it:
    a dict ``{output_name: weight}`` or a list in the order of the model's outputs."""

    _source_batches: int | None = field(default=None, init=False, repr=False, compare=False)
    """Batches in one epoch of a dataset, PyDataset or generator x (None for arrays)."""

    def __post_init__(self) -> None:
        name = self.name
        if not isinstance(name, str) or not name.strip():
            raise CaseError("a case needs a non-empty name", field="name")
        if not (callable(self.model) or isinstance(self.model, Mapping)):
            raise CaseError(
                f"expected a builder function or a Keras model config dict, got {type(self.model).__name__}",
                case=name,
                field="model",
            )
        if is_keras_layer(self.model):  # callable, but it would be called with the dtype
            raise model_object_error(self.model, name)
        if source_kind(self.x) is not None:
            object.__setattr__(self, "_source_batches", self._check_source(name))
        else:
            object.__setattr__(self, "_source_batches", None)
            self._check_arrays(name)
        if (self.steps is None) == (self.epochs is None):
            raise CaseError(
                "give exactly one of steps (optimizer steps) or epochs (passes over the data)",
                case=name,
                field="steps",
            )
        if self.steps is not None:
            _check_positive_int(self.steps, "steps", case=name)
        if self.epochs is not None:
            _check_positive_int(self.epochs, "epochs", case=name)
        if self.batch_size is not None:
            _check_positive_int(self.batch_size, "batch_size", case=name)
        if not isinstance(self.seed, int) or isinstance(self.seed, bool):
            raise CaseError(f"seed must be an integer, got {self.seed!r}", case=name, field="seed")
        if not isinstance(self.shuffle, bool):
            raise CaseError(
                f"shuffle must be true or false, got {self.shuffle!r}", case=name, field="shuffle"
            )
        if not isinstance(self.allow_dtype_mismatch, bool):
            raise CaseError(
                f"allow_dtype_mismatch must be true or false, got {self.allow_dtype_mismatch!r}",
                case=name,
                field="allow_dtype_mismatch",
            )
        if self.target_loss is not None:
            _check_number(self.target_loss, "target_loss", case=name, allow_zero=True)
        if self.engine is not None:
            check_engine(self.engine, case=name)
        for key in ("loss", "optimizer"):
            _check_keras_spec(getattr(self, key), key, case=name)
        _check_loss_weights(self.loss_weights, case=name)
        object.__setattr__(self, "callbacks", _check_callbacks(self.callbacks, case=name))
        if self.loss_dtype is not None and self.loss_dtype not in LOSS_DTYPES:
            raise CaseError(
                f"unknown loss dtype {self.loss_dtype!r}{_did_you_mean(suggest_dtype(self.loss_dtype))}",
                case=name,
                field="loss_dtype",
                fix=f"use one of: {', '.join(LOSS_DTYPES)}",
            )
        expectations = {}
        for dtype, expectation in dict(self.expectations).items():
            expectations[dtype] = _expectation_for(name, dtype, expectation)
        object.__setattr__(self, "expectations", expectations)
        if self.snapshot_tolerance is not None:
            from .tolerance import resolve

            for dtype in DTYPES:
                resolve(dtype, case=self.snapshot_tolerance, case_name=name)
        if self.initial_weights is not None:
            weights = [np.asarray(w) for w in self.initial_weights]
            for index, weight in enumerate(weights):
                if not np.issubdtype(weight.dtype, np.number) or not np.all(np.isfinite(weight)):
                    raise CaseError("must be finite numbers", case=name, field=f"initial_weights[{index}]")
            object.__setattr__(self, "initial_weights", weights)

    @classmethod
    def sequential(
        cls,
        name: str,
        *,
        layers: Sequence[Mapping[str, Any]],
        input_shape: Sequence[int],
        **kwargs: Any,
    ) -> Case:
        """A case whose model is a ``keras.Sequential`` of layer configs, as
        ``keras.layers.deserialize`` takes them."""
        if not isinstance(layers, Sequence) or isinstance(layers, (str, bytes)) or not layers:
            raise CaseError("layers must be a non-empty list of layer configs", case=name, field="layers")
        for index, layer in enumerate(layers):
            if not isinstance(layer, Mapping) or "class_name" not in layer:
                raise CaseError(
                    'each layer is a dict like {"class_name": "Dense", "config": {"units": 1}}',
                    case=name,
                    field=f"layers[{index}]",
                )
        _check_fields(name, kwargs)
        return cls(name=name, model=sequential_config(_keras_name(name), layers, input_shape), **kwargs)

    def _check_arrays(self, name: str) -> None:
        """x, y and sample_weight as arrays (or dicts of arrays) with one row per sample."""
        object.__setattr__(self, "x", _as_data(self.x, name, "x"))
        object.__setattr__(self, "y", _as_data(self.y, name, "y"))
        for key in ("x", "y"):
            _check_same_lengths(getattr(self, key), name, key)
        nx, ny = _num_samples(self.x), _num_samples(self.y)
        if nx != ny:
            raise CaseError(
                f"x has {nx} samples but y has {ny}; they must have the same length",
                case=name,
                field="y",
            )
        if nx == 0:
            raise CaseError("the data is empty", case=name, field="x")
        if self.steps_per_epoch is not None:
            raise CaseError(
                "steps_per_epoch is for a tf.data.Dataset, a PyDataset or a generator; with arrays the "
                "batches per epoch follow from batch_size",
                case=name,
                field="steps_per_epoch",
                fix="drop steps_per_epoch, or set batch_size",
            )
        if self.sample_weight is not None:
            weights = _as_data(self.sample_weight, name, "sample_weight")
            if isinstance(weights, Mapping) or weights.ndim != 1 or len(weights) != nx:
                raise CaseError(
                    f"expected one weight per sample ({nx}), got shape "
                    f"{'a dict' if isinstance(weights, Mapping) else list(weights.shape)}",
                    case=name,
                    field="sample_weight",
                )
            object.__setattr__(self, "sample_weight", weights)
            if self.validation_split is not None:
                raise CaseError(
                    "sample_weight with validation_split is not supported yet (fit would weigh the "
                    "validation samples too)",
                    case=name,
                    field="sample_weight",
                    fix="hold the validation samples out yourself and give validation_data=(x, y)",
                )
        self._check_class_weight(name)
        self._check_validation(name, nx)

    def _check_source(self, name: str) -> int:
        """A tf.data.Dataset, PyDataset or generator as ``x``, checked as ``fit`` checks it and
        before any batch is drawn; returns the batches in one epoch."""
        kind = source_kind(self.x)
        what = {"dataset": "a tf.data.Dataset", "pydataset": "a PyDataset", "generator": "a generator"}[
            str(kind)
        ]
        if self.y is not None:
            raise CaseError(
                f"x is {what}, which yields (x, y) batches itself, so y must be None (as fit requires)",
                case=name,
                field="y",
                fix="write y=None and let the data yield (x, y) or (x, y, sample_weight)",
            )
        for key, fix in (
            ("batch_size", "batch the data yourself (dataset.batch(n)); fit takes no batch_size with it"),
            ("validation_split", "give validation_data instead (fit cannot split it either)"),
            ("sample_weight", "yield (x, y, sample_weight) from the data, as fit requires"),
        ):
            if getattr(self, key) is not None:
                raise CaseError(f"x is {what}: {key} does not apply to it", case=name, field=key, fix=fix)
        if self.steps_per_epoch is not None:
            _check_positive_int(self.steps_per_epoch, "steps_per_epoch", case=name)
        batches = source_length(self.x)
        if batches == 0:
            raise CaseError(f"x is {what} with no batch", case=name, field="x")
        if batches is None and self.steps_per_epoch is None:
            reason = {
                "generator": "a generator has no length",
                "dataset": "the dataset repeats forever, or TensorFlow cannot tell its length (a filter, "
                "a generator)",
            }.get(str(kind), "its length is unknown")
            raise CaseError(
                f"x is {what} and {reason}, so an epoch has no end",
                case=name,
                field="steps_per_epoch",
                fix="give steps_per_epoch=<batches in one epoch>, as fit needs it",
            )
        if batches is not None and self.steps_per_epoch is not None and self.steps_per_epoch > batches:
            raise CaseError(
                f"x has {batches} batches, fewer than steps_per_epoch={self.steps_per_epoch}: fit would run "
                "out of data",
                case=name,
                field="steps_per_epoch",
                fix=f"use steps_per_epoch <= {batches}, or .repeat() the dataset",
            )
        self._check_class_weight(name)
        self._check_validation(name, 0)
        return int(self.steps_per_epoch or batches or 0)

    def _check_class_weight(self, name: str) -> None:
        if self.class_weight is None:
            return
        if self.sample_weight is not None:
            raise CaseError(
                "give class_weight or sample_weight, not both (fit refuses the two together)",
                case=name,
                field="class_weight",
                fix="fold the class weights into sample_weight: sample_weight = w * class_weight[y]",
            )
        fix = "e.g. class_weight={0: 1.0, 1: 5.0}"
        if not isinstance(self.class_weight, Mapping) or not self.class_weight:
            raise CaseError(
                "class_weight is a dict {class index: weight}", case=name, field="class_weight", fix=fix
            )
        for label, weight in self.class_weight.items():
            if not isinstance(label, (int, np.integer)) or isinstance(label, bool) or label < 0:
                raise CaseError(
                    f"class {label!r} is not a class index (an integer from 0)",
                    case=name,
                    field="class_weight",
                    fix=fix,
                )
            _check_number(weight, f"class_weight[{label}]", case=name, allow_zero=True)

    def _check_validation(self, name: str, samples: int) -> None:
        if self.validation_data is not None and self.validation_split is not None:
            raise CaseError(
                "give validation_data or validation_split, not both (as fit takes them)",
                case=name,
                field="validation_split",
            )
        if self.validation_split is not None:
            split = self.validation_split
            if (
                not isinstance(split, (int, float))
                or isinstance(split, bool)
                or not 0 < split < 1
                or not 0 < _split_at(samples, split) < samples
            ):
                raise CaseError(
                    f"must be a fraction between 0 and 1 that leaves samples on both sides, got {split!r} "
                    f"for {samples} samples",
                    case=name,
                    field="validation_split",
                )
        if self.validation_data is not None:
            pair = self.validation_data
            kind = source_kind(pair)
            if kind == "generator":
                raise CaseError(
                    "a generator as validation_data is used up by the first evaluation, so later epochs "
                    "would validate on nothing",
                    case=name,
                    field="validation_data",
                    fix="give a tf.data.Dataset or a PyDataset (keras.utils.Sequence on Keras 2), "
                    "or arrays (x, y)",
                )
            endless = (kind == "dataset" and int(pair.cardinality()) == -1) or (
                kind == "pydataset" and source_length(pair) is None
            )
            if endless:
                raise CaseError(
                    "the validation data never ends (repeat()), so an evaluation would never finish; fit "
                    "needs validation_steps for it, which a case does not take",
                    case=name,
                    field="validation_data",
                    fix="give a finite dataset (drop repeat()) for validation",
                )
            if kind is not None:
                return  # evaluated as fit evaluates it, drawn once by the backend
            if isinstance(pair, Mapping) or not isinstance(pair, Sequence) or len(pair) != 2:
                raise CaseError(
                    "validation_data is a pair (x, y), as fit takes it", case=name, field="validation_data"
                )
            x = _as_data(pair[0], name, "validation_data.x")
            y = _as_data(pair[1], name, "validation_data.y")
            if _num_samples(x) != _num_samples(y) or _num_samples(x) <= 0:
                raise CaseError(
                    f"validation x has {_num_samples(x)} samples but y has {_num_samples(y)}",
                    case=name,
                    field="validation_data.y",
                )
            object.__setattr__(self, "validation_data", (x, y))

    @property
    def fit_x(self) -> Any:
        """The inputs training draws its batches from: x without a held-out validation split."""
        return _head(self.x, self._split_at) if self.validation_split is not None else self.x

    @property
    def fit_y(self) -> Any:
        return _head(self.y, self._split_at) if self.validation_split is not None else self.y

    @property
    def validation(self) -> tuple[Any, Any] | None:
        """``(x, y)`` evaluated after every epoch: ``validation_data``, or the split's tail."""
        if self.validation_split is not None:
            return _tail(self.x, self._split_at), _tail(self.y, self._split_at)
        if source_kind(self.validation_data) is not None:
            return self.validation_data, None  # yields (x, y) batches itself, as fit takes it
        return self.validation_data

    @property
    def _split_at(self) -> int:
        assert self.validation_split is not None
        return _split_at(_num_samples(self.x), self.validation_split)

    @property
    def data_kind(self) -> str:
        """What x is, as fit tells them apart: ``arrays`` (or a dict of them), ``dataset``
        (a ``tf.data.Dataset``), ``pydataset`` (``keras.utils.PyDataset``; ``Sequence`` on Keras 2)
        or ``generator``."""
        return source_kind(self.x) or "arrays"

    @property
    def validation_kind(self) -> str:
        """What validation_data is, as :attr:`data_kind` says it (``arrays`` too when there is none)."""
        return source_kind(self.validation_data) or "arrays"

    @property
    def num_samples(self) -> int | None:
        """Samples training sees (a validation split held out); None for a dataset, PyDataset or
        generator, which yield batches whose count, not samples, is known."""
        if self._source_batches is not None:
            return None
        return _num_samples(self.fit_x)

    @property
    def effective_batch_size(self) -> int:
        return self.batch_size or FIT_DEFAULT_BATCH_SIZE

    @property
    def batches_per_epoch(self) -> int:
        """Optimizer steps in one epoch: steps_per_epoch or the length of a dataset or PyDataset;
        for arrays, batches of batch_size (the last one smaller)."""
        if self._source_batches is not None:
            return int(self._source_batches)
        return math.ceil(_num_samples(self.fit_x) / self.effective_batch_size)

    @property
    def total_steps(self) -> int:
        if self.steps is not None:
            return self.steps
        assert self.epochs is not None
        return self.epochs * self.batches_per_epoch

    @property
    def total_epochs(self) -> int:
        return math.ceil(self.total_steps / self.batches_per_epoch)

    def expectation(self, dtype: str, backend: str = "tensorflow") -> Expectation | None:
        """What ``dtype`` must achieve on ``backend``: that backend's own expectation where the
        case gives one (``jax-float16``), else the dtype's."""
        own = self.expectations.get(f"{backend}-{dtype}") if backend != "tensorflow" else None
        return own if own is not None else self.expectations.get(dtype)

    def with_(self, **changes: Any) -> Case:
        """A copy with some fields changed, validated again (e.g. another learning rate)."""
        return replace(self, **changes)


def sequential_config(
    model_name: str, layers: Sequence[Mapping[str, Any]], input_shape: Sequence[int]
) -> dict[str, Any]:
    """A ``keras.Sequential`` config (Keras 3's words) of an input of ``input_shape`` and ``layers``.

    The one builder of this config, for ``Case.sequential`` and spec files' ``[model] layers``.
    """
    return {
        "class_name": "Sequential",
        "config": {
            "name": model_name,
            "layers": [
                {"class_name": "InputLayer", "config": {"batch_shape": [None, *input_shape]}},
                *[dict(layer) for layer in layers],
            ],
        },
    }


def _expectation_for(case: str, key: str, value: Any) -> Expectation:
    """Validate one dtype's expectation (``key``: the dtype, or a backend's own, ``jax-float16``);
    errors name the case and the full field path."""
    where = f"expectations.{key}"
    dtype = key.partition("-")[2] if key.startswith(("jax-", "torch-")) else key
    try:
        dtype_info(dtype, where=where)
        if isinstance(value, Mapping):
            value = Expectation.from_kwargs(value, where=where)
    except CaseError as error:
        field = error.field if (error.field or "").startswith(where) else f"{where}.{error.field}"
        raise CaseError(error.detail, case=case, field=field, fix=error.fix) from None
    if not isinstance(value, Expectation):
        raise CaseError(
            f"expected an Expectation or a dict, got {type(value).__name__}", case=case, field=where
        )
    return value


def _check_fields(name: str, given: Mapping[str, Any]) -> None:
    """An unknown keyword names the field a user most likely meant, instead of a bare TypeError;
    ``dtypes`` gets where dtypes belong, since a case has none."""
    import difflib

    known = [f for f in Case.__dataclass_fields__ if f not in ("name", "model") and not f.startswith("_")]
    for key in given:
        if key in known:
            continue
        if key in ("dtype", "dtypes"):
            raise CaseError(
                "a case has no dtype: the same case trains in every dtype its test or spec file lists",
                case=name,
                field=key,
                fix='list them in @pytest.mark.convergence(dtypes=["float16", "float32"]), or dtypes = [...] '
                "in a spec file",
            )
        close = difflib.get_close_matches(key, known, n=1)
        raise CaseError(
            f"a case has no field {key!r}{_did_you_mean(close[0] if close else None)}",
            case=name,
            field=key,
            fix=f"use one of: {', '.join(known)}",
        )


def _did_you_mean(word: str | None) -> str:
    return f" (did you mean {word!r}?)" if word else ""


def _keras_name(name: str) -> str:
    return "".join(c if c.isalnum() or c == "_" else "_" for c in name)


DATA_FORMS = (
    "arrays (or a dict of them, one per input), a tf.data.Dataset, a PyDataset "
    "(keras.utils.Sequence on Keras 2) or a generator, as fit takes them"
)


def _as_data(value: Any, case: str, key: str) -> Any:
    if isinstance(value, Mapping):
        return {k: _as_data(v, case, f"{key}.{k}") for k, v in value.items()}
    if callable(value) and not isinstance(value, np.ndarray):
        raise CaseError(
            f"got the function {getattr(value, '__name__', type(value).__name__)}, not data",
            case=case,
            field=key,
            fix=f"call it: give what it returns; {key} takes {DATA_FORMS}",
        )
    try:
        array = np.asarray(value)
    except (ValueError, TypeError) as error:
        raise CaseError(f"cannot be read as an array: {error}", case=case, field=key) from None
    if array.dtype == object or array.ndim == 0:
        raise CaseError(
            "expected a rectangular array with one row per sample",
            case=case,
            field=key,
            fix=f"{key} takes {DATA_FORMS}",
        )
    if not np.issubdtype(array.dtype, np.number) and array.dtype != bool:
        raise CaseError(f"expected numbers, got dtype {array.dtype}", case=case, field=key)
    if np.issubdtype(array.dtype, np.inexact) and not np.all(np.isfinite(array)):
        bad = int(np.count_nonzero(~np.isfinite(array)))
        raise CaseError(
            f"contains {bad} NaN or Inf value(s); training on them makes the loss NaN from the first step",
            case=case,
            field=key,
        )
    return array


def _check_same_lengths(data: Any, case: str, key: str) -> None:
    if isinstance(data, Mapping):
        lengths = {k: len(v) for k, v in data.items()}
        if len(set(lengths.values())) > 1:
            listed = ", ".join(f"{k}: {n}" for k, n in lengths.items())
            raise CaseError(
                f"the inputs have different numbers of samples ({listed}); each needs one row per sample",
                case=case,
                field=key,
            )


def source_kind(value: Any) -> str | None:
    """``dataset``, ``pydataset`` or ``generator`` when ``value`` is one of the non-array inputs
    fit takes, else None. Told apart by class, not by importing a framework (the case is
    framework-free): a ``tf.data.Dataset`` subclasses ``DatasetV2``, a PyDataset (Keras 3) or a
    Sequence (Keras 2) comes from a Keras package, a generator is a Python iterator."""
    import inspect

    if value is None or isinstance(value, (np.ndarray, Mapping, list, tuple, str, bytes)):
        return None
    for cls in type(value).__mro__:
        module = cls.__module__ or ""
        if cls.__name__ == "DatasetV2" and module.startswith("tensorflow"):
            return "dataset"
        keras_module = module.split(".")[0] in ("keras", "tf_keras", "tensorflow")
        if cls.__name__ in ("PyDataset", "Sequence") and keras_module:
            return "pydataset"
    if inspect.isgenerator(value) or isinstance(value, Iterator):
        return "generator"
    return None


def source_length(value: Any) -> int | None:
    """Batches in one pass of a dataset or PyDataset; None when infinite, unknown or a generator."""
    kind = source_kind(value)
    if kind == "pydataset":
        try:
            return len(value)
        except TypeError:
            return None  # a Keras 3 PyDataset whose num_batches is None (infinite)
    if kind == "dataset":
        count = int(value.cardinality())  # -1: infinite (repeat()), -2: unknown (filter, generator)
        return count if count >= 0 else None
    return None


def _split_at(samples: int, validation_split: float) -> int:
    """Where fit cuts x for ``validation_split``: the same floor as Keras 2 and Keras 3."""
    return math.floor(samples * (1.0 - validation_split))


def _head(data: Any, count: int) -> Any:
    return {k: v[:count] for k, v in data.items()} if isinstance(data, Mapping) else data[:count]


def _tail(data: Any, start: int) -> Any:
    return {k: v[start:] for k, v in data.items()} if isinstance(data, Mapping) else data[start:]


def _num_samples(data: Any) -> int:
    if isinstance(data, Mapping):
        lengths = {len(v) for v in data.values()}
        return lengths.pop() if len(lengths) == 1 else -1
    return len(data)


def _check_positive_int(value: Any, key: str, *, case: str | None) -> None:
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value <= 0:
        raise CaseError(f"must be a positive integer, got {value!r}", case=case, field=key)


def _check_number(value: Any, key: str, *, case: str | None, allow_zero: bool) -> None:
    if (
        not isinstance(value, (int, float, np.floating, np.integer))
        or isinstance(value, bool)
        or not math.isfinite(float(value))
        or value < 0
        or (value == 0 and not allow_zero)
    ):
        raise CaseError(f"must be a finite non-negative number, got {value!r}", case=case, field=key)


def _check_loss_weights(value: Any, *, case: str) -> None:
    if value is None:
        return
    fix = 'a weight per output, e.g. {"up": 1.0, "down": 0.5} or [1.0, 0.5] in the outputs\' order'
    if isinstance(value, Mapping):
        items = [(f"loss_weights.{name}", weight) for name, weight in value.items()]
    elif isinstance(value, Sequence) and not isinstance(value, (str, bytes)):
        items = [(f"loss_weights[{index}]", weight) for index, weight in enumerate(value)]
    else:
        raise CaseError(
            f"loss_weights takes a dict or a list, got {type(value).__name__}",
            case=case,
            field="loss_weights",
            fix=fix,
        )
    if not items:
        raise CaseError("loss_weights is empty", case=case, field="loss_weights", fix=fix)
    for where, weight in items:
        _check_number(weight, where, case=case, allow_zero=True)


def _check_keras_spec(value: Any, key: str, *, case: str) -> None:
    if value is None:
        raise CaseError(f"a case needs a {key}", case=case, field=key)
    if key == "loss" and is_per_output(value):
        for output, spec in value.items():
            _check_keras_spec(spec, f"loss.{output}", case=case)
        return
    if isinstance(value, Mapping) and "class_name" not in value:
        raise CaseError(
            f'a {key} config is a dict like {{"class_name": "...", "config": {{...}}}}',
            case=case,
            field=key,
            fix='for a model with several outputs, a loss per output: {"output_name": "mse", ...}'
            if key == "loss"
            else None,
        )


CALLBACK_FIX = (
    'give a list of Keras callbacks: objects, zero-argument factories, {"class_name": '
    '"ReduceLROnPlateau", "config": {...}} dicts, or importable "package.module:Name" strings'
)


def _check_callbacks(value: Any, *, case: str) -> tuple[Any, ...]:
    """The callbacks as a tuple, each entry of a form :mod:`.backend.callbacks` can make per run."""
    if value is None:
        return ()
    if isinstance(value, (str, bytes, Mapping)) or not isinstance(value, Sequence):
        raise CaseError(
            f"callbacks must be a list, got {type(value).__name__}",
            case=case,
            field="callbacks",
            fix=CALLBACK_FIX,
        )
    for index, entry in enumerate(value):
        where = f"callbacks[{index}]"
        if isinstance(entry, str):
            if not entry.strip():
                raise CaseError("an empty callback name", case=case, field=where, fix=CALLBACK_FIX)
        elif isinstance(entry, Mapping):
            if not isinstance(entry.get("class_name"), str) or set(entry) - {"class_name", "config"}:
                raise CaseError(
                    'a callback config is a dict like {"class_name": "EarlyStopping", "config": {...}}',
                    case=case,
                    field=where,
                    fix=CALLBACK_FIX,
                )
            if not isinstance(entry.get("config", {}), Mapping):
                raise CaseError("a callback's config must be a dict", case=case, field=f"{where}.config")
        elif not callable(entry) and not hasattr(entry, "set_model"):
            raise CaseError(
                f"expected a Keras callback, got {type(entry).__name__}",
                case=case,
                field=where,
                fix=CALLBACK_FIX,
            )
    return tuple(value)


def is_per_output(loss: Any) -> bool:
    """A loss per named output, as ``compile(loss={"first": "mse", ...})`` takes it: a dict that is
    not itself one loss's ``{"class_name", "config"}``, whose values are losses."""
    return (
        isinstance(loss, Mapping)
        and "class_name" not in loss
        and bool(loss)
        and all(
            isinstance(spec, str) or (isinstance(spec, Mapping) and "class_name" in spec) or callable(spec)
            for spec in loss.values()
        )
    )
