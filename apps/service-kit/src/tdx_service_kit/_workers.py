"""Serve one app from several worker processes that share one listening socket.

The parent binds the socket (a `ListenError` before any worker starts), then starts each
worker with multiprocessing's `spawn` method: a fresh interpreter that inherits the socket and
nothing else of the parent's state (no event loop, no database connection, no thread). Each
worker builds its app with the caller's factory (which configures its logging: each record is
then tagged `"worker": index`) and serves it with `serve_on_socket`, so each
stops as gracefully, and within the same bound, as a single-process program; the kernel hands
each new connection to one of the workers waiting in `accept`.

The parent only supervises:

- a stop signal (SIGINT, SIGTERM), also one received before or during start-up, is forwarded
  as SIGTERM to every worker; a worker still running `graceful_seconds + stop_margin_seconds`
  after the stop is killed (SIGKILL) and the parent exits with `STOP_OVERRUN_EXIT_STATUS`;
- a worker that ends while the parent was not stopping ends the service: the others are
  stopped the same way, and the status is `WORKER_DIED_EXIT_STATUS` (75, EX_TEMPFAIL: the
  supervisor should start the whole service again), or 0 when the worker itself ended with 0
  (it was sent the stop directly, as systemd does to every process of a unit);
- metrics: prometheus-client's multiprocess mode, in a directory private to this run (made
  with `tempfile.mkdtemp`, mode 0700, removed at the end), named to the workers in
  `PROMETHEUS_MULTIPROC_DIR` (whatever the parent's environment says): every worker's
  `/metrics` shows the sum over all of them, and no earlier run's values. No worker is ever
  replaced while the others serve, so no dead worker's live gauge lingers.

The stop signals are blocked while the workers are started, and the mask is inherited: a
worker unblocks them only once its own `StartupSignals` records them, so a stop at any moment
reaches every worker and never interrupts one with a traceback.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import shutil
import signal
import socket
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import wait
from multiprocessing.process import BaseProcess
from types import FrameType
from typing import Any

from sanic import Sanic

from ._ops import MULTIPROC_ENV
from ._run import (
    GRACEFUL_SHUTDOWN_SECONDS,
    STOP_MARGIN_SECONDS,
    STOP_OVERRUN_EXIT_STATUS,
    bind_listener,
    listen_address,
    serve_on_socket,
)
from ._signals import STOP_SIGNALS, StartupSignals

log = logging.getLogger("tdx_service_kit")

MAX_WORKERS = 64
WORKER_DIED_EXIT_STATUS = 75  # EX_TEMPFAIL: a worker ended on its own; start the service again
WORKER_FAILED_EXIT_STATUS = 1  # the status of a worker whose app could not be built or served
POLL_SECONDS = 0.1

AppFactory = Callable[[int], "Sanic[Any, Any]"]
"""Builds the app of worker `index` (0 to workers - 1), in that worker. It is pickled to each
worker: a module-level function, or a `functools.partial` of one over picklable values."""


class WorkerError(RuntimeError):
    """The workers cannot be run as asked (their number, their metrics directory)."""


@dataclass(frozen=True)
class _WorkerOptions:
    graceful_seconds: float
    stop_margin_seconds: float
    uvloop: bool


def run_workers(
    factory: AppFactory,
    *,
    workers: int,
    host: str,
    port: int,
    signals: StartupSignals | None = None,
    graceful_seconds: float = GRACEFUL_SHUTDOWN_SECONDS,
    stop_margin_seconds: float = STOP_MARGIN_SECONDS,
    uvloop: bool = True,
) -> int:
    """Serve the apps `factory` builds from `workers` processes on `host:port` until SIGINT or
    SIGTERM; returns the exit status (0 after a stop, `WORKER_DIED_EXIT_STATUS` when a worker
    ended on its own, `STOP_OVERRUN_EXIT_STATUS` when one had to be killed). `ListenError` when
    the address cannot be bound, `WorkerError` for a number of workers outside 1 to
    `MAX_WORKERS`. `signals`: the parent's, installed before its own slow start-up steps."""
    if not 1 <= workers <= MAX_WORKERS:
        raise WorkerError(f"the number of workers must be 1 to {MAX_WORKERS}, not {workers}")
    if graceful_seconds <= 0 or stop_margin_seconds <= 0:
        raise ValueError("graceful_seconds and stop_margin_seconds must be positive")
    options = _WorkerOptions(graceful_seconds, stop_margin_seconds, uvloop)
    sock = bind_listener(host, port)
    metrics_dir = tempfile.mkdtemp(prefix="tdx-metrics-")
    supervisor = _Supervisor(graceful_seconds + stop_margin_seconds, metrics_dir)
    try:
        with supervisor.signals_handled(signals):
            supervisor.start(factory, workers, sock, options)
            log.info(
                "workers started",
                extra={
                    "address": listen_address(sock),
                    "workers": workers,
                    "pids": ",".join(str(pid) for pid in supervisor.pids()),
                },
            )
            return supervisor.supervise()
    finally:
        sock.close()
        shutil.rmtree(metrics_dir, ignore_errors=True)


