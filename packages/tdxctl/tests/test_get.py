"""`tdxctl get` against a loopback TLS server presenting TD certificates, the real registry
holding the TD's record and the sim's PCCS: a genuine certificate of the registered TD gets the
body; every refused certificate exits 1 naming the check, and the server saw no request."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.x509 import Certificate
from cryptography.x509.oid import NameOID
from tdxctl_support import REGISTRY_REFUSAL, SimTd, raw, reappraise_refusing, served_registry

from tdx_attested_tls import (
    AttestedCertificate,
    Claims,
    build_certificate,
    claims_for,
    encode_evidence,
    parse_attested_certificate,
    report_data_for,
    spki_der_of,
)
from tdx_service_kit.testing import CountingTlsServer, free_port
from tdx_sim import SimOptions, SimPlatform, SimRtmrs
from tdxctl import (
    CertificateRejected,
    GetTarget,
    PeerFacts,
    QuoteVerifier,
    RegistryAppraiser,
    RegistryClient,
    TrustSettings,
    attested_get,
)
from tdxctl.cli import main

OPERATOR = Ed25519PrivateKey.generate()
OWNER = Ed25519PrivateKey.generate()
BODY = b"<h1>the owner's file</h1>\n"


class Pem:
    """A certificate and its key as a server loads them."""

    def __init__(self, certificate: Certificate, key: ec.EllipticCurvePrivateKey) -> None:
        self.cert = certificate.public_bytes(serialization.Encoding.PEM)
        self.der = certificate.public_bytes(serialization.Encoding.DER)
        self.key = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        self.private_key = key


def td_certificate(
    platform: SimPlatform,
    instance: Ed25519PrivateKey,
    *,
    not_before: datetime | None = None,
    not_after: datetime | None = None,
) -> Pem:
    """What the identity service makes at each start: a fresh key, claims signed by the
    instance key, a quote over them."""
    key = ec.generate_private_key(ec.SECP256R1())
    claims = claims_for(spki_der_of(key), instance)
    quote = platform.quote(report_data_for(claims.encode()))
    now = datetime.now(UTC)
    certificate = build_certificate(
        key,
        claims,
        quote,
        hostnames=["127.0.0.1"],
        not_before=not_before or now - timedelta(minutes=5),
        not_after=not_after or now + timedelta(hours=1),
    )
    return Pem(certificate, key)


@pytest.fixture
async def registry_url(tmp_path: Path, td: SimTd, sim_url: str) -> AsyncIterator[str]:
    """The real registry, trusting the sim's root, holding the delegated TD's record."""
    td.delegated(OPERATOR, OWNER)
    async with served_registry(tmp_path / "registry.db", td, sim_url) as url:
        yield url


@pytest.fixture
def genuine(td: SimTd) -> Pem:
    return td_certificate(td.platform, td.instance)


@pytest.fixture
def server(genuine: Pem) -> Iterator[CountingTlsServer]:
    with CountingTlsServer(genuine.cert, genuine.key, body=BODY) as s:
        yield s


@pytest.fixture
def root_file(tmp_path: Path, td: SimTd) -> Path:
    path = tmp_path / "root.pem"
    path.write_bytes(td.platform.root_ca_pem)
    return path


def target(server: CountingTlsServer) -> str:
    return f"https://127.0.0.1:{server.port}/index.html"


async def get(
    server: CountingTlsServer,
    registry_url: str,
    *extra: str,
    root_file: Path | None,
    sim_url: str,
) -> int:
    trust = [] if root_file is None else ["--trusted-root-ca", str(root_file)]
    argv = [
        "get",
        target(server),
        "--registry",
        registry_url,
        *trust,
        "--pccs-url",
        sim_url,
        *extra,
    ]
    return await asyncio.to_thread(main, argv, {})


def failure(capsys: pytest.CaptureFixture[str]) -> tuple[dict[str, Any], str]:
    out, err = capsys.readouterr()
    lines = out.splitlines()
    assert len(lines) == 1, out
    parsed: dict[str, Any] = json.loads(lines[0])
    return parsed, err


async def test_get_prints_the_body_from_the_registered_td(
    server: CountingTlsServer,
    registry_url: str,
    root_file: Path,
    sim_url: str,
    td: SimTd,
    capsysbinary: pytest.CaptureFixture[bytes],
) -> None:
    status = await get(
        server,
        registry_url,
        "--expect-owner",
        raw(OWNER).hex(),
        "--expect-operator",
        raw(OPERATOR).hex(),
        root_file=root_file,
        sim_url=sim_url,
    )
    out, err = capsysbinary.readouterr()
    assert (status, out) == (0, BODY), err
    assert server.requests == ["/index.html"]

    assert await get(server, registry_url, "--json", root_file=root_file, sim_url=sim_url) == 0
    answer = json.loads(capsysbinary.readouterr().out)
    assert answer["status"] == 200
    assert answer["body"] == BODY.decode()
    assert ["content-type", "text/plain"] in answer["headers"]
    assert answer["instance_pubkey"] == td.pubkey.hex()
    assert answer["record"]["owner"] == raw(OWNER).hex()
    assert answer["certificate_quote"]["ppid"] == td.platform.ppid.hex()
    for index in (0, 1, 2):
        name = f"rtmr{index}"
        assert answer["certificate_quote"][name] == answer["record"][name]
    assert server.requests == ["/index.html", "/index.html"]


async def test_a_quote_from_an_untrusted_root_is_refused(
    server: CountingTlsServer,
    registry_url: str,
    sim_url: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Without --trusted-root-ca the caller trusts Intel's root: the sim's chain fails."""
    assert await get(server, registry_url, "--json", root_file=None, sim_url=sim_url) == 1
    answer, err = failure(capsys)
    assert answer["check"] == "quote"
    assert answer["error"].startswith("the certificate's quote: the quote does not verify")
    assert "verification failed (quote)" in err
    assert server.requests == []


