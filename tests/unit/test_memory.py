"""Peak memory (issue 25) without a framework: the host measurement on a numpy allocation, each of
its fallbacks, the device meters' CPU and failure paths, the results file's fields, and the gate's
memory rule on synthetic records (as tests/unit/test_gate.py builds them) with its rendering."""

from __future__ import annotations

import json
import math
import sys
import time
import types
from pathlib import Path

import numpy as np
import pytest
from test_gate import MACHINE, OTHER_MACHINE, gate, new_record, only_row, record

from pytest_convergence.backend import memory as measuring
from pytest_convergence.errors import ResultsError
from pytest_convergence.gate import memory, results
from pytest_convergence.gate.report import write_report
from pytest_convergence.gate.results import Results, RunRecord
from pytest_convergence.gate.verdict import Thresholds, compare_results
from pytest_convergence.gate.verdict_data import FAIL, HEAVIER, PASS, SLOWER
from pytest_convergence.gate.verdict_text import count_line, format_table, markdown
from pytest_convergence.run import Timing

MIB = 2**20
ALLOCATION = 200_000_000
"""Bytes the measurement must see: 200 MB of numpy, every page written."""
SEEN = 0.99 * ALLOCATION
"""What the growth must reach: the allocation, less what the process freed meanwhile (measured:
199.8 MB once, the pages of the previous test's garbage given back)."""

linux_proc = pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs Linux's /proc")


