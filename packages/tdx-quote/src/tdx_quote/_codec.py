"""Parse and build TDX quotes with the declaration in `_layout`, converting to the dataclasses.

Parsing runs the compiled declaration first (fast path). Any failure there is replayed on the
interpreted declaration, which is equally strict and reports the exact field path; callers only
ever see `QuoteFormatError`.
"""

from __future__ import annotations

import dataclasses
import io
import re
import struct
from collections.abc import Mapping
from typing import Any

from construct import ConstructError

from tdx_quote import _layout
from tdx_quote._errors import QuoteFormatError
from tdx_quote._model import (
    AttestationKeyType,
    BodyType,
    CertificationData,
    CertificationDataType,
    EnclaveReport,
    Header,
    PpidCertData,
    QeReportCertData,
    Quote,
    QuoteSignatureData,
    TdReport10,
    TdReport15,
    TeeType,
)

MAX_QUOTE_SIZE = 1 << 20
"""Inputs larger than this (1 MiB) are refused before parsing: real quotes are about 5 KB."""

_SHORT_READ = re.compile(r"stream read less than specified amount, expected (\d+), found (\d+)")
_ENCLAVE_REPORT_FIELDS = tuple(field.name for field in dataclasses.fields(EnclaveReport))
# Enum lookups by value: the layout only lets known values through.
_KEY_TYPES = {member.value: member for member in AttestationKeyType}
_TEE_TYPES = {member.value: member for member in TeeType}
_BODY_TYPES = {member.value: member for member in BodyType}
_CERT_TYPES = {member.value: member for member in CertificationDataType}
_TD10_NAMES = tuple(field.name for field in dataclasses.fields(TdReport10))
_TD15_NAMES = tuple(field.name for field in dataclasses.fields(TdReport15))
# The enclave report's fixed layout (as `_layout.EnclaveReport`) for the fast build: each field's
# size in bytes, or None for the little-endian integers (u32 misc_select, u16 ISVPRODID/ISVSVN).
_ENCLAVE_REPORT_PACK = struct.Struct("<16sI28s16s32s32s32s96sHH60s64s")
_ENCLAVE_REPORT_SIZES = (16, None, 28, 16, 32, 32, 32, 96, None, None, 60, 64)
_ENCLAVE_REPORT_MAX = (0, 0xFFFFFFFF, 0, 0, 0, 0, 0, 0, 0xFFFF, 0xFFFF, 0, 0)


# --- errors ----------------------------------------------------------------------------------


def _field_of(path: str | None, root: str) -> str:
    """Turn a construct path such as '(parsing) -> header -> version' into 'header.version'.

    Paths inside a quote start at the quote's fields; a standalone structure (an enclave report,
    a TD report body) is named by `root`."""
    if not path:
        return root
    parts = [p.strip() for p in path.split("->")]
    names = [p for p in parts[1:] if p and not p.startswith("(")]
    if root != "quote":
        names.insert(0, root)
    return ".".join(names) if names else root


def _reason_of(error: ConstructError) -> str:
    message = str(error)
    if message.startswith("Error in path"):
        message = message.split("\n", 1)[1] if "\n" in message else ""
    short = _SHORT_READ.search(message)
    if short:
        return f"truncated: needs {short.group(1)} bytes, {short.group(2)} left"
    return message or type(error).__name__


def _format_error(error: ConstructError, root: str) -> QuoteFormatError:
    return QuoteFormatError(_field_of(error.path, root), _reason_of(error))


def _as_bytes(data: object, what: str) -> bytes:
    if isinstance(data, bytes):
        return data
    if isinstance(data, bytearray | memoryview):
        return bytes(data)
    raise QuoteFormatError(what, f"expected bytes, got {type(data).__name__}")


# --- parsing ---------------------------------------------------------------------------------


def _run_parse(compiled: Any, interpreted: Any, data: bytes, root: str) -> tuple[Any, int]:
    """Parse with the compiled struct; on failure, replay interpreted for a precise error.

    Returns the container and the number of bytes consumed.
    """
    stream = io.BytesIO(data)
    try:
        return compiled.parse_stream(stream), stream.tell()
    except Exception:  # noqa: S110 - replayed below, which raises the precise error
        pass
    stream = io.BytesIO(data)
    try:
        return interpreted.parse_stream(stream), stream.tell()
    except ConstructError as error:
        raise _format_error(error, root) from None


