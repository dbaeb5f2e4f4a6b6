"""A dataset, PyDataset or generator, drawn once as ``fit`` draws it, then replayed to every run.

Such data carries state that training uses up: a generator is consumed, and a ``tf.data`` shuffle
(reshuffling each pass, its default) gives every new pass the next order of one seeded stream, so
the second pass over the same object is not the first. Drawing again for each run would give the
second dtype, the ``fit`` engine and the probes other batches than the first run trained on. So the
batches are drawn once per data object with Keras's own epoch iterator (``steps_per_epoch``,
``class_weight`` and its warm-up exactly as ``fit`` has them), and every run on that object trains
on those: each dtype and engine sees the same batches, and they are the batches ``fit`` draws
from a fresh object. A drawing is kept for the session, as the objects in a test module are.

What cannot be repeated is refused here rather than surfacing later as a determinism or upgrade
difference: a ``tf.data`` shuffle or random op without a seed (a new order in every process).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from ..case import Case
from ..errors import CaseError


class Started(NamedTuple):
    """Keras's epoch iterator on the data, started as fit starts it."""

    spec: Any
    """The element spec of the batches (static or unknown dimensions as fit's step sees them)."""
    epochs: Iterator[list[Any]]
    """Each epoch's batches, as fit draws them (shorter than steps_per_epoch where the data ran out)."""


EpochSource = Callable[[], Started]

RANDOM_OPS = (
    "RandomUniform",
    "RandomUniformInt",
    "RandomStandardNormal",
    "TruncatedNormal",
    "RandomShuffle",
    "Multinomial",
    "RandomGamma",
    "RandomPoisson",
    "RandomPoissonV2",
)
"""Stateful random ops whose zero seeds mean "pick one at random" (tf.random.* without a seed
and without a global seed when the pipeline was built)."""


@dataclass
class Drawing:
    """The batches drawn so far from one data object, in step order, and how to draw more."""

    epochs: list[list[Any]] = field(default_factory=list)
    more: Iterator[list[Any]] | None = None
    spec: Any = None


_DRAWINGS: dict[tuple[Any, ...], tuple[Any, Drawing]] = {}
"""One drawing per data object and drawing arguments; the object is held so its id stays its own."""


def training_epochs(case: Case, start: EpochSource, *, dtype: str = "") -> tuple[list[list[Any]], Any]:
    """The epochs ``case`` trains on (each ``case.batches_per_epoch`` batches; the last one cut at
    ``case.total_steps``), drawn once per data object and replayed afterwards, and their spec."""
    refuse_unrepeatable(case, case.x, "x", dtype)
    key = (id(case.x), "train", case.steps_per_epoch, case.shuffle, _class_weight_key(case))
    drawing = _drawing(key, case.x, start)
    per_epoch, steps = case.batches_per_epoch, case.total_steps
    epochs: list[list[Any]] = []
    taken = 0
    while taken < steps:
        index = len(epochs)
        while len(drawing.epochs) <= index:
            assert drawing.more is not None
            try:
                drawing.epochs.append(next(drawing.more))
            except StopIteration:
                drawing.epochs.append([])
        epoch = drawing.epochs[index]
        wanted = min(per_epoch, steps - taken)
        if len(epoch) < wanted:
            raise CaseError(
                f"the data ran out in epoch {index + 1}: it gave {len(epoch)} of the {per_epoch} batches of "
                f'an epoch, after {taken} steps; fit warns there ("Your input ran out of '
                'data")',
                case=case.name,
                dtype=dtype or None,
                field="steps_per_epoch" if case.steps_per_epoch else "x",
                fix="repeat the dataset (dataset.repeat()) with steps_per_epoch, or fewer steps or epochs"
                if case.data_kind == "dataset"
                else "give data for steps_per_epoch * epochs batches, or fewer steps or epochs",
            )
        epochs.append(epoch[:wanted])
        taken += wanted
    return epochs, drawing.spec


def validation_batches(case: Case, start: EpochSource, *, dtype: str = "") -> tuple[list[Any], Any]:
    """The batches every evaluation of ``case`` draws from its validation dataset or PyDataset.

    ``fit`` evaluates on a new pass each epoch; a pass that differs from the first (a shuffle in
    the validation pipeline) would make each epoch's ``val_*`` depend on the pass, so two passes
    are drawn and compared once. Returns the batches and their spec."""
    validation = case.validation_data
    refuse_unrepeatable(case, validation, "validation_data", dtype)
    key = (id(validation), "validation")
    drawing = _drawing(key, validation, start)
    while len(drawing.epochs) < 2:
        assert drawing.more is not None
        drawing.epochs.append(next(drawing.more))
    first, second = drawing.epochs[0], drawing.epochs[1]
    if not first:
        raise CaseError("the validation data gave no batch", case=case.name, field="validation_data")
    if not _same_batches(first, second):
        raise CaseError(
            "the validation data gives other batches on each pass (a shuffle in its pipeline?), so fit "
            "would validate each epoch on another order and val_* would depend on the pass",
            case=case.name,
            dtype=dtype or None,
            field="validation_data",
            fix="drop the shuffle from the validation pipeline (evaluation needs no order)",
        )
    return first, drawing.spec


