"""The batches ``fit`` would train on, drawn by Keras's own iterator and stacked for the loop.

Keras 3's array adapter draws each epoch's order from a seeded ``tf.random.shuffle`` inside a
``tf.data`` function, re-seeded for every epoch's iterator: with a seed set, the first epoch is
every epoch (checked against the second, not trusted), and the batches are kept on the device.
Keras 2 draws one shuffled stream over all epochs, each epoch a new permutation, so every epoch is
drawn: in one traced loop where the flavour can (100,000 epochs in seconds), else one at a time.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from ..case import Case
from .keras_adapter import Flavour


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
        def stack(*tensors: Any) -> Any:
            return tf.stack(tensors)

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


def plan_batches(flavour: Flavour, model: Any, case: Case, epochs_drawn: Iterator[list[Any]]) -> BatchPlan:
    """The batches every step trains on, drawn as ``fit`` draws them (``epochs_drawn`` is
    Keras's own epoch iterator, already started by the build)."""
    tf = flavour.tf
    epochs = case.total_epochs
    n_full = case.num_samples // min(case.effective_batch_size, case.num_samples)
    if flavour.epochs_repeat or epochs == 1 or not case.shuffle:
        first = next(epochs_drawn)
        plan = [first]
        if epochs > 1 and case.shuffle:
            second = next(epochs_drawn)
            same = all(
                all(
                    bool(tf.reduce_all(tf.equal(a, b)))
                    for a, b in zip(tf.nest.flatten(p), tf.nest.flatten(q))
                )
                for p, q in zip(first, second)
            )
            if not same:
                plan.append(second)
                plan.extend(next(epochs_drawn) for _ in range(epochs - 2))
        return BatchPlan.from_epochs(tf, plan, n_full)
    positions = flavour.stacked_epochs(model, case)
    if positions is None:
        return BatchPlan.from_epochs(tf, [next(epochs_drawn) for _ in range(epochs)], n_full)
    return BatchPlan.from_positions(tf, positions, n_full)
