"""The results file: every run of a session as JSON, the input of the upgrade gate and its report.

Versioned (``schema``), written atomically, and checked on load: a file of another schema version,
truncated JSON or a missing field is reported with the file and the fix, never a KeyError. Files
from several jobs (pytest-xdist workers, CI matrix jobs) merge into one, refusing to mix framework
versions, so the gate can still give one verdict.
"""

from __future__ import annotations

import datetime
import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import ResultsError
from ..files import atomic_write_text
from .progress import SessionProgress, merged

if TYPE_CHECKING:
    from ..run import Run, Timing

SCHEMA_VERSION = 1
FRAMEWORK_KEYS = ("tensorflow", "keras")


def _required() -> list[str]:
    from dataclasses import MISSING, fields

    return [f.name for f in fields(RunRecord) if f.default is MISSING and f.default_factory is MISSING]


@dataclass
class RunRecord:
    """One run as the gate needs it: verdicts, the checkpointed history, speed and versions."""

    case: str
    dtype: str
    engine: str
    test: str
    status: str
    outcome: str
    evidence: dict[str, Any]
    final_loss: float
    steps: int
    target_loss: float | None
    steps_to_target: int | None
    converged: bool | None
    expectation_met: bool | None
    expectation_problems: list[str]
    checkpoint_steps: list[int]
    checkpoint_losses: list[float]
    steps_per_second: float
    wall_times: list[float]
    loss_dtype: str
    variable_dtype: str
    versions: dict[str, str]
    tolerance: str = ""
    final_metrics: dict[str, float] = field(default_factory=dict)
    """Each metric's final epoch value as History records it (``val_accuracy``...)."""
    loss_kind: str = "step"
    """What ``final_loss`` is: ``epoch`` (History's mean of the last epoch) or ``step``."""
    final_weights: dict[str, list[float]] = field(default_factory=dict)
    """Each weight as its snapshot stores it (``dense/kernel (3, 1) values`` or, for large
    tensors, ``... norm mean min max``): the gate compares them with the run's tolerance."""
    snapshot_problems: list[str] = field(default_factory=list)
    """Why the run did not match its snapshot in this session (empty: it matched, or none was asked)."""
    cpu_times: list[float] = field(default_factory=list)
    """The process's CPU seconds of each timing: the gate's speed measure."""
    optimizer_ran: str = ""
    loss_ran: str = ""
    fingerprint: str = ""
    """The id of the machine's fingerprint (:mod:`..fingerprint`)."""
    machine: dict[str, Any] = field(default_factory=dict)
    """The fingerprint of the machine that trained it where that is not the file's ``machine``
    (a file merged from shards on several machines, :func:`merge`); empty: the file's. Written
    only where set, so a one-machine file reads as before; older readers ignore it."""
    perturbation: str = ""
    dtype_mismatch: str = ""
    """Which layers did not train in ``dtype`` (a case with ``allow_dtype_mismatch``); empty if all did."""
    anatomy: dict[str, Any] = field(default_factory=dict)
    """Its first steps taken apart (:meth:`..anatomy.Anatomy.to_json`); empty if not recorded."""
    set_back: dict[str, str] = field(default_factory=dict)
    """What a gate's replay set back to the old version's (empty: an ordinary run)."""
    stages_unavailable: str = ""
    """Why its first steps were not taken apart although the session asked (a run trained in
    another backend's process): the gate says it where it cannot name a mechanism."""
    phases: dict[str, float] = field(default_factory=dict)
    """Seconds of each phase of the run (build, trace, train, probes, snapshot...,
    :data:`..run.PHASES`): where its test's time went; empty in older files."""
    # ---- peak memory (issue 25; :mod:`..backend.memory`), judged by :mod:`.memory` ----
    host_peak_bytes: list[float] = field(default_factory=list)
    """The process's peak resident memory of each timing (bytes); empty: unknown (older files)."""
    host_growth_bytes: list[float] = field(default_factory=list)
    """Each timing's peak above the memory resident when training began: the gate's memory measure."""
    memory_method: str = ""
    """How the host peaks were measured (``clear_refs``, ``sampled``, ``ru_maxrss``)."""
    device_peak_bytes: list[float] = field(default_factory=list)
    """The GPU's peak bytes allocated of each timing; empty where no GPU trained it."""
    device_memory_method: str = ""
    # ---- end of peak memory ----

    @property
    def key(self) -> tuple[str, str]:
        return (self.case, self.dtype)

    @property
    def best_wall_time(self) -> float:
        """The fastest of the repeated timings: what the machine can do when nothing else runs.

        On a shared machine noise only ever adds time, so the minimum is the estimate that
        other processes disturb least (the reasoning of Python's ``timeit``); the median of a
        few runs still carried a busy neighbour's 30-50% into the gate.
        """
        return float(min(self.wall_times)) if self.wall_times else float("nan")

    @property
    def best_steps_per_second(self) -> float:
        best = self.best_wall_time
        return self.steps / best if best and best > 0 else self.steps_per_second

    @classmethod
    def from_run(
        cls,
        run: Run,
        *,
        test: str,
        status: str,
        tolerance: str = "",
        snapshot_problems: Sequence[str] = (),
    ) -> RunRecord:
        from ..diagnosis.expectations import unmet
        from ..snapshot.format import checkpoint_steps

        history, timing = run.history, run.timing
        steps = checkpoint_steps(history.steps)
        problems = unmet(history, run.expectation, run.diagnosis) if run.expectation is not None else []
        evidence = {k: _plain(v) for k, v in run.diagnosis.evidence.items()}
        return cls(
            case=run.case,
            dtype=run.dtype,
            engine=run.engine,
            test=test,
            status=status,
            outcome=run.outcome,
            evidence=evidence,
            final_loss=_plain(history.final_loss),
            steps=history.steps,
            target_loss=history.target_loss,
            steps_to_target=history.steps_to_target,
            converged=None if history.target_loss is None else history.converged,
            expectation_met=None if run.expectation is None else not problems,
            expectation_problems=problems,
            checkpoint_steps=[int(s) for s in steps],
            checkpoint_losses=[_plain(v) for v in history.loss[steps - 1]],
            steps_per_second=run.steps_per_second,
            wall_times=[float(t) for t in (timing.wall_times or [timing.wall_time])],
            loss_dtype=history.loss_dtype,
            variable_dtype=history.variable_dtype,
            versions=dict(run.versions),
            tolerance=tolerance,
            final_metrics={name: _plain(v[-1]) for name, v in history.epoch_metrics.items() if v},
            loss_kind="epoch" if history.judged_on_epochs else "step",
            final_weights=stored_weights(run),
            snapshot_problems=list(snapshot_problems),
            cpu_times=[float(t) for t in (timing.cpu_times or [timing.cpu_time]) if math.isfinite(t)],
            **_memory_fields(timing),
            optimizer_ran=run.optimizer_ran,
            loss_ran=run.loss_ran,
            fingerprint=run.versions.get("fingerprint", ""),
            perturbation=run.perturbation,
            dtype_mismatch=history.dtype_mismatch,
            anatomy=run.anatomy.to_json() if run.anatomy is not None else {},
            set_back=dict(run.set_back),
            stages_unavailable=run.stages_unavailable,
        )


