"""Publishing what Intel's PCCS publishes over a platform's life: a TCB recovery (newer TCB info,
re-signed, with a higher tcbEvaluationDataNumber) that turns an up-to-date platform out of date,
and a revocation of its PCK certificate; by Python and over HTTP, judged by dcap-qvl."""

from __future__ import annotations

import hashlib
import json
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import dcap_qvl
import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from tdx_sim import SimOptions, SimPlatform, TcbRecoveryError
from tdx_sim.platform import MAX_TCB_RECOVERIES, SIM_ADVISORY_ID, TCB_EVALUATION_DATA_NUMBER

REPORT_DATA = hashlib.sha512(b"recovery test").digest()
RECOVERY = datetime(2026, 11, 20, tzinfo=UTC)


def _signed_by_tcb_key(platform: SimPlatform, text: str, signature: bytes) -> None:
    key = platform.pki.tcb_signing_cert.public_key()
    assert isinstance(key, ec.EllipticCurvePublicKey)
    der = encode_dss_signature(
        int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big")
    )
    key.verify(der, text.encode(), ec.ECDSA(hashes.SHA256()))


def _crl_number(der: bytes) -> int:
    crl = x509.load_der_x509_crl(der)
    return crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number


def test_a_new_platform_publishes_the_default_tcb_info(platform: SimPlatform) -> None:
    bundle = platform.collateral_bundle(datetime.now(UTC))
    info = json.loads(bundle.tcb_info)
    assert info["tcbEvaluationDataNumber"] == TCB_EVALUATION_DATA_NUMBER
    assert [level["tcbStatus"] for level in info["tcbLevels"]] == ["UpToDate", "OutOfDate"]
    assert platform.recoveries == () and platform.revision == 0


def test_a_recovery_turns_the_up_to_date_platform_out_of_date(
    platform: SimPlatform, dcap_verify: Any
) -> None:
    quote = platform.quote(REPORT_DATA)
    before = platform.collateral(datetime.now(UTC))
    assert dcap_verify(platform, quote, before).status == "UpToDate"

    recovery = platform.publish_tcb_recovery(
        tcb_date=RECOVERY, advisory_ids=["INTEL-SA-01234", "INTEL-SA-01235"]
    )
    assert recovery.evaluation_data_number == TCB_EVALUATION_DATA_NUMBER + 1
    assert platform.revision == 1
    bundle = platform.collateral_bundle(datetime.now(UTC))
    info, qe = json.loads(bundle.tcb_info), json.loads(bundle.qe_identity)
    assert info["tcbEvaluationDataNumber"] == qe["tcbEvaluationDataNumber"] == 18
    newer, own = info["tcbLevels"][0], info["tcbLevels"][1]
    assert newer["tcbDate"] == "2026-11-20T00:00:00Z" and newer["tcbStatus"] == "UpToDate"
    assert newer["tcb"]["pcesvn"] == own["tcb"]["pcesvn"] + 1
    assert (
        newer["tcb"]["tdxtcbcomponents"][2]["svn"] == own["tcb"]["tdxtcbcomponents"][2]["svn"] + 1
    )
    assert own["tcbStatus"] == "OutOfDate"
    assert own["advisoryIDs"] == ["INTEL-SA-01234", "INTEL-SA-01235"]
    _signed_by_tcb_key(platform, bundle.tcb_info, bundle.tcb_info_signature)
    _signed_by_tcb_key(platform, bundle.qe_identity, bundle.qe_identity_signature)

    verdict = dcap_verify(platform, quote, bundle.to_json_dict())
    assert verdict.status == "OutOfDate"
    assert set(verdict.advisory_ids) == {"INTEL-SA-01234", "INTEL-SA-01235"}
    assert dcap_verify(platform, quote, before).status == "UpToDate"  # the old answer still says


