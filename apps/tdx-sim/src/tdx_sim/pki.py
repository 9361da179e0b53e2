"""The simulator's test PKI: a stand-in for Intel's SGX root, PCK and TCB-signing certificates.

Created once in the state directory and reused on every start, so a verifier that pinned the
sim root keeps trusting the same platform. Names and extensions follow Intel's real chain
(root CA -> PCK Platform CA -> PCK certificate with the SGX extension; root CA -> TCB Signing)
so that DCAP verifiers accept it, while the organisation name says it is not Intel's.
"""

from __future__ import annotations

import dataclasses
import secrets
import shutil
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tdx_ppid import SGX_EXTENSION_OID, PpidError, SgxExtension, encode_sgx_extension
from tdx_ppid import parse_sgx_extension as _parse_sgx_extension

from ._files import fsync_dir, write_file

SIM_ORGANIZATION = "tdx-sim test PKI (not Intel Corporation)"
ROOT_CA_CN = "Intel SGX Root CA"
PLATFORM_CA_CN = "Intel SGX PCK Platform CA"
PCK_CN = "Intel SGX PCK Certificate"
TCB_SIGNING_CN = "Intel SGX TCB Signing"

# The simulated platform's identity. The PPID is drawn at random on first start.
SIM_FMSPC = bytes.fromhex("90C06F000000")
SIM_PCE_ID = b"\x00\x00"
SIM_PCE_SVN = 11
SIM_TCB_COMPONENTS: tuple[int, ...] = (3, 3, 2, 2, 4, 1, 0, 5, 0, 0, 0, 0, 0, 0, 0, 0)
SIM_CPU_SVN = bytes(SIM_TCB_COMPONENTS)  # as on real parts: CPUSVN bytes = the component SVNs

# Placeholder distribution points: the sim is reached at whatever address it listens on, so the
# certificates point at a name that can never resolve (RFC 2606 ".invalid").
ROOT_CRL_URL = "https://tdx-sim.invalid/IntelSGXRootCA.der"
PCK_CRL_URL = "https://tdx-sim.invalid/sgx/certification/v4/pckcrl?ca=platform&encoding=der"

PKI_DIRNAME = "pki"
ROOT_CA_FILENAME = "root_ca.pem"
_KEYS = ("root_ca", "platform_ca", "pck", "tcb_signing")
_CERT_DAYS = {"root_ca": 25 * 365, "platform_ca": 15 * 365, "pck": 7 * 365, "tcb_signing": 7 * 365}


class PkiError(Exception):
    """The state directory holds a PKI that cannot be loaded (partial, corrupt, foreign)."""


@dataclass(frozen=True)
class SimPki:
    """Keys and certificates of the simulated platform and of its simulated Intel services."""

    root_key: ec.EllipticCurvePrivateKey
    root_cert: x509.Certificate
    platform_ca_key: ec.EllipticCurvePrivateKey
    platform_ca_cert: x509.Certificate
    pck_key: ec.EllipticCurvePrivateKey
    pck_cert: x509.Certificate
    tcb_signing_key: ec.EllipticCurvePrivateKey
    tcb_signing_cert: x509.Certificate
    attestation_key: ec.EllipticCurvePrivateKey
    sgx_extension: SgxExtension

    @property
    def root_ca_pem(self) -> bytes:
        return self.root_cert.public_bytes(serialization.Encoding.PEM)

    @property
    def pck_chain_pem(self) -> bytes:
        """The PEM chain a quote carries (certification data type 5): leaf, platform CA, root."""
        return b"".join(
            c.public_bytes(serialization.Encoding.PEM)
            for c in (self.pck_cert, self.platform_ca_cert, self.root_cert)
        )

    @property
    def pck_crl_issuer_chain_pem(self) -> bytes:
        return b"".join(
            c.public_bytes(serialization.Encoding.PEM)
            for c in (self.platform_ca_cert, self.root_cert)
        )

    @property
    def tcb_signing_chain_pem(self) -> bytes:
        return b"".join(
            c.public_bytes(serialization.Encoding.PEM)
            for c in (self.tcb_signing_cert, self.root_cert)
        )

    def mint_platform(self, *, now: datetime, ppid: bytes | None = None) -> SimPki:
        """Another simulated host of the same FMSPC: this PKI with a fresh PCK key and PCK
        certificate (random PPID unless `ppid` is given, same TCB, PCE-ID and FMSPC) issued by
        the same PCK Platform CA, and a fresh attestation key. Root, Platform CA and TCB
        signing stay, so one collateral set verifies the quotes of every minted platform (a
        fleet, e.g. for `bench/verify_fleet.py`). In memory only: nothing is written to the
        state directory."""
        pck_key = _new_key()
        sgx = dataclasses.replace(
            self.sgx_extension, ppid=secrets.token_bytes(16) if ppid is None else ppid
        )
        pck = _issue_pck(self.platform_ca_cert, self.platform_ca_key, pck_key, sgx, now)
        return dataclasses.replace(
            self, pck_key=pck_key, pck_cert=pck, attestation_key=_new_key(), sgx_extension=sgx
        )

    def root_ca_crl(
        self, *, this_update: datetime, next_update: datetime, number: int | None = None
    ) -> bytes:
        """DER CRL of the root CA (revokes nothing); CRL number `number`, by default the issue
        time in seconds."""
        return _crl(self.root_key, self.root_cert, this_update, next_update, (), number)

    def pck_crl(
        self,
        *,
        this_update: datetime,
        next_update: datetime,
        revoked: Iterable[int] = (),
        number: int | None = None,
    ) -> bytes:
        """DER CRL of the platform CA listing the `revoked` certificate serial numbers."""
        return _crl(
            self.platform_ca_key, self.platform_ca_cert, this_update, next_update, revoked, number
        )


