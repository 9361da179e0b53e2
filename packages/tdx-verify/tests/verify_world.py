"""A synthetic DCAP world for tests: a P-256 test PKI, CRLs, signed TCB info and QE identity, and
quotes signed like a real TDX quote (built from the real vector's layout with tdx_quote)."""

from __future__ import annotations

import copy
import hashlib
import json
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.x509.oid import NameOID

from tdx_ppid import SGX_EXTENSION_OID
from tdx_quote import (
    CertificationData,
    CertificationDataType,
    QeReportCertData,
    Quote,
    QuoteSignatureData,
    build_enclave_report,
    build_quote,
    parse_quote,
)
from tdx_verify import Collateral

NOW = datetime(2025, 7, 1, 12, 0, 0, tzinfo=UTC)
_SHA = ec.ECDSA(hashes.SHA256())


def raw_sign(key: ec.EllipticCurvePrivateKey, data: bytes) -> bytes:
    r, s = decode_dss_signature(key.sign(data, _SHA))
    return r.to_bytes(32, "big") + s.to_bytes(32, "big")


def _name(cn: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, cn),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Test Corporation"),
        ]
    )


def _cert(
    subject: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: x509.Certificate | None,
    issuer_key: ec.EllipticCurvePrivateKey,
    *,
    ca: bool,
    serial: int,
    extra: list[x509.ExtensionType] = (),  # type: ignore[assignment]
    not_before: datetime = NOW - timedelta(days=365),
    not_after: datetime = NOW + timedelta(days=3650),
) -> x509.Certificate:
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(issuer.subject if issuer is not None else _name(subject))
        .public_key(key.public_key())
        .serial_number(serial)
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()), False
        )
    )
    if ca:
        builder = builder.add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
        builder = builder.add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), True
        )
    else:
        builder = builder.add_extension(x509.BasicConstraints(ca=False, path_length=None), True)
    for ext in extra:
        builder = builder.add_extension(ext, False)
    return builder.sign(issuer_key, hashes.SHA256())


def _crl(
    issuer: x509.Certificate,
    key: ec.EllipticCurvePrivateKey,
    revoked: list[int],
    this_update: datetime,
    next_update: datetime,
    number: int = 1,
) -> bytes:
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(issuer.subject)
        .last_update(this_update)
        .next_update(next_update)
        .add_extension(x509.CRLNumber(number), False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(key.public_key()), False)
    )
    for serial in revoked:
        builder = builder.add_revoked_certificate(
            x509.RevokedCertificateBuilder()
            .serial_number(serial)
            .revocation_date(this_update)
            .build()
        )
    return builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.DER)


def _pem(*certs: x509.Certificate) -> str:
    return "".join(c.public_bytes(serialization.Encoding.PEM).decode() for c in certs)


