"""The simulated TD's run-time measurement registers (RTMR0..3), kept in memory.

The simulator process stands for the TD: its registers hold fixed boot measurements in RTMR0-2
and zero in RTMR3 when it starts, so a restart of the simulator is a reboot of the simulated TD.
Extends follow the TDX rule (`tdx_measure.extend`) and are serialized by a lock.
"""

from __future__ import annotations

import threading

from tdx_measure import REGISTER_SIZE, extend

from .ccel import SIM_BOOT_LOG

# What the simulated firmware, boot loader and kernel measured at boot: the replay of the
# simulated TD's CCEL boot log (`tdx_sim.ccel`), the same for every start.
_BOOT = SIM_BOOT_LOG.replay()
BOOT_RTMRS: tuple[bytes, bytes, bytes, bytes] = (_BOOT[0], _BOOT[1], _BOOT[2], bytes(REGISTER_SIZE))
# The registers the running TD may extend; RTMR0 and RTMR1 stay the firmware's boot measurements.
EXTENDABLE_RTMRS = (2, 3)


class RtmrError(ValueError):
    """An RTMR operation the simulated TD refuses."""


class RtmrNotExtendableError(RtmrError):
    """The index names no register, or one the simulator keeps as a boot measurement."""


class RtmrDigestError(RtmrError):
    """The digest to extend is not 48 bytes."""


class SimRtmrs:
    """RTMR0..3 of one boot of the simulated TD; thread-safe, every extend is atomic."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._values: list[bytes] = list(BOOT_RTMRS)

    def read(self) -> tuple[bytes, bytes, bytes, bytes]:
        """The four registers, read together so a quote never mixes two states."""
        with self._lock:
            rtmr0, rtmr1, rtmr2, rtmr3 = self._values
        return rtmr0, rtmr1, rtmr2, rtmr3

    def extend(self, index: int, digest: bytes) -> bytes:
        """Set RTMR`index` to SHA-384(RTMR ‖ digest) and return the new value."""
        if index not in EXTENDABLE_RTMRS:
            if index in (0, 1):
                raise RtmrNotExtendableError(
                    f"RTMR{index} holds a boot measurement of the simulated TD and cannot be "
                    "extended; only RTMR2 and RTMR3 can"
                )
            raise RtmrNotExtendableError(
                f"there is no RTMR {index}; only RTMR2 and RTMR3 can be extended"
            )
        if len(digest) != REGISTER_SIZE:
            raise RtmrDigestError(
                f"digest must be {REGISTER_SIZE} bytes ({2 * REGISTER_SIZE} hex characters), "
                f"got {len(digest)}"
            )
        with self._lock:
            value = extend(self._values[index], bytes(digest))
            self._values[index] = value
        return value


def td_image_allowlists(mr_td: bytes) -> dict[str, str]:
    """The allow-lists that pin the simulated TD image (its MRTD and its boot RTMR0-2), in the
    comma-separated forms of the registry's REGISTRY_MRTD_ALLOWLIST and REGISTRY_RTMR_ALLOWLIST
    (`--mrtd-allowlist`, `--rtmr-allowlist`; tdxctl's `--mrtd-allowlist` takes the first)."""
    return {
        "REGISTRY_MRTD_ALLOWLIST": mr_td.hex(),
        "REGISTRY_RTMR_ALLOWLIST": ",".join(
            f"{index}={BOOT_RTMRS[index].hex()}" for index in range(3)
        ),
    }