def load_or_create_pki(state_dir: Path, *, now: datetime) -> SimPki:
    """Load the PKI kept in `state_dir`, creating it on first start, and (re)write
    `state_dir/root_ca.pem`. Creation is all-or-nothing: a crash leaves no half PKI behind."""
    state_dir.mkdir(parents=True, exist_ok=True)
    pki_dir = state_dir / PKI_DIRNAME
    if not pki_dir.exists():
        _create_pki_dir(pki_dir, now)
    pki = _load_pki_dir(pki_dir)
    root_path = state_dir / ROOT_CA_FILENAME
    pem = pki.root_ca_pem
    if not root_path.exists() or root_path.read_bytes() != pem:
        write_file(root_path, pem, mode=0o644)
    return pki


def _name(cn: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, cn),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, SIM_ORGANIZATION),
            x509.NameAttribute(NameOID.LOCALITY_NAME, "Santa Clara"),
            x509.NameAttribute(NameOID.STATE_OR_PROVINCE_NAME, "CA"),
            x509.NameAttribute(NameOID.COUNTRY_NAME, "US"),
        ]
    )


def _new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


_CA_USAGE = x509.KeyUsage(
    digital_signature=False,
    content_commitment=False,
    key_encipherment=False,
    data_encipherment=False,
    key_agreement=False,
    key_cert_sign=True,
    crl_sign=True,
    encipher_only=False,
    decipher_only=False,
)
_SIGNER_USAGE = x509.KeyUsage(
    digital_signature=True,
    content_commitment=True,
    key_encipherment=False,
    data_encipherment=False,
    key_agreement=False,
    key_cert_sign=False,
    crl_sign=False,
    encipher_only=False,
    decipher_only=False,
)


