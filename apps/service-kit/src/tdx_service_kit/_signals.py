"""A stop signal that arrives during start-up, kept and delivered again once Sanic serves."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from types import FrameType
from typing import Any

from sanic import Sanic

log = logging.getLogger("tdx_service_kit")

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class StartupSignals:
    """Records SIGINT/SIGTERM from `install()` until Sanic installs its own handlers.

    Sanic sets its graceful handlers only once its socket already serves; a signal before that
    would kill the process outright (SIGTERM) or raise anywhere (SIGINT). This keeps it instead,
    and `attach(app)` delivers it again once Sanic's main loop runs, so the stop is graceful.
    A program may also check `received` itself after a slow start-up step and not serve at all.
    """

    def __init__(self) -> None:
        self._received: int | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def received(self) -> int | None:
        """The first stop signal recorded since `install()`, or None."""
        return self._received

    def install(self) -> StartupSignals:
        """Record SIGINT and SIGTERM from now on (Sanic's handlers replace these when it serves)."""
        for signum in STOP_SIGNALS:
            signal.signal(signum, self._record)
        return self

    def attach(self, app: Sanic[Any, Any]) -> None:
        """Deliver a recorded signal again once `app` serves (an `after_server_start` listener)."""
        app.register_listener(self._redeliver, "after_server_start")

    def _record(self, signum: int, _frame: FrameType | None) -> None:
        if self._received is None:
            self._received = signum

    async def _redeliver(self, app: Sanic[Any, Any]) -> None:
        if self._received is not None:
            self._task = asyncio.get_running_loop().create_task(self._kill_when_serving(app))

    async def _kill_when_serving(self, app: Sanic[Any, Any]) -> None:
        # Sanic drops a stop that lands before its main loop runs; `is_running` marks that loop.
        while not app.state.is_running:  # noqa: ASYNC110 - Sanic offers no event for this
            await asyncio.sleep(0.01)
        signum = self._received
        if signum is not None:
            log.info("stop signal received during start-up; stopping", extra={"signal": signum})
            os.kill(os.getpid(), signum)
