"""The probes of :mod:`.probes` on JAX and PyTorch, and what a run there must settle first.

The diagnosis checks a cause before it names it, from the final gradients, the update the
optimizer means to make (:func:`.probes.intended_update`, backend-neutral through ``keras.ops``)
and facts about the outputs. The gradients are taken the way each backend's ``train_step`` takes
them: ``jax.value_and_grad`` of the model's stateless ``compute_loss_and_updates`` on JAX,
``loss.backward()`` on PyTorch. Of the output facts, those that need a gradient with respect to
the outputs (``loss_gradient_zero``, ``largest_loss_gradient``, ``output_gradient_zero``) are
TensorFlow's only and stay None here: the diagnosis then names what the weights' gradients show
and says the output check did not run.
"""

from __future__ import annotations

import contextlib
from typing import Any

import numpy as np

from ..case import Case
from ..errors import CaseError
from .keras_adapter import Flavour
from .probes import OUTPUT_EVIDENCE_KEYS, PROBABILITY_LOSSES, loss_compute_dtype, weight_name

X64_DTYPES = ("float64",)
"""Dtypes JAX computes only with ``jax_enable_x64`` (else it silently trains them in float32)."""


def check_portable(flavour: Flavour, case: Case, dtype: str, engine: str) -> None:
    """What a run on JAX or PyTorch needs before it is built: JAX's 64-bit switch for float64
    (on for float64 runs, off for the others, as a JAX user's default), and an engine the backend
    has (``xla`` is JAX's ``loop``; PyTorch has none)."""
    backend = flavour.backend()
    if engine == "xla" and backend != "jax":
        raise CaseError(
            f"the xla engine compiles TensorFlow's or JAX's loop, and this run is on {backend}",
            case=case.name,
            dtype=dtype,
            field="engine",
            fix="use engine loop (or fit) on this backend",
        )
    if backend == "jax":
        import jax

        jax.config.update("jax_enable_x64", dtype in X64_DTYPES)


@contextlib.contextmanager
def wide_floats(flavour: Flavour) -> Any:
    """JAX with float64 for the block (a probe computing in float64 from a float32 run)."""
    if flavour.backend() != "jax":
        yield
        return
    import jax

    was = bool(jax.config.read("jax_enable_x64"))
    jax.config.update("jax_enable_x64", True)
    try:
        yield
    finally:
        jax.config.update("jax_enable_x64", was)


def final_gradients(flavour: Flavour, model: Any, batch: Any) -> dict[str, np.ndarray]:
    """Gradients at the final weights on ``batch``, as the backend's ``train_step`` takes them
    (the loss scaled as training scales it); the model's state is left as it was."""
    backend = flavour.backend()
    x, y, sample_weight = flavour.unpack(batch)
    weights = list(model.trainable_weights)
    if backend == "jax":
        import jax

        state = (
            [v.value for v in model.trainable_variables],
            [v.value for v in model.non_trainable_variables],
            [v.value for v in model.metrics_variables],
        )
        grad_fn = jax.value_and_grad(model.compute_loss_and_updates, has_aux=True)
        _, grads = grad_fn(
            state[0],
            state[1],
            state[2],
            x,
            y,
            sample_weight,
            training=True,
            optimizer_variables=[v.value for v in model.optimizer.variables],
        )
        found = [np.asarray(g) for g in grads]
    else:
        found = _torch_gradients(flavour, model, x, y, sample_weight)
    return {
        weight_name(flavour, model, w): (np.zeros(w.shape, np.asarray(w.numpy()).dtype) if g is None else g)
        for w, g in zip(weights, found)
    }


def _torch_gradients(flavour: Flavour, model: Any, x: Any, y: Any, sample_weight: Any) -> list[Any]:
    import torch
    from keras.src.backend.torch.core import convert_to_tensor

    def tensor(value: Any) -> Any:
        if value is None:
            return None
        if isinstance(value, (tuple, list)):
            return type(value)(tensor(v) for v in value)
        if isinstance(value, dict):
            return {k: tensor(v) for k, v in value.items()}
        return convert_to_tensor(value)

    saved = [np.array(v.numpy()) for v in model.weights]
    try:
        x, y, sample_weight = tensor(x), tensor(y), tensor(sample_weight)
        model.zero_grad()
        y_pred = model(x, training=True)
        loss = flavour.compute_loss(model, x, y, y_pred, sample_weight)
        loss = flavour.scale_loss(model.optimizer, loss)
        loss.backward()
        grads = [w.value.grad for w in model.trainable_weights]
        found = [None if g is None else tensor_to_numpy(g) for g in grads]
        model.zero_grad()
    finally:
        with torch.no_grad():
            for variable, value in zip(model.weights, saved):
                variable.assign(value)
    return found


def tensor_to_numpy(tensor: Any) -> np.ndarray:
    """A PyTorch tensor as numpy in its own dtype (numpy has no bfloat16: ml_dtypes' then)."""
    import torch

    value = tensor.detach().cpu()
    if value.dtype == torch.bfloat16:
        import ml_dtypes

        return value.float().numpy().astype(ml_dtypes.bfloat16)
    return value.numpy().copy()


def output_evidence(flavour: Flavour, model: Any, batch: Any) -> dict[str, Any]:
    """The facts of :func:`.probes.output_evidence` this backend can give without a gradient with
    respect to the outputs; the others None. Never raises."""
    evidence: dict[str, Any] = dict.fromkeys(OUTPUT_EVIDENCE_KEYS)
    saved = [np.array(v.numpy()) for v in model.weights]
    with contextlib.suppress(Exception):
        x, y, _ = flavour.unpack(batch)
        outputs = model(x, training=True)
        if isinstance(outputs, (list, tuple, dict)):
            return evidence
        output = np.asarray(flavour.keras.ops.convert_to_numpy(outputs))
        evidence["outputs_dtype"] = str(output.dtype)
        tracked = evidence["outputs_dtype"]
        evidence["loss_dtype"] = loss_compute_dtype(flavour, model, tracked)
        target = np.asarray(y)
        wide = output.astype(np.float64)
        if target.shape == wide.shape or (target.shape == wide.shape[:-1] and wide.shape[-1] == 1):
            evidence["outputs_equal_targets"] = bool(
                np.array_equal(wide.reshape(target.shape), target.astype(np.float64))
            )
        losses = flavour.loss_objects(model)
        if (
            len(losses) == 1
            and _takes_probabilities(losses[0])
            and wide.size
            and wide.min() >= 0
            and wide.max() <= 1
        ):
            evidence["saturated_share"] = float(np.mean((wide == 0.0) | (wide == 1.0)))
    with contextlib.suppress(Exception):
        for variable, value in zip(model.weights, saved):
            variable.assign(value)
    return evidence


def _takes_probabilities(loss: Any) -> bool:
    name = getattr(getattr(loss, "fn", None), "__name__", None) or getattr(loss, "__name__", "")
    config = loss.get_config() if hasattr(loss, "get_config") else {}
    return name in PROBABILITY_LOSSES and not config.get("from_logits", False)