def allocate_and_hold(seconds: float = 0.0) -> None:
    block = np.ones(ALLOCATION // 8)  # written, so resident
    time.sleep(seconds)
    del block


# ------------------------------------------------------------------------------ host measurement
@linux_proc
def test_the_host_peak_is_the_runs_own_and_its_growth_covers_the_allocation() -> None:
    allocate_and_hold()  # a peak before the run, which a lifetime measure would report again
    with measuring.peak_memory("none") as before:
        pass
    with measuring.peak_memory("none") as peak:
        allocate_and_hold()
    assert peak.memory_method in ("clear_refs", "sampled")
    assert peak.host_growth_bytes >= SEEN
    assert peak.host_peak_bytes >= peak.host_growth_bytes
    if peak.memory_method == "clear_refs":  # the mark was reset: the earlier peak is not this run's
        assert before.host_growth_bytes < ALLOCATION / 4
    assert peak.device_peak_bytes is None and peak.device_method == ""


@linux_proc
def test_where_the_mark_cannot_be_reset_a_thread_samples_the_resident_memory(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(measuring, "CLEAR_REFS", tmp_path / "absent" / "clear_refs")
    with measuring.peak_memory("none") as peak:
        allocate_and_hold(seconds=0.1)
    assert peak.memory_method == "sampled"
    assert peak.host_growth_bytes >= SEEN


def test_without_proc_the_lifetime_peak_is_a_lower_bound(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    pytest.importorskip("resource")
    monkeypatch.setattr(measuring, "STATUS", tmp_path / "absent")
    with measuring.peak_memory("none") as peak:
        pass
    assert peak.memory_method == "ru_maxrss"
    assert peak.host_peak_bytes > 0 and peak.host_growth_bytes >= 0


def test_the_numbers_fill_the_runs_timing_and_repeats_are_collected() -> None:
    first = Timing(1.0)
    measuring.PeakMemory(900.0 * MIB, 30.0 * MIB, "clear_refs", None, "").record_on(first)
    second = Timing(
        1.0, host_peak_bytes=910.0 * MIB, host_growth_bytes=31.0 * MIB, memory_method="clear_refs"
    )
    first.collect_memory([first, second, Timing(1.0)])  # the last measured nothing
    assert (first.host_growth_bytes, first.memory_method) == (30.0 * MIB, "clear_refs")
    assert first.host_growths == [30.0 * MIB, 31.0 * MIB]
    assert first.host_peaks == [900.0 * MIB, 910.0 * MIB]
    assert first.device_peaks == []


# ------------------------------------------------------------------------------ device meters
@pytest.mark.parametrize("backend", ["tensorflow", "jax", "torch", "numpy"])
def test_no_device_peak_without_a_gpu_or_its_framework(backend: str, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("tensorflow", "jax", "torch"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    with measuring.peak_memory(backend) as peak:
        pass
    assert peak.device_peak_bytes is None and peak.device_method == ""


def fake_torch(available: bool, fail: bool = False) -> types.ModuleType:
    torch = types.ModuleType("torch")

    def reset() -> None:
        if fail:
            raise RuntimeError("CUDA driver gone")

    torch.cuda = types.SimpleNamespace(  # type: ignore[attr-defined]
        is_available=lambda: available, reset_peak_memory_stats=reset, max_memory_allocated=lambda: 123456789
    )
    return torch


def test_a_gpu_peak_is_read_from_the_backends_allocator(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "torch", fake_torch(available=True))
    with measuring.peak_memory("torch") as peak:
        pass
    assert (peak.device_peak_bytes, peak.device_method) == (123456789.0, "torch")
    monkeypatch.setitem(sys.modules, "torch", fake_torch(available=False))
    with measuring.peak_memory("torch") as peak:
        pass
    assert peak.device_peak_bytes is None


def test_a_failing_device_query_never_fails_the_training(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "torch", fake_torch(available=True, fail=True))
    with measuring.peak_memory("torch") as peak:
        trained = True
    assert trained and peak.device_peak_bytes is None
    jax = types.ModuleType("jax")
    gpu = types.SimpleNamespace(platform="gpu", memory_stats=lambda: {"peak_bytes_in_use": 2048})
    jax.local_devices = lambda: [gpu]  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "jax", jax)
    with measuring.peak_memory("jax") as peak:
        pass
    assert (peak.device_peak_bytes, peak.device_method) == (2048.0, "jax-process-peak")


# ------------------------------------------------------------------------------ the results file
def measured(growths: list[float], **changes: object) -> RunRecord:
    """A record whose host peak growths (MiB) are ``growths``, measured with clear_refs."""
    fields: dict[str, object] = {
        "host_growth_bytes": [g * MIB for g in growths],
        "host_peak_bytes": [(800 + g) * MIB for g in growths],
        "memory_method": "clear_refs",
        **changes,
    }
    return record(**fields)


def new_measured(growths: list[float], **changes: object) -> RunRecord:
    old = measured(growths, **changes)
    names = (*results.MEMORY_LISTS, "memory_method", "device_memory_method")
    memory_fields = {k: getattr(old, k) for k in names}
    return new_record(**{**changes, **memory_fields})


def test_the_memory_fields_are_written_and_read_back(tmp_path: Path) -> None:
    path = tmp_path / "r.json"
    run = measured([30.0, 31.0], device_peak_bytes=[5e8], device_memory_method="tensorflow")
    results.write(path, Results(runs=[run], machine=dict(MACHINE)))
    loaded = results.load(path).runs[0]
    assert loaded.host_growth_bytes == run.host_growth_bytes
    assert loaded.host_peak_bytes == run.host_peak_bytes
    assert (loaded.device_peak_bytes, loaded.device_memory_method) == ([5e8], "tensorflow")


def test_an_older_file_without_memory_reads_as_unknown(tmp_path: Path) -> None:
    path = tmp_path / "old.json"
    results.write(path, Results(runs=[record()], machine=dict(MACHINE)))
    document = json.loads(path.read_text())
    for name in (*results.MEMORY_LISTS, "memory_method", "device_memory_method"):
        del document["runs"][0][name]
    path.write_text(json.dumps(document))
    loaded = results.load(path).runs[0]
    assert loaded.host_growth_bytes == [] and loaded.memory_method == ""


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("host_growth_bytes", "30 MiB"),
        ("host_peak_bytes", [1.0, None]),
        ("device_peak_bytes", [-1.0]),
        ("memory_method", 5),
    ],
)
def test_a_malformed_memory_field_names_the_file_and_field(tmp_path: Path, field: str, value: object) -> None:
    path = tmp_path / "bad.json"
    results.write(path, Results(runs=[record()], machine=dict(MACHINE)))
    document = json.loads(path.read_text())
    document["runs"][0][field] = value
    path.write_text(json.dumps(document))
    with pytest.raises(ResultsError, match=rf"bad\.json: runs\[0\]\.{field} is not"):
        results.load(path)


def test_unmeasured_timings_are_written_as_unknown() -> None:
    assert results._memory_fields(Timing(1.0)) == {
        "host_peak_bytes": [],
        "host_growth_bytes": [],
        "memory_method": "",
        "device_peak_bytes": [],
        "device_memory_method": "",
    }


def test_repeated_sessions_pool_their_peaks() -> None:
    first = Results(runs=[measured([30.0])], machine=dict(MACHINE))
    second = Results(runs=[measured([32.0, 31.0])], machine=dict(MACHINE))
    pooled = results.merge_repeats([first, second]).runs[0]
    assert pooled.host_growth_bytes == [30.0 * MIB, 32.0 * MIB, 31.0 * MIB]


# ------------------------------------------------------------------------------ the gate's rule
def test_growth_beyond_five_percent_is_a_memory_warning_not_a_failure() -> None:
    verdict = gate(measured([100.0] * 3), new_measured([110.0] * 3))
    row = only_row(verdict)
    assert row.verdict == HEAVIER and verdict.passed
    assert row.reasons == []
    assert "host peak growth 100 MiB -> 110 MiB (+10 MiB, 1.10x; beyond 5%, 5 MiB)" in row.memory_warning
    lines = format_table(verdict)
    assert f"HEAVIER (memory, a warning): seed [float32]: {row.memory_warning}" in lines
    assert count_line(verdict) == "0 of 1 failed, 1 heavier (memory warnings)"
    assert "### Memory (warnings, not failures)" in markdown(verdict)
    assert "⚠️ heavier (memory)" in markdown(verdict)


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ([100.0] * 3, [104.0] * 3),  # within 5%
        ([10.0] * 3, [10.9] * 3),  # 9% but under the 1 MiB floor
        ([100.0, 120.0, 101.0], [125.0, 110.0, 122.0]),  # within the repeats' spread (21 + 15 MiB)
        ([100.0] * 3, [60.0] * 3),
    ],  # less memory
)
def test_growth_within_the_rule_passes(old: list[float], new: list[float]) -> None:
    row = only_row(gate(measured(old), new_measured(new)))
    assert row.verdict == PASS and not row.memory_warning and not row.memory_note


