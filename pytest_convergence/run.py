"""A run: one training of one case in one dtype with one engine, and what it recorded.

A run is who trained (case, dtype, engine, seed), what the training did (its :class:`History`,
which the diagnosis reads), how long it took (:class:`Timing`) and what it ran on (versions,
what was set back or simulated). Everything here is numpy and plain Python, so the diagnosis,
the assertions, snapshots and reports work on a run without TensorFlow (and would work for
another framework unchanged).
"""

from __future__ import annotations

import functools
import math
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from .history import History

if TYPE_CHECKING:
    from .anatomy import Anatomy
    from .case import Expectation
    from .diagnosis.margins import Margin
    from .diagnosis.rules import Diagnosis


@dataclass
class Timing:
    """How long a run took: wall clock and the process's CPU time."""

    wall_time: float
    """Seconds of training alone (the executions, not the tracing)."""
    trace_time: float = 0.0
    """Seconds of tracing and compiling before the training."""
    cpu_time: float = math.nan
    """The process's CPU seconds while training (all threads): the gate's speed measure."""
    wall_times: list[float] = field(default_factory=list)
    """Every timing of this run when it was trained more than once; the gate uses the fastest."""
    cpu_times: list[float] = field(default_factory=list)
    phases: dict[str, float] = field(default_factory=dict)
    """Seconds of each phase of the run, end to end (:data:`PHASES`): where a test's time goes
    besides the training, so a slow probe or snapshot shows as its own number."""

    def phase(self, name: str) -> PhaseTimer:
        """``with timing.phase("probes"): ...`` adds the block's wall-clock seconds to that phase."""
        return PhaseTimer(self.phases, name)

    @property
    def other_time(self) -> float:
        """Seconds outside building, tracing and training: what the plugin adds to a run."""
        return sum(seconds for name, seconds in self.phases.items() if name not in TRAINING_PHASES)

    # ---- peak memory (issue 25): measured by backend/memory.py around the executions; judged by
    # gate/memory.py as speed is. A block of its own: the fields above are the timings' ----
    host_peak_bytes: float = math.nan
    """This process's peak resident memory while training (bytes); NaN: not measured."""
    host_growth_bytes: float = math.nan
    """The peak above the memory resident when training began: what the training itself took
    (the process's baseline, the framework imported, dominates a small model's peak)."""
    memory_method: str = ""
    """How the host peak was measured (``clear_refs``, ``sampled``, ``ru_maxrss``: :mod:`.backend.memory`)."""
    device_peak_bytes: float | None = None
    """The GPU's peak bytes allocated while training; None where no GPU trained it."""
    device_memory_method: str = ""
    host_peaks: list[float] = field(default_factory=list)
    """Every training's host peak when it was trained more than once, as ``cpu_times``."""
    host_growths: list[float] = field(default_factory=list)
    device_peaks: list[float] = field(default_factory=list)

    def collect_memory(self, repeats: list[Timing]) -> None:
        """Keep the peaks of every repeated training (this one's first): the gate's spread."""
        self.host_peaks = [t.host_peak_bytes for t in repeats if math.isfinite(t.host_peak_bytes)]
        self.host_growths = [t.host_growth_bytes for t in repeats if math.isfinite(t.host_growth_bytes)]
        self.device_peaks = [t.device_peak_bytes for t in repeats if t.device_peak_bytes is not None]

    # ---- end of peak memory ----


PHASES = ("build", "trace", "train", "validation", "probes", "diagnosis", "snapshot", "anatomy", "results")
"""A run's phases in the order they happen. ``validation`` is the validation data evaluated
between epochs (in-graph validation is part of ``train``); ``probes`` the evidence read from the
trained model; ``diagnosis`` the diagnosis and its fact check; ``results`` the run's record."""
TRAINING_PHASES = ("build", "trace", "train")
"""What any training costs, with or without this plugin; the rest is ``other``."""


class PhaseTimer:
    """Adds the wall-clock seconds of a ``with`` block to one phase (re-entered: summed)."""

    def __init__(self, phases: dict[str, float], name: str) -> None:
        self._phases, self._name, self._start = phases, name, 0.0

    def __enter__(self) -> PhaseTimer:
        self._start = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        elapsed = time.perf_counter() - self._start
        self._phases[self._name] = self._phases.get(self._name, 0.0) + elapsed