def _drawing(key: tuple[Any, ...], source: Any, start: EpochSource) -> Drawing:
    held = _DRAWINGS.get(key)
    if held is not None and held[0] is source:
        return held[1]
    started = start()
    drawing = Drawing(more=started.epochs, spec=started.spec)
    _DRAWINGS[key] = (source, drawing)
    return drawing


def _class_weight_key(case: Case) -> tuple[Any, ...] | None:
    return None if case.class_weight is None else tuple(sorted(case.class_weight.items()))


def _same_batches(first: list[Any], second: list[Any]) -> bool:
    import numpy as np

    if len(first) != len(second):
        return False
    import tensorflow as tf

    for a, b in zip(first, second):
        flat_a, flat_b = tf.nest.flatten(a), tf.nest.flatten(b)
        if len(flat_a) != len(flat_b):
            return False
        for p, q in zip(flat_a, flat_b):
            if p.shape != q.shape or not np.array_equal(np.asarray(p), np.asarray(q)):
                return False
    return True


def refuse_unrepeatable(case: Case, data: Any, where: str, dtype: str = "") -> None:
    """Refuse a ``tf.data`` pipeline whose randomness has no seed: a shuffle, or a random op in a
    ``map``, with neither an op seed nor a global seed set when the pipeline was built. Each
    process then draws another order, so no two runs, dtypes or framework versions would train on
    the same batches, and every difference would look like a real one."""
    found = unseeded(data)
    if found is None:
        return
    raise CaseError(
        f"{where} is not repeatable: its {found} has no seed, so every process draws other batches and "
        "no run, dtype or upgrade could be compared with another",
        case=case.name,
        dtype=dtype or None,
        field=where,
        fix="give the pipeline's randomness a seed: dataset.shuffle(buffer, seed=0), "
        "tf.random.uniform(..., seed=1), or call keras.utils.set_random_seed(0) before building it",
    )


def unseeded(dataset: Any, seen: set[int] | None = None) -> str | None:
    """The first unseeded random part of a ``tf.data`` pipeline (read from its Python objects), or
    None; anything else than a ``tf.data.Dataset`` gives None (its randomness cannot be read)."""
    seen = set() if seen is None else seen
    if id(dataset) in seen or not hasattr(dataset, "_inputs"):
        return None
    seen.add(id(dataset))
    kind = type(dataset).__name__
    if (
        kind == "_ShuffleDataset"
        and _zero(getattr(dataset, "_seed", 1))
        and _zero(getattr(dataset, "_seed2", 1))
    ):
        return "shuffle"
    for attribute in ("_map_func", "_predicate", "_func"):
        function = getattr(dataset, attribute, None)
        graph = getattr(getattr(function, "function", None), "graph", None)
        if graph is None:
            continue
        for op in graph.get_operations():
            if op.type in RANDOM_OPS and _op_unseeded(op):
                return f"{op.type} inside {kind.strip('_').removesuffix('Dataset').lower() or 'a'} function"
    try:
        inputs = list(dataset._inputs())
    except Exception:  # a dataset class of another TensorFlow: nothing more can be read
        return None
    for parent in inputs:
        found = unseeded(parent, seen)
        if found is not None:
            return found
    return None


def _zero(value: Any) -> bool:
    try:
        return int(value) == 0
    except (TypeError, ValueError):
        return False


def _op_unseeded(op: Any) -> bool:
    try:
        return int(op.get_attr("seed")) == 0 and int(op.get_attr("seed2")) == 0
    except (ValueError, TypeError):
        return False


def replay(tf: Any, batches: list[Any], spec: Any = None) -> Any:
    """A ``tf.data.Dataset`` that yields ``batches`` in order, once: fed to ``fit`` and
    ``evaluate`` in place of the data they were drawn from (whose state moved on).

    Its element spec is the drawn data's own (``spec``, where Keras's iterator tells it): fit
    traces its step with it, and a static batch size where fit had an unknown one changes what
    Keras computes (measured: a rank-1 target against a rank-2 output evaluated otherwise)."""
    if not batches:
        return None
    if tf is None:  # Keras on JAX or PyTorch: fit takes a tf.data dataset there too
        import tensorflow

        tf = tensorflow
    if spec is not None:

        def generate_as_drawn() -> Iterator[Any]:
            yield from batches

        return tf.data.Dataset.from_generator(generate_as_drawn, output_signature=spec)

    def common(*tensors: Any) -> Any:
        shapes = [tuple(t.shape) for t in tensors]
        rank = len(shapes[0])
        if any(len(s) != rank for s in shapes):
            return tf.TensorSpec(None, tensors[0].dtype)
        dims = [shapes[0][i] if all(s[i] == shapes[0][i] for s in shapes) else None for i in range(rank)]
        return tf.TensorSpec(dims, tensors[0].dtype)

    signature = tf.nest.map_structure(common, *batches)

    def generate() -> Iterator[Any]:
        yield from batches

    return tf.data.Dataset.from_generator(generate, output_signature=signature)
