"""The gate's verdict as one self-contained HTML page: the table, then old and new loss curves.

Everything is inline (CSS, figures as base64 PNG data URIs), so the page can be attached to a CI
run or mailed and still opens offline. matplotlib is imported here only, when a report is asked
for; it is an optional dependency (``pip install 'pytest-convergence[plot]'``).
"""

from __future__ import annotations

import base64
import html
import io
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import ConvergenceError
from ..files import atomic_write_text
from .plot import draw_pair
from .results import Results
from .verdict_data import ADDED, FAIL, HEAVIER, PASS, REMOVED, RENAMED, SLOWER, Row, Verdict
from .verdict_text import changed_count, count_line, mechanism_sentence, speed_cell

if TYPE_CHECKING:
    pass

FIGURE_SIZE = (6.5, 3.0)
"""Inches; at ``DPI`` a figure is 585 x 270 pixels, a few tens of kB as PNG."""
DPI = 90

CSS = """
:root { color-scheme: light; }
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif;
       margin: 24px; color: #1b1f24; background: #fff; }
h1 { font-size: 24px; margin: 0 0 4px; }
h1 .verdict { padding: 1px 10px; border-radius: 4px; color: #fff; }
h1 .verdict.pass { background: #1a7f37; }
h1 .verdict.fail { background: #cf222e; }
h2 { font-size: 18px; margin: 28px 0 8px; }
.versions { font-size: 16px; margin: 0 0 4px; }
.meta { color: #57606a; font-size: 12px; margin: 0 0 12px; }
.warnings { background: #fff8c5; border: 1px solid #d4a72c; border-radius: 4px; padding: 8px 12px 8px 28px;
            margin: 12px 0; }
table { border-collapse: collapse; width: 100%; font-size: 13px; }
th, td { border: 1px solid #d0d7de; padding: 4px 8px; text-align: left; vertical-align: top; }
th { background: #f6f8fa; }
td.num { white-space: nowrap; font-variant-numeric: tabular-nums; }
td.num .speed-note { white-space: normal; font-size: 11px; color: #57606a; display: inline-block;
                     max-width: 14em; }
td.case { overflow-wrap: break-word; max-width: 18em; }
td.reasons { min-width: 14em; }
td.reasons ul { margin: 0; padding-left: 16px; }
tr.fail td { background: #ffebe9; }
tr.fail td.verdict { color: #cf222e; font-weight: 700; }
tr.pass td.verdict { color: #1a7f37; }
tr.slower td { background: #fff8c5; }
tr.slower td.verdict { color: #9a6700; font-weight: 700; }
li.note { color: #57606a; list-style: circle; }
li.why { list-style: square; }
ol.mechanisms li { margin: 0 0 8px; }
ol.mechanisms a { margin-right: 4px; white-space: nowrap; }
ol.mechanisms a.fail { color: #cf222e; }
.confirmed { font-size: 12px; padding: 0 6px; border-radius: 3px; background: #dafbe1; color: #1a7f37; }
figcaption .mechanism { color: #1b1f24; }
tr.added td, tr.removed td, tr.renamed td { background: #f6f8fa; }
tr.added td.verdict, tr.removed td.verdict, tr.renamed td.verdict { color: #8250df; font-weight: 600; }
a { color: #0969da; }
.figures { display: flex; flex-wrap: wrap; gap: 16px; }
figure { margin: 0; flex: 0 1 calc(50% - 8px); box-sizing: border-box; border: 1px solid #d0d7de;
         border-radius: 6px; padding: 8px; min-width: 0; }
figure.fail { border: 2px solid #cf222e; }
figure h3 { font-size: 14px; margin: 0 0 4px; overflow-wrap: anywhere; }
figure h3 .tag { font-weight: 600; font-size: 12px; padding: 0 6px; border-radius: 3px; margin-left: 4px; }
figure.fail h3 .tag { background: #cf222e; color: #fff; }
figure.slower { border: 2px solid #d4a72c; }
figure.slower h3 .tag { background: #fff8c5; color: #9a6700; }
figure.pass h3 .tag { background: #dafbe1; color: #1a7f37; }
figure.added h3 .tag, figure.removed h3 .tag, figure.renamed h3 .tag { background: #fbefff; color: #8250df; }
figure img { display: block; width: 100%; height: auto; }
figcaption { font-size: 12px; color: #57606a; }
figcaption .why { color: #cf222e; }
"""


def write_report(path: Path, verdict: Verdict, old: Results, new: Results) -> None:
    """Write the report of ``verdict`` (from ``old`` and ``new``) to ``path``, atomically."""
    try:
        import matplotlib  # noqa: F401
        from matplotlib.figure import Figure
    except ImportError as error:
        raise ConvergenceError(
            f"--html needs matplotlib: pip install 'pytest-convergence[plot]' ({error})"
        ) from None
    path = Path(path)
    atomic_write_text(path, render(verdict, old, new, Figure))
    path.chmod(0o644)  # mkstemp's 0600 would keep a published CI artifact from being served