def test_the_repeats_spread_is_beaten_by_a_larger_growth() -> None:
    row = only_row(gate(measured([100.0, 120.0, 101.0]), new_measured([150.0, 149.0, 160.0])))
    assert row.verdict == HEAVIER
    assert "beyond the repeats' spread, 31 MiB" in row.memory_warning


@pytest.mark.parametrize(
    ("old", "new", "note"),
    [
        (measured([100.0] * 3), new_measured([200.0] * 3), "not compared: other machine"),
        (record(), new_measured([200.0] * 3), "not compared: no peak memory recorded"),
        (
            measured([100.0] * 3, memory_method="sampled"),
            new_measured([200.0] * 3),
            "not compared: measured as sampled / clear_refs",
        ),
        (
            measured([100.0] * 3, memory_method="ru_maxrss"),
            new_measured([200.0] * 3, memory_method="ru_maxrss"),
            "not compared: only the process's lifetime peak was measurable",
        ),
    ],
)
def test_memory_is_compared_only_on_one_machine_measured_one_way(
    old: RunRecord, new: RunRecord, note: str
) -> None:
    other = "other machine" in note
    row = only_row(gate(old, new, new_machine=dict(OTHER_MACHINE) if other else None))
    assert row.verdict == PASS and row.memory_note == note


