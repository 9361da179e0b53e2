"""A CRL as the PCCS answers it (DER, hex of DER, or PEM), checked as collateral.

The first byte picks which CRL of the real Intel collateral the rest replaces (even: the PCK
CRL, odd: the root CA CRL); the body goes through `crl_der` (as `PccsClient` and
`Collateral.from_json` read it) and the collateral through the verifier's collateral check
(signatures, issuers, revocation lists). Refusing is `tdx_verify.VerificationError`.
"""

from __future__ import annotations

from dataclasses import replace

from fuzz._collateral_base import intel_collateral, intel_verifier
from fuzz._harness import Harness
from tdx_verify import VerificationError
from tdx_verify._collateral import crl_der


def target(data: bytes) -> None:
    if not data:
        return
    base = intel_collateral()
    if data[0] % 2 == 0:
        collateral = replace(base, pck_crl=crl_der(data[1:], "pck_crl"))
    else:
        collateral = replace(base, root_ca_crl=crl_der(data[1:], "root_ca_crl"))
    intel_verifier()._verified_collateral(collateral)


HARNESS = Harness(
    name="crl",
    summary="a PCCS CRL answer: crl_der + the verifier's collateral check",
    target=target,
    allowed=(VerificationError,),
)
