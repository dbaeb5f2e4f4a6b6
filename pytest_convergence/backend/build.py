"""A case made into a compiled Keras model in one dtype: model, loss, optimizer, pinned weights.

Built the way a user's own script would build it (the dtype as the global policy while building
and compiling, a fresh optimizer per run, the seed set first), so ``fit`` on the result is the
user's ``fit``. Every failure is reported as the user's case error, naming the field.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any, cast

import numpy as np

from ..case import Case, is_per_output, model_object_error
from ..dtypes import DtypeInfo, dtype_info
from ..errors import CaseError, first_line
from .importable import make_importable, names_an_importable
from .keras_adapter import Flavour


def case_error(case: Case, dtype: str, message: str, field: str, fix: str | None = None) -> CaseError:
    """An error about ``case`` trained in ``dtype``, naming the field at fault."""
    return CaseError(message, case=case.name, dtype=dtype, field=field, fix=fix)


def overrides(flavour: Flavour, model: Any, method: str) -> bool:
    """Whether the model's class overrides Keras's ``method`` (a user's own ``train_step``)."""
    return getattr(type(model), method, None) is not getattr(flavour.keras.Model, method, None)


def loss_not_tracked(case: Case, dtype: str, flavour: Flavour, model: Any) -> Exception:
    """The error for a training whose loss never reached the model's loss tracker, where each
    step's loss is read (:class:`.capture.LossCapture`): a user's own step that bypasses it."""
    if overrides(flavour, model, "train_step"):
        return case_error(
            case,
            dtype,
            "the model's own train_step does not hand its loss to the model's loss tracker (the "
            "metric named 'loss' in model.metrics), where each step's loss is read",
            "model",
            fix="in train_step, update the metric named 'loss' with the step's loss, as keras.io's "
            "custom train_step does: for metric in self.metrics: if metric.name == 'loss': "
            "metric.update_state(loss) (on Keras 2, compute the loss with self.compiled_loss); or "
            "override compute_loss instead of train_step",
        )
    if overrides(flavour, model, "compute_loss") and flavour.major == 2:
        return case_error(
            case,
            dtype,
            "the model's own compute_loss does not call self.compiled_loss, where Keras 2 hands the "
            "loss to the model's loss tracker: each step's loss is read there (fit's History records "
            "a loss of 0 for this model too)",
            "model",
            fix="compute the loss with self.compiled_loss(y, y_pred, sample_weight, "
            "regularization_losses=self.losses) inside compute_loss and change what it returns",
        )
    return flavour.unsupported("the model's loss tracker receiving each step's loss")


@dataclass
class BuiltModel:
    """A compiled model ready to train, and what building it decided."""

    model: Any
    pinned_loss_dtype: str | None
    """The dtype the case pins its loss to; Keras 3 still records the value in float32."""


def _clear_session(keras: Any) -> None:
    clear = keras.backend.clear_session
    if "free_memory" in inspect.signature(clear).parameters:  # Keras 3.6+
        clear(free_memory=False)
    else:
        clear()


def build_model(case: Case, dtype: str, flavour: Flavour) -> BuiltModel:
    """Build and compile ``case`` in ``dtype``, from fresh global state and the case's seed."""
    keras = flavour.keras
    # Fresh global state: layer names (and so weight names in snapshots) restart at "dense",
    # whatever was trained before in this process. Without Keras 3's full garbage collection:
    # with a session's earlier models alive it took 0.1-0.5 s a run, and Python collects anyway.
    _clear_session(keras)
    keras.utils.set_random_seed(case.seed)
    pinned_dtype: str | None = None
    with flavour.dtype_policy(dtype):
        model = _model(case, dtype, flavour)
        check_input_shape(case, dtype, model)
        get_loss = partial(flavour.get, "losses")
        losses = (
            {
                name: _keras_object(case, dtype, get_loss, spec, f"loss.{name}")
                for name, spec in cast(Mapping[str, Any], case.loss).items()
            }
            if is_per_output(case.loss)
            else {"": _keras_object(case, dtype, get_loss, case.loss, "loss")}
        )
        if case.loss_dtype is not None:
            pinned = case.loss_dtype
            pinned_dtype = dtype_info(dtype).compute_dtype if pinned == "compute" else pinned
            losses = {name: flavour.pin_loss_dtype(one, pinned_dtype) for name, one in losses.items()}
        loss = losses.get("", losses)
        optimizer = _keras_object(
            case, dtype, partial(flavour.get, "optimizers"), case.optimizer, "optimizer"
        )
        for key, kind, value in (("loss", "losses", losses), ("optimizer", "optimizers", [optimizer])):
            _check_kind(case, dtype, flavour, key, kind, value)
        metrics = [_metric(case, dtype, flavour, item, index) for index, item in enumerate(case.metrics)]
        try:
            model.compile(
                loss=loss,
                optimizer=optimizer,
                metrics=metrics or None,
                # TensorFlow: fit's plain graph, which the loop reproduces; JAX: fit's jitted step, as
                # its users run it (eager JAX is another, far slower program); PyTorch: eager either way
                jit_compile="auto" if flavour.portable else False,
                **({"loss_weights": case.loss_weights} if case.loss_weights is not None else {}),
            )
        except (ValueError, TypeError) as error:
            raise case_error(
                case,
                dtype,
                f"Keras could not compile the model: {first_line(error)}",
                "metrics" if case.metrics else ("loss_weights" if case.loss_weights is not None else "model"),
            ) from None
    _check_loss_weights(case, dtype, model)
    return BuiltModel(model=model, pinned_loss_dtype=pinned_dtype)


def _check_loss_weights(case: Case, dtype: str, model: Any) -> None:
    """``loss_weights`` against the model's outputs, where it declares them: Keras ignores a
    weight named for no output, and the loss it was meant for would silently count 1."""
    weights = case.loss_weights
    names = [str(name) for name in (getattr(model, "output_names", None) or [])]
    if weights is None or not names:
        return
    fix = f"give a weight per output, by the model's output names ({', '.join(names)}) or in their order"
    if isinstance(weights, Mapping):
        for name in weights:
            if name not in names:
                raise case_error(
                    case,
                    dtype,
                    f"the model has no output {name!r} (its outputs: {', '.join(names)})",
                    f"loss_weights.{name}",
                    fix=fix,
                )
    elif len(weights) != len(names):
        raise case_error(
            case,
            dtype,
            f"{len(weights)} loss weights for {len(names)} outputs ({', '.join(names)})",
            "loss_weights",
            fix=fix,
        )


def _check_kind(case: Case, dtype: str, flavour: Flavour, key: str, kind: str, values: Any) -> None:
    """A Keras object given where another kind belongs (a loss object as the optimizer) is named
    as the field it sits in, before ``compile`` reports it as a problem of something else."""
    for value in values.values() if isinstance(values, Mapping) else values:
        if flavour.usable_as(kind, value):
            continue
        other = "optimizers" if kind == "losses" else "losses"
        what = f"{type(value).__name__} ({type(value).__module__})"
        misplaced = flavour.usable_as(other, value)
        raise case_error(
            case,
            dtype,
            f"expected {'a loss' if key == 'loss' else 'an optimizer'}, got a {what}"
            + (f", which is {'an optimizer' if other == 'optimizers' else 'a loss'}" if misplaced else ""),
            key,
            fix=(
                f"pass it as {'optimizer' if other == 'optimizers' else 'loss'}=..., and "
                if misplaced
                else ""
            )
            + (
                'give an optimizer: "sgd", keras.optimizers.SGD(0.01) or '
                '{"class_name": "RMSprop", "config": {"learning_rate": 0.01}}'
                if key == "optimizer"
                else 'give a loss: "mse", keras.losses.MeanSquaredError() or '
                '{"class_name": "BinaryCrossentropy", "config": {"from_logits": true}}'
            ),
        )


def check_input_shape(case: Case, dtype: str, model: Any) -> None:
    """x against the input shape the model declares, before anything is traced.

    Keras reports a mismatch from inside the first trace, as a layer's problem; the mistake is the
    case's x or input shape, whatever the dtype, and the fix is one of the two. Only declared
    dimensions of a single array input of the same rank are compared: Keras itself adds or drops a
    trailing axis of 1, and a subclassed model declares no input at all.
    """
    if isinstance(case.x, Mapping) or case.data_kind != "arrays":  # a dataset: Keras checks its batches
        return
    try:
        inputs = list(model.inputs or [])
    except (AttributeError, ValueError):
        return
    if len(inputs) != 1:
        return
    declared = tuple(None if d is None else int(d) for d in tuple(inputs[0].shape)[1:])
    given = tuple(int(d) for d in np.shape(case.x)[1:])
    if len(declared) != len(given) or all(d in (None, g) for d, g in zip(declared, given)):
        return
    wanted = "[" + ", ".join("any" if d is None else str(d) for d in declared) + "]"
    raise case_error(
        case,
        dtype,
        f"x has samples of shape {list(given)}, but the model's input takes samples of shape {wanted}",
        "x",
        fix=f"declare input_shape={list(given)} (Case.sequential's input_shape, a spec's [model] "
        f"input_shape, or the builder's Input), or give x samples of shape {wanted}",
    )


def _metric(case: Case, dtype: str, flavour: Flavour, item: Any, index: int) -> Any:
    """A metric as ``compile`` takes it: names and functions as given, objects copied, a
    ``{"class_name", "config"}`` dict deserialised by ``keras.metrics.get`` (which ``compile``
    itself does not do). A name is checked here, as ``compile`` would only fail on it while
    tracing the first step."""
    if names_an_importable(item):
        try:
            return make_importable(item)  # a metric of the user's own, named in a spec file
        except (ImportError, TypeError) as error:
            raise case_error(
                case,
                dtype,
                str(error),
                f"metrics[{index}]",
                fix="name a metric class or function as package.module:Name, its module beside the spec file",
            ) from None
    if isinstance(item, str):
        _check_metric_name(case, dtype, flavour, item, index)
        return item
    if not isinstance(item, Mapping):
        if not hasattr(item, "get_config"):
            return item  # a function
        # a metric object is copied per run, as losses and optimizers are: one shared instance
        # carried one run's state into the next (measured: fit's first epoch read another run's)
        return _keras_object(case, dtype, flavour.keras.metrics.get, item, f"metrics[{index}]")
    try:
        return flavour.keras.metrics.get(dict(item))
    except (ValueError, TypeError) as error:
        raise case_error(
            case,
            dtype,
            f"Keras does not know this metric: {first_line(error)}",
            f"metrics[{index}]",
            fix='use a name ("accuracy") or a config keras.metrics.get accepts, e.g. '
            '{"class_name": "BinaryAccuracy", "config": {"threshold": 0.0}}',
        ) from None


COMPILE_METRIC_NAMES = ("accuracy", "acc", "crossentropy", "ce")
"""Names ``compile`` resolves itself from the loss and the output (not ``keras.metrics.get``)."""


def _check_metric_name(case: Case, dtype: str, flavour: Flavour, name: str, index: int) -> None:
    if name in COMPILE_METRIC_NAMES:
        return
    try:
        found = flavour.keras.metrics.get(name)
        if not callable(found):  # Keras 2.15 hands an unknown name back unchanged
            raise ValueError(name)
    except (ValueError, TypeError):
        import difflib

        known = [n for n in dir(flavour.keras.metrics) if not n.startswith("_")] + list(COMPILE_METRIC_NAMES)
        close = difflib.get_close_matches(name, known, n=1)
        raise case_error(
            case,
            dtype,
            f"Keras does not know the metric {name!r}" + (f" (did you mean {close[0]!r}?)" if close else ""),
            f"metrics[{index}]",
            fix='use a name keras.metrics.get accepts ("accuracy", "mae", "auc"...) or a metric object',
        ) from None


def model_from_config(flavour: Flavour, spec: Mapping[str, Any]) -> Any:
    """Build a model from ``{"class_name", "config"}`` as ``model.get_config()`` describes it."""
    keras = flavour.keras
    spec = flavour.model_config(dict(spec))
    class_name = spec.get("class_name")
    config = spec.get("config", {})
    known = {"Sequential": keras.Sequential, "Functional": keras.Model, "Model": keras.Model}
    if class_name in known:
        return known[class_name].from_config(dict(config))
    return flavour.deserialize(dict(spec))


def pin_initial_weights(case: Case, dtype: str, model: Any) -> None:
    """Start from the case's pinned weights, if any, checked against the model's shapes."""
    pinned = case.initial_weights
    if pinned is None:
        return
    current = model.get_weights()
    if len(pinned) != len(current):
        raise case_error(
            case,
            dtype,
            f"{len(pinned)} arrays given but the model has {len(current)} weights "
            f"({', '.join(str(w.shape) for w in current)})",
            "initial_weights",
        )
    for index, (given, actual) in enumerate(zip(pinned, current)):
        if tuple(given.shape) != tuple(actual.shape):
            raise case_error(
                case,
                dtype,
                f"weight {index} has shape {tuple(given.shape)}, the model's has {tuple(actual.shape)}",
                f"initial_weights[{index}]",
            )
    model.set_weights([np.asarray(g).astype(a.dtype) for g, a in zip(pinned, current)])


def _model(case: Case, dtype: str, flavour: Flavour) -> Any:
    spec = case.model
    if isinstance(spec, flavour.keras.layers.Layer):  # a model is callable: it would be called with the dtype
        raise model_object_error(spec, case.name, dtype)
    if isinstance(spec, type) and issubclass(spec, flavour.keras.layers.Layer):
        raise case_error(
            case,
            dtype,
            f"got the class {spec.__name__}, where a function that builds the model is expected "
            "(it is called with the dtype policy name)",
            "model",
            fix=f"pass a function that builds it: model=lambda dtype: {spec.__name__}()",
        )
    try:
        model = spec(dtype) if callable(spec) else model_from_config(flavour, spec)
    except CaseError:
        raise
    except Exception as error:
        source = "the model builder raised" if callable(spec) else "Keras could not build the model config:"
        raise case_error(
            case, dtype, f"{source} {type(error).__name__}: {first_line(error)}", "model"
        ) from None
    if not isinstance(model, flavour.keras.Model):
        raise case_error(
            case, dtype, f"the model builder must return a keras.Model, got {type(model).__name__}", "model"
        )
    return model


def _keras_object(case: Case, dtype: str, getter: Callable[[Any], Any], spec: Any, field: str) -> Any:
    """A fresh Keras object per run: a shared optimizer instance would carry its state over."""
    if not isinstance(spec, (str, Mapping)) and hasattr(spec, "get_config"):
        try:
            config = spec.get_config()
            own_dtype = getattr(spec, "_dtype_policy", None)
            if own_dtype is not None and "dtype" not in config:
                # Keras 3.15's Loss.get_config leaves out the loss's own dtype: a copy without it
                # would compute in float32 where the user's loss object computes in float16
                try:
                    return type(spec).from_config({**config, "dtype": own_dtype.name})
                except TypeError:
                    pass
            return type(spec).from_config(config)
        except Exception as error:
            raise case_error(case, dtype, f"cannot copy the {field} object: {error}", field) from None
    try:
        return getter(dict(spec) if isinstance(spec, Mapping) else spec)
    except (ValueError, TypeError) as error:
        raise case_error(
            case,
            dtype,
            f"Keras does not know this {field}: {first_line(error)}",
            field,
            fix="use a name or config that keras.losses.get accepts, "
            'e.g. "binary_crossentropy" or {"class_name": "BinaryCrossentropy", "config": {...}}'
            if field.startswith("loss")
            else 'use a name or config that keras.optimizers.get accepts, e.g. "sgd" or '
            '{"class_name": "RMSprop", "config": {"learning_rate": 0.01}}',
        ) from None


@dataclass(frozen=True)
class TrainedDtypes:
    """The dtypes a built model really trains in, against the dtype it was asked for.

    ``mismatch`` is empty when every layer that holds weights follows the requested policy;
    otherwise it says which layers do not, in words, for the run, its summary and its snapshot.
    """

    variable_dtype: str
    compute_dtype: str
    mismatch: str = ""
    checked_layers: int = 0


_WIDTH = {"bfloat16": 0, "float16": 1, "float32": 2, "float64": 3}


def check_dtypes(case: Case, dtype: str, flavour: Flavour, model: Any) -> TrainedDtypes:
    """What the built model trains in; a :class:`CaseError` if that is not ``dtype`` (unless the
    case allows it, ``allow_dtype_mismatch``, which records it instead).

    A builder that ignores the dtype it is given (a model built outside the policy, or layers
    with ``dtype="float32"``) would train float32 while the summary and snapshot say float16.
    Checked twice, cheaply (no tensor is touched, only attributes):

    - each layer that holds weights: its compute dtype and variable dtype (its policy). Layers
      without weights may cast on purpose (Keras's mixed-precision guide keeps the final softmax
      in float32): not the builder's doing.
    - each floating-point variable, trainable or not, of the user's own layers (a custom layer, a
      subclassed model), whatever created it: its dtype against the policy's variable dtype (a
      custom layer's ``add_weight(dtype="float32")`` in a float16 run). Keras's own layers keep
      the variables Keras gives them under that policy (Keras 2's BatchNormalization keeps
      float32 parameters under float16, its Normalization its statistics in the compute dtype),
      and integer variables (counts, seeds) hold no float dtype to lie about.
    """
    wanted = dtype_info(dtype)
    layers = list(_layers_with_weights(flavour, model))
    if not layers:  # not built yet (older Keras builds while tracing): nothing to check now
        return TrainedDtypes(wanted.variable_dtype, wanted.compute_dtype)
    differing: dict[tuple[str, str], list[tuple[str, str]]] = {}
    reported: set[int] = set()
    for name, layer in layers:
        pair = (str(layer.variable_dtype), str(layer.compute_dtype))
        if pair != (wanted.variable_dtype, wanted.compute_dtype):
            differing.setdefault(pair, []).append((name, flavour.weight_name(model, layer.weights[0])))
            reported.add(id(layer))
    odd = _variables_off_policy(flavour, model, wanted, reported)
    if not differing and not odd:
        return TrainedDtypes(wanted.variable_dtype, wanted.compute_dtype, checked_layers=len(layers))
    asked = f"{dtype} means {_policy_words(wanted.variable_dtype, wanted.compute_dtype)}"
    parts = [
        f"{len(named)} of {len(layers)} layers with weights ({_names(named)}) trained with "
        f"{_policy_words(*pair)}, where {asked}"
        for pair, named in differing.items()
    ]
    by_dtype: dict[str, list[OddVariable]] = {}
    for each in odd:
        by_dtype.setdefault(each.dtype, []).append(each)
    parts += [
        f"{len(found)} {'variable' if len(found) == 1 else 'variables'} of the model's own layers "
        f"({_variable_names(found)}) {'is' if len(found) == 1 else 'are'} {variable_dtype}, where {asked}"
        for variable_dtype, found in by_dtype.items()
    ]
    mismatch = "; ".join(parts)
    if not case.allow_dtype_mismatch:
        allow = (
            "or, where this is on purpose, set allow_dtype_mismatch=True on the Case "
            "(allow_dtype_mismatch = true in a spec file) to train it and record what trained"
        )
        if not differing:
            first = odd[0]
            raise case_error(
                case,
                dtype,
                f"variable '{first.name}' of layer '{first.layer}' ({first.kind}) is {first.dtype}, "
                f"but {asked}"
                + (f" ({len(odd)} variables of the model's own layers differ)" if len(odd) > 1 else "")
                + f": it was made with its own dtype, so the summary and the snapshot would say {dtype} "
                "of a model that trained otherwise",
                "model",
                fix="create the variable and its layer without dtype= (add_weight then takes the "
                f"layer's policy, self.variable_dtype, and a layer the policy it is built under); {allow}",
            )
        (variable, compute), named = next(iter(differing.items()))
        layer, weight = named[0]
        count = sum(len(named) for named in differing.values())
        raise case_error(
            case,
            dtype,
            f"layer '{layer}' has {variable} variables ({weight}) and {compute} computation, but "
            f"{asked} ({count} of {len(layers)} layers with weights differ): the model builder did not "
            "build it under the dtype policy it was called with, so the summary and the snapshot "
            f"would say {dtype} of a model that trained otherwise",
            "model",
            fix="build every layer under the policy the builder is called with (no dtype= on its "
            "layers, the model made inside the builder); or, where this is on purpose, set "
            "allow_dtype_mismatch=True on the Case (allow_dtype_mismatch = true in a spec file) to "
            "train it and record what trained",
        )
    # recorded as what trained: the widest dtype present, so weights print with all their digits
    pairs = {(str(layer.variable_dtype), str(layer.compute_dtype)) for _, layer in layers}
    variable = max([v for v, _ in pairs] + [v.dtype for v in odd], key=lambda d: _WIDTH.get(d, -1))
    compute = max((c for _, c in pairs), key=lambda d: _WIDTH.get(d, -1))
    return TrainedDtypes(variable, compute, mismatch=mismatch, checked_layers=len(layers))


@dataclass(frozen=True)
class OddVariable:
    """A floating-point variable of the user's own layer whose dtype is not the policy's."""

    name: str
    layer: str
    kind: str
    dtype: str


def _variables_off_policy(
    flavour: Flavour, model: Any, wanted: DtypeInfo, reported: set[int]
) -> list[OddVariable]:
    """The float variables that are not the policy's variable dtype, each with the layer that made
    it (the innermost layer holding it), leaving out layers already reported whole and Keras's own
    layers under the run's policy (a Keras layer with a dtype of its own inside a custom layer is
    checked: the layer check sees only the model's layers)."""
    owner: dict[int, Any] = {}
    for layer in flavour.all_layers(model):  # parents first: the innermost holder comes last
        count = len(layer.weights)
        for weight in layer.weights:
            held = owner.get(id(weight))
            if held is None or count <= len(held.weights):
                owner[id(weight)] = layer
    policy = (wanted.variable_dtype, wanted.compute_dtype)
    odd = []
    for weight in model.weights:
        layer = owner.get(id(weight), model)
        if id(layer) in reported:
            continue
        if _keras_own(layer) and (str(layer.variable_dtype), str(layer.compute_dtype)) == policy:
            continue
        found = str(getattr(weight.dtype, "name", weight.dtype))
        if found in _WIDTH and found != wanted.variable_dtype:
            odd.append(
                OddVariable(flavour.weight_name(model, weight), layer.name, type(layer).__name__, found)
            )
    return odd


def _keras_own(layer: Any) -> bool:
    """Whether ``layer`` is one of Keras's own classes (its variables are as Keras makes them)."""
    return type(layer).__module__.split(".")[0] in ("keras", "tf_keras", "tensorflow")


def _variable_names(found: list[OddVariable]) -> str:
    shown = ", ".join(f"'{v.name}'" for v in found[:3])
    return shown + (f" and {len(found) - 3} more" if len(found) > 3 else "")


def _names(named: list[tuple[str, str]]) -> str:
    shown = ", ".join(f"'{layer}'" for layer, _ in named[:3])
    return shown + (f" and {len(named) - 3} more" if len(named) > 3 else "")


def _policy_words(variable: str, compute: str) -> str:
    return f"{variable} variables and {compute} computation"


def _layers_with_weights(flavour: Flavour, model: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """Every layer that holds weights, nested models opened (``base/dense``), in model order."""
    for layer in getattr(model, "layers", []):
        name = f"{prefix}{layer.name}"
        if isinstance(layer, flavour.keras.Model):
            yield from _layers_with_weights(flavour, layer, f"{name}/")
        elif layer.weights:
            yield name, layer
