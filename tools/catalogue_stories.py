"""docs/catalogue-explanations.md from the output of ``./dev demo --convergence-explain``.

Usage: ``python tools/catalogue_stories.py LOG [LOG ...] > docs/catalogue-explanations.md``.
Each LOG is a pytest session's terminal output; a run told in a later log replaces the same run
told in an earlier one (a partial rerun, ``-k``, updates the whole document). Every story here was
fact-checked as it was printed: ``./dev demo`` fails on a stated fact its history does not show.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

SECTION = re.compile(r"^=+ convergence explanations =+$")
HEADING = re.compile(r"^(\S+\[\S+\]) \((\w+), ([\d,]+) steps\): (\S+)$")


def stories(text: str) -> dict[str, list[str]]:
    """Each run's story (heading first) from one log's explanations section."""
    found: dict[str, list[str]] = {}
    inside = False
    current: list[str] | None = None
    for line in text.splitlines():
        if SECTION.match(line):
            inside = True
            continue
        if inside and line.startswith("="):
            break
        if not inside:
            continue
        heading = HEADING.match(line)
        if heading:
            current = found.setdefault(heading.group(1), [line])
        elif current is not None and line.startswith("  "):
            current.append(line.strip())
    return found


def main(paths: list[str]) -> None:
    told: dict[str, list[str]] = {}
    for path in paths:
        told.update(stories(Path(path).read_text(encoding="utf-8")))
    print("# The bundled catalogue, explained\n")
    print("[← the catalogue](catalogue.md) · [the diagnosis](diagnosis.md)\n")
    print(
        "Every run of `pytest --convergence fixtures`, as `--convergence-explain` tells it "
        "(regenerated with `tools/catalogue_stories.py`). Each fact was checked against the run's "
        "history as it was printed (`./dev demo` fails on one that does not hold).\n"
    )
    for run in told:
        heading, *parts = told[run]
        print(f"### {heading}\n")
        for part in parts:
            title, _, text = part.partition(": ")
            print(f"- **{title}**: {text}")
        print()


if __name__ == "__main__":
    main(sys.argv[1:])
