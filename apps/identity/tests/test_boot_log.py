"""The firmware's CCEL boot log in every registration: read from the ACPI data file on a TDX
guest or from the simulator's GET /ccel, sent as POST /register's `ccel` (standard base64) so
the registry can replay it to the quote's RTMR0-2; none when the platform has none, or when the
log does not parse or does not replay to the quote being sent (warned: the registry would
refuse it); a boot log that exists but cannot be read fails the registration before anything
is quoted or kept."""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from conftest import Running, register_operator
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fakes import FakeQuoteSource, FakeRegistry
from sanic import Request, Sanic
from sanic.response import HTTPResponse, raw

from tdx_identity import Settings
from tdx_identity.core.ports import RegistrationRequest
from tdx_identity.core.state import STATE_FILE_NAME
from tdx_identity.exceptions import QuoteSourceError
from tdx_identity.platform import (
    ACPI_CCEL_PATH,
    AcpiCcelSource,
    NoBootLog,
    PlatformSettings,
    SimCcelSource,
    select_platform,
)
from tdx_service_kit.testing import serve
from tdx_sim import BOOT_RTMRS, SimSettings
from tdx_sim import create_app as create_sim_app
from tdx_sim.ccel import SIM_CCEL

BOOT_LOG = SIM_CCEL
"""A boot log that replays to the `SIM_BOOT` registers below."""
SIM_BOOT = (BOOT_RTMRS[0], BOOT_RTMRS[1], BOOT_RTMRS[2])


@dataclass
class FakeBootLog:
    """A boot log that is `data`, or fails as an unreadable one does (`fail`)."""

    data: bytes | None = BOOT_LOG
    fail: bool = False
    reads: list[int] = field(default_factory=list)

    async def read_ccel(self) -> bytes | None:
        self.reads.append(1)
        if self.fail:
            raise QuoteSourceError("cannot read the CCEL boot log: Input/output error")
        return self.data


async def test_the_acpi_file_is_the_boot_log_and_a_missing_one_is_none(tmp_path: Path) -> None:
    path = tmp_path / "CCEL"
    assert await AcpiCcelSource(path).read_ccel() is None
    path.write_bytes(SIM_CCEL)
    assert await AcpiCcelSource(path).read_ccel() == SIM_CCEL
    path.write_bytes(b"")
    assert await AcpiCcelSource(path).read_ccel() is None
    assert AcpiCcelSource().path == ACPI_CCEL_PATH == Path("/sys/firmware/acpi/tables/data/CCEL")


async def test_an_unreadable_or_oversized_acpi_file_is_an_error(tmp_path: Path) -> None:
    directory = tmp_path / "CCEL"
    directory.mkdir()
    with pytest.raises(QuoteSourceError, match="cannot read the CCEL boot log"):
        await AcpiCcelSource(directory).read_ccel()
    huge = tmp_path / "huge"
    huge.write_bytes(b"\xff" * ((1 << 20) + 1))
    with pytest.raises(QuoteSourceError, match="larger than 1048576 bytes"):
        await AcpiCcelSource(huge).read_ccel()


async def test_the_sims_boot_log_is_its_get_ccel(tmp_path: Path) -> None:
    Sanic.test_mode = True
    async with serve(create_sim_app(SimSettings(state_dir=tmp_path / "sim"))) as url:
        assert await SimCcelSource(url).read_ccel() == SIM_CCEL
        platform = select_platform(
            PlatformSettings(
                configfs_tsm_path=tmp_path / "no-tsm",
                rtmr_sysfs_path=tmp_path / "no-rtmr",
                mock_tdx_url=url,
                quote_timeout=5.0,
            )
        )
        assert platform.name == "tdx-sim"
        assert await platform.boot_log.read_ccel() == SIM_CCEL


