"""The ``loop`` engine on JAX and on PyTorch, each built the way its backend is fast.

Both call the model's own ``train_step`` on the batches ``fit`` draws, reset the metrics at each
epoch's start as ``fit`` does, and record what the TensorFlow loop records (:mod:`.loop`): the
per-step loss, logs, each weight's largest change and checksum, whether its gradient was 0.
They share :class:`~.loop.TrainingLoop`'s driving (stretches, pauses, callbacks, validation
between epochs) and differ only in how a stretch of steps runs:

JAX
    Keras's stateless ``train_step`` under one ``jax.jit`` with ``lax.scan`` over a chunk of
    steps (what Keras's own ``steps_per_execution`` does), the state read from the model's
    variables before a stretch and written back after it. Steps whose batch has another shape
    (an epoch's smaller last batch) run one at a time through the same step.
PyTorch
    ``train_step`` in a Python loop, without ``fit``'s per-batch callbacks and logs handling;
    the gradients are read where ``train_step`` leaves them (``variable.value.grad``).

Measured bit-identical to each backend's ``fit`` on the catalogue's kinds of runs
(tests/e2e/test_backends.py); ``xla`` is JAX's ``loop`` itself (everything JAX runs is
compiled by XLA) and is refused on PyTorch.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

import numpy as np

from ..case import Case
from .capture import LossCapture
from .keras_adapter import Flavour
from .loop import TrainingLoop

CHUNK_SIZES = (1024, 128, 16, 1)
"""Steps one compiled JAX call scans: a stretch runs in calls of these sizes, largest first, each
size compiled once (a call of 1,024 small steps takes milliseconds, so a Ctrl-C waits no longer)."""
ONE_STEP = (1,)
"""The calls of a run whose weights are float16 on a CPU without float16 arithmetic: measured on
an AMD EPYC (no AVX512-FP16), XLA's scan of several float16 steps trained otherwise than fit's
jitted step from step 2 on (seed case), while a call of one step was fit's bit for bit. About
0.1 ms a step more; an Intel CPU with AVX512-FP16 scans float16 exactly."""


def chunk_sizes(weight_dtypes: set[str]) -> tuple[int, ...]:
    """The scan lengths that train as ``fit`` does here (:data:`ONE_STEP`, :data:`CHUNK_SIZES`)."""
    if "float16" not in weight_dtypes:
        return CHUNK_SIZES
    from ..fingerprint import cpu_description

    native = "avx512_fp16" in cpu_description().get("isa", [])
    return CHUNK_SIZES if native else ONE_STEP


class PortablePlan:
    """Every step's batch (numpy), as ``fit`` draws them: one epoch repeated where every epoch is
    the same (no shuffling), else each epoch drawn."""

    def __init__(self, epochs: list[list[Any]], repeat: bool, case: Case) -> None:
        self.epochs = epochs
        self.repeat = repeat
        self.per_epoch = case.batches_per_epoch
        self.first = epochs[0][0]

    def batch(self, step: int) -> Any:
        epoch, within = divmod(step, self.per_epoch)
        drawn = self.epochs[0 if self.repeat else epoch]
        return drawn[within]


def plan_portable(case: Case, epochs_drawn: Any) -> PortablePlan:
    """Draw the batches of every step (the first epoch only, where epochs cannot differ)."""
    repeat = not case.shuffle
    if case.data_kind != "arrays":
        repeat = False
    count = 1 if repeat else case.total_epochs
    return PortablePlan([next(epochs_drawn) for _ in range(count)], repeat, case)


def _signature(batch: Any) -> Any:
    """What a compiled step depends on in a batch: its structure, shapes and dtypes."""
    if isinstance(batch, np.ndarray):
        return (batch.shape, batch.dtype)
    if isinstance(batch, (tuple, list)):
        return tuple(_signature(part) for part in batch)
    if isinstance(batch, dict):
        return tuple((key, _signature(value)) for key, value in sorted(batch.items()))
    return None if batch is None else (np.shape(batch), np.asarray(batch).dtype)


class JaxLoop(TrainingLoop):
    """``train_step`` scanned under ``jax.jit``."""

    def __init__(
        self,
        flavour: Flavour,
        model: Any,
        case: Case,
        dtype: str,
        capture: LossCapture,
        *,
        trace_weights: int = 0,
    ) -> None:
        super().__init__(
            flavour, model, case, dtype, capture, jit=False, trace_weights=trace_weights, gradients=False
        )
        self.grads: list[Any] = []
        optimizer = model.optimizer
        original = optimizer.stateless_apply

        def stateless_apply(optimizer_variables: Any, grads: Any, trainable_variables: Any) -> Any:
            self.grads.append(grads)
            return original(optimizer_variables, grads, trainable_variables)

        optimizer.stateless_apply = stateless_apply
        self._single: dict[tuple[Any, ...], Any] = {}
        self._plan: PortablePlan | None = None
        self._chunk_signature: tuple[Any, ...] | None = None
        self._reset_metrics: list[Any] = []
        self._compiled: dict[int, Any] = {}
        self._signatures: dict[int, tuple[Any, ...]] = {}
        self.chunk_sizes = chunk_sizes({str(w.dtype) for w in model.trainable_weights})

    # ------------------------------------------------------------------ compiling
    def compile(self, plan: Any) -> None:

        self._plan = plan
        model = self.model
        _build_as_fit(model, plan)
        model.reset_metrics()
        self._reset_metrics = [v.value for v in model.metrics_variables]
        self._chunk_signature = _signature(plan.first)
        try:
            self._loop = self._make_chunk()
            self._chunk(max(size for size in self.chunk_sizes if size <= self.case.total_steps))
        except Exception as error:
            if isinstance(error, self.flavour.runtime_errors()):  # type: ignore[attr-defined]
                raise
            raise self._cannot_train(error) from None

    def _chunk(self, size: int) -> Any:
        """The loop compiled for ``size`` steps of the plan's usual batch shape (once per size)."""
        import jax

        if size not in self._compiled:
            assert self._plan is not None and self._loop is not None
            batch = self._stack([self._plan.first] * size)
            flags = np.zeros(size, bool)
            self._compiled[size] = jax.jit(self._loop).lower(self._state(), batch, flags).compile()
        return self._compiled[size]

    def _signature_of(self, batch: Any) -> tuple[Any, ...]:
        key = id(batch)  # the plan holds every batch, so an id is not reused while it lives
        if key not in self._signatures:
            self._signatures[key] = _signature(batch)
        return self._signatures[key]

    def _state(self) -> tuple[list[Any], ...]:
        model = self.model
        return (
            [v.value for v in model.trainable_variables],
            [v.value for v in model.non_trainable_variables],
            [v.value for v in model.optimizer.variables],
            [v.value for v in model.metrics_variables],
        )

    def _write_back(self, state: tuple[list[Any], ...]) -> None:
        model = self.model
        groups = (
            model.trainable_variables,
            model.non_trainable_variables,
            model.optimizer.variables,
            model.metrics_variables,
        )
        for variables, values in zip(groups, state):
            for variable, value in zip(variables, values):
                variable.assign(value)

    def _stack(self, batches: list[Any]) -> Any:
        import jax

        return jax.tree_util.tree_map(
            lambda *leaves: np.stack([np.asarray(leaf) for leaf in leaves]), *batches
        )

    def _one_step(self) -> Callable[..., Any]:
        """``(state, batch, reset) -> (state, outputs)``: one ``train_step`` and what is recorded."""
        import jax
        import jax.numpy as jnp

        model = self.model
        captured = self.capture.tensors
        grads_seen = self.grads
        reset_values = self._reset_metrics
        trace_weights = self.trace_weights
        wide = jnp.float64 if jax.config.read("jax_enable_x64") else jnp.float32

        def step(state: Any, batch: Any, reset: Any) -> tuple[Any, tuple[Any, ...]]:
            trainable, non_trainable, optimizer_vars, metrics = state
            metrics = [jnp.where(reset, start, value) for start, value in zip(reset_values, metrics)]
            logs, new_state = model.train_step((trainable, non_trainable, optimizer_vars, metrics), batch)
            flat = self._flat_logs(logs)
            if not self.log_names:
                self.log_names = sorted(flat)
            loss = captured[-1].astype(wide)
            values = jnp.stack([jnp.asarray(flat[name]).astype(wide) for name in self.log_names])
            new_trainable = new_state[0]
            changes = [
                jnp.max(jnp.abs(n.astype(wide) - o.astype(wide)), initial=0.0)
                for n, o in zip(new_trainable, trainable)
            ]
            changes = [
                jnp.where(jnp.any(n != o) & (c == 0), jnp.asarray(np.finfo(np.float32).tiny, wide), c)
                for c, n, o in zip(changes, new_trainable, trainable)
            ]
            tensor_update = jnp.stack(changes) if changes else jnp.zeros((0,), wide)
            update = jnp.max(tensor_update, initial=0.0) if changes else jnp.asarray(0.0, wide)
            checksum = (
                jnp.stack([jnp.sum(n.astype(wide)) for n in new_trainable])
                if changes
                else jnp.zeros((0,), wide)
            )
            grads = grads_seen[-1] if grads_seen else None
            zero = (
                jnp.stack([jnp.all(g == 0).astype(wide) for g in grads])
                if grads is not None and len(grads) == len(new_trainable)
                else jnp.full((len(new_trainable),), -1.0, wide)
            )
            if trace_weights:
                flat_weights = jnp.concatenate([n.astype(wide).reshape(-1) for n in new_trainable])[
                    :trace_weights
                ]
            else:
                flat_weights = jnp.zeros((0,), wide)
            return new_state, (loss, update, values, flat_weights, tensor_update, checksum, zero)

        return step

    def _make_chunk(self) -> Callable[..., Any]:
        import jax

        step = self._one_step()

        def chunk(state: Any, batches: Any, resets: Any) -> Any:
            def body(carried: Any, inputs: Any) -> Any:
                batch, reset = inputs
                return step(carried, batch, reset)

            return jax.lax.scan(body, state, (batches, resets))

        return chunk

    def _single_step(self, signature: tuple[Any, ...]) -> Any:
        import jax

        if signature not in self._single:
            self._single[signature] = jax.jit(self._one_step())
        return self._single[signature]

    # ------------------------------------------------------------------ running
    def _run_steps(self, start: int, stop: int) -> None:
        assert self._plan is not None
        plan = self._plan
        collected = self._collected
        per_epoch = self.case.batches_per_epoch
        usual = self._chunk_signature
        stretches = self._stretches_of(start, stop)
        state = self._state()
        for first, last in stretches:
            step = first
            while step < last:
                self._interrupt.raise_if_received()
                batch = plan.batch(step)
                signature = self._signature_of(batch)
                if signature != usual:  # an epoch's smaller last batch: one step on its own
                    state, outputs = self._single_step(signature)(state, batch, step % per_epoch == 0)
                    self._keep(collected, [np.asarray(o)[None] for o in outputs])
                    step += 1
                    continue
                end = step + 1
                while (
                    end < last
                    and end - step < self.chunk_sizes[0]
                    and self._signature_of(plan.batch(end)) == usual
                ):
                    end += 1
                size = max(size for size in self.chunk_sizes if size <= end - step)
                steps = range(step, step + size)
                batches = self._stack([plan.batch(s) for s in steps])
                resets = np.array([s % per_epoch == 0 for s in steps])
                state, outputs = self._chunk(size)(state, batches, resets)
                self._keep(collected, [np.asarray(o) for o in outputs])
                step += size
            self._write_back(state)
            if last < stop and last in self._pending and self._on_pause is not None:
                self._on_pause(last)
                state = self._state()
        self._interrupt.raise_if_received()

    def _stretches_of(self, start: int, stop: int) -> list[tuple[int, int]]:
        """``[start, stop)`` cut at the pauses (a perturbation's nudges), the first nudge done."""
        if start in self._pending and self._on_pause is not None:
            self._on_pause(start)
        cuts = [p for p in self._pending if start < p < stop]
        bounds = [start, *cuts, stop]
        return list(itertools.pairwise(bounds))

    @staticmethod
    def _keep(collected: Any, outputs: list[np.ndarray]) -> None:
        loss, update, logs, trace, tensor_update, checksum, zero = outputs
        collected.losses.append(loss.astype(np.float64))
        collected.updates.append(update.astype(np.float64))
        collected.step_logs.append(logs.astype(np.float64))
        collected.traces.append(trace.astype(np.float64))
        collected.per_tensor[0].append(tensor_update.astype(np.float64))
        collected.per_tensor[1].append(checksum.astype(np.float64))
        collected.per_tensor[2].append(zero.astype(np.float64))


