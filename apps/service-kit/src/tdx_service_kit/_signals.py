"""A stop signal that arrives while a program prepares to serve, kept for `run_app`."""

from __future__ import annotations

import signal
from types import FrameType

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class StartupSignals:
    """Records SIGINT/SIGTERM from `install()` on, instead of dying mid-way through start-up.

    Without it, SIGTERM kills a program outright and SIGINT raises wherever the program is. A
    program installs it first, may check `received` after a slow step and not serve at all, and
    hands it to `run_app`, whose loop takes over the signals without a gap: a recorded stop
    makes `run_app` stop gracefully at once.
    """

    def __init__(self) -> None:
        self._received: int | None = None

    @property
    def received(self) -> int | None:
        """The first stop signal recorded since `install()`, or None."""
        return self._received

    def install(self) -> StartupSignals:
        """Record SIGINT and SIGTERM from now on."""
        for signum in STOP_SIGNALS:
            signal.signal(signum, self._record)
        return self

    def _record(self, signum: int, _frame: FrameType | None = None) -> None:
        if self._received is None:
            self._received = signum
