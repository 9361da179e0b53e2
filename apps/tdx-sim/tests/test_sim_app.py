"""The HTTP routes, served on a real loopback socket, and dcap-qvl's PCCS client against them."""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import dcap_qvl
import httpx
import pytest
from cryptography import x509

from tdx_quote import parse_quote
from tdx_sim.platform import SimOptions, SimPlatform

REPORT_DATA = hashlib.sha512(b"http test").digest()


async def test_attest_returns_a_raw_quote_over_the_report_data(
    sim: tuple[str, SimPlatform], client: httpx.AsyncClient
) -> None:
    base, _ = sim
    response = await client.get(f"{base}/attest/{REPORT_DATA.hex()}")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/octet-stream"
    assert parse_quote(response.content).body.report_data == REPORT_DATA


@pytest.mark.parametrize(
    ("path", "reason"),
    [
        ("zz" * 64, "not valid hex"),
        ("ab" * 63, "64 bytes"),
        ("ab" * 65, "64 bytes"),
        ("a" * 127, "not valid hex"),
        ("%20" + "ab" * 64, "not valid hex"),
    ],
)
async def test_attest_refuses_bad_report_data_with_json_400(
    sim: tuple[str, SimPlatform], client: httpx.AsyncClient, path: str, reason: str
) -> None:
    base, _ = sim
    response = await client.get(f"{base}/attest/{path}")
    assert response.status_code == 400
    assert reason in response.json()["error"]


async def test_root_ca_pem_is_served_and_matches_the_state_dir(
    sim: tuple[str, SimPlatform], client: httpx.AsyncClient, state_dir: Path
) -> None:
    base, platform = sim
    response = await client.get(f"{base}/root_ca.pem")
    assert response.status_code == 200
    assert response.content == (state_dir / "root_ca.pem").read_bytes() == platform.root_ca_pem


async def test_pck_crl_route_serves_der_with_its_issuer_chain(
    sim: tuple[str, SimPlatform], client: httpx.AsyncClient
) -> None:
    base, platform = sim
    response = await client.get(f"{base}/sgx/certification/v4/pckcrl?ca=platform&encoding=der")
    assert response.status_code == 200
    crl = x509.load_der_x509_crl(response.content)
    assert crl.is_signature_valid(platform.pki.platform_ca_key.public_key())
    chain = unquote(response.headers["SGX-PCK-CRL-Issuer-Chain"]).encode()
    assert chain == platform.pki.pck_crl_issuer_chain_pem
    pem = await client.get(f"{base}/sgx/certification/v4/pckcrl?ca=platform")
    assert x509.load_pem_x509_crl(pem.content) == crl


@pytest.mark.parametrize(
    ("query", "status"),
    [
        ("", 400),
        ("?ca=nobody", 400),
        ("?ca=platform&encoding=base64", 400),
        ("?ca=platform&ca=platform", 400),
        ("?ca=processor", 404),
    ],
)
async def test_pck_crl_route_refuses_bad_queries(
    sim: tuple[str, SimPlatform], client: httpx.AsyncClient, query: str, status: int
) -> None:
    base, _ = sim
    response = await client.get(f"{base}/sgx/certification/v4/pckcrl{query}")
    assert response.status_code == status
    assert response.json()["error"]


async def test_tcb_route_serves_the_signed_text_and_chain(
    sim: tuple[str, SimPlatform], client: httpx.AsyncClient
) -> None:
    base, platform = sim
    fmspc = platform.fmspc.hex()
    response = await client.get(f"{base}/tdx/certification/v4/tcb?fmspc={fmspc}&update=standard")
    assert response.status_code == 200
    body = json.loads(response.content)
    assert body["tcbInfo"]["fmspc"] == fmspc.upper()
    assert len(bytes.fromhex(body["signature"])) == 64
    chain = unquote(response.headers["TCB-Info-Issuer-Chain"]).encode()
    assert chain == platform.pki.tcb_signing_chain_pem


