"""Evidence for the diagnosis, probed after training: the final gradients and the optimizer's
intended update, which tell "updates rounded away" from "gradient underflowed" from "the
optimizer's own arithmetic gives 0"."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Mapping
from typing import Any

import numpy as np

from ..perturb import PRECISION_BITS
from .keras_adapter import Flavour
from .quiet import quiet_function


def weight_name(flavour: Flavour, model: Any, weight: Any) -> str:
    """The one naming scheme of weights in runs, snapshots and gates (Keras 3's path)."""
    return flavour.weight_name(model, weight)


def final_gradients(flavour: Flavour, model: Any, batch: Any) -> dict[str, np.ndarray]:
    """Gradients at the final weights on ``batch``, as ``train_step`` would compute them.

    This is the evidence that tells "updates rounded away" (gradient nonzero) from "gradient
    underflowed" (exactly zero in the variable's dtype). Weights are restored afterwards, so
    layers with state (batch normalisation) are left as training left them.
    """
    tf = flavour.tf
    saved = model.get_weights()
    x, y, sample_weight = flavour.unpack(batch)
    try:
        with tf.GradientTape() as tape:
            y_pred = model(x, training=True)
            loss = flavour.compute_loss(model, x, y, y_pred, sample_weight)
            loss = flavour.scale_loss(model.optimizer, loss)
        gradients = tape.gradient(loss, model.trainable_weights)
    finally:
        model.set_weights(saved)
    return {
        weight_name(flavour, model, w): _dense(tf, w, g) for w, g in zip(model.trainable_weights, gradients)
    }


OUTPUT_EVIDENCE_KEYS = (
    "loss_dtype",
    "outputs_dtype",
    "loss_gradient_zero",
    "largest_loss_gradient",
    "output_gradient_zero",
    "saturated_share",
    "float64_loss",
    "outputs_equal_targets",
)
"""The keys of :func:`output_evidence`, always all present (None where not computed)."""

PROBABILITY_LOSSES = (
    "binary_crossentropy",
    "categorical_crossentropy",
    "sparse_categorical_crossentropy",
    "binary_focal_crossentropy",
    "categorical_focal_crossentropy",
)
"""Loss functions that take probabilities unless ``from_logits=True`` (Keras's own names)."""


def loss_compute_dtype(flavour: Flavour, model: Any, tracked_dtype: str) -> str:
    """The dtype the loss is computed in, read from what computes it.

    Keras 3: each ``Loss`` object casts ``y_true`` and ``y_pred`` to its own dtype (``floatx``,
    float32, unless given: ``BinaryCrossentropy(dtype="float16")`` computes in float16) and the
    compiled container hands the tracker a float32 value whatever that was, so ``tracked_dtype``
    (what the tracker received) can be wrong there. Keras 2: a loss computes in the dtype of the
    outputs it is given, which is what the tracker receives. A loss pinned by the case's
    ``loss_dtype`` says its pinned dtype on both. With several losses, the narrowest; where no
    loss says, ``tracked_dtype``.
    """
    try:
        dtypes = [flavour.loss_object_dtype(loss) for loss in flavour.loss_objects(model)]
    except Exception:
        return tracked_dtype
    known = [d for d in dtypes if d]
    if not known:
        return tracked_dtype
    if len(known) < len(dtypes):  # the others compute in their outputs' dtype
        known.append(tracked_dtype)
    return _narrowest(known)


def needs_output_evidence(loss: np.ndarray, gradients: dict[str, np.ndarray]) -> bool:
    """Whether the diagnosis will read :func:`output_evidence`: only its rules for a loss that
    ends at exactly 0 and for final gradients that are all exactly 0 do (``diagnosis.rules``),
    and neither where any loss is not finite: the run is diagnosed as diverged before them."""
    values = np.asarray(loss, np.float64)
    if not np.all(np.isfinite(values)):
        return False
    if values.size and float(values[-1]) == 0.0:
        return True
    return bool(gradients) and all(not np.any(np.asarray(g, np.float64)) for g in gradients.values())


def needs_intended_update(weights_changed: np.ndarray, tensor_update: np.ndarray) -> bool:
    """Whether the diagnosis will read :func:`intended_update`: only to say why a weight stopped
    moving (a frozen weight's cause, a stalled run's), so where some weight did not move in the
    last step. Without per-weight updates (``fit``), always."""
    changed = np.asarray(weights_changed, bool)
    if changed.size and not changed[-1]:
        return True
    updates = np.asarray(tensor_update)
    if updates.ndim != 2 or not updates.shape[0] or not updates.shape[1]:
        return True
    return bool(np.any(updates[-1] == 0))


def output_evidence(flavour: Flavour, model: Any, batch: Any) -> dict[str, Any]:
    """Facts about the model's outputs at its final weights on ``batch``, for the diagnosis to
    check a cause before it names it. Every key of :data:`OUTPUT_EVIDENCE_KEYS` is present, as a
    plain Python value, None where it could not be computed; this never raises.

    ``loss_dtype``
        the dtype the loss was computed in (:func:`loss_compute_dtype`).
    ``outputs_dtype``
        the dtype of the model's outputs (its compute dtype; with several outputs, the narrowest).
    ``loss_gradient_zero``
        whether the gradient of the loss, scaled as training scales it (a ``LossScaleOptimizer``),
        with respect to the outputs cast to ``loss_dtype`` is exactly 0 everywhere: the loss is
        flat at these outputs (saturated probabilities, where Keras's clipping has no gradient;
        a loss that is exactly 0 in its dtype), so no underflow is needed to explain a zero
        gradient. Where the outputs reach a Keras cross-entropy uncast, it reads the logits
        behind their softmax or sigmoid (as in training); the gradient is then the logits'.
    ``largest_loss_gradient``
        the largest magnitude of that gradient, in float64.
    ``output_gradient_zero``
        whether that gradient, cast to the outputs' dtype (what flows back into the layers), is
        exactly 0 everywhere. False/True with ``loss_gradient_zero`` is a gradient that underflowed
        in the cast from ``loss_dtype``; both False while every weight gradient is 0, a gradient
        that vanished inside the layers.
    ``saturated_share``
        the share of output elements exactly 0.0 or 1.0 in the outputs' dtype, where the outputs
        are probabilities: one output, a Keras cross-entropy not ``from_logits``, every value in
        [0, 1]. None otherwise (logits, regression, a custom loss).
    ``float64_loss``
        the loss recomputed in float64 on the same outputs (cast to float64; where the loss read
        the logits, those, through the same activation) and targets: the loss's per-sample
        function (a pinned loss's own, unpinned), then its reduction (the mean for
        ``sum_over_batch_size``, the sum for ``sum``). The data term only: regularisation and
        ``loss_weights`` are left out. None with several outputs or losses, sample weights in
        the batch, a loss that does not compute in float64 when given float64 (a custom loss
        that casts), or any error. 0.0 is an exact fit; > 0 where the recorded loss is 0 is a
        loss that rounded to 0 in its dtype.
    ``outputs_equal_targets``
        whether the outputs, in their dtype, equal the targets exactly, element by element
        (a trailing axis of 1 ignored); None when the shapes differ otherwise (sparse labels)
        or there are several outputs.

    The model is called with ``training=True`` as :func:`final_gradients` calls it; its weights,
    and the state of its metrics and seed generators, are restored afterwards.
    """
    evidence: dict[str, Any] = dict.fromkeys(OUTPUT_EVIDENCE_KEYS)
    try:
        saved = _saved_state(flavour, model)
    except Exception:
        return evidence
    try:
        _probe_outputs(flavour, model, batch, evidence)
    except Exception:  # what was computed before the failure stands; the rest stays None
        pass
    finally:
        _restore(saved)
    return evidence


ACTIVATION_OPS = ("Softmax", "Sigmoid")
"""The ops behind which Keras's cross-entropies read the logits instead of the probabilities, when
the output reaches the loss unchanged (no cast): ``_get_logits`` in each Keras's backend."""


def _probe_outputs(flavour: Flavour, model: Any, batch: Any, evidence: dict[str, Any]) -> None:
    """Fills ``evidence``; runs the model and the loss traced, as ``train_step`` runs them.

    Keras's cross-entropies look through a softmax or sigmoid output to its logits when the
    output reaches them uncast (by the ``_keras_logits`` Keras's activations attach, or, in a
    graph, by the op that made it); then the loss's gradient is the logits' and saturated
    probabilities do not flatten it. Traced, the probe sees both ways as training does.
    """
    tf = flavour.tf
    x, y, sample_weight = flavour.unpack(batch)
    traced: dict[str, Any] = {}

    def forward(x: Any, y: Any, sample_weight: Any) -> dict[str, Any]:
        y_pred = model(x, training=True)
        outputs = tf.nest.flatten(y_pred)
        tracked = flavour.compute_loss(model, x, y, y_pred, sample_weight)
        loss_dtype = loss_compute_dtype(flavour, model, str(tracked.dtype.name))
        # what the loss takes: the outputs themselves where no cast is needed (so Keras can see
        # the softmax or sigmoid behind them, as in training), else their cast, as the loss casts
        taken = [o if o.dtype.name == loss_dtype else tf.identity(tf.cast(o, loss_dtype)) for o in outputs]
        logits = [_logits_behind(tf, o) if o is t else None for o, t in zip(outputs, taken)]
        behind = [v for v in logits if v is not None]
        with tf.GradientTape() as tape:
            tape.watch(taken + behind)
            loss = flavour.compute_loss(model, x, y, tf.nest.pack_sequence_as(y_pred, taken), sample_weight)
            loss = flavour.scale_loss(model.optimizer, loss)
        found = tape.gradient(loss, taken + behind)
        through_outputs = [tf.zeros_like(t) if g is None else g for t, g in zip(taken, found)]
        rest = iter(found[len(taken) :])
        through_logits = [None if v is None else next(rest) for v in logits]
        # where the loss read the logits, its gradient is theirs (the outputs get none)
        read_logits = [g is not None for g in through_logits]
        traced.update(
            loss_dtype=loss_dtype,
            read_logits=read_logits,
            activations=[o.op.type if read else None for o, read in zip(outputs, read_logits)],
        )
        gradients = [go if gl is None else gl for go, gl in zip(through_outputs, through_logits)]
        return {
            "outputs": outputs,
            "taken": [o if v is None or not read else v for o, v, read in zip(outputs, logits, read_logits)],
            "in_loss_dtype": gradients,
            # the logits an output was computed from have its dtype: no cast on that way back
            "in_outputs_dtype": [tf.cast(g, o.dtype) for g, o in zip(gradients, outputs)],
        }

    found = quiet_function(tf, forward)(x, y, sample_weight)  # traced once per run: no retracing warning
    outputs = found["outputs"]
    evidence["outputs_dtype"] = _narrowest([o.dtype.name for o in outputs])
    evidence["loss_dtype"] = traced["loss_dtype"]
    in_loss_dtype = [tf.cast(g, tf.float64).numpy() for g in found["in_loss_dtype"]]
    in_outputs_dtype = [tf.cast(g, tf.float64).numpy() for g in found["in_outputs_dtype"]]
    evidence["loss_gradient_zero"] = bool(all(not np.any(g) for g in in_loss_dtype))
    evidence["largest_loss_gradient"] = float(max(np.max(np.abs(g), initial=0.0) for g in in_loss_dtype))
    evidence["output_gradient_zero"] = bool(all(not np.any(g) for g in in_outputs_dtype))

    losses = flavour.loss_objects(model)
    targets = tf.nest.flatten(y)
    if not (len(outputs) == 1 and len(losses) == 1 and len(targets) == 1):
        return
    with contextlib.suppress(Exception):
        evidence["saturated_share"] = _saturated_share(tf, losses[0], outputs[0])
    with contextlib.suppress(Exception):
        evidence["outputs_equal_targets"] = _equal(tf, outputs[0], targets[0])
    if sample_weight is None:
        with contextlib.suppress(Exception):
            activation = traced["activations"][0]
            evidence["float64_loss"] = _float64_loss(
                flavour, losses[0], targets[0], found["taken"][0], activation
            )


def _logits_behind(tf: Any, output: Any) -> Any:
    """The logits Keras's cross-entropies would read instead of ``output``, or None."""
    cached = getattr(output, "_keras_logits", None)
    if cached is not None:
        return cached
    op = getattr(output, "op", None)
    if op is not None and op.type in ACTIVATION_OPS and len(op.inputs) == 1:
        return op.inputs[0]
    return None


def _saturated_share(tf: Any, loss: Any, output: Any) -> float | None:
    """The share of outputs at exactly 0 or 1, where they are surely probabilities."""
    loss = getattr(loss, "unpinned", loss)
    function = getattr(loss, "fn", loss)
    arguments = getattr(loss, "_fn_kwargs", None) or {}
    name = getattr(function, "__name__", "")
    module = getattr(function, "__module__", "") or ""
    if name not in PROBABILITY_LOSSES or not module.startswith(("keras", "tf_keras")):
        return None
    if arguments.get("from_logits", False):
        return None
    values = tf.cast(output, tf.float64).numpy()
    if values.size == 0 or not np.all((values >= 0.0) & (values <= 1.0)):
        return None
    return float(np.mean((values == 0.0) | (values == 1.0)))


def _equal(tf: Any, output: Any, target: Any) -> bool | None:
    """Whether the outputs equal the targets exactly (a trailing axis of 1 ignored)."""
    predicted = tf.cast(output, tf.float64).numpy()
    wanted = np.asarray(tf.cast(target, tf.float64).numpy())
    if wanted.shape != predicted.shape:
        if (*wanted.shape, 1) == predicted.shape:
            wanted = wanted[..., None]
        elif (*predicted.shape, 1) == wanted.shape:
            predicted = predicted[..., None]
        else:
            return None
    return bool(np.array_equal(predicted, wanted))


def _float64_loss(
    flavour: Flavour, loss: Any, target: Any, taken: Any, activation: str | None
) -> float | None:
    """The loss's per-sample function on float64 outputs and targets, then its reduction.

    ``taken`` is what the loss read in training: the outputs, or (``activation`` given) the
    logits behind them, which are made into float64 probabilities by the same op inside a graph so
    the loss reads the logits again.
    """
    tf = flavour.tf
    inner = getattr(loss, "unpinned", loss)
    per_sample = inner.call if isinstance(inner, flavour.keras.losses.Loss) else inner
    reduction = str(getattr(loss, "reduction", "sum_over_batch_size"))
    if activation is not None and activation not in ACTIVATION_OPS:
        return None
    apply = {"Softmax": tf.nn.softmax, "Sigmoid": tf.math.sigmoid, None: tf.identity}[activation]
    traced: dict[str, Any] = {}

    def values(target: Any, taken: Any) -> Any:
        predicted = apply(tf.cast(taken, tf.float64))
        result = tf.convert_to_tensor(per_sample(flavour.match_target_rank(target, predicted), predicted))
        traced["dtype"] = result.dtype
        return result

    computed = quiet_function(tf, values)(tf.cast(target, tf.float64), taken)
    if traced["dtype"] != tf.float64:  # it computed in something else: not a float64 loss
        return None
    array = np.asarray(computed.numpy())
    if reduction in ("sum_over_batch_size", "auto", "mean", "mean_with_sample_weight"):
        return float(np.mean(array)) if array.size else None
    if reduction == "sum":
        return float(np.sum(array))
    return None


def _saved_state(flavour: Flavour, model: Any) -> list[tuple[Any, np.ndarray]]:
    """Every variable a forward pass and a loss may change: the weights (batch normalisation's
    moving statistics among them), metrics (a loss container updates its own), seed generators."""
    variables: list[Any] = list(model.weights)
    for extra in ("variables", "metrics_variables"):
        with contextlib.suppress(Exception):
            variables += list(getattr(model, extra, None) or [])
    with contextlib.suppress(Exception):
        for metric in model.metrics:
            variables += list(metric.variables)
    seen: set[int] = set()
    state = []
    for variable in variables:
        if id(variable) in seen:
            continue
        seen.add(id(variable))
        state.append((variable, np.array(variable.numpy())))
    return state


def _restore(state: list[tuple[Any, np.ndarray]]) -> None:
    for variable, value in state:
        with contextlib.suppress(Exception):
            variable.assign(value)


def _narrowest(dtypes: list[str]) -> str:
    """The dtype with the fewest significant bits (the first of equals)."""
    return min(dtypes, key=lambda d: PRECISION_BITS.get(d, 64))


def _dense(tf: Any, weight: Any, gradient: Any) -> np.ndarray:
    """A gradient as a dense array: zeros where there is none, ``IndexedSlices`` (an Embedding's
    sparse gradient) scattered into the weight's shape."""
    if gradient is None:
        return np.zeros(weight.shape, weight.dtype)
    return np.array(tf.convert_to_tensor(gradient).numpy())


def intended_update(
    flavour: Flavour, model: Any, gradients: dict[str, np.ndarray], dtype: str = "float64"
) -> dict[str, np.ndarray] | None:
    """The update the optimizer would make next, computed in ``dtype``, applied to zeros.

    A clone of the optimizer gets ``dtype`` copies of the weights (zeros, so no weight can
    absorb the update) and of its own state (iteration count, moments), then applies the
    final gradients. In float64 this is the update the optimizer means to make; in the
    variables' dtype it is the update its arithmetic can express. Comparing them with the
    spacing of the weights says why a stalled run stalled. Returns None if this optimizer
    cannot be cloned that way; the diagnosis then falls back to the gradients.
    """
    optimizer = model.optimizer
    base = flavour.base_optimizer(optimizer)
    try:
        scale = flavour.loss_scale(optimizer)
        trainables = model.trainable_weights
        # The update alone, measured from zero so a float64 weight cannot absorb it either;
        # only weight decay depends on the weight's value, so then start from the weights.
        decays = bool(getattr(base, "weight_decay", None))
        shadows = [
            flavour.variable(
                np.asarray(w.numpy()).astype(np.float64) if decays else np.zeros(w.shape, np.float64),
                dtype,
            )
            for w in trainables
        ]
        clone = type(base).from_config(base.get_config())
        clone.build(shadows)
        if len(clone.variables) != len(base.variables):
            return None
        for source, target in zip(base.variables, clone.variables):
            if tuple(source.shape) != tuple(target.shape):
                return None
            target.assign(_cast(flavour, np.asarray(source.numpy()), target.dtype))
        names = [weight_name(flavour, model, w) for w in trainables]
        before = [np.array(s.numpy()) for s in shadows]
        grads = [_cast(flavour, gradients[n].astype(np.float64) / scale, dtype) for n in names]
        clone.apply_gradients(zip(grads, shadows))
        return {
            n: np.asarray(s.numpy()).astype(np.float64) - np.asarray(b).astype(np.float64)
            for n, s, b in zip(names, shadows, before)
        }
    except Exception:
        return None


def _cast(flavour: Flavour, value: np.ndarray, dtype: Any) -> Any:
    """``value`` as a tensor of ``dtype`` on the flavour's backend (``tf.cast`` on TensorFlow,
    ``keras.ops.cast`` on JAX and PyTorch)."""
    if flavour.portable:
        ops = flavour.keras.ops
        return ops.cast(ops.convert_to_tensor(value), dtype)
    tf = flavour.tf
    return tf.cast(tf.convert_to_tensor(value), dtype)


def describe_optimizer(flavour: Flavour, optimizer: Any) -> str:
    """``RMSprop(learning_rate=2.55)``, wrapped as ``LossScaleOptimizer(...)`` when it is one."""
    base = flavour.base_optimizer(optimizer)
    try:
        rate = float(np.asarray(base.learning_rate))
        text = f"{type(base).__name__}(learning_rate={rate:g})"
    except Exception:
        text = type(base).__name__
    return f"LossScaleOptimizer({text})" if flavour.scales_loss(optimizer) else text


def what_ran(value: Any) -> str:
    """The class that ran, module path included, and its config: ``keras.src.optimizers.adam.Adam
    {...}``. A name like ``Adam(learning_rate=2.55)`` reads the same for Keras 2.15's legacy
    optimizer (which a dict spec can become) and the new one; the module path tells them apart.

    A loss pinned to a dtype (:meth:`.keras_adapter.Flavour.pin_loss_dtype`, a case's
    ``loss_dtype`` or a replay's set-back) reads as the user's loss it wraps: the pinned dtype is
    recorded as the loss dtype, and the wrapper is the plugin's own machinery, never a change."""
    if isinstance(value, Mapping):
        return "; ".join(f"{name}: {what_ran(one)}" for name, one in value.items())
    value = getattr(value, "unpinned", value)
    if isinstance(value, str) or value is None:
        return str(value)
    if callable(value) and not hasattr(value, "get_config"):  # a plain loss function
        return f"{getattr(value, '__module__', '?')}.{getattr(value, '__qualname__', repr(value))}"
    cls = type(value)
    try:
        config = value.get_config()
    except Exception:  # a custom object without a config: its class still says what ran
        config = {}
    return f"{cls.__module__}.{cls.__qualname__} {json.dumps(_plain(config), sort_keys=True, default=str)}"


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)