def _header(c: Mapping[str, Any]) -> Header:
    return Header(
        version=c["version"],
        attestation_key_type=_KEY_TYPES[c["attestation_key_type"]],
        tee_type=_TEE_TYPES[c["tee_type"]],
        qe_svn=c["qe_svn"],
        pce_svn=c["pce_svn"],
        qe_vendor_id=c["qe_vendor_id"],
        user_data=c["user_data"],
    )


def _td_report(c: Mapping[str, Any], body_type: int) -> TdReport10 | TdReport15:
    if body_type == BodyType.TD_REPORT_15:
        return TdReport15(**{name: c[name] for name in _TD15_NAMES})
    return TdReport10(**{name: c[name] for name in _TD10_NAMES})


def _enclave_report(c: Mapping[str, Any]) -> EnclaveReport:
    return EnclaveReport(**{name: c[name] for name in _ENCLAVE_REPORT_FIELDS})


def _certification_data(c: Mapping[str, Any]) -> CertificationData:
    cert_type = _CERT_TYPES[c["cert_type"]]
    raw = c["body"]
    body: PpidCertData | QeReportCertData | bytes
    if cert_type in _layout.PPID_SIZES:
        body = PpidCertData(
            ppid=raw["ppid"], cpu_svn=raw["cpu_svn"], pce_svn=raw["pce_svn"], pce_id=raw["pce_id"]
        )
    elif cert_type == CertificationDataType.QE_REPORT_CERTIFICATION_DATA:
        body = QeReportCertData(
            qe_report=_enclave_report(raw["qe_report"]),
            qe_report_signature=raw["qe_report_signature"],
            qe_auth_data=raw["qe_auth_data"],
            certification_data=_certification_data(raw["certification_data"]),
        )
    else:
        body = raw
    return CertificationData(cert_type=cert_type, body=body)


def parse_quote(data: bytes, *, allow_zero_padding: bool = False) -> Quote:
    """Parse a TDX quote (v4 or v5), strictly: every size must match, nothing may follow the
    quote except, with `allow_zero_padding`, zero bytes (as configfs-tsm buffers carry)."""
    raw = _as_bytes(data, "quote")
    if len(raw) > MAX_QUOTE_SIZE:
        raise QuoteFormatError("quote", f"{len(raw)} bytes exceeds the {MAX_QUOTE_SIZE}-byte limit")
    c, end = _run_parse(_layout.CompiledQuote, _layout.Quote, raw, "quote")
    trailing = raw[end:]
    if trailing and not (allow_zero_padding and trailing.count(0) == len(trailing)):
        detail = "" if allow_zero_padding else " (zero padding not allowed)"
        raise QuoteFormatError(
            "trailing_data", f"{len(trailing)} bytes follow the quote at offset {end}{detail}"
        )
    body_type = _BODY_TYPES[c["body_type"]]
    sig = c["signature_data"]
    return Quote(
        header=_header(c["header"]),
        body_type=body_type,
        body=_td_report(c["body"], body_type),
        signature_data=QuoteSignatureData(
            signature=sig["signature"],
            attestation_key=sig["attestation_key"],
            certification_data=_certification_data(sig["certification_data"]),
        ),
        signed_bytes=raw[: c["signed_end"]],
    )


def parse_enclave_report(data: bytes) -> EnclaveReport:
    """Parse the 384-byte SGX report body (the QE report)."""
    raw = _as_bytes(data, "enclave_report")
    if len(raw) != _layout.ENCLAVE_REPORT_SIZE:
        raise QuoteFormatError(
            "enclave_report", f"must be {_layout.ENCLAVE_REPORT_SIZE} bytes, got {len(raw)}"
        )
    c, _ = _run_parse(_layout.CompiledEnclaveReport, _layout.EnclaveReport, raw, "enclave_report")
    return _enclave_report(c)


# --- building --------------------------------------------------------------------------------


def _header_dict(header: Header) -> dict[str, Any]:
    return {
        "version": header.version,
        "attestation_key_type": header.attestation_key_type,
        "tee_type": header.tee_type,
        "qe_svn": header.qe_svn,
        "pce_svn": header.pce_svn,
        "qe_vendor_id": header.qe_vendor_id,
        "user_data": header.user_data,
    }


def _body_dict(version: int, body_type: int, body: TdReport10 | TdReport15) -> dict[str, Any]:
    """Check that version, body type and body class agree, and return the body's fields."""
    expected = TdReport15 if body_type == BodyType.TD_REPORT_15 else TdReport10
    if version == 4 and body_type != BodyType.TD_REPORT_10:
        raise QuoteFormatError("body_type", f"a v4 quote carries a TD report 1.0, not {body_type}")
    if body_type not in _layout.V5_BODY_TYPES:
        raise QuoteFormatError("body_type", f"unsupported body type {body_type}")
    if type(body) is not expected:
        raise QuoteFormatError(
            "body", f"body type {body_type} needs a {expected.__name__}, got {type(body).__name__}"
        )
    names = _TD15_NAMES if expected is TdReport15 else _TD10_NAMES
    return {name: getattr(body, name) for name in names}


