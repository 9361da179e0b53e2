"""The format, byte for byte: the maker's certificate parses back to its claims, an
independent decoder (cbor2 and cryptography only) reads what the maker wrote, a certificate
made the way Gramine makes its own parses, and every malformed or unbound certificate is
refused with the error that names it."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta

import cbor2
import pytest
from atls_support import CertMaker, plain_certificate, with_extension
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from tdx_attested_tls import (
    EVIDENCE_OID,
    BindingError,
    CertificateExpired,
    CertificateFormatError,
    CertificateNotYetValid,
    Claims,
    HashAlg,
    build_certificate,
    check_validity,
    claims_for,
    encode_evidence,
    parse_attested_certificate,
    report_data_for,
    spki_der_of,
)
from tdx_quote import parse_quote
from tdx_service_kit.testing import with_x509_version

SPKI = b"\x30\x59" + bytes(89)


def test_claims_encode_deterministically_byte_for_byte() -> None:
    key = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
    instance = key.public_key().public_bytes_raw()
    claims = claims_for(SPKI, key, nonce=b"\x01\x02")
    digest = hashlib.sha256(SPKI).digest()
    entry = b"\x82\x01\x58\x20" + digest  # [1, bstr(32)]
    # The instance key signs the domain, the hash algorithm's id byte, then H(SPKI).
    message = b"tdx-attested-tls/instance-binding/v1\n" + b"\x01" + digest
    signature = key.sign(message)  # ed25519 is deterministic
    key.public_key().verify(claims.instance_signature or b"", message)
    expected = (
        b"\xa4"  # map(4), keys in RFC 8949 deterministic order (shorter encoding first)
        + b"\x65nonce"
        + b"\x42\x01\x02"
        + b"\x6bpubkey-hash"
        + b"\x58\x24"
        + entry
        + b"\x73tdx-instance-pubkey"
        + b"\x58\x20"
        + instance
        + b"\x76tdx-instance-signature"
        + b"\x58\x40"
        + signature
    )
    assert claims.encode() == expected
    assert Claims.decode(expected) == claims
    claims.check_instance_binding()
    assert report_data_for(expected) == hashlib.sha256(expected).digest() + bytes(32)


def test_evidence_is_tag_60000_over_two_byte_strings() -> None:
    value = encode_evidence(b"Q" * 3, b"C" * 2)
    assert value == b"\xd9\xea\x60" + b"\x82" + b"\x43QQQ" + b"\x42CC"


@pytest.mark.parametrize("alg", list(HashAlg))
def test_every_hash_algorithm_round_trips(alg: HashAlg) -> None:
    claims = claims_for(SPKI, None, hash_alg=alg)
    assert len(claims.pubkey_hash) == alg.size
    assert Claims.decode(claims.encode()) == claims
    assert claims.binds(SPKI)
    assert not claims.binds(SPKI + b"\x00")


def test_the_maker_certificate_parses_back_and_an_independent_decoder_agrees(
    maker: CertMaker,
) -> None:
    made = maker.make()
    parsed = parse_attested_certificate(made.der)
    assert parsed.instance_pubkey == maker.instance_pubkey
    assert parsed.claims.hash_alg is HashAlg.SHA256
    assert parsed.spki_der == spki_der_of(made.key)
    assert parsed.fingerprint == hashlib.sha256(made.der).digest()

    # Independently: cryptography finds the extension, cbor2 decodes it, the hashes hold.
    cert = x509.load_der_x509_certificate(made.der)
    ext = cert.extensions.get_extension_for_oid(x509.ObjectIdentifier("2.23.133.5.4.9"))
    assert ext.critical is False
    assert isinstance(ext.value, x509.UnrecognizedExtension)
    tagged = cbor2.loads(ext.value.value)
    assert isinstance(tagged, cbor2.CBORTag) and tagged.tag == 60000
    quote, claims_buffer = tagged.value
    claims = cbor2.loads(claims_buffer)
    assert set(claims) == {"pubkey-hash", "tdx-instance-pubkey", "tdx-instance-signature"}
    assert claims["tdx-instance-pubkey"] == maker.instance_pubkey
    alg, digest = cbor2.loads(claims["pubkey-hash"])
    spki = cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    assert (alg, digest) == (1, hashlib.sha256(spki).digest())
    maker.instance_key.public_key().verify(
        claims["tdx-instance-signature"],
        b"tdx-attested-tls/instance-binding/v1\n" + bytes([alg]) + digest,
    )
    report_data = parse_quote(quote).body.report_data
    assert report_data == hashlib.sha256(claims_buffer).digest() + bytes(32)

    # A TLS server certificate: not a CA, key usage for TLS, the hostnames as SANs.
    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False
    key_usage = cert.extensions.get_extension_for_class(x509.KeyUsage)
    assert key_usage.critical and key_usage.value.digital_signature
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert x509.oid.ExtendedKeyUsageOID.SERVER_AUTH in eku
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["localhost"]
    assert [str(ip) for ip in san.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]


def test_a_certificate_made_as_gramine_makes_it_parses(maker: CertMaker) -> None:
    """Gramine's RA-TLS: a P-384 key, a sha-384 pubkey-hash, the one "pubkey-hash" claim, the
    quote's report_data SHA-256(claims) zero-padded; encoded here with plain cbor2 calls."""
    key = ec.generate_private_key(ec.SECP384R1())
    spki = spki_der_of(key)
    entry = cbor2.dumps([7, hashlib.sha384(spki).digest()])
    claims_buffer = cbor2.dumps({"pubkey-hash": entry})
    quote = maker.platform.quote(hashlib.sha256(claims_buffer).digest() + bytes(32))
    value = cbor2.dumps(cbor2.CBORTag(60000, [quote, claims_buffer]))
    parsed = parse_attested_certificate(with_extension(key, value).der)
    assert parsed.claims.hash_alg is HashAlg.SHA384
    assert parsed.instance_pubkey is None
    assert parsed.quote == quote