REQUIRED = _required()


def stored_weights(run: Run) -> dict[str, list[float]]:
    """The final weights as the run's snapshot stores them (values, or a summary of a big tensor)."""
    from ..snapshot.format import Trajectory
    from ..tolerance import Tolerance

    weights = Trajectory.from_run(run, Tolerance(rtol=0.0)).weights
    return {f"{name} {kind}": [_plain(v) for v in values] for name, (kind, values) in weights.items()}


def _memory_fields(timing: Timing) -> dict[str, Any]:
    """The run's peak memories as the results file holds them: every repeat's, else its one."""
    host = timing.host_peaks or [timing.host_peak_bytes]
    growth = timing.host_growths or [timing.host_growth_bytes]
    device = timing.device_peaks or ([] if timing.device_peak_bytes is None else [timing.device_peak_bytes])
    return {
        "host_peak_bytes": [float(v) for v in host if math.isfinite(v)],
        "host_growth_bytes": [float(v) for v in growth if math.isfinite(v)],
        "memory_method": timing.memory_method,
        "device_peak_bytes": [float(v) for v in device if math.isfinite(v)],
        "device_memory_method": timing.device_memory_method,
    }


MEMORY_LISTS = ("host_peak_bytes", "host_growth_bytes", "device_peak_bytes")


def _check_memory(path: Path, index: int, raw: dict[str, Any], fix: str) -> None:
    """Peak memories must be lists of byte counts, or the gate would judge garbage (absent: unknown)."""
    for name in MEMORY_LISTS:
        value = raw.get(name, [])
        if not isinstance(value, list) or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v >= 0
            for v in value
        ):
            raise ResultsError(
                f"{path}: runs[{index}].{name} is not a list of byte counts ({value!r:.60}); {fix}"
            )
    for name in ("memory_method", "device_memory_method"):
        if not isinstance(raw.get(name, ""), str):
            raise ResultsError(f"{path}: runs[{index}].{name} is not a string ({raw[name]!r:.60}); {fix}")


