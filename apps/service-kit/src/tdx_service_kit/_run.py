"""Serve an app in this one process until SIGINT/SIGTERM, then drain and stop.

Sanic's own runner (`app.run`) sets SIGINT and SIGTERM to SIG_IGN before it installs its
handlers, and its handler, if called before the main loop, stops nothing: a stop sent in those
windows (for instance right after the first answer, while the runner finishes starting) was
lost. So this module drives Sanic's documented low-level server API itself and owns the signal
handling from the first line to the last: there is no moment at which a stop is dropped.

A stop is bounded: from the stop signal, the process ends within `graceful_seconds` plus
`STOP_MARGIN_SECONDS` whatever hangs. Each step that can wait is bounded (in-flight requests,
the listening socket's `wait_closed`, which on Python 3.12.1+ waits for every transport the
server ever accepted, including ones Sanic does not track, background tasks), and a watchdog
thread armed by the stop signal ends the process with status `STOP_OVERRUN_EXIT_STATUS` if the
loop, a listener, `asyncio.Runner`'s own close (it waits up to 300 s for the default executor)
or the interpreter's exit (it joins every executor thread, unbounded) is still running then.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

from sanic import Sanic

from ._connections import GuardedHttpProtocol
from ._logging import json_logging_configured, route_sanic_logs_to_root
from ._signals import STOP_SIGNALS, StartupSignals

log = logging.getLogger("tdx_service_kit")

GRACEFUL_SHUTDOWN_SECONDS = 10.0
STOP_MARGIN_SECONDS = 5.0
STOP_OVERRUN_EXIT_STATUS = 70  # EX_SOFTWARE: the stop did not finish within its bound
WAIT_CLOSED_SECONDS = 1.0
DRAIN_POLL_SECONDS = 0.05
LISTEN_BACKLOG = 100


class ListenError(RuntimeError):
    """The address to serve on cannot be bound (in use, not local, not permitted)."""


def run_app(
    app: Sanic[Any, Any],
    *,
    host: str,
    port: int,
    signals: StartupSignals | None = None,
    graceful_seconds: float = GRACEFUL_SHUTDOWN_SECONDS,
    uvloop: bool = True,
    stop_margin_seconds: float = STOP_MARGIN_SECONDS,
) -> None:
    """Serve `app` on `host:port` in this process until SIGINT or SIGTERM.

    Start: bind (`ListenError` if that fails, before any listener runs), `before_server_start`
    listeners, serve, `after_server_start` listeners. Stop: no new connections, the
    `before_server_stop` listeners, idle connections closed, in-flight requests finish (up to
    `graceful_seconds`, then aborted), `after_server_stop`. A stop signal recorded by `signals`
    before this call, or one that arrives during start-up, ends start-up after the step under
    way: the program then stops as gracefully as if it had served. The event loop is uvloop's
    when it is installed and `uvloop` is true (Sanic's own default), else asyncio's.

    The process ends at the latest `graceful_seconds + stop_margin_seconds` after the stop
    signal: past that bound a watchdog logs an error and exits with status
    `STOP_OVERRUN_EXIT_STATUS` (70), so a supervisor never has to escalate to SIGKILL.
    """
    if graceful_seconds <= 0 or stop_margin_seconds <= 0:
        raise ValueError("graceful_seconds and stop_margin_seconds must be positive")
    sock = bind_listener(host, port)
    try:
        serve_on_socket(
            app,
            sock,
            signals=signals,
            graceful_seconds=graceful_seconds,
            uvloop=uvloop,
            stop_margin_seconds=stop_margin_seconds,
        )
    finally:
        sock.close()


def serve_on_socket(
    app: Sanic[Any, Any],
    sock: socket.socket,
    *,
    signals: StartupSignals | None,
    graceful_seconds: float,
    uvloop: bool,
    stop_margin_seconds: float,
) -> None:
    """`run_app` on a socket already listening (bound by the caller, who closes it): what each
    of `run_workers`' processes runs on the socket they share."""
    if graceful_seconds <= 0 or stop_margin_seconds <= 0:
        raise ValueError("graceful_seconds and stop_margin_seconds must be positive")
    watchdog = _StopWatchdog(graceful_seconds + stop_margin_seconds)
    if json_logging_configured():
        route_sanic_logs_to_root()
    with asyncio.Runner(loop_factory=_loop_factory(uvloop)) as runner:
        runner.run(_serve(app, sock, signals, graceful_seconds, watchdog))


def _loop_factory(use_uvloop: bool) -> Callable[[], asyncio.AbstractEventLoop] | None:
    if not use_uvloop:
        return None
    try:
        import uvloop  # optional, as in Sanic
    except ImportError:
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


def bind_listener(host: str, port: int) -> socket.socket:
    """A TCP socket listening on `host:port` (`ListenError` if it cannot be bound)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        return socket.create_server((host, port), family=family, backlog=LISTEN_BACKLOG)
    except OSError as exc:
        raise ListenError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from exc


class _StopWatchdog:
    """Ends the process `bound` seconds after `arm()` unless it has ended by then.

    The timer thread is a daemon: a process that stops in time exits without waiting for it.
    It is never disarmed, as the hang it bounds may come after `run_app` returns (the
    interpreter joining executor threads at exit)."""

    def __init__(self, bound: float) -> None:
        self.bound = bound
        self._timer: threading.Timer | None = None

    def arm(self) -> None:
        if self._timer is None:
            self._timer = threading.Timer(self.bound, self._overrun)
            self._timer.daemon = True
            self._timer.start()

    def _overrun(self) -> None:
        # Logging may block (a full stderr pipe, a lock held by a hung thread): try it in a
        # thread of its own for a moment, then exit regardless.
        def report() -> None:
            log.error(
                "stop did not finish within its bound; exiting now",
                extra={"bound_seconds": self.bound, "status": STOP_OVERRUN_EXIT_STATUS},
            )
            for handler in logging.getLogger().handlers:
                with contextlib.suppress(Exception):
                    handler.flush()

        try:
            reporter = threading.Thread(target=report, daemon=True)
            reporter.start()  # RuntimeError once the interpreter is finalizing (3.12+)
            reporter.join(timeout=1.0)
        except RuntimeError:
            report()
        finally:
            os._exit(STOP_OVERRUN_EXIT_STATUS)


class _Stop:
    """The first stop signal, as an event the serving coroutine waits on; it arms the
    watchdog that bounds the stop."""

    def __init__(self, watchdog: _StopWatchdog) -> None:
        self.signum: int | None = None
        self.event = asyncio.Event()
        self._watchdog = watchdog

    def request(self, signum: int) -> None:
        self._watchdog.arm()
        if self.signum is None:
            self.signum = signum
        self.event.set()


async def _serve(
    app: Sanic[Any, Any],
    sock: socket.socket,
    signals: StartupSignals | None,
    graceful_seconds: float,
    watchdog: _StopWatchdog,
) -> None:
    loop = asyncio.get_running_loop()
    # The loop's handlers replace the start-up ones atomically (a pending signal is handled
    # before the replacement), so a signal at any moment from here on reaches `stop`.
    stop = _Stop(watchdog)
    for signum in STOP_SIGNALS:
        loop.add_signal_handler(signum, functools.partial(stop.request, signum))
    if signals is not None and signals.received is not None and stop.signum is None:
        stop.request(signals.received)

    created = await app.create_server(
        sock=sock,
        protocol=GuardedHttpProtocol,
        return_asyncio_server=True,
        access_log=False,
        debug=False,
        asyncio_server_kwargs={"start_serving": False},  # not before the start listeners ran
    )
    if created is None:  # only without return_asyncio_server
        raise ListenError("Sanic did not return a server")
    server: Any = created  # Sanic's AsyncioServer carries no annotations
    await server.startup()
    await server.before_start()
    if not stop.event.is_set():
        await server.start_serving()  # answers connections from here on
        await server.after_start()
    if stop.event.is_set():
        log.info("stop signal received during start-up; stopping", extra={"signal": stop.signum})
    else:
        app.set_serving(True)
        log.info("serving", extra={"address": listen_address(sock)})
        await stop.event.wait()
        log.info("stop signal received; stopping", extra={"signal": stop.signum})
    app.set_serving(False)
    await server.before_stop()
    await _drain(app, server, graceful_seconds)
    await server.after_stop()
    for signum in STOP_SIGNALS:
        loop.remove_signal_handler(signum)
    log.info("stopped")


async def _drain(app: Sanic[Any, Any], server: Any, graceful_seconds: float) -> None:
    """Stop accepting, let in-flight requests finish within `graceful_seconds`, abort the rest."""
    if server.server is not None:
        server.server.close()
    deadline = time.monotonic() + graceful_seconds
    while server.connections and time.monotonic() < deadline:
        for conn in list(server.connections):
            conn.signal.stopped = True  # no keep-alive after the request under way
            conn.close_if_idle()
        await asyncio.sleep(DRAIN_POLL_SECONDS)
    for conn in list(server.connections):
        log.warning("aborting a request still running at shutdown")
        conn.abort()
    if server.server is not None:
        # Python 3.12.1+ waits here for every transport the server accepted, also one Sanic
        # never tracked (accepted while closing, refused at accept): bounded, then abandoned.
        abort_clients = getattr(server.server, "abort_clients", None)  # asyncio, 3.13+
        if abort_clients is not None:
            abort_clients()
        try:
            await asyncio.wait_for(server.server.wait_closed(), WAIT_CLOSED_SECONDS)
        except TimeoutError:
            log.warning("connections still open at shutdown; not waiting for them")
    tasks = list(app.tasks)  # background tasks the app started with `app.add_task`
    for task in tasks:
        task.cancel()
    if tasks:
        await asyncio.wait(tasks, timeout=max(0.1, deadline - time.monotonic()))


def listen_address(sock: socket.socket) -> str:
    """`host:port` (`[host]:port` for IPv6) of a listening socket, for logs."""
    host, port = sock.getsockname()[:2]
    return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"
