"""Clients: verify the peer's attested certificate before sending anything, then talk to it
over a TLS context that trusts exactly that certificate.

Why a probe handshake and then a pinned context (the TOCTOU reasoning): the certificate is
fetched in a first, unverified handshake on which nothing is sent (no application byte, only
the TLS handshake and close_notify). It is parsed and appraised. The real connection is then
made with an `ssl.SSLContext` whose only trust anchor is that exact certificate, hostname
checks off (the peer's identity is its attestation, not a name) and verification required.
Between the probe and the real connection the network may switch peers; a peer presenting
any other certificate fails the handshake, so the request is never written. The only other
certificates such a context could accept are ones signed by the pinned certificate's key (an
OpenSSL chain to the anchor), and that key is the attested TLS key, which lives in TD memory;
`AttestedTransport` moreover compares the certificate of every connection it uses with the
pinned DER before returning a response and drops the origin on a mismatch."""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Generic, TypeVar

import httpx

from tdx_attested_tls._certificate import (
    AttestedCertificate,
    check_validity,
    parse_attested_certificate,
)
from tdx_attested_tls._errors import AttestedTlsError, PeerUnreachable, PinMismatch

__all__ = [
    "AttestedTransport",
    "VerifiedPeer",
    "attested_ssl_context",
    "fetch_peer_certificate",
    "is_pin_mismatch",
    "pinned_ssl_context",
    "verify_peer",
]

T = TypeVar("T")


@dataclass(frozen=True)
class VerifiedPeer(Generic[T]):
    """A peer whose certificate parsed, bound its key, was valid at `verified_at` and passed the
    caller's appraisal (`appraisal` is what the appraiser returned)."""

    host: str
    port: int
    certificate: AttestedCertificate
    appraisal: T
    verified_at: datetime


def _probe_context() -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


async def fetch_peer_certificate(
    host: str,
    port: int,
    *,
    timeout: float = 10.0,  # noqa: ASYNC109 (bounds the connect and handshake of the probe)
    server_hostname: str | None = None,
) -> bytes:
    """The DER certificate `host:port` presents, from a handshake that checks nothing and on
    which nothing is sent. `PeerUnreachable` when no handshake completes."""
    writer: asyncio.StreamWriter | None = None
    try:
        async with asyncio.timeout(timeout):
            _, writer = await asyncio.open_connection(
                host, port, ssl=_probe_context(), server_hostname=server_hostname or host
            )
            ssl_object = writer.get_extra_info("ssl_object")
            der = None if ssl_object is None else ssl_object.getpeercert(binary_form=True)
    except TimeoutError:
        raise PeerUnreachable(f"no TLS handshake with {host}:{port} within {timeout}s") from None
    except (OSError, ssl.SSLError) as exc:
        raise PeerUnreachable(
            f"cannot complete a TLS handshake with {host}:{port}: {exc}"
        ) from None
    finally:
        if writer is not None:
            writer.close()
            with contextlib.suppress(OSError, ssl.SSLError, TimeoutError):
                async with asyncio.timeout(timeout):
                    await writer.wait_closed()
    if not der:
        raise PeerUnreachable(f"{host}:{port} presented no certificate")
    return bytes(der)


