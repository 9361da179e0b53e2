"""HTTP clients of the identity service and the registry (API.md), on httpx. They carry
requests and decode answers strictly; they decide nothing: what an answer proves is for
`verify_record` and `verify_attestation` to say."""

from __future__ import annotations

import base64
import binascii
import json
import re
from dataclasses import dataclass
from typing import Any, Final

import httpx
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from tdx_report_data import (
    ED25519_PUBKEY_LEN,
    ED25519_SIGNATURE_LEN,
    IdentityFormatError,
    IdentityInfo,
    Role,
    sign_instance_v2,
)
from tdxctl._errors import (
    BadAnswer,
    RecordFormatError,
    RequestError,
    ServiceRefused,
    ServiceUnreachable,
)
from tdxctl._keys import public_key_bytes

__all__ = [
    "AttestationAnswer",
    "IdentityClient",
    "InstanceState",
    "RegistryClient",
    "RegistryRecord",
]

MAX_ANSWER_BYTES: Final = 16 * 1024 * 1024
"""A record carries a quote and an event log of at most 4 MiB: anything far larger is refused."""
MAX_SEQ: Final = 2**53 - 1
DEFAULT_TIMEOUT: Final = 30.0
WORKLOAD_TIMEOUT: Final = 300.0
"""Configure pulls and starts a container before it answers."""
HEX: Final = re.compile(r"(?:[0-9a-fA-F]{2})*", re.ASCII)
"""Hex as the contract writes it: pairs of digits, no whitespace (`bytes.fromhex` skips it)."""


def printable(text: str, limit: int = 300) -> str:
    """`text` safe for a terminal: control characters escaped, at most `limit` characters."""
    cleaned = "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)
    return cleaned if len(cleaned) <= limit else cleaned[:limit] + "..."


class _Http:
    """One httpx client for one service; every failure becomes a `RequestError`."""

    def __init__(
        self,
        name: str,
        base_url: str,
        *,
        timeout: float,
        transport: httpx.AsyncBaseTransport | None,
    ) -> None:
        self.name = name
        self.base_url = base_url.rstrip("/")
        self._client = httpx.AsyncClient(
            base_url=self.base_url, timeout=timeout, transport=transport, follow_redirects=False
        )

    async def aclose(self) -> None:
        await self._client.aclose()

    async def call(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, str] | None = None,
        content: bytes | None = None,
        headers: dict[str, str] | None = None,
        timeout: float | None = None,  # noqa: ASYNC109 (httpx's per-request timeout)
    ) -> Any:
        """The decoded JSON answer of a 200; `ServiceRefused` for an error status."""
        body = await self.call_bytes(
            method, path, params=params, content=content, headers=headers, timeout=timeout
        )
        try:
            return json.loads(body)
        except (ValueError, UnicodeDecodeError, RecursionError):
            raise BadAnswer(
                f"the {self.name} at {self.base_url} answered 200 with a body that is not JSON"
            ) from None

    async def call_text(self, path: str, *, params: dict[str, str] | None = None) -> str:
        """The UTF-8 text answer of a 200 to a GET (a text/plain route)."""
        body = await self.call_bytes("GET", path, params=params)
        try:
            return body.decode("utf-8")
        except UnicodeDecodeError:
            raise BadAnswer(
                f"the {self.name} at {self.base_url} answered {path} with text that is not UTF-8"
            ) from None

    async def call_bytes(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, str] | None = None,
        content: bytes | None = None,
        headers: dict[str, str] | None = None,
        timeout: float | None = None,  # noqa: ASYNC109 (httpx's per-request timeout)
    ) -> bytes:
        """The body of a 200 (at most `MAX_ANSWER_BYTES`); `ServiceRefused` for an error
        status, with the service's JSON reason when it gives one."""
        where = f"{self.name} at {self.base_url}"
        extra: dict[str, Any] = {} if timeout is None else {"timeout": timeout}
        try:
            async with self._client.stream(
                method, path, params=params, content=content, headers=headers, **extra
            ) as response:
                body = bytearray()
                async for chunk in response.aiter_bytes():
                    body += chunk
                    if len(body) > MAX_ANSWER_BYTES:
                        raise BadAnswer(f"the {where} sent an answer larger than 16 MiB")
                status = response.status_code
        except httpx.TimeoutException:
            raise ServiceUnreachable(f"the {where} did not answer in time") from None
        except httpx.HTTPError as exc:
            raise ServiceUnreachable(
                f"cannot reach the {where}: {printable(str(exc)) or type(exc).__name__}"
            ) from None
        if status != 200:
            try:
                decoded: Any = json.loads(bytes(body))
            except (ValueError, UnicodeDecodeError, RecursionError):
                decoded = None
            reason = decoded.get("error") if isinstance(decoded, dict) else None
            shown = printable(reason) if isinstance(reason, str) else "(no error reason)"
            raise ServiceRefused(f"the {where} answered {status}: {shown}", status=status)
        return bytes(body)