async def test_a_sim_that_fails_its_ccel_is_an_error_and_one_without_it_has_none() -> None:
    app: Sanic[Any, Any] = Sanic("failing-ccel")

    @app.get("/ccel")
    async def ccel(request: Request) -> HTTPResponse:
        return raw(b"no", status=500)

    async with serve(app) as url:
        with pytest.raises(QuoteSourceError, match="answered HTTP 500 for the CCEL"):
            await SimCcelSource(url).read_ccel()
        # A mock TDX service without the route has no boot log.
        assert await SimCcelSource(url + "/elsewhere").read_ccel() is None
    with pytest.raises(QuoteSourceError, match="unreachable"):
        await SimCcelSource(url, timeout=1.0).read_ccel()


async def test_no_boot_log_is_none() -> None:
    assert await NoBootLog().read_ccel() is None


def test_the_wire_body_carries_the_boot_log_in_standard_base64_only_when_there_is_one() -> None:
    request = RegistrationRequest(
        instance_pubkey=bytes(32),
        ppid=bytes(16),
        attestation_quote=b"q",
        operator=None,
        owner=None,
        challenge=bytes(32),
        proof_of_possession=bytes(64),
    )
    assert "ccel" not in request.to_json()
    with_log = RegistrationRequest(**{**request.__dict__, "ccel": b"\xfb\xff"})
    assert with_log.to_json()["ccel"] == base64.b64encode(b"\xfb\xff").decode() == "+/8="


async def test_every_registration_carries_the_boot_log(
    running: Running, registry: FakeRegistry, quotes: FakeQuoteSource
) -> None:
    quotes.boot_rtmrs = SIM_BOOT
    boot_log = FakeBootLog()
    async with running(boot_log=boot_log) as client:
        assert (await register_operator(client, Ed25519PrivateKey.generate())).status_code == 200
    [request] = registry.accepted
    assert request.ccel == BOOT_LOG
    assert base64.b64decode(request.to_json()["ccel"]) == BOOT_LOG


async def test_without_a_boot_log_the_registration_carries_none(
    running: Running, registry: FakeRegistry
) -> None:
    async with running(boot_log=FakeBootLog(data=None)) as client:
        assert (await register_operator(client, Ed25519PrivateKey.generate())).status_code == 200
    [request] = registry.accepted
    assert request.ccel is None and "ccel" not in request.to_json()


@pytest.mark.parametrize(
    ("data", "boot", "warning"),
    [
        (SIM_CCEL, (bytes(48), bytes(48), bytes(48)), "does not replay to this TD's quote"),
        (b"\x00\x01 not a CCEL \xff", SIM_BOOT, "does not parse"),
    ],
)
async def test_a_boot_log_that_does_not_explain_the_quote_is_not_sent(
    running: Running,
    registry: FakeRegistry,
    quotes: FakeQuoteSource,
    caplog: pytest.LogCaptureFixture,
    data: bytes,
    boot: tuple[bytes, bytes, bytes],
    warning: str,
) -> None:
    """Another boot's log, or registers something extended after the firmware: the registry
    would refuse the registration, so it goes without the log (and a warning)."""
    quotes.boot_rtmrs = boot
    async with running(boot_log=FakeBootLog(data=data)) as client:
        assert (await register_operator(client, Ed25519PrivateKey.generate())).status_code == 200
    [request] = registry.accepted
    assert request.ccel is None
    assert any(warning in record.getMessage() for record in caplog.records)


async def test_an_unreadable_boot_log_fails_the_registration_and_keeps_nothing(
    running: Running, registry: FakeRegistry, quotes: FakeQuoteSource, settings: Settings
) -> None:
    quotes.boot_rtmrs = SIM_BOOT
    boot_log = FakeBootLog(fail=True)
    async with running(boot_log=boot_log) as client:
        state = settings.storage_path / STATE_FILE_NAME
        before = state.read_bytes()
        asked = len(quotes.requests)
        response = await register_operator(client, Ed25519PrivateKey.generate())
        assert response.status_code == 503
        assert "CCEL" in response.json()["error"]
        assert len(quotes.requests) == asked
        assert state.read_bytes() == before
        assert json.loads(before)["operator"] is None
        boot_log.fail = False
        assert (await register_operator(client, Ed25519PrivateKey.generate())).status_code == 200
    assert [r.ccel for r in registry.accepted] == [BOOT_LOG]