def test_several_recoveries_stack_newest_first(platform: SimPlatform, dcap_verify: Any) -> None:
    platform.publish_tcb_recovery(tcb_date=RECOVERY, advisory_ids=["INTEL-SA-01001"])
    platform.publish_tcb_recovery(
        tcb_date=RECOVERY + timedelta(days=30), advisory_ids=["INTEL-SA-01002"]
    )
    bundle = platform.collateral_bundle(datetime.now(UTC))
    info = json.loads(bundle.tcb_info)
    assert info["tcbEvaluationDataNumber"] == 19
    levels = info["tcbLevels"]
    assert [(lv["tcbDate"][:10], lv["tcbStatus"], lv.get("advisoryIDs")) for lv in levels] == [
        ("2026-12-20", "UpToDate", None),
        ("2026-11-20", "OutOfDate", ["INTEL-SA-01002"]),
        ("2025-05-14", "OutOfDate", ["INTEL-SA-01001", "INTEL-SA-01002"]),
        ("2018-01-04", "OutOfDate", [SIM_ADVISORY_ID, "INTEL-SA-01001", "INTEL-SA-01002"]),
    ]
    assert [lv["tcb"]["pcesvn"] for lv in levels[:3]] == [13, 12, 11]
    verdict = dcap_verify(platform, platform.quote(REPORT_DATA), bundle.to_json_dict())
    assert verdict.status == "OutOfDate"
    assert set(verdict.advisory_ids) == {"INTEL-SA-01001", "INTEL-SA-01002"}


@pytest.mark.parametrize(
    ("status", "after"),
    [
        ("SWHardeningNeeded", "OutOfDate"),
        ("ConfigurationNeeded", "OutOfDateConfigurationNeeded"),
        ("OutOfDate", "OutOfDate"),
    ],
)
def test_a_recovery_converges_the_platforms_status_like_intel(
    state_dir: Path, dcap_verify: Any, status: str, after: str
) -> None:
    platform = SimPlatform(state_dir, SimOptions(tcb_status=status))
    platform.publish_tcb_recovery(tcb_date=RECOVERY)
    bundle = platform.collateral(datetime.now(UTC))
    assert dcap_verify(platform, platform.quote(REPORT_DATA), bundle).status == after


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"tcb_date": datetime(2026, 11, 20)}, "timezone-aware"),
        ({"tcb_date": datetime(2025, 5, 14, tzinfo=UTC)}, "not after the newest"),
        ({"tcb_date": RECOVERY, "advisory_ids": ["CVE-2024-1"]}, "not shaped like"),
    ],
)
def test_bad_recoveries_are_refused_and_change_nothing(
    platform: SimPlatform, kwargs: dict[str, Any], match: str
) -> None:
    with pytest.raises(TcbRecoveryError, match=match):
        platform.publish_tcb_recovery(**kwargs)
    assert platform.recoveries == () and platform.revision == 0


def test_a_recovery_must_be_newer_than_the_last(platform: SimPlatform) -> None:
    platform.publish_tcb_recovery(tcb_date=RECOVERY)
    with pytest.raises(TcbRecoveryError, match="not after the newest TCB level's"):
        platform.publish_tcb_recovery(tcb_date=RECOVERY)
    assert len(platform.recoveries) == 1


def test_recoveries_stop_where_the_tdx_svn_would_pass_255(
    platform: SimPlatform, dcap_verify: Any
) -> None:
    """Each recovery raises a TDX TCB component SVN (one byte) by one: the last one that fits
    is published and its collateral still verifies; the next is refused, changing nothing."""
    last = MAX_TCB_RECOVERIES
    for k in range(last):
        platform.publish_tcb_recovery(tcb_date=RECOVERY + timedelta(hours=k))
    bundle = platform.collateral_bundle(datetime.now(UTC))
    newest = json.loads(bundle.tcb_info)["tcbLevels"][0]
    assert newest["tcb"]["tdxtcbcomponents"][2]["svn"] == 255
    verdict = dcap_verify(platform, platform.quote(REPORT_DATA), bundle.to_json_dict())
    assert verdict.status == "OutOfDate"
    with pytest.raises(TcbRecoveryError, match="no more TCB recoveries"):
        platform.publish_tcb_recovery(tcb_date=RECOVERY + timedelta(days=60))
    assert len(platform.recoveries) == last and platform.revision == last


def test_revoking_the_pck_lists_it_in_crls_issued_after(
    platform: SimPlatform, dcap_verify: Any
) -> None:
    now = datetime.now(UTC)
    quote = platform.quote(REPORT_DATA)
    before = platform.collateral_bundle(now)
    serial = platform.revoke_pck()
    assert serial == platform.pki.pck_cert.serial_number
    after = platform.collateral_bundle(now)  # the same second: the CRL number still grows
    assert _crl_number(after.pck_crl) > _crl_number(before.pck_crl)
    assert _crl_number(after.root_ca_crl) > _crl_number(before.root_ca_crl)
    crl = x509.load_der_x509_crl(after.pck_crl)
    assert crl.get_revoked_certificate_by_serial_number(serial) is not None
    with pytest.raises(ValueError, match="CertRevoked"):
        dcap_verify(platform, quote, after.to_json_dict())
    assert dcap_verify(platform, quote, before.to_json_dict()).status == "UpToDate"


