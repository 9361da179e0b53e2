"""A simulated TD that makes attested certificates as the identity service will: a fresh
P-256 TLS key, claims binding it and the instance key, a real sim quote over the claims."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.x509.oid import NameOID

from tdx_attested_tls import (
    Claims,
    build_certificate,
    claims_for,
    report_data_for,
    spki_der_of,
)
from tdx_sim import SimPlatform


@dataclass(frozen=True)
class Made:
    """A certificate with its key, as PEM (for a server) and DER (for a parser)."""

    certificate: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    @property
    def der(self) -> bytes:
        return self.certificate.public_bytes(serialization.Encoding.DER)

    @property
    def cert_pem(self) -> bytes:
        return self.certificate.public_bytes(serialization.Encoding.PEM)

    @property
    def key_pem(self) -> bytes:
        return self.key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )


class CertMaker:
    """Makes certificates on `platform` for the instance key `instance_key` (its own, fresh,
    by default), which signs each certificate's pubkey-hash."""

    def __init__(
        self, platform: SimPlatform, instance_key: Ed25519PrivateKey | None = None
    ) -> None:
        self.platform = platform
        self.instance_key = instance_key or Ed25519PrivateKey.generate()

    @property
    def instance_pubkey(self) -> bytes:
        return self.instance_key.public_key().public_bytes_raw()

    def make(
        self,
        *,
        claims: Claims | None = None,
        not_before: datetime | None = None,
        not_after: datetime | None = None,
    ) -> Made:
        key = ec.generate_private_key(ec.SECP256R1())
        claims = claims or claims_for(spki_der_of(key), self.instance_key)
        quote = self.platform.quote(report_data_for(claims.encode()))
        now = datetime.now(UTC)
        certificate = build_certificate(
            key,
            claims,
            quote,
            hostnames=["127.0.0.1", "localhost"],
            not_before=not_before or now - timedelta(minutes=5),
            not_after=not_after or now + timedelta(hours=1),
        )
        return Made(certificate, key)


def plain_certificate() -> Made:
    """A self-signed certificate with no evidence at all."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "plain")])
    now = datetime.now(UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .sign(key, hashes.SHA256())
    )
    return Made(certificate, key)


def with_extension(
    key: ec.EllipticCurvePrivateKey, value: bytes, *, critical: bool = False
) -> Made:
    """A self-signed certificate of `key` whose 2.23.133.5.4.9 extension holds `value`."""
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "crafted")])
    now = datetime.now(UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(hours=1))
        .add_extension(
            x509.UnrecognizedExtension(x509.ObjectIdentifier("2.23.133.5.4.9"), value),
            critical=critical,
        )
        .sign(key, hashes.SHA256())
    )
    return Made(certificate, key)