def _iso(when: datetime) -> str:
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class World:
    """Keys and certificates of one test PKI, and knobs to make collateral and quotes."""

    real_quote: Quote
    real_tcb_info: dict[str, Any]
    real_qe_identity: dict[str, Any]
    real_sgx_extension: bytes
    root_key: ec.EllipticCurvePrivateKey = field(default_factory=lambda: _key())
    pck_ca_key: ec.EllipticCurvePrivateKey = field(default_factory=lambda: _key())
    pck_key: ec.EllipticCurvePrivateKey = field(default_factory=lambda: _key())
    tcb_key: ec.EllipticCurvePrivateKey = field(default_factory=lambda: _key())
    att_key: ec.EllipticCurvePrivateKey = field(default_factory=lambda: _key())

    def __post_init__(self) -> None:
        self.root = _cert("Test SGX Root CA", self.root_key, None, self.root_key, ca=True, serial=1)
        self.pck_ca = _cert(
            "Test SGX PCK Platform CA",
            self.pck_ca_key,
            self.root,
            self.root_key,
            ca=True,
            serial=2,
        )
        self.tcb_signer = _cert(
            "Test SGX TCB Signing", self.tcb_key, self.root, self.root_key, ca=False, serial=3
        )
        self.pck_leaf = self.make_pck_leaf(serial=0x1234)

    @property
    def root_pem(self) -> bytes:
        return self.root.public_bytes(serialization.Encoding.PEM)

    @property
    def root_der(self) -> bytes:
        return self.root.public_bytes(serialization.Encoding.DER)

    def make_pck_leaf(self, *, serial: int, **kwargs: Any) -> x509.Certificate:
        ext = x509.UnrecognizedExtension(
            x509.ObjectIdentifier(SGX_EXTENSION_OID), self.real_sgx_extension
        )
        return _cert(
            "Test SGX PCK Certificate",
            self.pck_key,
            self.pck_ca,
            self.pck_ca_key,
            ca=False,
            serial=serial,
            extra=[ext],
            **kwargs,
        )

    def tcb_info_dict(self) -> dict[str, Any]:
        info = copy.deepcopy(self.real_tcb_info)
        info["issueDate"] = _iso(NOW - timedelta(days=1))
        info["nextUpdate"] = _iso(NOW + timedelta(days=29))
        return info

    def qe_identity_dict(self) -> dict[str, Any]:
        ident = copy.deepcopy(self.real_qe_identity)
        ident["issueDate"] = _iso(NOW - timedelta(days=1))
        ident["nextUpdate"] = _iso(NOW + timedelta(days=29))
        return ident

    def collateral(
        self,
        *,
        tcb_info: dict[str, Any] | None = None,
        qe_identity: dict[str, Any] | None = None,
        revoked_pck: list[int] = (),  # type: ignore[assignment]
        revoked_by_root: list[int] = (),  # type: ignore[assignment]
        crl_next_update: datetime = NOW + timedelta(days=30),
        pck_crl_number: int = 1,
        root_crl_number: int = 1,
    ) -> Collateral:
        tcb_text = json.dumps(tcb_info or self.tcb_info_dict(), separators=(",", ":"))
        qe_text = json.dumps(qe_identity or self.qe_identity_dict(), separators=(",", ":"))
        return Collateral(
            pck_crl_issuer_chain=_pem(self.pck_ca, self.root),
            root_ca_crl=_crl(
                self.root,
                self.root_key,
                list(revoked_by_root),
                NOW - timedelta(days=1),
                NOW + timedelta(days=300),
                root_crl_number,
            ),
            pck_crl=_crl(
                self.pck_ca,
                self.pck_ca_key,
                list(revoked_pck),
                NOW - timedelta(days=1),
                crl_next_update,
                pck_crl_number,
            ),
            tcb_info_issuer_chain=_pem(self.tcb_signer, self.root),
            tcb_info=tcb_text,
            tcb_info_signature=raw_sign(self.tcb_key, tcb_text.encode()),
            qe_identity_issuer_chain=_pem(self.tcb_signer, self.root),
            qe_identity=qe_text,
            qe_identity_signature=raw_sign(self.tcb_key, qe_text.encode()),
        )

    def quote(
        self,
        *,
        leaf: x509.Certificate | None = None,
        qe_report_changes: dict[str, Any] | None = None,
        attestation_key: bytes | None = None,
        header_changes: dict[str, Any] | None = None,
        **body_changes: Any,
    ) -> bytes:
        """A quote over the real vector's body (with `body_changes`), signed by this PKI."""
        real = self.real_quote
        qe_real = real.qe_report_cert_data
        att_raw = self.att_key.public_key().public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
        )[1:]
        if attestation_key is not None:
            att_raw = attestation_key
        report_data = hashlib.sha256(att_raw + qe_real.qe_auth_data).digest() + bytes(32)
        qe_report = replace(qe_real.qe_report, report_data=report_data)
        if qe_report_changes:
            qe_report = replace(qe_report, **qe_report_changes)
        chain = _pem(leaf or self.pck_leaf, self.pck_ca, self.root).encode()
        cert_data = CertificationData(
            CertificationDataType.QE_REPORT_CERTIFICATION_DATA,
            QeReportCertData(
                qe_report=qe_report,
                qe_report_signature=raw_sign(self.pck_key, build_enclave_report(qe_report)),
                qe_auth_data=qe_real.qe_auth_data,
                certification_data=CertificationData(CertificationDataType.PCK_CERT_CHAIN, chain),
            ),
        )
        sig_data = QuoteSignatureData(
            signature=bytes(64), attestation_key=att_raw, certification_data=cert_data
        )
        quote = Quote(
            header=replace(real.header, **(header_changes or {})),
            body_type=real.body_type,
            body=replace(real.body, **body_changes),
            signature_data=sig_data,
        )
        signed = parse_quote(build_quote(quote)).signed_bytes
        sig_data = replace(sig_data, signature=raw_sign(self.att_key, signed))
        return build_quote(replace(quote, signature_data=sig_data))


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())
