"""Print the catalogue's table (docs/catalogue.md) from a results file of the whole catalogue.

    ./dev demo -n 2 --convergence-results=catalogue.json
    .venv/bin/python tools/catalogue_table.py catalogue.json

Regenerated rather than typed, so the table says what this machine's run said; the dtypes Keras
refuses (an expectation with ``raises``) come from the spec files, since they leave no run.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

from pytest_convergence import tables
from pytest_convergence.gate.results import load
from pytest_convergence.spec.loader import load_spec

HEADERS = ("case", "dtype", "outcome", "final loss", "of", "steps", "target", "val acc")


def main(results_path: str, fixtures: str = "fixtures") -> None:
    runs = {(r.case, r.dtype): r for r in load(Path(results_path)).runs}
    rows: dict[tuple[str, str], tuple[str, ...]] = {}
    order: list[tuple[str, str]] = []  # by case, then in the spec's order of dtypes
    specs = sorted(
        (load_spec(path) for path in Path(fixtures).glob("*.convergence.toml")), key=lambda s: s.case.name
    )
    for spec in specs:
        for dtype in spec.dtypes:
            order.append((spec.case.name, dtype))
            expectation = spec.case.expectations.get(dtype)
            if expectation is not None and expectation.raises is not None:
                rows[(spec.case.name, dtype)] = (
                    spec.case.name,
                    dtype,
                    "(Keras refuses)",
                    "-",
                    "-",
                    f"{spec.case.total_steps:,}",
                    "-",
                    "-",
                )
    for key, run in runs.items():
        target = "-" if run.target_loss is None else ("met" if run.converged else "missed")
        accuracy = run.final_metrics.get("val_accuracy")
        rows[key] = (
            run.case,
            run.dtype,
            run.outcome,
            "nan" if math.isnan(run.final_loss) else f"{run.final_loss:.4g}",
            run.loss_kind,
            f"{run.steps:,}",
            target,
            "-" if accuracy is None else f"{accuracy:.3g}",
        )
    keys = [key for key in order if key in rows] + sorted(set(rows) - set(order))
    table = tables.format_table(HEADERS, [rows[key] for key in keys], right_aligned=(3, 5))
    print("\n".join(table))


if __name__ == "__main__":
    main(*sys.argv[1:])
