"""tdx_service_kit.testing's program launcher, on small real programs: started and answering,
stopped with SIGTERM, and each way of failing named by its own error."""

from __future__ import annotations

import signal
import sys
from pathlib import Path

import pytest

from tdx_service_kit.testing import (
    ExitedEarly,
    IgnoredStop,
    NotInstalled,
    NotReady,
    Program,
    answers,
    free_port,
    installed_program,
    running,
)

HTTP_SERVER = """
import http.server, sys

class NoContent(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(204)
        self.end_headers()

http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), NoContent).serve_forever()
"""
DEAF_SERVER = "import signal\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\n" + HTTP_SERVER


def _program(tmp_path: Path, code: str, name: str = "prog") -> Program:
    port = free_port()
    return Program(
        name,
        [sys.executable, "-c", code, str(port)],
        {"PATH": "/usr/bin:/bin"},
        f"http://127.0.0.1:{port}",
        "/",
        tmp_path / f"{name}.log",
    )


def test_start_waits_until_it_answers_and_stop_sends_sigterm(tmp_path: Path) -> None:
    program = _program(tmp_path, HTTP_SERVER).start()
    assert answers(program.ready_url)
    assert program.stop() == -signal.SIGTERM
    assert not answers(program.ready_url)
    assert program.stop() == -signal.SIGTERM  # already stopped: its exit status again


def test_a_program_that_exits_first_is_exited_early_with_its_log(tmp_path: Path) -> None:
    program = _program(tmp_path, "import sys; print('cannot start'); sys.exit(3)")
    with pytest.raises(ExitedEarly, match="exited with 3") as info:
        program.start()
    assert "cannot start" in str(info.value)


def test_a_program_that_never_answers_is_not_ready_and_is_stopped(tmp_path: Path) -> None:
    program = _program(tmp_path, "import time; time.sleep(60)")
    with pytest.raises(NotReady):
        program.start(timeout=0.5)
    assert program.proc is not None and program.proc.poll() is not None


def test_a_program_ignoring_sigterm_is_killed_and_said_so(tmp_path: Path) -> None:
    program = _program(tmp_path, DEAF_SERVER).start()
    with pytest.raises(IgnoredStop, match="ignored SIGTERM"):
        program.stop(timeout=0.5)
    assert program.proc is not None and program.proc.returncode == -signal.SIGKILL


def test_running_starts_in_order_and_stops_all(tmp_path: Path) -> None:
    first, second = _program(tmp_path, HTTP_SERVER, "a"), _program(tmp_path, HTTP_SERVER, "b")
    with running(first, second) as programs:
        assert programs == (first, second)
        assert answers(first.ready_url) and answers(second.ready_url)
    assert not answers(first.ready_url) and not answers(second.ready_url)


def test_a_program_beside_the_interpreter_is_found_first() -> None:
    assert installed_program(Path(sys.executable).name) == sys.executable


def test_an_unknown_program_is_not_installed() -> None:
    with pytest.raises(NotInstalled, match="no-such-tdx-program"):
        installed_program("no-such-tdx-program")


def test_answers_is_false_where_nothing_listens_and_refuses_other_schemes() -> None:
    assert not answers(f"http://127.0.0.1:{free_port()}/")
    with pytest.raises(ValueError, match="http://"):
        answers("https://127.0.0.1/")
