"""``pytest-convergence compare OLD NEW`` (the upgrade gate on two results files: the verdict, its
markdown, HTML report and plots) and ``merge OUTPUT INPUT...`` (the results files of several jobs
as one)."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import ConvergenceError

if TYPE_CHECKING:
    from ..gate.verdict_data import Verdict


def run_compare(arguments: argparse.Namespace) -> int:
    from ..gate import results
    from ..gate.verdict import Thresholds, compare_results
    from ..gate.verdict_text import format_table, markdown

    _check_not_the_same_file(arguments.old, arguments.new)
    old, new = results.load(arguments.old), results.load(arguments.new)
    if arguments.old.read_bytes() == arguments.new.read_bytes():
        print(
            f"warning: {arguments.old} and {arguments.new} have the same contents, so every run is "
            "compared with itself and passes; is one a copy of the other? Give the old framework's "
            "results first and the new framework's second",
            file=sys.stderr,
        )
    thresholds = Thresholds(
        final_loss=arguments.final_loss_threshold,
        steps_to_target=arguments.steps_threshold,
        slowdown=arguments.slowdown_threshold,
        speed=arguments.speed,
        min_time=arguments.min_time,
        memory=arguments.memory,
    )
    replays = None
    if arguments.replays is not None:
        from ..gate.replay_evidence import ReplayEvidence

        replays = ReplayEvidence.load(arguments.replays)
    verdict = compare_results(old, new, thresholds, replays=replays)
    for line in format_table(verdict):
        print(line)
    if arguments.markdown:
        from ..files import atomic_write_text

        atomic_write_text(arguments.markdown, markdown(verdict))
    if arguments.html:
        from ..gate.report import write_report

        write_report(arguments.html, verdict, old, new)
        print(f"report: {arguments.html}")
    for name, png in arguments.plot:
        _plot_pair(verdict, name, Path(png))
    return 0 if verdict.passed else 1


def _check_not_the_same_file(old: Path, new: Path) -> None:
    """``compare a.json a.json`` would compare every run with itself and pass: a false PASS."""
    try:
        same = os.path.samefile(old, new)
    except OSError:  # one is missing: loading it says so
        same = old.resolve() == new.resolve()
    if same:
        raise ConvergenceError(
            f"compare {old} {new}: OLD and NEW are the same file, so every run would be compared with "
            "itself and pass whatever changed\n  fix: give the old framework's results first and the "
            "new framework's second, e.g. pytest-convergence compare results-old.json results-new.json"
        )


def _plot_pair(verdict: Verdict, name: str, path: Path) -> None:
    from ..gate.plot import plot_comparison
    from ..gate.verdict_data import describe_versions

    rows = {f"{row.case}[{row.dtype}]": row for row in verdict.rows}
    row = rows.get(name.replace(" ", ""))
    if row is None or row.old is None or row.new is None:
        known = ", ".join(sorted(k for k, r in rows.items() if r.old is not None and r.new is not None))
        raise ConvergenceError(f"--plot {name}: no such case and dtype in both results; try one of: {known}")
    old, new = describe_versions(verdict.old_versions), describe_versions(verdict.new_versions)
    plot_comparison(row, old, new, path)
    print(f"plot: {path}")


def run_merge(arguments: argparse.Namespace) -> int:
    from ..gate import results

    _check_merge_order(arguments.output, arguments.inputs)
    parts = [results.load(path) for path in arguments.inputs]
    combine = results.merge_repeats if arguments.repeats else results.merge
    merged = combine(parts, [str(path) for path in arguments.inputs])
    results.write(arguments.output, merged)
    print(f"{arguments.output}: {len(merged.runs)} runs from {len(parts)} files")
    return 0


def _check_merge_order(output: Path, inputs: Sequence[Path]) -> None:
    """merge writes its first argument: ``merge job1.json job2.json all.json`` (output last) would
    read a missing all.json, or overwrite job1.json; say what the order is instead."""
    resolved = {path.resolve() for path in inputs}
    if output.resolve() in resolved:
        raise ConvergenceError(
            f"merge: {output} is both the output (the first argument, which merge writes) and an input"
            f"\n  fix: name a new file first: pytest-convergence merge merged.json "
            f"{' '.join(map(str, inputs))}"
        )
    missing = [path for path in inputs if not path.exists()]
    if missing and output.is_file():
        first = missing[-1]
        rest = [output, *(path for path in inputs if path != first)]
        raise ConvergenceError(
            f"merge: {first} does not exist, and {output}, the first argument, is an existing file that "
            "merge would overwrite: merge takes the output first, then the files to merge"
            f"\n  fix: pytest-convergence merge {first} {' '.join(map(str, rest))}"
        )
