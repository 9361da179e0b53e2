"""The pyasn1 implementation of the SGX extension's parser and encoder that tdx-ppid used before
its own strict DER reader (tdx-ppid 0.1.0's `_extension.py`, kept verbatim in substance): the
reference the property tests hold the DER reader to. Decode with pyasn1, then re-encode and
require the input's exact bytes; only tests import this (pyasn1 is a test dependency)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

from pyasn1.codec.der import decoder as der_decoder
from pyasn1.codec.der import encoder as der_encoder
from pyasn1.error import PyAsn1Error
from pyasn1.type import base, namedtype, univ

from tdx_ppid import SGX_EXTENSION_OID, PlatformConfiguration, PpidError, SgxExtension

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
_MAX_COMPONENT_SVN = 0xFF
_MAX_PCE_SVN = 0xFFFF
_SGX_TYPES = (0, 1, 2)


class _Entry(univ.Sequence):
    """One (OID, value) pair of the extension."""

    componentType = namedtype.NamedTypes(
        namedtype.NamedType("id", univ.ObjectIdentifier()),
        namedtype.NamedType("value", univ.Any()),
    )


class _Entries(univ.SequenceOf):
    componentType = _Entry()


# ---------------------------------------------------------------------------------------------
# Parsing


def reference_parse(der: bytes) -> SgxExtension:
    top = _index(_decode_entries(der, "SGX extension"), _TOP_LEVEL, "SGX extension")
    tcb = _index(_decode_entries(top[_TCB], "TCB"), _TCB_LEVEL, "TCB")

    platform_instance_id = None
    if _PLATFORM_INSTANCE_ID in top:
        platform_instance_id = _octets(
            top[_PLATFORM_INSTANCE_ID], "PlatformInstanceID", PLATFORM_INSTANCE_ID_SIZE
        )
    configuration = None
    if _CONFIGURATION in top:
        flags = _index(
            _decode_entries(top[_CONFIGURATION], "Configuration"),
            _CONFIGURATION_LEVEL,
            "Configuration",
        )
        configuration = PlatformConfiguration(
            dynamic_platform=_optional_boolean(flags, _DYNAMIC_PLATFORM, "dynamicPlatform"),
            cached_keys=_optional_boolean(flags, _CACHED_KEYS, "cachedKeys"),
            smt_enabled=_optional_boolean(flags, _SMT_ENABLED, "SMTEnabled"),
        )

    result = SgxExtension(
        ppid=_octets(top[_PPID], "PPID", PPID_SIZE),
        tcb_components=tuple(
            _integer(tcb[oid], f"TCB component {i} SVN", _MAX_COMPONENT_SVN)
            for i, oid in enumerate(_TCB_COMPONENTS, 1)
        ),
        pce_svn=_integer(tcb[_PCESVN], "PCESVN", _MAX_PCE_SVN),
        cpu_svn=_octets(tcb[_CPUSVN], "CPUSVN", CPU_SVN_SIZE),
        pce_id=_octets(top[_PCE_ID], "PCE-ID", PCE_ID_SIZE),
        fmspc=_octets(top[_FMSPC], "FMSPC", FMSPC_SIZE),
        sgx_type=_sgx_type(top[_SGX_TYPE]),
        platform_instance_id=platform_instance_id,
        configuration=configuration,
    )
    # pyasn1's DER decoder tolerates some BER leftovers (BOOLEAN 0x01, padded INTEGERs); the
    # canonical form is what our encoder writes, so anything else is refused here.
    if reference_encode(result) != der:
        raise PpidError("SGX extension: not in canonical DER form")
    return result


def _decode_entries(der: bytes, where: str) -> list[tuple[str, bytes]]:
    """Decode a DER SEQUENCE OF (OID, value); each value is returned as its full TLV bytes."""
    try:
        decoded, rest = der_decoder.decode(der, asn1Spec=_Entries())
    except PyAsn1Error as exc:
        raise PpidError(f"{where}: not a DER SEQUENCE of (OBJECT IDENTIFIER, value) pairs") from exc
    if rest:
        raise PpidError(f"{where}: {len(rest)} trailing bytes after the SEQUENCE")
    return [(str(entry["id"]), bytes(entry["value"])) for entry in decoded]


def _index(
    entries: list[tuple[str, bytes]],
    layout: Sequence[tuple[str, str, bool]],
    where: str,
) -> dict[str, bytes]:
    """Map OIDs to values, refusing unknown, repeated, missing and out-of-order entries."""
    position = {oid: (i, name) for i, (oid, name, _) in enumerate(layout)}
    found: dict[str, bytes] = {}
    last = -1
    for oid, value in entries:
        if oid not in position:
            raise PpidError(f"{where}: unknown OID {oid}")
        index, name = position[oid]
        if oid in found:
            raise PpidError(f"{where}: {name} ({oid}) appears more than once")
        if index < last:
            raise PpidError(f"{where}: {name} ({oid}) is out of the profile's order")
        found[oid] = value
        last = index
    for oid, name, required in layout:
        if required and oid not in found:
            raise PpidError(f"{where}: required {name} ({oid}) is missing")
    return found


_T = TypeVar("_T", bound=base.Asn1Item)


def _decode_value(der: bytes, spec: _T, name: str, type_name: str) -> _T:
    try:
        decoded, rest = der_decoder.decode(der, asn1Spec=spec)
    except PyAsn1Error as exc:
        raise PpidError(f"{name}: expected a DER {type_name}") from exc
    # Defensive: an entry's Any holds exactly one TLV, and pyasn1 honours asn1Spec.
    if rest or not isinstance(decoded, type(spec)):
        raise PpidError(f"{name}: expected exactly one DER {type_name}")
    return decoded


def _octets(der: bytes, name: str, size: int) -> bytes:
    value = bytes(_decode_value(der, univ.OctetString(), name, "OCTET STRING"))
    if len(value) != size:
        raise PpidError(f"{name}: expected {size} bytes, got {len(value)}")
    return value


def _integer(der: bytes, name: str, maximum: int) -> int:
    value = int(_decode_value(der, univ.Integer(), name, "INTEGER"))
    if not 0 <= value <= maximum:
        raise PpidError(f"{name}: {value} is outside 0..{maximum}")
    return value


def _sgx_type(der: bytes) -> int:
    value = int(_decode_value(der, univ.Enumerated(), "SGX Type", "ENUMERATED"))
    if value not in _SGX_TYPES:
        raise PpidError(f"SGX Type: unknown value {value} (known: {_SGX_TYPES})")
    return value


def _optional_boolean(flags: dict[str, bytes], oid: str, name: str) -> bool | None:
    if oid not in flags:
        return None
    return bool(_decode_value(flags[oid], univ.Boolean(), name, "BOOLEAN"))


# ---------------------------------------------------------------------------------------------
# Encoding


def reference_encode(ext: SgxExtension) -> bytes:
    """The DER value of the SGX extension for `ext`, in the profile's order (used to issue PCK
    certificates); `parse_sgx_extension` reads it back unchanged."""
    tcb: list[tuple[str, base.Asn1Item]] = [
        (oid, univ.Integer(svn))
        for oid, svn in zip(_TCB_COMPONENTS, ext.tcb_components, strict=True)
    ]
    tcb += [(_PCESVN, univ.Integer(ext.pce_svn)), (_CPUSVN, univ.OctetString(ext.cpu_svn))]
    top: list[tuple[str, base.Asn1Item]] = [
        (_PPID, univ.OctetString(ext.ppid)),
        (_TCB, _entries(tcb)),
        (_PCE_ID, univ.OctetString(ext.pce_id)),
        (_FMSPC, univ.OctetString(ext.fmspc)),
        (_SGX_TYPE, univ.Enumerated(ext.sgx_type)),
    ]
    if ext.platform_instance_id is not None:
        top.append((_PLATFORM_INSTANCE_ID, univ.OctetString(ext.platform_instance_id)))
    if ext.configuration is not None:
        config = ext.configuration
        flags = [
            (oid, univ.Boolean(flag))
            for oid, flag in (
                (_DYNAMIC_PLATFORM, config.dynamic_platform),
                (_CACHED_KEYS, config.cached_keys),
                (_SMT_ENABLED, config.smt_enabled),
            )
            if flag is not None
        ]
        top.append((_CONFIGURATION, _entries(flags)))
    return bytes(der_encoder.encode(_entries(top)))


def _entries(pairs: Sequence[tuple[str, base.Asn1Item]]) -> _Entries:
    result = _Entries()
    for oid, value in pairs:
        entry = _Entry()
        entry["id"] = univ.ObjectIdentifier(oid)
        entry["value"] = univ.Any(der_encoder.encode(value))
        result.append(entry)
    return result
