"""The history of many results files (:mod:`.timeline`) as one self-contained HTML page: the
versions, the table (each judged change coloured, its reasons on hover and in a footnote), then per
case a plot of the final loss along the versions, one line per dtype, the judged changes marked.

Everything is inline: CSS, and the plots as SVG drawn here (no matplotlib, no script), so the page
opens offline, attached to a CI run or mailed.
"""

from __future__ import annotations

import html
import math
from dataclasses import dataclass
from pathlib import Path

from ..files import atomic_write_text
from .timeline import ADDED, FIRST, MISSING, PARTED, SAME, Cell, Line, Timeline, loss_text
from .timeline_markdown import WORDS, cell_text
from .verdict_data import FAIL, RENAMED, SLOWER

CSS = """
:root { color-scheme: light; }
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif;
       margin: 24px; color: #1b1f24; background: #fff; }
h1 { font-size: 24px; margin: 0 0 8px; }
h2 { font-size: 18px; margin: 28px 0 8px; }
.meta, .legend { color: #57606a; font-size: 12px; margin: 4px 0 12px; }
.warnings { background: #fff8c5; border: 1px solid #d4a72c; border-radius: 4px; padding: 8px 12px 8px 28px;
            margin: 12px 0; font-size: 13px; }
table { border-collapse: collapse; font-size: 12px; }
th, td { border: 1px solid #d0d7de; padding: 3px 6px; text-align: left; vertical-align: top; }
th { background: #f6f8fa; }
table.versions td { font-size: 13px; }
td.run { white-space: nowrap; font-variant-numeric: tabular-nums; }
td.run .outcome { color: #57606a; }
td.run sup a { text-decoration: none; }
td.fail { background: #ffebe9; }
td.fail .mark { color: #cf222e; font-weight: 700; }
td.slower { background: #fff8c5; }
td.parted { background: #fff1e5; }
td.parted .mark { color: #bc4c00; font-weight: 700; }
td.renamed { background: #fbefff; }
td.added .mark { color: #8250df; }
td.missing { color: #8c959f; background: #f6f8fa; }
td.same .mark { color: #1a7f37; }
.mark { margin-right: 3px; }
ol.changes li { margin: 0 0 4px; font-size: 13px; }
ol.changes li .kind { font-weight: 600; }
ol.changes li.fail .kind { color: #cf222e; }
a { color: #0969da; }
.figures { display: flex; flex-wrap: wrap; gap: 12px; }
figure { margin: 0; border: 1px solid #d0d7de; border-radius: 6px; padding: 6px; }
figure.fail { border: 2px solid #cf222e; }
figure h3 { font-size: 13px; margin: 0 0 2px; }
figcaption { font-size: 11px; color: #57606a; }
.swatch { display: inline-block; width: 10px; height: 3px; vertical-align: middle; margin: 0 3px 0 8px; }
svg text { font: 10px system-ui, "DejaVu Sans", sans-serif; fill: #57606a; }
"""

SYMBOLS = {FAIL: "✗", SLOWER: "!", PARTED: "≈", RENAMED: "⇄", ADDED: "+", MISSING: "∅", SAME: "=", FIRST: ""}
"""Each mark's sign in a cell: characters every system font has (the markdown's emoji may not render)."""
LEGEND = (
    "Each cell: final loss · steps to the target · outcome · steps per CPU second. Its sign is the "
    "gate's rule on the change from the earlier version: "
    + ", ".join(f"{SYMBOLS[m]} {WORDS[m]}" for m in (FAIL, SLOWER, PARTED, SAME, RENAMED, ADDED, MISSING))
    + "; [n] links to the reasons (also on hover)."
)

COLOURS = ("#0969da", "#8250df", "#1a7f37", "#bf3989", "#9a6700", "#57606a", "#cf222e", "#1b7c83")
"""One per dtype of a case, in the table's dtype order."""
WIDTH, HEIGHT = 380, 200
LEFT, RIGHT, TOP, BOTTOM = 52, 12, 20, 40
"""The plot's size and margins, pixels."""


