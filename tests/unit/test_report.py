"""The HTML report of the upgrade gate, from synthetic results (no TensorFlow, a second or two)."""

from __future__ import annotations

import base64
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

from pytest_convergence.errors import ConvergenceError
from pytest_convergence.gate.results import Results, RunRecord
from pytest_convergence.gate.verdict import compare_results
from pytest_convergence.gate.verdict_data import FAIL, Verdict
from pytest_convergence.snapshot.format import checkpoint_steps

pytest.importorskip("matplotlib")

from pytest_convergence.gate.report import write_report

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
CHROMIUM = Path("/usr/bin/chromium")
CHECK_SCRIPT = Path(__file__).resolve().parents[2] / "tools" / "check_report.sh"
ESCAPED_CASE = 'deep<&>"net'
MACHINE = {"node": "ci-runner", "machine": "x86_64", "processor": "x86_64", "cpus": 16}
OLD_VERSIONS = {"tensorflow": "2.15.1", "keras": "2.15.0"}
NEW_VERSIONS = {"tensorflow": "2.17.0", "keras": "3.4.1"}


def record(
    case: str,
    dtype: str,
    losses: np.ndarray,
    *,
    outcome: str = "descending",
    versions: dict[str, str],
    wall_time: float = 1.0,
    target_loss: float | None = 1e-3,
) -> RunRecord:
    steps = checkpoint_steps(losses.size)
    history = losses[steps - 1]
    final = float(losses[-1])
    reached = np.flatnonzero(losses <= target_loss) if target_loss is not None else np.zeros(0)
    return RunRecord(
        case=case,
        dtype=dtype,
        engine="loop",
        test=f"tests/test_cases.py::test_{case}[{dtype}]",
        status="passed",
        outcome=outcome,
        evidence={},
        final_loss=final,
        steps=int(losses.size),
        target_loss=target_loss,
        steps_to_target=int(reached[0]) + 1 if reached.size else None,
        converged=None if target_loss is None else bool(reached.size),
        expectation_met=None,
        expectation_problems=[],
        checkpoint_steps=[int(s) for s in steps],
        checkpoint_losses=[float(v) for v in history],
        steps_per_second=losses.size / wall_time,
        wall_times=[wall_time, wall_time * 1.01, wall_time * 0.99],
        loss_dtype="float32",
        variable_dtype=dtype,
        versions=dict(versions),
    )


def decay(steps: int, rate: float, start: float = 0.7) -> np.ndarray:
    return start * np.exp(-rate * np.arange(1, steps + 1))


def synthetic() -> tuple[Results, Results]:
    """Two results: unchanged, slightly slower, outcome changed (loss 0), NaN, renamed, removed, added."""
    seed = decay(300, 0.02)
    reaching_zero = decay(1000, 0.01)
    reaching_zero[600:] = 0.0
    stalled = np.maximum(decay(1000, 0.01), 3e-3)
    descending = 0.7 / np.sqrt(np.arange(1, 501))
    blowing_up = descending.copy()
    blowing_up[150:] = np.nan
    renamed = decay(200, 0.03, start=1.3)
    nudged = seed * (1 + 1e-6 * (np.arange(seed.size) >= 40))
    old = Results(
        runs=[
            record("seed", "float32", seed, versions=OLD_VERSIONS),
            record("seed", "float16", reaching_zero, outcome="reached-zero", versions=OLD_VERSIONS),
            record(ESCAPED_CASE, "float32", descending, versions=OLD_VERSIONS, target_loss=None),
            record("legacy", "float64", decay(100, 0.05), versions=OLD_VERSIONS, wall_time=0.2),
            record("old_name", "bfloat16", renamed, versions=OLD_VERSIONS),
            record("speedy", "float32", seed, versions=OLD_VERSIONS, wall_time=2.0),
        ],
        machine=MACHINE,
        created="2024-05-01T10:00:00+00:00",
    )
    new = Results(
        runs=[
            record("seed", "float32", seed, versions=NEW_VERSIONS),
            record("seed", "float16", stalled, outcome="stalled", versions=NEW_VERSIONS),
            record(
                ESCAPED_CASE,
                "float32",
                blowing_up,
                outcome="diverged",
                versions=NEW_VERSIONS,
                target_loss=None,
            ),
            record("new_name", "bfloat16", renamed, versions=NEW_VERSIONS),
            record("speedy", "float32", nudged, versions=NEW_VERSIONS, wall_time=2.2),
            record("fresh", "float32", decay(400, 0.015), versions=NEW_VERSIONS, wall_time=0.3),
        ],
        machine=MACHINE,
        created="2024-06-01T10:00:00+00:00",
    )
    return old, new


