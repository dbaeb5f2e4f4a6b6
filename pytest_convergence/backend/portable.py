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
        iterator = self._iterator(
            x=case.fit_x,
            y=case.fit_y,
            batch_size=case.effective_batch_size,
            shuffle=case.shuffle,
            steps_per_execution=1,
            **_weights(case),
        )
        symbolic_build = getattr(model, "_maybe_symbolic_build", None)
        if build and symbolic_build is not None:
            symbolic_build(iterator=iterator)
        drawn_by_keras = _own_generator(self._each_epoch(iterator))
        permuted = _permutations(case)
        if permuted is None:
            return drawn_by_keras
        return _checked_once(permuted, drawn_by_keras)

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


def _own_generator(epochs: Iterator[list[Any]]) -> Iterator[list[Any]]:
    """Each epoch drawn from a copy of numpy's global generator as it was when drawing began, the
    global one left untouched: ``fit`` later draws the same permutations from it."""
    state = np.random.get_state()
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


def _permutations(case: Case) -> Callable[[Any, Any], Iterator[list[Any]]] | None:
    """The epochs Keras's array adapter draws, computed as it computes them (one
    ``np.random.permutation`` an epoch, sliced into batches) from a copy of numpy's generator:
    drawing 100,000 epochs through the iterator costs minutes, this a fraction of a second. Only
    for plain arrays shuffled whole, without weights; checked against Keras on the first epoch.
    Returns a maker taking the dtypes the adapter gives x and y (it converts float64 to floatx)."""
    x, y = case.fit_x, case.fit_y
    if not (isinstance(x, np.ndarray) and isinstance(y, np.ndarray)) or case.shuffle is not True:
        return None
    if case.sample_weight is not None or case.class_weight is not None:
        return None
    generator = np.random.RandomState()
    generator.set_state(np.random.get_state())  # np.random.permutation's own stream, from here

    def epochs(x_dtype: Any, y_dtype: Any) -> Iterator[list[Any]]:
        size, rows = case.effective_batch_size, len(x)
        xs, ys = x.astype(x_dtype), y.astype(y_dtype)
        while True:
            order = generator.permutation(rows)
            yield [(xs[order[i : i + size]], ys[order[i : i + size]]) for i in range(0, rows, size)]

    return epochs


def _checked_once(
    computed: Callable[[Any, Any], Iterator[list[Any]]], by_keras: Iterator[list[Any]]
) -> Iterator[list[Any]]:
    """``computed``'s epochs where its first equals Keras's own first epoch, bit for bit and dtype
    for dtype (else Keras's, drawn one by one)."""
    expected = next(by_keras)
    x_dtype, y_dtype = (np.asarray(part).dtype for part in expected[0][:2])
    permuted = computed(x_dtype, y_dtype)
    first = next(permuted)
    same = len(first) == len(expected) and all(
        len(a) == len(b)
        and all(np.asarray(p).dtype == np.asarray(q).dtype and np.array_equal(p, q) for p, q in zip(a, b))
        for a, b in zip(first, expected)
    )
    yield expected
    yield from permuted if same else by_keras


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
