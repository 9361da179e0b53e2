"""Intel's TCB status convergence, and the collateral JSON form."""

from __future__ import annotations

import dcap_qvl
import pytest

from tdx_verify import Collateral, CollateralFormatError
from tdx_verify._tcb import converge


@pytest.mark.parametrize(
    ("platform", "other", "expected"),
    [
        ("UpToDate", "UpToDate", "UpToDate"),
        ("SWHardeningNeeded", "UpToDate", "SWHardeningNeeded"),
        ("UpToDate", "OutOfDate", "OutOfDate"),
        ("SWHardeningNeeded", "OutOfDate", "OutOfDate"),
        ("ConfigurationNeeded", "OutOfDate", "OutOfDateConfigurationNeeded"),
        ("ConfigurationAndSWHardeningNeeded", "OutOfDate", "OutOfDateConfigurationNeeded"),
        ("OutOfDateConfigurationNeeded", "OutOfDate", "OutOfDateConfigurationNeeded"),
        ("UpToDate", "Revoked", "Revoked"),
        ("Revoked", "UpToDate", "Revoked"),
    ],
)
def test_converge_follows_intel(platform: str, other: str, expected: str) -> None:
    assert converge(platform, other) == expected


def test_collateral_json_round_trips_and_dcap_qvl_reads_it(
    real_collateral: Collateral, real_collateral_json: str
) -> None:
    text = real_collateral.to_json()
    assert Collateral.from_json(text) == real_collateral
    assert Collateral.from_json(text.encode()) == real_collateral
    ref = dcap_qvl.QuoteCollateralV3.from_json(text)
    assert ref.tcb_info == real_collateral.tcb_info
    assert bytes(ref.pck_crl) == real_collateral.pck_crl


def test_pem_crls_are_accepted(real_collateral: Collateral) -> None:
    import base64
    import json

    obj = json.loads(real_collateral.to_json())
    b64 = base64.encodebytes(real_collateral.pck_crl).decode()
    obj["pck_crl"] = f"-----BEGIN X509 CRL-----\n{b64}-----END X509 CRL-----\n"
    assert Collateral.from_json(json.dumps(obj)).pck_crl == real_collateral.pck_crl


@pytest.mark.parametrize(
    "text",
    ["", "[]", "{}", '{"pck_crl_issuer_chain": 5}', "\ud800", "{" * 10],
)
def test_malformed_collateral_json_is_refused(text: str) -> None:
    with pytest.raises(CollateralFormatError):
        Collateral.from_json(text)