def write_history(path: Path, timeline: Timeline) -> None:
    """Write the page of ``timeline`` to ``path``, atomically, readable as a published artifact."""
    path = Path(path)
    atomic_write_text(path, render(timeline))
    path.chmod(0o644)


def render(timeline: Timeline) -> str:
    cases = timeline.cases
    title = f"Convergence history: {len(timeline.columns)} versions, {len(cases)} cases"
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{_e(title)}</title>",
        f"<style>{CSS}</style></head>",
        f'<body data-figures="{len(cases)}">',
        f'<h1 id="history">{_e(title)}</h1>',
    ]
    parts += _versions(timeline)
    if timeline.warnings:
        parts.append('<ul class="warnings">')
        parts += [f"<li>{_e(warning)}</li>" for warning in timeline.warnings]
        parts.append("</ul>")
    notes = {id(cell): number for number, (_, _, cell) in enumerate(timeline.changes(), 1)}
    parts.append(f'<p class="legend">{_e(LEGEND)}</p>')
    parts += _table(timeline, notes)
    parts.append('<h2 id="plots">Final loss along the versions</h2>')
    parts.append(
        '<p class="legend">Log scale; one line per dtype. A red ring: the gate fails the change from '
        "the earlier version; orange: the history parts within tolerance; amber: slower; a red "
        "band: a version where the gate fails a dtype of the case. 0 and NaN are drawn on the "
        "bottom and top edges. Hover a point for its numbers and reasons.</p>"
    )
    parts.append('<div class="figures">')
    parts += [_figure(timeline, case) for case in cases]
    parts.append("</div>")
    parts += _changes(timeline, notes)
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


# ------------------------------------------------------------------------------ the tables
def _versions(timeline: Timeline) -> list[str]:
    parts = [
        '<table class="versions"><thead><tr><th>#</th><th>versions</th><th>file</th><th>created</th>'
        "<th>machine</th><th>against the previous</th></tr></thead><tbody>"
    ]
    for index, column in enumerate(timeline.columns):
        counts = timeline.counts(index)
        judged = ", ".join(f"{n} {m}" for m, n in counts.items() if m != FIRST) if index else "-"
        parts.append(
            f'<tr id="version-{index}"><td>{index + 1}</td><td>{_e(column.label)}</td>'
            f"<td>{_e(str(column.path))}</td><td>{_e(column.results.created[:19])}</td>"
            f"<td>{_e(column.machine)}</td><td>{_e(judged)}</td></tr>"
        )
    parts.append("</tbody></table>")
    return parts


def _table(timeline: Timeline, notes: dict[int, int]) -> list[str]:
    headers = "".join(
        f'<th title="{_e(column.label)} ({_e(column.path.name)})">{index + 1}: {_e(column.short)}</th>'
        for index, column in enumerate(timeline.columns)
    )
    parts = [
        f'<h2 id="table">Per case and dtype</h2><table class="history"><thead><tr><th>case</th>'
        f"<th>dtype</th>{headers}</tr></thead><tbody>"
    ]
    for number, line in enumerate(timeline.lines):
        cells = "".join(_cell(timeline, cell, notes.get(id(cell))) for cell in line.cells)
        parts.append(
            f'<tr id="row-{number}"><td><a href="#{_case_id(timeline, line.case)}">{_e(line.case)}</a></td>'
            f"<td>{_e(line.dtype)}</td>{cells}</tr>"
        )
    parts.append("</tbody></table>")
    return parts


def _cell(timeline: Timeline, cell: Cell, note: int | None) -> str:
    hover = _hover(timeline, cell)
    mark = SYMBOLS[cell.mark]
    link = f'<sup><a href="#change-{note}">[{note}]</a></sup>' if note is not None else ""
    shown = f'<span class="mark">{_e(mark)}</span>' if mark else ""
    return (
        f'<td class="run {cell.mark.lower()}" data-mark="{cell.mark}" title="{_e(hover)}">{shown}'
        f"{_e(cell_text(cell))}{link}</td>"
    )


def _hover(timeline: Timeline, cell: Cell) -> str:
    if cell.mark == FIRST:
        return "first version of this run"
    before = f" (against {timeline.columns[cell.against].short})" if cell.against is not None else ""
    return f"{WORDS[cell.mark]}{before}" + (": " + "; ".join(cell.reasons) if cell.reasons else "")


