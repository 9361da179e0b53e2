"""An issuer-chain header of a PCCS answer (`Name: URL-encoded PEM chain`), checked.

The input is one header line; `PccsClient`'s `_chain` reads the chain out of it, and the chain
replaces the one of the real Intel collateral that the header names (the PCK CRL's, or the TCB
info's and QE identity's signing chain), which the verifier then checks (to the pinned root,
against the root CA CRL). Refusing is `tdx_verify.VerificationError`.
"""

from __future__ import annotations

from dataclasses import replace

import httpx

from fuzz._collateral_base import intel_collateral, intel_verifier
from fuzz._harness import Harness
from tdx_verify import VerificationError
from tdx_verify._pccs import _chain

PCK_CRL_HEADERS = ("SGX-PCK-CRL-Issuer-Chain",)
SIGNING_HEADERS = (
    "TCB-Info-Issuer-Chain",
    "SGX-TCB-Info-Issuer-Chain",
    "SGX-Enclave-Identity-Issuer-Chain",
    "Enclave-Identity-Issuer-Chain",
)


def encode(name: str, value: str) -> bytes:
    return f"{name}: {value}".encode("latin-1")


def target(data: bytes) -> None:
    name, sep, value = data.partition(b": ")
    if not sep or not name or b"\r" in data or b"\n" in data:
        return  # not one header line: an HTTP client would not hand it over
    try:
        headers = httpx.Headers([(name, value)])
    except (TypeError, ValueError):
        return  # not a header httpx accepts
    if headers.get("SGX-PCK-CRL-Issuer-Chain") is not None:
        chain = _chain(headers, *PCK_CRL_HEADERS)
        collateral = replace(intel_collateral(), pck_crl_issuer_chain=chain)
    else:
        chain = _chain(headers, *SIGNING_HEADERS)
        collateral = replace(
            intel_collateral(), tcb_info_issuer_chain=chain, qe_identity_issuer_chain=chain
        )
    intel_verifier()._verified_collateral(collateral)


HARNESS = Harness(
    name="issuer_chain",
    summary="a PCCS issuer-chain header: _chain + the verifier's collateral check",
    target=target,
    allowed=(VerificationError,),
)