def _issue(
    *,
    subject: x509.Name,
    public_key: ec.EllipticCurvePublicKey,
    issuer_cert: x509.Certificate | None,
    issuer_key: ec.EllipticCurvePrivateKey,
    now: datetime,
    days: int,
    ca_path_length: int | None,
    crl_url: str,
    extra: x509.ExtensionType | None = None,
) -> x509.Certificate:
    ski = x509.SubjectKeyIdentifier.from_public_key(public_key)
    aki = (
        x509.AuthorityKeyIdentifier(ski.digest, None, None)
        if issuer_cert is None
        else x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(
            issuer_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        )
    )
    is_ca = ca_path_length is not None
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject if issuer_cert is None else issuer_cert.subject)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=days))
        .add_extension(aki, critical=False)
        .add_extension(
            x509.CRLDistributionPoints(
                [
                    x509.DistributionPoint(
                        [x509.UniformResourceIdentifier(crl_url)], None, None, None
                    )
                ]
            ),
            critical=False,
        )
        .add_extension(ski, critical=False)
        .add_extension(_CA_USAGE if is_ca else _SIGNER_USAGE, critical=True)
        .add_extension(x509.BasicConstraints(ca=is_ca, path_length=ca_path_length), critical=True)
    )
    if extra is not None:
        builder = builder.add_extension(extra, critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def _issue_pck(
    platform_ca: x509.Certificate,
    platform_ca_key: ec.EllipticCurvePrivateKey,
    pck_key: ec.EllipticCurvePrivateKey,
    sgx: SgxExtension,
    now: datetime,
) -> x509.Certificate:
    """A PCK certificate for `pck_key` carrying `sgx`, issued by the PCK Platform CA."""
    return _issue(
        subject=_name(PCK_CN),
        public_key=pck_key.public_key(),
        issuer_cert=platform_ca,
        issuer_key=platform_ca_key,
        now=now,
        days=_CERT_DAYS["pck"],
        ca_path_length=None,
        crl_url=PCK_CRL_URL,
        extra=x509.UnrecognizedExtension(
            x509.ObjectIdentifier(SGX_EXTENSION_OID), encode_sgx_extension(sgx)
        ),
    )


def _crl(
    key: ec.EllipticCurvePrivateKey,
    issuer: x509.Certificate,
    this_update: datetime,
    next_update: datetime,
    revoked: Iterable[int],
    number: int | None = None,
) -> bytes:
    ski = issuer.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(issuer.subject)
        .last_update(this_update)
        .next_update(next_update)
        # A CRL issued later must carry a larger number; the issue time in seconds does.
        .add_extension(
            x509.CRLNumber(int(this_update.timestamp()) if number is None else number),
            critical=False,
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False
        )
    )
    for serial in sorted(set(revoked)):
        entry = (
            x509.RevokedCertificateBuilder()
            .serial_number(serial)
            .revocation_date(this_update)
            .add_extension(x509.CRLReason(x509.ReasonFlags.key_compromise), critical=False)
            .build()
        )
        builder = builder.add_revoked_certificate(entry)
    return builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.DER)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _create_pki_dir(pki_dir: Path, now: datetime) -> None:
    keys = {name: _new_key() for name in _KEYS}
    root = _issue(
        subject=_name(ROOT_CA_CN),
        public_key=keys["root_ca"].public_key(),
        issuer_cert=None,
        issuer_key=keys["root_ca"],
        now=now,
        days=_CERT_DAYS["root_ca"],
        ca_path_length=1,
        crl_url=ROOT_CRL_URL,
    )
    platform_ca = _issue(
        subject=_name(PLATFORM_CA_CN),
        public_key=keys["platform_ca"].public_key(),
        issuer_cert=root,
        issuer_key=keys["root_ca"],
        now=now,
        days=_CERT_DAYS["platform_ca"],
        ca_path_length=0,
        crl_url=ROOT_CRL_URL,
    )
    sgx = SgxExtension(
        ppid=secrets.token_bytes(16),
        tcb_components=SIM_TCB_COMPONENTS,
        pce_svn=SIM_PCE_SVN,
        cpu_svn=SIM_CPU_SVN,
        pce_id=SIM_PCE_ID,
        fmspc=SIM_FMSPC,
        sgx_type=0,
        platform_instance_id=None,
        configuration=None,
    )
    pck = _issue_pck(platform_ca, keys["platform_ca"], keys["pck"], sgx, now)
    tcb_signing = _issue(
        subject=_name(TCB_SIGNING_CN),
        public_key=keys["tcb_signing"].public_key(),
        issuer_cert=root,
        issuer_key=keys["root_ca"],
        now=now,
        days=_CERT_DAYS["tcb_signing"],
        ca_path_length=None,
        crl_url=ROOT_CRL_URL,
    )
    certs = {"root_ca": root, "platform_ca": platform_ca, "pck": pck, "tcb_signing": tcb_signing}

    tmp_dir = Path(tempfile.mkdtemp(dir=pki_dir.parent, prefix=f".{pki_dir.name}-"))
    try:
        for name in _KEYS:
            write_file(tmp_dir / f"{name}.key", _key_pem(keys[name]), mode=0o600)
            write_file(
                tmp_dir / f"{name}.pem",
                certs[name].public_bytes(serialization.Encoding.PEM),
                mode=0o644,
            )
        write_file(tmp_dir / "attestation.key", _key_pem(_new_key()), mode=0o600)
        tmp_dir.chmod(0o700)
        try:
            tmp_dir.rename(pki_dir)
        except OSError:
            if not pki_dir.is_dir():
                raise
            # Another process's first start won the rename: keep its PKI, drop ours.
            shutil.rmtree(tmp_dir, ignore_errors=True)
        fsync_dir(pki_dir.parent)
    except BaseException:
        shutil.rmtree(tmp_dir, ignore_errors=True)
        raise


def _load_key(path: Path) -> ec.EllipticCurvePrivateKey:
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as exc:
        raise PkiError(f"cannot load the sim PKI: {path}: {exc}") from exc
    if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name != "secp256r1":
        raise PkiError(f"cannot load the sim PKI: {path} is not a P-256 private key")
    return key


def _load_cert(path: Path) -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(path.read_bytes())
    except (OSError, ValueError) as exc:
        raise PkiError(f"cannot load the sim PKI: {path}: {exc}") from exc


def _load_pki_dir(pki_dir: Path) -> SimPki:
    keys = {name: _load_key(pki_dir / f"{name}.key") for name in _KEYS}
    certs = {name: _load_cert(pki_dir / f"{name}.pem") for name in _KEYS}
    attestation_key = _load_key(pki_dir / "attestation.key")
    try:
        sgx = _parse_sgx_extension(certs["pck"])
    except PpidError as exc:
        raise PkiError(f"cannot load the sim PKI: {pki_dir}/pck.pem: {exc}") from exc
    for name in _KEYS:
        if certs[name].public_key() != keys[name].public_key():
            raise PkiError(f"{pki_dir}/{name}.pem does not match {name}.key")
    return SimPki(
        root_key=keys["root_ca"],
        root_cert=certs["root_ca"],
        platform_ca_key=keys["platform_ca"],
        platform_ca_cert=certs["platform_ca"],
        pck_key=keys["pck"],
        pck_cert=certs["pck"],
        tcb_signing_key=keys["tcb_signing"],
        tcb_signing_cert=certs["tcb_signing"],
        attestation_key=attestation_key,
        sgx_extension=sgx,
    )