def test_fewer_than_three_peaks_a_side_are_not_judged() -> None:
    row = only_row(gate(measured([100.0, 100.0]), new_measured([200.0, 200.0, 200.0])))
    assert row.verdict == PASS
    assert row.memory_note == "not judged: 3 peaks a side are needed (--convergence-repeat=3)"


def test_device_peaks_are_judged_where_both_sides_trained_on_a_gpu() -> None:
    device = {"device_memory_method": "tensorflow"}
    row = only_row(
        gate(
            measured([10.0] * 3, device_peak_bytes=[1e9] * 3, **device),
            new_measured([10.0] * 3, device_peak_bytes=[1.2e9] * 3, **device),
        )
    )
    assert row.verdict == HEAVIER
    assert row.memory_warning.startswith("memory: device peak 954 MiB -> 1.14e+03 MiB")
    cpu_only = only_row(
        gate(measured([10.0] * 3, device_peak_bytes=[1e9] * 3, **device), new_measured([10.0] * 3))
    )
    assert cpu_only.verdict == PASS


@pytest.mark.parametrize(("mode", "verdict"), [("warn", HEAVIER), ("fail", FAIL), ("off", PASS)])
def test_the_memory_rule_decides_what_a_growth_does(mode: str, verdict: str) -> None:
    row = only_row(gate(measured([100.0] * 3), new_measured([150.0] * 3), thresholds=Thresholds(memory=mode)))
    assert row.verdict == verdict
    assert bool(row.reasons) == (mode == "fail")


def test_thresholds_move_the_rule() -> None:
    loose = Thresholds(memory_growth=0.5, memory_floor=0.0)
    assert only_row(gate(measured([100.0] * 3), new_measured([140.0] * 3), thresholds=loose)).verdict == PASS
    floor = Thresholds(memory_floor=100 * MIB)
    assert only_row(gate(measured([100.0] * 3), new_measured([190.0] * 3), thresholds=floor)).verdict == PASS


def test_a_memory_warning_stays_beside_a_failure_and_a_slowdown() -> None:
    failed = only_row(gate(measured([100.0] * 3), new_measured([150.0] * 3, final_loss=1.0)))
    assert failed.verdict == FAIL and failed.memory_warning
    slow = {"cpu_times": [2.0, 2.0, 2.0]}
    slower = only_row(gate(measured([100.0] * 3), new_measured([150.0] * 3, **slow)))
    assert slower.verdict == SLOWER and slower.memory_warning


def test_the_report_shows_a_memory_warning(tmp_path: Path) -> None:
    old = Results(runs=[measured([100.0] * 3)], machine=dict(MACHINE))
    new = Results(runs=[new_measured([150.0] * 3)], machine=dict(MACHINE))
    verdict = compare_results(old, new)
    write_report(tmp_path / "gate.html", verdict, old, new)
    text = (tmp_path / "gate.html").read_text(encoding="utf-8")
    assert "heavier (memory warning)" in text and "host peak growth 100 MiB -&gt; 150 MiB" in text


def test_mib_reads_like_the_rest_of_the_gate() -> None:
    assert memory.mib(30.5 * MIB) == "30.5 MiB"
    assert math.isclose(memory.FLOOR, MIB) and memory.GROWTH == 0.05


def test_compare_takes_the_memory_rule(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from pytest_convergence.cli import main

    old, new = tmp_path / "old.json", tmp_path / "new.json"
    results.write(old, Results(runs=[measured([100.0] * 3)], machine=dict(MACHINE)))
    results.write(new, Results(runs=[new_measured([150.0] * 3)], machine=dict(MACHINE)))
    assert main(["compare", str(old), str(new)]) == 0
    assert "1 heavier (memory warnings)" in capsys.readouterr().out
    assert main(["compare", str(old), str(new), "--memory", "fail"]) == 1
    assert main(["compare", str(old), str(new), "--memory", "off"]) == 0
    assert "heavier" not in capsys.readouterr().out
