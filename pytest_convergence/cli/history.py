"""``pytest-convergence history FILES...``: the catalogue's numbers along many versions."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from .arguments import non_negative

if TYPE_CHECKING:  # not .parser's alias: parser imports this module, and a cycle is one in the design
    Commands = argparse._SubParsersAction[argparse.ArgumentParser]


def add_history(commands: Commands) -> None:
    """``history FILES...``: per case and dtype, how its numbers moved along the versions."""
    from ..gate.verdict import Thresholds

    defaults = Thresholds()
    history = commands.add_parser(
        "history",
        help="FILES...: how each case moved along many results files (a nightly job's, one per release)",
        description="Read many results files (a nightly job's, or one per release), order them along "
        "their framework versions (TensorFlow, Keras, the Keras backend's; files whose versions tie or "
        "cannot be read keep the order given) and show, per case and dtype, the final loss, the steps "
        "to the target, the outcome and the speed (steps per CPU second) in each, as a markdown table "
        "and, with --html, a self-contained page with a plot per case. Each change between "
        "neighbouring versions is judged by the gate's rule (as compare judges two files): a change "
        "the gate would fail, a history that parts within tolerance, a slower run (speed compared "
        "only between files of one machine), each with its reasons in a footnote. Exit code: 0 "
        "written (whatever changed), 2 a file or an argument cannot be used.",
        epilog="example: pytest-convergence history results-2.15.1.json results-2.19.0.json "
        "results-2.21.0.json --markdown history.md --html history.html",
    )
    history.add_argument(
        "files",
        type=Path,
        nargs="+",
        metavar="FILE",
        help="results files, as pytest --convergence --convergence-results=FILE wrote them, in any order",
    )
    history.add_argument(
        "--markdown",
        type=Path,
        metavar="PATH",
        help="write the markdown table to PATH (default: print it on stdout)",
    )
    history.add_argument(
        "--html",
        type=Path,
        metavar="PATH",
        help="also write a self-contained HTML page with the table and a plot per case (default: none)",
    )
    history.add_argument(
        "--keep-order",
        action="store_true",
        help="keep the files in the order given instead of ordering them along their versions "
        "(default: ordered along the versions)",
    )
    history.add_argument(
        "--final-loss-threshold",
        type=non_negative,
        default=defaults.final_loss,
        metavar="R",
        help="the gate's rule between neighbours: a change fails when the final loss grew by more than "
        "R relative to the earlier version's (default: %(default)s)",
    )
    history.add_argument(
        "--steps-threshold",
        type=non_negative,
        default=defaults.steps_to_target,
        metavar="R",
        help="a change fails when it needs more than (1 + R) times the earlier number of steps to reach "
        "the target loss, or never reaches it (default: %(default)s)",
    )
    history.add_argument(
        "--slowdown-threshold",
        type=non_negative,
        default=defaults.slowdown,
        metavar="R",
        help="a change is slower when its CPU time per step grew by more than R and beyond both "
        "sides' spread, on one machine (default: %(default)s)",
    )


def run_history(arguments: argparse.Namespace) -> int:
    from ..files import atomic_write_text
    from ..gate import timeline
    from ..gate.timeline_markdown import markdown
    from ..gate.verdict import Thresholds

    _warn_repeated(arguments.files)
    files = timeline.load(arguments.files)
    thresholds = Thresholds(
        final_loss=arguments.final_loss_threshold,
        steps_to_target=arguments.steps_threshold,
        slowdown=arguments.slowdown_threshold,
    )
    history = timeline.build(files, keep_order=arguments.keep_order, thresholds=thresholds)
    text = markdown(history)
    if arguments.markdown is None:
        sys.stdout.write(text)
    else:
        atomic_write_text(arguments.markdown, text)
        print(f"markdown: {arguments.markdown}")
    if arguments.html is not None:
        from ..gate.timeline_html import write_history

        write_history(arguments.html, history)
        print(f"html: {arguments.html}")
    return 0


def _warn_repeated(paths: list[Path]) -> None:
    """A file named twice would be judged against itself: the same history, which says nothing."""
    seen: set[Path] = set()
    for path in paths:
        resolved = path.resolve()
        if resolved in seen:
            print(f"warning: {path} is given more than once; each is shown as a version", file=sys.stderr)
        seen.add(resolved)
