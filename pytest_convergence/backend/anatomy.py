"""The anatomy's recorder: training steps taken apart on TensorFlow (the only module that does it).

The anatomy has three homes: the record (:mod:`..anatomy`, numpy only: what a step was made of,
stored in results files and replays), this recorder, and the reader that compares two records
(:mod:`..gate.localise`: the first stage of a step where two versions differ).

The timed run is left as it is: its graph is the plain loop, and its history is ``fit``'s. The
anatomy builds the case again (same seed, so the same weights and batches: determinism is checked
by comparing its losses with the run's), runs the plain loop up to the first step it records, then
records each step's digests (:mod:`.digests`) in a loop of its own (:func:`take_steps_apart`).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..anatomy import ROWS, SCALARS, Anatomy
from ..case import Case
from .batches import BatchPlan, plan_batches
from .capture import LayerCapture, OutputCapture
from .digests import digest, row_set_digest, value_sum
from .engine import Training
from .frameworks import import_keras
from .interrupts import HeldInterrupt
from .loop import XLA_CALL_STEPS, TrainingLoop
from .pacing import Pace
from .portable_anatomy import record_portable_anatomy, shuffling

ANATOMY_FIELDS = (*SCALARS, *ROWS, "layer_outputs", "layer_sets")
"""What :func:`take_steps_apart` records per step: six scalars, five rows of one value per
trainable weight, then two rows of one digest per layer output (ordered, and whatever the order)."""


def record_anatomy(
    case: Case,
    dtype: str,
    engine: str,
    first: int,
    last: int,
    *,
    keep_initial: bool = False,
    plan: Any = None,
) -> Anatomy:
    """Steps ``first`` to ``last - 1`` (0-based) of ``case`` in ``dtype``, taken apart.

    The ``fit`` engine's steps are the ``loop``'s (bit-identical), so ``fit`` runs are taken
    apart by the loop. ``keep_initial`` keeps the initial weights' values (a replay that sets
    them back on the other version needs them). ``plan``: the batches the run drew (the same
    seed draws the same), so they are not drawn twice. On JAX and PyTorch the steps are taken
    apart by :func:`.portable_anatomy.record_portable_anatomy`.
    """
    if import_keras()[1].portable:
        return record_portable_anatomy(case, dtype, engine, first, last, keep_initial=keep_initial, plan=plan)
    training = Training.prepare(case, dtype, "loop" if engine == "fit" else engine)
    outputs = OutputCapture(training.model)
    layers = LayerCapture(training.model)
    loop = training.loop
    assert loop is not None
    last = min(last, case.total_steps)
    first = min(first, last)
    with training.reporting_runtime_errors():
        if plan is None:
            plan = plan_batches(training.flavour, training.model, case, training._epochs)
        if first > 0:
            loop.compile(plan)
        initial = [np.array(w) for w in training.model.get_weights()] if keep_initial else []
        recorded = take_steps_apart(loop, plan, outputs, first, last, layers)
    output_dtype = ""
    if outputs.tensors and outputs.tensors[-1] is not None:
        flat = training.tf.nest.flatten(outputs.tensors[-1])
        output_dtype = ", ".join(sorted({t.dtype.name for t in flat}))
    anatomy = Anatomy.from_arrays(
        first_step=first + 1,
        weights=[training._name(w) for w in training.model.trainable_weights],
        configuration=configuration(training, plan, output_dtype),
        matches_run=None,
        arrays=recorded,
        initial_weights=initial,
    )
    anatomy.layers = layers.step()[0]
    anatomy.layer_outputs, anatomy.layer_sets = recorded["layer_outputs"], recorded["layer_sets"]
    return anatomy


def take_steps_apart(
    loop: TrainingLoop,
    plan: BatchPlan,
    outputs: OutputCapture | None,
    first: int,
    last: int,
    layers: LayerCapture | None = None,
) -> dict[str, np.ndarray]:
    """Steps ``first`` to ``last - 1`` of ``loop``'s model, each taken apart: the digest
    (:mod:`.digests`) of its batch, of every trainable weight before and after it, of the output
    and of every gradient, with its loss and float64 sums that say by how much two differ.

    The steps before ``first`` run in the plain compiled loop (:meth:`.loop.TrainingLoop.compile`
    first). The recorded steps run in a loop of their own, traced with the digests, on a model
    built for this (:func:`record_anatomy`), so the timed run's graph is the plain one.
    """
    tf = loop.tf
    model = loop.model
    trainables = loop.flavour.trainable_variables(model)
    count = len(trainables)
    log_names = loop.read_log_names(plan)
    assert loop.gradients is not None, "TensorFlow's loop captures the gradients"
    gradients = loop.gradients.gradients

    def extras(batch: Any) -> tuple[Any, ...]:
        grads = gradients[-1] if gradients else None
        y_pred = outputs.tensors[-1] if outputs is not None and outputs.tensors else None
        if y_pred is None:
            output, output_set = tf.constant(0, tf.int64), tf.constant(0, tf.int64)
            output_sum = tf.constant(float("nan"), tf.float64)
        else:
            output, output_set = digest(tf, y_pred), row_set_digest(tf, y_pred)
            output_sum = value_sum(tf, y_pred)
        if grads is None or not count:
            grad, grad_sum = tf.zeros([count], tf.int64), tf.fill([count], float("nan"))
        else:
            zero = tf.constant(0, tf.int64)
            grad = tf.stack([zero if g is None else digest(tf, g) for g in grads])
            grad_sum = tf.stack(
                [tf.constant(0.0, tf.float64) if g is None else value_sum(tf, g) for g in grads]
            )
        batch_set = row_set_digest(tf, batch)
        captured = layers.step()[1] if layers is not None else []
        if captured:
            layer_outputs = tf.stack([digest(tf, o) for o in captured])
            layer_sets = tf.stack([row_set_digest(tf, o) for o in captured])
        else:
            layer_outputs = layer_sets = tf.zeros([0], tf.int64)
        return (
            digest(tf, batch),
            batch_set,
            output,
            output_set,
            output_sum,
            grad,
            grad_sum,
            layer_outputs,
            layer_sets,
        )

    step_on = loop.stepper(plan, log_names, extras, layers.start if layers is not None else None)
    jit = loop.jit
    size_when_jit = min(loop.case.total_steps, XLA_CALL_STEPS)

    def digests(values: list[Any]) -> Any:
        return tf.stack([digest(tf, v) for v in values]) if values else tf.zeros([0], tf.int64)

    def sums(values: list[Any]) -> Any:
        return tf.stack([value_sum(tf, v) for v in values]) if values else tf.zeros([0], tf.float64)

    int64, float64 = tf.int64, tf.float64
    # loss, batch, batch_set, output, output_set, output_sum
    scalar_dtypes = (float64, int64, int64, int64, int64, float64)
    row_dtypes = (int64, int64, float64, int64, float64)  # before, gradients, sums, after, sums
    tracked = len(scalar_dtypes) + len(row_dtypes) + 2  # and the layers' outputs, two digests

    @tf.function(jit_compile=jit, autograph=False)
    def steps(first_step: Any, stop: Any) -> tuple[Any, ...]:
        size = size_when_jit if jit else stop - first_step
        arrays = [tf.TensorArray(d, size=size, element_shape=[]) for d in scalar_dtypes]
        arrays += [tf.TensorArray(d, size=size, element_shape=[count]) for d in row_dtypes]
        arrays += [tf.TensorArray(int64, size=size, element_shape=[None]) for _ in range(2)]

        def body(step: Any, *carried: Any) -> tuple[Any, ...]:
            written, before = carried[:tracked], list(carried[tracked:])
            weights_before = digests(before)
            loss, _, _, *taken = step_on(step)
            batch, batch_set, output, output_set, output_sum, grad, grad_sum, *by_layer = taken
            now = [v.read_value() for v in trainables]
            row = step - first_step
            values = (
                loss,
                batch,
                batch_set,
                output,
                output_set,
                output_sum,
                weights_before,
                grad,
                grad_sum,
                digests(now),
                sums(now),
                *by_layer,
            )
            return (step + 1, *[a.write(row, v) for a, v in zip(written, values)], *now)

        results = tf.while_loop(
            lambda step, *_: step < stop,
            body,
            (first_step, *arrays, *[v.read_value() for v in trainables]),
            maximum_iterations=loop.case.total_steps,
        )
        return tuple(a.stack() for a in results[1 : 1 + tracked])

    # Traced here, in plain Python, where a Ctrl-C is raised at once: held, it would wait
    # for the whole trace (seconds on a loaded machine) before the session could end.
    bound = tf.TensorSpec([], tf.int32)
    steps = steps.get_concrete_function(bound, bound)
    recorded: list[list[np.ndarray]] = [[] for _ in ANATOMY_FIELDS]
    pace = Pace(size_when_jit if jit else loop.case.total_steps)
    with HeldInterrupt() as interrupt:
        if first > 0:
            loop.run_steps(0, first, pace, interrupt)
        for part_first, part_last in Pace(pace.most).parts(first, last, interrupt):
            arrays = steps(tf.constant(part_first, tf.int32), tf.constant(part_last, tf.int32))
            for kept, values in zip(recorded, arrays):
                kept.append(values.numpy()[: part_last - part_first])
    return {name: np.concatenate(parts) for name, parts in zip(ANATOMY_FIELDS, recorded)}


def configuration(training: Training, plan: Any, output_dtype: str) -> dict[str, str]:
    """What ran, as settings two versions can differ in: each value a short phrase."""
    from . import probes

    case, flavour, model = training.case, training.flavour, training.model
    policy = getattr(model, "dtype_policy", None) or getattr(model, "_dtype_policy", None)
    policy_name = getattr(policy, "name", None) or str(policy or training.dtype)
    optimizer = flavour.base_optimizer(model.optimizer)
    optimizer_path = f"{type(optimizer).__module__}.{type(optimizer).__qualname__}"
    return {
        "output dtype": output_dtype,
        "dtype policy": policy_name,
        "loss scaling": "on" if flavour.scales_loss(model.optimizer) else "off",
        "optimizer": optimizer_path + (" (legacy)" if ".legacy." in optimizer_path else ""),
        "loss": probes.what_ran(model.loss).split(" ", 1)[0],
        "shuffling": shuffling(case, plan.variants),
        "jit_compile": "on (xla)" if training.engine == "xla" else "off",
    }
