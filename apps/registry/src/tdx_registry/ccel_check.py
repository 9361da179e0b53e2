"""POST /register's optional `ccel`: the firmware's CCEL event log, replayed against the verified
quote's RTMR0-2 (and RTMR3 when the log extends it), and the measurement policy's kernel and
command-line pins. Kept apart from `registration` so that module only calls in here.

The body's `ccel` is standard base64 of the log (at most `MAX_CCEL_BYTES` decoded), parsed
strictly with its measured boot components when the body is read (400 when malformed); after
the quote is verified, `check_ccel` replays it and applies the pins (401 when refused). A pin
present means a ccel is required. The record keeps the log without its padding (`log`) and the
summary GET /instance shows (`summary`: canonical JSON of the event count and the components).
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from tdx_measure import (
    BootComponents,
    CcelError,
    CcelLog,
    CcelReplayMismatchError,
    boot_components,
    parse_ccel,
    verify_ccel,
)
from tdx_service_kit import BadRequest

MAX_CCEL_BYTES: Final = 1024 * 1024
"""The largest decoded `ccel` a registration may carry (the firmware's buffer is 256 KiB on
the platforms seen; the TDX firmware's ACPI table allows more)."""
MAX_CCEL_BASE64: Final = 4 * ((MAX_CCEL_BYTES + 2) // 3)
SHA384_SIZE: Final = 48


class CcelRefused(Exception):
    """The registration's ccel does not stand: it does not replay to the verified quote, a pin
    refuses it, or a pin is set and the registration carries none. `reason` is safe to show."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class CcelPolicyError(ValueError):
    """A kernel or command-line pin is not a SHA-384 digest (96 hex digits)."""


@dataclass(frozen=True)
class CcelPolicy:
    """Measured-boot pins: the accepted SHA-384 digests of the kernel (alternatives) and of the
    command line. Either set non-empty means every registration must carry a ccel."""

    kernels: frozenset[bytes] = frozenset()
    cmdlines: frozenset[bytes] = frozenset()

    def __post_init__(self) -> None:
        for digest in (*self.kernels, *self.cmdlines):
            if type(digest) is not bytes or len(digest) != SHA384_SIZE:
                raise CcelPolicyError("a kernel or command-line pin is a 48-byte SHA-384 digest")

    @property
    def requires_ccel(self) -> bool:
        return bool(self.kernels or self.cmdlines)

    @classmethod
    def from_hex(cls, kernels: Sequence[str], cmdlines: Sequence[str]) -> CcelPolicy:
        """The policy of `--pin-kernel` / `--pin-cmdline` values (96 hex digits each)."""

        def digests(values: Sequence[str], flag: str) -> frozenset[bytes]:
            out: set[bytes] = set()
            for value in values:
                text = value.strip()
                try:
                    digest = bytes.fromhex(text)
                except ValueError:
                    digest = b""
                if len(text) != 2 * SHA384_SIZE or len(digest) != SHA384_SIZE:
                    raise CcelPolicyError(f"{flag} {text[:100]!r} is not 96 hex digits (SHA-384)")
                out.add(digest)
            return frozenset(out)

        return cls(digests(kernels, "--pin-kernel"), digests(cmdlines, "--pin-cmdline"))


@dataclass(frozen=True)
class ReceivedCcel:
    """A request's ccel, parsed: the log and its measured boot components."""

    log: CcelLog
    components: BootComponents


@dataclass(frozen=True)
class StoredCcel:
    """What a record keeps of an accepted ccel: the log's bytes without the padding, and the
    summary GET /instance shows (canonical JSON text of `{"events", "components"}`)."""

    log: bytes
    summary: str

    def summary_object(self) -> dict[str, Any]:
        value: dict[str, Any] = json.loads(self.summary)
        return value


def parse_ccel_field(body: Mapping[str, Any]) -> ReceivedCcel | None:
    """The body's optional `ccel`, strictly: standard base64 of at most `MAX_CCEL_BYTES`, a
    well-formed CCEL with well-formed components; `BadRequest` naming the field otherwise."""
    value = body.get("ccel")
    if value is None:
        return None
    if not isinstance(value, str):
        raise BadRequest("field 'ccel' must be the CCEL event log in base64 (a string) or null")
    if len(value) > MAX_CCEL_BASE64:
        raise BadRequest(f"field 'ccel' is larger than {MAX_CCEL_BYTES} bytes")
    try:
        data = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise BadRequest("field 'ccel' is not valid base64") from None
    if len(data) > MAX_CCEL_BYTES:
        raise BadRequest(f"field 'ccel' is larger than {MAX_CCEL_BYTES} bytes")
    try:
        log = parse_ccel(data)
        return ReceivedCcel(log, boot_components(log))
    except CcelError as exc:
        raise BadRequest(f"field 'ccel' is not a valid CCEL event log: {exc.reason}") from None


def _pinned(digest: bytes, pins: frozenset[bytes]) -> bool:
    found = False
    for pin in pins:
        found |= hmac.compare_digest(digest, pin)
    return found


def check_ccel(
    received: ReceivedCcel | None, rtmrs: Sequence[bytes], policy: CcelPolicy
) -> StoredCcel | None:
    """Replay the ccel against `rtmrs` (the verified quote's RTMR0-3) and apply `policy`; what
    the record keeps, or None without a ccel. `CcelRefused` saying why otherwise."""
    if received is None:
        if policy.requires_ccel:
            raise CcelRefused(
                "ccel required: the measurement policy pins the kernel or the command line, so "
                "every registration carries the firmware's CCEL event log"
            )
        return None
    if len(rtmrs) != 4:
        raise CcelRefused("the quote's RTMRs are not available to replay the ccel against")
    try:
        verify_ccel(received.log, rtmrs)
    except CcelReplayMismatchError as exc:
        names = ", ".join(f"RTMR{index}" for index in exc.mismatched)
        raise CcelRefused(
            f"ccel does not replay to the verified quote's {names}: the log was altered, "
            "truncated or belongs to another boot"
        ) from None
    components = received.components
    if policy.kernels:
        if components.kernel is None:
            raise CcelRefused("ccel refused by the measurement policy: it measures no kernel")
        if not _pinned(components.kernel.sha384, policy.kernels):
            raise CcelRefused(
                "ccel refused by the measurement policy: kernel "
                f"{components.kernel.sha384.hex()} is not pinned (--pin-kernel)"
            )
    if policy.cmdlines:
        if components.cmdline is None:
            raise CcelRefused(
                "ccel refused by the measurement policy: it measures no kernel command line"
            )
        if not _pinned(components.cmdline.sha384, policy.cmdlines):
            raise CcelRefused(
                "ccel refused by the measurement policy: command line "
                f"{components.cmdline.sha384.hex()} is not pinned (--pin-cmdline)"
            )
    summary = {"events": len(received.log.events), "components": components.to_object()}
    text = json.dumps(summary, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return StoredCcel(received.log.encode(), text)
