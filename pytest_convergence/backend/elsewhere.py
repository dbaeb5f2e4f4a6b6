"""Training on a backend other than this process's: one child process per backend, kept for the
session.

Keras loads its backend once, at import, so a session that asks for TensorFlow and JAX trains the
runs of one of them here and sends the others to a process started with ``KERAS_BACKEND`` set.
What crosses is a request (the case, dtype, engine, perturbation) and the :class:`~..run.Run` it
gave, its history included; the model itself stays in the child (``run.model`` is None). Measured
on the catalogue's seed case: starting the child (importing Keras on JAX) costs about 3 s once,
a request about 5 ms beyond its training.

A case crosses with :mod:`pickle`: its data, and its model builder by reference (a function at
module level in an importable module, as a test module is). A lambda or a closure cannot cross:
the error says so and how to fix it. The child's stdout is its channel; what it prints goes to
its stderr.
"""

from __future__ import annotations

import atexit
import os
import pickle
import struct
import subprocess
import sys
from typing import IO, Any

from ..errors import ConvergenceError
from ..run import InProcess, Run

_WORKERS: dict[str, _Worker] = {}


class ElsewhereError(ConvergenceError):
    """A training in a backend's own process failed: its message, as the child gave it."""


def this_process() -> str:
    """The backend Keras runs on in this process (imported or about to be)."""
    keras = sys.modules.get("keras")
    if keras is not None and hasattr(keras, "config"):
        try:
            return str(keras.config.backend())
        except Exception:
            pass
    from ..backends import configured

    return configured()


def train_elsewhere(backend: str, request: dict[str, Any]) -> Run:
    """Train ``request`` (:func:`..engine.train`'s arguments) in ``backend``'s own process."""
    worker = _WORKERS.get(backend)
    if worker is None or not worker.alive():
        worker = _WORKERS[backend] = _Worker(backend)
    return worker.train(request)


def _send(stream: IO[bytes], message: Any) -> None:
    data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    stream.write(struct.pack("<Q", len(data)) + data)
    stream.flush()


def _receive(stream: IO[bytes]) -> Any:
    header = stream.read(8)
    if len(header) < 8:
        raise EOFError
    (size,) = struct.unpack("<Q", header)
    return pickle.loads(stream.read(size))


class _Worker:
    def __init__(self, backend: str) -> None:
        self.backend = backend
        environment = {**os.environ, "KERAS_BACKEND": backend}
        # the parent's import path, so a test module's builders can be found by reference
        environment["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
        self.process = subprocess.Popen(
            [sys.executable, "-m", "pytest_convergence.backend.elsewhere"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=environment,
        )
        atexit.register(self.close)

    def alive(self) -> bool:
        return self.process.poll() is None

    def train(self, request: dict[str, Any]) -> Run:
        assert self.process.stdin is not None and self.process.stdout is not None
        try:
            _send(self.process.stdin, request)
        except (pickle.PicklingError, AttributeError, TypeError) as error:
            raise ElsewhereError(
                f"case {request['case'].name!r} cannot be sent to the {self.backend} backend's process: "
                f"{error}\n  fix: define its model builder (and any function it names) at module level "
                "in an importable module, not as a lambda or a closure, or run this backend alone "
                f"(KERAS_BACKEND={self.backend} pytest --convergence)"
            ) from None
        except BrokenPipeError:
            raise self._died(request) from None
        try:
            kind, payload = _receive(self.process.stdout)
        except EOFError:
            raise self._died(request) from None
        if kind == "run":
            run: Run = payload
            return run
        if kind == "error":
            raise payload
        raise ElsewhereError(payload)

    def _died(self, request: dict[str, Any]) -> ElsewhereError:
        code = self.process.wait()
        return ElsewhereError(
            f"the {self.backend} backend's process ended (exit code {code}) while training case "
            f"{request['case'].name!r} [{request['dtype']}]: its stderr above says why"
        )

    def close(self) -> None:
        if self.alive():
            assert self.process.stdin is not None
            self.process.stdin.close()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()


def _serve() -> None:
    """The child: train each request with this process's backend and send back the run."""
    channel = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # anything printed goes to stderr, not into the channel
    requests = sys.stdin.buffer
    from . import engine
    from .precision import pin_from_environment

    pin_from_environment()  # the session's --convergence-tf32, which this process inherits

    while True:
        try:
            request = _receive(requests)
        except EOFError:
            return
        try:
            run = engine.train(**request)
            run.in_process = InProcess()
            _send(channel, ("run", run))
        except Exception as error:  # every failure goes back to the test that asked
            try:
                pickle.loads(pickle.dumps(error))
                _send(channel, ("error", error))
            except Exception:
                _send(channel, ("text", f"{type(error).__name__}: {error}"))


if __name__ == "__main__":
    _serve()
