"""The synthetic world is only useful if its good case verifies in both verifiers."""

from __future__ import annotations

import dcap_qvl
from verify_world import NOW, World

from tdx_verify import Verifier


def test_synthetic_quote_verifies_with_tdx_verify_and_dcap_qvl(world: World) -> None:
    quote, collateral = world.quote(), world.collateral()
    ours = Verifier(root_ca_pem=world.root_pem).verify(quote, collateral, now=NOW)
    ref = dcap_qvl.verify_with_root_ca(
        quote,
        dcap_qvl.QuoteCollateralV3.from_json(collateral.to_json()),
        world.root_der,
        int(NOW.timestamp()),
    )
    assert ours.tcb_status == ref.status == "UpToDate"
