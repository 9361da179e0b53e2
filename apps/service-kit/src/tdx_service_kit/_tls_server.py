"""A tiny HTTPS server on loopback for tests of TLS clients: it serves one fixed body, counts
completed handshakes and HTTP requests, and can switch its certificate at any time."""

from __future__ import annotations

import http.server
import ssl
import tempfile
import threading
from pathlib import Path
from types import TracebackType
from typing import Any

__all__ = ["CountingTlsServer"]


class _Handler(http.server.BaseHTTPRequestHandler):
    server: _Server

    def do_GET(self) -> None:
        owner = self.server.owner
        with owner.lock:
            owner.requests.append(self.path)
        body = owner.body
        self.send_response(owner.status)
        self.send_header("content-type", "text/plain")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        return


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, owner: CountingTlsServer) -> None:
        self.owner = owner
        super().__init__(("127.0.0.1", 0), _Handler)

    def get_request(self) -> tuple[Any, Any]:
        sock, address = self.socket.accept()
        sock.settimeout(5)
        try:
            wrapped = self.owner.context.wrap_socket(sock, server_side=True)
        except (OSError, ssl.SSLError):
            sock.close()
            raise
        with self.owner.lock:
            self.owner.handshakes += 1
        return wrapped, address

    def handle_error(self, request: Any, client_address: Any) -> None:
        return


class CountingTlsServer:
    """`with CountingTlsServer(cert_pem, key_pem) as server:` serves `body` at every path on
    `server.port`. `requests` lists the paths of the HTTP requests received, `handshakes`
    counts completed TLS handshakes; `use(cert_pem, key_pem)` switches the certificate for
    the next connections."""

    def __init__(self, cert_pem: bytes, key_pem: bytes, *, body: bytes = b"hello\n") -> None:
        self.lock = threading.Lock()
        self.requests: list[str] = []
        self.handshakes = 0
        self.body = body
        self.status = 200
        self.context = self._context(cert_pem, key_pem)
        self._server = _Server(self)
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    @staticmethod
    def _context(cert_pem: bytes, key_pem: bytes) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        with tempfile.TemporaryDirectory() as tmp:
            cert, key = Path(tmp) / "cert.pem", Path(tmp) / "key.pem"
            cert.write_bytes(cert_pem)
            key.write_bytes(key_pem)
            context.load_cert_chain(cert, key)
        return context

    @property
    def port(self) -> int:
        address = self._server.server_address
        return int(address[1])

    def use(self, cert_pem: bytes, key_pem: bytes) -> None:
        self.context = self._context(cert_pem, key_pem)

    def __enter__(self) -> CountingTlsServer:
        self._thread.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
