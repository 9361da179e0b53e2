"""The client side against a real TLS server on loopback: a genuine TD certificate verifies
(full DCAP on the sim's PKI) and the request goes through; every refused certificate is
refused before any request is sent; a server that switches certificate after verification
fails the handshake."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from atls_support import CertMaker, Made, plain_certificate, with_extension
from cryptography.hazmat.primitives.asymmetric import ec

from tdx_attested_tls import (
    AttestedCertificate,
    AttestedTlsError,
    AttestedTransport,
    BindingError,
    CertificateExpired,
    CertificateFormatError,
    CertificateNotYetValid,
    DcapAppraiser,
    EvidenceRefused,
    PeerUnreachable,
    PinMismatch,
    attested_ssl_context,
    encode_evidence,
    is_pin_mismatch,
    parse_attested_certificate,
)
from tdx_service_kit.testing import CountingTlsServer, free_port
from tdx_sim import SimPlatform
from tdx_verify import Policy, VerifiedQuote, Verifier


@pytest.fixture
async def dcap(platform: SimPlatform, sim_url: str) -> AsyncIterator[DcapAppraiser]:
    async with DcapAppraiser(pccs_url=sim_url, root_ca_pem=platform.root_ca_pem) as appraiser:
        yield appraiser


@pytest.fixture
def genuine(maker: CertMaker) -> Made:
    return maker.make()


@pytest.fixture
def server(genuine: Made) -> Iterator[CountingTlsServer]:
    with CountingTlsServer(genuine.cert_pem, genuine.key_pem, body=b"the owner's file\n") as s:
        yield s


def url(server: CountingTlsServer) -> str:
    return f"https://127.0.0.1:{server.port}/index.html"


async def test_a_genuine_certificate_verifies_and_the_request_goes_through(
    server: CountingTlsServer, dcap: DcapAppraiser, maker: CertMaker, platform: SimPlatform
) -> None:
    context, peer = await attested_ssl_context("127.0.0.1", server.port, dcap)
    assert server.requests == []  # the probe sent nothing
    assert isinstance(peer.appraisal, VerifiedQuote)
    assert peer.appraisal.ppid.value == platform.ppid
    assert peer.certificate.instance_pubkey == maker.instance_pubkey
    async with httpx.AsyncClient(verify=context) as client:
        answer = await client.get(url(server))
    assert answer.status_code == 200
    assert answer.text == "the owner's file\n"
    assert server.requests == ["/index.html"]


async def test_the_transport_verifies_once_per_origin(
    server: CountingTlsServer, dcap: DcapAppraiser
) -> None:
    calls: list[AttestedCertificate] = []

    async def counting(certificate: AttestedCertificate) -> VerifiedQuote:
        calls.append(certificate)
        return await dcap(certificate)

    transport = AttestedTransport(counting)
    async with httpx.AsyncClient(transport=transport) as client:
        assert (await client.get(url(server))).text == "the owner's file\n"
        assert (await client.get(url(server))).status_code == 200
        assert list(transport.peers) == [("127.0.0.1", server.port)]
        with pytest.raises(AttestedTlsError, match="only https"):
            await client.get(f"http://127.0.0.1:{server.port}/")
    assert len(calls) == 1
    assert server.requests == ["/index.html", "/index.html"]


async def test_the_appraiser_takes_the_callers_own_verifier(
    server: CountingTlsServer, sim_url: str, platform: SimPlatform
) -> None:
    """A caller's tdx_verify Verifier with a policy the sim's MRTD does not meet."""
    strict = Verifier(
        root_ca_pem=platform.root_ca_pem, policy=Policy(mrtd_allowlist=frozenset({bytes(48)}))
    )
    async with DcapAppraiser(pccs_url=sim_url, verifier=strict) as appraiser:
        with pytest.raises(EvidenceRefused, match="MRTD") as refused:
            await attested_ssl_context("127.0.0.1", server.port, appraiser)
    assert refused.value.step != "appraisal"
    assert server.requests == []
    with pytest.raises(ValueError, match="not both"):
        DcapAppraiser(pccs_url=sim_url, verifier=strict, policy=Policy())


async def test_a_quote_from_an_untrusted_root_is_refused_and_nothing_is_sent(
    server: CountingTlsServer, sim_url: str
) -> None:
    """The default root is Intel's: the sim's PCK chain does not end there."""
    async with DcapAppraiser(pccs_url=sim_url) as intel_rooted:
        with pytest.raises(EvidenceRefused) as refused:
            await attested_ssl_context("127.0.0.1", server.port, intel_rooted)
        assert "does not verify" in refused.value.reason
        transport = AttestedTransport(intel_rooted)
        async with httpx.AsyncClient(transport=transport) as client:
            with pytest.raises(EvidenceRefused):
                await client.get(url(server))
    assert server.requests == []


async def refused_before_sending(
    made: Made, dcap: DcapAppraiser, error: type[AttestedTlsError], reason: str
) -> None:
    with CountingTlsServer(made.cert_pem, made.key_pem) as server:
        with pytest.raises(error, match=reason):
            await attested_ssl_context("127.0.0.1", server.port, dcap)
        async with httpx.AsyncClient(transport=AttestedTransport(dcap)) as client:
            with pytest.raises(error, match=reason):
                await client.get(url(server))
        assert server.handshakes == 2  # two probes, no real connection
        assert server.requests == []


async def test_claims_binding_another_key_are_refused_before_sending(
    genuine: Made, dcap: DcapAppraiser
) -> None:
    stolen = parse_attested_certificate(genuine.der)
    attacker = ec.generate_private_key(ec.SECP256R1())
    value = encode_evidence(stolen.quote, stolen.claims_buffer)
    made = with_extension(attacker, value)
    await refused_before_sending(made, dcap, BindingError, "another key")


async def test_an_expired_certificate_is_refused_before_sending(
    maker: CertMaker, dcap: DcapAppraiser
) -> None:
    now = datetime.now(UTC)
    made = maker.make(not_before=now - timedelta(hours=2), not_after=now - timedelta(hours=1))
    await refused_before_sending(made, dcap, CertificateExpired, "expired")


async def test_a_not_yet_valid_certificate_is_refused_before_sending(
    maker: CertMaker, dcap: DcapAppraiser
) -> None:
    now = datetime.now(UTC)
    made = maker.make(not_before=now + timedelta(hours=1), not_after=now + timedelta(hours=2))
    await refused_before_sending(made, dcap, CertificateNotYetValid, "not valid before")


async def test_a_plain_self_signed_certificate_is_refused_before_sending(
    dcap: DcapAppraiser,
) -> None:
    await refused_before_sending(
        plain_certificate(), dcap, CertificateFormatError, "no attestation evidence"
    )


async def test_a_critical_extension_is_refused_before_sending(
    genuine: Made, dcap: DcapAppraiser
) -> None:
    good = parse_attested_certificate(genuine.der)
    value = encode_evidence(good.quote, good.claims_buffer)
    made = with_extension(genuine.key, value, critical=True)
    await refused_before_sending(made, dcap, CertificateFormatError, "critical")


async def test_garbage_cbor_is_refused_before_sending(dcap: DcapAppraiser) -> None:
    made = with_extension(ec.generate_private_key(ec.SECP256R1()), b"\xff\xfe garbage")
    await refused_before_sending(made, dcap, CertificateFormatError, "not well-formed CBOR")


async def test_an_appraiser_refusal_sends_nothing(server: CountingTlsServer) -> None:
    async def registry_says_no(certificate: AttestedCertificate) -> None:
        raise EvidenceRefused("the instance has another owner", step="registry")

    with pytest.raises(EvidenceRefused, match="another owner"):
        await attested_ssl_context("127.0.0.1", server.port, registry_says_no)
    assert server.requests == []


async def test_a_server_switching_certificate_after_verification_fails_the_handshake(
    server: CountingTlsServer, dcap: DcapAppraiser, maker: CertMaker
) -> None:
    """Even a second genuine certificate of the same TD is not the verified one."""
    context, _ = await attested_ssl_context("127.0.0.1", server.port, dcap)
    other = maker.make()
    server.use(other.cert_pem, other.key_pem)
    async with httpx.AsyncClient(verify=context) as client:
        with pytest.raises(httpx.ConnectError) as failed:
            await client.get(url(server))
    assert is_pin_mismatch(failed.value)
    assert server.requests == []


async def test_a_switch_on_a_new_connection_is_a_pin_mismatch(
    dcap: DcapAppraiser, maker: CertMaker
) -> None:
    first, second = maker.make(), maker.make()
    with CountingTlsServer(first.cert_pem, first.key_pem) as server:
        transport = AttestedTransport(dcap)
        async with httpx.AsyncClient(
            transport=transport, headers={"connection": "close"}
        ) as client:
            assert (await client.get(url(server))).status_code == 200
            server.use(second.cert_pem, second.key_pem)
            with pytest.raises(PinMismatch, match="another certificate"):
                await client.get(url(server))
            assert transport.peers == {}  # forgotten: the next request verifies afresh
            assert (await client.get(url(server))).status_code == 200
            assert transport.peers[("127.0.0.1", server.port)].certificate.der == second.der
        assert server.requests == ["/index.html", "/index.html"]


async def test_an_unreachable_peer() -> None:
    async def never(certificate: AttestedCertificate) -> None:
        raise AssertionError("not appraised")

    with pytest.raises(PeerUnreachable, match="cannot complete a TLS handshake"):
        await attested_ssl_context("127.0.0.1", free_port(), never, timeout=2)
