"""The results file: JSON round trip, atomic writes, errors on load, merging, and the CLI around it.

No TensorFlow: every :class:`RunRecord` is built by hand with :func:`record`.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any

import pytest

from pytest_convergence.cli import main
from pytest_convergence.gate import results
from pytest_convergence.gate.results import REQUIRED, SCHEMA_VERSION, Results, ResultsError, RunRecord
from pytest_convergence.tolerance import Tolerance

VERSIONS = {"tensorflow": "2.16.2", "keras": "3.4.1", "python": "3.11.9"}
MACHINE = {
    "node": "ci-runner-1",
    "machine": "x86_64",
    "processor": "x86_64",
    "cpus": 16,
    "system": "Linux 6.1",
    "python": "3.11.9",
}
FIX = "regenerate it with pytest --convergence --convergence-results="


def record(case: str = "seed", dtype: str = "float32", **changes: Any) -> RunRecord:
    """A plausible run; ``changes`` override any field."""
    values: dict[str, Any] = {
        "case": case,
        "dtype": dtype,
        "engine": "loop",
        "test": f"tests/test_models.py::test_{case}[{dtype}]",
        "status": "passed",
        "outcome": "descending",
        "evidence": {"drop": 0.9, "first_nan_step": None},
        "final_loss": 0.07,
        "steps": 100,
        "target_loss": 0.1,
        "steps_to_target": 70,
        "converged": True,
        "expectation_met": True,
        "expectation_problems": [],
        "checkpoint_steps": [25, 50, 75, 100],
        "checkpoint_losses": [0.5, 0.2, 0.1, 0.07],
        "steps_per_second": 120.5,
        "wall_times": [0.83, 0.81, 0.9],
        "loss_dtype": "float32",
        "variable_dtype": "float32",
        "versions": dict(VERSIONS),
        "tolerance": "",
    }
    values.update(changes)
    return RunRecord(**values)


def diverged(case: str = "overflow", dtype: str = "float16") -> RunRecord:
    """A run whose history ends in NaN, with everything optional unset."""
    return record(
        case,
        dtype,
        status="failed",
        outcome="diverged",
        evidence={"first_nan_step": 60, "peak": math.inf, "last": math.nan},
        final_loss=math.nan,
        target_loss=None,
        steps_to_target=None,
        converged=None,
        expectation_met=False,
        expectation_problems=["expected descending, got diverged"],
        checkpoint_losses=[0.5, 3e4, math.nan, math.nan],
        loss_dtype="float16",
        variable_dtype="float16",
        tolerance=Tolerance(rtol=0.01).to_text(),
    )


def same(a: Any, b: Any) -> bool:
    """Equality where NaN equals NaN, through dicts and lists."""
    if isinstance(a, float) and isinstance(b, float):
        return (math.isnan(a) and math.isnan(b)) or a == b
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    return type(a) is type(b) and a == b


def write_file(path: Path, *runs: RunRecord, machine: dict[str, Any] | None = None) -> Path:
    results.write(
        path, Results(list(runs), machine=dict(machine or MACHINE), created="2024-07-01T12:00:00+00:00")
    )
    return path


def a_file(tmp_path: Path, name: str = "results.json") -> Path:
    return write_file(tmp_path / name, record(), diverged())


# ------------------------------------------------------------------------------ round trip
def test_round_trip_keeps_every_field(tmp_path: Path) -> None:
    runs = [record("zeta"), diverged("alpha"), record("alpha", "float64", tolerance="rtol=1e-06")]
    original = Results(runs, machine=dict(MACHINE), created="2024-07-01T12:00:00+00:00")
    path = tmp_path / "results.json"
    results.write(path, original)
    loaded = results.load(path)
    assert loaded.schema == SCHEMA_VERSION
    assert loaded.created == original.created
    assert loaded.machine == MACHINE
    assert loaded.versions == VERSIONS
    assert [r.key for r in loaded.runs] == sorted(r.key for r in runs)
    by_key = loaded.by_key()
    for run in runs:
        back = by_key[run.key]
        for name in (f.name for f in fields(RunRecord)):
            assert same(getattr(back, name), getattr(run, name)), name
    assert loaded.to_json() == original.to_json()


def test_nan_losses_survive_the_round_trip(tmp_path: Path) -> None:
    path = write_file(tmp_path / "results.json", diverged())
    text = path.read_text(encoding="utf-8")
    assert "NaN" in text
    run = results.load(path).runs[0]
    assert math.isnan(run.final_loss)
    assert run.checkpoint_losses[:2] == [0.5, 3e4]
    assert all(math.isnan(v) for v in run.checkpoint_losses[2:])
    assert math.isnan(run.evidence["last"]) and run.evidence["peak"] == math.inf
    assert run.target_loss is None and run.steps_to_target is None and run.converged is None


def test_to_json_is_the_documented_document() -> None:
    document = json.loads(Results([record()], machine=dict(MACHINE), created="now").to_json())
    assert document["schema"] == SCHEMA_VERSION
    assert document["created"] == "now"
    assert document["machine"] == MACHINE
    assert document["versions"] == VERSIONS
    # a run's own machine is written only where it is not the file's (a merge of several machines)
    assert document["runs"] == [{k: v for k, v in asdict(record()).items() if k != "machine"}]


def test_versions_are_those_every_run_shares() -> None:
    other = {**VERSIONS, "python": "3.12.4"}
    assert Results([record("a"), record("b", versions=other)]).versions == {
        "tensorflow": "2.16.2",
        "keras": "3.4.1",
    }
    assert Results([]).versions == {}


def test_default_machine_and_created_are_filled_in() -> None:
    made = Results([record()])
    assert made.machine["cpus"] == os.cpu_count()
    assert {"node", "machine", "cpu_vendor", "cpu_model", "isa", "system", "python", "id"} <= set(
        made.machine
    )
    assert made.created.startswith("20")


def test_load_ignores_unknown_fields_and_defaults_the_tolerance(tmp_path: Path) -> None:
    path = a_file(tmp_path)
    document = json.loads(path.read_text(encoding="utf-8"))
    for run in document["runs"]:
        run["from_a_newer_writer"] = 1
        del run["tolerance"]
    path.write_text(json.dumps(document), encoding="utf-8")
    assert [r.tolerance for r in results.load(path).runs] == ["", ""]


# ------------------------------------------------------------------------------ atomic write
def test_write_leaves_no_temporary_file(tmp_path: Path) -> None:
    a_file(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results.json"]


def test_write_creates_missing_folders(tmp_path: Path) -> None:
    path = write_file(tmp_path / "deep" / "er" / "results.json", record())
    assert results.load(path).runs[0].case == "seed"


def test_write_replaces_an_existing_file_whole(tmp_path: Path) -> None:
    path = tmp_path / "results.json"
    path.write_text("x" * 100_000, encoding="utf-8")  # longer than what replaces it
    write_file(path, record())
    assert (
        path.read_text(encoding="utf-8")
        == Results([record()], machine=dict(MACHINE), created="2024-07-01T12:00:00+00:00").to_json()
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results.json"]


def test_failed_write_keeps_the_old_file_and_no_temporary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = a_file(tmp_path)
    before = path.read_bytes()

    def refuse(*_: Any) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", refuse)
    with pytest.raises(OSError):
        write_file(path, record("other"))
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results.json"]


# ------------------------------------------------------------------------------ load errors
def load_error(path: Path) -> str:
    with pytest.raises(ResultsError) as error:
        results.load(path)
    message = str(error.value)
    assert str(path) in message
    return message


def test_truncated_json_names_the_file_and_the_fix(tmp_path: Path) -> None:
    path = a_file(tmp_path)
    text = path.read_text(encoding="utf-8")
    path.write_text(text[: len(text) // 2], encoding="utf-8")
    message = load_error(path)
    assert "not valid JSON at line" in message
    assert "truncated" in message
    assert FIX + str(path) in message


@pytest.mark.parametrize("text", ["", "hello, world\n", "[results]\ncase = 'seed'\n"])
def test_not_json_names_the_file_and_the_fix(tmp_path: Path, text: str) -> None:
    path = tmp_path / "results.json"
    path.write_text(text, encoding="utf-8")
    message = load_error(path)
    assert "not valid JSON" in message
    assert FIX + str(path) in message


def test_binary_file_names_the_file_and_the_fix(tmp_path: Path) -> None:
    path = tmp_path / "results.json"
    path.write_bytes(b"\x1f\x8b\x08\x00\xff\xfe binary")
    assert FIX in load_error(path)


@pytest.mark.parametrize("document", [{"runs": []}, [1, 2], "results", None])
def test_json_without_schema_names_the_file_and_the_fix(tmp_path: Path, document: Any) -> None:
    path = tmp_path / "results.json"
    path.write_text(json.dumps(document), encoding="utf-8")
    message = load_error(path)
    assert "not a pytest-convergence results file (no 'schema')" in message
    assert FIX + str(path) in message


@pytest.mark.parametrize("schema", [0, 2, "1"])
def test_other_schema_version_names_the_file_and_the_fix(tmp_path: Path, schema: Any) -> None:
    path = a_file(tmp_path)
    document = json.loads(path.read_text(encoding="utf-8"))
    document["schema"] = schema
    path.write_text(json.dumps(document), encoding="utf-8")
    message = load_error(path)
    assert f"results schema {schema!r}" in message
    assert f"reads schema {SCHEMA_VERSION}" in message
    assert FIX + str(path) in message


@pytest.mark.parametrize("missing", ["final_loss", "checkpoint_losses", "wall_times", "versions", "case"])
def test_run_lacking_a_field_names_the_field_and_the_run(tmp_path: Path, missing: str) -> None:
    assert missing in REQUIRED
    path = a_file(tmp_path)
    document = json.loads(path.read_text(encoding="utf-8"))
    del document["runs"][1][missing]
    path.write_text(json.dumps(document), encoding="utf-8")
    message = load_error(path)
    assert f"runs[1] lacks {missing}" in message
    assert FIX + str(path) in message


def test_run_lacking_several_fields_names_them_all(tmp_path: Path) -> None:
    path = a_file(tmp_path)
    document = json.loads(path.read_text(encoding="utf-8"))
    del document["runs"][0]["steps"], document["runs"][0]["outcome"]
    path.write_text(json.dumps(document), encoding="utf-8")
    message = load_error(path)
    assert "runs[0] lacks" in message and "steps" in message and "outcome" in message


@pytest.mark.parametrize("runs", [None, [1]], ids=["runs-null", "run-not-object"])
def test_malformed_runs_name_the_file(tmp_path: Path, runs: Any) -> None:
    path = tmp_path / "results.json"
    path.write_text(json.dumps({"schema": SCHEMA_VERSION, "runs": runs}), encoding="utf-8")
    load_error(path)


def test_missing_file_names_the_file(tmp_path: Path) -> None:
    message = load_error(tmp_path / "nowhere.json")
    assert "cannot read the results file" in message


# ------------------------------------------------------------------------------ merge
def test_merge_combines_the_runs_of_several_files() -> None:
    parts = [
        Results([record("a"), record("a", "float64")], machine=dict(MACHINE)),
        Results([record("b")], machine=dict(MACHINE)),
        Results([diverged("c")], machine=dict(MACHINE)),
    ]
    merged = results.merge(parts)
    assert sorted(r.key for r in merged.runs) == [
        ("a", "float32"),
        ("a", "float64"),
        ("b", "float32"),
        ("c", "float16"),
    ]
    assert merged.versions == VERSIONS
    assert merged.schema == SCHEMA_VERSION


def test_merge_keeps_one_machine_when_all_agree() -> None:
    merged = results.merge(
        [Results([record("a")], machine=dict(MACHINE)), Results([record("b")], machine=dict(MACHINE))]
    )
    assert merged.machine == MACHINE


def test_merge_of_different_machines_keeps_them_all() -> None:
    other = {**MACHINE, "node": "ci-runner-2"}
    merged = results.merge(
        [Results([record("a")], machine=dict(MACHINE)), Results([record("b")], machine=other)]
    )
    assert merged.machine == {"merged": [MACHINE, other]}


@pytest.mark.parametrize("key", ["tensorflow", "keras"])
def test_merge_refuses_different_framework_versions(key: str) -> None:
    other = {**VERSIONS, key: "9.9.9"}
    with pytest.raises(ResultsError) as error:
        results.merge(
            [
                Results([record("a")], machine=MACHINE),
                Results([record("b", versions=other)], machine=MACHINE),
            ],
            ["old.json", "new.json"],
        )
    message = str(error.value)
    assert message.startswith(f"new.json: {key} 9.9.9, but another file has {key} {VERSIONS[key]}")
    assert "compared with `pytest-convergence compare`, not merged" in message


def test_merge_accepts_different_python_versions() -> None:
    other = {**VERSIONS, "python": "3.12.4"}
    merged = results.merge([Results([record("a")]), Results([record("b", versions=other)])])
    assert len(merged.runs) == 2


def test_merge_refuses_a_case_and_dtype_present_twice() -> None:
    with pytest.raises(ResultsError) as error:
        results.merge([Results([record("a")]), Results([record("a")])], ["w0.json", "w1.json"])
    assert str(error.value) == "w1.json: a [float32] is also in w0.json"


def test_merge_without_names_numbers_the_files() -> None:
    with pytest.raises(ResultsError, match=r"^file 2: a \[float32\] is also in file 1$"):
        results.merge([Results([record("a")]), Results([record("a")])])


def test_same_case_in_two_dtypes_merges() -> None:
    merged = results.merge([Results([record("a", "float16")]), Results([record("a", "float32")])])
    assert len(merged.runs) == 2


# ------------------------------------------------------------------------------ CLI
def test_cli_merge_writes_the_merged_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a = write_file(tmp_path / "a.json", record("a"), diverged("c"))
    b = write_file(tmp_path / "b.json", record("b"))
    out = tmp_path / "merged" / "results.json"
    assert main(["merge", str(out), str(a), str(b)]) == 0
    assert f"{out}: 3 runs from 2 files" in capsys.readouterr().out
    merged = results.load(out)
    assert sorted(r.key for r in merged.runs) == [("a", "float32"), ("b", "float32"), ("c", "float16")]
    assert merged.machine == MACHINE
    assert math.isnan(merged.by_key()[("c", "float16")].final_loss)


def test_cli_merge_refusal_is_an_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a = write_file(tmp_path / "a.json", record("a"))
    b = write_file(tmp_path / "b.json", record("b", versions={**VERSIONS, "tensorflow": "2.17.0"}))
    out = tmp_path / "merged.json"
    assert main(["merge", str(out), str(a), str(b)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ")
    assert str(b) in err and "compare" in err
    assert not out.exists()


@pytest.mark.parametrize("damage", ["missing", "truncated", "schema"])
def test_cli_compare_of_an_unreadable_file_is_an_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], damage: str
) -> None:
    good = a_file(tmp_path, "old.json")
    bad = a_file(tmp_path, "new.json")
    if damage == "missing":
        bad.unlink()
    elif damage == "truncated":
        bad.write_text(bad.read_text(encoding="utf-8")[:200], encoding="utf-8")
    else:
        bad.write_text(json.dumps({"schema": 0, "runs": []}), encoding="utf-8")
    assert main(["compare", str(good), str(bad)]) == 2
    captured = capsys.readouterr()
    assert captured.err.startswith("error: ")
    assert str(bad) in captured.err
    assert "verdict:" not in captured.out


# ------------------------------------------------------------------------------ merge --repeats
def test_repeats_pool_the_timings_of_sessions_with_identical_histories(tmp_path: Path) -> None:
    first = write_file(tmp_path / "1.json", record(wall_times=[0.9, 0.8]), diverged())
    second = write_file(tmp_path / "2.json", record(wall_times=[0.7]), diverged())  # NaN equals NaN
    assert main(["merge", "--repeats", str(tmp_path / "all.json"), str(first), str(second)]) == 0
    pooled = {run.key: run for run in results.load(tmp_path / "all.json").runs}
    assert pooled[("seed", "float32")].wall_times == [0.9, 0.8, 0.7]
    assert pooled[("seed", "float32")].best_wall_time == 0.7
    assert pooled[("overflow", "float16")].wall_times == [0.83, 0.81, 0.9, 0.83, 0.81, 0.9]


def test_repeats_that_trained_differently_are_refused_naming_the_run(tmp_path: Path) -> None:
    first = write_file(tmp_path / "1.json", record())
    second = write_file(tmp_path / "2.json", record(checkpoint_losses=[0.5, 0.2, 0.1, 0.0700001]))
    with pytest.raises(ResultsError, match=r"2\.json: seed \[float32\] trained differently"):
        results.merge_repeats([results.load(first), results.load(second)], [str(first), str(second)])


def test_repeats_of_other_runs_or_versions_are_refused(tmp_path: Path) -> None:
    base = results.load(write_file(tmp_path / "1.json", record()))
    other_run = results.load(write_file(tmp_path / "2.json", record(case="tuned")))
    with pytest.raises(ResultsError, match="not the same runs"):
        results.merge_repeats([base, other_run])
    other_version = results.load(
        write_file(tmp_path / "3.json", record(versions={**VERSIONS, "tensorflow": "2.15.1"}))
    )
    with pytest.raises(ResultsError, match="repeats are of one environment"):
        results.merge_repeats([base, other_version])