@dataclass
class Results:
    """A results file's content."""

    runs: list[RunRecord]
    machine: dict[str, Any] = field(default_factory=lambda: machine_info())
    created: str = field(default_factory=lambda: datetime.datetime.now(datetime.timezone.utc).isoformat())
    schema: int = SCHEMA_VERSION
    session: SessionProgress | None = None
    """Which tests the session planned and which it did not finish (:mod:`.progress`); None in a
    file written before the record existed, or not by a session."""

    @property
    def versions(self) -> dict[str, str]:
        """Framework versions shared by every run (a results file is one environment)."""
        if not self.runs:
            return {}
        first = self.runs[0].versions
        return {k: v for k, v in first.items() if all(r.versions.get(k) == v for r in self.runs)}

    def by_key(self) -> dict[tuple[str, str], RunRecord]:
        return {run.key: run for run in self.runs}

    def machine_of(self, run: RunRecord) -> dict[str, Any]:
        """The machine that trained ``run``: its own, else the file's. In a file merged before runs
        kept their own (the file's ``machine`` is ``{"merged": [...]}``), the merged machine whose
        id is the run's fingerprint id, where one is; else the file's, which is no one machine."""
        if run.machine:
            return run.machine
        several = self.machine.get("merged")
        if isinstance(several, list) and run.fingerprint:
            for machine in several:
                if isinstance(machine, dict) and machine.get("id") == run.fingerprint:
                    return machine
        return self.machine

    def to_json(self, texts: dict[int, str] | None = None) -> str:
        """The file's text. ``texts`` caches each run's JSON by ``id(run)``: the plugin rewrites the
        file after every test, and turning 60 runs into dicts and JSON again each time cost 2% of a
        60-run session (measured, docs/crash.md); a run's text never changes once recorded."""
        document = {
            "schema": self.schema,
            "created": self.created,
            "machine": self.machine,
            "versions": self.versions,
            "runs": RUNS_PLACEHOLDER,
        }
        if self.session is not None:
            document["session"] = self.session.to_json()
        texts = {} if texts is None else texts
        runs = []
        for run in sorted(self.runs, key=lambda r: (r.case, r.dtype)):
            text = texts.get(id(run))
            if text is None:
                text = texts[id(run)] = json.dumps(_run_document(run), indent=1, allow_nan=True)
            runs.append("  " + text.replace("\n", "\n  "))  # as json.dumps nests it two levels in
        listed = "[\n" + ",\n".join(runs) + "\n ]" if runs else "[]"
        text = json.dumps(document, indent=1, allow_nan=True)
        return text.replace(json.dumps(RUNS_PLACEHOLDER), listed, 1) + "\n"


RUNS_PLACEHOLDER = "\u0000runs\u0000"
"""Stands for the runs in the document while the rest is rendered (no key or value contains it)."""


def _run_document(run: RunRecord) -> dict[str, Any]:
    """A run as the file holds it: its own ``machine`` only where it has one (see the field)."""
    document = asdict(run)
    if not document["machine"]:
        del document["machine"]
    return document


def machine_info() -> dict[str, Any]:
    """What histories' last bits and speed depend on (:func:`..fingerprint.fingerprint`): the gate
    compares speed only between equal fingerprints and names how two machines differ."""
    from ..fingerprint import fingerprint

    return fingerprint()


def write(path: Path, results: Results, texts: dict[int, str] | None = None) -> None:
    """Write the file atomically; ``texts``: :meth:`Results.to_json`'s cache of run texts."""
    atomic_write_text(Path(path), results.to_json(texts))


