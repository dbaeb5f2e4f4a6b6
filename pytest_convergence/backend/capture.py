"""The per-step loss, exactly as Keras's loss tracker receives it, captured without changing it.

``train_step`` reports the running mean over the epoch; the per-step loss is the value handed to
the tracker. One patch of ``tracker.update_state`` serves both engines: the traced loop takes the
tensor it traced, ``fit`` reads the value back through a float64 variable after each batch.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .keras_adapter import Flavour


class LossCapture:
    """Installed once on a compiled model; adds no arithmetic to the step."""

    def __init__(self, flavour: Flavour, model: Any) -> None:
        tracker = flavour.loss_tracker(model)
        if tracker is None:
            raise flavour.unsupported("the compiled model's loss tracker")
        self.tensors: list[Any] = []
        """Every value the tracker was handed while tracing (the loop uses the last)."""
        self.variable: Any = None
        """When set (the ``fit`` engine), each step's loss is also assigned to it as float64."""
        self.values: list[float] | None = None
        """On JAX and PyTorch under ``fit``: each step's loss as it was handed to the tracker."""
        self._tf = flavour.tf
        self._backend = flavour.backend()
        original = tracker.update_state

        def update_state(values: Any, *args: Any, **kwargs: Any) -> Any:
            self.tensors.append(values)
            if self.variable is not None:
                self.variable.assign(self._tf.cast(values, self._tf.float64))
            elif self.values is not None:
                self._read_back(values)
            return original(values, *args, **kwargs)

        tracker.update_state = update_state

    def _read_back(self, value: Any) -> None:
        """Keep the value a step hands the tracker: a PyTorch tensor is read at once; under JAX's
        tracing, a host callback reads it when the step runs (it adds no arithmetic)."""
        values = self.values
        assert values is not None
        if self._backend == "jax":
            import jax

            jax.debug.callback(lambda loss: values.append(float(np.asarray(loss, np.float64))), value)
        else:
            values.append(float(value.detach().cpu().double()) if hasattr(value, "detach") else float(value))

    def into_variable(self) -> Any:
        """A float64 variable that holds the latest step's loss from now on (for ``fit``)."""
        if self._tf is None or self._backend != "tensorflow":
            self.values = []
            return None
        if self.variable is None:
            self.variable = self._tf.Variable(0.0, dtype=self._tf.float64, trainable=False)
        return self.variable

    def latest(self) -> float:
        """The loss of the step that ran last (after :meth:`into_variable`)."""
        if self.values is not None:
            return self.values[-1] if self.values else float("nan")
        return float(self.variable.numpy())

    def loss_dtype(self, default: str = "float32") -> str:
        """The dtype the loss was computed in, read from what the tracker received."""
        if not self.tensors:
            return default
        dtype = self.tensors[-1].dtype
        return str(getattr(dtype, "name", None) or dtype).replace("torch.", "")


