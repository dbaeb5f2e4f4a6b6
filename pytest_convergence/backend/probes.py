"""Evidence for the diagnosis, probed after training: the final gradients and the optimizer's
intended update, which tell "updates rounded away" from "gradient underflowed" from "the
optimizer's own arithmetic gives 0"."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import numpy as np

from .keras_adapter import Flavour


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
    tf = flavour.tf
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
            target.assign(tf.cast(tf.convert_to_tensor(np.asarray(source.numpy())), target.dtype))
        names = [weight_name(flavour, model, w) for w in trainables]
        before = [np.array(s.numpy()) for s in shadows]
        grads = [tf.cast(tf.convert_to_tensor(gradients[n].astype(np.float64) / scale), dtype) for n in names]
        clone.apply_gradients(zip(grads, shadows))
        return {
            n: np.asarray(s.numpy()).astype(np.float64) - np.asarray(b).astype(np.float64)
            for n, s, b in zip(names, shadows, before)
        }
    except Exception:
        return None


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
    optimizer (which a dict spec can become) and the new one; the module path tells them apart."""
    if isinstance(value, Mapping):
        return "; ".join(f"{name}: {what_ran(one)}" for name, one in value.items())
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
