"""The training engines: the only module that imports TensorFlow, and only when a run is asked for.

Three engines train a case the same way ``model.fit`` would:

``fit``
    plain ``model.fit``, the slow reference (about 44 ms an epoch on a two-sample model).
``loop``
    the whole training loop in one ``tf.function``, calling the compiled model's own
    ``train_step`` on the very batches ``fit`` would draw, with metrics reset at each epoch's start
    as ``fit`` resets them. Reusing Keras's step keeps loss scaling, regularisation losses and
    metrics exactly as ``fit`` has them, so the history is bit-identical to ``fit``'s.
``xla``
    the same loop with ``jit_compile=True``: fastest; XLA fuses and reorders arithmetic, so its
    numbers are near, not equal, to ``fit``'s.

Batches: Keras's array adapter draws each epoch's order from a seeded ``tf.random.shuffle`` inside
a ``tf.data`` function, re-seeded for every epoch's iterator. The loop engine asks Keras's own
epoch iterator for the batches of the first two epochs; when they agree (they do whenever a seed
is set, which every run does) the whole training is that epoch repeated, and the batches are kept
on the device. If they ever differ, every epoch is drawn from Keras and stacked, which is slower
to prepare but exact.
"""

from __future__ import annotations

import contextlib
import os
import platform
import re
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import numpy as np

from . import keras_compat
from .case import Case
from .dtypes import dtype_info
from .errors import CaseError, TensorFlowMissingError
from .outcome import ENGINES
from .run import Run

INSTALL_HINT = (
    "pytest-convergence trains with TensorFlow, which is not installed here; "
    "install it with: pip install 'pytest-convergence[tensorflow]' "
    "(or 'pytest-convergence[tensorflow-cpu]' for the CPU-only wheel)"
)


def import_tensorflow() -> tuple[Any, Any]:
    """TensorFlow and the Keras module ``tf.keras`` means here (Keras 2 or 3)."""
    tf, flavour = import_keras()
    return tf, flavour.keras


