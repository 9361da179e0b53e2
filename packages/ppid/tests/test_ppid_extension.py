"""The SGX extension parser and encoder: a real Intel PCK certificate, against dcap-qvl, and
every reject path of the strict parser."""

from __future__ import annotations

import dataclasses
from typing import Any

import dcap_qvl
import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from ppid_helpers import (
    FMSPC,
    PCE_ID,
    PLATFORM_INSTANCE_ID,
    PPID,
    REFERENCE_EXTENSION,
    SGX,
    boolean,
    cert_with_extension,
    config_entries,
    entry,
    enumerated,
    integer,
    make_cert,
    octets,
    oid,
    seq,
    tcb_entries,
    tlv,
    top_entries,
)

from tdx_ppid import (
    SGX_EXTENSION_OID,
    PlatformConfiguration,
    PpidError,
    SgxExtension,
    encode_sgx_extension,
    parse_sgx_extension,
)


def _parse(der: bytes) -> SgxExtension:
    return parse_sgx_extension(cert_with_extension(der))


def _reject(der: bytes, match: str) -> None:
    with pytest.raises(PpidError, match=match):
        _parse(der)


# --- the real Intel PCK certificate ---------------------------------------------------------


def test_real_pck_certificate_extension_has_expected_values(real_pems: list[bytes]) -> None:
    ext = parse_sgx_extension(x509.load_pem_x509_certificate(real_pems[0]))
    assert ext.fmspc == bytes.fromhex("B0C06F000000")
    assert ext.ppid.hex() == "811dca2a26b952e85bb6448b097ba4fd"
    assert ext.pce_id == b"\x00\x00"
    assert ext.sgx_type == 1
    assert ext.configuration == PlatformConfiguration(True, True, True)


def test_real_pck_certificate_extension_agrees_with_dcap_qvl(real_pems: list[bytes]) -> None:
    ours = parse_sgx_extension(x509.load_pem_x509_certificate(real_pems[0]))
    ref = dcap_qvl.parse_pck_extension_from_pem(real_pems[0])
    assert ours.ppid == bytes(ref.ppid)
    assert ours.cpu_svn == bytes(ref.cpu_svn)
    assert ours.pce_svn == ref.pce_svn
    assert ours.pce_id == bytes(ref.pce_id)
    assert ours.fmspc == bytes(ref.fmspc)
    assert ours.sgx_type == ref.sgx_type
    assert ours.platform_instance_id == bytes(ref.platform_instance_id)
    for i, svn in enumerate(ours.tcb_components, 1):
        assert svn == int.from_bytes(ref.get_value(f"{SGX}.2.{i}"), "big")
    config = ours.configuration
    assert config is not None
    for i, flag in enumerate((config.dynamic_platform, config.cached_keys, config.smt_enabled), 1):
        assert flag == (ref.get_value(f"{SGX}.7.{i}") == b"\xff")


def test_real_pck_certificate_extension_reencodes_to_the_same_bytes(
    real_pems: list[bytes],
) -> None:
    cert = x509.load_pem_x509_certificate(real_pems[0])
    raw = cert.extensions.get_extension_for_oid(x509.ObjectIdentifier(SGX_EXTENSION_OID))
    assert isinstance(raw.value, x509.UnrecognizedExtension)
    assert encode_sgx_extension(parse_sgx_extension(cert)) == raw.value.value


def test_real_ca_certificates_have_no_sgx_extension(real_pems: list[bytes]) -> None:
    for pem in real_pems[1:]:
        with pytest.raises(PpidError, match="no SGX extension"):
            parse_sgx_extension(x509.load_pem_x509_certificate(pem))


# --- encoder, checked against an independent DER writer -------------------------------------


def test_encoder_writes_the_profile_layout() -> None:
    assert encode_sgx_extension(REFERENCE_EXTENSION) == seq(*top_entries())


def test_encoder_omits_platform_ca_extras_for_processor_certificates() -> None:
    ext = dataclasses.replace(REFERENCE_EXTENSION, platform_instance_id=None, configuration=None)
    assert encode_sgx_extension(ext) == seq(*top_entries()[:5])


def test_encoder_omits_absent_configuration_flags() -> None:
    config = PlatformConfiguration(dynamic_platform=None, cached_keys=True, smt_enabled=None)
    ext = dataclasses.replace(REFERENCE_EXTENSION, configuration=config)
    expected = top_entries(config=[entry(f"{SGX}.7.2", boolean(True))])
    assert encode_sgx_extension(ext) == seq(*expected)


def test_reference_layout_parses_to_reference_values() -> None:
    assert _parse(seq(*top_entries())) == REFERENCE_EXTENSION


def test_processor_certificate_layout_parses_without_extras() -> None:
    ext = _parse(seq(*top_entries()[:5]))
    assert ext.platform_instance_id is None and ext.configuration is None
    assert (ext.ppid, ext.pce_id, ext.fmspc) == (PPID, PCE_ID, FMSPC)


