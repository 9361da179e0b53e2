"""The TDX guest's kernel interfaces: quotes from configfs-tsm, RTMR3 through sysfs.

Quotes. Each request uses its own configfs-tsm report entry (``/sys/kernel/config/tsm/report``).

The boot log. The firmware's CCEL event log (TCG2 crypto-agile, the log area the ACPI CCEL
table points to) is ``/sys/firmware/acpi/tables/data/CCEL``; a kernel or firmware without it
has no boot log to send.

The register. On a TDX guest running Linux 6.16 or later (``CONFIG_TSM_MEASUREMENTS``, the
``tdx_guest`` driver), each RTMR is a sysfs file of the TSM measurement-register interface,
``/sys/devices/virtual/misc/tdx_guest/measurements/rtmr3:sha384`` (ABI document
``Documentation/ABI/testing/sysfs-devices-virtual-misc-tdx_guest``): reading it returns the 48-byte
value, writing exactly 48 bytes at offset 0 extends it (``TDG.MR.RTMR.EXTEND``).
"""

from __future__ import annotations

import asyncio
import errno
import os
import secrets
from pathlib import Path
from typing import Final

from tdx_identity.exceptions import QuoteSourceError, RtmrDeviceError
from tdx_measure import REGISTER_SIZE

from ._checks import MAX_CCEL_BYTES, check_digest, check_report_data

__all__ = [
    "ACPI_CCEL_PATH",
    "DEFAULT_CONFIGFS_TSM_PATH",
    "SYSFS_RTMR3_PATH",
    "AcpiCcelSource",
    "ConfigfsTsmQuoteSource",
    "SysfsRtmrDevice",
]

DEFAULT_CONFIGFS_TSM_PATH: Final = Path("/sys/kernel/config/tsm/report")
SYSFS_RTMR3_PATH: Final = Path("/sys/devices/virtual/misc/tdx_guest/measurements/rtmr3:sha384")
ACPI_CCEL_PATH: Final = Path("/sys/firmware/acpi/tables/data/CCEL")


class AcpiCcelSource:
    """The CCEL boot log from its ACPI data file: None when the file does not exist."""

    def __init__(self, path: Path = ACPI_CCEL_PATH) -> None:
        self._path = path

    @property
    def path(self) -> Path:
        return self._path

    async def read_ccel(self) -> bytes | None:
        return await asyncio.to_thread(self._read)

    def _read(self) -> bytes | None:
        try:
            with self._path.open("rb") as log:
                data = log.read(MAX_CCEL_BYTES + 1)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise QuoteSourceError(f"cannot read the CCEL boot log {self._path}: {exc}") from exc
        if len(data) > MAX_CCEL_BYTES:
            raise QuoteSourceError(
                f"the CCEL boot log {self._path} is larger than {MAX_CCEL_BYTES} bytes"
            )
        return data or None


class ConfigfsTsmQuoteSource:
    """Quotes from the Linux configfs-tsm report interface of a TDX guest.

    Each request uses its own report entry (mkdir), writes `inblob`, reads `outblob` and removes
    the entry; the `generation` counter detects a concurrent writer to the same entry.
    """

    def __init__(self, root: Path) -> None:
        self._root = root

    @property
    def root(self) -> Path:
        return self._root

    async def get_quote(self, report_data: bytes) -> bytes:
        check_report_data(report_data)
        return await asyncio.to_thread(self._get_quote_blocking, report_data)

    def _get_quote_blocking(self, report_data: bytes) -> bytes:
        entry = self._root / f"tdx-identity-{secrets.token_hex(8)}"
        try:
            entry.mkdir()
        except OSError as exc:
            raise QuoteSourceError(f"configfs-tsm: cannot create {entry}: {exc.strerror}") from exc
        try:
            (entry / "inblob").write_bytes(report_data)
            before = (entry / "generation").read_text().strip()
            quote = (entry / "outblob").read_bytes()
            after = (entry / "generation").read_text().strip()
        except OSError as exc:
            raise QuoteSourceError(f"configfs-tsm: quote generation failed: {exc}") from exc
        finally:
            try:
                entry.rmdir()
            except OSError as exc:
                if exc.errno != errno.ENOENT:
                    raise QuoteSourceError(
                        f"configfs-tsm: cannot remove {entry}: {exc.strerror}"
                    ) from exc
        if before != after:
            raise QuoteSourceError("configfs-tsm: report entry changed while reading the quote")
        if not quote:
            raise QuoteSourceError("configfs-tsm: empty quote")
        return quote


class SysfsRtmrDevice:
    """RTMR3 through the Linux (>= 6.16) TSM measurement-register sysfs file of ``tdx_guest``:
    a read returns the 48-byte value, a 48-byte write at offset 0 extends it."""

    def __init__(self, path: Path = SYSFS_RTMR3_PATH) -> None:
        self._path = path

    @property
    def path(self) -> Path:
        return self._path

    async def read_rtmr3(self) -> bytes:
        return await asyncio.to_thread(self._read)

    async def extend_rtmr3(self, digest: bytes) -> bytes | None:
        check_digest(digest)
        await asyncio.to_thread(self._write, bytes(digest))
        return None

    def _read(self) -> bytes:
        try:
            fd = os.open(self._path, os.O_RDONLY | os.O_CLOEXEC)
            try:
                value = os.read(fd, REGISTER_SIZE + 1)
            finally:
                os.close(fd)
        except OSError as exc:
            raise RtmrDeviceError(f"cannot read {self._path}: {exc.strerror or exc}") from exc
        if len(value) != REGISTER_SIZE:
            raise RtmrDeviceError(
                f"{self._path} returned {len(value)} bytes, expected {REGISTER_SIZE}"
            )
        return value

    def _write(self, digest: bytes) -> None:
        try:
            fd = os.open(self._path, os.O_WRONLY | os.O_CLOEXEC)
            try:
                written = os.write(fd, digest)
            finally:
                os.close(fd)
        except OSError as exc:
            raise RtmrDeviceError(f"cannot extend {self._path}: {exc.strerror or exc}") from exc
        if written != REGISTER_SIZE:
            raise RtmrDeviceError(f"{self._path} took {written} of {REGISTER_SIZE} digest bytes")
