"""A lean HTTP/1.1 client for the benchmarks' timed phases: one keep-alive connection per
concurrent client, h11 for the protocol (the parser httpx itself rests on), none of httpx's
layers (pools, cookies jar, middleware), so that the client's own cost on a 2-core machine does
not hide the server's. Plain `http://` on loopback only; every answer is read whole.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import h11


class LeanHttpError(Exception):
    """The server closed the connection or spoke something h11 refuses."""


@dataclass(frozen=True)
class Answer:
    status: int
    headers: dict[str, str]
    """Lower-case names; a repeated header keeps its last value."""
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")


class Connection:
    """One keep-alive HTTP/1.1 connection to `base_url`; requests one at a time."""

    def __init__(self, base_url: str) -> None:
        parts = urlsplit(base_url)
        if parts.scheme != "http" or parts.hostname is None or parts.port is None:
            raise ValueError(f"a lean connection needs http://HOST:PORT, not {base_url!r}")
        self._host = parts.hostname
        self._port = parts.port
        self._authority = f"{parts.hostname}:{parts.port}".encode("ascii")
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._conn = h11.Connection(h11.CLIENT)

    async def _open(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        if self._reader is None or self._writer is None:
            self._reader, self._writer = await asyncio.open_connection(self._host, self._port)
            self._conn = h11.Connection(h11.CLIENT)
        return self._reader, self._writer

    async def request(
        self,
        method: str,
        path: str,
        *,
        body: bytes = b"",
        headers: dict[str, str] | None = None,
    ) -> Answer:
        reader, writer = await self._open()
        head = [(b"Host", self._authority)]
        if body or method != "GET":
            # As httpx and curl: a GET without a body carries no Content-Length (Sanic logs an
            # error for each 2xx answer to a GET whose "Content-Length: 0" body it never read).
            head.append((b"Content-Length", str(len(body)).encode("ascii")))
        if body:
            head.append((b"Content-Type", b"application/json"))
        for name, value in (headers or {}).items():
            head.append((name.encode("ascii"), value.encode("latin-1")))
        out = self._conn.send(h11.Request(method=method, target=path, headers=head))
        out += self._conn.send(h11.Data(data=body)) if body else b""
        out += self._conn.send(h11.EndOfMessage())
        writer.write(out)
        status = 0
        answer_headers: dict[str, str] = {}
        chunks: list[bytes] = []
        while True:
            event = self._conn.next_event()
            if event is h11.NEED_DATA:
                data = await reader.read(65536)
                if not data:
                    await self.aclose()
                    raise LeanHttpError(f"the server closed the connection during {method}")
                self._conn.receive_data(data)
                continue
            if isinstance(event, h11.Response):
                status = event.status_code
                answer_headers = {k.decode().lower(): v.decode("latin-1") for k, v in event.headers}
            elif isinstance(event, h11.Data):
                chunks.append(bytes(event.data))
            elif isinstance(event, h11.EndOfMessage):
                break
            elif isinstance(event, h11.ConnectionClosed):
                await self.aclose()
                raise LeanHttpError(f"the connection closed during {method}")
        if self._conn.our_state is h11.DONE and self._conn.their_state is h11.DONE:
            self._conn.start_next_cycle()
        else:
            await self.aclose()
        return Answer(status, answer_headers, b"".join(chunks))

    async def post_json(
        self, path: str, obj: Any, *, headers: dict[str, str] | None = None
    ) -> Answer:
        return await self.request(
            "POST", path, body=json.dumps(obj, separators=(",", ":")).encode(), headers=headers
        )

    async def aclose(self) -> None:
        writer, self._reader, self._writer = self._writer, None, None
        if writer is not None:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