def test_platform_instance_id_without_configuration_parses() -> None:
    ext = _parse(seq(*top_entries()[:6]))
    assert ext.platform_instance_id == PLATFORM_INSTANCE_ID and ext.configuration is None


# --- values that cannot be built --------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("ppid", bytes(15)),
        ("cpu_svn", bytes(17)),
        ("pce_id", bytes(3)),
        ("fmspc", bytes(5)),
        ("platform_instance_id", bytes(8)),
        ("tcb_components", (0,) * 15),
        ("tcb_components", (0,) * 15 + (256,)),
        ("tcb_components", (0,) * 15 + (-1,)),
        ("tcb_components", [0] * 16),
        ("pce_svn", 0x10000),
        ("pce_svn", True),
        ("sgx_type", 3),
        ("configuration", "yes"),
    ],
)
def test_invalid_extension_values_are_refused(field: str, value: Any) -> None:
    with pytest.raises(PpidError, match=field):
        dataclasses.replace(REFERENCE_EXTENSION, **{field: value})


def test_configuration_flags_must_be_bool_or_none() -> None:
    with pytest.raises(PpidError, match="smt_enabled"):
        PlatformConfiguration(dynamic_platform=True, cached_keys=None, smt_enabled=1)  # type: ignore[arg-type]


# --- reject paths of the parser ---------------------------------------------------------------


def test_certificate_without_sgx_extension_is_refused() -> None:
    with pytest.raises(PpidError, match="no SGX extension"):
        parse_sgx_extension(make_cert("Plain", "Plain"))


def test_certificate_repeating_the_sgx_extension_is_refused() -> None:
    # Same-length OID .13.2 patched to .13.1 in the DER (the signature no longer matters here).
    decoy = "1.2.840.113741.1.13.2"
    der = seq(*top_entries())
    cert = make_cert("Twice", "Twice", extensions=[(SGX, der), (decoy, der)])
    raw = cert.public_bytes(Encoding.DER)
    patched = raw.replace(oid(decoy), oid(SGX))
    assert patched != raw
    with pytest.raises(PpidError, match="repeats extension"):
        parse_sgx_extension(x509.load_der_x509_certificate(patched))


def test_extension_that_is_not_a_sequence_is_refused() -> None:
    _reject(octets(b"hello"), "SGX extension: not a DER SEQUENCE")


def test_entry_with_three_components_is_refused() -> None:
    bad = seq(seq(oid(f"{SGX}.1"), octets(PPID), octets(b"x")), *top_entries()[1:])
    _reject(bad, "not a DER SEQUENCE")


def test_entry_without_an_oid_is_refused() -> None:
    _reject(seq(seq(octets(PPID), octets(PPID)), *top_entries()[1:]), "not a DER SEQUENCE")


def test_trailing_bytes_after_the_extension_are_refused() -> None:
    _reject(seq(*top_entries()) + b"\x00", "SGX extension: 1 trailing bytes")


def test_trailing_bytes_after_the_tcb_sequence_are_refused() -> None:
    tcb_value = seq(*tcb_entries()) + b"\x05\x00"
    items = top_entries()
    items[1] = entry(f"{SGX}.2", tcb_value)
    # The outer entry then holds three TLVs, which is an entry of the wrong shape.
    _reject(seq(*items), "not a DER SEQUENCE")


def test_indefinite_length_is_refused() -> None:
    body = b"".join(top_entries())
    _reject(b"\x30\x80" + body + b"\x00\x00", "not a DER SEQUENCE")


def test_non_minimal_length_is_refused() -> None:
    body = b"".join(top_entries())
    _reject(b"\x30\x83" + len(body).to_bytes(3, "big") + body, "SGX extension")


@pytest.mark.parametrize("index", range(5))
def test_missing_required_entry_is_refused(index: int) -> None:
    items = top_entries()
    del items[index]
    _reject(seq(*items), "is missing")


@pytest.mark.parametrize("index", range(7))
def test_duplicate_entry_is_refused(index: int) -> None:
    items = top_entries()
    items.insert(index + 1, items[index])
    _reject(seq(*items), "more than once")


def test_out_of_order_entries_are_refused() -> None:
    items = top_entries()
    items[2], items[3] = items[3], items[2]
    _reject(seq(*items), r"PCE-ID .* out of the profile's order")


def test_unknown_oid_is_refused() -> None:
    items = [*top_entries(), entry(f"{SGX}.8", octets(b"x"))]
    _reject(seq(*items), rf"unknown OID {SGX}\.8")


