"""The whole DCAP verification of a quote against its collateral, against dcap-qvl.

One input carries everything one verification reads, so libFuzzer mutates the quote, the
collateral and the time together (`encode` / `decode`):

    now (8 bytes, big-endian Unix seconds) | root CA DER length (2) | root CA DER (0 bytes:
    Intel's pinned SGX root) | quote length (4) | quote | collateral (dcap-qvl's JSON form)

The seeds are the real Intel vector at its valid time and simulator quotes with their
collateral (fuzz/seeds.py). Refusing is any `tdx_verify.VerificationError`. A verdict of
"valid" (under a policy accepting every TCB status, so that the two verifiers judge the same
thing) must be dcap-qvl's verdict too: tdx-verify is never less
strict than the reference (its README lists where it is stricter, never the other way).
"""

from __future__ import annotations

import base64
import functools
import struct
from dataclasses import dataclass
from datetime import UTC, datetime

import dcap_qvl

from fuzz._harness import Finding, Harness
from tdx_verify import Collateral, Policy, QuoteParseError, VerificationError, Verifier

# Every TCB status (but Revoked, never accepted); debug TDs refused, as dcap-qvl refuses them.
PERMISSIVE = Policy(accepted_tcb_statuses=None)
_HEAD = struct.Struct(">QH")
_QUOTE_LEN = struct.Struct(">I")


@dataclass(frozen=True)
class Case:
    now: int
    root_der: bytes  # empty: Intel's pinned root
    quote: bytes
    collateral: bytes


def encode(case: Case) -> bytes:
    return (
        _HEAD.pack(case.now, len(case.root_der))
        + case.root_der
        + _QUOTE_LEN.pack(len(case.quote))
        + case.quote
        + case.collateral
    )


class CaseFormatError(QuoteParseError):
    """The fuzz input is too short for its own framing (not a library refusal: the harness's
    framing, so it counts as an uninteresting input)."""


def decode(data: bytes) -> Case:
    if len(data) < _HEAD.size:
        raise CaseFormatError("fuzz", "input shorter than its header")
    now, root_len = _HEAD.unpack_from(data)
    at = _HEAD.size + root_len
    if len(data) < at + _QUOTE_LEN.size:
        raise CaseFormatError("fuzz", "input shorter than its root CA")
    (quote_len,) = _QUOTE_LEN.unpack_from(data, at)
    at += _QUOTE_LEN.size
    if len(data) < at + quote_len:
        raise CaseFormatError("fuzz", "input shorter than its quote")
    return Case(
        now,
        data[_HEAD.size : _HEAD.size + root_len],
        data[at : at + quote_len],
        data[at + quote_len :],
    )


@functools.lru_cache(maxsize=8)
def _verifier(root_der: bytes) -> Verifier:
    """The verifier pinning `root_der` (wrapped as PEM unparsed: the library reads it)."""
    if not root_der:
        return Verifier(policy=PERMISSIVE)
    pem = b"-----BEGIN CERTIFICATE-----\n" + base64.encodebytes(root_der)
    return Verifier(root_ca_pem=pem + b"-----END CERTIFICATE-----\n", policy=PERMISSIVE)


def _time(now: int) -> datetime:
    try:
        return datetime.fromtimestamp(now, UTC)
    except (OverflowError, OSError, ValueError):
        raise CaseFormatError("fuzz", "time out of range") from None


def target(data: bytes) -> None:
    case = decode(data)
    now = _time(case.now)
    verifier = _verifier(case.root_der)
    collateral = Collateral.from_json(case.collateral)
    verified = verifier.verify(case.quote, collateral, now=now)
    try:
        reference = dcap_qvl.QuoteCollateralV3.from_json(collateral.to_json())
        if case.root_der:
            report = dcap_qvl.verify_with_root_ca(case.quote, reference, case.root_der, case.now)
        else:
            report = dcap_qvl.verify(case.quote, reference, case.now)
    except ValueError as exc:
        raise Finding(
            f"tdx-verify accepts ({verified.tcb_status}), dcap-qvl refuses: {exc}"
        ) from None
    if report.status != verified.tcb_status:
        raise Finding(f"TCB status {verified.tcb_status}, dcap-qvl's {report.status}")


HARNESS = Harness(
    name="verify",
    summary="Verifier.verify on mutated quotes + collateral + time, differential vs dcap-qvl",
    target=target,
    allowed=(VerificationError,),
)
