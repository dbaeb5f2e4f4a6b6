"""A few training steps taken apart, on a model built for it: what the gate localises changes with.

The timed run is left as it is: its graph is the plain loop, and its history is ``fit``'s. The
anatomy builds the case again (same seed, so the same weights and batches: determinism is checked
by comparing its losses with the run's), runs the plain loop up to the first step it records, then
records each step's digests (:meth:`.loop.TrainingLoop.anatomy`). Comparing two versions' records
then names the first stage of a step that differs (:mod:`..gate.localise`).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..anatomy import Anatomy
from ..case import Case
from .batches import plan_batches
from .capture import LayerCapture, OutputCapture
from .engine import Training


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
    seed draws the same), so they are not drawn twice.
    """
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
        recorded = loop.anatomy(plan, outputs, first, last, layers)
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


def shuffling(case: Case, variants: int) -> str:
    """How the batches are ordered from epoch to epoch, as the drawn batches show it."""
    if not case.shuffle:
        return "off"
    if case.total_epochs == 1:
        return "one epoch, shuffled"
    if variants == 1:
        return "the same order every epoch"
    return "a new order every epoch"
