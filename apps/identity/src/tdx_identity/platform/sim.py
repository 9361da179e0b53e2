"""The ``tdx-sim`` simulated TD: quotes from ``GET {url}/attest/{report_data hex}``, RTMR3 through
``GET {url}/rtmr`` and ``POST {url}/rtmr/3/extend``, the CCEL boot log from ``GET {url}/ccel``.
A restart of the simulator is a reboot of the simulated TD (RTMR3 back to zero)."""

from __future__ import annotations

import re
from typing import Final

import httpx

from tdx_identity._http import HttpClients
from tdx_identity.exceptions import QuoteSourceError, RtmrDeviceError
from tdx_measure import REGISTER_SIZE

from ._checks import MAX_CCEL_BYTES, MAX_QUOTE_BYTES, check_digest, check_report_data

__all__ = ["MockTdxQuoteSource", "SimCcelSource", "SimRtmrDevice"]

_MAX_SIM_ANSWER_BYTES: Final = 64 * 1024


async def _fetch(
    clients: HttpClients,
    base_url: str,
    path: str,
    limit: int,
    what: str,
    *,
    none_if_not_found: bool = False,
) -> bytes | None:
    """The body of GET {base_url}{path}, at most `limit` bytes (None for a 404 when
    `none_if_not_found`); QuoteSourceError otherwise."""
    async with clients.client() as client:
        try:
            async with client.stream("GET", base_url + path) as response:
                if response.status_code == 404 and none_if_not_found:
                    return None
                if response.status_code != 200:
                    raise QuoteSourceError(
                        f"mock TDX at {base_url} answered HTTP {response.status_code} for {what}"
                    )
                body = bytearray()
                async for chunk in response.aiter_bytes():
                    body += chunk
                    if len(body) > limit:
                        raise QuoteSourceError(
                            f"mock TDX at {base_url} sent more than {limit} bytes for {what}"
                        )
        except httpx.HTTPError as exc:
            raise QuoteSourceError(
                f"mock TDX at {base_url} unreachable: {type(exc).__name__}: {exc}"
            ) from exc
    return bytes(body)


class SimCcelSource:
    """The simulated TD's CCEL boot log: GET {base_url}/ccel (its replay is the sim's boot
    RTMR0-2). A mock TDX service without that route (404) has no boot log."""

    def __init__(
        self,
        base_url: str,
        *,
        timeout: float = 15.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._base_url = base_url.rstrip("/")
        self._clients = HttpClients(timeout=timeout, transport=transport)

    async def read_ccel(self) -> bytes | None:
        data = await _fetch(
            self._clients, self._base_url, "/ccel", MAX_CCEL_BYTES, "the CCEL",
            none_if_not_found=True,
        )  # fmt: skip
        return data or None


class MockTdxQuoteSource:
    """Quotes from a mock TDX service: GET {base_url}/attest/{report_data hex} -> raw quote."""

    def __init__(
        self,
        base_url: str,
        *,
        timeout: float = 15.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._base_url = base_url.rstrip("/")
        self._clients = HttpClients(timeout=timeout, transport=transport)

    @property
    def base_url(self) -> str:
        return self._base_url

    async def get_quote(self, report_data: bytes) -> bytes:
        check_report_data(report_data)
        # A client per call keeps the source free of event-loop ties (see HttpClients).
        quote = await _fetch(
            self._clients, self._base_url, f"/attest/{report_data.hex()}", MAX_QUOTE_BYTES,
            "a quote",
        )  # fmt: skip
        if not quote:
            raise QuoteSourceError(f"mock TDX at {self._base_url} sent an empty quote")
        return quote


class SimRtmrDevice:
    """RTMR3 of the ``tdx-sim`` simulated TD, through ``GET {base}/rtmr`` and
    ``POST {base}/rtmr/3/extend``."""

    def __init__(
        self,
        base_url: str,
        *,
        timeout: float = 10.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._base_url = base_url.rstrip("/")
        self._clients = HttpClients(timeout=timeout, transport=transport)

    @property
    def base_url(self) -> str:
        return self._base_url

    async def read_rtmr3(self) -> bytes:
        answer = await self._call("GET", "/rtmr", None)
        return self._register(answer, "rtmr3")

    async def extend_rtmr3(self, digest: bytes) -> bytes | None:
        check_digest(digest)
        answer = await self._call("POST", "/rtmr/3/extend", {"digest": digest.hex()})
        if answer.get("index") != 3:
            raise RtmrDeviceError(f"mock TDX at {self._base_url} extended {answer.get('index')!r}")
        return self._register(answer, "value")

    async def _call(self, method: str, path: str, body: dict[str, str] | None) -> dict[str, object]:
        url = f"{self._base_url}{path}"
        try:
            async with self._clients.client() as client:
                response = await client.request(method, url, json=body)
        except httpx.HTTPError as exc:
            raise RtmrDeviceError(
                f"mock TDX at {self._base_url} unreachable: {type(exc).__name__}: {exc}"
            ) from exc
        if response.status_code != 200:
            raise RtmrDeviceError(
                f"mock TDX at {self._base_url} answered {method} {path} with HTTP "
                f"{response.status_code}"
            )
        if len(response.content) > _MAX_SIM_ANSWER_BYTES:
            raise RtmrDeviceError(f"mock TDX at {self._base_url} sent an oversized answer")
        try:
            answer = response.json()
        except ValueError as exc:
            raise RtmrDeviceError(f"mock TDX at {self._base_url} sent no JSON") from exc
        if type(answer) is not dict:
            raise RtmrDeviceError(f"mock TDX at {self._base_url} sent no JSON object")
        return answer

    def _register(self, answer: dict[str, object], key: str) -> bytes:
        text = answer.get(key)
        if (
            type(text) is not str
            or len(text) != 2 * REGISTER_SIZE
            or re.fullmatch(r"[0-9a-f]+", text) is None
        ):
            raise RtmrDeviceError(
                f"mock TDX at {self._base_url}: {key!r} is not {REGISTER_SIZE} bytes of hex"
            )
        return bytes.fromhex(text)