def load(path: Path) -> Results:
    path = Path(path)
    fix = f"regenerate it with pytest --convergence --convergence-results={path}"
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ResultsError(
            f"{path}: cannot read the results file: no such file; make it with pytest --convergence "
            f"--convergence-results={path}, "
            "or fix the path"
        ) from None
    except OSError as error:
        raise ResultsError(f"{path}: cannot read the results file: {error.strerror or error}") from None
    except UnicodeDecodeError:
        raise ResultsError(f"{path}: not a text file (compressed?): not a results file; {fix}") from None
    try:
        document = json.loads(text)
    except json.JSONDecodeError as error:
        raise ResultsError(
            f"{path}: not valid JSON at line {error.lineno}, column {error.colno} ({error.msg}): "
            f"the file is truncated or not a results file; {fix}"
        ) from None
    if not isinstance(document, dict) or "schema" not in document:
        raise ResultsError(f"{path}: not a pytest-convergence results file (no 'schema'); {fix}")
    if document["schema"] != SCHEMA_VERSION:
        raise ResultsError(
            f"{path}: results schema {document['schema']!r}, but this version of pytest-convergence "
            f"reads schema {SCHEMA_VERSION}; {fix} with this version"
        )
    known = set(RunRecord.__dataclass_fields__)
    runs = []
    listed = document.get("runs", [])
    if not isinstance(listed, list):
        raise ResultsError(f"{path}: 'runs' is not a list; {fix}")
    for index, raw in enumerate(listed):
        if not isinstance(raw, dict):
            raise ResultsError(f"{path}: runs[{index}] is not an object; {fix}")
        missing = [name for name in REQUIRED if name not in raw]
        if missing:
            raise ResultsError(f"{path}: runs[{index}] lacks {', '.join(missing)}; {fix}")
        _check_anatomy(path, index, raw.get("anatomy"), fix)
        _check_memory(path, index, raw, fix)
        if not isinstance(raw.get("machine", {}), dict):
            raise ResultsError(f"{path}: runs[{index}].machine is not an object; {fix}")
        runs.append(RunRecord(**{k: v for k, v in raw.items() if k in known}))
    session = None
    if "session" in document:
        try:
            session = SessionProgress.from_json(document["session"], str(path))
        except ResultsError as error:
            raise ResultsError(f"{error}; {fix}") from None
    return Results(
        runs=runs,
        machine=document.get("machine", {}),
        created=document.get("created", ""),
        schema=document["schema"],
        session=session,
    )


def _check_anatomy(path: Path, index: int, anatomy: Any, fix: str) -> None:
    """A run's anatomy must read back, or the gate would take it for none recorded."""
    if not anatomy:
        return
    from ..anatomy import Anatomy

    try:
        Anatomy.from_json(anatomy)
    except (KeyError, ValueError, TypeError, AttributeError) as error:
        what = f"lacks {error}" if isinstance(error, KeyError) else str(error)
        raise ResultsError(f"{path}: runs[{index}].anatomy is malformed ({what}); {fix}") from None


def check_baseline(path: Path) -> Results:
    """The baseline results file, read and checked as the gate will read it, before any training.

    A baseline that is missing, empty, truncated or of another schema would otherwise be found
    only after the whole suite trained; here it costs the user seconds. Raises
    :class:`ResultsError` naming the file and the fix.
    """
    path = Path(path)
    how = f"pytest --convergence --convergence-results={path} on the old framework"
    if not path.exists():
        raise ResultsError(
            f"{path}: no such file; the baseline is the results file of a session on the old "
            f"framework: make it with {how}, or fix the path"
        )
    if path.is_dir():
        raise ResultsError(f"{path} is a directory; give the results file (a .json) inside it")
    try:
        empty = path.stat().st_size == 0
    except OSError:
        empty = False  # load() says why it cannot read it
    if empty:
        raise ResultsError(f"{path}: the file is empty, not a results file; regenerate it with {how}")
    return load(path)


def same_file(first: Path, second: Path) -> bool:
    """Whether two paths name one file (through links and ``..`` too), existing or not."""
    first, second = Path(first), Path(second)
    try:
        if first.exists() and second.exists():
            return first.samefile(second)
    except OSError:
        pass
    return first.resolve() == second.resolve()


