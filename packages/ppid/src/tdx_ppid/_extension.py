"""The SGX extension of Intel PCK certificates (OID 1.2.840.113741.1.13.1), parsed and built.

Layout from Intel's "SGX PCK Certificate and CRL Profile": a SEQUENCE of (OID, value) pairs in
the order PPID, TCB, PCE-ID, FMSPC, SGX Type, then on Platform CA certificates
PlatformInstanceID and Configuration. TCB and Configuration are themselves SEQUENCEs of
(OID, value) pairs. Parsing is strict: only canonical DER in the profile's order is accepted, so
`encode_sgx_extension(parse_sgx_extension(cert))` gives back the certificate's bytes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypeGuard, TypeVar

from cryptography import x509
from pyasn1.codec.der import decoder as der_decoder
from pyasn1.codec.der import encoder as der_encoder
from pyasn1.error import PyAsn1Error
from pyasn1.type import base, namedtype, univ

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
        for i, svn in enumerate(self.tcb_components, 1):
            _check_int(f"SgxExtension.tcb_components[{i - 1}]", svn, _MAX_COMPONENT_SVN)
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
    if encode_sgx_extension(result) != der:
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


def encode_sgx_extension(ext: SgxExtension) -> bytes:
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