def _object(value: Any, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise BadAnswer(f"{what} is not a JSON object")
    return value


def _hex_field(
    obj: dict[str, Any], name: str, error: type[RequestError] | type[RecordFormatError]
) -> bytes:
    value = obj.get(name)
    if not isinstance(value, str):
        raise error(f"field {name!r} is missing or not a hex string")
    if HEX.fullmatch(value) is None:
        raise error(f"field {name!r} is not hex")
    return bytes.fromhex(value)


def _base64_field(
    obj: dict[str, Any], name: str, error: type[RequestError] | type[RecordFormatError]
) -> bytes:
    value = obj.get(name)
    if not isinstance(value, str):
        raise error(f"field {name!r} is missing or not a base64 string")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise error(f"field {name!r} is not base64") from None


@dataclass(frozen=True)
class InstanceState:
    """GET /instance/state: the lifecycle state and the last accepted owner seq."""

    state: str
    last_seq: int


@dataclass(frozen=True)
class AttestationAnswer:
    """GET /instance/attestation, decoded but not verified (`verify_attestation` does that)."""

    instance_pubkey: bytes
    nonce: bytes
    quote: bytes
    event_log: str


@dataclass(frozen=True)
class RegistryRecord:
    """GET /instance/{pubkey}, decoded but not verified: the registry's claims, nothing more.
    `ssh_host_key` is None when the registry gives none (null or an older registry).
    `binding_version` is 2 with the registry's `challenge` and the instance key's
    `proof_of_possession`, or 1 (both None; also when an older registry names no version).
    `registry_refused` is the registry's own refusal (`verification.refused`, printable), None
    when it gives none: `check_registry_verdict` is how the commands honour it."""

    instance_pubkey: bytes
    ppid: bytes
    attestation_quote: bytes
    operator: IdentityInfo | None
    owner: IdentityInfo | None
    event_log: str | None
    ssh_host_key: str | None
    binding_version: int = 1
    challenge: bytes | None = None
    proof_of_possession: bytes | None = None
    registry_refused: str | None = None

    @classmethod
    def from_object(cls, value: Any) -> RegistryRecord:
        """Decode the record's JSON; `RecordFormatError` naming the field otherwise."""
        if not isinstance(value, dict):
            raise RecordFormatError("the registry record is not a JSON object")
        identities: dict[str, IdentityInfo | None] = {}
        for role in ("operator", "owner"):
            item = value.get(role)
            if item is None:
                identities[role] = None
                continue
            if not isinstance(item, dict):
                raise RecordFormatError(f"the record's {role} is not an object or null")
            try:
                identities[role] = IdentityInfo.from_object(item, name=role)
            except IdentityFormatError as exc:
                raise RecordFormatError(f"the record's {exc.field} {exc.reason}") from None
        event_log = value.get("event_log")
        if event_log is not None and not isinstance(event_log, str):
            raise RecordFormatError("the record's event_log is not a string or null")
        ssh_host_key = value.get("ssh_host_key")
        if ssh_host_key is not None and not isinstance(ssh_host_key, str):
            raise RecordFormatError("the record's ssh_host_key is not a string or null")
        instance = _hex_field(value, "instance_pubkey", RecordFormatError)
        if len(instance) != ED25519_PUBKEY_LEN:
            raise RecordFormatError("the record's instance_pubkey is not 32 bytes")
        version, challenge, proof = _binding_fields(value)
        return cls(
            instance_pubkey=instance,
            ppid=_hex_field(value, "ppid", RecordFormatError),
            attestation_quote=_base64_field(value, "attestation_quote", RecordFormatError),
            operator=identities["operator"],
            owner=identities["owner"],
            event_log=event_log,
            ssh_host_key=ssh_host_key,
            binding_version=version,
            challenge=challenge,
            proof_of_possession=proof,
            registry_refused=_registry_refusal(value),
        )


def _registry_refusal(value: dict[str, Any]) -> str | None:
    """The registry's own refusal of the record (`verification.refused`), made printable; None
    when the registry gives none (null, or an older registry without the field)."""
    verification = value.get("verification")
    if verification is None:
        return None
    if not isinstance(verification, dict):
        raise RecordFormatError("the record's verification is not an object or null")
    refused = verification.get("refused")
    if refused is None:
        return None
    if not isinstance(refused, str):
        raise RecordFormatError("the record's verification.refused is not a string or null")
    return printable(refused) or "(no reason given)"


def _binding_fields(value: dict[str, Any]) -> tuple[int, bytes | None, bytes | None]:
    """The record's binding version, challenge and proof of possession: 2 with both (hex), 1
    (or absent) with neither."""
    version = value.get("binding_version", 1)
    if type(version) is not int or version not in (1, 2):
        raise RecordFormatError("the record's binding_version is not 1 or 2")
    if version == 1:
        if value.get("challenge") is not None or value.get("proof_of_possession") is not None:
            raise RecordFormatError("a binding_version 1 record carries a challenge or proof")
        return 1, None, None
    challenge = _hex_field(value, "challenge", RecordFormatError)
    proof = _hex_field(value, "proof_of_possession", RecordFormatError)
    if len(proof) != ED25519_SIGNATURE_LEN:
        raise RecordFormatError("the record's proof_of_possession is not 64 bytes")
    return 2, challenge, proof


def _compact(value: dict[str, Any]) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=True).encode("ascii")