def _enclave_report_dict(report: EnclaveReport) -> dict[str, Any]:
    return {name: getattr(report, name) for name in _ENCLAVE_REPORT_FIELDS}


def _certification_data_dict(cd: CertificationData, path: str) -> dict[str, Any]:
    body = cd.body
    built: Any
    if cd.cert_type in _layout.PPID_SIZES:
        if not isinstance(body, PpidCertData):
            raise QuoteFormatError(f"{path}.body", f"type {cd.cert_type} needs a PpidCertData")
        built = {
            "ppid": body.ppid,
            "cpu_svn": body.cpu_svn,
            "pce_svn": body.pce_svn,
            "pce_id": body.pce_id,
        }
    elif cd.cert_type == CertificationDataType.QE_REPORT_CERTIFICATION_DATA:
        if not isinstance(body, QeReportCertData):
            raise QuoteFormatError(f"{path}.body", "type 6 needs a QeReportCertData")
        built = {
            "qe_report": _enclave_report_dict(body.qe_report),
            "qe_report_signature": body.qe_report_signature,
            "qe_auth_data": body.qe_auth_data,
            "certification_data": _certification_data_dict(
                body.certification_data, f"{path}.body.certification_data"
            ),
        }
    elif cd.cert_type in _layout.CERT_TYPES:
        if not isinstance(body, bytes):
            raise QuoteFormatError(f"{path}.body", f"type {cd.cert_type} needs bytes")
        built = body
    else:
        raise QuoteFormatError(
            f"{path}.cert_type", f"unsupported certification data type {cd.cert_type}"
        )
    return {"cert_type": cd.cert_type, "body": built}


def _signed_dict(header: Header, body_type: int, body: TdReport10 | TdReport15) -> dict[str, Any]:
    return {
        "header": _header_dict(header),
        "body_type": body_type,
        "body": _body_dict(header.version, body_type, body),
    }


def _run_build(struct: Any, obj: Mapping[str, Any], root: str) -> bytes:
    try:
        return struct.build(obj)  # type: ignore[no-any-return]
    except ConstructError as error:
        raise _format_error(error, root) from None


def build_quote(quote: Quote) -> bytes:
    """Serialize `quote`; `quote.signed_bytes` is ignored (recomputed from header and body)."""
    sig = quote.signature_data
    obj = _signed_dict(quote.header, quote.body_type, quote.body)
    obj["signature_data"] = {
        "signature": sig.signature,
        "attestation_key": sig.attestation_key,
        "certification_data": _certification_data_dict(
            sig.certification_data, "signature_data.certification_data"
        ),
    }
    return _run_build(_layout.Quote, obj, "quote")


def build_signed_region(header: Header, body_type: int, body: TdReport10 | TdReport15) -> bytes:
    """The bytes the quote signature covers: header, v5 body descriptor, and body."""
    return _run_build(_layout.SignedRegion, _signed_dict(header, body_type, body), "quote")


def build_td_report(body: TdReport10 | TdReport15) -> bytes:
    """Serialize a TD report body (584 bytes for 1.0, 648 for 1.5)."""
    if type(body) is TdReport15:
        return _run_build(_layout.TdReport15, _body_dict(5, BodyType.TD_REPORT_15, body), "body")
    return _run_build(_layout.TdReport10, _body_dict(4, BodyType.TD_REPORT_10, body), "body")


def build_enclave_report(report: EnclaveReport) -> bytes:
    """Serialize the 384-byte QE report, the bytes its signature covers.

    Every field of an enclave report has a fixed size, so a report whose fields are all of the
    right type, size and range is packed directly (verification builds one per quote); any
    other goes through the declaration, which names the field that is wrong."""
    values = [getattr(report, name) for name in _ENCLAVE_REPORT_FIELDS]
    for value, size, maximum in zip(
        values, _ENCLAVE_REPORT_SIZES, _ENCLAVE_REPORT_MAX, strict=True
    ):
        if size is None:
            if type(value) is not int or not 0 <= value <= maximum:
                break
        elif type(value) is not bytes or len(value) != size:
            break
    else:
        return _ENCLAVE_REPORT_PACK.pack(*values)
    return _run_build(_layout.EnclaveReport, _enclave_report_dict(report), "enclave_report")