def pinned_ssl_context(certificate: AttestedCertificate) -> ssl.SSLContext:
    """A client context whose only trust anchor is `certificate` (TLS 1.2+, verification
    required, hostname checks off: the identity is the attestation)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.check_hostname = False
    context.verify_mode = ssl.CERT_REQUIRED
    context.load_verify_locations(cadata=certificate.der)
    return context


async def verify_peer(
    host: str,
    port: int,
    appraise: Callable[[AttestedCertificate], Awaitable[T]],
    *,
    now: datetime | None = None,
    timeout: float = 10.0,  # noqa: ASYNC109 (the probe's; the appraisal has its own)
    server_hostname: str | None = None,
) -> VerifiedPeer[T]:
    """Fetch, parse, check the validity of and appraise the peer's certificate. Raises an
    `AttestedTlsError` subclass, or whatever `appraise` raises."""
    der = await fetch_peer_certificate(host, port, timeout=timeout, server_hostname=server_hostname)
    certificate = parse_attested_certificate(der)
    at = now or datetime.now(UTC)
    check_validity(certificate, at)
    appraisal = await appraise(certificate)
    return VerifiedPeer(host, port, certificate, appraisal, at)


async def attested_ssl_context(
    host: str,
    port: int,
    appraise: Callable[[AttestedCertificate], Awaitable[T]],
    *,
    now: datetime | None = None,
    timeout: float = 10.0,  # noqa: ASYNC109 (the probe's; the appraisal has its own)
    server_hostname: str | None = None,
) -> tuple[ssl.SSLContext, VerifiedPeer[T]]:
    """`verify_peer`, then a context pinned to the verified certificate: pass it as
    `httpx.AsyncClient(verify=context)` (or to any `ssl` user). Nothing is sent to the peer
    unless every check passed."""
    peer = await verify_peer(
        host, port, appraise, now=now, timeout=timeout, server_hostname=server_hostname
    )
    return pinned_ssl_context(peer.certificate), peer


def is_pin_mismatch(exc: BaseException) -> bool:
    """Whether `exc` (e.g. an `httpx.ConnectError`) was caused by a failed certificate check:
    the peer presented a certificate the pinned context does not trust."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, ssl.SSLCertVerificationError):
            return True
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return False


class AttestedTransport(httpx.AsyncBaseTransport, Generic[T]):
    """An httpx transport that verifies each https origin (host, port) once with `appraise`
    before its first request, then sends over a context pinned to that certificate. A plain
    http:// request is refused. A peer that presents another certificate later fails the
    handshake (`PinMismatch`, nothing sent) and the origin is forgotten, so the next request
    verifies afresh. A verified certificate past its notAfter is verified afresh too."""

    def __init__(
        self,
        appraise: Callable[[AttestedCertificate], Awaitable[T]],
        *,
        timeout: float = 10.0,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self._appraise = appraise
        self._timeout = timeout
        self._clock = clock or (lambda: datetime.now(UTC))
        self._origins: dict[tuple[str, int], tuple[VerifiedPeer[T], httpx.AsyncHTTPTransport]] = {}
        self._locks: dict[tuple[str, int], asyncio.Lock] = {}

    @property
    def peers(self) -> dict[tuple[str, int], VerifiedPeer[T]]:
        """The verified peers by (host, port)."""
        return {origin: entry[0] for origin, entry in self._origins.items()}

    async def _transport_for(self, host: str, port: int) -> httpx.AsyncHTTPTransport:
        origin = (host, port)
        async with self._locks.setdefault(origin, asyncio.Lock()):
            entry = self._origins.get(origin)
            if entry is not None and self._clock() <= entry[0].certificate.not_after:
                return entry[1]
            if entry is not None:
                await self._forget(origin)
            context, peer = await attested_ssl_context(
                host, port, self._appraise, now=self._clock(), timeout=self._timeout
            )
            transport = httpx.AsyncHTTPTransport(verify=context)
            self._origins[origin] = (peer, transport)
            return transport

    async def _forget(self, origin: tuple[str, int]) -> None:
        entry = self._origins.pop(origin, None)
        if entry is not None:
            await entry[1].aclose()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        if url.scheme != "https" or not url.host:
            raise AttestedTlsError(f"refusing {url.scheme}://: only https origins are attested")
        origin = (url.host, url.port or 443)
        transport = await self._transport_for(*origin)
        try:
            response = await transport.handle_async_request(request)
        except httpx.ConnectError as exc:
            if is_pin_mismatch(exc):
                await self._forget(origin)
                raise PinMismatch(
                    f"{origin[0]}:{origin[1]} presented another certificate than the verified "
                    "one; nothing was sent"
                ) from None
            raise
        pinned = self._origins.get(origin)
        stream = response.extensions.get("network_stream")
        ssl_object = None if stream is None else stream.get_extra_info("ssl_object")
        der = None if ssl_object is None else ssl_object.getpeercert(binary_form=True)
        if pinned is None or der is None or not hmac.compare_digest(der, pinned[0].certificate.der):
            await response.aclose()
            await self._forget(origin)
            raise PinMismatch(f"{origin[0]}:{origin[1]} answered over another certificate")
        return response

    async def aclose(self) -> None:
        for origin in list(self._origins):
            await self._forget(origin)
