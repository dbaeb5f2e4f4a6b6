"""TF32 and determinism read and pinned per backend (``backend/precision.py``): on the installed
CPU builds of PyTorch and JAX for real (TensorFlow's in ``tests/e2e/test_precision.py``: unit
tests stay TensorFlow-free), and a GPU's answers through stand-ins of each framework's switches,
since no GPU is at hand here."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest

from pytest_convergence.backend import precision
from pytest_convergence.fingerprint import TF32_CPU

H100 = "NVIDIA H100 80GB HBM3"


# ------------------------------------------------------------------ the installed frameworks
@pytest.fixture
def torch(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """PyTorch, its TF32 and determinism switches put back as they were after the test (and the
    environment that hands a pin on to child processes)."""
    monkeypatch.delenv(precision.ENVIRONMENT, raising=False)
    torch = pytest.importorskip("torch")
    matmul, conv = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    precision_before = torch.get_float32_matmul_precision()
    yield torch
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = matmul, conv
    torch.set_float32_matmul_precision(precision_before)


@pytest.fixture
def jax(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    monkeypatch.delenv(precision.ENVIRONMENT, raising=False)
    jax = pytest.importorskip("jax")
    before = jax.config.jax_default_matmul_precision
    yield jax
    jax.config.update("jax_default_matmul_precision", before)


def test_torch_on_a_cpu_records_its_setting_and_says_tf32_does_not_apply(torch: Any) -> None:
    assert precision.describe("torch") == {
        "keras_backend": "torch",
        "accelerator": "cpu",
        "tf32": TF32_CPU,
        "tf32_setting": (
            "cuda.matmul.allow_tf32=False, float32_matmul_precision=highest, cudnn.allow_tf32=True"
        ),
        "determinism": "off",
    }


def test_torch_pinned_on_and_off_reads_back_as_pinned(torch: Any) -> None:
    on = precision.pin_tf32("torch", True)
    assert (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32) == (True, True)
    assert torch.get_float32_matmul_precision() == "high"
    assert on["tf32_setting"] == (
        "cuda.matmul.allow_tf32=True, float32_matmul_precision=high, cudnn.allow_tf32=True"
    )
    assert on["tf32"] == TF32_CPU  # still a CPU: the setting is recorded, TF32 does not apply
    off = precision.pin_tf32("pytorch", False)
    assert (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32) == (False, False)
    assert torch.get_float32_matmul_precision() == "highest"
    assert off["tf32_setting"].startswith("cuda.matmul.allow_tf32=False, float32_matmul_precision=highest")


def test_a_pin_is_handed_on_to_the_processes_started_after_it(
    torch: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A backend's own process (backend/elsewhere.py) inherits the environment: it pins TF32 as
    the session did before its first training."""
    assert precision.pin_from_environment("torch") == {}  # nothing pinned: nothing done
    precision.pin_tf32("torch", False)
    assert os.environ[precision.ENVIRONMENT] == "off"
    monkeypatch.setenv(precision.ENVIRONMENT, "on")  # as a child process started now sees it
    assert precision.pin_from_environment("torch")["tf32_setting"].startswith("cuda.matmul.allow_tf32=True")
    assert torch.backends.cuda.matmul.allow_tf32 is True


def test_torch_determinism_is_read(torch: Any) -> None:
    torch.use_deterministic_algorithms(True)
    try:
        assert precision.describe("torch")["determinism"] == "on (torch.use_deterministic_algorithms)"
    finally:
        torch.use_deterministic_algorithms(False)


def test_jax_on_a_cpu_and_pinned(jax: Any) -> None:
    jax.config.update("jax_default_matmul_precision", None)
    assert precision.describe("jax") == {
        "keras_backend": "jax",
        "accelerator": "cpu",
        "tf32": TF32_CPU,
        "tf32_setting": "jax_default_matmul_precision=default",
        "determinism": "off",
    }
    assert precision.pin_tf32("jax", False)["tf32_setting"] == "jax_default_matmul_precision=highest"
    assert jax.config.jax_default_matmul_precision == "highest"
    assert precision.pin_tf32("jax", True)["tf32_setting"] == "jax_default_matmul_precision=tensorfloat32"


def test_a_framework_not_imported_is_not_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delitem(sys.modules, "tensorflow", raising=False)
    monkeypatch.delenv(precision.ENVIRONMENT, raising=False)
    assert precision.describe("tensorflow") == {}
    assert precision.pin_tf32("numpy", True) == {}  # no TF32 to pin on Keras's numpy backend


