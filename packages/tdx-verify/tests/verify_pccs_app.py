"""A PCCS v4 stand-in on httpx.MockTransport: serves whatever collateral `source()` returns the
way Intel's v4 API does (issuer chains URL-encoded in headers, signed JSON texts unchanged), or
503 while it returns None."""

from __future__ import annotations

import json
from collections.abc import Callable
from urllib.parse import quote as urlquote

import httpx

from tdx_verify import Collateral


def pccs_transport(
    source: Callable[[], Collateral | None],
    *,
    requests: list[str] | None = None,
    root_crl_body: str = "hex",
) -> httpx.MockTransport:
    def handler(request: httpx.Request) -> httpx.Response:
        if requests is not None:
            requests.append(str(request.url))
        c = source()
        if c is None:
            return httpx.Response(503, json={"error": "PCCS unavailable"})
        path, params = request.url.path, request.url.params
        if path == "/sgx/certification/v4/pckcrl":
            assert params["ca"] == "platform" and params["encoding"] == "der"
            return httpx.Response(
                200,
                content=c.pck_crl,
                headers={"SGX-PCK-CRL-Issuer-Chain": urlquote(c.pck_crl_issuer_chain)},
            )
        if path == "/tdx/certification/v4/tcb":
            assert params["fmspc"] == "B0C06F000000"
            body = (
                '{"tcbInfo": ' + c.tcb_info + ', "signature":"' + c.tcb_info_signature.hex() + '"}'
            )
            return httpx.Response(
                200,
                text=body,
                headers={"TCB-Info-Issuer-Chain": urlquote(c.tcb_info_issuer_chain)},
            )
        if path == "/tdx/certification/v4/qe/identity":
            body = json.dumps(
                {"enclaveIdentity": "PLACEHOLDER", "signature": c.qe_identity_signature.hex()}
            )
            body = body.replace('"PLACEHOLDER"', c.qe_identity)
            return httpx.Response(
                200,
                text=body,
                headers={"SGX-Enclave-Identity-Issuer-Chain": urlquote(c.qe_identity_issuer_chain)},
            )
        if path == "/sgx/certification/v4/rootcacrl":
            if root_crl_body == "der":
                return httpx.Response(200, content=c.root_ca_crl)
            return httpx.Response(200, text=c.root_ca_crl.hex())
        return httpx.Response(404, json={"error": "not found"})

    return httpx.MockTransport(handler)
