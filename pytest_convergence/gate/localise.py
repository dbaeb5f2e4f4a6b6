"""The anatomy's reader: where inside a training step two versions first differ, the stage and
the weight.

The anatomy has three homes: the record (:mod:`..anatomy`, numpy only), its recorder on
TensorFlow (:mod:`..backend.anatomy`) and this reader, which compares two records.

A step is made of, in order: the batch, the weights it starts from, the model's output, the loss,
the gradients the optimizer receives and the update it applies. Two anatomies of one case
(:mod:`..anatomy`) are compared step by step and stage by stage; the first digest that differs
names the stage, and every stage before it was bit-identical. That is what makes the verdict
"the loss differs with equal weights, batch and output", not a guess from the loss curve.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from ..anatomy import Anatomy

INITIALISATION, BATCH, WEIGHTS, OUTPUT, LOSS, GRADIENTS, UPDATE = (
    "initialisation",
    "batch",
    "weights",
    "output",
    "loss",
    "gradients",
    "update",
)
STAGES = (INITIALISATION, BATCH, WEIGHTS, OUTPUT, LOSS, GRADIENTS, UPDATE)
"""In the order a step is made; ``weights`` is a step's starting weights after step 1 (equal
whenever the step before was, so it names a difference that began before the compared steps)."""


@dataclass(frozen=True)
class Localisation:
    """The first difference between two anatomies, or that there is none in the steps both hold."""

    first_step: int
    last_step: int
    """The steps both anatomies hold (1-based, inclusive); ``last_step < first_step``: none."""
    step: int | None = None
    stage: str | None = None
    weight: str | None = None
    old_value: float | None = None
    new_value: float | None = None
    """The differing quantity on each side where it is a number: the loss, or the float64 sum
    of the output, the gradient or the weight after the update."""
    caveat: str = ""
    """Why the localisation may not be the run's (an anatomy that did not reproduce its run)."""
    reordered: str = ""
    """At a ``batch`` stage: the batch holds the same samples in another order, and this is what
    that reordering changed first (``loss`` or ``gradients``: a sum rounded in another order)."""
    layer: str | None = None
    """At an ``output`` stage: the first layer whose output differs (``dense_1 (Dense)``), the
    layers before it equal; None where the anatomies hold no layer outputs."""
    reordered_since: int | None = None
    """The first step whose batch held the same samples in another order (changing nothing that
    step: a mean of two samples is the same either way), if any before the first difference."""

    @property
    def found(self) -> bool:
        return self.stage is not None

    @property
    def compared(self) -> str:
        if self.last_step < self.first_step:
            return "no step in common"
        if self.first_step == self.last_step:
            return f"step {self.first_step}"
        return f"steps {self.first_step}-{self.last_step}"


def localise(old: Anatomy, new: Anatomy) -> Localisation:
    """The first stage of the first step where ``new`` differs from ``old``."""
    first = max(old.first_step, new.first_step)
    last = min(old.last_step, new.last_step)
    caveat = _caveat(old, new)
    base = Localisation(first, last, caveat=caveat)
    count = min(len(old.weights), len(new.weights))
    names = new.weights[:count]
    for step in range(first, last + 1):
        i, j = step - old.first_step, step - new.first_step
        before = _first_row_difference(old.weights_before[i], new.weights_before[j], count)
        if step == 1 and before is not None:
            return replace(base, step=step, stage=INITIALISATION, weight=names[before])
        reordered = old.batch[i] != new.batch[j]
        if reordered:
            if old.batch_set[i] != new.batch_set[j]:
                return replace(base, step=step, stage=BATCH)
            if base.reordered_since is None:
                base = replace(base, reordered_since=step)
        if before is not None:
            return replace(base, step=step, stage=WEIGHTS, weight=names[before])
        outputs = (old.output_set[i], new.output_set[j]) if reordered else (old.output[i], new.output[j])
        layer = _first_layer(old, new, i, j, reordered)
        if outputs[0] != outputs[1] or layer is not None:
            return replace(
                base,
                step=step,
                stage=OUTPUT,
                layer=layer,
                old_value=float(old.output_sum[i]),
                new_value=float(new.output_sum[j]),
            )
        if not _same_float(old.loss[i], new.loss[j]):
            return replace(
                base,
                step=step,
                stage=BATCH if reordered else LOSS,
                reordered=LOSS if reordered else "",
                old_value=float(old.loss[i]),
                new_value=float(new.loss[j]),
            )
        gradient = _first_row_difference(old.gradients[i], new.gradients[j], count)
        if gradient is not None:
            return replace(
                base,
                step=step,
                stage=BATCH if reordered else GRADIENTS,
                reordered=GRADIENTS if reordered else "",
                weight=names[gradient],
                old_value=float(old.gradient_sums[i][gradient]),
                new_value=float(new.gradient_sums[j][gradient]),
            )
        after = _first_row_difference(old.weights_after[i], new.weights_after[j], count)
        if after is not None:
            return replace(
                base,
                step=step,
                stage=UPDATE,
                weight=names[after],
                old_value=float(old.weight_sums[i][after]),
                new_value=float(new.weight_sums[j][after]),
            )
    return base


def _first_layer(old: Anatomy, new: Anatomy, i: int, j: int, reordered: bool) -> str | None:
    """The first layer whose output differs at rows ``i``/``j``, where both recorded the same layers."""
    if not old.layers or old.layers != new.layers:
        return None
    rows = (
        (old.layer_sets[i], new.layer_sets[j]) if reordered else (old.layer_outputs[i], new.layer_outputs[j])
    )
    differs = _first_row_difference(rows[0], rows[1], len(old.layers))
    return None if differs is None else old.layers[differs]


def _first_row_difference(old: np.ndarray, new: np.ndarray, count: int) -> int | None:
    differs = np.flatnonzero(np.asarray(old)[:count] != np.asarray(new)[:count])
    return int(differs[0]) if differs.size else None


def _same_float(old: float, new: float) -> bool:
    a, b = np.float64(old), np.float64(new)
    return bool(a == b or (np.isnan(a) and np.isnan(b)))


def _caveat(old: Anatomy, new: Anatomy) -> str:
    problems = []
    for side, anatomy in (("old", old), ("new", new)):
        if anatomy.matches_run is False:
            problems.append(f"the {side} side's anatomy did not train as its run did (not deterministic?)")
    if len(old.weights) != len(new.weights):
        problems.append(f"{len(old.weights)} trainable weights before, {len(new.weights)} now")
    return "; ".join(problems)