def merge(parts: list[Results], names: list[str] | None = None) -> Results:
    """One results file from several jobs of the same environment.

    Refuses files whose TensorFlow or Keras versions differ (they are two environments, for the
    gate to compare, not to merge) and a case and dtype present in two files. Where the runs
    trained on several machines (shards of a suite on CI runners), the file's ``machine`` lists
    them (``{"merged": [...]}``, which an older reader takes for no one machine) and each run keeps
    its own, so that the gate compares each run's speed where both sides ran on one machine.
    """
    names = names or [f"file {i + 1}" for i in range(len(parts))]
    runs: dict[tuple[str, str], tuple[str, RunRecord]] = {}
    reference: dict[str, str] = {}
    for name, part in zip(names, parts):
        versions = {k: part.versions[k] for k in FRAMEWORK_KEYS if part.versions.get(k)}
        for key, value in versions.items():
            if reference.setdefault(key, value) != value:
                raise ResultsError(
                    f"{name}: {key} {value}, but another file has {key} {reference[key]}: results of "
                    "different framework versions are compared with `pytest-convergence compare`, not merged"
                )
        for run in part.runs:
            if run.key in runs:
                raise ResultsError(f"{name}: {run.case} [{run.dtype}] is also in {runs[run.key][0]}")
            runs[run.key] = (name, run)
    trained = {id(run): part.machine_of(run) for part in parts for run in part.runs}
    distinct = _distinct(list(trained.values()) or [part.machine for part in parts])
    if len(distinct) == 1:  # one machine: the file's, and no run needs its own
        machine = distinct[0]
        kept = [replace(run, machine={}) if run.machine else run for _, run in runs.values()]
    else:
        machine = {"merged": distinct}
        kept = [replace(run, machine=trained[id(run)]) for _, run in runs.values()]
    return Results(runs=kept, machine=machine, session=merged([p.session for p in parts]))


def _distinct(machines: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each machine once, in the order first met; a ``{"merged": [...]}`` stands for its machines
    (a file merged from several machines, merged again)."""
    flat: list[dict[str, Any]] = []
    for machine in machines:
        several = machine.get("merged")
        flat += [m for m in several if isinstance(m, dict)] if isinstance(several, list) else [machine]
    unique: dict[str, dict[str, Any]] = {}
    for machine in flat:
        unique.setdefault(json.dumps(machine, sort_keys=True), machine)
    return list(unique.values())


def merge_repeats(parts: list[Results], names: list[str] | None = None) -> Results:
    """One results file from the same suite trained in several sessions: timings pooled.

    Repeats within a session (``--convergence-repeat``) run back to back, so one burst of load
    on a shared machine slows all of a case's timings; sessions minutes apart rarely share one.
    Every session must hold the same cases with bit-identical histories (a determinism check
    across processes); each run's ``wall_times`` and ``cpu_times`` are then concatenated.
    """
    names = names or [f"file {i + 1}" for i in range(len(parts))]
    first = {run.key: run for run in parts[0].runs}
    pooled = {key: list(run.wall_times) for key, run in first.items()}
    pooled_cpu = {key: list(run.cpu_times) for key, run in first.items()}
    pooled_memory = {key: {n: list(getattr(run, n)) for n in MEMORY_LISTS} for key, run in first.items()}
    for name, part in zip(names[1:], parts[1:]):
        for framework in FRAMEWORK_KEYS:
            if part.versions.get(framework) != parts[0].versions.get(framework):
                raise ResultsError(
                    f"{name}: {framework} {part.versions.get(framework)}, but {names[0]} has "
                    f"{parts[0].versions.get(framework)}: repeats are of one environment"
                )
        by_key = {run.key: run for run in part.runs}
        if by_key.keys() != first.keys():
            case, dtype = sorted(by_key.keys() ^ first.keys())[0]
            raise ResultsError(f"{name}: not the same runs as {names[0]} ({case} [{dtype}] is in one only)")
        for key, run in by_key.items():
            reference = first[key]
            same = run.outcome == reference.outcome and np.array_equal(
                np.asarray(run.checkpoint_losses, np.float64),
                np.asarray(reference.checkpoint_losses, np.float64),
                equal_nan=True,
            )
            if not same:
                raise ResultsError(
                    f"{name}: {run.case} [{run.dtype}] trained differently than in {names[0]}: repeats "
                    "of one environment must be bit-identical (is op determinism off on a GPU?)"
                )
            pooled[key] += run.wall_times
            pooled_cpu[key] += run.cpu_times
            for name in MEMORY_LISTS:  # peak memories too: the memory rule's spread
                pooled_memory[key][name] += getattr(run, name)
    runs = [replace(run, wall_times=pooled[run.key], cpu_times=pooled_cpu[run.key]) for run in parts[0].runs]
    runs = [_with_memory(run, pooled_memory[run.key]) for run in runs]
    return Results(runs=runs, machine=parts[0].machine, session=merged([p.session for p in parts]))


def _with_memory(run: RunRecord, lists: dict[str, list[float]]) -> RunRecord:
    return replace(
        run,
        host_peak_bytes=lists["host_peak_bytes"],
        host_growth_bytes=lists["host_growth_bytes"],
        device_peak_bytes=lists["device_peak_bytes"],
    )


def _plain(value: Any) -> Any:
    if isinstance(value, (np.floating,)):
        return float(value)
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, np.ndarray):
        return value.tolist()
    return value
