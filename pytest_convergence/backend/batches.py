"""The batches ``fit`` would train on, drawn by Keras's own iterator and stacked for the loop.

Arrays are drawn as below. A dataset, PyDataset or generator is drawn once per data object
(:mod:`.drawn`) and laid out as a stream: every step's batch, grouped by shape, since a repeated
dataset's smaller last batch can fall anywhere in an epoch.

Keras 3's array adapter draws each epoch's order from a seeded ``tf.random.shuffle`` inside a
``tf.data`` function, re-seeded for every epoch's iterator: with a seed set, the first epoch is
every epoch (checked against the second, not trusted), and the batches are kept on the device.
Keras 2 draws one shuffled stream over all epochs, each epoch a new permutation, so every epoch is
drawn: in one traced loop where the flavour can (100,000 epochs in seconds), else one at a time.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from ..case import Case
from . import drawn
from .keras_adapter import Flavour


@dataclass
class StreamPlan:
    """Every step's batch in step order, stacked by shape: step ``s`` trains on row
    ``row_of[s]`` of ``groups[group_of[s]]``."""

    groups: list[Any]
    group_of: Any
    row_of: Any

    def step_on(self, tf: Any, step: Any, one_step: Callable[[Any], Any]) -> Any:
        """``one_step`` on step ``step``'s batch (a traced step: one branch per shape)."""
        row = tf.gather(self.row_of, step)

        def on(group: Any) -> Callable[[], Any]:
            return lambda: one_step(tf.nest.map_structure(lambda t: tf.gather(t, row), group))

        if len(self.groups) == 1:
            return on(self.groups[0])()
        return tf.switch_case(tf.gather(self.group_of, step), [on(group) for group in self.groups])


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
    stream: StreamPlan | None = None
    """For a dataset, PyDataset or generator: every step's batch (``full`` and ``partial`` None)."""

    @classmethod
    def from_stream(cls, tf: Any, epochs: list[list[Any]]) -> BatchPlan:
        """From the batches of each epoch as drawn, in step order, whatever their shapes."""
        batches = [batch for epoch in epochs for batch in epoch]
        keys: dict[Any, list[int]] = {}
        group_of, row_of = [], []
        for step, batch in enumerate(batches):
            key = tuple((tuple(t.shape), str(t.dtype)) for t in tf.nest.flatten(batch))
            members = keys.setdefault(key, [])
            group_of.append(list(keys).index(key))
            row_of.append(len(members))
            members.append(step)
        groups = [
            tf.nest.map_structure(lambda *xs: tf.stack(xs), *[batches[i] for i in members])
            for members in keys.values()
        ]
        first = epochs[0]
        variants = 1 if all(_same(tf, epoch, first) for epoch in epochs[1:-1]) else len(epochs)
        return cls(
            full=None,
            partial=None,
            n_full=0,
            variants=variants,
            first=batches[0],
            stream=StreamPlan(
                groups=groups,
                group_of=tf.constant(group_of, tf.int32),
                row_of=tf.constant(row_of, tf.int32),
            ),
        )

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
    if case.data_kind != "arrays":
        return BatchPlan.from_stream(tf, list(epochs_drawn))
    epochs = case.total_epochs
    samples = case.num_samples or 0
    n_full = samples // min(case.effective_batch_size, samples)
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


def _same(tf: Any, one: list[Any], other: list[Any]) -> bool:
    """Whether two epochs drew the same batches (to say whether a dataset reshuffles)."""
    if len(one) != len(other):
        return False
    for a, b in zip(one, other):
        for p, q in zip(tf.nest.flatten(a), tf.nest.flatten(b)):
            if p.shape != q.shape or not bool(tf.reduce_all(tf.equal(p, q))):
                return False
    return True


def validation_batches(flavour: Flavour, model: Any, case: Case) -> list[Any] | None:
    """The batches every evaluation of ``case`` draws, in order: from a validation dataset or
    PyDataset drawn once (:func:`.drawn.validation_batches`), else as ``evaluate`` batches arrays;
    None where evaluation must go through ``evaluate``."""
    validation = case.validation
    if validation is None:
        return None
    if case.validation_kind != "arrays":
        return _drawn_validation(flavour, model, case)[0]
    x, y = validation
    return flavour.validation_batches(model, x, y, case.effective_batch_size)


def evaluate(flavour: Flavour, model: Any, case: Case) -> dict[str, float]:
    """The validation logs of the model as it stands, exactly as ``fit`` computes them."""
    if case.validation_kind != "arrays":
        batches, spec = _drawn_validation(flavour, model, case)
        logs = model.evaluate(drawn.replay(flavour.tf, batches, spec), verbose=0, return_dict=True)
    else:
        assert case.validation is not None
        x, y = case.validation
        logs = model.evaluate(x, y, batch_size=case.effective_batch_size, verbose=0, return_dict=True)
    return {name: float(value) for name, value in logs.items()}


def fit_arguments(flavour: Flavour, model: Any, case: Case) -> dict[str, Any]:
    """What ``model.fit`` is given for the case's data (not epochs, callbacks or verbosity).

    Arrays go to fit as they are (fit batches and shuffles them). A dataset, PyDataset or
    generator goes as the batches drawn once from it (:mod:`.drawn`), replayed by a dataset with
    the case's steps_per_epoch: the batches fit drew from the fresh object, which a second pass
    over the object itself would not give again. Class weights are in those batches already.
    """
    arguments: dict[str, Any] = {}
    if case.data_kind == "arrays":
        arguments.update(x=case.x, y=case.y, batch_size=case.effective_batch_size, shuffle=case.shuffle)
        if case.sample_weight is not None:
            arguments["sample_weight"] = case.sample_weight
        if case.class_weight is not None:
            arguments["class_weight"] = dict(case.class_weight)
    else:
        epochs, spec = drawn.training_epochs(case, lambda: flavour.source_epochs(model, case.x, case=case))
        arguments.update(
            x=drawn.replay(flavour.tf, [batch for epoch in epochs for batch in epoch], spec),
            steps_per_epoch=case.batches_per_epoch,
            shuffle=False,  # the batches are drawn, in fit's order already
        )
    if case.validation_split is not None:
        arguments["validation_split"] = case.validation_split  # fit splits x and y itself
    elif case.validation_kind != "arrays":
        arguments["validation_data"] = drawn.replay(flavour.tf, *_drawn_validation(flavour, model, case))
    elif case.validation_data is not None:
        arguments["validation_data"] = tuple(case.validation_data)
    return arguments


def _drawn_validation(flavour: Flavour, model: Any, case: Case) -> tuple[list[Any], Any]:
    """A validation dataset's or PyDataset's batches, drawn once as evaluate draws them, and their spec."""
    return drawn.validation_batches(
        case, lambda: flavour.source_epochs(model, case.validation_data, case=None)
    )