def import_keras() -> tuple[Any, keras_compat.Flavour]:
    """Import TensorFlow and Keras on first use, quietly, with an actionable error if missing."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        import tensorflow as tf
    except ImportError as error:
        raise TensorFlowMissingError(f"{INSTALL_HINT} ({error})") from error
    return tf, keras_compat.load(tf)


def enable_op_determinism() -> None:
    """Make TensorFlow use deterministic kernels, or raise where an op has none.

    Off by default: on CPU every op these engines use is already deterministic (the
    ``--convergence-repeat`` check shows it), and the switch is process-wide. Switch it on
    (ini ``convergence_op_determinism = true``) on GPUs, where some kernels are not.
    """
    tf, _ = import_tensorflow()
    tf.config.experimental.enable_op_determinism()


def framework_versions() -> dict[str, str]:
    """Versions a run depends on; recorded in every run so results say what produced them."""
    tf, flavour = import_keras()
    return {
        "python": platform.python_version(),
        "numpy": np.__version__,
        "tensorflow": tf.__version__,
        **flavour.describe(),
        "platform": f"{sys.platform}-{platform.machine()}",
    }


def train(case: Case, dtype: str, engine: str | None = None, *, trace_weights: int = 0) -> Run:
    """Train ``case`` in ``dtype`` with ``engine`` (default: the case's, else ``loop``).

    ``trace_weights`` records the first that many (flattened) weights at every step, in
    ``run.extra["weight_trace"]``; the ``loop`` and ``xla`` engines only.
    """
    training = Training.prepare(case, dtype, engine or case.engine or "loop")
    training.trace_weights = trace_weights
    with training.reporting_runtime_errors():
        trace_start = time.perf_counter()
        training.compile_loop()
        trace_time = time.perf_counter() - trace_start
        start = time.perf_counter()
        record = training.execute()
        wall_time = time.perf_counter() - start
    if not np.isfinite(record.loss[0]):
        raise CaseError(
            f"the loss is {record.loss[0]} at the very first step, before any update: the model, "
            "the loss or the data produce it, not the training",
            case=case.name,
            dtype=dtype,
            field="loss",
            fix="check that the loss fits the labels (e.g. from_logits for unbounded outputs) "
            "and the model's output on x is finite",
        )
    return training.to_run(record, wall_time=wall_time, trace_time=trace_time)


@dataclass
class BatchPlan:
    """Every distinct epoch's batches, stacked: what the loop gathers each step's batch from."""

    full: Any
    """Full batches, epoch after epoch: ``[variants * n_full, batch, ...]`` (nested), or None."""
    partial: Any
    """Each epoch's last, smaller batch: ``[variants, remainder, ...]`` (nested), or None."""
    n_full: int
    variants: int
    """How many distinct epochs there are; epoch ``e`` trains on variant ``e % variants``."""
    first: Any
    """The first batch, as ``fit`` gets it (traced once to build metrics and optimizer state)."""

    @classmethod
    def from_epochs(cls, tf: Any, epochs: list[list[Any]], n_full: int) -> BatchPlan:
        stack = lambda *xs: tf.stack(xs)  # noqa: E731
        full = [b for epoch in epochs for b in epoch[:n_full]]
        partial = [epoch[n_full] for epoch in epochs if len(epoch) > n_full]
        return cls(
            full=tf.nest.map_structure(stack, *full) if full else None,
            partial=tf.nest.map_structure(stack, *partial) if partial else None,
            n_full=n_full,
            variants=len(epochs),
            first=epochs[0][0],
        )

    @classmethod
    def from_positions(cls, tf: Any, positions: list[Any], n_full: int) -> BatchPlan:
        """From the batches at each position within the epoch, each stacked over all epochs."""
        full = None
        if n_full:
            # [epochs, position, batch...] -> [epochs * n_full, batch...], epoch-major as fit draws
            full = tf.nest.map_structure(
                lambda *xs: tf.reshape(tf.stack(xs, axis=1), [-1, *xs[0].shape[1:]]), *positions[:n_full]
            )
        partial = positions[n_full] if len(positions) > n_full else None
        variants = int(tf.nest.flatten(positions[0])[0].shape[0])
        first = tf.nest.map_structure(lambda t: t[0], positions[0])
        return cls(full=full, partial=partial, n_full=n_full, variants=variants, first=first)


@dataclass
class StepRecord:
    """What one execution of the training produced, as numpy arrays."""

    loss: np.ndarray
    weights_changed: np.ndarray
    update_size: np.ndarray
    step_logs: np.ndarray
    log_names: list[str]
    loss_dtype: str
    epoch_metrics: dict[str, list[float]] = field(default_factory=dict)


class Training:
    """One case, built and compiled in one dtype for one engine, ready to execute.

    Separate from :func:`train` so a benchmark can trace once and time executions alone.
    """

    def __init__(self, case: Case, dtype: str, engine: str, tf: Any, flavour: keras_compat.Flavour) -> None:
        self.case = case
        self.dtype = dtype
        self.engine = engine
        self.tf = tf
        self.flavour = flavour
        self.keras = flavour.keras
        self.model: Any = None
        self.info = dtype_info(dtype)
        self.initial_weights: dict[str, np.ndarray] = {}
        self._loop: Callable[..., Any] | None = None
        self._captured_loss: list[Any] = []
        self.trace_weights = 0
        """Record this many leading (flattened) weights at every step, for ``explain``'s plot."""
        self.weight_trace = np.zeros((0, 0))
        self.pinned_loss_dtype: str | None = None
        """The dtype the case pins its loss to; Keras 3 still records the value in float32."""

    # ----------------------------------------------------------------------------- preparing
    @classmethod
    def prepare(cls, case: Case, dtype: str, engine: str) -> Training:
        if engine not in ENGINES:
            raise CaseError(
                f"unknown engine {engine!r}; valid engines are: {', '.join(ENGINES)}",
                case=case.name,
                dtype=dtype,
                field="engine",
            )
        dtype_info(dtype)
        tf, flavour = import_keras()
        training = cls(case, dtype, engine, tf, flavour)
        training._build()
        return training

    @contextlib.contextmanager
    def reporting_runtime_errors(self) -> Iterator[None]:
        """Turn TensorFlow's failures while training into an error about the user's case.

        The usual one is a dtype the model cannot run in: an op with no kernel for float16 or
        bfloat16 on this device only fails when the graph first runs.
        """
        try:
            yield
        except self.tf.errors.OpError as error:
            unsupported = "No OpKernel was registered" in str(error)
            raise self._error(
                (f"this model cannot run in {self.dtype} here: " if unsupported else "training failed: ")
                + _first_line(error),
                "dtype" if unsupported else "model",
                fix=f"drop {self.dtype} from this case's dtypes, or use layers whose ops support it"
                if unsupported
                else None,
            ) from None

    def _error(self, message: str, field: str, fix: str | None = None) -> CaseError:
        return CaseError(message, case=self.case.name, dtype=self.dtype, field=field, fix=fix)

    def _build(self) -> None:
        keras = self.keras
        # Fresh global state: layer names (and so weight names in snapshots) restart at "dense",
        # whatever was trained before in this process.
        keras.backend.clear_session()
        keras.utils.set_random_seed(self.case.seed)
        with self.flavour.dtype_policy(self.dtype):
            self.model = self._build_model()
            loss = self._keras_object(partial(self.flavour.get, "losses"), self.case.loss, "loss")
            if self.case.loss_dtype is not None:
                pinned = self.case.loss_dtype
                self.pinned_loss_dtype = self.info.compute_dtype if pinned == "compute" else pinned
                loss = self.flavour.pin_loss_dtype(loss, self.pinned_loss_dtype)
            optimizer = self._keras_object(
                partial(self.flavour.get, "optimizers"), self.case.optimizer, "optimizer"
            )
            try:
                self.model.compile(
                    loss=loss,
                    optimizer=optimizer,
                    metrics=list(self.case.metrics) or None,
                    jit_compile=False,
                )
            except (ValueError, TypeError) as error:
                raise self._error(f"Keras could not compile the model: {error}", "metrics") from None
        self._install_loss_capture()
        try:
            self._epochs = self.flavour.epochs(self.model, self.case, build=True)
        except Exception as error:
            raise self._error(
                f"the model cannot take this data in {self.dtype}: {type(error).__name__}: "
                f"{_first_line(error)}",
                "x",
                fix="check the input shape of the model against x, and the output against y",
            ) from None
        self._pin_initial_weights()
        self.initial_weights = self._weights()

    def _build_model(self) -> Any:
        keras = self.keras
        spec = self.case.model
        try:
            model = spec(self.dtype) if callable(spec) else model_from_config(self.flavour, spec)
        except CaseError:
            raise
        except Exception as error:
            source = (
                "the model builder raised" if callable(spec) else "Keras could not build the model config:"
            )
            raise self._error(f"{source} {type(error).__name__}: {_first_line(error)}", "model") from None
        if not isinstance(model, keras.Model):
            raise self._error(
                f"the model builder must return a keras.Model, got {type(model).__name__}", "model"
            )
        return model

    def _keras_object(self, getter: Callable[[Any], Any], spec: Any, field: str) -> Any:
        """A fresh Keras object per run: a shared optimizer instance would carry its state over."""
        if not isinstance(spec, (str, Mapping)) and hasattr(spec, "get_config"):
            try:
                return type(spec).from_config(spec.get_config())
            except Exception as error:
                raise self._error(f"cannot copy the {field} object: {error}", field) from None
        try:
            return getter(dict(spec) if isinstance(spec, Mapping) else spec)
        except (ValueError, TypeError) as error:
            raise self._error(
                f"Keras does not know this {field}: {_first_line(error)}",
                field,
                fix=f"use a name or config that keras.{field}{'es' if field == 'loss' else 's'}.get accepts, "
                'e.g. "binary_crossentropy" or {"class_name": "BinaryCrossentropy", "config": {...}}'
                if field == "loss"
                else 'use a name or config that keras.optimizers.get accepts, e.g. "sgd" or '
                '{"class_name": "RMSprop", "config": {"learning_rate": 0.01}}',
            ) from None

    def _install_loss_capture(self) -> None:
        """Record each step's loss exactly as Keras's loss tracker receives it.

        ``train_step`` reports the running mean over the epoch; the per-step loss is the value
        handed to the tracker, captured here without changing any arithmetic. The ``fit`` engine
        reads it through a variable; the loop engine takes the tensor directly.
        """
        tracker = self.flavour.loss_tracker(self.model)
        if tracker is None:
            raise self._error(
                f"Keras {self.flavour.version} has no loss tracker where pytest-convergence looks "
                "for it; it supports Keras 2 (TensorFlow 2.12-2.15, or tf-keras) and Keras 3",
                "model",
            )
        original = tracker.update_state
        captured = self._captured_loss

        def update_state(values: Any, *args: Any, **kwargs: Any) -> Any:
            captured.append(values)
            return original(values, *args, **kwargs)

        tracker.update_state = update_state

    def _pin_initial_weights(self) -> None:
        pinned = self.case.initial_weights
        if pinned is None:
            return
        current = self.model.get_weights()
        if len(pinned) != len(current):
            raise self._error(
                f"{len(pinned)} arrays given but the model has {len(current)} weights "
                f"({', '.join(str(w.shape) for w in current)})",
                "initial_weights",
            )
        for index, (given, actual) in enumerate(zip(pinned, current)):
            if tuple(given.shape) != tuple(actual.shape):
                raise self._error(
                    f"weight {index} has shape {tuple(given.shape)}, the model's has {tuple(actual.shape)}",
                    f"initial_weights[{index}]",
                )
        self.model.set_weights([np.asarray(g).astype(a.dtype) for g, a in zip(pinned, current)])

    def _weights(self) -> dict[str, np.ndarray]:
        return {self._name(w): np.array(w.numpy()) for w in self.model.weights}

    def _name(self, weight: Any) -> str:
        return self.flavour.weight_name(self.model, weight)

    # ------------------------------------------------------------------------------ batches
    def _batch_plan(self) -> BatchPlan:
        """The batches every step trains on, stacked on the device, drawn as ``fit`` draws them.

        Keras 3 re-seeds every epoch's shuffle, so with a seed the first epoch is every epoch
        (checked against the second, not trusted). Keras 2 draws one shuffled stream over all
        epochs, each epoch a new permutation, so every epoch is drawn: in one traced loop when
        the flavour can (100,000 epochs in seconds), else one batch at a time.
        """
        tf = self.tf
        case = self.case
        epochs = case.total_epochs
        n_full = case.num_samples // min(case.effective_batch_size, case.num_samples)
        if self.flavour.epochs_repeat or epochs == 1 or not case.shuffle:
            first = next(self._epochs)
            plan = [first]
            if epochs > 1 and case.shuffle:
                second = next(self._epochs)
                same = all(
                    all(
                        bool(tf.reduce_all(tf.equal(a, b)))
                        for a, b in zip(tf.nest.flatten(p), tf.nest.flatten(q))
                    )
                    for p, q in zip(first, second)
                )
                if not same:
                    plan.append(second)
                    plan.extend(next(self._epochs) for _ in range(epochs - 2))
            return BatchPlan.from_epochs(tf, plan, n_full)
        positions = self.flavour.stacked_epochs(self.model, self.case)
        if positions is None:
            return BatchPlan.from_epochs(tf, [next(self._epochs) for _ in range(epochs)], n_full)
        return BatchPlan.from_positions(tf, positions, n_full)

    # -------------------------------------------------------------------------------- loops
    def _log_names(self, batch: Any) -> list[str]:
        """Names of the logs ``train_step`` returns, from a trace that runs nothing.

        ``fit`` builds metrics and optimizer slots while tracing its step; tracing ours once
        beforehand builds the same (zero-initialised) state, and any error of shapes or dtypes
        surfaces here, before the loop, where it can be reported as the user's mistake.
        """
        try:
            traced = self.tf.function(self.model.train_step, autograph=False).get_concrete_function(batch)
        except Exception as error:
            raise self._error(
                f"the model cannot train on this data in {self.dtype}: {type(error).__name__}: "
                f"{_first_line(error)}",
                "model",
                fix="check the model's input shape against x, its output against y, and that the "
                "loss fits the labels; if it trains in float32, one of its layers does not support "
                f"{self.dtype}: drop {self.dtype} from this case's dtypes",
            ) from None
        return sorted(traced.structured_outputs.keys())

    def compile_loop(self) -> None:
        """Trace (and for ``xla`` compile) the training loop, so execution can be timed alone."""
        if self.engine == "fit":
            return
        self._loop = self._make_loop(jit=self.engine == "xla")
        self._loop(self.tf.constant(0, self.tf.int32))

    def _make_loop(self, jit: bool) -> Callable[..., Any]:
        tf = self.tf
        model = self.model
        case = self.case
        steps = case.total_steps
        batches_per_epoch = case.batches_per_epoch
        plan = self._batch_plan()  # one epoch repeated, or every epoch drawn
        n_full = plan.n_full
        has_partial = plan.partial is not None
        full_stacked, partial_stacked = plan.full, plan.partial
        single_batch = plan.variants == 1 and batches_per_epoch == 1
        # Keras 3 wraps each tf.Variable (``.value``); Keras 2's weights are tf.Variables.
        trainables = [w if isinstance(w, tf.Variable) else w.value for w in model.trainable_weights]
        log_names = self._log_names(plan.first)
        self.log_names = log_names
        captured = self._captured_loss
        num_variants = plan.variants

        def batch_for(step: Any) -> Any:
            if single_batch:
                return plan.first
            epoch = step // batches_per_epoch
            within = step % batches_per_epoch
            variant = epoch % num_variants
            if not has_partial:
                index = variant * n_full + within
                return tf.nest.map_structure(lambda t: tf.gather(t, index), full_stacked)
            return None  # the caller branches between full and partial batches

        def one_step(batch: Any) -> tuple[Any, Any]:
            logs = model.train_step(batch)
            loss = tf.cast(captured[-1], tf.float64)
            values = tf.stack([tf.cast(logs[name], tf.float64) for name in log_names])
            return loss, values

        def step_on(step: Any) -> tuple[Any, Any]:
            if not has_partial or single_batch:
                return one_step(batch_for(step))
            epoch = step // batches_per_epoch
            within = step % batches_per_epoch
            variant = epoch % num_variants

            def on_full() -> tuple[Any, Any]:
                index = variant * n_full + within
                return one_step(tf.nest.map_structure(lambda t: tf.gather(t, index), full_stacked))

            def on_partial() -> tuple[Any, Any]:
                return one_step(tf.nest.map_structure(lambda t: tf.gather(t, variant), partial_stacked))

            if n_full == 0:
                return on_partial()
            return tf.cond(within < n_full, on_full, on_partial)

        same_dtype = len({v.dtype for v in trainables}) == 1

        def largest_update(now: list[Any], before: list[Any]) -> Any:
            """Largest change of any weight this step, in the variables' own dtype.

            A difference of two neighbouring floats is exact in their dtype, and doing it there
            (one cast at the end, not one per weight) keeps the bookkeeping cheap beside the step.
            """
            if not now:
                return tf.constant(0.0, tf.float64)
            deltas = [tf.reduce_max(tf.abs(a - b)) for a, b in zip(now, before)]
            if same_dtype:
                return tf.cast(tf.reduce_max(tf.stack(deltas)), tf.float64)
            return tf.reduce_max(tf.stack([tf.cast(d, tf.float64) for d in deltas]))

        traced = min(self.trace_weights, sum(int(np.prod(v.shape)) for v in trainables))

        def flat_weights(now: list[Any]) -> Any:
            return tf.concat([tf.reshape(tf.cast(v, tf.float64), [-1]) for v in now], 0)[:traced]

        @tf.function(jit_compile=jit, autograph=False)
        def loop(num_steps: Any) -> tuple[Any, ...]:
            losses = tf.TensorArray(tf.float64, size=steps, element_shape=[])
            updates = tf.TensorArray(tf.float64, size=steps, element_shape=[])
            step_logs = tf.TensorArray(tf.float64, size=steps, element_shape=[len(log_names)])
            weights = tf.TensorArray(tf.float64, size=steps if traced else 0, element_shape=[traced])

            def body(
                step: Any, losses: Any, updates: Any, step_logs: Any, weights: Any, *before: Any
            ) -> tuple[Any, ...]:
                if batches_per_epoch == 1:
                    model.reset_metrics()
                    reset = []
                else:
                    reset = [
                        tf.cond(
                            tf.equal(step % batches_per_epoch, 0),
                            lambda: _reset(model, tf),
                            lambda: tf.constant(True),
                        )
                    ]
                with tf.control_dependencies(reset):
                    loss, values = step_on(step)
                # Reads after the step (automatic control dependencies order them after the
                # optimizer's assignments); carried to the next iteration as plain tensors.
                now = [v.read_value() for v in trainables]
                return (
                    step + 1,
                    losses.write(step, loss),
                    updates.write(step, largest_update(now, list(before))),
                    step_logs.write(step, values),
                    weights.write(step, flat_weights(now)) if traced else weights,
                    *now,
                )

            results = tf.while_loop(
                lambda step, *_: step < num_steps,
                body,
                (
                    tf.constant(0, tf.int32),
                    losses,
                    updates,
                    step_logs,
                    weights,
                    *[v.read_value() for v in trainables],
                ),
                maximum_iterations=steps,
            )
            trace = results[4].stack() if traced else tf.zeros([0, 0], tf.float64)
            return results[1].stack(), results[2].stack(), results[3].stack(), trace

        model.reset_metrics()
        return loop

    def execute(self) -> StepRecord:
        """Run the whole training once (the loop must be compiled for ``loop`` and ``xla``)."""
        if self.engine == "fit":
            return self._execute_fit()
        assert self._loop is not None, "call compile_loop() first"
        tf = self.tf
        self.model.reset_metrics()
        steps = self.case.total_steps
        losses, updates, step_logs, trace = self._loop(tf.constant(steps, tf.int32))
        updates = updates.numpy()
        self.weight_trace = trace.numpy()
        loss_dtype = self.pinned_loss_dtype or (
            self._captured_loss[-1].dtype.name if self._captured_loss else "float32"
        )
        record = StepRecord(
            loss=losses.numpy(),
            weights_changed=(updates != 0) | np.isnan(updates),
            update_size=updates,
            step_logs=step_logs.numpy(),
            log_names=list(self.log_names),
            loss_dtype=loss_dtype,
        )
        record.epoch_metrics = _epoch_metrics(record, self.case.batches_per_epoch)
        return record

    def _execute_fit(self) -> StepRecord:
        tf = self.tf
        keras = self.keras
        case = self.case
        steps = case.total_steps
        capture = tf.Variable(0.0, dtype=tf.float64, trainable=False)
        capture_dtype: list[str] = []
        tracker = self.flavour.loss_tracker(self.model)
        original = tracker.update_state

        def update_state(values: Any, *args: Any, **kwargs: Any) -> Any:
            capture_dtype.append(values.dtype.name)
            capture.assign(tf.cast(values, tf.float64))
            return original(values, *args, **kwargs)

        tracker.update_state = update_state
        model = self.model
        trainables = model.trainable_weights
        losses = np.empty(steps, np.float64)
        changed = np.zeros(steps, bool)
        updates = np.zeros(steps, np.float64)
        step_logs: list[list[float]] = []
        names: list[str] = []
        state = {"step": 0, "previous": [np.array(w.numpy()) for w in trainables]}

        class Recorder(keras.callbacks.Callback):
            def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
                step = state["step"]
                losses[step] = float(capture.numpy())
                now = [np.array(w.numpy()) for w in trainables]
                deltas = [
                    np.max(np.abs(a.astype(np.float64) - b.astype(np.float64)), initial=0.0)
                    for a, b in zip(now, state["previous"])
                ]
                updates[step] = max(deltas, default=0.0)
                changed[step] = any(
                    not np.array_equal(a, b, equal_nan=False) for a, b in zip(now, state["previous"])
                )
                state["previous"] = now
                logs = logs or {}
                if not names:
                    names.extend(sorted(logs))
                step_logs.append([float(logs[name]) for name in names])
                state["step"] = step + 1
                if state["step"] >= steps:
                    model.stop_training = True

        history = model.fit(
            case.x,
            case.y,
            batch_size=case.effective_batch_size,
            epochs=case.total_epochs,
            shuffle=case.shuffle,
            verbose=0,
            callbacks=[Recorder()],
        )
        self.log_names = names
        record = StepRecord(
            loss=losses,
            weights_changed=changed,
            update_size=updates,
            step_logs=np.array(step_logs, np.float64).reshape(steps, len(names)),
            log_names=names,
            loss_dtype=self.pinned_loss_dtype or (capture_dtype[-1] if capture_dtype else "float32"),
        )
        record.epoch_metrics = {k: [float(v) for v in vs] for k, vs in history.history.items()}
        return record

    # ---------------------------------------------------------------------------- the run
    def final_gradients(self) -> dict[str, np.ndarray]:
        """Gradients at the final weights on the first batch, as ``train_step`` would compute them.

        This is the evidence that tells "updates rounded away" (gradient nonzero) from "gradient
        underflowed" (exactly zero in the variable's dtype). Weights are restored afterwards, so
        layers with state (batch normalisation) are left as training left them.
        """
        tf = self.tf
        model = self.model
        saved = model.get_weights()
        batch = self._first_batch()
        flavour = self.flavour
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
            self._name(w): (np.zeros(w.shape, w.dtype) if g is None else np.array(g.numpy()))
            for w, g in zip(model.trainable_weights, gradients)
        }

    def intended_update(
        self, gradients: dict[str, np.ndarray], dtype: str = "float64"
    ) -> dict[str, np.ndarray] | None:
        """The update the optimizer would make next, computed in ``dtype``, applied to zeros.

        A clone of the optimizer gets ``dtype`` copies of the weights (zeros, so no weight can
        absorb the update) and of its own state (iteration count, moments), then applies the
        final gradients. In float64 this is the update the optimizer means to make; in the
        variables' dtype it is the update its arithmetic can express. Comparing them with the
        spacing of the weights says why a stalled run stalled. Returns None if this optimizer
        cannot be cloned that way; the diagnosis then falls back to the gradients.
        """
        tf = self.tf
        optimizer = self.model.optimizer
        base = getattr(optimizer, "inner_optimizer", None) or optimizer
        try:
            scale = self.flavour.loss_scale(optimizer)
            trainables = self.model.trainable_weights
            # The update alone, measured from zero so a float64 weight cannot absorb it either;
            # only weight decay depends on the weight's value, so then start from the weights.
            decays = bool(getattr(base, "weight_decay", None))
            shadows = [
                self.flavour.variable(
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
            names = [self._name(w) for w in trainables]
            before = [np.array(s.numpy()) for s in shadows]
            grads = [
                tf.cast(tf.convert_to_tensor(gradients[n].astype(np.float64) / scale), dtype) for n in names
            ]
            clone.apply_gradients(zip(grads, shadows))
            return {
                n: np.asarray(s.numpy()).astype(np.float64) - np.asarray(b).astype(np.float64)
                for n, s, b in zip(names, shadows, before)
            }
        except Exception:
            return None

    def _flat_names(self) -> list[str]:
        names = []
        for weight in self.model.trainable_weights:
            short = "/".join(self._name(weight).split("/")[-2:])
            names += [f"{short}[{i}]" for i in range(int(np.prod(weight.shape)))]
        return names

    def _first_batch(self) -> Any:
        batches = next(self.flavour.epochs(self.model, self.case))
        if not batches:
            raise self._error("the data gave no batch", "x")
        return batches[0]

    def to_run(self, record: StepRecord, *, wall_time: float, trace_time: float) -> Run:
        final_weights = self._weights()
        gradients = self.final_gradients()
        optimizer = self.model.optimizer
        return Run(
            case=self.case.name,
            dtype=self.dtype,
            engine=self.engine,
            seed=self.case.seed,
            loss=record.loss,
            loss_dtype=record.loss_dtype,
            variable_dtype=self.info.variable_dtype,
            compute_dtype=self.info.compute_dtype,
            weights_changed=record.weights_changed,
            update_size=record.update_size,
            initial_weights=self.initial_weights,
            final_weights=final_weights,
            final_gradients=gradients,
            epoch_metrics=record.epoch_metrics,
            steps_per_epoch=self.case.batches_per_epoch,
            target_loss=self.case.target_loss,
            wall_time=wall_time,
            trace_time=trace_time,
            versions=framework_versions(),
            optimizer=_describe_optimizer(optimizer),
            expectation=self.case.expectations.get(self.dtype),
            snapshot_tolerance=self.case.snapshot_tolerance,
            extra={
                "step_logs": record.step_logs,
                "log_names": record.log_names,
                "intended_update": self.intended_update(gradients),
                "update_in_variable_dtype": self.intended_update(gradients, self.info.variable_dtype),
                "weight_trace": self.weight_trace,
                "weight_trace_names": self._flat_names()[: self.weight_trace.shape[1]],
            },
        )


def model_from_config(flavour: keras_compat.Flavour, spec: Mapping[str, Any]) -> Any:
    """Build a model from ``{"class_name", "config"}`` as ``model.get_config()`` describes it."""
    keras = flavour.keras
    spec = flavour.model_config(dict(spec))
    class_name = spec.get("class_name")
    config = spec.get("config", {})
    known = {"Sequential": keras.Sequential, "Functional": keras.Model, "Model": keras.Model}
    if class_name in known:
        return known[class_name].from_config(dict(config))
    return flavour.deserialize(dict(spec))


def _reset(model: Any, tf: Any) -> Any:
    model.reset_metrics()
    return tf.constant(True)


def _epoch_metrics(record: StepRecord, batches_per_epoch: int) -> dict[str, list[float]]:
    """Per-epoch metrics as ``model.fit``'s History has them: the running values at each epoch's end."""
    steps = record.loss.shape[0]
    ends = list(range(batches_per_epoch - 1, steps, batches_per_epoch))
    if not ends or ends[-1] != steps - 1:
        ends.append(steps - 1)
    return {
        name: [float(record.step_logs[end, column]) for end in ends]
        for column, name in enumerate(record.log_names)
    }


def _describe_optimizer(optimizer: Any) -> str:
    inner = getattr(optimizer, "inner_optimizer", None)
    base = inner or optimizer
    try:
        rate = float(np.asarray(base.learning_rate))
        text = f"{type(base).__name__}(learning_rate={rate:g})"
    except Exception:
        text = type(base).__name__
    return f"LossScaleOptimizer({text})" if inner is not None else text


def _first_line(error: BaseException, limit: int = 300) -> str:
    """The informative part of an error message, on one line.

    Keras wraps errors raised inside a layer as "Exception encountered when calling X.call()",
    with the cause on the following lines; TensorFlow appends node listings. Keep the cause.
    """
    plain = re.sub(r"\x1b\[[0-9;]*m", "", str(error))
    lines = [line.strip() for line in plain.strip().splitlines()]
    kept: list[str] = []
    for line in lines:
        if line.startswith(("Arguments received", "Registered devices", "Registered kernels", "[[")):
            break
        if line and not line.startswith("Exception encountered"):
            kept.append(line)
    text = " ".join(kept) or type(error).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."