class Page(HTMLParser):
    """The parts of the report the tests look at."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []
        self.rows: list[dict[str, str | None]] = []
        self.row_text: dict[str, list[str]] = {}
        self.h1: list[str] = []
        self._in_row: str | None = None
        self._in_h1 = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        self.tags.append((tag, attributes))
        if tag == "tr" and attributes.get("id", "").startswith("table-row-"):
            self._in_row = attributes["id"]
            self.rows.append(attributes)
            self.row_text[self._in_row] = []
        self._in_h1 = self._in_h1 or tag == "h1"

    def handle_endtag(self, tag: str) -> None:
        if tag == "tr":
            self._in_row = None
        if tag == "h1":
            self._in_h1 = False

    def handle_data(self, data: str) -> None:
        self.text.append(data)
        if self._in_row:
            self.row_text[self._in_row].append(data)
        if self._in_h1:
            self.h1.append(data)

    def all(self, tag: str) -> list[dict[str, str | None]]:
        return [attributes for name, attributes in self.tags if name == tag]


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Verdict, str, Page]:
    old, new = synthetic()
    verdict = compare_results(old, new)
    path = tmp_path_factory.mktemp("report") / "gate.html"
    write_report(path, verdict, old, new)
    text = path.read_text(encoding="utf-8")
    page = Page()
    page.feed(text)
    page.close()
    return path, verdict, text, page


def test_the_synthetic_verdict_covers_every_kind_of_row(report: tuple[Path, Verdict, str, Page]) -> None:
    _, verdict, _, _ = report
    kinds = {(row.case, row.dtype): row.verdict for row in verdict.rows}
    assert kinds == {
        ("seed", "float32"): "pass",
        ("seed", "float16"): FAIL,
        (ESCAPED_CASE, "float32"): FAIL,
        ("speedy", "float32"): "pass",
        ("legacy", "float64"): "removed",
        ("new_name", "bfloat16"): "renamed",
        ("fresh", "float32"): "added",
    }
    speedy = next(row for row in verdict.rows if row.case == "speedy")
    assert speedy.parting_step == 41
    assert not verdict.passed


def test_the_page_is_self_contained(report: tuple[Path, Verdict, str, Page]) -> None:
    path, _, text, page = report
    assert text.startswith("<!DOCTYPE html>")
    assert "http://" not in text and "https://" not in text
    assert not page.all("script") and not page.all("link") and not page.all("iframe")
    for tag, attributes in page.tags:
        for name in ("src", "href"):
            value = attributes.get(name)
            if value is not None:
                assert value.startswith(("data:image/png;base64,", "#")), (tag, name, value[:60])
    images = page.all("img")
    assert images
    for image in images:
        source = image["src"] or ""
        assert source.startswith("data:image/png;base64,")
        png = base64.b64decode(source.removeprefix("data:image/png;base64,"), validate=True)
        assert png.startswith(PNG_SIGNATURE)
        assert len(png) < 80_000, "figures are meant to stay small"
    assert not list(path.parent.glob(".*.tmp")), "the atomic write left a temporary file"


def test_one_figure_per_row(report: tuple[Path, Verdict, str, Page]) -> None:
    _, verdict, _, page = report
    figures = page.all("figure")
    assert len(figures) == len(page.all("img")) == len(verdict.rows) == 7
    assert page.all("body")[0]["data-figures"] == str(len(verdict.rows))
    anchors = {attributes["href"] for attributes in page.all("a")}
    assert {f"#{attributes['id']}" for attributes in figures} <= anchors


def test_the_title_gives_the_verdict_and_the_versions(report: tuple[Path, Verdict, str, Page]) -> None:
    _, verdict, _, page = report
    assert "".join(page.h1) == "Convergence gate: FAIL"
    assert verdict.title in "".join(page.text)
    assert "(Keras 2 → Keras 3)" in verdict.title
    assert "tensorflow 2.15.1" in verdict.title and "tensorflow 2.17.0" in verdict.title


def test_failing_rows_are_highlighted_with_their_reasons(report: tuple[Path, Verdict, str, Page]) -> None:
    _, verdict, _, page = report
    classes = [attributes["class"] for attributes in page.rows]
    assert classes == [{"FAIL": "fail", "pass": "pass"}.get(row.verdict, row.verdict) for row in verdict.rows]
    for index, row in enumerate(verdict.rows):
        text = "".join(page.row_text[f"table-row-{index}"])
        for reason in row.reasons:
            assert reason in text
    failing = {row.case: row for row in verdict.rows if row.verdict == FAIL}
    assert "outcome reached-zero -> stalled" in failing["seed"].reasons
    assert any(reason.startswith("history outside rtol") for reason in failing[ESCAPED_CASE].reasons)
    figure_classes = [attributes["class"] for attributes in page.all("figure")]
    assert figure_classes.count("fail") == 2


def test_text_is_escaped(report: tuple[Path, Verdict, str, Page]) -> None:
    _, _, text, page = report
    assert ESCAPED_CASE not in text
    assert "deep&lt;&amp;&gt;&quot;net" in text
    assert ESCAPED_CASE in "".join(page.text)
    alts = [attributes["alt"] for attributes in page.all("img")]
    assert f"loss curves of {ESCAPED_CASE} [float32]" in alts


def test_a_passing_gate(tmp_path: Path) -> None:
    old, new = synthetic()
    old.runs, new.runs = old.runs[:1], new.runs[:1]
    verdict = compare_results(old, new)
    path = tmp_path / "deep" / "report.html"
    write_report(path, verdict, old, new)
    page = Page()
    page.feed(path.read_text(encoding="utf-8"))
    assert "".join(page.h1) == "Convergence gate: PASS"
    assert [attributes["class"] for attributes in page.rows] == ["pass"]


def test_without_matplotlib_the_error_says_what_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    old, new = synthetic()
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(ConvergenceError, match=r"pip install 'pytest-convergence\[plot\]'"):
        write_report(tmp_path / "report.html", compare_results(old, new), old, new)
    assert not (tmp_path / "report.html").exists()


def test_chromium_renders_the_report(report: tuple[Path, Verdict, str, Page], tmp_path: Path) -> None:
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is not installed (apt-get install chromium)")
    path = report[0]
    screenshot = tmp_path / "report.png"
    done = subprocess.run(
        ["bash", str(CHECK_SCRIPT), str(path), str(screenshot)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert screenshot.read_bytes().startswith(PNG_SIGNATURE)
