"""Where quotes come from, where RTMR3 lives and where the firmware's CCEL boot log is: the TDX
guest's kernel, or the tdx-sim.

One selector picks all three, so that a quote, the RTMR3 it reports and the boot log that
explains its RTMR0-2 always come from the same (real or simulated) TD: `select_platform`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from tdx_identity.core.ports import BootLogSource, QuoteSource, RtmrDevice
from tdx_identity.exceptions import NoPlatformError, NoQuoteSourceError, NoRtmrDeviceError

from .kernel import (
    ACPI_CCEL_PATH,
    DEFAULT_CONFIGFS_TSM_PATH,
    SYSFS_RTMR3_PATH,
    AcpiCcelSource,
    ConfigfsTsmQuoteSource,
    SysfsRtmrDevice,
)
from .sim import MockTdxQuoteSource, SimCcelSource, SimRtmrDevice

__all__ = [
    "ACPI_CCEL_PATH",
    "DEFAULT_CONFIGFS_TSM_PATH",
    "SYSFS_RTMR3_PATH",
    "AcpiCcelSource",
    "ConfigfsTsmQuoteSource",
    "MockTdxQuoteSource",
    "NoBootLog",
    "Platform",
    "PlatformSettings",
    "SimCcelSource",
    "SimRtmrDevice",
    "SysfsRtmrDevice",
    "select_platform",
]


@dataclass(frozen=True)
class PlatformSettings:
    """Where to find the kernel's interfaces, and the simulator used when they are absent."""

    configfs_tsm_path: Path
    rtmr_sysfs_path: Path
    mock_tdx_url: str | None
    quote_timeout: float
    ccel_path: Path = ACPI_CCEL_PATH


@dataclass(frozen=True)
class Platform:
    """A quote source, the RTMR3 device and the CCEL boot log of the same TD; `name` is
    "kernel" or "tdx-sim"."""

    name: str
    quote_source: QuoteSource
    rtmr_device: RtmrDevice
    boot_log: BootLogSource


class NoBootLog:
    """A platform without a CCEL boot log (a registration then carries none)."""

    async def read_ccel(self) -> bytes | None:
        return None


def select_platform(settings: PlatformSettings) -> Platform:
    """The kernel's interfaces when configfs-tsm exists, else the simulator at the mock TDX URL;
    raises a StartupError (NoQuoteSourceError, NoRtmrDeviceError) naming what is missing."""
    tsm = settings.configfs_tsm_path
    if tsm.is_dir():
        if not os.access(tsm, os.W_OK):
            raise NoQuoteSourceError(
                f"configfs-tsm directory {tsm} exists but is not writable by this user; run the "
                "service with access to it"
            )
        return Platform(
            "kernel",
            ConfigfsTsmQuoteSource(tsm),
            _sysfs_rtmr(settings.rtmr_sysfs_path),
            AcpiCcelSource(settings.ccel_path),
        )
    if settings.mock_tdx_url:
        url = settings.mock_tdx_url
        return Platform(
            "tdx-sim",
            MockTdxQuoteSource(url, timeout=settings.quote_timeout),
            SimRtmrDevice(url),
            SimCcelSource(url, timeout=settings.quote_timeout),
        )
    raise NoPlatformError(
        f"no TDX quote source: {tsm} does not exist (not a TDX guest, or configfs not mounted) "
        "and MOCK_TDX_URL / --mock-tdx-url is not set"
    )


def _sysfs_rtmr(path: Path) -> SysfsRtmrDevice:
    if not path.exists():
        raise NoRtmrDeviceError(
            f"no RTMR3 interface: {path} does not exist (a kernel before 6.16 without "
            "CONFIG_TSM_MEASUREMENTS) although configfs-tsm quotes are available; quotes and "
            "RTMR3 must come from the same TD"
        )
    if not os.access(path, os.R_OK | os.W_OK):
        raise NoRtmrDeviceError(
            f"{path} exists but this user cannot read and write it; run the service with access "
            "to it"
        )
    return SysfsRtmrDevice(path)
