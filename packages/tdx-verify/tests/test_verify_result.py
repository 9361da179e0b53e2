"""The verified result: only the verifier makes a VerifiedQuote, and the policy it applied is a
value that can be evaluated again on the result."""

from __future__ import annotations

import dataclasses

import pytest
from verify_world import NOW, World

from tdx_verify import MeasurementRejected, Policy, TcbStatusRejected, VerifiedQuote, Verifier


def verified(world: World) -> VerifiedQuote:
    return Verifier(root_ca_pem=world.root_pem).verify(world.quote(), world.collateral(), now=NOW)


def test_a_verified_quote_cannot_be_constructed_directly(world: World) -> None:
    result = verified(world)
    fields = {f.name: getattr(result, f.name) for f in dataclasses.fields(result)}
    with pytest.raises(TypeError, match="cannot be constructed directly"):
        VerifiedQuote(**fields)
    with pytest.raises(TypeError, match="cannot be constructed directly"):
        VerifiedQuote(**fields, _token=object())


def test_a_verified_quote_cannot_be_altered_into_another(world: World) -> None:
    with pytest.raises(TypeError, match="cannot be constructed directly"):
        dataclasses.replace(verified(world), tcb_status="UpToDate")


def test_the_policy_evaluates_a_verified_result_again(world: World) -> None:
    result = verified(world)
    body, status, advisories = result.quote.body, result.tcb_status, result.advisory_ids
    Policy().check(body, status, advisories)
    with pytest.raises(MeasurementRejected, match="MRTD"):
        Policy(mrtd_allowlist=frozenset({bytes(48)})).check(body, status, advisories)
    with pytest.raises(TcbStatusRejected) as refused:
        Policy(accepted_tcb_statuses=None).check(body, "Revoked", ("INTEL-SA-00001",))
    assert refused.value.advisory_ids == ("INTEL-SA-00001",)
    assert "advisories: INTEL-SA-00001" in refused.value.reason
