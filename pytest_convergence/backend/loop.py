"""The ``loop`` and ``xla`` engines: the whole training in one ``tf.function``.

Each step calls the compiled model's own ``train_step`` on the batch ``fit`` would draw, with
metrics reset at each epoch's start as ``fit`` resets them. Reusing Keras's step keeps loss
scaling, regularisation losses and metrics exactly as ``fit`` has them, so ``loop``'s history is
bit-identical to ``fit``'s; ``xla`` compiles the same loop with ``jit_compile=True`` (fastest;
XLA fuses and reorders arithmetic, so its numbers are near, not equal).
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from ..case import Case
from ..errors import CaseError, KerasVersionError, first_line
from .batches import BatchPlan, evaluate, validation_batches
from .build import case_error, loss_not_tracked, overrides
from .callbacks import CallbackDriver
from .capture import GradientCapture, LossCapture
from .interrupts import HeldInterrupt
from .keras_adapter import Flavour
from .pacing import Pace
from .quiet import quiet_function
from .record import StepRecord, epoch_metrics

MAX_VALIDATION_BATCHES_IN_GRAPH = 32
"""Validation is unrolled into the loop's graph up to this many batches; larger sets are
evaluated with Keras's ``evaluate`` between epochs (exact too, slower by its per-call cost)."""

XLA_CALL_STEPS = 1 << 17
"""Under XLA the loop's arrays need a size known when compiling: this many rows, the most steps one
call runs. A call costs the size of its arrays (about 40 ns a row), so they are not the run's length."""


