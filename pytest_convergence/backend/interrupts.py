"""Ctrl-C while TensorFlow runs: held during a call of compiled code, raised between two calls.

How many steps go into one call (so how long a held Ctrl-C waits) is :mod:`.pacing`'s job.
"""

from __future__ import annotations

import signal
import threading
from types import FrameType, TracebackType
from typing import Any


class HeldInterrupt:
    """Ctrl-C (SIGINT) held while TensorFlow runs, raised as ``KeyboardInterrupt`` between calls.

    Python runs a signal handler at the next bytecode of the main thread. While a compiled loop
    runs, that bytecode is often a weakref callback TensorFlow's C++ calls back into, or the
    release of the call's tensors; a ``KeyboardInterrupt`` raised there cannot propagate (pytest
    reports a ``PytestUnraisableExceptionWarning``) and the session trained on to its end. Held
    here, the signal is raised in plain code at the end of the call it came in, which ends the
    run and (pytest's own handling) the session. Only the default handler is replaced, in the
    main thread: a handler someone installed, or an ignored SIGINT (an xdist worker), is kept.
    """

    def __init__(self) -> None:
        self.received = False
        self._previous: Any = None

    def __enter__(self) -> HeldInterrupt:
        if (
            threading.current_thread() is threading.main_thread()
            and signal.getsignal(signal.SIGINT) is signal.default_int_handler
        ):
            self._previous = signal.signal(signal.SIGINT, self._hold)
        return self

    def _hold(self, signum: int, frame: FrameType | None) -> None:
        self.received = True

    def raise_if_received(self) -> None:
        if self.received:
            self.received = False
            raise KeyboardInterrupt

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
            self._previous = None
        if kind is not KeyboardInterrupt:
            self.raise_if_received()  # also over an error of the last call: the user asked to stop
