"""The anatomy's recorder on JAX and PyTorch: training steps taken apart as on TensorFlow.

:mod:`.anatomy` takes TensorFlow's steps apart inside its traced loop; this module does the same
for Keras 3 on JAX and PyTorch, so that a gate between two backends' results files (or two
versions of JAX) names the first stage of a step that differs: the initial weights (each
backend's initializers draw from its own generator), the batch, the output, the loss, the
gradients or the update.

The values are the step's own, read where the backend's ``train_step`` hands them on, never
computed a second time: the output where ``train_step`` gives it to its metrics
(:class:`.capture.OutputCapture`), the loss where the loss tracker receives it, the gradients
where the optimizer receives them (on JAX the loop's own wrapper of ``stateless_apply``, on
PyTorch ``variable.value.grad``). Each step is one ``jax.jit`` call of Keras's stateless
``train_step`` (PyTorch: the eager ``train_step``), on the batches the run drew. The digests
are the numpy twins of :mod:`.digests` (bit for bit the same int64 numbers, checked against
TensorFlow's in tests/e2e/test_portable_anatomy.py), computed here on the host: a step's values
are small next to its cost, and the anatomy covers a few steps (a replay's, every step).

Layer outputs are not recorded here (``layers`` stays empty): reading them would mean a second
forward pass beside the step's, whose rounding XLA need not share.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from ..anatomy import Anatomy
from ..case import Case
from .capture import OutputCapture
from .digests import GOLDEN

_INT_OF_WIDTH = {1: np.int8, 2: np.int16, 4: np.int32, 8: np.int64}
_MASK = (1 << 64) - 1


# ---------------------------------------------------------------------------- digests, in numpy
def flatten(value: Any) -> list[Any]:
    """A nest's leaves in ``tf.nest.flatten``'s order: sequences in order, mappings by sorted
    key, ``None`` a leaf of its own (as TensorFlow keeps it)."""
    if isinstance(value, Mapping):
        return [leaf for key in sorted(value) for leaf in flatten(value[key])]
    if isinstance(value, (tuple, list)):
        return [leaf for part in value for leaf in flatten(part)]
    return [value]


def _wrap(number: int) -> np.int64:
    """A Python integer as int64 with two's-complement wraparound (TensorFlow's integer sums)."""
    number &= _MASK
    return np.int64(number - (1 << 64) if number >= 1 << 63 else number)


def _is_floating(dtype: np.dtype) -> bool:
    return dtype.kind == "f" or dtype.name == "bfloat16" or dtype.name.startswith("float8")


def _as_ints(flat: np.ndarray) -> np.ndarray | None:
    """Each element as int64: a float's bit pattern (sign-extended from its width), an integer's
    or a bool's value; None for what :func:`.digests.digest` does not read."""
    dtype = flat.dtype
    if _is_floating(dtype):
        return np.ascontiguousarray(flat).view(_INT_OF_WIDTH[dtype.itemsize]).astype(np.int64)
    if dtype.kind in "iub":
        return flat.astype(np.int64)
    return None


def _positions(count: int) -> np.ndarray:
    return np.arange(count, dtype=np.int64) * np.int64(GOLDEN) + np.int64(1)


def digest(value: Any) -> np.int64:
    """:func:`.digests.digest` in numpy: a scalar int64 that changes with any bit of ``value``
    (an array, a JAX or PyTorch tensor turned into numpy first, or a nest of them)."""
    parts = flatten(value)
    if len(parts) != 1:
        return _combine([digest(part) for part in parts if part is not None])
    flat = _numpy(parts[0]).reshape(-1)
    ints = _as_ints(flat)
    if ints is None:
        return np.int64(0)
    return _wrap(int(np.sum(ints * _positions(ints.size), dtype=np.int64)) + ints.size)


def row_set_digest(value: Any) -> np.int64:
    """:func:`.digests.row_set_digest` in numpy: a batch's rows digested whatever their order."""
    parts = [_numpy(p) for p in flatten(value) if p is not None]
    if not parts or any(p.ndim == 0 for p in parts):
        return digest(value)
    if len({p.shape[0] for p in parts}) > 1:
        return digest(value)
    rows: np.ndarray | None = None
    for index, part in enumerate(parts):
        flat = part.reshape(part.shape[0], -1)
        ints = _as_ints(flat)
        if ints is None:
            return digest(value)
        digests = np.sum(ints * _positions(ints.shape[1]), axis=1, dtype=np.int64) * np.int64(2 * index + 3)
        rows = digests if rows is None else rows + digests
    assert rows is not None
    return np.int64(np.sum(rows * rows + rows, dtype=np.int64))


def value_sum(value: Any) -> np.float64:
    """:func:`.digests.value_sum` in numpy: the float64 sum of a nest's floating values."""
    parts = [_numpy(p) for p in flatten(value) if p is not None]
    sums = [np.sum(p.astype(np.float64)) for p in parts if _is_floating(p.dtype)]
    total = np.float64(0.0)
    for one in sums:
        total = np.float64(total + one)
    return total