@dataclass
class InProcess:
    """What a run holds in this process only: never stored in snapshots or results."""

    model: Any = None
    """The trained Keras model: ``run.model.evaluate(x, y)`` or ``run.model.predict(x)``."""
    batch_plan: Any = None
    """The batches it trained on, drawn once: its anatomy reuses them, as drawing 100,000 epochs
    again would cost Keras 2 as much as the training."""
    callbacks: Any = None
    """The run's own callback objects, made fresh for it from the case's (their state after training)."""
    training: Any = None
    """What trained it (:class:`.backend.engine.Training`): a rerun reuses its traced loop."""
    perturbation: Any = None
    """The perturbation it trained under, if any."""


@dataclass(eq=False)
class Run:
    """The record of one training: identity, :class:`History`, :class:`Timing` and provenance."""

    # who trained
    case: str
    dtype: str
    engine: str
    seed: int
    # what the training did (what the diagnosis reads)
    history: History
    # how long it took
    timing: Timing
    # what it ran on and how
    versions: dict[str, str] = field(default_factory=dict)
    optimizer_ran: str = ""
    """The optimizer's class with its module path and its config (:func:`probes.what_ran`)."""
    loss_ran: str = ""
    """The loss's class (each output's) with its module path and its config."""
    perturbation: str = ""
    """``simulate seed 1`` when trained as another machine might (``--convergence-simulate-machine``)."""
    set_back: dict[str, str] = field(default_factory=dict)
    """What a gate's replay set back to the old version's (``loss_dtype``, ``initial_weights``...)."""
    calibrated_tolerance: str = ""
    """The tolerance calibration measured (this session's ``--convergence-calibrate``, or the one
    the run's snapshot carries), as :meth:`Tolerance.to_text`; widens the configured one."""
    calibration_adds: bool = False
    """The calibration measured foreign runs only (``--convergence-calibrate-with`` alone): it
    widens the snapshot's stored calibration instead of replacing it."""
    # what the case asks of it
    expectation: Expectation | None = None
    snapshot_tolerance: Any = None
    # for the gate only
    anatomy: Anatomy | None = None
    """Its first steps taken apart (:mod:`.anatomy`), when the session writes a results file:
    what the gate compares to name the first stage of a step that differs between versions."""
    stages_unavailable: str = ""
    """Why its steps were not taken apart where the session asked (the backend has no step
    anatomy): the gate says it instead of a mechanism."""
    # this process only
    in_process: InProcess = field(default_factory=InProcess, repr=False)

    @property
    def backend(self) -> str:
        """The Keras backend that trained it (TensorFlow for Keras 2 and older results)."""
        return self.versions.get("keras_backend", "tensorflow")

    # ------------------------------------------------------------ the history, as users read it
    @property
    def loss(self) -> np.ndarray:
        return self.history.loss

    @property
    def loss_dtype(self) -> str:
        return self.history.loss_dtype

    @property
    def variable_dtype(self) -> str:
        return self.history.variable_dtype

    @property
    def compute_dtype(self) -> str:
        return self.history.compute_dtype

    @property
    def dtype_mismatch(self) -> str:
        return self.history.dtype_mismatch

    @property
    def weights_changed(self) -> np.ndarray:
        return self.history.weights_changed

    @property
    def update_size(self) -> np.ndarray:
        return self.history.update_size

    @property
    def initial_weights(self) -> dict[str, np.ndarray]:
        return self.history.initial_weights

    @property
    def final_weights(self) -> dict[str, np.ndarray]:
        return self.history.final_weights

    @property
    def final_gradients(self) -> dict[str, np.ndarray]:
        return self.history.final_gradients

    @property
    def epoch_metrics(self) -> dict[str, list[float]]:
        return self.history.epoch_metrics

    @property
    def tensor_names(self) -> list[str]:
        return self.history.tensor_names

    @property
    def tensor_update(self) -> np.ndarray:
        return self.history.tensor_update

    @property
    def tensor_checksum(self) -> np.ndarray:
        return self.history.tensor_checksum

    @property
    def gradient_zero(self) -> np.ndarray:
        return self.history.gradient_zero

    @property
    def output_evidence(self) -> dict[str, Any]:
        return self.history.output_evidence

    @property
    def optimizer(self) -> str:
        return self.history.optimizer

    @property
    def target_loss(self) -> float | None:
        return self.history.target_loss

    @property
    def steps(self) -> int:
        return self.history.steps

    @property
    def judged_on_epochs(self) -> bool:
        return self.history.judged_on_epochs

    @property
    def epoch_loss(self) -> np.ndarray:
        return self.history.epoch_loss

    @property
    def final_loss(self) -> float:
        return self.history.final_loss

    @property
    def final_step_loss(self) -> float:
        return self.history.final_step_loss

    @property
    def final_loss_kind(self) -> str:
        return self.history.final_loss_kind

    def metric(self, name: str) -> float:
        """The final value of a metric History records; see :meth:`History.metric`."""
        return self.history.metric(name)

    @property
    def converged(self) -> bool:
        return self.history.converged

    def steps_to(self, target: float) -> int | None:
        """First step whose loss is at or below ``target``; see :meth:`History.steps_to`."""
        return self.history.steps_to(target)

    @property
    def steps_to_target(self) -> int | None:
        return self.history.steps_to_target

    # ------------------------------------------------------------------- timing and handles
    @property
    def wall_time(self) -> float:
        return self.timing.wall_time

    @property
    def trace_time(self) -> float:
        return self.timing.trace_time

    @property
    def steps_per_second(self) -> float:
        wall_time = self.timing.wall_time
        return self.steps / wall_time if wall_time > 0 else float("inf")

    @property
    def model(self) -> Any:
        """The trained Keras model, in this process only (never stored in snapshots or results)."""
        return self.in_process.model

    # ------------------------------------------------------------------------- the run's own
    @property
    def trained_dtype(self) -> str:
        """The dtype as it trained: ``dtype`` itself, or for a mismatch what the variables and
        computation really were (``float32``, ``mixed_float16``, ``float32/float16``)."""
        history = self.history
        if not history.dtype_mismatch:
            return self.dtype
        from .dtypes import DTYPES

        for name, info in DTYPES.items():
            if (info.variable_dtype, info.compute_dtype) == (history.variable_dtype, history.compute_dtype):
                return name
        return f"{history.variable_dtype}/{history.compute_dtype}"

    @functools.cached_property
    def diagnosis(self) -> Diagnosis:
        from .diagnosis.rules import diagnose

        return diagnose(self.history)

    @property
    def outcome(self) -> str:
        return self.diagnosis.outcome.value

    def outcome_across(self, margin: Margin) -> str:
        """The outcome on the other side of one of this run's decisions (:mod:`.diagnosis.margins`)."""
        from .diagnosis.rules import outcome_across

        return outcome_across(self.history, margin).value

    def expect(self, **expectation: Any) -> Run:
        """Assert what this run must achieve; fails with a message explaining why it did not.

        Keywords are those of :class:`Expectation` (``converged``, ``outcome``,
        ``final_loss_below``, ``steps_to_target_at_most``). Returns the run for chaining.
        """
        __tracebackhide__ = True
        from .case import Expectation

        self._check(Expectation.from_kwargs(expectation))
        return self

    def check_declared_expectation(self) -> Run:
        """Assert the expectation the case declared for this dtype, if any."""
        __tracebackhide__ = True
        if self.expectation is not None:
            self._check(self.expectation)
        return self

    def _check(self, expectation: Expectation) -> None:
        __tracebackhide__ = True
        from .errors import ExpectationFailed

        message = self.expectation_failure(expectation)
        if message:
            raise ExpectationFailed(message)

    def expectation_failure(self, expectation: Expectation | None = None) -> str:
        """Why this run misses ``expectation`` (by default the one its case declared for its
        dtype), as a failed test says it: every unmet part, then the diagnosis. Empty when met."""
        from .diagnosis.expectations import failure_message, unmet

        expectation = expectation if expectation is not None else self.expectation
        if expectation is None:
            return ""
        problems = unmet(self.history, expectation, self.diagnosis)
        if not problems:
            return ""
        return failure_message(
            self.history,
            problems,
            case=self.case,
            dtype=self.dtype,
            engine=self.engine,
            diagnosis=self.diagnosis,
        )

    def __repr__(self) -> str:
        return (
            f"Run(case={self.case!r}, dtype={self.dtype!r}, engine={self.engine!r}, "
            f"steps={self.steps}, final_loss={self.final_loss:.6g}, outcome={self.outcome!r})"
        )
