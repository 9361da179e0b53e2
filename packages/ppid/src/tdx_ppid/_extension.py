"""The SGX extension of Intel PCK certificates (OID 1.2.840.113741.1.13.1), parsed and built.

Layout from Intel's "SGX PCK Certificate and CRL Profile": a SEQUENCE of (OID, value) pairs in
the order PPID, TCB, PCE-ID, FMSPC, SGX Type, then on Platform CA certificates
PlatformInstanceID and Configuration. TCB and Configuration are themselves SEQUENCEs of
(OID, value) pairs. Parsing is strict: only canonical DER in the profile's order is accepted, so
`encode_sgx_extension(parse_sgx_extension(cert))` gives back the certificate's bytes. The reader
and the writer are this module's own (a few dozen lines for the five DER types used); the tests
hold both to pyasn1's decoder and encoder, with the old decode-then-re-encode check as reference.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import TypeGuard

from cryptography import x509

from tdx_ppid._errors import PpidError

SGX_EXTENSION_OID = "1.2.840.113741.1.13.1"

_PPID = f"{SGX_EXTENSION_OID}.1"
_TCB = f"{SGX_EXTENSION_OID}.2"
_PCE_ID = f"{SGX_EXTENSION_OID}.3"
_FMSPC = f"{SGX_EXTENSION_OID}.4"
_SGX_TYPE = f"{SGX_EXTENSION_OID}.5"
_PLATFORM_INSTANCE_ID = f"{SGX_EXTENSION_OID}.6"
_CONFIGURATION = f"{SGX_EXTENSION_OID}.7"

_TCB_COMPONENTS = tuple(f"{_TCB}.{i}" for i in range(1, 17))
_PCESVN = f"{_TCB}.17"
_CPUSVN = f"{_TCB}.18"

_DYNAMIC_PLATFORM = f"{_CONFIGURATION}.1"
_CACHED_KEYS = f"{_CONFIGURATION}.2"
_SMT_ENABLED = f"{_CONFIGURATION}.3"

# (OID, name, required), in the order the profile lists them.
_TOP_LEVEL = (
    (_PPID, "PPID", True),
    (_TCB, "TCB", True),
    (_PCE_ID, "PCE-ID", True),
    (_FMSPC, "FMSPC", True),
    (_SGX_TYPE, "SGX Type", True),
    (_PLATFORM_INSTANCE_ID, "PlatformInstanceID", False),
    (_CONFIGURATION, "Configuration", False),
)
_TCB_LEVEL = (
    *((oid, f"TCB component {i} SVN", True) for i, oid in enumerate(_TCB_COMPONENTS, 1)),
    (_PCESVN, "PCESVN", True),
    (_CPUSVN, "CPUSVN", True),
)
_CONFIGURATION_LEVEL = (
    (_DYNAMIC_PLATFORM, "dynamicPlatform", False),
    (_CACHED_KEYS, "cachedKeys", False),
    (_SMT_ENABLED, "SMTEnabled", False),
)

PPID_SIZE = 16
CPU_SVN_SIZE = 16
PCE_ID_SIZE = 2
FMSPC_SIZE = 6
PLATFORM_INSTANCE_ID_SIZE = 16
TCB_COMPONENT_COUNT = 16
_MAX_COMPONENT_SVN = 0xFF
_MAX_PCE_SVN = 0xFFFF
_SGX_TYPES = (0, 1, 2)  # Standard, Scalable, ScalableWithIntegrity


@dataclass(frozen=True, slots=True)
class PlatformConfiguration:
    """The Configuration of a Platform CA PCK certificate; each flag is optional in the profile."""

    dynamic_platform: bool | None
    cached_keys: bool | None
    smt_enabled: bool | None

    def __post_init__(self) -> None:
        for name in ("dynamic_platform", "cached_keys", "smt_enabled"):
            if not isinstance(getattr(self, name), bool | None):
                raise PpidError(f"PlatformConfiguration.{name} must be a bool or None")


@dataclass(frozen=True, slots=True)
class SgxExtension:
    """The values of a PCK certificate's SGX extension; invalid sizes or ranges cannot be built."""

    ppid: bytes  # 16
    tcb_components: tuple[int, ...]  # the 16 SGX TCB component SVNs, each 0..255
    pce_svn: int  # 0..65535
    cpu_svn: bytes  # 16
    pce_id: bytes  # 2
    fmspc: bytes  # 6
    sgx_type: int  # 0 Standard, 1 Scalable, 2 ScalableWithIntegrity
    platform_instance_id: bytes | None  # 16, Platform CA certificates only
    configuration: PlatformConfiguration | None  # Platform CA certificates only

    def __post_init__(self) -> None:
        _check_bytes("SgxExtension.ppid", self.ppid, PPID_SIZE)
        _check_bytes("SgxExtension.cpu_svn", self.cpu_svn, CPU_SVN_SIZE)
        _check_bytes("SgxExtension.pce_id", self.pce_id, PCE_ID_SIZE)
        _check_bytes("SgxExtension.fmspc", self.fmspc, FMSPC_SIZE)
        if self.platform_instance_id is not None:
            _check_bytes(
                "SgxExtension.platform_instance_id",
                self.platform_instance_id,
                PLATFORM_INSTANCE_ID_SIZE,
            )
        if not isinstance(self.tcb_components, tuple) or (
            len(self.tcb_components) != TCB_COMPONENT_COUNT
        ):
            raise PpidError(
                f"SgxExtension.tcb_components must be a tuple of {TCB_COMPONENT_COUNT} SVNs"
            )
        for i, svn in enumerate(self.tcb_components):
            if not (_is_int(svn) and 0 <= svn <= _MAX_COMPONENT_SVN):  # named only on failure
                _check_int(f"SgxExtension.tcb_components[{i}]", svn, _MAX_COMPONENT_SVN)
        _check_int("SgxExtension.pce_svn", self.pce_svn, _MAX_PCE_SVN)
        if not _is_int(self.sgx_type) or self.sgx_type not in _SGX_TYPES:
            raise PpidError(f"SgxExtension.sgx_type must be one of {_SGX_TYPES}")
        if not isinstance(self.configuration, PlatformConfiguration | None):
            raise PpidError("SgxExtension.configuration must be a PlatformConfiguration or None")


