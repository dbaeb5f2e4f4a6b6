"""Aligned plain-text tables, the one formatter behind the summary, the gate and calibration tables."""

from __future__ import annotations

from collections.abc import Iterable, Sequence


def format_table(
    headers: Sequence[str],
    rows: Iterable[Sequence[object]],
    *,
    right_aligned: Iterable[int] = (),
    rule: bool = False,
) -> list[str]:
    """The header, a rule of dashes under it if asked, and one line per row.

    Columns are as wide as their widest cell; trailing blanks are cut so that terminal output and
    snapshots of it compare cleanly.
    """
    body = [tuple(str(cell) for cell in row) for row in rows]
    right = set(right_aligned)
    widths = [max(len(cell) for cell in column) for column in zip(headers, *body)]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(
            cell.rjust(width) if index in right else cell.ljust(width)
            for index, (cell, width) in enumerate(zip(cells, widths))
        ).rstrip()

    dashes = [line(tuple("-" * width for width in widths))] if rule else []
    return [line(tuple(headers)), *dashes, *[line(cells) for cells in body]]
