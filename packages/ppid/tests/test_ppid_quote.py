"""quote_ppid and pck_chain_from_quote: the real Intel quote, quotes built with tdx-quote for
certification data types 1-6, and every reject path."""

from __future__ import annotations

import dataclasses

import dcap_qvl
import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from hypothesis import given
from ppid_helpers import (
    REAL_QUOTE,
    REFERENCE_EXTENSION,
    make_chain,
    make_quote,
    sgx_extensions,
    to_pem,
)

from tdx_ppid import (
    Ppid,
    PpidError,
    PpidKind,
    SgxExtension,
    encode_sgx_extension,
    parse_sgx_extension,
    pck_chain_from_quote,
    quote_ppid,
)
from tdx_quote import (
    CertificationData,
    CertificationDataType,
    EnclaveReport,
    PpidCertData,
    QeReportCertData,
    Quote,
    build_quote,
    parse_quote,
)

T = CertificationDataType


def _qe_report() -> EnclaveReport:
    return EnclaveReport(
        cpu_svn=bytes(16),
        misc_select=0,
        reserved1=bytes(28),
        attributes=bytes(16),
        mr_enclave=bytes(32),
        reserved2=bytes(32),
        mr_signer=bytes(32),
        reserved3=bytes(96),
        isv_prod_id=1,
        isv_svn=2,
        reserved4=bytes(60),
        report_data=bytes(64),
    )


def _wrap6(inner: CertificationData) -> CertificationData:
    return CertificationData(
        T.QE_REPORT_CERTIFICATION_DATA,
        QeReportCertData(
            qe_report=_qe_report(),
            qe_report_signature=bytes(64),
            qe_auth_data=bytes(32),
            certification_data=inner,
        ),
    )


def _ppid_data(cert_type: int, ppid: bytes) -> CertificationData:
    return CertificationData(cert_type, PpidCertData(ppid, bytes(16), 7, 0))


def _chain_data(pem: bytes) -> CertificationData:
    return CertificationData(T.PCK_CERT_CHAIN, pem)


def _sim_pem(ext: SgxExtension = REFERENCE_EXTENSION) -> bytes:
    return to_pem(make_chain(encode_sgx_extension(ext))) + b"\x00"


def _wire(quote: Quote) -> Quote:
    """The quote as a verifier sees it: built to bytes with tdx-quote and parsed back."""
    return parse_quote(build_quote(quote))


# --- the real Intel quote ---------------------------------------------------------------------


def test_real_quote_ppid_is_the_pck_leaf_ppid_reported_by_dcap_qvl(
    real_quote_bytes: bytes,
) -> None:
    quote = parse_quote(real_quote_bytes, allow_zero_padding=True)
    collateral_json = (REAL_QUOTE.parent / "tdx_quote_v4_collateral.json").read_text()
    collateral = dcap_qvl.QuoteCollateralV3.from_json(collateral_json)
    report = dcap_qvl.verify(real_quote_bytes, collateral, 1752919234)
    assert quote_ppid(quote) == Ppid(PpidKind.PCK_CERTIFICATE, bytes(report.ppid))


def test_real_quote_chain_is_leaf_platform_ca_root(real_quote_bytes: bytes) -> None:
    chain = pck_chain_from_quote(parse_quote(real_quote_bytes, allow_zero_padding=True))
    names = [c.subject.rfc4514_string() for c in chain]
    assert [n.rsplit("CN=", 1)[1] for n in names] == [
        "Intel SGX PCK Certificate",
        "Intel SGX PCK Platform CA",
        "Intel SGX Root CA",
    ]
    assert parse_sgx_extension(chain[0]).fmspc == bytes.fromhex("B0C06F000000")


# --- quotes of every certification data type --------------------------------------------------


