"""The TD image the broker's operator accepts: the reference values of the policy input.

The allow-lists come from `--mrtd-allowlist` / `--rtmr-allowlist` (parsed by `tdx_verify`,
as the registry's). They reach the resource policy as `input.reference`; the shipped policy
releases nothing to a TD whose MRTD or RTMR0-2 is not in its list.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from tdx_verify import missing_td_image_pins

REFERENCE_KEYS: Final = ("mr_td", "rtmr0", "rtmr1", "rtmr2")
"""The keys of `input.reference`, named as the `input.tdx` claims they are compared with."""


@dataclass(frozen=True)
class TdImageReference:
    """Allowed MRTDs and allowed values of RTMR0-2; None where nothing is pinned (only with
    --any-measurement)."""

    mr_td: frozenset[bytes] | None
    rtmrs: tuple[frozenset[bytes] | None, ...] | None

    def __post_init__(self) -> None:
        if self.rtmrs is not None and len(self.rtmrs) != 3:
            raise ValueError("rtmrs names the allowed values of RTMR0, RTMR1 and RTMR2")

    @property
    def missing(self) -> list[str]:
        """The flags still to give to pin the whole image (empty: pinned)."""
        return missing_td_image_pins(self.mr_td, self.rtmrs)

    @property
    def pins_nothing(self) -> bool:
        return self.mr_td is None and all(v is None for v in self.rtmrs or (None,))

    def to_json(self) -> dict[str, list[str] | None]:
        """`input.reference`: each key a sorted list of lowercase hex, or null (not pinned)."""
        rtmrs = self.rtmrs or (None, None, None)
        values = (self.mr_td, *rtmrs)
        return {
            key: None if allowed is None else sorted(value.hex() for value in allowed)
            for key, allowed in zip(REFERENCE_KEYS, values, strict=True)
        }
