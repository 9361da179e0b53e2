"""A stop signal that arrives during start-up, kept and delivered again once Sanic serves."""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import signal
from types import FrameType
from typing import Any

from sanic import Sanic

log = logging.getLogger("tdx_service_kit")

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


# Runs before any other after_server_start listener, so that nothing the app does there can
# open a window without the guard.
GUARD_PRIORITY = 1_000_000


class StartupSignals:
    """Keeps a SIGINT/SIGTERM that arrives while the program starts, for a graceful stop.

    Two windows lose a stop signal: before Sanic installs its handlers (SIGTERM kills outright,
    SIGINT raises anywhere), and after it installed them but before its main loop runs (Sanic's
    own `app.stop` is then dropped and the server runs on). `install()` records signals from
    then on; `attach(app)` keeps recording through the second window and, once the main loop
    runs, gives the signals back to Sanic's graceful handler and delivers a recorded one again.
    A program may check `received` after a slow start-up step and not serve at all.
    """

    def __init__(self) -> None:
        self._received: int | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def received(self) -> int | None:
        """The first stop signal recorded since `install()`, or None."""
        return self._received

    def install(self) -> StartupSignals:
        """Record SIGINT and SIGTERM from now on."""
        for signum in STOP_SIGNALS:
            signal.signal(signum, self._record)
        return self

    def attach(self, app: Sanic[Any, Any]) -> None:
        """Guard `app`'s start: an `after_server_start` listener that runs before any other."""
        app.register_listener(self._guard, "after_server_start", priority=GUARD_PRIORITY)

    def _record(self, signum: int, _frame: FrameType | None = None) -> None:
        if self._received is None:
            self._received = signum

    async def _guard(self, app: Sanic[Any, Any]) -> None:
        loop = asyncio.get_running_loop()
        for signum in STOP_SIGNALS:
            loop.add_signal_handler(signum, self._record, signum)
        self._task = loop.create_task(self._hand_over_when_serving(app, loop))

    async def _hand_over_when_serving(
        self, app: Sanic[Any, Any], loop: asyncio.AbstractEventLoop
    ) -> None:
        # `is_running` is set just before Sanic's main loop starts; this task runs only there.
        while not app.state.is_running:  # noqa: ASYNC110 - Sanic offers no event for this
            await asyncio.sleep(0.01)
        for signum in STOP_SIGNALS:  # Sanic's own graceful handler, as its server installs it
            loop.add_signal_handler(signum, functools.partial(app.stop, terminate=False))
        received = self._received
        if received is not None:
            log.info("stop signal received during start-up; stopping", extra={"signal": received})
            os.kill(os.getpid(), received)
