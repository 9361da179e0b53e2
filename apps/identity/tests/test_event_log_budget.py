"""The event log's size bound, as the review reproduced it: replayed configures grew the log past
the registry's 64 KiB body limit, so every later registration failed. A configure that would
grow the log past its budget is refused (409) before anything is done; the log at the bound,
with the events a configure does not bound, still fits a registration under the limit, and
every event stays in the log, so RTMR3 still replays."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tdx_identity.core.measurement import CONFIGURE_LOG_BUDGET_BYTES, MeasurementLog
from tdx_identity.core.ports import RegistrationRequest
from tdx_identity.exceptions import EventLogFull
from tdx_identity.http_status import to_api_error
from tdx_measure import (
    ZERO_REGISTER,
    EventLog,
    IdentityEvent,
    SshHostKeyEvent,
    TlsKeyEvent,
    extend,
    replay,
    ssh_ed25519_line,
)
from tdx_report_data import IdentityInfo
from tdx_service_kit import HttpLimits
from tests.vectors import VECTORS_DIR

NOW = 1_700_000_000
IMAGE = "registry.example.org/team/service-with-a-long-name:1.2.3"
IMAGE_ID = "sha256:" + "ab" * 32
PERSIST = ("/var/lib/app", "/srv/data")
REGISTRY_LIMIT = HttpLimits().max_body_bytes  # the registry's default body limit
# Events a start or a step adds without a configure: per start the settings, SSH host key and
# TLS key events, plus identities and exposes; this many beyond the bound must still fit.
UNBOUNDED_EVENTS = 24


class MemoryRtmr:
    """An in-memory RTMR3 with the TDX extension rule."""

    def __init__(self) -> None:
        self.value = ZERO_REGISTER
        self.extends = 0

    async def read_rtmr3(self) -> bytes:
        return self.value

    async def extend_rtmr3(self, digest: bytes) -> bytes | None:
        self.value = extend(self.value, digest)
        self.extends += 1
        return self.value


async def _fill(mlog: MeasurementLog, device: MemoryRtmr) -> tuple[int, EventLogFull]:
    """Configure until refused; the configures accepted and the refusal."""
    accepted = 0
    while True:
        try:
            mlog.require_room_for_configure(IMAGE, PERSIST, 8080)
        except EventLogFull as exc:
            return accepted, exc
        await mlog.record_workload("configure", IMAGE, IMAGE_ID, PERSIST, 8080)
        accepted += 1
        assert accepted < 10_000


@pytest.fixture
async def full_log(tmp_path: Path) -> tuple[MeasurementLog, MemoryRtmr, int, EventLogFull]:
    device = MemoryRtmr()
    mlog = MeasurementLog(tmp_path / "storage", device, helpers=lambda: {})
    await mlog.start(NOW)
    accepted, refusal = await _fill(mlog, device)
    return mlog, device, accepted, refusal


async def test_configures_stop_at_the_budget_and_the_refusal_changes_nothing(
    full_log: tuple[MeasurementLog, MemoryRtmr, int, EventLogFull],
) -> None:
    mlog, device, accepted, refusal = full_log
    size = len(mlog.event_log_json().encode())
    per_event = size // (accepted + 1)
    # The figures measured when the bound was set (issue 13): about 250 bytes a configure event.
    assert 150 <= per_event <= 400
    assert size <= CONFIGURE_LOG_BUDGET_BYTES < size + 400
    assert refusal.size > CONFIGURE_LOG_BUDGET_BYTES
    assert refusal.budget == CONFIGURE_LOG_BUDGET_BYTES
    extends = device.extends
    with pytest.raises(EventLogFull):
        mlog.require_room_for_configure(IMAGE, PERSIST, 8080)
    assert device.extends == extends
    assert mlog.event_log_json().encode() == (mlog.path.read_bytes())
    # Nothing compacted, nothing dropped: the whole log replays to RTMR3.
    log = EventLog.from_json(mlog.event_log_json())
    assert replay(log.events) == device.value
    assert sum(1 for e in log.events if getattr(e, "transition", None) == "configure") == accepted


async def test_the_refusal_is_a_409_with_a_reason(
    full_log: tuple[MeasurementLog, MemoryRtmr, int, EventLogFull],
) -> None:
    _, _, _, refusal = full_log
    error = to_api_error(refusal)
    assert error.status == 409
    assert "reboot the TD" in error.message
    assert f"budget of {CONFIGURE_LOG_BUDGET_BYTES} bytes" in error.message


async def test_a_registration_at_the_bound_fits_the_registry_limit(
    full_log: tuple[MeasurementLog, MemoryRtmr, int, EventLogFull],
) -> None:
    mlog, device, _, _ = full_log
    for n in range(UNBOUNDED_EVENTS // 3):
        await mlog.record(SshHostKeyEvent(public_key=ssh_ed25519_line(bytes([n]) * 32)))
        await mlog.record(TlsKeyEvent(spki_sha256=bytes([n]) * 32))
        await mlog.record(IdentityEvent(role="owner", pubkey=bytes([n + 1]) * 32))
    identity = IdentityInfo(pubkey=b"\x01" * 32, instance_signature=b"\x02" * 64,
                            identity_signature=b"\x03" * 64)  # fmt: skip
    request = RegistrationRequest(
        instance_pubkey=b"\x04" * 32,
        ppid=b"\x05" * 16,
        # The larger of the real quotes the suites use (with its certification data).
        attestation_quote=(VECTORS_DIR / "gcp_cos113_quote.bin").read_bytes(),
        operator=identity,
        owner=identity,
        challenge=b"\x06" * 32,
        proof_of_possession=b"\x07" * 64,
        event_log=mlog.event_log_json(),
    )
    body = json.dumps(request.to_json()).encode()
    assert len(body) <= REGISTRY_LIMIT, len(body)
    assert replay(EventLog.from_json(mlog.event_log_json()).events) == device.value
