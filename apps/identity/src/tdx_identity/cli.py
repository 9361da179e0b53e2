"""`identity-svc`: parse settings, check the platform, then serve until SIGINT/SIGTERM."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
from collections.abc import Sequence
from types import FrameType
from typing import Any

from sanic import Sanic

from tdx_identity.app import create_app
from tdx_identity.core.service import IdentityService
from tdx_identity.exceptions import StartupError
from tdx_identity.settings import parse_settings
from tdx_service_kit import configure_logging, run_app

log = logging.getLogger("tdx_identity")

EXIT_STARTUP_FAILED = 1
EXIT_INTERRUPTED = 130


class _EarlyStopSignals:
    """Sanic installs its graceful SIGINT/SIGTERM handlers only after its socket already serves.

    A signal in that window would kill the process outright; this remembers it instead and
    delivers it again once Sanic's handlers are in place, so the stop is graceful.
    """

    def __init__(self) -> None:
        self.received: int | None = None
        self._task: asyncio.Task[None] | None = None

    def install(self, app: Sanic[Any, Any]) -> None:
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, self._record)
        app.register_listener(self._redeliver, "after_server_start")

    def _record(self, signum: int, _frame: FrameType | None) -> None:
        self.received = signum

    async def _redeliver(self, _app: Sanic[Any, Any]) -> None:
        if self.received is not None:
            self._task = asyncio.get_running_loop().create_task(self._kill_when_serving(_app))

    async def _kill_when_serving(self, app: Sanic[Any, Any]) -> None:
        # Sanic drops a stop that lands before its main loop runs; `is_running` marks that loop.
        while not app.state.is_running:  # noqa: ASYNC110 - Sanic offers no event for this
            await asyncio.sleep(0.01)
        log.info("stop signal received during start-up; stopping")
        if self.received is not None:
            os.kill(os.getpid(), self.received)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the service; returns 1 after one log line if it cannot start (usage errors exit 2)."""
    settings = parse_settings(argv, os.environ)
    configure_logging(settings.log_level)
    try:
        app = create_app(settings)
        service = app.ctx.service
        if not isinstance(service, IdentityService):
            raise RuntimeError("create_app did not attach an IdentityService")
        asyncio.run(service.prepare())
        log.info(
            "identity service starting",
            extra={
                "host": settings.host,
                "port": settings.port,
                "storage_path": str(settings.storage_path),
                "instance_pubkey": service.instance_pubkey.hex(),
                "lifecycle": service.state.lifecycle.value,
            },
        )
        _EarlyStopSignals().install(app)
        run_app(app, host=settings.host, port=settings.port)
    except StartupError as exc:
        log.error("cannot start: %s", exc)
        return EXIT_STARTUP_FAILED
    except KeyboardInterrupt:
        log.info("interrupted during start-up")
        return EXIT_INTERRUPTED
    return 0


if __name__ == "__main__":
    sys.exit(main())