class GradientCapture:
    """Whether each trainable weight's gradient was exactly 0, read where the optimizer receives it.

    The loop records it every step, so the diagnosis can say when a weight's gradient first
    became 0 (a weight frozen by a vanished gradient) rather than guess from the last step.
    The optimizer's ``apply_gradients`` is wrapped on the instance (Keras 3's ``train_step`` and
    Keras 2's ``minimize`` both call it on the model's optimizer); the wrapper only reads the
    gradients, so the step's arithmetic is unchanged. A loss-scaling optimizer receives scaled
    gradients: a zero there is a zero the scale did not save.
    """

    def __init__(self, flavour: Flavour, model: Any) -> None:
        self._tf = flavour.tf
        self.tensors: list[Any] = []
        """Per traced step, one boolean tensor per trainable weight (the model's order)."""
        self.gradients: list[list[Any] | None] = []
        """Per traced step, the gradients themselves in the model's order (None: not matched);
        only a step's anatomy reads them (:mod:`.anatomy`), so the plain loop adds no op."""
        weights = list(model.trainable_weights)
        variables = flavour.trainable_variables(model)
        index: dict[int, int] = {}
        for position, (weight, variable) in enumerate(zip(weights, variables)):
            index[id(weight)] = index[id(variable)] = position
        self._index = index
        self._count = len(weights)
        optimizer = model.optimizer
        original = optimizer.apply_gradients

        def apply_gradients(grads_and_vars: Any, *args: Any, **kwargs: Any) -> Any:
            pairs = list(grads_and_vars)
            self.tensors.append(self._zero_flags(pairs))
            self.gradients.append(self._in_model_order(pairs))
            return original(pairs, *args, **kwargs)

        optimizer.apply_gradients = apply_gradients

    def _in_model_order(self, pairs: list[tuple[Any, Any]]) -> list[Any] | None:
        ordered: list[Any] = [None] * self._count
        for gradient, variable in pairs:
            position = self._index.get(id(variable))
            if position is None:
                return None
            ordered[position] = gradient
        return ordered

    def _zero_flags(self, pairs: list[tuple[Any, Any]]) -> Any:
        """One flag per trainable weight; None when the optimizer's variables could not be
        matched to the model's (then no flags are recorded rather than wrong ones)."""
        tf = self._tf
        flags: list[Any] = [None] * self._count
        for gradient, variable in pairs:
            position = self._index.get(id(variable))
            if position is None:
                continue
            if gradient is None:  # no gradient at all: the weight cannot move
                flags[position] = tf.constant(True)
                continue
            values = gradient.values if isinstance(gradient, tf.IndexedSlices) else gradient
            flags[position] = tf.reduce_all(tf.equal(values, tf.zeros([], values.dtype)))
        if not flags or any(flag is None for flag in flags):
            return None
        return tf.stack(flags)


class OutputCapture:
    """The model's output of each traced step, as ``train_step`` hands it to its metrics.

    Keras 2's and Keras 3's ``train_step`` both end with ``compute_metrics(x, y, y_pred,
    sample_weight)``; wrapping it on the instance reads ``y_pred`` without another forward pass
    (which would draw dropout's random numbers a second time and change the step). A custom
    ``train_step`` that does not call it leaves nothing captured: the anatomy then has no output.
    """

    def __init__(self, model: Any) -> None:
        self.tensors: list[Any] = []
        original = model.compute_metrics

        def compute_metrics(*args: Any, **kwargs: Any) -> Any:
            y_pred = kwargs.get("y_pred", args[2] if len(args) > 2 else None)
            self.tensors.append(y_pred)
            return original(*args, **kwargs)

        object.__setattr__(model, "compute_metrics", compute_metrics)


class LayerCapture:
    """Each top-level layer's output in a traced step, in the order the forward pass runs them.

    The gate names the layer whose output first differs between two versions (with equal
    weights and batch: that layer's arithmetic changed). Each layer's ``call`` is wrapped on the
    instance of a model built for the anatomy only, reading the output and changing nothing. A
    layer called twice (a shared one) is captured twice; nested layers are inside their parent's.
    """

    def __init__(self, model: Any) -> None:
        self.tensors: list[Any] = []
        self.names: list[str] = []
        """Per capture since the last :meth:`start`: ``name (Class)``."""
        self._start = 0
        for layer in getattr(model, "layers", []):
            self._wrap(layer)

    def _wrap(self, layer: Any) -> None:
        original = layer.call
        label = f"{layer.name} ({type(layer).__name__})"

        def call(*args: Any, **kwargs: Any) -> Any:
            output = original(*args, **kwargs)
            self.tensors.append(output)
            self.names.append(label)
            return output

        object.__setattr__(layer, "call", call)

    def start(self) -> None:
        """A step's forward pass begins: what is captured from here is this step's."""
        self._start = len(self.tensors)

    def step(self) -> tuple[list[str], list[Any]]:
        """The names and outputs captured since :meth:`start`."""
        return self.names[self._start :], self.tensors[self._start :]