def test_a_plain_self_signed_certificate_is_refused() -> None:
    with pytest.raises(CertificateFormatError, match="no attestation evidence"):
        parse_attested_certificate(plain_certificate().der)


def test_not_a_certificate_is_refused() -> None:
    with pytest.raises(CertificateFormatError, match=r"not a DER X\.509 certificate"):
        parse_attested_certificate(b"\x30\x03\x02\x01\x00")


def test_a_certificate_of_an_unknown_x509_version_is_refused(maker: CertMaker) -> None:
    """cryptography raises `InvalidVersion`, not a ValueError, for a version other than v1 or
    v3: it is a format error like any other."""
    der = maker.make().der
    for version in (3, 5, 255):
        with pytest.raises(CertificateFormatError, match=r"not a DER X\.509 certificate"):
            parse_attested_certificate(with_x509_version(der, version))


def test_a_repeated_evidence_extension_is_refused(maker: CertMaker) -> None:
    """Two evidence extensions: which one would a verifier read? Refused outright."""
    made = maker.make()
    good = parse_attested_certificate(made.der)
    evidence = encode_evidence(good.quote, good.claims_buffer)
    name = made.certificate.subject
    neighbour = x509.ObjectIdentifier("2.23.133.5.4.8")
    twice = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(made.key.public_key())
        .serial_number(1)
        .not_valid_before(made.certificate.not_valid_before_utc)
        .not_valid_after(made.certificate.not_valid_after_utc)
        .add_extension(x509.UnrecognizedExtension(EVIDENCE_OID, evidence), critical=False)
        .add_extension(x509.UnrecognizedExtension(neighbour, evidence), critical=False)
        .sign(made.key, hashes.SHA256())
        .public_bytes(serialization.Encoding.DER)
    )
    oid_of = bytes.fromhex("0606678105050408")  # DER of 2.23.133.5.4.8, same length
    assert twice.count(oid_of) == 1
    der = twice.replace(oid_of, bytes.fromhex("0606678105050409"))
    with pytest.raises(CertificateFormatError, match=r"repeats extension"):
        parse_attested_certificate(der)


def test_a_critical_evidence_extension_is_refused(maker: CertMaker) -> None:
    made = maker.make()
    value = parse_attested_certificate(made.der)
    evidence = encode_evidence(value.quote, value.claims_buffer)
    with pytest.raises(CertificateFormatError, match="critical"):
        parse_attested_certificate(with_extension(made.key, evidence, critical=True).der)