async def refused(
    pem: Pem,
    registry_url: str,
    root_file: Path,
    sim_url: str,
    capsys: pytest.CaptureFixture[str],
    *extra: str,
) -> dict[str, Any]:
    with CountingTlsServer(pem.cert, pem.key, body=BODY) as server:
        status = await get(
            server, registry_url, "--json", *extra, root_file=root_file, sim_url=sim_url
        )
        assert server.requests == []
    answer, _ = failure(capsys)
    assert status == 1, answer
    return answer


async def test_claims_binding_another_key_are_refused(
    genuine: Pem,
    registry_url: str,
    root_file: Path,
    sim_url: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The TD's genuine evidence, copied into a certificate of another key."""
    evidence = parse_attested_certificate(genuine.der)
    attacker = ec.generate_private_key(ec.SECP256R1())
    forged = _with_evidence(attacker, encode_evidence(evidence.quote, evidence.claims_buffer))
    answer = await refused(forged, registry_url, root_file, sim_url, capsys)
    assert answer["check"] == "certificate"
    assert "the evidence was made for another key" in answer["error"]


def _with_evidence(key: ec.EllipticCurvePrivateKey, value: bytes) -> Pem:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "forged")])
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
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    return Pem(certificate, key)


async def test_a_genuine_quote_naming_no_instance_is_refused(
    td: SimTd,
    registry_url: str,
    root_file: Path,
    sim_url: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Well-formed RA-TLS evidence on the registered TD's platform (as Gramine makes it), but
    no "tdx-instance-pubkey" claim: nothing ties it to a registry record."""
    key = ec.generate_private_key(ec.SECP256R1())
    claims = claims_for(spki_der_of(key), None)
    quote = td.platform.quote(report_data_for(claims.encode()))
    anonymous = _with_evidence(key, encode_evidence(quote, claims.encode()))
    answer = await refused(anonymous, registry_url, root_file, sim_url, capsys)
    assert answer["check"] == "certificate"
    assert "name no instance" in answer["error"]


def _claiming(platform: SimPlatform, key: ec.EllipticCurvePrivateKey, claims: Claims) -> Pem:
    """A certificate of `key` with genuine evidence for `claims`: `platform`'s quote commits
    to them, whatever they claim."""
    quote = platform.quote(report_data_for(claims.encode()))
    return _with_evidence(key, encode_evidence(quote, claims.encode()))


@pytest.mark.parametrize("signer", ["none", "its own instance key"])
async def test_a_td_claiming_another_registered_instance_is_refused(
    signer: str,
    td: SimTd,
    registry_url: str,
    root_file: Path,
    sim_url: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Another TD of the same image on the same platform (its quote is genuine, with the
    record's PPID, MRTD and RTMRs) names the registered instance key, which it does not hold:
    unsigned, or signed with its own instance key."""
    key = ec.generate_private_key(ec.SECP256R1())
    own = claims_for(spki_der_of(key), Ed25519PrivateKey.generate())
    claims = Claims(
        own.hash_alg,
        own.pubkey_hash,
        instance_pubkey=td.pubkey,
        instance_signature=None if signer == "none" else own.instance_signature,
    )
    answer = await refused(
        _claiming(td.platform, key, claims), registry_url, root_file, sim_url, capsys
    )
    assert answer["check"] == "certificate"
    reason = "carry no" if signer == "none" else "signature does not verify"
    assert reason in answer["error"]


async def test_the_instance_signature_of_another_tls_key_is_refused(
    genuine: Pem,
    td: SimTd,
    registry_url: str,
    root_file: Path,
    sim_url: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The registered TD's genuine signature, made for its own TLS key, moved into the claims
    of another key (with a genuine quote over those claims)."""
    signed = parse_attested_certificate(genuine.der).claims
    key = ec.generate_private_key(ec.SECP256R1())
    mine = claims_for(spki_der_of(key), None)
    claims = Claims(
        mine.hash_alg,
        mine.pubkey_hash,
        instance_pubkey=td.pubkey,
        instance_signature=signed.instance_signature,
    )
    answer = await refused(
        _claiming(td.platform, key, claims), registry_url, root_file, sim_url, capsys
    )
    assert answer["check"] == "certificate"
    assert "signature does not verify over this certificate's pubkey-hash" in answer["error"]


async def test_an_instance_not_in_the_registry_is_refused(
    td: SimTd,
    registry_url: str,
    root_file: Path,
    sim_url: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    stranger = td_certificate(td.platform, Ed25519PrivateKey.generate())
    answer = await refused(stranger, registry_url, root_file, sim_url, capsys)
    assert answer["check"] == "registry"
    assert "has no record of the certificate's instance" in answer["error"]


async def test_a_record_the_registry_refused_is_refused_before_any_request_unless_accepted(
    genuine: Pem,
    registry_url: str,
    tmp_path: Path,
    root_file: Path,
    sim_url: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The registry's re-appraisal refused the instance's record, which verifies with the
    caller's policy: nothing is sent unless --accept-registry-refusal, which gets the body with
    a warning and "registry_refused" in the JSON."""
    await reappraise_refusing(tmp_path / "registry.db", sim_url, root_file)
    answer = await refused(genuine, registry_url, root_file, sim_url, capsys)
    assert answer["check"] == "registry_verdict"
    assert answer["registry_refused"].startswith(REGISTRY_REFUSAL)

    with CountingTlsServer(genuine.cert, genuine.key, body=BODY) as server:
        accept = "--accept-registry-refusal"
        assert await get(server, registry_url, accept, "--json", root_file=root_file,
                         sim_url=sim_url) == 0  # fmt: skip
        data, err = failure(capsys)
        assert data["status"] == 200 and data["body"] == BODY.decode()
        assert data["registry_refused"].startswith(REGISTRY_REFUSAL)
        assert "warning: the registry refused this record" in err and REGISTRY_REFUSAL in err
        assert await get(server, registry_url, accept, root_file=root_file, sim_url=sim_url) == 0
        out, err = capsys.readouterr()
        assert out == BODY.decode() and REGISTRY_REFUSAL in err
        assert server.requests == ["/index.html", "/index.html"]


async def test_an_instance_with_another_owner_is_refused(
    genuine: Pem,
    registry_url: str,
    root_file: Path,
    sim_url: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    other = raw(Ed25519PrivateKey.generate()).hex()
    answer = await refused(
        genuine, registry_url, root_file, sim_url, capsys, "--expect-owner", other
    )
    assert answer["check"] == "expectation"
    assert f"not the expected {other}" in answer["error"]


async def test_a_certificate_from_another_td_image_claiming_the_instance_is_refused(
    td: SimTd,
    sim_state: Path,
    registry_url: str,
    root_file: Path,
    sim_url: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Same platform, same root, another MRTD: it claims the registered instance key."""
    other_image = SimPlatform(sim_state, SimOptions(mr_td=b"\x42" * 48))
    impostor = td_certificate(other_image, td.instance)
    answer = await refused(impostor, registry_url, root_file, sim_url, capsys)
    assert answer["check"] == "binding"
    assert "another MRTD than the record's" in answer["error"]


class _OtherKernel(SimRtmrs):
    """Registers of a boot with another kernel: RTMR1 differs, the rest as registered."""

    def read(self) -> tuple[bytes, bytes, bytes, bytes]:
        rtmr0, rtmr1, rtmr2, rtmr3 = super().read()
        return rtmr0, bytes(b ^ 0xFF for b in rtmr1), rtmr2, rtmr3


async def test_a_certificate_from_another_boot_chain_is_refused(
    td: SimTd,
    sim_state: Path,
    registry_url: str,
    root_file: Path,
    sim_url: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Same platform, same MRTD, the instance key's valid signature (say the key leaked from
    the host's disk), but RTMR1 is not the record's: another kernel booted."""
    other_boot = SimPlatform(sim_state, SimOptions())
    other_boot.rtmrs = _OtherKernel()
    impostor = td_certificate(other_boot, td.instance)
    answer = await refused(impostor, registry_url, root_file, sim_url, capsys)
    assert answer["check"] == "binding"
    assert "another RTMR1 than the record's" in answer["error"]


async def test_the_callers_policy_applies_to_the_certificates_quote(
    td: SimTd,
    sim_state: Path,
    registry_url: str,
    root_file: Path,
    sim_url: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The record's quote passes, but the certificate's comes from a debug TD of the same
    image (same MRTD and RTMRs, the instance key's valid signature): refused under the
    default verification flags. (The TCB status is the platform's collateral, the same for
    both quotes of one PPID.)"""
    debug = td_certificate(SimPlatform(sim_state, SimOptions(debug_td=True)), td.instance)
    answer = await refused(debug, registry_url, root_file, sim_url, capsys)
    assert answer["check"] == "quote"
    assert answer["error"].startswith("the certificate's quote")
    assert "debug" in answer["error"]


@pytest.mark.parametrize(
    ("window", "reason"),
    [
        ((-2, -1), "the certificate expired at"),
        ((1, 2), "the certificate is not valid before"),
    ],
)
async def test_a_certificate_outside_its_validity_window_is_refused(
    window: tuple[int, int],
    reason: str,
    td: SimTd,
    registry_url: str,
    root_file: Path,
    sim_url: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    now = datetime.now(UTC)
    pem = td_certificate(
        td.platform,
        td.instance,
        not_before=now + timedelta(hours=window[0]),
        not_after=now + timedelta(hours=window[1]),
    )
    answer = await refused(pem, registry_url, root_file, sim_url, capsys)
    assert answer["check"] == "certificate"
    assert reason in answer["error"]


async def test_a_plain_self_signed_certificate_is_refused(
    registry_url: str, root_file: Path, sim_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "plain")])
    now = datetime.now(UTC)
    plain = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now - timedelta(minutes=1))
        .not_valid_after(now + timedelta(hours=1))
        .sign(key, hashes.SHA256())
    )
    answer = await refused(Pem(plain, key), registry_url, root_file, sim_url, capsys)
    assert answer["check"] == "certificate"
    assert "no attestation evidence" in answer["error"]


async def test_a_server_switching_certificate_after_verification_is_refused(
    server: CountingTlsServer, registry_url: str, td: SimTd, sim_url: str
) -> None:
    """Right after the appraisal passes, the server presents another (genuine) certificate:
    the real connection's handshake fails and no request is sent."""
    other = td_certificate(td.platform, td.instance)

    class SwitchingAfter(RegistryAppraiser):
        async def __call__(self, certificate: AttestedCertificate) -> PeerFacts:
            facts = await super().__call__(certificate)
            server.use(other.cert, other.key)
            return facts

    trust_settings = _trust(td, sim_url)
    async with RegistryClient(registry_url) as registry, QuoteVerifier(trust_settings) as qv:
        with pytest.raises(CertificateRejected, match="another certificate than the verified"):
            await attested_get(GetTarget.parse(target(server)), SwitchingAfter(registry, qv))
    assert server.requests == []


def _trust(td: SimTd, sim_url: str) -> Any:

    return TrustSettings(root_ca_pem=td.platform.root_ca_pem, pccs_url=sim_url)


async def test_an_error_answer_prints_the_body_and_exits_1(
    server: CountingTlsServer,
    registry_url: str,
    root_file: Path,
    sim_url: str,
    capsysbinary: pytest.CaptureFixture[bytes],
) -> None:
    server.status = 404
    assert await get(server, registry_url, root_file=root_file, sim_url=sim_url) == 1
    out, err = capsysbinary.readouterr()
    assert out == BODY
    assert b"answered 404" in err


@pytest.mark.parametrize(
    "argv",
    [
        ["get", "http://127.0.0.1:8443/", "--registry", "http://r"],
        ["get", "https:///x", "--registry", "http://r"],
        ["get", "https://u:p@127.0.0.1/", "--registry", "http://r"],
        ["get", "https://127.0.0.1:99999/", "--registry", "http://r"],
        ["get", "https://127.0.0.1/"],
        ["get", "https://127.0.0.1/", "--registry", "http://r", "--expect-owner", "00"],
    ],
)
def test_usage_errors_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv, {}) == 2
    assert "see tdxctl --help" in capsys.readouterr().err


def test_get_has_help(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["get", "--help"], {}) == 0
    assert "trusts exactly that certificate" in " ".join(capsys.readouterr().out.split())


def test_an_unreachable_server_exits_1(capsys: pytest.CaptureFixture[str]) -> None:
    url = f"https://127.0.0.1:{free_port()}/"
    assert main(["get", url, "--registry", "http://127.0.0.1:1", "--json"], {}) == 1
    answer = json.loads(capsys.readouterr().out)
    assert answer["error"].startswith("cannot reach 127.0.0.1:")