def _is_int(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_bytes(name: str, value: object, size: int) -> None:
    if not isinstance(value, bytes) or len(value) != size:
        raise PpidError(f"{name} must be {size} bytes")


def _check_int(name: str, value: object, maximum: int) -> None:
    if not (_is_int(value) and 0 <= value <= maximum):
        raise PpidError(f"{name} must be an integer in 0..{maximum}")


# ---------------------------------------------------------------------------------------------
# DER: the five types this structure uses, read and written strictly (X.690 section 10)

_SEQUENCE = 0x30
_OBJECT_IDENTIFIER = 0x06
_OCTET_STRING = 0x04
_INTEGER = 0x02
_ENUMERATED = 0x0A
_BOOLEAN = 0x01
_FALSE, _TRUE = b"\x00", b"\xff"


def _oid_content(dotted: str) -> bytes:
    """The DER content octets of an OBJECT IDENTIFIER: each arc in base 128, shortest form."""
    arcs = [int(arc) for arc in dotted.split(".")]
    out = bytearray()
    for arc in (40 * arcs[0] + arcs[1], *arcs[2:]):
        septets = [arc & 0x7F]
        arc >>= 7
        while arc:
            septets.append(0x80 | (arc & 0x7F))
            arc >>= 7
        out += bytes(reversed(septets))
    return bytes(out)


def _dotted(content: bytes) -> str:
    """An OBJECT IDENTIFIER's content octets as dotted text, for error messages."""
    arcs: list[int] = []
    value, fresh = 0, True
    for octet in content:
        if fresh and octet == 0x80:  # a padded arc: not an OID DER would write
            break
        value = value << 7 | (octet & 0x7F)
        fresh = not octet & 0x80
        if fresh:
            arcs.append(value)
            value = 0
    else:
        if arcs and fresh:
            first = min(arcs[0] // 40, 2)
            return ".".join(str(arc) for arc in (first, arcs[0] - 40 * first, *arcs[1:]))
    return f"(malformed: {content.hex()})"


@dataclass(frozen=True, slots=True)
class _Field:
    oid: bytes  # the OID's DER content octets
    dotted: str
    name: str
    required: bool


@dataclass(frozen=True, slots=True)
class _Level:
    """One SEQUENCE OF (OID, value) of the profile: its entries, in the profile's order."""

    where: str
    fields: tuple[_Field, ...]
    position: Mapping[bytes, int]


def _level(where: str, layout: Sequence[tuple[str, str, bool]]) -> _Level:
    fields = tuple(_Field(_oid_content(o), o, name, required) for o, name, required in layout)
    return _Level(where, fields, MappingProxyType({f.oid: i for i, f in enumerate(fields)}))


_TOP = _level("SGX extension", _TOP_LEVEL)
_TCB_SEQ = _level("TCB", _TCB_LEVEL)
_CONFIGURATION_SEQ = _level("Configuration", _CONFIGURATION_LEVEL)
_OID = MappingProxyType(
    {o: _oid_content(o) for o, _, _ in (*_TOP_LEVEL, *_TCB_LEVEL, *_CONFIGURATION_LEVEL)}
)


_TCB_COMPONENT_FIELDS = tuple(
    (_OID[oid], f"TCB component {i} SVN") for i, oid in enumerate(_TCB_COMPONENTS, 1)
)


def _not_pairs(where: str, detail: str) -> PpidError:
    return PpidError(f"{where}: not a DER SEQUENCE of (OBJECT IDENTIFIER, value) pairs ({detail})")


def _tlv(der: bytes, pos: int, end: int, where: str) -> tuple[int, int, int]:
    """(tag, content start, content end) of the TLV at der[pos:end]: a one-octet tag and a
    definite length in its shortest form, its content within `end`."""
    if end - pos >= 2:  # the common case first: a short-form length
        tag = der[pos]
        length = der[pos + 1]
        if length < 0x80 and tag & 0x1F != 0x1F and pos + 2 + length <= end:
            return tag, pos + 2, pos + 2 + length
    if end - pos < 2:
        raise _not_pairs(where, "truncated")
    tag = der[pos]
    if tag & 0x1F == 0x1F:
        raise _not_pairs(where, f"multi-octet tag at offset {pos}")
    length = der[pos + 1]
    start = pos + 2
    if length & 0x80:
        count = length & 0x7F
        if count == 0:
            raise _not_pairs(where, f"indefinite length at offset {pos}")
        if end - start < count:
            raise _not_pairs(where, "truncated")
        length = int.from_bytes(der[start : start + count], "big")
        if der[start] == 0 or length < 0x80:
            raise PpidError(
                f"{where}: not in canonical DER form (length at offset {pos} not in its "
                "shortest form)"
            )
        start += count
    if end - start < length:
        raise _not_pairs(where, "truncated")
    return tag, start, start + length


_Value = tuple[int, int, int, int]
"""An entry's value: (tag, start of its TLV, start of its content, end)."""


def _entries(der: bytes, start: int, end: int, level: _Level) -> dict[bytes, _Value]:
    """Read the SEQUENCE OF (OID, value) that is exactly der[start:end], refusing unknown,
    repeated, missing and out-of-order entries; the values by OID."""
    where = level.where
    tag, pos, stop = _tlv(der, start, end, where)
    if tag != _SEQUENCE:
        raise _not_pairs(where, f"tag {tag:#04x} where a SEQUENCE is expected")
    if stop != end:
        raise PpidError(f"{where}: {end - stop} trailing bytes after the SEQUENCE")
    found: dict[bytes, _Value] = {}
    last = -1
    while pos < stop:
        # The common entry first: SEQUENCE { OID, value } with one-octet tags and short-form
        # lengths, each TLV within its parent, read inline (what `_tlv` checks); anything else
        # (and every error) takes the general path below.
        n = der[pos + 1] if stop - pos >= 2 else 0x80
        entry_end = pos + 2 + n
        if (
            der[pos] == _SEQUENCE
            and 4 <= n < 0x80
            and entry_end <= stop
            and der[pos + 2] == _OBJECT_IDENTIFIER
            and der[pos + 3] < 0x80
            and (oid_end := pos + 4 + der[pos + 3]) + 2 <= entry_end
            and (value_tag := der[oid_end]) & 0x1F != 0x1F
            and der[oid_end + 1] < 0x80
            and (value_end := oid_end + 2 + der[oid_end + 1]) <= entry_end
        ):
            oid_start, content = pos + 4, oid_end + 2
        else:
            tag, inner, entry_end = _tlv(der, pos, stop, where)
            if tag != _SEQUENCE:
                raise _not_pairs(where, f"an entry with tag {tag:#04x}, not a SEQUENCE")
            tag, oid_start, oid_end = _tlv(der, inner, entry_end, where)
            if tag != _OBJECT_IDENTIFIER:
                raise _not_pairs(where, "an entry that does not start with an OBJECT IDENTIFIER")
            value_tag, content, value_end = _tlv(der, oid_end, entry_end, where)
        if value_end != entry_end:
            raise _not_pairs(where, "an entry with more than an OBJECT IDENTIFIER and a value")
        oid = der[oid_start:oid_end]
        index = level.position.get(oid)
        if index is None:
            raise PpidError(f"{where}: unknown OID {_dotted(oid)}")
        field = level.fields[index]
        if oid in found:
            raise PpidError(f"{where}: {field.name} ({field.dotted}) appears more than once")
        if index < last:
            raise PpidError(f"{where}: {field.name} ({field.dotted}) is out of the profile's order")
        found[oid] = (value_tag, oid_end, content, value_end)
        last = index
        pos = entry_end
    for field in level.fields:
        if field.required and field.oid not in found:
            raise PpidError(f"{where}: required {field.name} ({field.dotted}) is missing")
    return found


def _content(der: bytes, value: _Value, tag: int, name: str, type_name: str) -> bytes:
    if value[0] != tag:
        raise PpidError(f"{name}: expected a DER {type_name}")
    return der[value[2] : value[3]]


def _octets(der: bytes, value: _Value, name: str, size: int) -> bytes:
    content = _content(der, value, _OCTET_STRING, name, "OCTET STRING")
    if len(content) != size:
        raise PpidError(f"{name}: expected {size} bytes, got {len(content)}")
    return content


def _int(content: bytes, name: str, type_name: str) -> int:
    """A DER INTEGER or ENUMERATED content: two's complement in the fewest octets."""
    if not content:
        raise PpidError(f"{name}: not in canonical DER form (an empty {type_name})")
    if len(content) > 1 and (
        (content[0] == 0x00 and content[1] < 0x80) or (content[0] == 0xFF and content[1] >= 0x80)
    ):
        raise PpidError(f"{name}: not in canonical DER form ({type_name} with a redundant octet)")
    return int.from_bytes(content, "big", signed=True)


def _integer(der: bytes, value: _Value, name: str, maximum: int) -> int:
    _, _, start, end = value
    if value[0] == _INTEGER and end - start == 1 and der[start] < 0x80:  # one octet, 0..127
        number = der[start]
        if number <= maximum:
            return number
    number = _int(_content(der, value, _INTEGER, name, "INTEGER"), name, "INTEGER")
    if not 0 <= number <= maximum:
        raise PpidError(f"{name}: {number} is outside 0..{maximum}")
    return number


def _sgx_type(der: bytes, value: _Value) -> int:
    name = "SGX Type"
    number = _int(_content(der, value, _ENUMERATED, name, "ENUMERATED"), name, "ENUMERATED")
    if number not in _SGX_TYPES:
        raise PpidError(f"SGX Type: unknown value {number} (known: {_SGX_TYPES})")
    return number


def _optional_boolean(der: bytes, flags: dict[bytes, _Value], oid: str, name: str) -> bool | None:
    value = flags.get(_OID[oid])
    if value is None:
        return None
    content = _content(der, value, _BOOLEAN, name, "BOOLEAN")
    if content not in (_FALSE, _TRUE):
        raise PpidError(f"{name}: not in canonical DER form (a BOOLEAN is one octet 00 or FF)")
    return content == _TRUE


# ---------------------------------------------------------------------------------------------
# Parsing


def parse_sgx_extension(cert: x509.Certificate) -> SgxExtension:
    """Read and strictly parse the SGX extension of a PCK certificate.

    Raises PpidError when the extension is absent, duplicated or malformed.
    """
    try:
        extension = cert.extensions.get_extension_for_oid(x509.ObjectIdentifier(SGX_EXTENSION_OID))
    except x509.ExtensionNotFound as exc:
        raise PpidError(
            f"the certificate has no SGX extension ({SGX_EXTENSION_OID}): not a PCK certificate"
        ) from exc
    except x509.DuplicateExtension as exc:
        raise PpidError(f"the certificate repeats extension {exc.oid.dotted_string}") from exc
    except ValueError as exc:
        raise PpidError(f"the certificate's extensions are malformed: {exc}") from exc
    value = extension.value
    if not isinstance(value, x509.UnrecognizedExtension):  # a future cryptography might decode it
        raise PpidError("the SGX extension was decoded as an unexpected type")
    return _parse_extension_der(value.value)


def _parse_extension_der(der: bytes) -> SgxExtension:
    """Only the exact bytes `encode_sgx_extension` writes for some valid extension are accepted:
    every TLV is read with a definite, shortest-form length and its exact tag, each SEQUENCE OF
    holds only the profile's OIDs in its order, and each value is checked for its type, its
    size or range and its one DER encoding (INTEGER without redundant octets, BOOLEAN 00/FF)."""
    der = bytes(der)
    top = _entries(der, 0, len(der), _TOP)
    _, tcb_start, _, tcb_end = top[_OID[_TCB]]
    tcb = _entries(der, tcb_start, tcb_end, _TCB_SEQ)

    platform_instance_id = None
    if (pid := top.get(_OID[_PLATFORM_INSTANCE_ID])) is not None:
        platform_instance_id = _octets(der, pid, "PlatformInstanceID", PLATFORM_INSTANCE_ID_SIZE)
    configuration = None
    if (config := top.get(_OID[_CONFIGURATION])) is not None:
        flags = _entries(der, config[1], config[3], _CONFIGURATION_SEQ)
        configuration = PlatformConfiguration(
            dynamic_platform=_optional_boolean(der, flags, _DYNAMIC_PLATFORM, "dynamicPlatform"),
            cached_keys=_optional_boolean(der, flags, _CACHED_KEYS, "cachedKeys"),
            smt_enabled=_optional_boolean(der, flags, _SMT_ENABLED, "SMTEnabled"),
        )

    return SgxExtension(
        ppid=_octets(der, top[_OID[_PPID]], "PPID", PPID_SIZE),
        tcb_components=tuple(
            _integer(der, tcb[oid], name, _MAX_COMPONENT_SVN) for oid, name in _TCB_COMPONENT_FIELDS
        ),
        pce_svn=_integer(der, tcb[_OID[_PCESVN]], "PCESVN", _MAX_PCE_SVN),
        cpu_svn=_octets(der, tcb[_OID[_CPUSVN]], "CPUSVN", CPU_SVN_SIZE),
        pce_id=_octets(der, top[_OID[_PCE_ID]], "PCE-ID", PCE_ID_SIZE),
        fmspc=_octets(der, top[_OID[_FMSPC]], "FMSPC", FMSPC_SIZE),
        sgx_type=_sgx_type(der, top[_OID[_SGX_TYPE]]),
        platform_instance_id=platform_instance_id,
        configuration=configuration,
    )


# ---------------------------------------------------------------------------------------------
# Encoding


def _der(tag: int, content: bytes) -> bytes:
    n = len(content)
    if n < 0x80:
        return bytes((tag, n)) + content
    size = (n.bit_length() + 7) // 8
    return bytes((tag, 0x80 | size)) + n.to_bytes(size, "big") + content


def _der_integer(number: int, tag: int = _INTEGER) -> bytes:
    """A non-negative INTEGER (or ENUMERATED) in the fewest octets, room left for the sign."""
    return _der(tag, number.to_bytes(number.bit_length() // 8 + 1, "big", signed=True))


def _der_entries(pairs: Sequence[tuple[str, bytes]]) -> bytes:
    return _der(
        _SEQUENCE,
        b"".join(_der(_SEQUENCE, _der(_OBJECT_IDENTIFIER, _OID[o]) + value) for o, value in pairs),
    )


def encode_sgx_extension(ext: SgxExtension) -> bytes:
    """The DER value of the SGX extension for `ext`, in the profile's order (used to issue PCK
    certificates); `parse_sgx_extension` reads it back unchanged."""
    tcb = [
        (o, _der_integer(svn)) for o, svn in zip(_TCB_COMPONENTS, ext.tcb_components, strict=True)
    ]
    tcb += [(_PCESVN, _der_integer(ext.pce_svn)), (_CPUSVN, _der(_OCTET_STRING, ext.cpu_svn))]
    top = [
        (_PPID, _der(_OCTET_STRING, ext.ppid)),
        (_TCB, _der_entries(tcb)),
        (_PCE_ID, _der(_OCTET_STRING, ext.pce_id)),
        (_FMSPC, _der(_OCTET_STRING, ext.fmspc)),
        (_SGX_TYPE, _der_integer(ext.sgx_type, _ENUMERATED)),
    ]
    if ext.platform_instance_id is not None:
        top.append((_PLATFORM_INSTANCE_ID, _der(_OCTET_STRING, ext.platform_instance_id)))
    if ext.configuration is not None:
        config = ext.configuration
        flags = [
            (o, _TRUE if flag else _FALSE)
            for o, flag in (
                (_DYNAMIC_PLATFORM, config.dynamic_platform),
                (_CACHED_KEYS, config.cached_keys),
                (_SMT_ENABLED, config.smt_enabled),
            )
            if flag is not None
        ]
        top.append((_CONFIGURATION, _der_entries([(o, _der(_BOOLEAN, v)) for o, v in flags])))
    return _der_entries(top)
