"""Kernel variants: which other CPUs this one can run, the settings each sets, what each refuses."""

from __future__ import annotations

import pytest

from pytest_convergence import kernels
from pytest_convergence.errors import ConvergenceError

AVX512_VNNI = frozenset({"sse4_1", "avx", "avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512_vnni"})
AVX2_ONLY = frozenset({"sse4_1", "avx", "avx2", "fma"})


def test_this_cpus_level_and_the_older_ones_it_can_be_capped_to() -> None:
    assert kernels.native_level(AVX512_VNNI) == "avx512_core_vnni"
    assert kernels.native_level(AVX2_ONLY) == "avx2"
    assert kernels.native_level(frozenset({"asimd"})) is None
    assert kernels.allowed(AVX2_ONLY) == ["sse41", "avx", "avx2"]
    # other CPUs: each older level, then this one with TensorFlow's rewrites the other way
    assert kernels.others(AVX2_ONLY) == ["sse41", "avx", "avx2/rewrites"]
    assert kernels.others(AVX512_VNNI)[-1] == "avx512_core_vnni/no-rewrites"
    assert kernels.others(frozenset()) == []


@pytest.mark.parametrize(
    ("name", "environment"),
    [
        ("avx2", {"ONEDNN_MAX_CPU_ISA": "AVX2", "TF_ENABLE_ONEDNN_OPTS": "0"}),  # as an AVX2 CPU runs
        ("AVX2/rewrites", {"ONEDNN_MAX_CPU_ISA": "AVX2", "TF_ENABLE_ONEDNN_OPTS": "1"}),
        ("avx512_core_vnni", {"ONEDNN_MAX_CPU_ISA": "AVX512_CORE_VNNI", "TF_ENABLE_ONEDNN_OPTS": "1"}),
        ("native", {}),
        ("native/no-rewrites", {"TF_ENABLE_ONEDNN_OPTS": "0"}),
        ("native/flip", {"TF_ENABLE_ONEDNN_OPTS": "0"}),  # this CPU runs them: flipped, off
        ("avx2/flip", {"ONEDNN_MAX_CPU_ISA": "AVX2", "TF_ENABLE_ONEDNN_OPTS": "1"}),
    ],
)
def test_a_variant_sets_the_cap_and_the_rewrites_as_such_a_cpu_runs_them(
    name: str, environment: dict[str, str]
) -> None:
    assert kernels.parse(name, AVX512_VNNI).environment() == environment


@pytest.mark.parametrize(
    ("name", "words"),
    [
        ("avx512_core", "above this CPU's avx2 instruction sets"),
        ("avx3", "unknown kernel variant 'avx3'"),
        ("avx2/fast", "unknown rewrites setting 'fast'"),
    ],
)
def test_a_variant_this_cpu_cannot_run_is_refused_with_the_ones_it_can(name: str, words: str) -> None:
    with pytest.raises(ConvergenceError, match="fix:") as error:
        kernels.parse(name, AVX2_ONLY)
    assert words in str(error.value)


def test_half_precision_is_skipped_where_a_capped_onednn_would_abort() -> None:
    capped_with_rewrites = kernels.parse("avx2/rewrites", AVX512_VNNI)
    for dtype in ("float16", "mixed_float16", "bfloat16", "mixed_bfloat16"):
        assert capped_with_rewrites.cannot_run(dtype) is not None
    assert capped_with_rewrites.cannot_run("float32") is None
    avx512 = kernels.parse("avx512_core/rewrites", AVX512_VNNI)  # oneDNN's bfloat16 kernels start here
    assert avx512.cannot_run("bfloat16") is None and avx512.cannot_run("float16") is not None
    as_an_avx2_cpu = kernels.parse("avx2", AVX512_VNNI)
    assert as_an_avx2_cpu.cannot_run("bfloat16") is None  # no rewrites: Eigen's kernels, as on such a CPU
    at_its_own_level = kernels.parse("avx2/rewrites", AVX2_ONLY)
    assert at_its_own_level.cannot_run("float16") is None  # a cap at the CPU's level removes no kernel


def test_the_environment_is_set_before_tensorflow_and_refused_after(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    environ: dict[str, str] = {"ONEDNN_MAX_CPU_ISA": "SSE41"}
    monkeypatch.delitem(sys.modules, "tensorflow", raising=False)
    kernels.apply(kernels.parse("native", AVX2_ONLY), environ)
    assert environ == {"PYTEST_CONVERGENCE_KERNELS": "native"}  # native clears an inherited cap
    monkeypatch.setitem(sys.modules, "tensorflow", object())
    with pytest.raises(ConvergenceError, match="already imported"):
        kernels.apply(kernels.parse("avx", AVX2_ONLY), environ)


def test_native_flip_turns_on_the_rewrites_a_cpu_without_vnni_leaves_off() -> None:
    assert kernels.parse("native/flip", AVX2_ONLY).environment() == {"TF_ENABLE_ONEDNN_OPTS": "1"}