@pytest.mark.parametrize(
    ("cert_type", "kind", "size"),
    [
        (T.PPID_CLEARTEXT, PpidKind.CLEARTEXT, 16),
        (T.PPID_RSA2048_ENCRYPTED, PpidKind.RSA2048_ENCRYPTED, 256),
        (T.PPID_RSA3072_ENCRYPTED, PpidKind.RSA3072_ENCRYPTED, 384),
    ],
)
def test_ppid_types_1_to_3_come_from_the_certification_data(
    cert_type: int, kind: PpidKind, size: int
) -> None:
    ppid = bytes((i * 7 + 3) % 256 for i in range(size))
    quote = _wire(make_quote(_ppid_data(cert_type, ppid)))
    assert quote_ppid(quote) == Ppid(kind, ppid)


def test_ppid_type_1_nested_in_type_6_is_read() -> None:
    quote = _wire(make_quote(_wrap6(_ppid_data(T.PPID_CLEARTEXT, bytes(range(16))))))
    assert quote_ppid(quote) == Ppid(PpidKind.CLEARTEXT, bytes(range(16)))


def test_ppid_type_4_comes_from_the_pck_leaf() -> None:
    leaf_pem = to_pem(make_chain(encode_sgx_extension(REFERENCE_EXTENSION))[:1])
    quote = _wire(make_quote(CertificationData(T.PCK_LEAF_CERT, leaf_pem)))
    assert quote_ppid(quote) == Ppid(PpidKind.PCK_CERTIFICATE, REFERENCE_EXTENSION.ppid)


def test_ppid_type_5_comes_from_the_pck_leaf() -> None:
    quote = _wire(make_quote(_chain_data(_sim_pem())))
    assert quote_ppid(quote) == Ppid(PpidKind.PCK_CERTIFICATE, REFERENCE_EXTENSION.ppid)


def test_ppid_type_6_wrapping_5_comes_from_the_pck_leaf() -> None:
    quote = _wire(make_quote(_wrap6(_chain_data(_sim_pem()))))
    assert quote_ppid(quote) == Ppid(PpidKind.PCK_CERTIFICATE, REFERENCE_EXTENSION.ppid)


@pytest.mark.parametrize("wrap", [False, True])
def test_chain_of_type_5_and_6_is_leaf_first(wrap: bool) -> None:
    chain = make_chain(encode_sgx_extension(REFERENCE_EXTENSION))
    data = _chain_data(to_pem(chain) + b"\x00")
    quote = _wire(make_quote(_wrap6(data) if wrap else data))
    assert pck_chain_from_quote(quote) == chain


def test_chain_without_nul_terminator_and_with_blank_lines_loads() -> None:
    chain = make_chain(encode_sgx_extension(REFERENCE_EXTENSION))
    pem = b"\n".join(c.public_bytes(Encoding.PEM) for c in chain) + b"\r\n"
    assert pck_chain_from_quote(make_quote(_chain_data(pem))) == chain


@given(sgx_extensions)
def test_any_pck_leaf_extension_gives_its_ppid(ext: SgxExtension) -> None:
    quote = make_quote(_wrap6(_chain_data(_sim_pem(ext))))
    assert quote_ppid(quote) == Ppid(PpidKind.PCK_CERTIFICATE, ext.ppid)


# --- reject paths -----------------------------------------------------------------------------


def _block() -> bytes:
    return to_pem(make_chain(encode_sgx_extension(REFERENCE_EXTENSION))[:1])


@pytest.mark.parametrize(
    ("blob", "match"),
    [
        (b"", "holds no certificate"),
        (b"\x00\x00", "holds no certificate"),
        (b" \n\t", "holds no certificate"),
        (b"not a certificate", "unexpected data after the last certificate"),
        (
            b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
            "certificate 1 is not a valid PEM X.509 certificate",
        ),
        (
            b"-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n",
            "certificate 1 is not a valid PEM X.509 certificate",
        ),
        (b"-----BEGIN CERTIFICATE-----\nMIIB\n", "certificate 1 has no END line"),
    ],
)
def test_type_5_blob_without_a_valid_certificate_is_refused(blob: bytes, match: str) -> None:
    quote = make_quote(_chain_data(blob))
    with pytest.raises(PpidError, match=match):
        pck_chain_from_quote(quote)
    with pytest.raises(PpidError, match=match):
        quote_ppid(quote)


