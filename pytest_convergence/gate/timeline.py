"""The history of many results files (a nightly job's, or one per release) as data: per case and
dtype, its final loss, steps to target, outcome and speed along the versions, and each change
between neighbouring versions judged by the gate's own rule (:func:`.verdict.compare_results`).

The columns are the files ordered along their framework versions (TensorFlow, Keras, the Keras
backend's); files whose versions tie or cannot be read keep their command-line order. A row is a
case and dtype; each cell is one run, judged against the nearest earlier column that holds the
same case and dtype (the previous one, unless the case was missing in between). Rendered by
:mod:`.timeline_markdown` and :mod:`.timeline_html`, which compute nothing.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..dtypes import DTYPES
from .mechanism import NOT_LOCALISED
from .results import Results, RunRecord
from .verdict import Thresholds, compare_results
from .verdict_data import FAIL, PASS, RENAMED, SLOWER, Row, Verdict, describe_versions
from .verdict_text import mechanism_sentence

FIRST, SAME, PARTED, ADDED, MISSING = "first", "same", "parted", "added", "missing"
"""A cell's mark, besides the gate's own ``FAIL``, ``slower`` and ``renamed``: the first column
holding the run (nothing to judge it against), a history equal to the earlier one at every
checkpoint and in its final weights, a history that parts from it within tolerance, a run new in
this file, a run this file lacks."""
MARKS = (FAIL, SLOWER, PARTED, RENAMED, ADDED, MISSING, SAME, FIRST)
"""Every mark, the most severe first: how the renderers order their legends and counts."""
JUDGED_CHANGES = (FAIL, SLOWER, PARTED, RENAMED)
"""The marks that say a judged change (each gets a footnote with its reasons)."""

VERSION_KEYS = ("tensorflow", "keras", "jax", "torch")
"""The versions that order the columns, the first the most significant (``Results.versions``)."""


@dataclass
class Column:
    """One results file: where it came from, what it ran on, and its runs by case and dtype."""

    path: Path
    results: Results
    machine: str = ""
    """A short name of the machine (``A``, ``B``...): equal names, comparable speed."""
    with_keras: bool = False
    """Name the Keras release too: the files run several (a bisection's probes on one TensorFlow)."""

    @property
    def versions(self) -> dict[str, str]:
        return self.results.versions

    @property
    def label(self) -> str:
        """``tensorflow 2.21.0, keras 3.15.1`` (or ``keras 3.15.1 on jax 0.4.38``)."""
        return describe_versions(self.versions)

    @property
    def short(self) -> str:
        """The version that names the column in a table header or on a plot's axis: the backend's
        (TensorFlow's for TensorFlow), with Keras's where it alone changes; else the file's name."""
        versions = self.versions
        backend = versions.get("keras_backend", "tensorflow")
        if backend in versions:
            keras = versions.get("keras")
            return f"{versions[backend]} + Keras {keras}" if self.with_keras and keras else versions[backend]
        return versions.get("keras") or self.path.stem

    def run(self, key: tuple[str, str]) -> RunRecord | None:
        return self._by_key.get(key)

    def __post_init__(self) -> None:
        self._by_key = self.results.by_key()


@dataclass
class Cell:
    """One run of one case and dtype in one file, and what the gate's rule says of its change."""

    record: RunRecord | None
    mark: str
    against: int | None = None
    """The column it was judged against (None: not judged)."""
    row: Row | None = None
    """The gate's row that judged it (None: not judged)."""
    reasons: list[str] = field(default_factory=list)
    """Why it is marked, in words: the gate's reasons, notes and the mechanism's sentence."""

    @property
    def final_loss(self) -> float | None:
        return None if self.record is None else float(self.record.final_loss)

    @property
    def speed(self) -> float | None:
        return None if self.record is None else steps_per_second(self.record)

    @property
    def speed_note(self) -> str:
        """Why the gate did not compare this run's speed with the earlier one ("other machine"...)."""
        return "" if self.row is None else self.row.speed_note


@dataclass
class Line:
    """One case and dtype along the versions: a cell per column."""

    case: str
    dtype: str
    cells: list[Cell]

    @property
    def label(self) -> str:
        return f"{self.case} [{self.dtype}]"


@dataclass
class Timeline:
    columns: list[Column]
    lines: list[Line]
    warnings: list[str] = field(default_factory=list)
    """What a reader must know to read it: the order kept, machines that differ (speed not
    comparable), the gate's warnings between neighbours."""

    def counts(self, column: int) -> dict[str, int]:
        """How many cells of a column carry each mark, the most severe first (zeros left out)."""
        marks = [line.cells[column].mark for line in self.lines]
        return {mark: marks.count(mark) for mark in MARKS if mark in marks}

    def changes(self) -> list[tuple[Line, int, Cell]]:
        """Every judged change (a footnote each), by column, then by case and dtype."""
        return [
            (line, index, line.cells[index])
            for index in range(len(self.columns))
            for line in self.lines
            if line.cells[index].mark in JUDGED_CHANGES
            or (line.cells[index].mark == MISSING and line.cells[index].row is not None)
        ]

    @property
    def cases(self) -> list[str]:
        return list(dict.fromkeys(line.case for line in self.lines))


def build(
    files: Sequence[tuple[Path, Results]],
    *,
    keep_order: bool = False,
    thresholds: Thresholds | None = None,
) -> Timeline:
    """The timeline of ``files`` (path and content, in command-line order), judged with the gate's
    ``thresholds`` (its defaults where None)."""
    thresholds = thresholds or Thresholds()
    warnings: list[str] = []
    order = list(range(len(files))) if keep_order else ordered(files, warnings)
    columns = [Column(files[i][0], files[i][1]) for i in order]
    if len({c.versions.get("keras") for c in columns}) > 1:
        for column in columns:
            column.with_keras = True
    warnings += _name_machines(columns)
    verdicts = [
        compare_results(columns[i - 1].results, columns[i].results, thresholds)
        for i in range(1, len(columns))
    ]
    for index, verdict in enumerate(verdicts, 1):
        pair = f"{columns[index - 1].short} -> {columns[index].short}"
        warnings += [f"{pair}: {verdict.tf32}"] if verdict.tf32 else []
        warnings += [f"{pair}: {text}" for text in verdict.warnings if "different machines" not in text]
    keys = sorted({key for column in columns for key in column.results.by_key()}, key=_row_order)
    lines = [Line(case, dtype, _cells((case, dtype), columns, verdicts, thresholds)) for case, dtype in keys]
    if any(_not_localised(row) for verdict in verdicts for row in verdict.rows):
        warnings.append(
            "some changes are not localised (the files record no step anatomy): "
            "pytest-convergence gate, or replay-plan and replay, take a pair of versions apart"
        )
    if len(columns) == 1:
        warnings.append("one results file: nothing to judge; give two or more to see what changed")
    return Timeline(columns, lines, warnings)


def load(paths: Sequence[Path]) -> list[tuple[Path, Results]]:
    """Read every file, or fail on the first one that cannot be read, naming it and the fix."""
    from . import results

    return [(Path(path), results.load(Path(path))) for path in paths]


# ---------------------------------------------------------------------------------- the order
def ordered(files: Sequence[tuple[Path, Results]], warnings: list[str]) -> list[int]:
    """The files' indices along their versions. Only the versions every file records are compared
    (TensorFlow, Keras, the backend's); a file whose version cannot be read keeps its place, and
    ties keep the command-line order (a nightly job's files of one version, in the order given)."""
    if len(files) < 2:
        return list(range(len(files)))
    shared = [key for key in VERSION_KEYS if all(key in results.versions for _, results in files)]
    if not shared:
        warnings.append("the files record no framework version in common: they are shown in the order given")
        return list(range(len(files)))
    keys: dict[int, tuple[Any, ...]] = {}
    for index, (path, results) in enumerate(files):
        parsed = [_version(results.versions[key]) for key in shared]
        if any(version is None for version in parsed):
            warnings.append(
                f"{path}: cannot read its versions ({describe_versions(results.versions)}): "
                "it keeps its place in the order given"
            )
        else:
            keys[index] = tuple(parsed)
    movable = sorted(keys)
    placed = iter(sorted(movable, key=lambda i: (keys[i], i)))
    return [next(placed) if index in keys else index for index in range(len(files))]


def _version(text: str) -> Any:
    """A comparable version (PEP 440, as pip reads it), or None where ``text`` is not one."""
    from packaging.version import InvalidVersion, Version

    try:
        return Version(text)
    except InvalidVersion:
        return None


def _row_order(key: tuple[str, str]) -> tuple[str, int, str]:
    known = list(DTYPES)
    return key[0], known.index(key[1]) if key[1] in known else len(known), key[1]


def _name_machines(columns: list[Column]) -> list[str]:
    """Name each file's machine (A, B...) and say where neighbours' machines differ: the gate
    compares no speed across machines, so neither does the history."""
    names: dict[str, str] = {}
    for column in columns:
        key = machine_key(column.results)
        column.machine = names.setdefault(
            key, chr(ord("A") + len(names)) if len(names) < 26 else f"M{len(names)}"
        )
    if len(names) < 2:
        return []
    described = {column.machine: machine_name(column.results.machine) for column in columns}
    listed = "; ".join(f"{name}: {machine}" for name, machine in described.items())
    return [
        f"the files come from {len(names)} machines ({listed}): speed is compared only between "
        "neighbours on one machine"
    ]


def machine_key(results: Results) -> str:
    """Which machine trained a file: its fingerprint id (``several`` for a file merged from shards
    on several machines, whose runs' speed the gate compares run by run)."""
    machine = results.machine
    if "merged" in machine or any(run.machine for run in results.runs):
        ids = sorted({str(results.machine_of(run).get("id", "?")) for run in results.runs})
        return "several: " + ",".join(ids)
    if "id" in machine:
        return str(machine["id"])
    return f"{machine.get('node')}/{machine.get('processor')}/{machine.get('cpus')}"


def machine_name(machine: dict[str, Any]) -> str:
    merged = machine.get("merged")
    if isinstance(merged, list):
        return f"{len(merged)} machines merged"
    model = machine.get("cpu_model") or machine.get("node", "?")
    name = f"{model}, {machine.get('cpus', '?')} cpus"
    gpus = machine.get("gpus")
    if isinstance(gpus, list) and gpus:
        name += f", {len(gpus)} GPU" + ("s" if len(gpus) > 1 else "")
    return name + (f" (fingerprint {machine['id']})" if machine.get("id") else "")


# ---------------------------------------------------------------------------------- the cells
def _cells(
    key: tuple[str, str], columns: list[Column], verdicts: list[Verdict], thresholds: Thresholds
) -> list[Cell]:
    cells: list[Cell] = []
    last: int | None = None  # the latest column holding the run so far
    for index, column in enumerate(columns):
        record = column.run(key)
        neighbour = _row(verdicts[index - 1], key) if index else None
        if record is None:
            cells.append(_missing(neighbour, index))
            continue
        if last is None:
            cells.append(_first(record, neighbour, index))
        elif last == index - 1:
            assert neighbour is not None
            cells.append(_judged(record, neighbour, last))
        else:  # missing in between: judged against the last file that has it
            verdict = compare_results(_alone(columns[last], key), _alone(column, key), thresholds)
            cell = _judged(record, verdict.rows[0], last)
            cell.reasons.append(
                f"judged against {columns[last].short} ({columns[last].path.name}): missing in between"
            )
            cells.append(cell)
        last = index
    return cells


def _not_localised(row: Row) -> bool:
    return row.mechanism is not None and row.mechanism.key == NOT_LOCALISED


def _row(verdict: Verdict, key: tuple[str, str]) -> Row | None:
    return next((row for row in verdict.rows if (row.case, row.dtype) == key), None)


def _alone(column: Column, key: tuple[str, str]) -> Results:
    """The file with only the run of ``key``: the gate's rule for one run, its machine kept."""
    record = column.run(key)
    assert record is not None
    return Results(runs=[record], machine=column.results.machine, created=column.results.created)


def _missing(neighbour: Row | None, index: int) -> Cell:
    if neighbour is not None and neighbour.verdict == FAIL:  # the new session crashed or ended first
        return Cell(None, MISSING, index - 1, neighbour, list(neighbour.reasons))
    if neighbour is not None:
        return Cell(None, MISSING, index - 1, neighbour, ["not in this file"])
    return Cell(None, MISSING, reasons=["not in this file"])


def _first(record: RunRecord, neighbour: Row | None, index: int) -> Cell:
    if index == 0:
        return Cell(record, FIRST)
    if neighbour is not None and neighbour.verdict == RENAMED:
        return Cell(record, RENAMED, index - 1, neighbour, list(neighbour.reasons))
    return Cell(record, ADDED, reasons=["first in this file"])


def _judged(record: RunRecord, row: Row, against: int) -> Cell:
    reasons = list(row.reasons)
    if row.verdict == FAIL:
        mark = FAIL
    elif row.verdict == SLOWER:
        mark = SLOWER
    elif row.verdict == PASS and (row.mechanism is not None or row.parting_step is not None):
        mark = PARTED
        if row.parting_step is not None:
            reasons.append(f"the histories part at step {row.parting_step}, within tolerance")
        else:
            reasons.append("the final weights differ, within tolerance")
    else:
        mark = SAME
    reasons += row.notes
    if row.memory_warning:
        reasons.append(f"heavier: {row.memory_warning}")
    if row.mechanism is not None and row.mechanism.key != NOT_LOCALISED:  # said once, not per run
        reasons.append(f"why: {mechanism_sentence(row.mechanism)}")
    return Cell(record, mark, against, row, reasons)


# ---------------------------------------------------------------------------- numbers as text
def steps_per_second(record: RunRecord) -> float:
    """Steps per CPU second (the gate's speed measure: the median of the timings), else per wall
    second of the fastest timing where the file recorded no CPU time."""
    if record.cpu_times:
        median = float(np.median(record.cpu_times))
        if median > 0:
            return record.steps / median
    return float(record.best_steps_per_second)


def loss_text(value: float | None) -> str:
    if value is None:
        return "-"
    return "nan" if math.isnan(value) else f"{value:.4g}"


def steps_text(record: RunRecord | None) -> str:
    """``120 steps`` to the target, ``target not reached``, or ``no target``."""
    if record is None:
        return "-"
    if record.steps_to_target is not None:
        return f"{record.steps_to_target} steps"
    return "no target" if record.target_loss is None else "target not reached"


def speed_text(value: float | None) -> str:
    """Steps per second: ``850/s``, ``12.3k/s``, ``1.2M/s``."""
    if value is None or not math.isfinite(value):
        return "-"
    for scale, suffix in ((1e6, "M"), (1e3, "k")):
        if value >= scale:
            return f"{value / scale:.3g}{suffix}/s"
    return f"{value:.3g}/s"