def test_the_backend_is_keras_backend_when_none_is_named(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    monkeypatch.delitem(sys.modules, "keras", raising=False)
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    monkeypatch.setenv("KERAS_BACKEND", "PyTorch")
    assert precision.backend_name() == "torch"
    monkeypatch.delenv("KERAS_BACKEND")
    assert precision.backend_name() == "tensorflow"
    (tmp_path / "keras.json").write_text('{"backend": "jax"}')
    assert precision.backend_name() == "jax"


# -------------------------------------------------------------- a GPU, through stand-ins
def fake_torch(*, matmul: bool = False, conv: bool = True, capability: tuple[int, int] = (9, 0)) -> Any:
    """PyTorch's switches as a CUDA build on an H100 answers them (defaults: PyTorch's own)."""
    return SimpleNamespace(
        backends=SimpleNamespace(
            cuda=SimpleNamespace(matmul=SimpleNamespace(allow_tf32=matmul, fp32_precision="none")),
            cudnn=SimpleNamespace(allow_tf32=conv, deterministic=False, benchmark=False),
        ),
        get_float32_matmul_precision=lambda: "high" if matmul else "highest",
        are_deterministic_algorithms_enabled=lambda: False,
        cuda=SimpleNamespace(
            is_available=lambda: True,
            get_device_capability=lambda index: capability,
            get_device_name=lambda index: H100,
        ),
        version=SimpleNamespace(hip=None),
    )


def test_torch_on_an_ampere_gpu_uses_tf32_for_convolutions_by_default() -> None:
    described = precision._describe_torch(fake_torch())
    assert described["accelerator"] == f"{H100} (compute 9.0)"
    assert described["tf32"] == "on (convolutions only)"
    assert precision._describe_torch(fake_torch(matmul=True))["tf32"] == "on"
    assert precision._describe_torch(fake_torch(conv=False))["tf32"] == "off"
    assert precision._describe_torch(fake_torch(matmul=True, capability=(7, 0)))["tf32"] == (
        "off (GPU without TF32: compute 7.0)"
    )


def refuse() -> Any:
    raise RuntimeError("you have used mix of the legacy and new APIs")


class _Refusing:
    """A switch namespace whose ``allow_tf32`` PyTorch refuses to read: the new per-backend API
    (``fp32_precision``) was set, and PyTorch will not mix the two."""

    def __init__(self, **values: Any) -> None:
        self.__dict__.update(values)

    @property
    def allow_tf32(self) -> bool:
        return bool(refuse())


def test_torch_set_through_its_new_api_is_read_there() -> None:
    torch = fake_torch()
    torch.backends.cuda = SimpleNamespace(matmul=_Refusing(fp32_precision="tf32"))
    torch.get_float32_matmul_precision = refuse
    described = precision._describe_torch(torch)
    assert described["tf32"] == "on"
    assert described["tf32_setting"].startswith("cuda.matmul.allow_tf32=True, float32_matmul_precision=None")


def fake_jax(setting: str | None = None, platform: str = "gpu") -> Any:
    device = SimpleNamespace(platform=platform, device_kind=H100, compute_capability="9.0")
    config = SimpleNamespace(jax_default_matmul_precision=setting)
    return SimpleNamespace(config=config, devices=lambda: [device])


@pytest.mark.parametrize(
    ("setting", "state"),
    [
        (None, "on"),
        ("tensorfloat32", "on"),
        ("highest", "off"),
        ("float32", "off"),
        ("bfloat16_3x", "off (bfloat16_3x: three bfloat16 passes)"),
    ],
)
def test_jax_on_an_ampere_gpu_follows_its_default_matmul_precision(setting: str | None, state: str) -> None:
    described = precision._describe_jax(fake_jax(setting))
    assert described["tf32"] == state
    assert described["accelerator"] == f"{H100} (compute 9.0)"


def test_nvidia_tf32_override_turns_it_off_everywhere(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NVIDIA_TF32_OVERRIDE", "0")
    described = precision._describe_jax(fake_jax())
    assert described["tf32"] == "off (NVIDIA_TF32_OVERRIDE=0)"
    assert described["tf32_setting"] == "jax_default_matmul_precision=default; NVIDIA_TF32_OVERRIDE=0"


def test_jax_determinism_and_a_tpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XLA_FLAGS", "--xla_gpu_deterministic_ops=true --xla_cpu_use_thunk_runtime=false")
    determinism = precision._describe_jax(fake_jax())["determinism"]
    assert determinism == "on (XLA_FLAGS --xla_gpu_deterministic_ops=true)"
    assert precision._describe_jax(fake_jax(platform="tpu"))["tf32"] == "n/a (tpu)"


def fake_tensorflow(enabled: bool = True, gpu: bool = True) -> Any:
    details = {"device_name": "NVIDIA A100-SXM4-40GB", "compute_capability": (8, 0)}
    experimental = SimpleNamespace(
        tensor_float_32_execution_enabled=lambda: enabled, get_device_details=lambda device: details
    )
    devices = [SimpleNamespace(name="/physical_device:GPU:0")] if gpu else []
    config = SimpleNamespace(experimental=experimental, list_physical_devices=lambda kind: devices)
    return SimpleNamespace(config=config)


def test_tensorflow_on_an_ampere_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    described = precision._describe_tensorflow(fake_tensorflow())
    assert described["accelerator"] == "NVIDIA A100-SXM4-40GB (compute 8.0)"
    assert described["tf32"] == "on"
    assert precision._describe_tensorflow(fake_tensorflow(enabled=False))["tf32"] == "off"
    assert precision._describe_tensorflow(fake_tensorflow(gpu=False))["tf32"] == TF32_CPU
    monkeypatch.setenv("TF_DETERMINISTIC_OPS", "1")
    assert precision._describe_tensorflow(fake_tensorflow())["determinism"] == "on (TF_DETERMINISTIC_OPS=1)"
