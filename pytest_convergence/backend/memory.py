"""Peak memory of one training: the host's (this process's resident memory) and, where a GPU
trained it, the device's.

Measured around the same span as the run's :class:`~..run.Timing` (the executions, not building or
tracing), so the gate can judge memory as it judges speed (:mod:`..gate.memory`).

The host peak is per run, not the process's lifetime peak: on Linux writing ``5`` to
``/proc/self/clear_refs`` resets the kernel's high-water mark of resident memory (``VmHWM``) to the
memory resident now, and ``VmHWM`` read afterwards is the training's own peak (measured here: a
200 MB numpy array after the reset raised it by 200 MB; ``ru_maxrss`` follows the same mark). Where
the file cannot be written (some sandboxes), a thread samples ``VmRSS`` every few milliseconds, which
can miss a short spike; without ``/proc`` (macOS) ``ru_maxrss`` gives the lifetime peak only, so the
growth is what the run added above every earlier peak, a lower bound. The method is recorded
beside the numbers, and the gate compares only numbers measured the same way.

The process's baseline (Python, the framework, the data) dominates a small model's peak, so the
growth over the memory resident when training began is what the gate judges.

Device peaks: TensorFlow and PyTorch reset their allocator's peak before the run; JAX cannot reset
``peak_bytes_in_use``, so its number is the process's peak so far (method ``jax-process-peak``).
None where the backend trains on no GPU.
"""

from __future__ import annotations

import contextlib
import math
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..run import Timing

CLEAR_REFS = Path("/proc/self/clear_refs")
STATUS = Path("/proc/self/status")
SAMPLE_INTERVAL = 0.005
"""Seconds between samples of the fallback thread: often enough for a training's allocations,
rare enough (a read of ``/proc`` costs microseconds) not to move its CPU time."""


@dataclass
class PeakMemory:
    """What one training's memory measurement found (NaN / None: not measured)."""

    host_peak_bytes: float = math.nan
    host_growth_bytes: float = math.nan
    memory_method: str = ""
    device_peak_bytes: float | None = None
    device_method: str = ""

    def record_on(self, timing: Timing) -> None:
        """Fill the run's :class:`~..run.Timing` with these numbers."""
        timing.host_peak_bytes, timing.host_growth_bytes = self.host_peak_bytes, self.host_growth_bytes
        timing.memory_method = self.memory_method
        timing.device_peak_bytes, timing.device_memory_method = self.device_peak_bytes, self.device_method


@contextlib.contextmanager
def peak_memory(backend: str) -> Iterator[PeakMemory]:
    """Measure the peak memory of the block; the numbers are filled in when it ends.

    ``backend`` is the Keras backend that trains (``tensorflow``, ``jax``, ``torch``): its GPU, if
    it has one, is measured too. A measurement that fails leaves its numbers unknown; it never
    fails the training.
    """
    memory = PeakMemory()
    host = _host_meter()
    device = _device_meter(backend)
    try:
        yield memory
    finally:
        if host is not None:
            memory.host_peak_bytes, memory.host_growth_bytes, memory.memory_method = host()
        if device is not None:
            memory.device_method, read = device
            memory.device_peak_bytes = _safely(read)


# ------------------------------------------------------------------------------------ host
def _host_meter() -> Callable[[], tuple[float, float, str]] | None:
    """Start measuring the host; the returned function stops and gives (peak, growth, method)."""
    start = resident_bytes()
    if start is not None and reset_peak():
        return lambda: _from_high_water(start)
    if start is not None:
        return _sampling(start)
    return _from_rusage()


def resident_bytes() -> float | None:
    """This process's resident memory now (``VmRSS``), or None without ``/proc``."""
    return _status_field("VmRSS")


def reset_peak() -> bool:
    """Reset the kernel's high-water mark of this process's resident memory to its present size."""
    try:
        CLEAR_REFS.write_text("5")
    except OSError:
        return False
    return True


def _status_field(name: str) -> float | None:
    try:
        text = STATUS.read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith(name + ":"):
            value, _, unit = line.split(":", 1)[1].strip().partition(" ")
            return float(value) * (1024 if unit.strip().lower() == "kb" else 1)
    return None


def _from_high_water(start: float) -> tuple[float, float, str]:
    peak = _status_field("VmHWM")
    if peak is None:
        return math.nan, math.nan, ""
    return peak, max(peak - start, 0.0), "clear_refs"


def _sampling(start: float) -> Callable[[], tuple[float, float, str]]:
    """A thread that samples the resident memory until stopped: where the mark cannot be reset."""
    peak = [start]
    stop = threading.Event()

    def sample() -> None:
        while not stop.wait(SAMPLE_INTERVAL):
            now = resident_bytes()
            if now is not None and now > peak[0]:
                peak[0] = now

    thread = threading.Thread(target=sample, name="convergence-memory", daemon=True)
    thread.start()

    def finish() -> tuple[float, float, str]:
        stop.set()
        thread.join()
        now = resident_bytes()
        top = max(peak[0], now if now is not None else start)
        return top, top - start, "sampled"

    return finish


def _from_rusage() -> Callable[[], tuple[float, float, str]] | None:
    """The lifetime peak (``ru_maxrss``): where there is no ``/proc``; None where no ``resource``."""
    try:
        import resource
    except ImportError:  # Windows
        return None
    # kilobytes on Linux, bytes on macOS
    unit = 1 if sys.platform == "darwin" else 1024

    def maxrss() -> float:
        return float(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * unit

    before = maxrss()

    def finish() -> tuple[float, float, str]:
        after = maxrss()
        return after, max(after - before, 0.0), "ru_maxrss"

    return finish


# ---------------------------------------------------------------------------------- device
def _device_meter(backend: str) -> tuple[str, Callable[[], float | None]] | None:
    """Reset the backend's GPU peak where it has a GPU; (method, reader), or None without one."""
    starts = {"tensorflow": _tensorflow_gpu, "jax": _jax_gpu, "torch": _torch_gpu}
    start = starts.get(backend)
    if start is None:
        return None
    try:
        return start()
    except Exception:  # a device query must never fail the training it measures
        return None


def _tensorflow_gpu() -> tuple[str, Callable[[], float | None]] | None:
    tf = sys.modules.get("tensorflow")
    if tf is None or not tf.config.list_physical_devices("GPU"):
        return None
    tf.config.experimental.reset_memory_stats("GPU:0")
    return "tensorflow", lambda: float(tf.config.experimental.get_memory_info("GPU:0")["peak"])


def _jax_gpu() -> tuple[str, Callable[[], float | None]] | None:
    jax = sys.modules.get("jax")
    if jax is None:
        return None
    gpus = [d for d in jax.local_devices() if d.platform == "gpu"]
    if not gpus:
        return None

    def read() -> float | None:
        stats = gpus[0].memory_stats() or {}
        peak = stats.get("peak_bytes_in_use")
        return None if peak is None else float(peak)

    return "jax-process-peak", read


def _torch_gpu() -> tuple[str, Callable[[], float | None]] | None:
    torch = sys.modules.get("torch")
    if torch is None or not torch.cuda.is_available():
        return None
    torch.cuda.reset_peak_memory_stats()
    return "torch", lambda: float(torch.cuda.max_memory_allocated())


def _safely(read: Callable[[], float | None]) -> float | None:
    try:
        return read()
    except Exception:
        return None
