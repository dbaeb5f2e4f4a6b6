"""One request to train, with the session's extra checks: repeats for determinism, calibration.

Kept out of the pytest plugin so it can be used and tested without pytest.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..anatomy import Anatomy
from ..case import Case
from ..diagnosis.fact_check import DiagnosisFactWarning, check_facts
from ..errors import NotDeterministicError
from ..perturb import Perturbation
from ..replay_plan import Replay
from ..run import Run
from ..snapshot.calibrate import Calibration, ForeignRun, calibrate, calibration_perturbations


@dataclass(frozen=True)
class AnatomyOnly:
    """What a replay that only takes steps apart (nothing set back) gives instead of a run: its
    anatomy is saved, and the test says so instead of judging a run (the plugin skips it)."""

    case: str
    dtype: str
    last_step: int
    path: Path

    @property
    def message(self) -> str:
        return f"replay: steps 1-{self.last_step} of {self.case} [{self.dtype}] taken apart into {self.path}"


@dataclass(frozen=True)
class TrainingRequest:
    repeat: int = 1
    calibrate: int = 0
    op_determinism: bool = False
    simulate: int | None = None
    """Train as another machine might: the seed of a :class:`~.perturb.Perturbation`."""
    anatomy_steps: int = 0
    """Take this many first steps apart (:mod:`.anatomy`), for the results file; 0: none."""
    foreign: tuple[ForeignRun, ...] = ()
    """The same case and dtype trained with other kernels or on other machines, for calibration
    (``--convergence-calibrate-with``)."""
    variant: str = "native"
    """The kernel variant this process trains with (``--convergence-kernels``)."""
    replay: Replay | None = None
    """A gate's replay of this run (:mod:`.replay`): set back what it names, take apart every
    step up to its ``last_step`` and save that beside the results."""
    backend: str | None = None
    """The Keras backend to train on (:mod:`..backends`); None: this process's."""


def first_difference(first: Run, again: Run) -> str | None:
    """Where two runs of the same case part, in words; None if they are bit-identical."""
    a, b = first.loss, again.loss
    if a.shape != b.shape:
        return f"{a.size} steps against {b.size}"
    differs = ~((a == b) | (np.isnan(a) & np.isnan(b)))
    if differs.any():
        step = int(np.argmax(differs))
        return f"the loss differs from step {step + 1}: {a[step]!r} against {b[step]!r}"
    for name, weights in first.final_weights.items():
        other = again.final_weights.get(name)
        if other is None or not np.array_equal(weights, other, equal_nan=True):
            return f"the final weights {name} differ although every loss agrees"
    return None


