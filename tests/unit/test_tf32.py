"""TF32 named first (issue 24): two runs whose TF32 state differs say so before anything else, in
the gate's verdict, a snapshot's report and explain; the fingerprint tells them apart and keeps
a CPU TensorFlow run's id. No framework: results files and headers are built by hand."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from test_config_diff import header
from test_gate import LOSSES, record

from pytest_convergence import fingerprint as fp
from pytest_convergence.cli.explain import tf32_lines
from pytest_convergence.gate import results
from pytest_convergence.gate.results import Results
from pytest_convergence.gate.verdict import compare_results
from pytest_convergence.gate.verdict_data import FAIL, PASS
from pytest_convergence.gate.verdict_text import format_table, markdown
from pytest_convergence.snapshot.compare import header_changes

CPU_TF = {
    "node": "ci-runner-1",
    "cpu_vendor": "GenuineIntel",
    "cpu_model": "Intel(R) Xeon(R) Processor",
    "isa": ["avx2", "avx512f"],
    "cpus": 16,
    "intra_op_threads": 0,
    "inter_op_threads": 0,
    "onednn": "rewrites on",
    "xla_flags": "",
    "cuda_build": "no",
    "gpus": [],
}
H100 = "NVIDIA H100 80GB HBM3 (compute 9.0)"
GPU_TF = {**CPU_TF, "cuda_build": "CUDA 12.5.1, cuDNN 9", "gpus": [f"{H100}, driver 550.54"]}
TF32_SENTENCE = (
    "TF32 differs: on (new) vs off (old): float32 matmuls on the GPU round their inputs to a 10-bit "
    "mantissa, ~3e-4 relative per matmul, above float32's default rtol 1e-4; train both sides with "
    "--convergence-tf32=off to compare float32 histories"
)


def precision(tf32: str, **changes: str) -> dict[str, str]:
    fields = {
        "keras_backend": "tensorflow",
        "accelerator": H100,
        "tf32": tf32,
        "tf32_setting": f"tensor_float_32_execution_enabled={tf32 == 'on'}",
        "determinism": "off",
    }
    return {**fields, **changes}


def machine(description: dict[str, Any]) -> dict[str, Any]:
    """A fingerprint as the plugin records it: the description and its id."""
    return {**description, "id": fp.fingerprint_id(description)}


# ------------------------------------------------------------------------------- the verdict
def test_two_results_files_that_differ_only_in_tf32_name_it_first(tmp_path: Path) -> None:
    """The issue's case: the same versions on the same GPU, TF32 off in the old file and on in the
    new, the float32 history moved by 3e-4 relative (what TF32 does to a matmul) and the float64
    one not at all. The verdict names TF32 before anything else, and on the float32 row first."""
    old_machine = machine({**GPU_TF, **precision("off")})
    new_machine = machine({**GPU_TF, **precision("on")})
    assert old_machine["id"] != new_machine["id"]
    assert fp.differences(old_machine, new_machine)[0] == "TF32 off -> on"
    moved = [loss * (1 + 3e-4) for loss in LOSSES]
    old_runs = [record("seed", "float32"), record("seed", "float64")]
    new_runs = [
        record("seed", "float32", checkpoint_losses=moved, final_loss=moved[-1]),
        record("seed", "float64"),
    ]
    results.write(tmp_path / "old.json", Results(runs=old_runs, machine=old_machine, created="old"))
    results.write(tmp_path / "new.json", Results(runs=new_runs, machine=new_machine, created="new"))

    verdict = compare_results(results.load(tmp_path / "old.json"), results.load(tmp_path / "new.json"))

    assert verdict.tf32 == TF32_SENTENCE
    float32, float64 = verdict.rows
    assert float32.verdict == FAIL
    assert float32.reasons[0] == TF32_SENTENCE  # first, before the history it explains
    assert float32.reasons[1].startswith("history outside rtol 0.0001")
    assert float64.verdict == PASS and not any("TF32" in text for text in float64.reasons + float64.notes)
    lines = format_table(verdict)
    assert lines[1] == f"first: {TF32_SENTENCE}"  # right under the title
    assert f"FAIL: seed [float32]: {TF32_SENTENCE}; history outside rtol 0.0001" in "\n".join(lines)
    assert verdict.warnings[0].endswith("(TF32 off -> on)")  # the machines differ in TF32 only
    assert markdown(verdict).splitlines()[4] == f"> **{TF32_SENTENCE}**"


def test_a_gpu_run_with_tf32_on_against_a_cpu_baseline_names_tf32_first() -> None:
    """The old file is a CPU TensorFlow run from before TF32 was recorded (no precision fields);
    the new one a GPU's with TF32 on. The run's own machine line says which TF32 it ran."""
    old_machine = machine(dict(CPU_TF))
    new_machine = machine({**GPU_TF, **precision("on")})
    moved = [loss * (1 - 3e-4) for loss in LOSSES]
    line = fp.summary(new_machine)
    assert line.endswith("TF32 on")
    new = record(checkpoint_losses=moved, versions={**record().versions, "machine": line})
    verdict = compare_results(
        Results(runs=[record()], machine=old_machine, created="old"),
        Results(runs=[new], machine=new_machine, created="new"),
    )
    assert verdict.tf32.startswith("TF32 differs: on (new) vs off (cpu: no TF32) (old): float32 matmuls")
    assert verdict.rows[0].reasons[0] == verdict.tf32


def test_a_float32_run_within_its_tolerance_notes_tf32_first_and_passes() -> None:
    slightly = [loss * (1 + 3e-5) for loss in LOSSES]
    verdict = compare_results(
        Results(runs=[record()], machine=machine({**GPU_TF, **precision("off")}), created="old"),
        Results(runs=[record(checkpoint_losses=slightly)], machine=machine({**GPU_TF, **precision("on")})),
    )
    row = verdict.rows[0]
    assert row.verdict == PASS
    assert row.notes[0] == TF32_SENTENCE


def test_the_same_tf32_state_names_no_tf32() -> None:
    on = machine({**GPU_TF, **precision("on")})
    verdict = compare_results(
        Results(runs=[record()], machine=on, created="old"),
        Results(runs=[record(checkpoint_losses=[v * 1.01 for v in LOSSES])], machine=dict(on)),
    )
    assert verdict.tf32 == ""
    assert not any("TF32" in reason for reason in verdict.rows[0].reasons)
    assert format_table(verdict)[1] != ""
    assert not format_table(verdict)[1].startswith("first:")


# ----------------------------------------------------------------------------- fingerprints
def test_a_cpu_tensorflow_fingerprint_keeps_its_id_with_the_precision_fields() -> None:
    """Every id recorded before the precision fields existed (CPU TensorFlow) stays the same:
    the fields are hashed only where they differ from a CPU TensorFlow process's."""
    before = fp.fingerprint_id(CPU_TF)
    cpu = {**CPU_TF, **precision(fp.TF32_CPU, accelerator="cpu")}
    assert fp.fingerprint_id(cpu) == before
    assert fp.summary(cpu) == fp.summary(CPU_TF)
    # the setting on a CPU changes nothing: TF32 does not apply there
    assert fp.fingerprint_id({**cpu, "tf32_setting": "tensor_float_32_execution_enabled=False"}) == before
    # what changes a history's bits changes the id
    for key, value in (
        ("keras_backend", "jax"),
        ("accelerator", H100),
        ("tf32", "on"),
        ("determinism", "on (op determinism)"),
    ):
        assert fp.fingerprint_id({**cpu, key: value}) != before, key
    on, off = {**GPU_TF, **precision("on")}, {**GPU_TF, **precision("off")}
    assert fp.fingerprint_id(on) != fp.fingerprint_id(off)


