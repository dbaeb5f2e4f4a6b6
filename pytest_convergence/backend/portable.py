"""Keras 3 on JAX and on PyTorch: what differs from Keras 3 on TensorFlow, in one place.

The engines reuse each backend's own ``train_step`` and batch drawing, so a run is what that
backend's ``model.fit`` gives:

=====================  ==========================================  ==========================================
                       JAX                                         PyTorch
=====================  ==========================================  ==========================================
batches                ``JAXEpochIterator``: numpy, one            ``TorchEpochIterator``: a DataLoader over
                       permutation per epoch from numpy's global   the same adapter, the same permutations
                       generator (``shuffle=True``)
``train_step``         stateless: ``(logs, state)`` from state     eager, on the model's own variables
per-step loss          the tracker's ``update_state``: traced      the tracker's ``update_state``: a tensor
                       (loop), read through ``jax.debug.callback``  read after the step
                       (fit)
a dtype it lacks       ``XlaRuntimeError`` / ``TypeError``         ``RuntimeError: ... not implemented for``
float64                needs ``jax_enable_x64`` (set per run)      native
=====================  ==========================================  ==========================================

Drawing batches must not move numpy's global generator: ``fit`` draws its permutations from it,
so :meth:`PortableKeras.epochs` draws from a copy of its state and leaves it where it was.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from ..case import Case
from . import drawn
from .keras_adapter import Keras3, _source_shuffle, _weights


class PortableKeras(Keras3):
    """Keras 3 on a backend other than TensorFlow (``tf`` is None: nothing here may reach it)."""

    portable = True
    epochs_repeat = False  # numpy's global generator: each shuffled epoch is a new permutation
    iterator_module = ""
    iterator_class = ""

    def backend(self) -> str:
        return str(self.keras.config.backend())

    def trainable_variables(self, model: Any) -> list[Any]:
        return list(model.trainable_weights)

    def _iterator(self, **arguments: Any) -> Any:
        import importlib

        try:
            module = importlib.import_module(self.iterator_module)
            iterator_class = getattr(module, self.iterator_class)
        except (ImportError, AttributeError) as error:
            raise self.unsupported(f"{self.iterator_class} ({self.iterator_module})", error) from None
        try:
            return iterator_class(**arguments)
        except TypeError as error:
            if "argument" in str(error):
                raise self.unsupported(f"{self.iterator_class}(...) arguments", error) from None
            raise

    def epochs(self, model: Any, case: Case, *, build: bool = False) -> Iterator[list[Any]]:
        if case.data_kind != "arrays":
            return self._source_training(model, case, build=build)

        def start() -> Any:
            return self._iterator(
                x=case.fit_x,
                y=case.fit_y,
                batch_size=case.effective_batch_size,
                shuffle=case.shuffle,
                steps_per_execution=1,
                **_weights(case),
            )

        if build:  # fit's symbolic build, its draw taken from a copy of numpy's generator
            symbolic_build = getattr(model, "_symbolic_build", None)
            if symbolic_build is not None:
                with _generator_state(np.random.get_state()):
                    symbolic_build(iterator=start())
        return _drawn_as_fit(start, model, case, self._each_epoch)

    def validation_batches(self, model: Any, x: Any, y: Any, batch_size: int) -> list[Any] | None:
        return None  # the loop evaluates with Keras's own evaluate between epochs

    def source_epochs(self, model: Any, x: Any, *, case: Case | None) -> drawn.Started:
        iterator = self._iterator(
            x=x,
            steps_per_epoch=case.steps_per_epoch if case else None,
            shuffle=_source_shuffle(case),
            class_weight=case.class_weight if case else None,
            steps_per_execution=1,
        )
        symbolic_build = getattr(model, "_maybe_symbolic_build", None)
        if case is not None and symbolic_build is not None:
            symbolic_build(iterator=iterator)
        if hasattr(iterator, "reset"):
            iterator.reset()
        return drawn.Started(None, self._each_source_epoch(iterator))

    @staticmethod
    def _each_epoch(iterator: Any) -> Iterator[list[Any]]:
        while True:
            batches = []
            for entry in iterator:
                source = entry[-1]
                batch = next(source) if hasattr(source, "__next__") else source
                # steps_per_execution=1: a list of one batch (PyTorch), or the batch itself
                batches.append(batch[0] if isinstance(batch, list) and len(batch) == 1 else batch)
            yield batches

    @staticmethod
    def _each_source_epoch(iterator: Any) -> Iterator[list[Any]]:
        while True:
            batches: list[Any] = []
            with iterator.catch_stop_iteration():
                for entry in iterator:
                    source = entry[-1]
                    batch = next(source) if hasattr(source, "__next__") else source
                    batches.append(batch[0] if isinstance(batch, list) and len(batch) == 1 else batch)
            yield batches

    def variable(self, value: np.ndarray, dtype: str) -> Any:
        return self.keras.Variable(value, dtype=dtype)

    def runtime_errors(self) -> tuple[type[BaseException], ...]:
        """What the backend raises when a kernel fails while training (a dtype it lacks)."""
        return ()

    def kernel_missing(self, error: BaseException) -> bool:
        """Whether ``error`` says an op has no kernel for the run's dtype on this device."""
        return False