def test_type_5_data_between_certificates_is_refused() -> None:
    blob = _block() + b"junk\n" + _block()
    with pytest.raises(PpidError, match="unexpected data before certificate 2"):
        pck_chain_from_quote(make_quote(_chain_data(blob)))


def test_type_5_data_before_the_first_certificate_is_refused() -> None:
    with pytest.raises(PpidError, match="unexpected data before certificate 1"):
        pck_chain_from_quote(make_quote(_chain_data(b"x" + _block())))


def test_type_5_data_after_the_nul_terminator_is_refused() -> None:
    with pytest.raises(PpidError, match="unexpected data after the last certificate"):
        pck_chain_from_quote(make_quote(_chain_data(_block() + b"\x00junk")))


def test_type_5_second_certificate_broken_is_refused() -> None:
    broken = _block().replace(b"\n", b"\nA", 1)
    with pytest.raises(PpidError, match="certificate 2 is not a valid"):
        pck_chain_from_quote(make_quote(_chain_data(_block() + broken)))


def test_pck_leaf_without_sgx_extension_gives_no_ppid() -> None:
    quote = make_quote(_wrap6(_chain_data(to_pem(make_chain(None)))))
    assert len(pck_chain_from_quote(quote)) == 3
    with pytest.raises(PpidError, match="no SGX extension"):
        quote_ppid(quote)


def test_pck_leaf_with_malformed_sgx_extension_gives_no_ppid() -> None:
    quote = make_quote(_chain_data(to_pem(make_chain(b"\x30\x00"))))
    with pytest.raises(PpidError, match=r"PPID .* is missing"):
        quote_ppid(quote)


def test_type_4_with_two_certificates_is_refused() -> None:
    quote = make_quote(CertificationData(T.PCK_LEAF_CERT, _block() + _block()))
    with pytest.raises(PpidError, match="holds 2 certificates, not 1"):
        quote_ppid(quote)


@pytest.mark.parametrize(
    "data",
    [
        _ppid_data(T.PPID_CLEARTEXT, bytes(16)),
        CertificationData(T.PCK_LEAF_CERT, b""),
        CertificationData(T.PLATFORM_MANIFEST, b"manifest"),
    ],
    ids=["type1", "type4", "type7"],
)
def test_quote_without_a_pck_chain_has_no_chain(data: CertificationData) -> None:
    with pytest.raises(PpidError, match="carries no PCK certificate chain"):
        pck_chain_from_quote(make_quote(data))


def test_type_6_wrapping_a_non_chain_has_no_chain() -> None:
    quote = make_quote(_wrap6(_ppid_data(T.PPID_CLEARTEXT, bytes(16))))
    with pytest.raises(PpidError, match=r"type 1 \(PPID_CLEARTEXT\) carries no PCK"):
        pck_chain_from_quote(quote)


def test_platform_manifest_carries_no_ppid() -> None:
    quote = make_quote(CertificationData(T.PLATFORM_MANIFEST, b"manifest"))
    with pytest.raises(PpidError, match=r"type 7 \(PLATFORM_MANIFEST\) carries no PPID"):
        quote_ppid(quote)


def test_type_6_nested_in_type_6_is_refused() -> None:
    quote = make_quote(_wrap6(_wrap6(_chain_data(_sim_pem()))))
    with pytest.raises(PpidError, match=r"type 6 .* carries no PPID"):
        quote_ppid(quote)


def test_unknown_certification_data_type_is_refused() -> None:
    quote = make_quote(CertificationData(9, b""))
    with pytest.raises(PpidError, match="type 9 carries no PPID"):
        quote_ppid(quote)