def render(verdict: Verdict, old: Results, new: Results, figure_class: Any) -> str:
    passed = verdict.passed
    word = "PASS" if passed else "FAIL"
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>Convergence gate: {word} - {_e(verdict.title)}</title>",
        f"<style>{CSS}</style></head>",
        f'<body data-figures="{len(verdict.rows)}">',
        f'<h1 id="verdict">Convergence gate: <span class="verdict {word.lower()}">{word}</span></h1>',
        f'<p class="versions">{_e(verdict.title)}</p>',
        f'<p class="meta">{_e(count_line(verdict))}. '
        f"Old: {_e(_provenance(old))}. New: {_e(_provenance(new))}.</p>",
    ]
    if verdict.warnings or verdict.tf32:
        parts.append('<ul class="warnings">')
        parts += [f"<li><strong>first: {_e(verdict.tf32)}</strong></li>"] if verdict.tf32 else []
        parts += [f"<li>warning: {_e(warning)}</li>" for warning in verdict.warnings]
        parts.append("</ul>")
    parts += _mechanisms(verdict)
    parts += _table(verdict.rows)
    parts.append('<h2>Loss curves</h2><div class="figures">')
    for index, row in enumerate(verdict.rows):
        parts.append(_figure(index, row, figure_class))
    parts += ["</div>", "</body></html>"]
    return "\n".join(parts) + "\n"


# ------------------------------------------------------------------------------ the mechanisms
def _mechanisms(verdict: Verdict) -> list[str]:
    """The changed cases grouped by what changed them, each case linked to its row: what a
    reviewer reads first (four mechanisms, not 27 failures)."""
    groups = verdict.mechanisms
    if not groups:
        return []
    index = {row.label: number for number, row in enumerate(verdict.rows)}
    by_label = {row.label: row for row in verdict.rows}
    changed = changed_count(verdict)
    lines = [
        f'<h2 id="mechanisms">Why: {len(groups)} mechanism{"s" if len(groups) != 1 else ""} explain '
        f"{changed} changed case{'s' if changed != 1 else ''}</h2>",
        '<ol class="mechanisms">',
    ]
    for _, title, labels in groups:
        confirmed = sum(1 for label in labels if _confirmed(by_label[label]) is True)
        badge = f' <span class="confirmed">{confirmed} confirmed by replay</span>' if confirmed else ""
        cases = ", ".join(
            f'<a href="#table-row-{index[label]}" class="{_css_class(by_label[label])}">{_e(label)}</a>'
            for label in labels
        )
        lines.append(f"<li><strong>{_e(title)}</strong> ({len(labels)}){badge}<br>{cases}</li>")
    lines.append("</ol>")
    return lines


def _confirmed(row: Row) -> bool | None:
    return None if row.mechanism is None else row.mechanism.confirmed


# ------------------------------------------------------------------------------ the table
TABLE_HEADERS = (
    "case",
    "dtype",
    "outcome old → new",
    "final loss old → new",
    "parts at step",
    "steps/s old → new",
    "speed (CPU time per step, new/old)",
    "verdict",
    "reasons",
)


def _table(rows: list[Row]) -> list[str]:
    lines = ["<h2>Summary</h2><table><thead><tr>"]
    lines.append("".join(f"<th>{_e(header)}</th>" for header in TABLE_HEADERS) + "</tr></thead><tbody>")
    for index, row in enumerate(rows):
        reasons = "".join(f"<li>{_e(reason)}</li>" for reason in row.reasons)
        if row.memory_warning:
            reasons += f"<li>{_e(row.memory_warning)}</li>"
        if row.mechanism is not None:
            reasons += f'<li class="why">why: {_e(mechanism_sentence(row.mechanism))}</li>'
        reasons += "".join(f'<li class="note">{_e(note)}</li>' for note in row.notes)
        ratio = _e(speed_cell(row))
        if row.speed_note:  # wraps, so the reasons beside it stay on the screen
            ratio += f'<br><span class="speed-note">{_e(row.speed_note)}</span>'
        cells = [
            f'<td class="case"><a href="#row-{index}">{_e(row.case)}</a></td>',
            f"<td>{_e(row.dtype)}</td>",
            f"<td>{_e(_pair(row, lambda r: r.outcome))}</td>",
            f'<td class="num">{_e(_pair(row, lambda r: _number(r.final_loss)))}</td>',
            f"<td>{_e(_parting(row))}</td>",
            f'<td class="num">{_e(_pair(row, lambda r: _speed(r.best_steps_per_second)))}</td>',
            f'<td class="num">{ratio}</td>',
            f'<td class="verdict">{_e(_verdict_word(row))}</td>',
            f'<td class="reasons">{f"<ul>{reasons}</ul>" if reasons else ""}</td>',
        ]
        lines.append(f'<tr class="{_css_class(row)}" id="table-row-{index}">{"".join(cells)}</tr>')
    lines.append("</tbody></table>")
    return lines