class KerasOnJax(PortableKeras):
    iterator_module = "keras.src.backend.jax.trainer"
    iterator_class = "JAXEpochIterator"

    def runtime_errors(self) -> tuple[type[BaseException], ...]:
        import jax

        return (jax.errors.JaxRuntimeError,)

    def kernel_missing(self, error: BaseException) -> bool:
        text = str(error)
        return "UNIMPLEMENTED" in text or "not supported" in text.lower()


class KerasOnTorch(PortableKeras):
    iterator_module = "keras.src.backend.torch.trainer"
    iterator_class = "TorchEpochIterator"

    def runtime_errors(self) -> tuple[type[BaseException], ...]:
        return (RuntimeError, NotImplementedError)

    def kernel_missing(self, error: BaseException) -> bool:
        return "not implemented for" in str(error)


def load(keras: Any) -> PortableKeras:
    """The flavour of the Keras 3 already loaded on ``keras.config.backend()``."""
    backend = str(keras.config.backend())
    flavour = {"jax": KerasOnJax, "torch": KerasOnTorch}[backend]
    return flavour(keras, package="keras", tf=None)


def _drawn_as_fit(
    start: Callable[[], Any], model: Any, case: Case, each_epoch: Callable[[Any], Iterator[list[Any]]]
) -> Iterator[list[Any]]:
    """The epochs ``fit`` would draw if it started now: its iterator made, its symbolic build and
    ``reset()``, then one epoch after another, all from a copy of numpy's global generator as it
    is at the first draw (``fit`` draws its permutations from the global one, left untouched).

    Drawing 100,000 epochs through Keras's iterator costs minutes; where the epochs are plain
    arrays shuffled whole (:func:`_permutations`), they are computed as Keras's array adapter
    computes them, one ``permutation`` an epoch, checked against Keras's own first epoch."""
    state = np.random.get_state()
    with _generator_state(state) as moved:
        iterator = start()
        symbolic_build = getattr(model, "_symbolic_build", None)
        if symbolic_build is not None:
            symbolic_build(iterator=iterator)
        if hasattr(iterator, "reset"):
            iterator.reset()
        before_first = np.random.get_state()
        epochs = each_epoch(iterator)
        first = [_to_numpy(batch) for batch in next(epochs)]
    state = moved["state"]
    yield first
    permuted = _permutations(case, before_first, first)
    if permuted is not None:
        yield from permuted
        return
    while True:
        with _generator_state(state) as moved:
            batches = next(epochs)
        state = moved["state"]
        yield [_to_numpy(batch) for batch in batches]


@contextlib.contextmanager
def _generator_state(state: Any) -> Iterator[dict[str, Any]]:
    outside = np.random.get_state()
    np.random.set_state(state)
    moved: dict[str, Any] = {}
    try:
        yield moved
    finally:
        moved["state"] = np.random.get_state()
        np.random.set_state(outside)


def _permutations(case: Case, state: Any, first: list[Any]) -> Iterator[list[Any]] | None:
    """The epochs after ``first``, computed from numpy's generator ``state`` (as it was before
    ``first`` was drawn) as Keras's array adapter computes them; None where the case is not plain
    arrays shuffled whole without weights, or where the computed first epoch is not ``first``,
    bit for bit and dtype for dtype (the adapter converts float64 arrays to floatx)."""
    x, y = case.fit_x, case.fit_y
    if not (isinstance(x, np.ndarray) and isinstance(y, np.ndarray)) or case.shuffle is not True:
        return None
    if case.sample_weight is not None or case.class_weight is not None:
        return None
    if not all(isinstance(batch, tuple) and len(batch) == 2 for batch in first):
        return None
    xs, ys = x.astype(first[0][0].dtype), y.astype(first[0][1].dtype)
    generator = np.random.RandomState()
    generator.set_state(state)
    size, rows = case.effective_batch_size, len(x)

    def epoch() -> list[Any]:
        order = generator.permutation(rows)
        return [(xs[order[i : i + size]], ys[order[i : i + size]]) for i in range(0, rows, size)]

    computed = epoch()
    same = len(computed) == len(first) and all(
        all(p.dtype == q.dtype and np.array_equal(p, q) for p, q in zip(a, b))
        for a, b in zip(computed, first)
    )
    if not same:
        return None

    def following() -> Iterator[list[Any]]:
        while True:
            yield epoch()

    return following()


def _to_numpy(batch: Any) -> Any:
    """A batch as numpy arrays (the loop stacks them; PyTorch hands tensors)."""
    if isinstance(batch, (tuple, list)):
        return type(batch)(_to_numpy(part) for part in batch)
    if isinstance(batch, dict):
        return {key: _to_numpy(value) for key, value in batch.items()}
    if batch is None:
        return None
    if hasattr(batch, "detach"):
        from .portable_probes import tensor_to_numpy

        return tensor_to_numpy(batch)
    return np.asarray(batch)
