"""The store key from the owner's key broker (`KbsKeyProvider`): released only to fresh evidence.

With `--key-broker-url` the encrypted store's key is the KBS resource
`tdx-identity/store-key/<instance pubkey hex>` (`tdx_kbs_protocol.store_key_path`), which the
owner uploads with `tdxctl kbs put-key`. Each fetch is one fresh KBS session: auth, attest with
a new ephemeral P-256 TEE key, this TD's quote and `additional_evidence` (the instance key's
proof of possession and the RTMR3 event log, see `core.evidence`), then the resource as a JWE
to that TEE key, decrypted in memory.

The resource is not the bare key but the owner's envelope (`tdx_kbs_protocol.open_store_key`):
domain || instance pubkey || key || the owner's ed25519 signature over the rest, made by
`tdxctl kbs put-key`. Anyone can encrypt a JWE to the TD's ephemeral key, so a host in the
middle could answer in the broker's place; the key counts only once the envelope verifies with
the owner's public key the service holds (the registered owner the registry confirmed:
`IdentityService.confirmed_owner`) and names this instance's key. A broker, or whoever answers
for it, can withhold the key but not substitute one.

The key lives only in this process's memory (TD memory), once released, and goes to gocryptfs
on a pipe (`store.GocryptfsStore`): it is never written to any file. Every failure, the broker
down, refusing, or answering something that is not the owner's envelope for this instance, is
a `StoreKeyUnavailable` naming the cause (never the key): the workload manager turns it into
`WorkloadLocked`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass

import httpx

from tdx_identity.exceptions import MeasurementError, QuoteSourceError, StoreKeyUnavailable
from tdx_kbs_protocol import (
    EvidenceProvider,
    KbsClient,
    KbsClientError,
    KbsProtocolError,
    KbsRefused,
    KbsUnavailable,
    StoreKeyEnvelopeError,
    open_store_key,
    store_key_path,
)

__all__ = [
    "FETCH_OUTCOMES",
    "EvidenceFactory",
    "KbsKeyProvider",
    "KeyBrokerSettings",
    "OwnerSource",
]

_log = logging.getLogger("tdx_identity.workload")

EvidenceFactory = Callable[[], EvidenceProvider]
"""Makes the evidence for one attestation (`core.evidence.MeasuredEvidence`)."""

FETCH_OUTCOMES = (
    "released",
    "refused",
    "unavailable",
    "unusable",
    "no_evidence",
    "no_owner",
    "envelope_refused",
)
"""How a fetch from the key broker ends: the key released (its envelope verified), the broker
refusing (4xx), down (unreachable, 5xx), answering what the client cannot use or a failed
exchange (`unusable`), no evidence to send, no confirmed owner to check the envelope against, or
an envelope that does not verify (`envelope_refused`)."""

OwnerSource = Callable[[], bytes | None]
"""The registered owner's raw ed25519 public key as the registry confirmed it
(`IdentityService.confirmed_owner`), None while there is none."""


@dataclass(frozen=True)
class KeyBrokerSettings:
    """Where the owner's key broker answers, and how long to wait for it."""

    url: str
    timeout: float = 10.0


class KbsKeyProvider:
    """A `KeyProvider` whose key the owner's key broker releases to this TD's evidence.

    `create_key` makes no key: the owner uploads it to the broker (`tdxctl kbs put-key`), so
    both calls fetch it. Once released the key is kept in memory for the life of the process
    (the mounted gocryptfs daemon holds it too); a failed fetch keeps nothing.
    """

    def __init__(
        self,
        settings: KeyBrokerSettings,
        instance_pubkey: bytes,
        evidence: EvidenceFactory,
        owner: OwnerSource,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._settings = settings
        self._instance = instance_pubkey
        self._owner = owner
        self._path = store_key_path(instance_pubkey)
        self._evidence = evidence
        self._transport = transport
        self._key: bytes | None = None
        self._fetching = asyncio.Lock()
        self._outcomes = dict.fromkeys(FETCH_OUTCOMES, 0)

    @property
    def url(self) -> str:
        return self._settings.url

    @property
    def resource(self) -> str:
        """The KBS resource path of this instance's store key."""
        return str(self._path)

    def fetch_outcomes(self) -> dict[str, int]:
        """How many fetches from the broker ended in each of `FETCH_OUTCOMES` (a copy); a key
        already released is not fetched again."""
        return dict(self._outcomes)

    async def get_key(self) -> bytes:
        return await self._released()

    async def create_key(self) -> bytes:
        return await self._released()

    async def _released(self) -> bytes:
        async with self._fetching:
            if self._key is None:
                self._key = await self._fetch()
            return self._key

    async def _fetch(self) -> bytes:
        try:
            key = await self._fetch_once()
        except StoreKeyUnavailable as exc:
            self._outcomes[exc.outcome] = self._outcomes.get(exc.outcome, 0) + 1
            raise
        self._outcomes["released"] += 1
        return key

    async def _fetch_once(self) -> bytes:
        owner = self._owner()
        if owner is None:
            raise StoreKeyUnavailable(
                "no owner confirmed by the registry to check the store key's envelope against",
                outcome="no_owner",
            )
        client = KbsClient(
            self._settings.url, timeout=self._settings.timeout, transport=self._transport
        )
        try:
            envelope = await client.get_resource(self._path, self._evidence())
        except KbsRefused as exc:
            raise StoreKeyUnavailable(
                f"the key broker refused to release {self._path} "
                f"({exc.status} {exc.variant}): {exc.detail}",
                outcome="refused",
            ) from None
        except KbsUnavailable as exc:
            raise StoreKeyUnavailable(
                f"the key broker is unavailable: {exc}", outcome="unavailable"
            ) from None
        except KbsClientError as exc:
            raise StoreKeyUnavailable(f"the key broker's answer is unusable: {exc}") from None
        except KbsProtocolError as exc:
            raise StoreKeyUnavailable(f"the key broker exchange failed: {exc}") from None
        except (QuoteSourceError, MeasurementError) as exc:
            raise StoreKeyUnavailable(
                f"no evidence for the key broker: {exc}", outcome="no_evidence"
            ) from None
        finally:
            await client.aclose()
        try:
            return open_store_key(envelope, owner_pubkey=owner, instance_pubkey=self._instance)
        except StoreKeyEnvelopeError as exc:
            reason = (
                f"the key broker's {self._path} is not the owner's store key for this "
                f"instance: {exc}"
            )
        _log.error(
            "refused the store key: its envelope does not verify with the registered owner's "
            "key for this instance (a host answering in the broker's place, or a key uploaded "
            "by another key or for another instance); nothing is mounted",
            extra={"reason": reason, "resource": str(self._path), "owner_pubkey": owner.hex()},
        )
        raise StoreKeyUnavailable(reason, outcome="envelope_refused")