class TrainingLoop:
    """The traced loop of one built model, compiled once and executed any number of times."""

    def __init__(
        self,
        flavour: Flavour,
        model: Any,
        case: Case,
        dtype: str,
        capture: LossCapture,
        *,
        jit: bool,
        trace_weights: int = 0,
        gradients: bool = True,
    ) -> None:
        self.flavour = flavour
        self.tf = flavour.tf
        self.model = model
        self.case = case
        self.dtype = dtype
        self.capture = capture
        self.jit = jit
        self.trace_weights = trace_weights
        self.gradients = GradientCapture(flavour, model) if gradients else None
        self.log_names: list[str] = []
        self.validates_in_graph = False
        self.validation_time = 0.0
        """Seconds of Keras's ``evaluate`` between epochs in the last execution (the run's phase)."""
        self.call_steps = case.total_steps
        """The most steps one call of the loop can run."""
        self._loop: Callable[..., Any] | None = None
        # one execution's state (:meth:`execute`)
        self._collected = _Collected()
        self._pending: list[int] = []
        self._on_pause: Callable[[int], None] | None = None
        self._pace = Pace(self.call_steps)
        self._interrupt: Any = None

    def compile(self, plan: BatchPlan) -> None:
        """Trace (and for ``xla`` compile) the loop, so execution can be timed alone."""
        try:
            with HeldInterrupt():
                self._loop = self._make_loop(plan)
                zero = self.tf.constant(0, self.tf.int32)
                self._loop(zero, zero)
        except (CaseError, KerasVersionError):
            raise
        except Exception as error:
            if isinstance(error, self.tf.errors.OpError):
                raise  # a kernel missing for this dtype: reported by the engine
            raise self._cannot_train(error) from None

    def _cannot_train(self, error: BaseException) -> CaseError:
        return case_error(
            self.case,
            self.dtype,
            f"the model cannot train on this data in {self.dtype}: "
            f"{type(error).__name__}: {first_line(error)}",
            "model",
            fix="check the model's input shape against x, its output against y, and that the "
            "loss fits the labels; if it trains in float32, one of its layers does not support "
            f"{self.dtype}: drop {self.dtype} from this case's dtypes",
        )

    def _log_names(self, batch: Any) -> list[str]:
        """Names of the logs ``train_step`` returns.

        ``fit`` builds metrics and optimizer slots while tracing its step. Where the build before
        training made them already (Keras 3.4+ builds the model symbolically from the data),
        the names are the model's metric results, read without a trace: the first trace of
        ``train_step`` costs about a second on a small model. Elsewhere one trace that runs
        nothing builds the same (zero-initialised) state; any error of shapes or dtypes
        surfaces there, before the loop, where it is reported as the user's mistake.
        """
        # a user's own train_step may return other logs than the model's metrics: traced, always
        own_step = overrides(self.flavour, self.model, "train_step")
        names = None if own_step else self.flavour.metric_names_if_built(self.model)
        if names is None and not own_step and self.flavour.build_state_symbolically(self.model, batch):
            names = self.flavour.metric_names_if_built(self.model)
        if names is not None:
            return names
        try:
            traced = self.tf.function(self.model.train_step, autograph=False).get_concrete_function(batch)
        except Exception as error:
            raise self._cannot_train(error) from None
        return sorted(self._flat_logs(traced.structured_outputs))

    def _several_outputs(self, batch: Any) -> bool:
        """Whether the model trains several outputs on Keras 3, whose per-output loss metrics
        weigh each batch by its static row count (``shape[0]``): where an epoch ends in a smaller
        batch, ``fit`` traces its step with an unknown row count, so they are plain means over
        batches there, and the loop's batches must hide their row count the same way (measured:
        the per-output losses in History differed, the total agreed)."""
        if self.flavour.major < 3:
            return False  # Keras 2 weighs them by the dynamic row count, in both
        _, y, _ = self.flavour.unpack(batch)
        return len(self.tf.nest.flatten(y)) > 1

    def _flat_logs(self, logs: Any) -> dict[str, Any]:
        """``train_step``'s logs flattened as ``fit`` flattens them (Keras 3's ``pythonify_logs``):
        keras.io's own ``train_step`` returns ``{m.name: m.result() for m in self.metrics}``, whose
        ``compile_metrics`` entry is a dict of the compiled metrics."""
        if not isinstance(logs, Mapping):
            raise case_error(
                self.case,
                self.dtype,
                f"the model's train_step returned a {type(logs).__name__}, not a dict of logs",
                "model",
                fix="return a dict from train_step, as Keras's does: "
                "{m.name: m.result() for m in self.metrics}",
            )
        flat: dict[str, Any] = {}
        for key, value in sorted(logs.items()):
            if isinstance(value, Mapping):
                flat.update(self._flat_logs(value))
            else:
                flat[key] = value
        return flat

    def _make_loop(self, plan: BatchPlan) -> Callable[..., Any]:
        tf = self.tf
        model = self.model
        case = self.case
        steps = case.total_steps
        batches_per_epoch = case.batches_per_epoch
        trainables = self.flavour.trainable_variables(model)
        log_names = self._log_names(plan.first)
        self.log_names = log_names
        validation = self._validation_batches()
        self.validates_in_graph = validation is not None
        epochs = case.total_epochs

        if validation is not None:
            # full batches stacked and walked by a while_loop (test_step traced once, as
            # evaluate's test_function is), the last, smaller batch after it
            batch_rows = [int(tf.nest.flatten(batch)[0].shape[0]) for batch in validation]
            full_count = sum(1 for rows in batch_rows if rows == batch_rows[0])
            full_validation = tf.nest.map_structure(lambda *xs: tf.stack(xs), *validation[:full_count])
            partial_validation = validation[full_count:]

        def validate() -> Any:
            """evaluate()'s computation: metrics reset, test_step on each batch in order, the
            metric results after the last one (the training logs of the epoch were read before)."""
            model.reset_metrics()

            def test_one(index: Any) -> Any:
                model.test_step(tf.nest.map_structure(lambda t: tf.gather(t, index), full_validation))
                return index + 1

            done = tf.while_loop(lambda index: index < full_count, test_one, [tf.constant(0)])
            with tf.control_dependencies(done):
                for batch in partial_validation:
                    model.test_step(batch)
            with tf.control_dependencies(done):
                logs = model.get_metrics_result()
            return tf.stack([tf.cast(logs[name], tf.float64) for name in log_names])

        tensor_count = len(trainables)
        step_on = self.stepper(plan, log_names)

        same_dtype = len({v.dtype for v in trainables}) == 1

        def tensor_updates(now: list[Any], before: list[Any]) -> Any:
            """Each weight's largest change this step, in the variables' own dtype.

            A difference of two neighbouring floats is exact in their dtype, and doing it there
            (one cast at the end, not one per weight) keeps the bookkeeping cheap beside the step.
            Per weight, so the diagnosis can say which weight froze when.
            """
            if not now:
                return tf.zeros([0], tf.float64)
            deltas = [tf.reduce_max(tf.abs(a - b)) for a, b in zip(now, before)]
            if same_dtype:
                return tf.cast(tf.stack(deltas), tf.float64)
            return tf.stack([tf.cast(d, tf.float64) for d in deltas])

        def checksums(now: list[Any]) -> Any:
            """Each weight's sum in float64: equal weights give equal sums, so a weight's cycle
            shows in its column (a cheap stand-in for storing every weight of every step)."""
            if not now:
                return tf.zeros([0], tf.float64)
            return tf.stack([tf.reduce_sum(tf.cast(v, tf.float64)) for v in now])

        traced = min(self.trace_weights, sum(int(np.prod(v.shape)) for v in trainables))

        def flat_weights(now: list[Any]) -> Any:
            return tf.concat([tf.reshape(tf.cast(v, tf.float64), [-1]) for v in now], 0)[:traced]

        jit = self.jit
        self.call_steps = min(steps, XLA_CALL_STEPS) if jit else steps

        def loop(first_step: Any, stop: Any) -> tuple[Any, ...]:
            """Steps ``first_step`` to ``stop - 1``, recorded in rows 0 to ``stop - first_step - 1``
            of arrays that size (under XLA, of :data:`XLA_CALL_STEPS` rows: a size known when
            compiling)."""
            size = self.call_steps if jit else stop - first_step
            losses = tf.TensorArray(tf.float64, size=size, element_shape=[])
            updates = tf.TensorArray(tf.float64, size=size, element_shape=[])
            step_logs = tf.TensorArray(tf.float64, size=size, element_shape=[len(log_names)])
            weights = tf.TensorArray(tf.float64, size=size if traced else 0, element_shape=[traced])
            per_tensor = [
                tf.TensorArray(tf.float64, size=size, element_shape=[tensor_count]) for _ in range(3)
            ]
            val_logs = tf.TensorArray(
                tf.float64, size=epochs if validation else 0, element_shape=[len(log_names)]
            )

            def body(
                step: Any,
                losses: Any,
                updates: Any,
                step_logs: Any,
                weights: Any,
                val_logs: Any,
                tensor_deltas: Any,
                tensor_sums: Any,
                zero_gradients: Any,
                *before: Any,
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
                    loss, values, zero = step_on(step)
                # Reads after the step (automatic control dependencies order them after the
                # optimizer's assignments); carried to the next iteration as plain tensors.
                now = [v.read_value() for v in trainables]
                if validation:
                    # at each epoch's end, as fit evaluates: after the step and its logs are read
                    ends_epoch = tf.logical_or(
                        tf.equal((step + 1) % batches_per_epoch, 0), tf.equal(step + 1, steps)
                    )
                    with tf.control_dependencies([loss, values, *now]):
                        val_logs = tf.cond(
                            ends_epoch,
                            lambda: val_logs.write(step // batches_per_epoch, validate()),
                            lambda: val_logs,
                        )
                row = step - first_step
                deltas = tensor_updates(now, list(before))
                largest = tf.reduce_max(deltas) if tensor_count else tf.constant(0.0, tf.float64)
                return (
                    step + 1,
                    losses.write(row, loss),
                    updates.write(row, largest),
                    step_logs.write(row, values),
                    weights.write(row, flat_weights(now)) if traced else weights,
                    val_logs,
                    tensor_deltas.write(row, deltas),
                    tensor_sums.write(row, checksums(now)),
                    zero_gradients.write(row, zero),
                    *now,
                )

            results = tf.while_loop(
                lambda step, *_: step < stop,
                body,
                (
                    first_step,
                    losses,
                    updates,
                    step_logs,
                    weights,
                    val_logs,
                    *per_tensor,
                    *[v.read_value() for v in trainables],
                ),
                maximum_iterations=steps,
            )
            trace = results[4].stack() if traced else tf.zeros([0, 0], tf.float64)
            validated = results[5].stack() if validation else tf.zeros([0, len(log_names)], tf.float64)
            per_step = (results[6].stack(), results[7].stack(), results[8].stack())
            return results[1].stack(), results[2].stack(), results[3].stack(), trace, validated, *per_step

        model.reset_metrics()
        return quiet_function(tf, loop, jit_compile=jit, autograph=False)  # traced once per run

    def read_log_names(self, plan: BatchPlan) -> list[str]:
        """Names of the logs ``train_step`` returns: those :meth:`compile` read, else read now."""
        return self.log_names or self._log_names(plan.first)

    def run_steps(self, first: int, last: int, pace: Pace, interrupt: HeldInterrupt) -> None:
        """Steps ``first`` to ``last - 1`` in the plain compiled loop (after :meth:`compile`), their
        records dropped: the steps before the first one a step anatomy records."""
        assert self._loop is not None, "call compile() first"
        tf = self.tf
        for part_first, part_last in pace.parts(first, last, interrupt):
            self._loop(tf.constant(part_first, tf.int32), tf.constant(part_last, tf.int32))

    def stepper(
        self,
        plan: BatchPlan,
        log_names: list[str],
        extras: Callable[[Any], tuple[Any, ...]] | None = None,
        before_step: Callable[[], None] | None = None,
    ) -> Callable[[Any], tuple[Any, ...]]:
        """``step_on(step)``: one ``train_step`` on the batch ``fit`` trains on at ``step``
        (a tensor), returning the step's loss, logs and gradient flags, then ``extras(batch)``
        computed after the step (a step's anatomy, :func:`.anatomy.take_steps_apart`)."""
        tf = self.tf
        model = self.model
        batches_per_epoch = self.case.batches_per_epoch
        n_full = plan.n_full
        has_partial = plan.partial is not None
        full_stacked, partial_stacked = plan.full, plan.partial
        single_batch = plan.variants == 1 and batches_per_epoch == 1
        num_variants = plan.variants
        captured = self.capture.tensors
        assert self.gradients is not None, "the TensorFlow loop captures gradients"
        gradient_flags = self.gradients.tensors
        tensor_count = len(self.flavour.trainable_variables(model))

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

        # fit's dataset knows its batches' row count only when every batch is full
        rows_unknown = has_partial and self._several_outputs(plan.first)

        def one_step(batch: Any) -> tuple[Any, ...]:
            if rows_unknown:
                batch = tf.nest.map_structure(_rows_unknown(tf), batch)
            if before_step is not None:
                before_step()
            logs = self._flat_logs(model.train_step(batch))
            if sorted(logs) != log_names:
                raise self.flavour.unsupported(
                    f"train_step's logs ({', '.join(sorted(logs))}) against the metrics read before "
                    f"training ({', '.join(log_names)})"
                )
            if not captured:
                raise loss_not_tracked(self.case, self.dtype, self.flavour, model)
            loss = tf.cast(captured[-1], tf.float64)
            values = tf.stack([tf.cast(logs[name], tf.float64) for name in log_names])
            flags = gradient_flags[-1] if gradient_flags else None
            zero = (
                tf.cast(flags, tf.float64)
                if flags is not None
                else tf.fill([tensor_count], tf.constant(-1.0, tf.float64))
            )
            return (loss, values, zero, *(extras(batch) if extras is not None else ()))

        def step_on(step: Any) -> tuple[Any, ...]:
            if plan.stream is not None and not single_batch:  # a dataset, PyDataset or generator
                return tuple(plan.stream.step_on(tf, step, one_step))
            if not has_partial or single_batch:
                return one_step(batch_for(step))
            epoch = step // batches_per_epoch
            within = step % batches_per_epoch
            variant = epoch % num_variants

            def on_full() -> tuple[Any, ...]:
                index = variant * n_full + within
                return one_step(tf.nest.map_structure(lambda t: tf.gather(t, index), full_stacked))

            def on_partial() -> tuple[Any, ...]:
                return one_step(tf.nest.map_structure(lambda t: tf.gather(t, variant), partial_stacked))

            if n_full == 0:
                return on_partial()
            return tf.cond(within < n_full, on_full, on_partial)

        return step_on

    def execute(
        self,
        pinned_loss_dtype: str | None,
        *,
        pauses: Sequence[int] = (),
        on_pause: Callable[[int], None] | None = None,
        callbacks: list[Any] | None = None,
    ) -> StepRecord:
        """Run the whole training once (after :meth:`compile`).

        ``on_pause(step)`` is called before each step in ``pauses``, between two calls of the
        compiled loop (the perturbation's nudges); a stretch gives the same history as one call.
        The loop is called in stretches of about :data:`.pacing.SECONDS_PER_CALL` each, and a Ctrl-C
        is raised as ``KeyboardInterrupt`` at the end of the stretch it came in
        (:class:`.interrupts.HeldInterrupt`).

        With validation data, the loop runs one epoch at a time and the model is evaluated after
        each, with Keras's own ``evaluate`` as ``fit`` calls it, so History's ``val_*`` metrics
        are ``fit``'s; without, the whole training is one call.

        With ``callbacks`` (the run's own, :func:`.callbacks.make_callbacks`), Keras's
        ``CallbackList`` is called as ``fit`` calls it (:meth:`_with_callbacks`).
        """
        assert self._loop is not None, "call compile() first"
        case = self.case
        steps = case.total_steps
        self.model.reset_metrics()
        self._collected = _Collected()
        self.validation_time = 0.0
        self._pending = sorted(p for p in pauses if 0 < p < steps)
        self._on_pause = on_pause
        self._pace = Pace(self.call_steps)
        effects = None
        validation = case.validation
        with HeldInterrupt() as interrupt:
            self._interrupt = interrupt
            if callbacks:
                epoch_metrics_, effects = self._with_callbacks(callbacks)
            else:
                if validation is None or self.validates_in_graph:
                    bounds = [(0, steps)]
                else:
                    per_epoch = case.batches_per_epoch
                    bounds = [(start, min(start + per_epoch, steps)) for start in range(0, steps, per_epoch)]
                validation_logs: dict[str, list[float]] = {}
                for start, stop in bounds:
                    self._run_steps(start, stop)
                    if validation is not None and self.validates_in_graph:
                        rows = [self._collected.validated[e] for e in sorted(self._collected.validated)]
                        for column, name in enumerate(self.log_names):
                            validation_logs[f"val_{name}"] = [float(row[column]) for row in rows]
                    elif validation is not None:
                        for name, value in self._evaluate(validation).items():
                            validation_logs.setdefault(f"val_{name}", []).append(value)
        record = self._collected.record(self, pinned_loss_dtype)
        if callbacks:
            record.epoch_metrics = epoch_metrics_
            record.callback_effects = effects
        else:
            record.epoch_metrics = {**epoch_metrics(record, case.batches_per_epoch), **validation_logs}
        return record

    def _run_steps(self, start: int, stop: int) -> None:
        """Steps ``start`` to ``stop - 1``: in paced calls, nudged at pauses, their records kept."""
        assert self._loop is not None
        tf = self.tf
        collected = self._collected
        in_graph = self.case.validation is not None and self.validates_in_graph
        for first, last in _stretches(start, stop, self._pending):
            if first in self._pending and self._on_pause is not None:
                self._on_pause(first)
            for part_first, part_last in self._pace.parts(first, last, self._interrupt):
                kept = slice(0, part_last - part_first)
                loss, update, logs, trace, validated, *tensors = self._loop(
                    tf.constant(part_first, tf.int32), tf.constant(part_last, tf.int32)
                )
                for kept_rows, values in zip(collected.per_tensor, tensors):
                    kept_rows.append(values.numpy()[kept])
                collected.losses.append(loss.numpy()[kept])
                collected.updates.append(update.numpy()[kept])
                collected.step_logs.append(logs.numpy()[kept])
                collected.traces.append(trace.numpy()[kept] if trace.shape[0] else trace.numpy())
                if in_graph:
                    collected.validated.update(_epochs_ended(validated, part_first, part_last, self.case))

    def _with_callbacks(self, callbacks: list[Any]) -> tuple[dict[str, list[float]], Any]:
        """The training as ``fit`` runs it around its callbacks (Keras 3's and Keras 2's ``fit``
        alike): ``on_train_begin``; per epoch ``on_epoch_begin``, the epoch's steps (one call of
        the loop, or one call a step between ``on_train_batch_begin``/``end`` when a callback
        overrides them), its logs as ``fit`` gives them (the metrics after its last step, then
        ``val_*``), ``on_epoch_end``; ``model.stop_training`` ends it after a batch or an epoch;
        ``on_train_end``. Returns History's record and what the callbacks did."""
        case = self.case
        model = self.model
        steps, per_epoch = case.total_steps, case.batches_per_epoch
        driver = CallbackDriver(self.flavour, model, case, callbacks)
        collected = self._collected
        model.stop_training = False
        driver.list.on_train_begin()
        training_logs = None
        done = 0
        for epoch in range(case.total_epochs):
            if done >= steps:
                break
            driver.list.on_epoch_begin(epoch)
            start, stop = done, min(done + per_epoch, steps)
            if driver.batch_level:
                for step in range(start, stop):
                    driver.list.on_train_batch_begin(step - start)
                    self._run_steps(step, step + 1)
                    done = step + 1
                    driver.list.on_train_batch_end(step - start, self._logs_after(done))
                    if model.stop_training:
                        break
            else:
                self._run_steps(start, stop)
                done = stop
            epoch_logs = self._logs_after(done)
            if case.validation is not None:
                if self.validates_in_graph and epoch in collected.validated:
                    row = collected.validated[epoch]
                    epoch_logs.update({f"val_{n}": float(row[c]) for c, n in enumerate(self.log_names)})
                else:  # an epoch cut short by a batch hook: fit evaluates it all the same
                    epoch_logs.update({f"val_{n}": v for n, v in self._evaluate(case.validation).items()})
            driver.list.on_epoch_end(epoch, epoch_logs)
            training_logs = epoch_logs
            if model.stop_training:
                break
        driver.list.on_train_end(logs=training_logs)
        return driver.history(), driver.effects

    def _logs_after(self, done: int) -> dict[str, float]:
        """``train_step``'s logs after step ``done - 1`` (the last one run), as ``fit`` hands them
        to callbacks: python floats of the metrics' values (exact: float32 widened to float64)."""
        row = self._collected.step_logs[-1][-1]
        return {name: float(row[column]) for column, name in enumerate(self.log_names)}

    def _validation_batches(self) -> list[Any] | None:
        """The validation batches, when the loop can evaluate inside its graph (a model of one
        output, a few batches, and a Keras whose evaluation batches the flavour can draw); else
        None: then the loop runs one epoch per call and calls Keras's ``evaluate`` between them."""
        validation = self.case.validation
        if validation is None:
            return None
        if len(getattr(self.model, "outputs", None) or []) != 1:
            # Measured: with several outputs, the per-output loss metrics read after test_step
            # inside the loop differ from evaluate's (the total agrees); evaluate() stays exact.
            return None
        batches = validation_batches(self.flavour, self.model, self.case)
        if batches is None or len(batches) > MAX_VALIDATION_BATCHES_IN_GRAPH:
            return None
        return batches

    def _evaluate(self, validation: tuple[Any, Any]) -> dict[str, float]:
        """The validation logs of the model as it stands, exactly as ``fit`` computes them."""
        start = time.perf_counter()
        try:
            return evaluate(self.flavour, self.model, self.case)
        finally:
            self.validation_time += time.perf_counter() - start


class _Collected:
    """The per-call arrays of one execution, joined into its :class:`StepRecord` at the end."""

    def __init__(self) -> None:
        self.losses: list[np.ndarray] = []
        self.updates: list[np.ndarray] = []
        self.step_logs: list[np.ndarray] = []
        self.traces: list[np.ndarray] = []
        self.per_tensor: list[list[np.ndarray]] = [[], [], []]
        self.validated: dict[int, np.ndarray] = {}

    def record(self, loop: TrainingLoop, pinned_loss_dtype: str | None) -> StepRecord:
        update_size = np.concatenate(self.updates)
        traces = self.traces
        return StepRecord(
            loss=np.concatenate(self.losses),
            weights_changed=(update_size != 0) | np.isnan(update_size),
            update_size=update_size,
            step_logs=np.concatenate(self.step_logs),
            log_names=list(loop.log_names),
            loss_dtype=pinned_loss_dtype or loop.capture.loss_dtype(),
            weight_trace=np.concatenate(traces) if traces[0].shape[0] else traces[0],
            tensor_update=np.concatenate(self.per_tensor[0]),
            tensor_checksum=np.concatenate(self.per_tensor[1]),
            gradient_zero=_flags(np.concatenate(self.per_tensor[2])),
        )


def _epochs_ended(validated: Any, first: int, last: int, case: Case) -> dict[int, np.ndarray]:
    """The validation rows of the epochs that ended in steps ``first`` to ``last - 1`` (the
    others are unwritten in this call's array)."""
    per_epoch, steps = case.batches_per_epoch, case.total_steps
    rows = validated.numpy()
    return {
        epoch: rows[epoch]
        for epoch in range(first // per_epoch, (last - 1) // per_epoch + 1)
        if first <= min((epoch + 1) * per_epoch, steps) - 1 < last
    }


def _stretches(start: int, stop: int, pauses: list[int]) -> list[tuple[int, int]]:
    """``[start, stop)`` cut before every pause step inside it."""
    cuts = [start, *(p for p in pauses if start < p < stop), stop]
    return list(itertools.pairwise(cuts))


def _flags(recorded: np.ndarray) -> np.ndarray:
    """The recorded gradient flags as booleans; an empty array where they could not be read
    (recorded as -1: the optimizer's variables did not match the model's)."""
    if recorded.size and np.any(recorded < 0):
        return np.zeros((0, 0), bool)
    return recorded.astype(bool)


def _rows_unknown(tf: Any) -> Callable[[Any], Any]:
    """A tensor as ``fit``'s traced step receives it: the same values, its row count unknown."""

    def hide(tensor: Any) -> Any:
        shape = [None, *tensor.shape[1:]] if tensor.shape.rank else tensor.shape
        return tf.compat.v1.placeholder_with_default(tensor, shape)

    return hide


def _reset(model: Any, tf: Any) -> Any:
    model.reset_metrics()
    return tf.constant(True)