def _combine(digests: list[np.int64]) -> np.int64:
    if not digests:
        return np.int64(0)
    stacked = np.array(digests, np.int64)
    return np.int64(np.sum(stacked * _positions(stacked.size), dtype=np.int64))


def _numpy(value: Any) -> np.ndarray:
    """A JAX array, a PyTorch tensor (in its own dtype, bfloat16 included) or anything numpy reads."""
    if hasattr(value, "detach"):
        from .portable_probes import tensor_to_numpy

        return tensor_to_numpy(value)
    return np.asarray(value)


# ---------------------------------------------------------------------------- the recorder
def record_portable_anatomy(
    case: Case,
    dtype: str,
    engine: str,
    first: int,
    last: int,
    *,
    keep_initial: bool = False,
    plan: Any = None,
) -> Anatomy:
    """:func:`.anatomy.record_anatomy` on JAX or PyTorch: steps ``first`` to ``last - 1``
    (0-based) of ``case`` in ``dtype``, taken apart on a model built again with the run's seed.

    ``plan``: the batches the run drew (:class:`.portable_loop.PortablePlan`), so a shuffle drawn
    from numpy's global generator is the run's; None draws them again. On PyTorch they are always
    drawn again, as the run drew them: its ``DataLoader`` draws a seed from torch's global
    generator, which an unseeded ``Dropout`` draws its masks from after it."""
    from .engine import Training
    from .portable_loop import _build_as_fit, plan_portable

    training = Training.prepare(case, dtype, "loop" if engine == "fit" else engine)
    model = training.model
    outputs = OutputCapture(model)
    last = min(last, case.total_steps)
    first = min(first, last)
    with training.reporting_runtime_errors():
        if plan is None or training.flavour.backend() == "torch":
            plan = plan_portable(case, training._epochs)
        _build_as_fit(model, plan)
        model.reset_metrics()
        initial = [np.array(w) for w in model.get_weights()] if keep_initial else []
        if training.flavour.backend() == "jax":
            recorded = _jax_steps(training, plan, outputs, first, last)
        else:
            recorded = _torch_steps(training, plan, outputs, first, last)
    output_dtype = str(recorded.pop("output_dtype", ""))
    arrays = {name: np.asarray(values) for name, values in recorded.items()}
    return Anatomy.from_arrays(
        first_step=first + 1,
        weights=[training._name(w) for w in model.trainable_weights],
        configuration=configuration(training, plan, output_dtype),
        matches_run=None,
        arrays=arrays,
        initial_weights=initial,
    )


class _Steps:
    """What the recorded steps were made of, digested as :func:`.anatomy.take_steps_apart` does."""

    def __init__(self, count: int) -> None:
        self.count = count
        self.rows: dict[str, list[Any]] = {
            name: []
            for name in (
                "loss",
                "batch",
                "batch_set",
                "output",
                "output_set",
                "output_sum",
                "weights_before",
                "gradients",
                "gradient_sums",
                "weights_after",
                "weight_sums",
            )
        }
        self.output_dtypes: set[str] = set()

    def add(
        self, batch: Any, before: list[Any], loss: Any, y_pred: Any, grads: Any, after: list[Any]
    ) -> None:
        rows = self.rows
        rows["loss"].append(np.float64(_numpy(loss).astype(np.float64)))
        rows["batch"].append(digest(batch))
        rows["batch_set"].append(row_set_digest(batch))
        if y_pred is None:
            rows["output"].append(np.int64(0))
            rows["output_set"].append(np.int64(0))
            rows["output_sum"].append(np.float64("nan"))
        else:
            rows["output"].append(digest(y_pred))
            rows["output_set"].append(row_set_digest(y_pred))
            rows["output_sum"].append(value_sum(y_pred))
            self.output_dtypes |= {_numpy(t).dtype.name for t in flatten(y_pred) if t is not None}
        rows["weights_before"].append([digest(w) for w in before])
        if grads is None or len(grads) != self.count:
            rows["gradients"].append([np.int64(0)] * self.count)
            rows["gradient_sums"].append([np.float64("nan")] * self.count)
        else:
            rows["gradients"].append([np.int64(0) if g is None else digest(g) for g in grads])
            rows["gradient_sums"].append([np.float64(0.0) if g is None else value_sum(g) for g in grads])
        rows["weights_after"].append([digest(w) for w in after])
        rows["weight_sums"].append([value_sum(w) for w in after])

    def arrays(self) -> dict[str, Any]:
        result: dict[str, Any] = {}
        for name, values in self.rows.items():
            kind = np.float64 if name in ("loss", "output_sum", "gradient_sums", "weight_sums") else np.int64
            array = np.array(values, kind)
            if name in ("weights_before", "gradients", "gradient_sums", "weights_after", "weight_sums"):
                array = array.reshape(len(values), self.count)
            result[name] = array
        result["output_dtype"] = ", ".join(sorted(self.output_dtypes))
        return result