class TorchLoop(TrainingLoop):
    """``train_step`` in a plain Python loop (PyTorch runs eagerly; ``fit`` adds its callbacks)."""

    def __init__(
        self,
        flavour: Flavour,
        model: Any,
        case: Case,
        dtype: str,
        capture: LossCapture,
        *,
        trace_weights: int = 0,
    ) -> None:
        super().__init__(
            flavour, model, case, dtype, capture, jit=False, trace_weights=trace_weights, gradients=False
        )
        self._plan: PortablePlan | None = None
        self._batches: dict[int, Any] = {}

    def compile(self, plan: Any) -> None:
        self._plan = plan
        self._loop = self._steps
        _build_as_fit(self.model, plan)
        self.model.reset_metrics()
        names = self.flavour.metric_names_if_built(self.model)
        if names is not None:
            self.log_names = names

    def _tensor_batch(self, step: int) -> Any:
        """The step's batch as tensors on the model's device, converted once per drawn batch."""
        from keras.src.backend.torch.core import convert_to_tensor

        assert self._plan is not None
        batch = self._plan.batch(step)
        key = id(batch)
        if key not in self._batches:
            self._batches[key] = _map(convert_to_tensor, batch)
        return self._batches[key]

    def _steps(self, start: int, stop: int) -> None:
        import torch

        model = self.model
        collected = self._collected
        per_epoch = self.case.batches_per_epoch
        weights = list(model.trainable_weights)
        for step in range(start, stop):
            if step % per_epoch == 0:
                model.reset_metrics()
                model.train()
            before = [w.value.detach().clone() for w in weights]
            logs = self._flat_logs(model.train_step(self._tensor_batch(step)))
            if not self.log_names:
                self.log_names = sorted(logs)
            with torch.no_grad():
                after = [w.value.detach() for w in weights]
                changes = []
                for new, old in zip(after, before):
                    change = float(torch.max(torch.abs(new.double() - old.double()))) if new.numel() else 0.0
                    if change == 0.0 and not torch.equal(new, old):  # NaNs, or -0.0 against 0.0
                        change = float("nan") if torch.isnan(new).any() else np.finfo(np.float32).tiny
                    changes.append(change)
                grads = [w.value.grad for w in weights]
                zero = [(-1.0 if g is None else float(bool(torch.all(g == 0)))) for g in grads]
                checksum = [float(new.double().sum()) for new in after]
                flat = (
                    torch.cat([new.double().reshape(-1) for new in after])[: self.trace_weights]
                    if after
                    else None
                )
            loss = self.capture.tensors[-1]
            collected.losses.append(np.array([float(loss.detach().double())]))
            collected.updates.append(np.array([max(changes, default=0.0)]))
            collected.step_logs.append(np.array([[float(logs[name]) for name in self.log_names]], np.float64))
            collected.traces.append(
                flat.cpu().numpy()[None] if self.trace_weights and flat is not None else np.zeros((1, 0))
            )
            collected.per_tensor[0].append(np.array([changes], np.float64))
            collected.per_tensor[1].append(np.array([checksum], np.float64))
            collected.per_tensor[2].append(np.array([zero], np.float64))
            del self.capture.tensors[:-1]

    def _run_steps(self, start: int, stop: int) -> None:
        bounds = [start, *[p for p in self._pending if start < p < stop], stop]
        for first, last in itertools.pairwise(bounds):
            if first in self._pending and self._on_pause is not None:
                self._on_pause(first)
            for part_first, part_last in self._pace.parts(first, last, self._interrupt):
                self._steps(part_first, part_last)


def _build_as_fit(model: Any, plan: PortablePlan) -> None:
    """The optimizer's and the compiled metrics' variables, made as ``fit`` makes them before its
    first step (``_symbolic_build`` from a batch: shapes only, nothing computed)."""
    build = getattr(model, "_symbolic_build", None)
    if build is not None and not (getattr(model.optimizer, "built", True) and model.compiled):
        build(data_batch=plan.first)
    if not getattr(model.optimizer, "built", True):
        model.optimizer.build(model.trainable_variables)


def _map(function: Callable[[Any], Any], batch: Any) -> Any:
    if isinstance(batch, (tuple, list)):
        return type(batch)(_map(function, part) for part in batch)
    if isinstance(batch, dict):
        return {key: _map(function, value) for key, value in batch.items()}
    return None if batch is None else function(batch)


def portable_loop(
    flavour: Flavour, model: Any, case: Case, dtype: str, capture: LossCapture, *, trace_weights: int = 0
) -> TrainingLoop:
    """The ``loop`` engine of the backend Keras runs on here."""
    loop = JaxLoop if flavour.backend() == "jax" else TorchLoop
    return loop(flavour, model, case, dtype, capture, trace_weights=trace_weights)
