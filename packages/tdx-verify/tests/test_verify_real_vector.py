"""The real Intel TDX quote in tests/vectors: verdicts, expiry, tampering, agreement."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from verify_agree import both
from verify_vectors import VECTOR_NOW, VECTOR_NOW_TS

from tdx_verify import (
    INTEL_SGX_ROOT_CA_PEM,
    INTEL_SGX_ROOT_CA_SHA256,
    Collateral,
    CollateralExpiredError,
    CollateralSignatureError,
    CrlError,
    PckChainError,
    QeReportError,
    QuoteParseError,
    QuoteSignatureError,
    RootCaError,
    VerificationError,
    Verifier,
)

# Offsets in the v4 quote: header 48, TD report 584, signature data length 4, then
# signature 64, attestation key 64, cert type 2 + size 4, QE report 384, its signature 64,
# QE auth data length 2 + data.
SIG = 48 + 584 + 4
ATT_KEY = SIG + 64
QE_REPORT = ATT_KEY + 64 + 6
QE_SIG = QE_REPORT + 384
QE_AUTH = QE_SIG + 64 + 2


def at(ts: int) -> datetime:
    return datetime.fromtimestamp(ts, UTC)


def flip(data: bytes, offset: int) -> bytes:
    out = bytearray(data)
    out[offset] ^= 0x01
    return bytes(out)


def test_builtin_root_is_intels_sgx_root_ca() -> None:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes

    cert = x509.load_pem_x509_certificate(INTEL_SGX_ROOT_CA_PEM)
    assert cert.fingerprint(hashes.SHA256()).hex() == INTEL_SGX_ROOT_CA_SHA256
    assert cert.subject.rfc4514_string().endswith("CN=Intel SGX Root CA")


def test_builtin_root_is_the_root_of_the_vector_chains(real_collateral: Collateral) -> None:
    assert real_collateral.tcb_info_issuer_chain.endswith(INTEL_SGX_ROOT_CA_PEM.decode())


def test_real_quote_verifies_up_to_date(
    intel_verifier: Verifier, real_quote: bytes, real_collateral: Collateral
) -> None:
    result = intel_verifier.verify(real_quote, real_collateral, now=VECTOR_NOW)
    assert result.tcb_status == "UpToDate"
    assert result.advisory_ids == ()
    assert result.fmspc == bytes.fromhex("B0C06F000000")
    assert result.ppid.value.hex() == "811dca2a26b952e85bb6448b097ba4fd"
    assert result.mr_td == result.quote.body.mr_td and len(result.mr_td) == 48
    assert result.report_data == result.quote.body.report_data
    assert result.verified_at == VECTOR_NOW


def test_real_quote_agrees_with_dcap_qvl(real_quote: bytes, real_collateral: Collateral) -> None:
    v = both(real_quote, real_collateral, VECTOR_NOW)
    assert v.ours_status == v.ref_status == "UpToDate"


def test_warm_verification_reuses_verified_collateral(
    real_quote: bytes, real_collateral: Collateral
) -> None:
    verifier = Verifier()
    first = verifier._verified_collateral(real_collateral)  # the private cache, knowingly
    copy = Collateral.from_json(real_collateral.to_json())
    assert verifier._verified_collateral(copy) is first


@pytest.mark.parametrize(
    ("ts", "item"),
    [
        (VECTOR_NOW_TS + 1, "PCK CRL expired"),  # the PCK CRL's nextUpdate
        (1750327500, "TCB info is not valid before"),  # before the TCB info issueDate
        (1752920000, "PCK CRL expired"),
        (1753000000, "TCB info expired"),  # nextUpdate 2025-07-19T10:16:03Z
        (1800000000, "root CA CRL expired"),
        (1600000000, "root CA CRL is not valid before"),
    ],
)
def test_outside_the_window_fails_naming_the_expired_item(
    intel_verifier: Verifier, real_quote: bytes, real_collateral: Collateral, ts: int, item: str
) -> None:
    with pytest.raises(CollateralExpiredError) as info:
        intel_verifier.verify(real_quote, real_collateral, now=at(ts))
    assert item in str(info.value)
    v = both(real_quote, real_collateral, at(ts))
    assert v.ref_status is None and v.ours_status is None


def test_before_the_root_ca_is_valid_fails_naming_the_root(
    intel_verifier: Verifier, real_quote: bytes, real_collateral: Collateral
) -> None:
    with pytest.raises(RootCaError, match="root CA is not valid before"):
        intel_verifier.verify(real_quote, real_collateral, now=at(1500000000))


def test_naive_datetime_is_refused(
    intel_verifier: Verifier, real_quote: bytes, real_collateral: Collateral
) -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        intel_verifier.verify(real_quote, real_collateral, now=datetime(2025, 7, 19))


@pytest.mark.parametrize(
    ("offset", "error"),
    [
        (10, QuoteSignatureError),  # header: qe_svn
        (48 + 520, QuoteSignatureError),  # TD report: report_data
        (48 + 136, QuoteSignatureError),  # TD report: mr_td
        (SIG, QuoteSignatureError),  # signature r
        (SIG + 63, QuoteSignatureError),  # signature s
        (ATT_KEY, QeReportError),  # attestation key no longer bound by the QE report
        (QE_REPORT + 100, QeReportError),  # QE report body
        (QE_REPORT + 320, QeReportError),  # QE report report_data
        (QE_SIG, QeReportError),  # QE report signature
        (QE_SIG + 40, QeReportError),
        (QE_AUTH, QeReportError),  # QE auth data
    ],
)
def test_tampered_quote_is_refused_like_dcap_qvl(
    real_quote: bytes,
    real_collateral: Collateral,
    offset: int,
    error: type[VerificationError],
) -> None:
    tampered = flip(real_quote, offset)
    v = both(tampered, real_collateral, VECTOR_NOW)
    assert isinstance(v.ours_error, error), v.ours_error
    assert v.ref_status is None, "dcap-qvl accepted the tampered quote"


def _collateral_flip(c: Collateral, name: str, offset: int) -> Collateral:
    value = getattr(c, name)
    if isinstance(value, str):
        raw = bytearray(value.encode())
        raw[offset] ^= 0x01
        changes: dict[str, Any] = {name: raw.decode()}
    else:
        changes = {name: flip(value, offset)}
    return replace(c, **changes)


@pytest.mark.parametrize(
    ("name", "offset", "error"),
    [
        ("tcb_info_signature", 5, CollateralSignatureError),
        ("tcb_info_signature", 60, CollateralSignatureError),
        ("qe_identity_signature", 5, CollateralSignatureError),
        ("qe_identity_signature", 33, CollateralSignatureError),
        ("tcb_info", 200, CollateralSignatureError),  # a byte of the signed TCB info text
        ("qe_identity", 300, CollateralSignatureError),
        ("root_ca_crl", -5, CrlError),  # inside the CRL signature
        ("pck_crl", -5, CrlError),
    ],
)
def test_tampered_collateral_is_refused_like_dcap_qvl(
    real_quote: bytes,
    real_collateral: Collateral,
    name: str,
    offset: int,
    error: type[VerificationError],
) -> None:
    tampered = _collateral_flip(real_collateral, name, offset)
    v = both(real_quote, tampered, VECTOR_NOW)
    assert isinstance(v.ours_error, error), v.ours_error
    assert v.ref_status is None


def test_another_root_ca_refuses_the_real_quote(
    world: object, real_quote: bytes, real_collateral: Collateral
) -> None:
    from verify_world import World

    assert isinstance(world, World)
    v = both(
        real_quote, real_collateral, VECTOR_NOW, root_pem=world.root_pem, root_der=world.root_der
    )
    # The first check against the pinned root is the root CA CRL's signature.
    assert isinstance(v.ours_error, CrlError) and "root CA CRL" in str(v.ours_error)
    assert v.ref_status is None


def test_garbage_is_a_quote_parse_error(
    intel_verifier: Verifier, real_collateral: Collateral
) -> None:
    for data in (b"", b"\x00" * 10, b"garbage" * 100):
        with pytest.raises(QuoteParseError):
            intel_verifier.verify(data, real_collateral, now=VECTOR_NOW)


def test_truncated_quote_is_a_quote_parse_error(
    intel_verifier: Verifier, real_quote: bytes, real_collateral: Collateral
) -> None:
    with pytest.raises(QuoteParseError):
        intel_verifier.verify(real_quote[:4000], real_collateral, now=VECTOR_NOW)


_mutation = st.one_of(
    st.tuples(st.just("flip"), st.integers(0, 4935), st.integers(1, 255)),
    st.tuples(st.just("truncate"), st.integers(0, 4935), st.just(0)),
    st.tuples(st.just("insert"), st.integers(0, 4935), st.integers(0, 255)),
)


@given(st.lists(_mutation, min_size=1, max_size=3))
def test_mutated_quotes_get_the_same_verdict_as_dcap_qvl(
    real_quote: bytes, real_collateral: Collateral, mutations: list[tuple[str, int, int]]
) -> None:
    data = bytearray(real_quote)
    for kind, offset, value in mutations:
        if not data:
            break
        offset %= len(data)
        if kind == "flip":
            data[offset] ^= value
        elif kind == "truncate":
            del data[offset:]
        else:
            data.insert(offset, value)
    v = both(bytes(data), real_collateral, VECTOR_NOW)
    if v.ours_status is not None:
        # Whatever tdx_verify accepts, dcap-qvl accepts with the same status.
        assert v.ours_status == v.ref_status, v.ref_error
    elif v.ref_status is not None:
        # Known divergences, all where tdx_verify is stricter about the format of unsigned bytes:
        # damaged PEM text or a damaged root copy at the end of the PCK chain, non-zero bytes after
        # the quote, an unknown certification data type. dcap-qvl skips these; we refuse the quote.
        assert isinstance(v.ours_error, (PckChainError, QuoteParseError)), v.ours_error
