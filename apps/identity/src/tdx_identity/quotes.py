"""Where TDX quotes come from: the kernel's configfs-tsm interface, or a mock TDX service."""

from __future__ import annotations

import asyncio
import errno
import os
import secrets
from pathlib import Path
from typing import Protocol

import httpx

from tdx_identity._http import HttpClients
from tdx_identity.exceptions import StartupError
from tdx_identity.settings import Settings

REPORT_DATA_LEN = 64
MAX_QUOTE_BYTES = 1 << 20


class QuoteSourceError(Exception):
    """A quote could not be obtained; the message names the source and the cause."""


class NoQuoteSourceError(StartupError):
    """Neither configfs-tsm nor a mock TDX URL is available."""


class QuoteSource(Protocol):
    """Produces a TDX quote whose report_data is exactly the 64 bytes given."""

    async def get_quote(self, report_data: bytes) -> bytes: ...


def _check_report_data(report_data: bytes) -> None:
    if len(report_data) != REPORT_DATA_LEN:
        raise ValueError(f"report_data must be {REPORT_DATA_LEN} bytes, got {len(report_data)}")


class ConfigfsTsmQuoteSource:
    """Quotes from the Linux configfs-tsm report interface of a TDX guest.

    Each request uses its own report entry (mkdir), writes `inblob`, reads `outblob` and removes
    the entry; the `generation` counter detects a concurrent writer to the same entry.
    """

    def __init__(self, root: Path) -> None:
        self._root = root

    @property
    def root(self) -> Path:
        return self._root

    async def get_quote(self, report_data: bytes) -> bytes:
        _check_report_data(report_data)
        return await asyncio.to_thread(self._get_quote_blocking, report_data)

    def _get_quote_blocking(self, report_data: bytes) -> bytes:
        entry = self._root / f"tdx-identity-{secrets.token_hex(8)}"
        try:
            entry.mkdir()
        except OSError as exc:
            raise QuoteSourceError(f"configfs-tsm: cannot create {entry}: {exc.strerror}") from exc
        try:
            (entry / "inblob").write_bytes(report_data)
            before = (entry / "generation").read_text().strip()
            quote = (entry / "outblob").read_bytes()
            after = (entry / "generation").read_text().strip()
        except OSError as exc:
            raise QuoteSourceError(f"configfs-tsm: quote generation failed: {exc}") from exc
        finally:
            try:
                entry.rmdir()
            except OSError as exc:
                if exc.errno != errno.ENOENT:
                    raise QuoteSourceError(
                        f"configfs-tsm: cannot remove {entry}: {exc.strerror}"
                    ) from exc
        if before != after:
            raise QuoteSourceError("configfs-tsm: report entry changed while reading the quote")
        if not quote:
            raise QuoteSourceError("configfs-tsm: empty quote")
        return quote


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
        _check_report_data(report_data)
        url = f"{self._base_url}/attest/{report_data.hex()}"
        # A client per call keeps the source free of event-loop ties (see HttpClients).
        async with self._clients.client() as client:
            try:
                async with client.stream("GET", url) as response:
                    if response.status_code != 200:
                        raise QuoteSourceError(
                            f"mock TDX at {self._base_url} answered HTTP {response.status_code}"
                        )
                    body = bytearray()
                    async for chunk in response.aiter_bytes():
                        body += chunk
                        if len(body) > MAX_QUOTE_BYTES:
                            raise QuoteSourceError(
                                f"mock TDX at {self._base_url} sent more than "
                                f"{MAX_QUOTE_BYTES} bytes"
                            )
            except httpx.HTTPError as exc:
                raise QuoteSourceError(
                    f"mock TDX at {self._base_url} unreachable: {type(exc).__name__}: {exc}"
                ) from exc
        if not body:
            raise QuoteSourceError(f"mock TDX at {self._base_url} sent an empty quote")
        return bytes(body)


def select_quote_source(settings: Settings) -> QuoteSource:
    """configfs-tsm when its directory exists, else the mock TDX URL, else a StartupError."""
    if settings.configfs_tsm_path.is_dir():
        if not os.access(settings.configfs_tsm_path, os.W_OK):
            raise NoQuoteSourceError(
                f"configfs-tsm directory {settings.configfs_tsm_path} exists but is not writable "
                "by this user; run the service with access to it"
            )
        return ConfigfsTsmQuoteSource(settings.configfs_tsm_path)
    if settings.mock_tdx_url:
        return MockTdxQuoteSource(settings.mock_tdx_url, timeout=settings.quote_timeout)
    raise NoQuoteSourceError(
        f"no TDX quote source: {settings.configfs_tsm_path} does not exist (not a TDX guest, or "
        "configfs not mounted) and MOCK_TDX_URL / --mock-tdx-url is not set"
    )
