"""The history of many results files (:mod:`.timeline`) as markdown: the versions, one table (a
row per case and dtype, a column per version), and a footnote per judged change with its reasons."""

from __future__ import annotations

from .timeline import (
    ADDED,
    FIRST,
    MISSING,
    PARTED,
    SAME,
    Cell,
    Timeline,
    loss_text,
    speed_text,
    steps_text,
)
from .verdict_data import FAIL, RENAMED, SLOWER

SYMBOLS = {
    FAIL: "❌",
    SLOWER: "⚠️",
    PARTED: "〰️",
    RENAMED: "🔀",
    ADDED: "➕",
    MISSING: "∅",
    SAME: "=",
    FIRST: "",
}
WORDS = {
    FAIL: "the gate fails the change",
    SLOWER: "slower (a speed warning)",
    PARTED: "the history parts within tolerance",
    RENAMED: "renamed (same history)",
    ADDED: "new in this file",
    MISSING: "not in this file",
    SAME: "the same history",
    FIRST: "first",
}
LEGEND = (
    "Each cell: final loss · steps to the target · outcome · steps per CPU second. Its mark is the "
    "gate's rule on the change from the earlier version: "
    + ", ".join(f"{SYMBOLS[m]} {WORDS[m]}" for m in (FAIL, SLOWER, PARTED, SAME, RENAMED, ADDED, MISSING))
    + "; [n] is the footnote with the reasons."
)


def markdown(timeline: Timeline) -> str:
    columns = timeline.columns
    runs = len(timeline.lines)
    lines = [
        f"## Convergence history: {len(columns)} version{'s' if len(columns) != 1 else ''}, "
        f"{len(timeline.cases)} cases, {runs} runs",
        "",
        "| # | versions | file | machine | against the previous |",
        "|---|---|---|---|---|",
    ]
    for index, column in enumerate(columns):
        counts = timeline.counts(index)
        judged = ", ".join(f"{SYMBOLS[m]} {n} {m}" for m, n in counts.items() if m != FIRST) if index else "-"
        lines.append(
            f"| {index + 1} | {_escape(column.label)} | {_escape(column.path.name)} | {column.machine} "
            f"| {judged or '-'} |"
        )
    if timeline.warnings:
        lines += ["", *[f"> {_escape(warning)}" for warning in timeline.warnings]]
    lines += ["", LEGEND, ""]
    headers = ["case", "dtype", *(_header(timeline, i) for i in range(len(columns)))]
    lines.append("| " + " | ".join(headers) + " |")
    lines.append("|" + "---|" * len(headers))
    notes: dict[int, int] = {}
    footnotes: list[str] = []
    for line, index, cell in timeline.changes():
        notes[id(cell)] = len(footnotes) + 1
        before = columns[cell.against].short if cell.against is not None else "?"
        footnotes.append(
            f"{len(footnotes) + 1}. **{_escape(line.label)}**, {before} → {columns[index].short}: "
            f"{cell.mark}: {_escape('; '.join(cell.reasons))}"
        )
    for line in timeline.lines:
        cells = [_escape(line.case), line.dtype, *(_cell(cell, notes.get(id(cell))) for cell in line.cells)]
        lines.append("| " + " | ".join(cells) + " |")
    if footnotes:
        lines += ["", "### Changes", "", *footnotes]
    return "\n".join(lines) + "\n"


def _header(timeline: Timeline, index: int) -> str:
    column = timeline.columns[index]
    shorts = [c.short for c in timeline.columns]
    name = column.short if shorts.count(column.short) == 1 else f"{column.short} ({column.path.name})"
    return f"{index + 1}: {_escape(name)}"


def cell_text(cell: Cell) -> str:
    """``0.0123 · 120 steps · descending · 12.3k/s`` (``-`` where the file lacks the run)."""
    record = cell.record
    if record is None:
        return "-"
    speed = speed_text(cell.speed)
    if cell.speed_note.startswith("not compared: other machine"):
        speed += " (other machine)"
    return " · ".join([loss_text(cell.final_loss), steps_text(record), record.outcome, speed])


def _cell(cell: Cell, note: int | None) -> str:
    mark = SYMBOLS[cell.mark]
    prefix = f"{mark}[{note}] " if note is not None else (f"{mark} " if mark else "")
    return prefix + _escape(cell_text(cell))


def _escape(text: str) -> str:
    """Text that cannot break a markdown table (a ``|`` in a case name) or start an HTML tag."""
    return text.replace("|", "\\|").replace("<", "&lt;").replace("\n", " ")