def _changes(timeline: Timeline, notes: dict[int, int]) -> list[str]:
    changes = timeline.changes()
    if not changes:
        return []
    parts = ['<h2 id="changes">Changes, as the gate judges them</h2><ol class="changes">']
    for line, index, cell in changes:
        before = timeline.columns[cell.against].short if cell.against is not None else "?"
        parts.append(
            f'<li id="change-{notes[id(cell)]}" class="{cell.mark.lower()}">'
            f"<strong>{_e(line.label)}</strong>, "
            f'{_e(before)} → {_e(timeline.columns[index].short)}: <span class="kind">{_e(cell.mark)}</span>: '
            f"{_e('; '.join(cell.reasons))}</li>"
        )
    parts.append("</ol>")
    return parts


# ------------------------------------------------------------------------------ the plots
def _figure(timeline: Timeline, case: str) -> str:
    lines = [line for line in timeline.lines if line.case == case]
    failed = any(cell.mark == FAIL for line in lines for cell in line.cells)
    swatches = "".join(
        f'<span class="swatch" style="background:{COLOURS[i % len(COLOURS)]}"></span>{_e(line.dtype)}'
        for i, line in enumerate(lines)
    )
    return (
        f'<figure id="{_case_id(timeline, case)}" class="{"fail" if failed else "plain"}">'
        f"<h3>{_e(case)}</h3>{plot(timeline, lines)}<figcaption>{swatches}</figcaption></figure>"
    )


@dataclass
class Scale:
    """Where a version and a loss fall on a plot: versions evenly spaced, losses on a log scale
    where every finite one is at least zero (else linear), 0 and NaN on the bottom and top edges."""

    count: int
    low: float
    high: float
    log: bool

    @classmethod
    def of(cls, count: int, values: list[float]) -> Scale:
        finite = [v for v in values if math.isfinite(v)]
        log = all(v >= 0 for v in finite)
        scaled = [math.log10(v) for v in finite if v > 0] if log else finite
        low, high = (min(scaled), max(scaled)) if scaled else (-1.0, 0.0)
        if high - low < (1.0 if log else 1e-12):  # one value, or nearly: half a decade either side
            middle = (low + high) / 2
            half = 0.5 if log else max(abs(middle) * 0.1, 0.5)
            low, high = middle - half, middle + half
        return cls(count, low, high, log)

    zero_edge = HEIGHT - BOTTOM + 10
    nan_edge = TOP - 10

    def x(self, index: int) -> float:
        return LEFT + (WIDTH - LEFT - RIGHT) * (index + 0.5) / self.count

    def y(self, value: float) -> float:
        if not math.isfinite(value):
            return self.nan_edge
        if self.log and value <= 0:
            return self.zero_edge
        position = ((math.log10(value) if self.log else value) - self.low) / (self.high - self.low)
        bottom, top = HEIGHT - BOTTOM - 4, TOP + 4
        return bottom - position * (bottom - top)

    def ticks(self) -> list[float]:
        if not self.log:
            return [self.low + (self.high - self.low) * i / 4 for i in range(5)]
        ticks = [10.0**e for e in range(math.ceil(self.low), math.floor(self.high) + 1)]
        if len(ticks) < 2:
            ticks = [10.0**self.low, 10.0**self.high]
        return ticks[:: max(1, math.ceil(len(ticks) / 5))]


