"""Hypothesis strategies for valid `Quote` values of every shape, and small fixed examples."""

from __future__ import annotations

from hypothesis import strategies as st

from tdx_quote import (
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

PPID_SIZES = {1: 16, 2: 256, 3: 384}
u16 = st.integers(0, 0xFFFF)
u32 = st.integers(0, 0xFFFFFFFF)


def exact(n: int) -> st.SearchStrategy[bytes]:
    return st.binary(min_size=n, max_size=n)


def headers(version: int) -> st.SearchStrategy[Header]:
    return st.builds(
        Header,
        version=st.just(version),
        attestation_key_type=st.just(AttestationKeyType.ECDSA_P256),
        tee_type=st.just(TeeType.TDX),
        qe_svn=u16,
        pce_svn=u16,
        qe_vendor_id=exact(16),
        user_data=exact(20),
    )


_TD10 = dict(
    tee_tcb_svn=exact(16),
    mr_seam=exact(48),
    mr_signer_seam=exact(48),
    seam_attributes=exact(8),
    td_attributes=exact(8),
    xfam=exact(8),
    mr_td=exact(48),
    mr_config_id=exact(48),
    mr_owner=exact(48),
    mr_owner_config=exact(48),
    rtmr0=exact(48),
    rtmr1=exact(48),
    rtmr2=exact(48),
    rtmr3=exact(48),
    report_data=exact(64),
)
td_reports_10 = st.builds(TdReport10, **_TD10)
td_reports_15 = st.builds(TdReport15, **_TD10, tee_tcb_svn2=exact(16), mr_service_td=exact(48))

enclave_reports = st.builds(
    EnclaveReport,
    cpu_svn=exact(16),
    misc_select=u32,
    reserved1=exact(28),
    attributes=exact(16),
    mr_enclave=exact(32),
    reserved2=exact(32),
    mr_signer=exact(32),
    reserved3=exact(96),
    isv_prod_id=u16,
    isv_svn=u16,
    reserved4=exact(60),
    report_data=exact(64),
)


def ppid_cert_data(cert_type: int) -> st.SearchStrategy[CertificationData]:
    body = st.builds(
        PpidCertData, ppid=exact(PPID_SIZES[cert_type]), cpu_svn=exact(16), pce_svn=u16, pce_id=u16
    )
    return st.builds(CertificationData, cert_type=st.just(cert_type), body=body)


def raw_cert_data(cert_type: int) -> st.SearchStrategy[CertificationData]:
    return st.builds(CertificationData, cert_type=st.just(cert_type), body=st.binary(max_size=600))


leaf_cert_data = st.one_of(
    *(ppid_cert_data(t) for t in (1, 2, 3)), *(raw_cert_data(t) for t in (4, 5, 7))
)
qe_report_cert_data = st.builds(
    CertificationData,
    cert_type=st.just(CertificationDataType.QE_REPORT_CERTIFICATION_DATA),
    body=st.builds(
        QeReportCertData,
        qe_report=enclave_reports,
        qe_report_signature=exact(64),
        qe_auth_data=st.binary(max_size=300),
        certification_data=leaf_cert_data,
    ),
)
certification_data = st.one_of(leaf_cert_data, qe_report_cert_data)

signature_data = st.builds(
    QuoteSignatureData,
    signature=exact(64),
    attestation_key=exact(64),
    certification_data=certification_data,
)


@st.composite
def quotes(draw: st.DrawFn) -> Quote:
    """Valid quotes: v4 (TD report 1.0) and v5 (1.0 or 1.5), every certification data type."""
    version = draw(st.sampled_from((4, 5)))
    if version == 4:
        body_type = BodyType.TD_REPORT_10
    else:
        body_type = draw(st.sampled_from((BodyType.TD_REPORT_10, BodyType.TD_REPORT_15)))
    body = draw(td_reports_15 if body_type == BodyType.TD_REPORT_15 else td_reports_10)
    return Quote(
        header=draw(headers(version)),
        body_type=body_type,
        body=body,
        signature_data=draw(signature_data),
    )


# --- fixed examples for the example-based tests ----------------------------------------------


def sample_header(version: int = 4) -> Header:
    return Header(
        version=version,
        attestation_key_type=AttestationKeyType.ECDSA_P256,
        tee_type=TeeType.TDX,
        qe_svn=3,
        pce_svn=13,
        qe_vendor_id=bytes(range(16)),
        user_data=b"u" * 20,
    )


def sample_td_report_10() -> TdReport10:
    return TdReport10(**{name: bytes([i + 1]) * size for i, (name, size) in enumerate(_TD10_SIZES)})


def sample_td_report_15() -> TdReport15:
    return TdReport15(
        **{name: bytes([i + 1]) * size for i, (name, size) in enumerate(_TD10_SIZES)},
        tee_tcb_svn2=b"\x21" * 16,
        mr_service_td=b"\x22" * 48,
    )


def sample_enclave_report() -> EnclaveReport:
    return EnclaveReport(
        cpu_svn=b"\x01" * 16,
        misc_select=7,
        reserved1=bytes(28),
        attributes=b"\x02" * 16,
        mr_enclave=b"\x03" * 32,
        reserved2=bytes(32),
        mr_signer=b"\x04" * 32,
        reserved3=bytes(96),
        isv_prod_id=1,
        isv_svn=8,
        reserved4=bytes(60),
        report_data=b"\x05" * 64,
    )


def sample_cert_data(cert_type: int) -> CertificationData:
    """One certification data block of each type 1-7 (type 6 wraps a type 5 chain)."""
    if cert_type in PPID_SIZES:
        return CertificationData(
            cert_type=cert_type,
            body=PpidCertData(
                ppid=b"\xaa" * PPID_SIZES[cert_type], cpu_svn=b"\xbb" * 16, pce_svn=13, pce_id=0
            ),
        )
    if cert_type == 6:
        return CertificationData(
            cert_type=6,
            body=QeReportCertData(
                qe_report=sample_enclave_report(),
                qe_report_signature=b"\x66" * 64,
                qe_auth_data=bytes(range(32)),
                certification_data=sample_cert_data(5),
            ),
        )
    return CertificationData(cert_type=cert_type, body=f"type {cert_type} data\n".encode())


def sample_quote(
    version: int = 4, body_type: int = BodyType.TD_REPORT_10, cert_type: int = 6
) -> Quote:
    body = sample_td_report_15() if body_type == BodyType.TD_REPORT_15 else sample_td_report_10()
    return Quote(
        header=sample_header(version),
        body_type=body_type,
        body=body,
        signature_data=QuoteSignatureData(
            signature=b"\x51" * 64,
            attestation_key=b"\x52" * 64,
            certification_data=sample_cert_data(cert_type),
        ),
    )


_TD10_SIZES = (
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
