"""The one construct declaration of the TDX quote (v4 and v5), used both to parse and to build.

Stock construct is lenient in places a security parser cannot be: compiled `Bytes` and `Prefixed`
accept short reads, and `Prefixed` ignores unread content. The three small constructs below close
those gaps, in the interpreted and in the compiled parser alike:

- `_Bytes(n)`: exactly n bytes, or a truncation error;
- `_Sized(length, subcon)`: the length field must equal the size of what `subcon` consumes;
- `_Allowed(subcon, values, what)`: an integer field restricted to the values this library knows.

Errors are raised as construct errors carrying the field path; `_codec` turns them into
`QuoteFormatError`.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Mapping
from typing import Any

from construct import (
    Computed,
    Construct,
    ConstructError,
    GreedyBytes,
    Int16ul,
    Int32ul,
    Struct,
    Subconstruct,
    Switch,
    Tell,
    stream_read,
    this,
)

# Field sizes (bytes) from Intel's TDX DCAP Quoting Library API.
HEADER_SIZE = 48
TD_REPORT_10_SIZE = 584
TD_REPORT_15_SIZE = 648
ENCLAVE_REPORT_SIZE = 384
ECDSA_SIGNATURE_SIZE = 64
ECDSA_PUBLIC_KEY_SIZE = 64
PPID_SIZES: Mapping[int, int] = {1: 16, 2: 256, 3: 384}

QUOTE_VERSIONS: Mapping[int, str] = {4: "4", 5: "5"}
TEE_TYPES: Mapping[int, str] = {0x81: "TDX"}
ATTESTATION_KEY_TYPES: Mapping[int, str] = {2: "ECDSA-256-with-P-256"}
V5_BODY_TYPES: Mapping[int, str] = {2: "TD report 1.0", 3: "TD report 1.5"}
CERT_TYPES: Mapping[int, str] = {
    1: "PPID cleartext",
    2: "PPID RSA-2048 encrypted",
    3: "PPID RSA-3072 encrypted",
    4: "PCK leaf certificate",
    5: "PCK certificate chain",
    6: "QE report certification data",
    7: "platform manifest",
}
NESTED_CERT_TYPES: Mapping[int, str] = {k: v for k, v in CERT_TYPES.items() if k != 6}


class LayoutError(ConstructError):  # type: ignore[misc]
    """A violated rule of the quote layout, raised with the construct path of the field."""


def _take(stream: io.BytesIO, length: int, path: str) -> bytes:
    """Read exactly `length` bytes or raise a StreamError describing the shortfall."""
    return stream_read(stream, length, path)  # type: ignore[no-any-return]


def _parse_whole(data: bytes, parse: Callable[[io.BytesIO], Any], path: str) -> Any:
    """Parse `data` with `parse` and insist every byte was consumed."""
    sub = io.BytesIO(data)
    obj = parse(sub)
    left = len(data) - sub.tell()
    if left:
        raise LayoutError(
            f"declared size is {len(data)} bytes but the content is {len(data) - left} bytes",
            path=path,
        )
    return obj


_HELPERS_ATTR = "_tdx_quote_helpers"
_HELPERS_SOURCE = """
def tdxq_take(io, length, data=None):
    if data is None:
        data = io.read(length)
    if len(data) != length:
        raise StreamError("stream read less than specified amount, expected %d, found %d"
                          % (length, len(data)), path="(compiled)")
    return data

def tdxq_allowed(value, allowed):
    if value not in allowed:
        raise ValidationError("unsupported value %r" % (value,), path="(compiled)")
    return value

def tdxq_whole(data, parse):
    sub = BytesIO(data)
    obj = parse(sub)
    if sub.read(1):
        raise StreamError("declared size exceeds the content", path="(compiled)")
    return obj