@pytest.mark.parametrize(
    ("query", "status"),
    [
        ("", 400),
        ("?fmspc=00", 400),
        ("?fmspc=zzzzzzzzzzzz", 400),
        ("?fmspc=000000000000", 404),
        ("?fmspc={fmspc}&update=later", 400),
    ],
)
async def test_tcb_route_refuses_bad_or_unknown_fmspc(
    sim: tuple[str, SimPlatform], client: httpx.AsyncClient, query: str, status: int
) -> None:
    base, platform = sim
    response = await client.get(
        f"{base}/tdx/certification/v4/tcb{query.format(fmspc=platform.fmspc.hex())}"
    )
    assert response.status_code == status
    assert response.json()["error"]


async def test_qe_identity_and_root_crl_routes(
    sim: tuple[str, SimPlatform], client: httpx.AsyncClient
) -> None:
    base, platform = sim
    response = await client.get(f"{base}/tdx/certification/v4/qe/identity?update=standard")
    assert response.status_code == 200
    assert json.loads(response.content)["enclaveIdentity"]["id"] == "TD_QE"
    chain = unquote(response.headers["SGX-Enclave-Identity-Issuer-Chain"]).encode()
    assert chain == platform.pki.tcb_signing_chain_pem
    crl = await client.get(f"{base}/sgx/certification/v4/rootcacrl")
    assert crl.status_code == 200
    root_crl = x509.load_der_x509_crl(bytes.fromhex(crl.text))
    assert root_crl.is_signature_valid(platform.pki.root_key.public_key())


async def test_unknown_routes_and_methods_answer_json(
    sim: tuple[str, SimPlatform], client: httpx.AsyncClient
) -> None:
    base, _ = sim
    missing = await client.get(f"{base}/nowhere")
    assert missing.status_code == 404 and missing.json()["error"]
    wrong_method = await client.post(f"{base}/root_ca.pem")
    assert wrong_method.status_code == 405 and wrong_method.json()["error"]


async def test_dcap_qvl_fetches_collateral_from_the_sim_and_accepts_its_quote(
    sim: tuple[str, SimPlatform], client: httpx.AsyncClient, root_der: Any
) -> None:
    base, platform = sim
    quote = (await client.get(f"{base}/attest/{REPORT_DATA.hex()}")).content
    collateral = await dcap_qvl.get_collateral(base, quote)
    verdict = dcap_qvl.verify_with_root_ca(quote, collateral, root_der(platform), int(time.time()))
    assert verdict.status == "UpToDate"


async def _quote_and_fetched_collateral(
    base: str, client: httpx.AsyncClient
) -> tuple[bytes, object]:
    quote = (await client.get(f"{base}/attest/{REPORT_DATA.hex()}")).content
    return quote, await dcap_qvl.get_collateral(base, quote)


async def test_tcb_status_flag_reaches_dcap_qvl_through_the_pccs_routes(
    run_sim: Any, client: httpx.AsyncClient, root_der: Any
) -> None:
    async with run_sim(SimOptions(tcb_status="OutOfDate")) as (base, platform):
        quote, collateral = await _quote_and_fetched_collateral(base, client)
        verdict = dcap_qvl.verify_with_root_ca(
            quote, collateral, root_der(platform), int(time.time())
        )
        assert verdict.status == "OutOfDate"


@pytest.mark.parametrize(
    ("options", "error"),
    [(SimOptions(revoke_pck=True), "CertRevoked"), (SimOptions(debug_td=True), "Debug")],
)
async def test_revoked_and_debug_are_refused_through_the_pccs_routes(
    run_sim: Any, client: httpx.AsyncClient, options: SimOptions, error: str, root_der: Any
) -> None:
    async with run_sim(options) as (base, platform):
        quote, collateral = await _quote_and_fetched_collateral(base, client)
        with pytest.raises(ValueError, match=error):
            dcap_qvl.verify_with_root_ca(quote, collateral, root_der(platform), int(time.time()))