class IdentityClient:
    """The identity service's routes (API.md, v1 and v2). Use as `async with`."""

    def __init__(
        self,
        base_url: str,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._http = _Http("identity service", base_url, timeout=timeout, transport=transport)

    @property
    def base_url(self) -> str:
        return self._http.base_url

    async def __aenter__(self) -> IdentityClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def instance_pubkey(self) -> bytes:
        """GET /instance/pubkey: the instance's claimed key (not proof of anything)."""
        answer = _object(await self._http.call("GET", "/instance/pubkey"), "the pubkey answer")
        key = _hex_field(answer, "pubkey", BadAnswer)
        if len(key) != ED25519_PUBKEY_LEN:
            raise BadAnswer("the instance pubkey is not 32 bytes")
        return key

    async def state(self) -> InstanceState:
        """GET /instance/state."""
        answer = _object(await self._http.call("GET", "/instance/state"), "the state answer")
        state, last_seq = answer.get("state"), answer.get("last_seq")
        if not isinstance(state, str):
            raise BadAnswer("the state answer has no 'state' string")
        if isinstance(last_seq, bool) or not isinstance(last_seq, int) or last_seq < 0:
            raise BadAnswer("the state answer has no non-negative integer 'last_seq'")
        return InstanceState(state=state, last_seq=last_seq)

    async def attestation(self, nonce: bytes) -> AttestationAnswer:
        """GET /instance/attestation?nonce=: a fresh quote answering `nonce`, unverified."""
        answer = _object(
            await self._http.call("GET", "/instance/attestation", params={"nonce": nonce.hex()}),
            "the attestation answer",
        )
        event_log = answer.get("event_log")
        if not isinstance(event_log, str):
            raise BadAnswer("the attestation answer has no 'event_log' string")
        return AttestationAnswer(
            instance_pubkey=_hex_field(answer, "instance_pubkey", BadAnswer),
            nonce=_hex_field(answer, "nonce", BadAnswer),
            quote=_base64_field(answer, "quote", BadAnswer),
            event_log=event_log,
        )

    async def register_operator(self, key: Ed25519PrivateKey, instance_pubkey: bytes) -> str:
        """POST /operator/register with the v2 signature accepting `instance_pubkey` as its
        operator; the single-use owner token."""
        answer = _object(
            await self._http.call(
                "POST",
                "/operator/register",
                content=self._identity_body(key, "operator", instance_pubkey),
            ),
            "the operator registration answer",
        )
        token = answer.get("owner_token")
        if not isinstance(token, str) or not token:
            raise BadAnswer("the operator registration answer has no 'owner_token'")
        return token

    async def register_owner(
        self, key: Ed25519PrivateKey, instance_pubkey: bytes, token: str
    ) -> None:
        """POST /owner/register with the operator's token and the v2 signature accepting
        `instance_pubkey` as its owner."""
        await self._http.call(
            "POST",
            "/owner/register",
            content=self._identity_body(key, "owner", instance_pubkey),
            headers={"x-token": token},
        )

    @staticmethod
    def _identity_body(key: Ed25519PrivateKey, role: Role, instance_pubkey: bytes) -> bytes:
        return _compact(
            {
                "pubkey": public_key_bytes(key).hex(),
                "signature": sign_instance_v2(key, role, instance_pubkey).hex(),
            }
        )

    async def configure(
        self,
        key: Ed25519PrivateKey,
        instance_pubkey: bytes,
        *,
        image: str,
        persist_dirs: tuple[str, ...],
        port: int,
    ) -> int:
        """POST /workload/configure signed by the owner `key`; returns the seq it used."""
        return await self._signed(
            key,
            "configure",
            {
                "instance_pubkey": instance_pubkey.hex(),
                "image": image,
                "persist_dirs": list(persist_dirs),
                "port": port,
            },
        )

    async def expose(self, key: Ed25519PrivateKey, instance_pubkey: bytes, *, image: str) -> int:
        """POST /workload/expose signed by the owner `key`; returns the seq it used."""
        return await self._signed(
            key, "expose", {"instance_pubkey": instance_pubkey.hex(), "image": image}
        )

    async def _signed(self, key: Ed25519PrivateKey, action: str, fields: dict[str, Any]) -> int:
        """Sign the exact body bytes naming `action` and the next seq after the last accepted."""
        seq = (await self.state()).last_seq + 1
        if seq > MAX_SEQ:
            raise BadAnswer("the instance's last_seq leaves no next seq")
        body = _compact({"action": action, "seq": seq, **fields})
        await self._http.call(
            "POST",
            f"/workload/{action}",
            content=body,
            headers={"x-signature": key.sign(body).hex(), "content-type": "application/json"},
            timeout=WORKLOAD_TIMEOUT,
        )
        return seq


class RegistryClient:
    """The registry's GET /instance/{pubkey}. Use as `async with`."""

    def __init__(
        self,
        base_url: str,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._http = _Http("registry", base_url, timeout=timeout, transport=transport)

    async def __aenter__(self) -> RegistryClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def record(self, instance_pubkey: bytes) -> RegistryRecord:
        """The registry's record of `instance_pubkey`, decoded, not verified."""
        return RegistryRecord.from_object(
            await self._http.call("GET", f"/instance/{instance_pubkey.hex()}")
        )
