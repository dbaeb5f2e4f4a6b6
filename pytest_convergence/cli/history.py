"""``pytest-convergence history FILES...``: the catalogue's numbers along many versions."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .parser import Commands


def add_history(commands: Commands) -> None:
    """``history FILES...``: per case and dtype, how its numbers moved along the versions."""
    history = commands.add_parser("history", help="FILES...: how each case moved along many results files")
    history.add_argument("files", type=Path, nargs="+", metavar="FILE")


def run_history(arguments: argparse.Namespace) -> int:
    from ..errors import GateError

    raise GateError("history: being built (issue 26)")