"""


def _emit_helpers(code: Any) -> None:
    """Define the strict read helpers once in the generated source of a compiled struct."""
    if not getattr(code, _HELPERS_ATTR, False):
        code.append(_HELPERS_SOURCE)
        setattr(code, _HELPERS_ATTR, True)


class _Bytes(Construct):  # type: ignore[misc]
    """Exactly `length` bytes, in both directions and in compiled form."""

    def __init__(self, length: int) -> None:
        super().__init__()
        self.length = length

    def _parse(self, stream: io.BytesIO, context: Any, path: str) -> bytes:
        return _take(stream, self.length, path)

    def _build(self, obj: Any, stream: io.BytesIO, context: Any, path: str) -> bytes:
        if not isinstance(obj, bytes):
            raise LayoutError(f"expected bytes, got {type(obj).__name__}", path=path)
        if len(obj) != self.length:
            raise LayoutError(f"must be {self.length} bytes, got {len(obj)}", path=path)
        stream.write(obj)
        return obj

    def _sizeof(self, context: Any, path: str) -> int:
        return self.length

    def _emitparse(self, code: Any) -> str:
        _emit_helpers(code)
        n = self.length
        return f"(tdxq_b if len(tdxq_b := io.read({n})) == {n} else tdxq_take(io, {n}, tdxq_b))"


class _Sized(Subconstruct):  # type: ignore[misc]
    """`subcon` prefixed by its size; the size must match the content exactly."""

    def __init__(self, lengthfield: Construct, subcon: Construct) -> None:
        super().__init__(subcon)
        self.lengthfield = lengthfield

    def _parse(self, stream: io.BytesIO, context: Any, path: str) -> Any:
        size_path = f"{path} -> size"
        length = self.lengthfield._parsereport(stream, context, size_path)
        start = stream.tell()
        data = stream.read(length)
        if len(data) != length:
            raise LayoutError(
                f"declares {length} bytes but only {len(data)} remain at offset {start}",
                path=size_path,
            )
        return _parse_whole(
            data, lambda sub: self.subcon._parsereport(sub, context, path), size_path
        )

    def _build(self, obj: Any, stream: io.BytesIO, context: Any, path: str) -> Any:
        inner = io.BytesIO()
        built = self.subcon._build(obj, inner, context, path)
        data = inner.getvalue()
        self.lengthfield._build(len(data), stream, context, f"{path} -> size")
        stream.write(data)
        return built

    def _sizeof(self, context: Any, path: str) -> int:
        return self.lengthfield._sizeof(context, path) + self.subcon._sizeof(context, path)  # type: ignore[no-any-return]

    def _emitparse(self, code: Any) -> str:
        _emit_helpers(code)
        length = self.lengthfield._compileparse(code)
        sub = self.subcon._compileparse(code)
        return f"tdxq_whole(tdxq_take(io, {length}), lambda io: ({sub}))"


class _Allowed(Subconstruct):  # type: ignore[misc]
    """An integer field that only takes the values this library knows how to read."""

    def __init__(self, subcon: Construct, allowed: Mapping[int, str], what: str) -> None:
        super().__init__(subcon)
        self.allowed = dict(allowed)
        self.what = what

    def _check(self, value: Any, path: str) -> None:
        if not isinstance(value, int) or value not in self.allowed:
            shown = f"{value:#x}" if isinstance(value, int) else repr(value)
            known = ", ".join(f"{k:#x} ({v})" for k, v in self.allowed.items())
            expected = f"; expected {known}" if known else ""
            raise LayoutError(f"unsupported {self.what} {shown}{expected}", path=path)

    def _parse(self, stream: io.BytesIO, context: Any, path: str) -> Any:
        value = self.subcon._parsereport(stream, context, path)
        self._check(value, path)
        return value

    def _build(self, obj: Any, stream: io.BytesIO, context: Any, path: str) -> Any:
        self._check(obj, path)
        return self.subcon._build(obj, stream, context, path)

    def _emitparse(self, code: Any) -> str:
        _emit_helpers(code)
        allowed = tuple(sorted(self.allowed))
        return f"tdxq_allowed({self.subcon._compileparse(code)}, {allowed!r})"


def _switch(key: Any, cases: Mapping[int, Construct], what: str) -> Construct:
    """A Switch whose unknown keys are refused (the `_Allowed` key field makes them unreachable)."""
    return Switch(key, dict(cases), default=_Allowed(Computed(key), {}, what))


Header = Struct(
    "version" / _Allowed(Int16ul, QUOTE_VERSIONS, "quote version"),
    "attestation_key_type" / _Allowed(Int16ul, ATTESTATION_KEY_TYPES, "attestation key type"),
    "tee_type" / _Allowed(Int32ul, TEE_TYPES, "TEE type"),
    "qe_svn" / Int16ul,
    "pce_svn" / Int16ul,
    "qe_vendor_id" / _Bytes(16),
    "user_data" / _Bytes(20),
)

TD_REPORT_10_FIELDS: tuple[tuple[str, int], ...] = (
    ("tee_tcb_svn", 16),
    ("mr_seam", 48),
    ("mr_signer_seam", 48),
    ("seam_attributes", 8),
    ("td_attributes", 8),
    ("xfam", 8),
    ("mr_td", 48),
    ("mr_config_id", 48),
    ("mr_owner", 48),
    ("mr_owner_config", 48),
    ("rtmr0", 48),
    ("rtmr1", 48),
    ("rtmr2", 48),
    ("rtmr3", 48),
    ("report_data", 64),
)
TD_REPORT_15_FIELDS: tuple[tuple[str, int], ...] = (
    *TD_REPORT_10_FIELDS,
    ("tee_tcb_svn2", 16),
    ("mr_service_td", 48),
)

TdReport10 = Struct(*(name / _Bytes(size) for name, size in TD_REPORT_10_FIELDS))
TdReport15 = Struct(*(name / _Bytes(size) for name, size in TD_REPORT_15_FIELDS))

EnclaveReport = Struct(
    "cpu_svn" / _Bytes(16),
    "misc_select" / Int32ul,
    "reserved1" / _Bytes(28),
    "attributes" / _Bytes(16),
    "mr_enclave" / _Bytes(32),
    "reserved2" / _Bytes(32),
    "mr_signer" / _Bytes(32),
    "reserved3" / _Bytes(96),
    "isv_prod_id" / Int16ul,
    "isv_svn" / Int16ul,
    "reserved4" / _Bytes(60),
    "report_data" / _Bytes(64),
)


def _ppid_cert_data(ppid_size: int) -> Construct:
    return Struct(
        "ppid" / _Bytes(ppid_size),
        "cpu_svn" / _Bytes(16),
        "pce_svn" / Int16ul,
        "pce_id" / Int16ul,
    )


_LEAF_CERT_BODIES: dict[int, Construct] = {
    **{cert_type: _ppid_cert_data(size) for cert_type, size in PPID_SIZES.items()},
    4: GreedyBytes,
    5: GreedyBytes,
    7: GreedyBytes,
}

NestedCertificationData = Struct(
    "cert_type"
    / _Allowed(Int16ul, NESTED_CERT_TYPES, "nested certification data type (type 6 cannot nest)"),
    "body" / _Sized(Int32ul, _switch(this.cert_type, _LEAF_CERT_BODIES, "certification data type")),
)

QeReportCertificationData = Struct(
    "qe_report" / EnclaveReport,
    "qe_report_signature" / _Bytes(ECDSA_SIGNATURE_SIZE),
    "qe_auth_data" / _Sized(Int16ul, GreedyBytes),
    "certification_data" / NestedCertificationData,
)

CertificationData = Struct(
    "cert_type" / _Allowed(Int16ul, CERT_TYPES, "certification data type"),
    "body"
    / _Sized(
        Int32ul,
        _switch(
            this.cert_type,
            {**_LEAF_CERT_BODIES, 6: QeReportCertificationData},
            "certification data type",
        ),
    ),
)

QuoteSignatureData = Struct(
    "signature" / _Bytes(ECDSA_SIGNATURE_SIZE),
    "attestation_key" / _Bytes(ECDSA_PUBLIC_KEY_SIZE),
    "certification_data" / CertificationData,
)

# The signed region: header, the v5 body descriptor (type and size), and the TD report body.
# v4 has no descriptor: its body type is TD report 1.0 by definition.
_SIGNED_FIELDS = (
    "header" / Header,
    "body_type"
    / _switch(
        this.header.version,
        {4: Computed(2), 5: _Allowed(Int16ul, V5_BODY_TYPES, "body type")},
        "quote version",
    ),
    "body"
    / _switch(
        this.header.version,
        {
            4: TdReport10,
            5: _Sized(
                Int32ul, _switch(this.body_type, {2: TdReport10, 3: TdReport15}, "body type")
            ),
        },
        "quote version",
    ),
)

SignedRegion = Struct(*_SIGNED_FIELDS)

Quote = Struct(
    *_SIGNED_FIELDS,
    "signed_end" / Tell,
    "signature_data" / _Sized(Int32ul, QuoteSignatureData),
)

CompiledQuote = Quote.compile()
CompiledEnclaveReport = EnclaveReport.compile()