def _jax_steps(training: Any, plan: Any, outputs: OutputCapture, first: int, last: int) -> dict[str, Any]:
    """Each step one jitted call of Keras's stateless ``train_step``, as the JAX loop runs it
    (:class:`.portable_loop.JaxLoop`: the metrics reset at each epoch's start), its loss,
    output and gradients returned beside the new state."""
    import jax
    import jax.numpy as jnp

    model, loop = training.model, training.loop
    captured = training.capture.tensors
    grads_seen = loop.grads  # the JAX loop's own wrapper of the optimizer's stateless_apply
    reset_values = [v.value for v in model.metrics_variables]
    per_epoch = training.case.batches_per_epoch

    def step(state: Any, batch: Any, reset: Any) -> tuple[Any, tuple[Any, ...]]:
        trainable, non_trainable, optimizer_vars, metrics = state
        metrics = [jnp.where(reset, start, value) for start, value in zip(reset_values, metrics)]
        _, new_state = model.train_step((trainable, non_trainable, optimizer_vars, metrics), batch)
        y_pred = outputs.tensors[-1] if outputs.tensors else None
        grads = list(grads_seen[-1]) if grads_seen else None
        return new_state, (captured[-1], y_pred, grads)

    compiled = jax.jit(step)
    state = (
        [v.value for v in model.trainable_variables],
        [v.value for v in model.non_trainable_variables],
        [v.value for v in model.optimizer.variables],
        [v.value for v in model.metrics_variables],
    )
    steps = _Steps(len(model.trainable_variables))
    for index in range(last):
        batch = plan.batch(index)
        before = state[0]
        state, (loss, y_pred, grads) = compiled(state, batch, index % per_epoch == 0)
        if index >= first:
            steps.add(batch, list(before), loss, y_pred, grads, list(state[0]))
    return steps.arrays()


def _torch_steps(training: Any, plan: Any, outputs: OutputCapture, first: int, last: int) -> dict[str, Any]:
    """Each step the eager ``train_step`` on the model's own variables, as the PyTorch loop runs
    it (:class:`.portable_loop.TorchLoop`), read before and after it."""
    from keras.src.backend.torch.core import convert_to_tensor

    from .portable_loop import _map

    model = training.model
    captured = training.capture.tensors
    weights = list(model.trainable_weights)
    per_epoch = training.case.batches_per_epoch
    steps = _Steps(len(weights))
    for index in range(last):
        if index % per_epoch == 0:
            model.reset_metrics()
            model.train()
        numpy_batch = plan.batch(index)
        record = index >= first
        before = [w.value.detach().clone() for w in weights] if record else []
        model.train_step(_map(convert_to_tensor, numpy_batch))
        if record:
            y_pred = outputs.tensors[-1] if outputs.tensors else None
            grads = [w.value.grad for w in weights]
            after = [w.value.detach() for w in weights]
            steps.add(numpy_batch, before, captured[-1].detach(), y_pred, grads, after)
        del captured[:-1], outputs.tensors[:-1]
    return steps.arrays()


def configuration(training: Any, plan: Any, output_dtype: str) -> dict[str, str]:
    """:func:`.anatomy.configuration`'s settings (the same keys, so two backends' differences are
    named), read from a run on JAX or PyTorch."""
    from . import probes

    case, flavour, model = training.case, training.flavour, training.model
    policy = getattr(model, "dtype_policy", None) or getattr(model, "_dtype_policy", None)
    policy_name = getattr(policy, "name", None) or str(policy or training.dtype)
    optimizer = flavour.base_optimizer(model.optimizer)
    optimizer_path = f"{type(optimizer).__module__}.{type(optimizer).__qualname__}"
    compiled = "on (jax.jit)" if flavour.backend() == "jax" else "off"
    return {
        "output dtype": output_dtype,
        "dtype policy": policy_name,
        "loss scaling": "on" if flavour.scales_loss(model.optimizer) else "off",
        "optimizer": optimizer_path + (" (legacy)" if ".legacy." in optimizer_path else ""),
        "loss": probes.what_ran(model.loss).split(" ", 1)[0],
        "shuffling": shuffling(case, _variants(plan)),
        "jit_compile": compiled,
    }


def _variants(plan: Any) -> int:
    """How many distinct epochs ``plan`` holds (:attr:`.batches.BatchPlan.variants`'s meaning)."""
    if plan.repeat or len(plan.epochs) < 2:
        return 1
    first = plan.epochs[0]
    for epoch in plan.epochs[1:]:
        if len(epoch) != len(first) or any(digest(a) != digest(b) for a, b in zip(epoch, first)):
            return len(plan.epochs)
    return 1


def shuffling(case: Case, variants: int) -> str:
    """How the batches are ordered from epoch to epoch, as the drawn batches show it (both
    recorders' setting: :func:`.anatomy.configuration`, :func:`configuration`)."""
    if not case.shuffle:
        return "off"
    if case.total_epochs == 1:
        return "one epoch, shuffled"
    if variants == 1:
        return "the same order every epoch"
    return "a new order every epoch"