def test_the_summary_names_what_differs_from_a_cpu_tensorflow_process() -> None:
    line = fp.summary({**GPU_TF, **precision("on", keras_backend="jax", determinism="on (XLA_FLAGS x)")})
    assert line.endswith(f"{H100}, driver 550.54; keras backend jax; TF32 on; determinism on (XLA_FLAGS x)")
    # the accelerator is named where TensorFlow listed no GPU (another backend's)
    torch_gpu = {**CPU_TF, **precision("on (convolutions only)", keras_backend="torch")}
    assert fp.summary(torch_gpu).endswith(f"keras backend torch; {H100}; TF32 on (convolutions only)")


@pytest.mark.parametrize(
    ("line", "state"),
    [
        ("Intel; avx2; 2 cpus; intra-op threads default; oneDNN rewrites on", fp.TF32_CPU),
        ("Intel; avx2; 2 cpus; intra-op threads default; oneDNN rewrites on; GPU X (compute 8.0)", None),
        ("Intel; avx2; 2 cpus; intra-op threads default; GPU X (compute 8.0); TF32 off", "off"),
        ("Intel; avx2; 2 cpus; keras backend jax", fp.TF32_CPU),
        ("", None),
    ],
)
def test_a_machine_line_tells_its_tf32_state_where_it_can(line: str, state: str | None) -> None:
    assert fp.tf32_in_summary(line) == state


@pytest.mark.parametrize(
    ("old", "new", "differs"),
    [
        ("on", "off", True),
        (fp.TF32_CPU, "on", True),
        (fp.TF32_CPU, "off", False),  # float32 on a GPU and on a CPU: no TF32 either side
        ("on", "on (convolutions only)", True),
        (None, "on", False),  # not known: nothing claimed
    ],
)
def test_which_tf32_states_compute_differently(old: str | None, new: str, differs: bool) -> None:
    assert fp.tf32_differs(old, new) is differs


# ------------------------------------------------------------------------ snapshots, explain
def test_a_snapshot_report_names_tf32_before_the_machine() -> None:
    cpu_line = "Intel Xeon (GenuineIntel); avx2; 2 cpus; intra-op threads default; oneDNN rewrites on"
    gpu_line = f"{cpu_line}; {H100}; TF32 on"
    changes = header_changes(header(machine=cpu_line), header(machine=gpu_line, fingerprint="0123456789ab"))
    assert changes == [
        "TF32 differs: on (new) vs off (cpu: no TF32) (old): float32 matmuls on the GPU round their "
        "inputs to a 10-bit mantissa, ~3e-4 relative per matmul, above float32's default rtol 1e-4; "
        "train both sides with --convergence-tf32=off to compare float32 histories",
        f"machine {cpu_line} -> {gpu_line}",
    ]
    # a float16 run's matmuls do not run in TF32: the machine's change is named as any other
    old, new = header(machine=cpu_line, dtype="float16"), header(machine=gpu_line, dtype="float16")
    assert header_changes(old, new) == [f"machine {cpu_line} -> {gpu_line}"]


def test_explain_names_tf32_for_a_float32_run_that_had_it_on() -> None:
    gpu_line = f"Intel Xeon; avx2; 2 cpus; intra-op threads default; {H100}; TF32 on"
    (line,) = tf32_lines("float32", gpu_line)
    assert line.startswith("TF32 on: float32 matmuls on the GPU round their inputs to a 10-bit mantissa")
    assert "explain --tf32=off, pytest --convergence-tf32=off" in line
    assert tf32_lines("float16", gpu_line) == []
    assert tf32_lines("float32", gpu_line.replace("TF32 on", "TF32 off")) == []
    assert tf32_lines("float32", "Intel Xeon; avx2; 2 cpus; intra-op threads default") == []