def plot(timeline: Timeline, lines: list[Line]) -> str:
    """An SVG of the final loss of ``lines`` (one case's dtypes) along the versions (:class:`Scale`),
    each judged change ringed, each version where the gate fails a dtype of the case shaded."""
    count = len(timeline.columns)
    values = [cell.final_loss for line in lines for cell in line.cells if cell.final_loss is not None]
    scale = Scale.of(count, values)
    parts = [
        f'<svg width="{WIDTH}" height="{HEIGHT}" '
        f'viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-label="final loss of {_e(lines[0].case)} '
        'along the versions">',
        f'<rect x="{LEFT}" y="{TOP}" width="{WIDTH - LEFT - RIGHT}" height="{HEIGHT - TOP - BOTTOM}" '
        'fill="#fff" stroke="#d0d7de"/>',
    ]
    band = (WIDTH - LEFT - RIGHT) / count
    for index in range(count):
        if any(line.cells[index].mark == FAIL for line in lines):
            parts.append(
                f'<rect class="failed-version" x="{scale.x(index) - band / 2:.1f}" y="{TOP}" '
                f'width="{band:.1f}" height="{HEIGHT - TOP - BOTTOM}" fill="#ffebe9"/>'
            )
    parts += _axes(timeline, scale, values)
    for number, line in enumerate(lines):
        parts += _series(timeline, line, COLOURS[number % len(COLOURS)], scale)
    parts.append("</svg>")
    return "".join(parts)


def _axes(timeline: Timeline, scale: Scale, values: list[float]) -> list[str]:
    parts = []
    for tick in scale.ticks():
        position = scale.y(tick)
        parts.append(
            f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{position:.1f}" y2="{position:.1f}" '
            'stroke="#eaeef2"/>'
            f'<text x="{LEFT - 4}" y="{position + 3:.1f}" text-anchor="end">{_e(f"{tick:.2g}")}</text>'
        )
    if scale.log and any(v == 0 for v in values):
        parts.append(f'<text x="{LEFT - 4}" y="{scale.zero_edge + 3:.1f}" text-anchor="end">0</text>')
    if any(not math.isfinite(v) for v in values):
        parts.append(f'<text x="{LEFT - 4}" y="{scale.nan_edge + 3:.1f}" text-anchor="end">NaN</text>')
    count = len(timeline.columns)
    every = max(1, math.ceil(count / 8))
    for index, column in enumerate(timeline.columns):
        if index % every == 0 or index == count - 1:
            parts.append(
                f'<text x="{scale.x(index):.1f}" y="{HEIGHT - BOTTOM + 30}" text-anchor="middle">'
                f"{_e(column.short)}</text>"
            )
    return parts


RINGS = {FAIL: ("#cf222e", 7.5), PARTED: ("#fb8f44", 6), SLOWER: ("#d4a72c", 6), RENAMED: ("#8250df", 6)}
"""The ring around a point whose change the gate judged: colour and radius."""


def _series(timeline: Timeline, line: Line, colour: str, scale: Scale) -> list[str]:
    """One dtype's line (broken where a file lacks the run) and its points, each with its tooltip."""
    parts: list[str] = []
    segment: list[str] = []
    for index, cell in enumerate([*line.cells, None]):
        value = None if cell is None else cell.final_loss
        if value is None:
            if len(segment) > 1:
                parts.append(_polyline(segment, colour))
            segment = []
        else:
            segment.append(f"{scale.x(index):.1f},{scale.y(value):.1f}")
    for index, cell in enumerate(line.cells):
        value = cell.final_loss
        if value is None:
            continue
        cx, cy = scale.x(index), scale.y(value)
        tip = _e(
            f"{line.label} @ {timeline.columns[index].short}: final loss {loss_text(value)}; "
            + _hover(timeline, cell)
        )
        ring = RINGS.get(cell.mark)
        if ring is not None:
            parts.append(
                f'<circle class="judged {cell.mark.lower()}" cx="{cx:.1f}" cy="{cy:.1f}" r="{ring[1]}" '
                'fill="none" '
                f'stroke="{ring[0]}" stroke-width="2"><title>{tip}</title></circle>'
            )
        hollow = cell.mark == ADDED or not math.isfinite(value)
        parts.append(
            f'<circle class="point" cx="{cx:.1f}" cy="{cy:.1f}" r="3" fill="{"#fff" if hollow else colour}" '
            f'stroke="{colour}"><title>{tip}</title></circle>'
        )
    return parts


def _polyline(points: list[str], colour: str) -> str:
    return f'<polyline points="{" ".join(points)}" fill="none" stroke="{colour}" stroke-width="1.5"/>'


def _case_id(timeline: Timeline, case: str) -> str:
    return f"case-{timeline.cases.index(case)}"


def _e(text: str) -> str:
    return html.escape(str(text), quote=True)