@pytest.mark.parametrize(
    ("cert_type", "size"),
    [
        (T.PPID_CLEARTEXT, 15),
        (T.PPID_RSA2048_ENCRYPTED, 255),
        (T.PPID_RSA2048_ENCRYPTED, 384),
        (T.PPID_RSA3072_ENCRYPTED, 256),
    ],
)
def test_ppid_of_the_wrong_size_for_its_type_is_refused(cert_type: int, size: int) -> None:
    quote = make_quote(_ppid_data(cert_type, bytes(size)))
    with pytest.raises(PpidError, match=f"the PPID is {size} bytes"):
        quote_ppid(quote)


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (CertificationData(T.PPID_CLEARTEXT, bytes(16)), "has no PPID body"),
        (CertificationData(T.PCK_CERT_CHAIN, PpidCertData(bytes(16), bytes(16), 0, 0)), "PEM"),
        (CertificationData(T.QE_REPORT_CERTIFICATION_DATA, b""), "no QE report"),
    ],
)
def test_body_of_the_wrong_shape_for_its_type_is_refused(
    data: CertificationData, match: str
) -> None:
    with pytest.raises(PpidError, match=match):
        quote_ppid(make_quote(data))


def test_ppid_value_must_match_its_kind() -> None:
    with pytest.raises(PpidError, match="rsa3072-encrypted PPID is 384 bytes, got 256"):
        Ppid(PpidKind.RSA3072_ENCRYPTED, bytes(256))
    with pytest.raises(PpidError, match="must be a PpidKind"):
        Ppid("cleartext", bytes(16))  # type: ignore[arg-type]


def test_ppid_kind_values_are_the_contract_strings() -> None:
    assert [k.value for k in PpidKind] == [
        "cleartext",
        "rsa2048-encrypted",
        "rsa3072-encrypted",
        "pck-certificate",
    ]


def test_ppid_is_frozen() -> None:
    ppid = Ppid(PpidKind.CLEARTEXT, bytes(16))
    with pytest.raises(dataclasses.FrozenInstanceError):
        ppid.value = bytes(16)  # type: ignore[misc]


def test_type_5_certificate_with_an_unknown_x509_version_is_refused() -> None:
    # cryptography raises InvalidVersion (not a ValueError) for a version other than v1/v3.
    import base64

    from cryptography.hazmat.primitives.serialization import Encoding

    der = make_chain(encode_sgx_extension(REFERENCE_EXTENSION))[0].public_bytes(Encoding.DER)
    version_v3 = bytes.fromhex("a003020102")
    assert version_v3 in der
    bad = der.replace(version_v3, bytes.fromhex("a003020107"), 1)
    blob = (
        b"-----BEGIN CERTIFICATE-----\n" + base64.encodebytes(bad) + b"-----END CERTIFICATE-----\n"
    )
    with pytest.raises(PpidError, match=r"certificate 1 is not a valid PEM X\.509 certificate"):
        pck_chain_from_quote(make_quote(_chain_data(blob)))


def test_a_chain_loader_gets_each_pem_block_in_order_and_its_certificates_are_returned() -> None:
    chain = make_chain(encode_sgx_extension(REFERENCE_EXTENSION))
    blocks = [c.public_bytes(Encoding.PEM).strip() for c in chain]
    seen: list[tuple[int, bytes]] = []

    def load(index: int, block: bytes) -> x509.Certificate:
        seen.append((index, block))
        return chain[index]

    quote = make_quote(_chain_data(b"\n".join(blocks) + b"\x00"))
    assert pck_chain_from_quote(quote, load=load) == chain
    assert seen == list(enumerate(blocks))


def test_a_chain_loaders_refusal_is_a_ppid_error_naming_the_certificate() -> None:
    def load(index: int, block: bytes) -> x509.Certificate:
        if index == 1:
            raise ValueError("not this one")
        return x509.load_pem_x509_certificate(block)

    chain = make_chain(encode_sgx_extension(REFERENCE_EXTENSION))
    with pytest.raises(PpidError, match="certificate 2 is not a valid PEM"):
        pck_chain_from_quote(make_quote(_chain_data(to_pem(chain))), load=load)