def train_with_checks(
    case: Case,
    dtype: str,
    engine: str,
    request: TrainingRequest,
    *,
    current_rtol: Callable[[Run], tuple[float, float]],
) -> tuple[Run, Calibration | None] | AnatomyOnly:
    """Train ``case``; with ``repeat`` > 1 demand bit-identical reruns; with ``calibrate`` >= 2
    measure the spread of perturbed reruns. ``current_rtol`` gives (rtol, miss_fraction) of a run.

    A replay that sets nothing back trains no run: its steps are taken apart and saved, and what
    was saved is returned (:class:`AnatomyOnly`) instead of the run and its calibration."""
    from ..backend import enable_op_determinism, rerun, train

    if request.replay is not None:
        if not request.replay.set_back:
            return _take_apart_only(case, dtype, engine, request.replay)
        case = request.replay.apply(case)
    if request.op_determinism:
        enable_op_determinism()
    perturbation = None if request.simulate is None else Perturbation(request.simulate)
    backend = request.backend
    run = train(case, dtype, engine, perturbation=perturbation, backend=backend)
    wall_times, cpu_times = [run.timing.wall_time], [run.timing.cpu_time]
    repeats = [run.timing]  # their peak memories too (issue 25)
    for attempt in range(2, request.repeat + 1):
        # built and traced anew: a repeat checks the whole training, a model whose build draws
        # other weights each time included (a calibration's reruns rewind the traced loop)
        again = train(case, dtype, engine, perturbation=perturbation, backend=backend)
        wall_times.append(again.timing.wall_time)
        cpu_times.append(again.timing.cpu_time)
        repeats.append(again.timing)
        difference = first_difference(run, again)
        if difference is not None:
            raise NotDeterministicError(
                f"{case.name} [{dtype}, {engine} engine] is not deterministic: training {attempt} of "
                f"{request.repeat}: {difference}. Same seed, version and machine should give "
                "bit-identical histories: look for ops without a deterministic kernel "
                "(tf.config.experimental.enable_op_determinism() makes TensorFlow raise on them)"
            )
    # the gate judges speed on their spread
    run.timing.wall_times, run.timing.cpu_times = wall_times, cpu_times
    run.timing.collect_memory(repeats)
    with run.timing.phase("diagnosis"):
        problems = check_facts(run.history, run.diagnosis, dtype=run.dtype)
    if problems:
        warnings.warn(
            DiagnosisFactWarning(
                f"{case.name} [{dtype}, {engine} engine]: the diagnosis states what its history does not "
                f"show (a pytest-convergence bug, please report it): {'; '.join(problems)}"
            ),
            stacklevel=2,
        )
    if perturbation is not None:
        run.perturbation = perturbation.describe()
    else:
        with run.timing.phase("anatomy"):
            _take_apart(run, case, dtype, engine, request)
    calibration = None
    if request.calibrate >= 2 or request.foreign:
        others = [rerun(run, case, p) for p in calibration_perturbations(max(request.calibrate - 1, 0))]
        rtol, miss_fraction = current_rtol(run)
        calibration = calibrate(
            run,
            others,
            current_rtol=rtol,
            miss_fraction=miss_fraction,
            foreign=request.foreign,
            variant=request.variant,
        )
        run.calibrated_tolerance = calibration.tolerance().to_text()
        run.calibration_adds = not others
    run.in_process.training = None  # no rerun after this: its traced loop need not live on
    return run, calibration


def _take_apart(run: Run, case: Case, dtype: str, engine: str, request: TrainingRequest) -> None:
    """Record the run's anatomy (its first steps; a replay's, every step up to its last) on a
    model built again, checked against the run's own losses."""
    from ..backend.anatomy import record_anatomy
    from ..backend.elsewhere import this_process

    if run.backend != this_process():  # its model lives in the other backend's process
        if request.anatomy_steps > 0 or request.replay is not None:
            run.stages_unavailable = (
                "step anatomy is not available for a run trained in another backend's process; run "
                f"that backend alone (KERAS_BACKEND={run.backend} pytest --convergence) for it"
            )
        return
    replay, plan = request.replay, run.in_process.batch_plan
    if replay is not None:
        run.set_back = dict(replay.set_back)
        last = replay.last_step or case.total_steps
        anatomy = record_anatomy(case, dtype, engine, 0, last, keep_initial=True, plan=plan)
        anatomy.check_against(run.loss)
        anatomy.save(replay.anatomy_path(case.name, dtype))
        run.anatomy = _first_steps(anatomy, max(request.anatomy_steps, 1))
    elif request.anatomy_steps > 0:
        run.anatomy = record_anatomy(case, dtype, engine, 0, request.anatomy_steps, plan=plan)
        run.anatomy.check_against(run.loss)


def _first_steps(anatomy: Anatomy, steps: int) -> Anatomy:
    from dataclasses import replace

    from ..anatomy import ROWS, SCALARS

    cut = {name: getattr(anatomy, name)[:steps] for name in (*SCALARS, *ROWS, "layer_outputs", "layer_sets")}
    return replace(anatomy, initial_weights=[], **cut)


def _take_apart_only(case: Case, dtype: str, engine: str, replay: Replay) -> AnatomyOnly:
    """Take apart every step up to the replay's last on the case cut to that many steps (its
    first steps are the whole run's: same seed, same batches), save it and say where.

    Nothing is set back, so the run would be the results file's again: training it to its end
    only to read its first steps would cost a whole session. The gate checks the anatomy's
    losses against the results file's checkpoints (:meth:`..anatomy.Anatomy.check_checkpoints`).
    """
    from ..backend.anatomy import record_anatomy

    last = min(replay.last_step or case.total_steps, case.total_steps)
    anatomy = record_anatomy(case.with_(steps=last, epochs=None), dtype, engine, 0, last, keep_initial=True)
    path = replay.anatomy_path(case.name, dtype)
    anatomy.save(path)
    return AnatomyOnly(case.name, dtype, last, path)
