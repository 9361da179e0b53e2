"""Serve an app in this one process until SIGINT/SIGTERM, then drain and stop."""

from __future__ import annotations

from typing import Any

from sanic import Sanic

from ._logging import json_logging_configured, route_sanic_logs_to_root

GRACEFUL_SHUTDOWN_SECONDS = 10.0


def run_app(app: Sanic[Any, Any], *, host: str, port: int) -> None:
    """Run `app` single-process (no workers, no reloader, no access log, no banner).

    Sanic's single-process server installs SIGINT/SIGTERM handlers that stop accepting,
    let in-flight requests finish (up to the graceful timeout), then run the stop listeners.
    """
    if json_logging_configured():
        route_sanic_logs_to_root()
    app.config.GRACEFUL_SHUTDOWN_TIMEOUT = GRACEFUL_SHUTDOWN_SECONDS
    app.run(
        host=host,
        port=port,
        single_process=True,
        auto_reload=False,
        access_log=False,
        debug=False,
        motd=False,
    )
