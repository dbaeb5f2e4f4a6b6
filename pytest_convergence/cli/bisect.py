"""``pytest-convergence bisect OLD NEW``: which release brought each of a gate's mechanisms."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .parser import Commands


def add_bisect(commands: Commands) -> None:
    """``bisect OLD NEW``: the first release whose runs match NEW's, per mechanism."""
    bisect = commands.add_parser("bisect", help="OLD NEW: which release brought each mechanism of a gate")
    bisect.add_argument("old")
    bisect.add_argument("new")


def run_bisect(arguments: argparse.Namespace) -> int:
    from ..errors import GateError

    raise GateError("bisect: being built (issue 26)")
