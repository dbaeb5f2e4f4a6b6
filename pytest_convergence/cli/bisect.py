"""``pytest-convergence bisect OLD NEW``: which release brought each of a gate's mechanisms."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # not .parser's alias: parser imports this module, and a cycle is one in the design
    Commands = argparse._SubParsersAction[argparse.ArgumentParser]

INTERRUPTED = 130
"""The shell's status for a command ended by Ctrl-C."""


def add_bisect(commands: Commands) -> None:
    """``bisect OLD NEW``: the first release whose runs match NEW's, per mechanism."""
    from ..gate import upgrade

    bisect = commands.add_parser(
        "bisect",
        help="OLD NEW: which release between two gated versions brought each mechanism of the gate",
        description="Take the changed cases of a gate between TensorFlow OLD and NEW (its results files "
        "in --gate; the gate runs first when they are not there) and find, for each mechanism, the "
        "first release whose runs match NEW's rather than OLD's, within the gate's tolerances. The "
        "releases come from the package index: TensorFlow's with Keras pinned, then Keras's with "
        "TensorFlow pinned, each installed in its own environment as the gate installs its sides "
        "(reused once built). Probes bisect the line (log2 of its length per mechanism) and train only "
        "the cases still undecided. Ctrl-C keeps every finished run: the same command resumes. "
        "Writes OUT/bisect.txt, OUT/bisect.md, OUT/bisect.html, the probed releases' results "
        "under OUT/results/ and the gate's verdict across each step under OUT/steps/. Exit code: 0 "
        "every mechanism's release found, 1 some case borderline, "
        "unstable or between releases that could not be used, 2 no bisection (an argument, a file, "
        "the gate), 130 interrupted.",
        epilog="example: pytest-convergence bisect 2.15.1 2.21.0 --gate gate-2.15.1-to-2.21.0",
    )
    bisect.add_argument("old", metavar="OLD", help="the gate's old TensorFlow version, e.g. 2.15.1")
    bisect.add_argument("new", metavar="NEW", help="the gate's new TensorFlow version, e.g. 2.21.0")
    bisect.add_argument(
        "--gate",
        type=Path,
        default=None,
        metavar="DIR",
        help="the gate's output, holding results-OLD.json and results-NEW.json (default: gate-OLD-to-NEW, "
        "where 'gate' writes them; its replays are read from WORK_DIR/replay)",
    )
    bisect.add_argument(
        "--out", type=Path, default=None, metavar="DIR", help="the report (default: bisect-OLD-to-NEW)"
    )
    bisect.add_argument(
        "--suite",
        default=upgrade.DEFAULT_SUITE,
        help="what the gate trains if it has to run (default: %(default)s)",
    )
    bisect.add_argument(
        "--package",
        default=upgrade.DEFAULT_PACKAGE,
        help="the TensorFlow distribution to install and list releases of (default: %(default)s)",
    )
    bisect.add_argument(
        "--work-dir",
        type=Path,
        default=upgrade.DEFAULT_WORK_DIR,
        metavar="DIR",
        help="environments (shared with 'gate'), the probes' results and logs, what a resume reads "
        "(default: %(default)s)",
    )
    bisect.add_argument(
        "--constraints", type=Path, default=None, metavar="FILE", help="as for 'gate' (default: none)"
    )
    bisect.add_argument(
        "--results-old", type=Path, default=None, metavar="FILE", help="the old side's results"
    )
    bisect.add_argument(
        "--results-new", type=Path, default=None, metavar="FILE", help="the new side's results"
    )
    bisect.add_argument(
        "--releases",
        default=None,
        metavar="A,B,...",
        help="the configurations between OLD and NEW, in order, instead of the package index's releases; "
        "each is installed as PACKAGE==A unless --venv names its environment (default: the index)",
    )
    bisect.add_argument(
        "--venv",
        action="append",
        default=[],
        metavar="LABEL=DIR",
        help="train configuration LABEL (OLD, NEW or one of --releases) in this existing environment, "
        "installing nothing (repeatable; default: made under WORK_DIR)",
    )
    bisect.add_argument(
        "--repeat", type=int, default=1, metavar="N", help="sessions per side if the gate runs (default: 1)"
    )


def run_bisect(arguments: argparse.Namespace) -> int:
    from ..errors import GateError
    from ..files import atomic_write_text
    from ..gate import bisect_report
    from ..gate.bisect_run import Options, bisect, keep_results

    venvs: dict[str, Path] = {}
    for item in arguments.venv:
        label, separator, directory = item.partition("=")
        if not separator or not label or not directory:
            raise GateError(f"--venv {item}: write it LABEL=DIR, e.g. --venv 2.17.0=.venv-2.17")
        venvs[label] = Path(directory)
    releases = None
    if arguments.releases is not None:
        releases = tuple(r.strip() for r in arguments.releases.split(",") if r.strip())
    options = Options(
        arguments.old,
        arguments.new,
        gate_dir=arguments.gate,
        out=arguments.out,
        suite=arguments.suite,
        package=arguments.package,
        work_dir=arguments.work_dir,
        constraints=arguments.constraints,
        results_old=arguments.results_old,
        results_new=arguments.results_new,
        releases=releases,
        venvs=venvs,
        repeat=arguments.repeat,
    )
    try:
        found = bisect(options)
    except KeyboardInterrupt:
        print(
            f"\ninterrupted: every finished run is kept in {options.state}; run the same command again "
            "to go on from there",
            file=sys.stderr,
        )
        return INTERRUPTED
    if not found.plan.searches:
        print(f"bisect: no run changed between {options.old} and {options.new}: nothing to bisect")
        return 0
    out = options.output
    links = keep_results(found, out / "results")
    verdicts = bisect_report.step_verdicts(found, out / "steps")
    atomic_write_text(out / "bisect.txt", bisect_report.text(found, links, verdicts))
    atomic_write_text(out / "bisect.md", bisect_report.markdown(found, links, base=out, verdicts=verdicts))
    atomic_write_text(out / "bisect.html", bisect_report.page(found, links, base=out, verdicts=verdicts))
    print(bisect_report.text(found, links, verdicts), end="")
    print(f"report: {out / 'bisect.md'}, {out / 'bisect.html'}")
    doubtful = any(
        finding.borderline
        or finding.unstable
        or any(after - before > 1 for steps in finding.by_steps for before, after in steps)
        for finding in bisect_report.findings(found)
    )
    return 1 if doubtful else 0