@pytest.mark.parametrize(
    ("index", "value", "match"),
    [
        (0, octets(bytes(15)), "PPID: expected 16 bytes, got 15"),
        (0, octets(bytes(17)), "PPID: expected 16 bytes, got 17"),
        (0, integer(5), "PPID: expected a DER OCTET STRING"),
        (1, octets(bytes(16)), "TCB: not a DER SEQUENCE"),
        (2, octets(bytes(3)), "PCE-ID: expected 2 bytes, got 3"),
        (2, boolean(True), "PCE-ID: expected a DER OCTET STRING"),
        (3, octets(bytes(5)), "FMSPC: expected 6 bytes, got 5"),
        (4, integer(1), "SGX Type: expected a DER ENUMERATED"),
        (4, enumerated(3), "SGX Type: unknown value 3"),
        (4, enumerated(-1), "SGX Type: unknown value -1"),
        (5, octets(bytes(15)), "PlatformInstanceID: expected 16 bytes, got 15"),
        (6, boolean(True), "Configuration: not a DER SEQUENCE"),
    ],
)
def test_wrong_type_or_size_of_a_top_level_value_is_refused(
    index: int, value: bytes, match: str
) -> None:
    items = top_entries()
    items[index] = entry(f"{SGX}.{index + 1}", value)
    _reject(seq(*items), match)


@pytest.mark.parametrize(
    ("index", "value", "match"),
    [
        (0, integer(256), r"TCB component 1 SVN: 256 is outside 0\.\.255"),
        (5, integer(-1), r"TCB component 6 SVN: -1 is outside 0\.\.255"),
        (15, octets(b"\x01"), "TCB component 16 SVN: expected a DER INTEGER"),
        (16, integer(0x10000), r"PCESVN: 65536 is outside 0\.\.65535"),
        (16, enumerated(1), "PCESVN: expected a DER INTEGER"),
        (17, octets(bytes(15)), "CPUSVN: expected 16 bytes, got 15"),
        (17, integer(0), "CPUSVN: expected a DER OCTET STRING"),
    ],
)
def test_wrong_type_or_range_of_a_tcb_value_is_refused(
    index: int, value: bytes, match: str
) -> None:
    tcb = tcb_entries()
    tcb[index] = entry(f"{SGX}.2.{index + 1}", value)
    _reject(seq(*top_entries(tcb=tcb)), match)


def test_missing_tcb_component_is_refused() -> None:
    tcb = tcb_entries()
    del tcb[7]
    _reject(seq(*top_entries(tcb=tcb)), r"TCB: required TCB component 8 SVN .* is missing")


def test_duplicate_tcb_component_is_refused() -> None:
    tcb = tcb_entries()
    tcb.insert(3, tcb[3])
    _reject(seq(*top_entries(tcb=tcb)), "TCB: TCB component 4 SVN .* more than once")


def test_tcb_components_out_of_order_are_refused() -> None:
    tcb = tcb_entries()
    tcb[0], tcb[1] = tcb[1], tcb[0]
    _reject(seq(*top_entries(tcb=tcb)), "out of the profile's order")


def test_unknown_tcb_entry_is_refused() -> None:
    tcb = [*tcb_entries(), entry(f"{SGX}.2.19", integer(0))]
    _reject(seq(*top_entries(tcb=tcb)), rf"TCB: unknown OID {SGX}\.2\.19")


def test_top_level_oid_inside_tcb_is_refused() -> None:
    tcb = [*tcb_entries(), entry(f"{SGX}.1", octets(PPID))]
    _reject(seq(*top_entries(tcb=tcb)), "TCB: unknown OID")


def test_configuration_flag_of_wrong_type_is_refused() -> None:
    config = config_entries()
    config[1] = entry(f"{SGX}.7.2", integer(1))
    _reject(seq(*top_entries(config=config)), "cachedKeys: expected a DER BOOLEAN")


def test_duplicate_configuration_flag_is_refused() -> None:
    config = [*config_entries(), config_entries()[2]]
    _reject(seq(*top_entries(config=config)), "SMTEnabled .* more than once")


def test_unknown_configuration_flag_is_refused() -> None:
    config = [*config_entries(), entry(f"{SGX}.7.4", boolean(True))]
    _reject(seq(*top_entries(config=config)), "Configuration: unknown OID")


def test_non_canonical_boolean_is_refused() -> None:
    config = config_entries()
    config[0] = entry(f"{SGX}.7.1", tlv(0x01, b"\x01"))
    _reject(seq(*top_entries(config=config)), "not in canonical DER form")


def test_non_minimal_integer_is_refused() -> None:
    tcb = tcb_entries()
    tcb[16] = entry(f"{SGX}.2.17", tlv(0x02, b"\x00\x05"))
    _reject(seq(*top_entries(tcb=tcb)), "not in canonical DER form")


def test_empty_configuration_parses_as_all_flags_absent() -> None:
    ext = _parse(seq(*top_entries(config=[])))
    assert ext.configuration == PlatformConfiguration(None, None, None)
    assert encode_sgx_extension(ext) == seq(*top_entries(config=[]))