def _garbage_values(quote: bytes, good_claims: bytes) -> list[tuple[bytes, str]]:
    def tagged(*items: object, tag: int = 60000) -> bytes:
        return cbor2.dumps(cbor2.CBORTag(tag, list(items)))

    entry = cbor2.dumps([1, bytes(32)])
    return [
        (b"\xff\x00garbage", "not well-formed CBOR"),
        (b"\xd9\xea\x60\x82\x43QQ", "not well-formed CBOR"),  # truncated
        (tagged(quote, good_claims) + b"\x00", "bytes after its CBOR item"),
        (tagged(quote, good_claims, tag=60001), "not CBOR tag 60000"),
        (cbor2.dumps([quote, good_claims]), "not CBOR tag 60000"),
        (tagged(quote), "not an array"),
        (tagged(quote, good_claims, b""), "not an array"),
        (tagged("text", good_claims), "quote is not a non-empty byte string"),
        (tagged(quote, b""), "claims buffer is not a non-empty"),
        (tagged(quote, b"\xa1"), "claims buffer is not well-formed"),
        (tagged(quote, cbor2.dumps([entry])), "not a CBOR map"),
        (tagged(quote, cbor2.dumps({1: entry})), "not a non-empty text string"),
        (tagged(quote, cbor2.dumps({"nonce": b"x"})), 'no "pubkey-hash"'),
        (
            # the same key twice: decoders disagree on which wins, so it is refused
            tagged(quote, b"\xa2" + (b"\x6bpubkey-hash\x58\x24" + entry) * 2),
            "repeats a key",
        ),
        (tagged(quote, cbor2.dumps({"pubkey-hash": b"\x01"})), "pubkey-hash entry"),
        (
            tagged(quote, cbor2.dumps({"pubkey-hash": cbor2.dumps([2, bytes(32)])})),
            "algorithm 2",
        ),
        (
            tagged(quote, cbor2.dumps({"pubkey-hash": cbor2.dumps([True, bytes(32)])})),
            "algorithm True",
        ),
        (
            tagged(quote, cbor2.dumps({"pubkey-hash": cbor2.dumps([1, bytes(31)])})),
            "not a 32-byte SHA256 digest",
        ),
        (
            tagged(quote, cbor2.dumps({"pubkey-hash": entry, "tdx-instance-pubkey": "x"})),
            "not a byte string",
        ),
        (
            tagged(quote, cbor2.dumps({"pubkey-hash": entry, "tdx-instance-pubkey": bytes(31)})),
            "instance public key is 32 bytes",
        ),
        (
            tagged(quote, cbor2.dumps({"pubkey-hash": entry, "tdx-instance-signature": b"x"})),
            "instance signature without an instance public key",
        ),
        (
            tagged(
                quote,
                cbor2.dumps(
                    {
                        "pubkey-hash": entry,
                        "tdx-instance-pubkey": bytes(32),
                        "tdx-instance-signature": bytes(63),
                    }
                ),
            ),
            "instance signature is 64 bytes",
        ),
    ]


def test_garbage_evidence_is_refused_with_its_reason(maker: CertMaker) -> None:
    made = maker.make()
    good = parse_attested_certificate(made.der)
    for value, reason in _garbage_values(good.quote, good.claims_buffer):
        with pytest.raises(CertificateFormatError, match=reason):
            parse_attested_certificate(with_extension(made.key, value).der)


def test_claims_binding_another_key_are_refused(maker: CertMaker) -> None:
    other = ec.generate_private_key(ec.SECP256R1())
    made = maker.make()
    good = parse_attested_certificate(made.der)
    # The TD's genuine evidence, copied into a certificate of the attacker's key.
    stolen = encode_evidence(good.quote, good.claims_buffer)
    with pytest.raises(BindingError, match="hash of this certificate's public key"):
        parse_attested_certificate(with_extension(other, stolen).der)


def _evidence_for(maker: CertMaker, key: ec.EllipticCurvePrivateKey, claims: Claims) -> bytes:
    """Genuine evidence for `claims`: the platform's quote commits to them."""
    return encode_evidence(maker.platform.quote(report_data_for(claims.encode())), claims.encode())


def test_an_instance_claim_without_a_signature_is_refused(maker: CertMaker) -> None:
    """Another TD of the same image on the same platform names a registered instance key it
    does not hold: the quote is genuine and commits to the claims, but nothing is signed."""
    key = ec.generate_private_key(ec.SECP256R1())
    signed = claims_for(spki_der_of(key), maker.instance_key)
    unsigned = Claims(signed.hash_alg, signed.pubkey_hash, instance_pubkey=maker.instance_pubkey)
    with pytest.raises(BindingError, match='no "tdx-instance-signature"'):
        parse_attested_certificate(with_extension(key, _evidence_for(maker, key, unsigned)).der)


def test_an_instance_signature_by_another_key_is_refused(maker: CertMaker) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    own = claims_for(spki_der_of(key), Ed25519PrivateKey.generate())
    claimed = Claims(
        own.hash_alg,
        own.pubkey_hash,
        instance_pubkey=maker.instance_pubkey,
        instance_signature=own.instance_signature,
    )
    with pytest.raises(BindingError, match="signature does not verify"):
        parse_attested_certificate(with_extension(key, _evidence_for(maker, key, claimed)).der)


def test_an_instance_signature_over_another_spki_is_refused(maker: CertMaker) -> None:
    """The instance key's genuine signature, made for another TLS key, copied to this one."""
    key = ec.generate_private_key(ec.SECP256R1())
    other = claims_for(spki_der_of(ec.generate_private_key(ec.SECP256R1())), maker.instance_key)
    mine = claims_for(spki_der_of(key), None)
    moved = Claims(
        mine.hash_alg,
        mine.pubkey_hash,
        instance_pubkey=maker.instance_pubkey,
        instance_signature=other.instance_signature,
    )
    with pytest.raises(BindingError, match="signature does not verify"):
        parse_attested_certificate(with_extension(key, _evidence_for(maker, key, moved)).der)
    # A signature over the same hash under another algorithm id does not verify either.
    sha384 = claims_for(spki_der_of(key), maker.instance_key, hash_alg=HashAlg.SHA384)
    assert sha384.instance_signature is not None
    relabelled = Claims(
        HashAlg.SHA256,
        mine.pubkey_hash,
        instance_pubkey=maker.instance_pubkey,
        instance_signature=sha384.instance_signature,
    )
    with pytest.raises(BindingError, match="signature does not verify"):
        relabelled.check_instance_binding()


