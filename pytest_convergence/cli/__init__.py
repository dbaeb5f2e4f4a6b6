"""The ``pytest-convergence`` command: what ``pytest --convergence`` leaves to the command line.

    pytest-convergence explain fixtures/seed-default.convergence.toml --dtype float32 --plot loss.png
    pytest-convergence compare results-old.json results-new.json --html report.html
    pytest-convergence merge all.json job1.json job2.json
    pytest-convergence gate 2.19.0 2.21.0

``explain`` trains one spec file's case once in one dtype and prints what the training did and why
(the diagnosis and its evidence), which is the question the project grew from: "why does my model
not converge in float32?"; ``--plot`` draws the loss curve with its events and the weights' paths.
``compare`` is the upgrade gate on two results files, ``merge`` joins the results files of several
jobs, and ``gate`` runs the whole upgrade gate, training the suite under two TensorFlow versions.

The package: ``parser`` builds the parser, one function per command; ``explain``, ``compare``
(compare, merge) and ``upgrade`` (gate, replay-plan, replay) run the commands; ``main`` dispatches.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from ..errors import ConvergenceError
from .bisect import run_bisect
from .compare import run_compare, run_merge
from .explain import run_explain
from .history import run_history
from .kernels import run_kernels
from .parser import build_parser
from .upgrade import run_gate, run_replay, run_replay_plan

__all__ = ["build_parser", "main"]


def main(argv: Sequence[str] | None = None) -> int:
    arguments = build_parser().parse_args(argv)
    handlers = {
        "explain": run_explain,
        "compare": run_compare,
        "merge": run_merge,
        "gate": run_gate,
        "bisect": run_bisect,
        "history": run_history,
        "replay-plan": run_replay_plan,
        "replay": run_replay,
        "kernels": run_kernels,
    }
    try:
        return handlers[arguments.command](arguments)
    except ConvergenceError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