class _Supervisor:
    def __init__(self, stop_bound: float, metrics_dir: str) -> None:
        self.stop_bound = stop_bound
        self.metrics_dir = metrics_dir
        self._workers: list[BaseProcess] = []
        self._stop = threading.Event()
        self._stop_signal: int | None = None
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)

    @contextlib.contextmanager
    def signals_handled(self, startup: StartupSignals | None) -> Any:
        previous = {signum: signal.getsignal(signum) for signum in STOP_SIGNALS}
        for signum in STOP_SIGNALS:
            signal.signal(signum, self._on_signal)
        if startup is not None and startup.received is not None:
            self._on_signal(startup.received)
        try:
            yield
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)
            self._wake_r.close()
            self._wake_w.close()

    def _on_signal(self, signum: int, _frame: FrameType | None = None) -> None:
        if self._stop_signal is None:
            self._stop_signal = signum
        self._stop.set()
        with contextlib.suppress(OSError):
            self._wake_w.send(b"\0")

    def pids(self) -> list[int]:
        return [worker.pid for worker in self._workers if worker.pid is not None]

    def start(
        self, factory: AppFactory, count: int, sock: socket.socket, options: _WorkerOptions
    ) -> None:
        context = multiprocessing.get_context("spawn")
        previous_dir = os.environ.get(MULTIPROC_ENV)
        os.environ[MULTIPROC_ENV] = self.metrics_dir  # what each spawned worker inherits
        signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
        try:
            for index in range(count):
                if self._stop.is_set():
                    break
                worker = context.Process(
                    target=_worker_main,
                    args=(factory, index, sock, options),
                    name=f"worker-{index}",
                    daemon=False,
                )
                worker.start()
                self._workers.append(worker)
        finally:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
            if previous_dir is None:
                os.environ.pop(MULTIPROC_ENV, None)
            else:
                os.environ[MULTIPROC_ENV] = previous_dir

    def supervise(self) -> int:
        """Wait for a stop or a worker's end, then stop every worker; the exit status."""
        ended_status: int | None = None
        while not self._stop.is_set():
            ready = wait([w.sentinel for w in self._workers] + [self._wake_r], POLL_SECONDS)
            ended = [w for w in self._workers if w.sentinel in ready]
            if ended:
                worker = ended[0]
                worker.join()
                ended_status = worker.exitcode
                log.error(
                    "a worker ended on its own; stopping the others",
                    extra={"worker": worker.name, "pid": worker.pid, "status": worker.exitcode},
                )
                break
        if ended_status is None:
            log.info(
                "stop signal received; stopping the workers", extra={"signal": self._stop_signal}
            )
        killed = self._stop_all()
        if killed or any(w.exitcode == STOP_OVERRUN_EXIT_STATUS for w in self._workers):
            return STOP_OVERRUN_EXIT_STATUS
        if ended_status is not None and ended_status != 0:
            return WORKER_DIED_EXIT_STATUS
        log.info("stopped")
        return 0

    def _stop_all(self) -> bool:
        """SIGTERM to every worker still running; SIGKILL past the bound. True if one was."""
        deadline = time.monotonic() + self.stop_bound
        for worker in self._workers:
            if worker.is_alive() and worker.pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(worker.pid, signal.SIGTERM)
        for worker in self._workers:
            worker.join(max(0.0, deadline - time.monotonic()))
        late = [w for w in self._workers if w.is_alive()]
        for worker in late:
            log.error(
                "a worker did not stop within the bound; killing it",
                extra={"worker": worker.name, "pid": worker.pid, "bound_seconds": self.stop_bound},
            )
            worker.kill()
            worker.join()
        return bool(late)


class _WorkerTag(logging.Filter):
    """Names the worker (`"worker": index`) in each of its log records."""

    def __init__(self, index: int) -> None:
        super().__init__()
        self.index = index

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "worker"):
            record.worker = self.index
        return True


def _worker_main(
    factory: AppFactory, index: int, sock: socket.socket, options: _WorkerOptions
) -> None:
    """One worker: record stop signals (blocked since the parent started it), build the app,
    serve it on the shared socket; a failure ends the worker with status 1, logged."""
    signals = StartupSignals().install()
    signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
    try:
        app = factory(index)
        for handler in logging.getLogger().handlers:  # the ones the factory configured
            handler.addFilter(_WorkerTag(index))
        serve_on_socket(
            app,
            sock,
            signals=signals,
            graceful_seconds=options.graceful_seconds,
            uvloop=options.uvloop,
            stop_margin_seconds=options.stop_margin_seconds,
        )
    except Exception as exc:  # the worker's last word: one log line, no traceback
        log.error(
            "the worker failed",
            extra={"worker": index, "reason": f"{type(exc).__name__}: {exc}"},
        )
        raise SystemExit(WORKER_FAILED_EXIT_STATUS) from None
    finally:
        sock.close()
