"""The broker pins the TD image (fail closed): a TD whose MRTD or RTMR0-2 is not in the
broker's reference lists gets nothing, even with a valid quote, the owner's event log and the
instance key; --any-measurement says so loudly and is the only way to accept any image."""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path

import pytest
from kbs_helpers import KBS, Broker, Guest, SimRunner, error_variant, start_broker

from tdx_kbs import TdImageReference
from tdx_kbs.app import UNPINNED_WARNING
from tdx_kbs_protocol import ResourcePath, TeeKeyPair

Start = Callable[..., AbstractAsyncContextManager[Broker]]

OTHER_IMAGE = hashlib.sha384(b"a TD image the host built").digest()


async def denied_with_nothing_released(broker: Broker, guest: Guest) -> None:
    """The guest attests (its evidence verifies) but the policy refuses the store key: 401
    PolicyDeny, no JWE, and the denial is logged."""
    assert (await broker.put(guest.store_key_path, os.urandom(32))).status_code == 200
    async with broker.guest_client() as client:
        attested = await guest.attest(client, TeeKeyPair.generate())
        assert attested.status_code == 200, attested.text
        got = await client.get(f"{KBS}/resource/{guest.store_key_path}")
    assert got.status_code == 401, got.text
    assert error_variant(got) == "PolicyDeny"
    assert "ciphertext" not in got.text and "encrypted_key" not in got.text


async def test_a_td_image_whose_mrtd_is_not_pinned_gets_nothing(
    sim_runner: SimRunner, tmp_path: Path
) -> None:
    """The host boots other TD code on the same platform: its quote is genuine, its event log
    names the owner, its instance key signs, and the broker still refuses."""
    async with sim_runner() as pinned_sim:
        reference = pinned_sim.reference()
    async with (
        sim_runner(mr_td=OTHER_IMAGE) as sim,
        start_broker(sim, tmp_path, "kbs-other-image", reference=reference) as broker,
    ):
        guest = Guest(sim, owner=broker.admin)
        assert guest.platform.td_report(bytes(64)).mr_td == OTHER_IMAGE
        await denied_with_nothing_released(broker, guest)


async def test_an_rtmr1_mismatch_gets_nothing(broker: Broker, start: Start) -> None:
    pinned = broker.sim.reference()
    assert pinned.rtmrs is not None
    other_rtmr1 = frozenset({hashlib.sha384(b"another kernel").digest()})
    reference = dataclasses.replace(pinned, rtmrs=(pinned.rtmrs[0], other_rtmr1, pinned.rtmrs[2]))
    async with start(reference=reference) as refusing:
        await denied_with_nothing_released(refusing, Guest(refusing.sim, owner=refusing.admin))


async def test_the_pinned_image_is_served_and_the_policy_sees_the_reference(
    broker: Broker,
) -> None:
    guest = Guest(broker.sim, owner=broker.admin)
    secret = os.urandom(32)
    assert (await broker.put(guest.store_key_path, secret)).status_code == 200
    tee = TeeKeyPair.generate()
    async with broker.guest_client() as client:
        assert (await guest.attest(client, tee)).status_code == 200
        got = await client.get(f"{KBS}/resource/{guest.store_key_path}")
    assert got.status_code == 200, got.text
    assert tee.decrypt(got.json()) == secret
    path = ResourcePath.parse(guest.store_key_path)
    reference = broker.app.ctx.broker.policy_input(path, None, {})["reference"]
    report = guest.platform.td_report(bytes(64))
    assert reference == {
        "mr_td": [report.mr_td.hex()],
        "rtmr0": [report.rtmrs[0].hex()],
        "rtmr1": [report.rtmrs[1].hex()],
        "rtmr2": [report.rtmrs[2].hex()],
    }


async def test_any_measurement_warns_and_then_accepts_any_image(
    sim_runner: SimRunner, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="tdx_kbs")
    async with (
        sim_runner(mr_td=OTHER_IMAGE) as sim,
        start_broker(sim, tmp_path, "kbs-unpinned", any_measurement=True, reference=None) as b,
    ):
        warnings = [r for r in caplog.records if r.getMessage() == UNPINNED_WARNING]
        assert len(warnings) == 1 and warnings[0].levelno == logging.WARNING
        assert "ANY TD image" in UNPINNED_WARNING
        guest = Guest(sim, owner=b.admin)
        secret = os.urandom(32)
        assert (await b.put(guest.store_key_path, secret)).status_code == 200
        tee = TeeKeyPair.generate()
        async with b.guest_client() as client:
            assert (await guest.attest(client, tee)).status_code == 200
            got = await client.get(f"{KBS}/resource/{guest.store_key_path}")
        assert got.status_code == 200, got.text
        assert tee.decrypt(got.json()) == secret


async def test_a_pinned_broker_does_not_warn(
    start: Start, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="tdx_kbs")
    async with start() as broker:
        assert broker.settings.any_measurement is False
    ready = [r for r in caplog.records if r.getMessage() == "key broker ready"]
    assert len(ready) == 1
    assert getattr(ready[0], "reference", None) == broker.sim.reference().to_json()
    assert not [r for r in caplog.records if r.getMessage() == UNPINNED_WARNING]


def test_settings_refuse_an_unpinned_image_without_any_measurement(broker: Broker) -> None:
    """Settings built in code (not only from flags) fail closed too."""
    partial = TdImageReference(mr_td=broker.sim.reference().mr_td, rtmrs=None)
    for reference in (None, partial):
        with pytest.raises(ValueError, match="not pinned"):
            dataclasses.replace(broker.settings, reference=reference)
    dataclasses.replace(broker.settings, reference=None, any_measurement=True)