# -- over HTTP -------------------------------------------------------------------------------


async def _fetched_status(base: str, client: httpx.AsyncClient, root_der: bytes) -> Any:
    quote = (await client.get(f"{base}/attest/{REPORT_DATA.hex()}")).content
    collateral = await dcap_qvl.get_collateral(base, quote)
    return dcap_qvl.verify_with_root_ca(quote, collateral, root_der, int(time.time()))


async def test_the_recovery_route_reissues_the_pccs_answers_at_once(
    sim: tuple[str, SimPlatform], client: httpx.AsyncClient, root_der: Any
) -> None:
    base, platform = sim
    assert (await _fetched_status(base, client, root_der(platform))).status == "UpToDate"
    response = await client.post(
        f"{base}/pccs/tcb-recovery",
        json={"tcb_date": "2026-11-20T00:00:00Z", "advisory_ids": ["INTEL-SA-01234"]},
    )
    assert response.status_code == 200
    assert response.json() == {
        "tcb_date": "2026-11-20T00:00:00Z",
        "advisory_ids": ["INTEL-SA-01234"],
        "tcb_evaluation_data_number": 18,
    }
    verdict = await _fetched_status(base, client, root_der(platform))
    assert (verdict.status, verdict.advisory_ids) == ("OutOfDate", ["INTEL-SA-01234"])
    tcb = (await client.get(f"{base}/tdx/certification/v4/tcb?fmspc={platform.fmspc.hex()}")).json()
    assert tcb["tcbInfo"]["tcbEvaluationDataNumber"] == 18
    qe = (await client.get(f"{base}/tdx/certification/v4/qe/identity")).json()
    assert qe["enclaveIdentity"]["tcbEvaluationDataNumber"] == 18


async def test_the_recovery_route_dates_it_now_by_default(
    sim: tuple[str, SimPlatform], client: httpx.AsyncClient
) -> None:
    base, platform = sim
    before = datetime.now(UTC).replace(microsecond=0)
    response = await client.post(f"{base}/pccs/tcb-recovery", json={})
    assert response.status_code == 200
    dated = datetime.fromisoformat(response.json()["tcb_date"].replace("Z", "+00:00"))
    assert before <= dated <= datetime.now(UTC)
    assert response.json()["advisory_ids"] == []
    assert platform.recoveries[0].tcb_date == dated


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"", "body is empty"),
        (b"[]", "JSON object"),
        (b'{"tcb_date": "2026-11-20"}', "must be a UTC time"),
        (b'{"tcb_date": "2026-13-40T00:00:00Z"}', "is not a valid time"),
        (b'{"tcb_date": "2025-01-01T00:00:00Z"}', "not after the newest"),
        (b'{"advisory_ids": "INTEL-SA-01234"}', "must be a list of strings"),
        (b'{"advisory_ids": ["INTEL-SA-1"]}', "not shaped like"),
        (b'{"advisory_ids": [], "revoke": true}', "unexpected field(s) 'revoke'"),
    ],
)
async def test_the_recovery_route_refuses_bad_bodies_with_json_400(
    sim: tuple[str, SimPlatform], client: httpx.AsyncClient, body: bytes, reason: str
) -> None:
    base, platform = sim
    response = await client.post(
        f"{base}/pccs/tcb-recovery", content=body, headers={"content-type": "application/json"}
    )
    assert response.status_code == 400
    assert reason in response.json()["error"]
    assert platform.revision == 0


async def test_the_revoke_route_revokes_the_pck_for_the_next_fetch(
    sim: tuple[str, SimPlatform], client: httpx.AsyncClient, root_der: Any
) -> None:
    base, platform = sim
    assert (await _fetched_status(base, client, root_der(platform))).status == "UpToDate"
    refused = await client.post(f"{base}/pccs/revoke-pck", json={"serial": 1})
    assert refused.status_code == 400 and platform.revision == 0
    response = await client.post(f"{base}/pccs/revoke-pck")
    assert response.status_code == 200
    assert response.json() == {"revoked_serial": f"{platform.pki.pck_cert.serial_number:x}"}
    with pytest.raises(ValueError, match="CertRevoked"):
        await _fetched_status(base, client, root_der(platform))