def test_a_quote_for_other_claims_is_refused(maker: CertMaker) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    claims = claims_for(spki_der_of(key), maker.instance_key)
    quote = maker.platform.quote(report_data_for(claims.encode() + b"x"))
    value = encode_evidence(quote, claims.encode())
    with pytest.raises(BindingError, match="quote was made for other claims"):
        parse_attested_certificate(with_extension(key, value).der)
    # Gramine compares only the first 32 bytes; we require the zero padding too.
    padded = maker.platform.quote(hashlib.sha256(claims.encode()).digest() + b"\x01" * 32)
    with pytest.raises(BindingError):
        parse_attested_certificate(
            with_extension(key, encode_evidence(padded, claims.encode())).der
        )


def test_an_unparsable_quote_is_refused() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    claims = claims_for(spki_der_of(key), None)
    value = encode_evidence(b"not a quote", claims.encode())
    with pytest.raises(CertificateFormatError, match="quote does not parse"):
        parse_attested_certificate(with_extension(key, value).der)


def test_a_certificate_not_signed_by_its_own_key_is_refused(maker: CertMaker) -> None:
    made = maker.make()
    other = ec.generate_private_key(ec.SECP256R1())
    good = parse_attested_certificate(made.der)
    builder = x509.CertificateBuilder(
        issuer_name=made.certificate.issuer,
        subject_name=made.certificate.subject,
        public_key=made.key.public_key(),
        serial_number=1,
        not_valid_before=made.certificate.not_valid_before_utc,
        not_valid_after=made.certificate.not_valid_after_utc,
        extensions=[
            x509.Extension(
                EVIDENCE_OID,
                False,
                x509.UnrecognizedExtension(
                    EVIDENCE_OID, encode_evidence(good.quote, good.claims_buffer)
                ),
            )
        ],
    )
    forged = builder.sign(other, hashes.SHA256())
    with pytest.raises(CertificateFormatError, match="not validly self-signed"):
        parse_attested_certificate(forged.public_bytes(serialization.Encoding.DER))


def test_validity_window(maker: CertMaker) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    made = maker.make(not_before=now, not_after=now + timedelta(hours=1))
    parsed = parse_attested_certificate(made.der)
    check_validity(parsed, now)
    check_validity(parsed, now + timedelta(hours=1))
    with pytest.raises(CertificateNotYetValid, match="not valid before"):
        check_validity(parsed, now - timedelta(seconds=1))
    with pytest.raises(CertificateExpired, match="expired"):
        check_validity(parsed, now + timedelta(hours=1, seconds=1))


def test_the_maker_refuses_what_would_not_verify(maker: CertMaker) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    claims = claims_for(spki_der_of(key), maker.instance_key)
    quote = maker.platform.quote(report_data_for(claims.encode()))
    now = datetime.now(UTC)
    later = now + timedelta(hours=1)
    other = ec.generate_private_key(ec.SECP256R1())
    with pytest.raises(BindingError, match="another public key"):
        build_certificate(
            other, claims, quote, hostnames=["localhost"], not_before=now, not_after=later
        )
    wrong = maker.platform.quote(bytes(64))
    with pytest.raises(BindingError, match="report_data"):
        build_certificate(
            key, claims, wrong, hostnames=["localhost"], not_before=now, not_after=later
        )
    unsigned = Claims(claims.hash_alg, claims.pubkey_hash, instance_pubkey=maker.instance_pubkey)
    unsigned_quote = maker.platform.quote(report_data_for(unsigned.encode()))
    with pytest.raises(BindingError, match='no "tdx-instance-signature"'):
        build_certificate(
            key, unsigned, unsigned_quote, hostnames=["x"], not_before=now, not_after=later
        )
    with pytest.raises(ValueError, match="P-256"):
        build_certificate(
            ec.generate_private_key(ec.SECP384R1()),
            claims,
            quote,
            hostnames=["x"],
            not_before=now,
            not_after=later,
        )
    with pytest.raises(ValueError, match="hostname"):
        build_certificate(key, claims, quote, hostnames=[], not_before=now, not_after=later)
    with pytest.raises(ValueError, match="validity window"):
        build_certificate(key, claims, quote, hostnames=["x"], not_before=now, not_after=now)
