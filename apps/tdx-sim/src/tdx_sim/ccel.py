"""The simulated TD's boot event log: a CCEL (TCG2 crypto-agile, SHA-384) as TDX firmware, shim
and grub would write it, whose replay gives the simulated TD's boot RTMR0-2 (`BOOT_RTMRS` is
derived from it). `GET /ccel` serves it, padded like the firmware's 256 KiB buffer."""

from __future__ import annotations

import hashlib
import struct
from typing import Final

from tdx_measure import CcelEvent, CcelLog
from tdx_measure._ccel import (
    EV_EFI_ACTION,
    EV_EFI_BOOT_SERVICES_APPLICATION,
    EV_EFI_PLATFORM_FIRMWARE_BLOB2,
    EV_EFI_VARIABLE_DRIVER_CONFIG,
    EV_IPL,
    EV_SEPARATOR,
    TPM_ALG_SHA384,
)

CCEL_BUFFER_SIZE: Final = 256 * 1024
SIM_KERNEL_PATH: Final = "/boot/vmlinuz"
SIM_INITRD_PATH: Final = "/boot/initrd.img"
SIM_CMDLINE: Final = f"{SIM_KERNEL_PATH} console=ttyS0 ro"
SIM_KERNEL_SHA384: Final = hashlib.sha384(b"tdx-sim kernel image").digest()
SIM_INITRD_SHA384: Final = hashlib.sha384(b"tdx-sim initrd image").digest()
SIM_CMDLINE_SHA384: Final = hashlib.sha384(SIM_CMDLINE.encode()).digest()
_EFI_GLOBAL_VARIABLE: Final = bytes.fromhex("61dfe48bca93d211aa0d00e098032b8c")
_RTMR0, _RTMR1, _RTMR2 = 1, 2, 3  # CCEL MR indexes


def _measured(mr: int, kind: int, data: bytes, digest: bytes) -> CcelEvent:
    return CcelEvent(mr, kind, ((TPM_ALG_SHA384, digest),), data)


def _variable(name: str, value: bytes) -> bytes:
    return (
        _EFI_GLOBAL_VARIABLE
        + struct.pack("<QQ", len(name), len(value))
        + name.encode("utf-16-le")
        + value
    )


def _image(path: str) -> bytes:
    node = path.encode("utf-16-le") + b"\x00\x00"
    device_path = struct.pack("<BBH", 4, 4, 4 + len(node)) + node + b"\x7f\xff\x04\x00"
    return struct.pack("<QQQQ", 0, 0, 0, len(device_path)) + device_path


def _grub(text: str) -> CcelEvent:
    _, _, rest = text.partition(": ")
    return CcelEvent.measure(_RTMR2, EV_IPL, text.encode() + b"\x00", digested=rest.encode())


def _file(path: str, digest: bytes) -> CcelEvent:
    return _measured(_RTMR2, EV_IPL, path.encode() + b"\x00", digest)


def _action(mr: int, text: str) -> CcelEvent:
    return CcelEvent.measure(mr, EV_EFI_ACTION, text.encode("ascii"))


def sim_boot_log() -> CcelLog:
    """The simulated TD's boot: firmware volume and Secure Boot state (RTMR0), the boot loader
    (RTMR1), grub's commands, kernel, command line and initrd (RTMR2)."""
    blob = (
        struct.pack("<B", 17) + b"tdx-sim firmware\x00" + struct.pack("<QQ", 0xFFC00000, 0x400000)
    )
    separator = bytes(4)
    return CcelLog.of(
        [
            _measured(
                _RTMR0,
                EV_EFI_PLATFORM_FIRMWARE_BLOB2,
                blob,
                hashlib.sha384(b"tdx-sim firmware volume").digest(),
            ),
            CcelEvent.measure(
                _RTMR0, EV_EFI_VARIABLE_DRIVER_CONFIG, _variable("SecureBoot", b"\x00")
            ),
            CcelEvent.measure(_RTMR0, EV_SEPARATOR, separator),
            _action(_RTMR1, "Calling EFI Application from Boot Option"),
            CcelEvent.measure(_RTMR1, EV_SEPARATOR, separator),
            _measured(
                _RTMR1,
                EV_EFI_BOOT_SERVICES_APPLICATION,
                _image("\\EFI\\BOOT\\BOOTX64.EFI"),
                hashlib.sha384(b"tdx-sim boot loader").digest(),
            ),
            _grub(f"grub_cmd: linux {SIM_CMDLINE}"),
            _file(SIM_KERNEL_PATH, SIM_KERNEL_SHA384),
            _grub(f"kernel_cmdline: {SIM_CMDLINE}"),
            _grub(f"grub_cmd: initrd {SIM_INITRD_PATH}"),
            _file(SIM_INITRD_PATH, SIM_INITRD_SHA384),
            _action(_RTMR1, "Exit Boot Services Invocation"),
            _action(_RTMR1, "Exit Boot Services Returned with Success"),
        ]
    )


SIM_BOOT_LOG: Final = sim_boot_log()
SIM_CCEL: Final = SIM_BOOT_LOG.encode(pad_to=CCEL_BUFFER_SIZE)
"""The bytes `GET /ccel` serves: the boot log, then 0xFF up to the firmware's 256 KiB."""