def _pair(row: Row, value: Any) -> str:
    before = "-" if row.old is None else value(row.old)
    after = "-" if row.new is None else value(row.new)
    return f"{before} → {after}"


def _parting(row: Row) -> str:
    if row.old is None or row.new is None:
        return "-"
    if row.parting_step is not None:
        return str(row.parting_step)
    if not np.intersect1d(row.old.checkpoint_steps, row.new.checkpoint_steps).size:
        return "no common checkpoint"
    return "identical"


# ------------------------------------------------------------------------------ the figures
def _figure(index: int, row: Row, figure_class: Any) -> str:
    png = _plot(row, figure_class)
    data = base64.b64encode(png).decode("ascii")
    alt = f"loss curves of {row.case} [{row.dtype}]"
    speed = _speed_caption(row)
    if row.speed_note:
        speed += f"; {row.speed_note}"
    caption = [f"<span>speed: {_e(speed)}</span>"]
    if row.reasons:
        why = "; ".join(row.reasons)
        caption.append(f'<br><span class="{"why" if row.verdict == FAIL else ""}">{_e(why)}</span>')
    if row.mechanism is not None:
        caption.append(f'<br><span class="mechanism">{_e(mechanism_sentence(row.mechanism))}</span>')
    return (
        f'<figure id="row-{index}" class="{_css_class(row)}">'
        f'<h3><a href="#table-row-{index}">{_e(row.case)}</a> [{_e(row.dtype)}]'
        f'<span class="tag">{_e(_verdict_word(row))}</span></h3>'
        f'<img src="data:image/png;base64,{data}" alt="{_e(alt)}" width="{int(FIGURE_SIZE[0] * DPI)}" '
        f'height="{int(FIGURE_SIZE[1] * DPI)}">'
        f"<figcaption>{''.join(caption)}</figcaption></figure>"
    )


def _plot(row: Row, figure_class: Any) -> bytes:
    """Old and new losses at their checkpoints, log-log, as PNG bytes.

    A ``matplotlib.figure.Figure`` made directly (not through pyplot) belongs to no global figure
    manager and uses no GUI backend: nothing to close, nothing left behind, safe in any process.
    """
    figure = figure_class(figsize=FIGURE_SIZE, dpi=DPI)
    draw_pair(figure.add_subplot(), row)
    figure.tight_layout(pad=0.4)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI, metadata={"Software": None})
    return buffer.getvalue()


# ------------------------------------------------------------------------------ text
def _speed_caption(row: Row) -> str:
    if row.old is not None and row.new is not None and row.verdict != RENAMED:
        text = (
            f"old {_speed(row.old.best_steps_per_second)} steps/s, "
            f"new {_speed(row.new.best_steps_per_second)} steps/s"
        )
        if row.speed_ratio is not None:
            factor = row.speed_ratio if row.speed_ratio >= 1 else 1 / row.speed_ratio
            change = "faster" if row.speed_ratio >= 1 else "slower"
            same = f"{factor:.2f}" == "1.00"
            text += f" (new/old {row.speed_ratio:.2f}x{'' if same else f', {factor:.2f}x {change}'})"
        return text
    record, side = (row.new, "new") if row.new is not None else (row.old, "old")
    assert record is not None
    return f"{side} {_speed(record.best_steps_per_second)} steps/s (only {side})"


def _speed(value: float) -> str:
    if not math.isfinite(value):
        return "?"
    return f"{value:,.0f}" if value >= 100 else f"{value:.3g}"


def _number(value: float | None) -> str:
    return "?" if value is None else f"{float(value):.4g}"


def _provenance(results: Results) -> str:
    machine = results.machine or {}
    if "merged" in machine:  # shards on several machines: how many runs each trained
        counts: dict[str, int] = {}
        for run in results.runs:
            name = _machine(results.machine_of(run))
            counts[name] = counts.get(name, 0) + 1
        each = "; ".join(f"{name}: {count} run{'s' * (count != 1)}" for name, count in counts.items())
        where = f"{len(machine['merged'])} machines" + (f" ({each})" if each else "")
    else:
        where = _machine(machine)
    created = results.created[:19].replace("T", " ") if results.created else "?"
    return f"{len(results.runs)} runs on {where}, {created}"


def _machine(machine: dict[str, Any]) -> str:
    if "merged" in machine:  # a run of a file merged before runs kept their own machine
        return "one of the merged machines"
    return f"{machine.get('node', '?')}, {machine.get('cpus', '?')} cpus"


def _css_class(row: Row) -> str:
    classes = {FAIL: "fail", PASS: "pass", SLOWER: "slower", ADDED: "added", REMOVED: "removed"}
    classes[HEAVIER] = "slower"  # a warning, coloured as speed's
    return classes.get(row.verdict, "renamed" if row.verdict == RENAMED else "other")


def _verdict_word(row: Row) -> str:
    """A speed-only verdict reads as what it is, never like a numerical failure."""
    if row.verdict == HEAVIER:
        return "heavier (memory warning)"
    return "slower (speed warning)" if row.verdict == SLOWER else row.verdict


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)
