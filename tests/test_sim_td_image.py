"""The simulator's TD image, pinned the way the registry reads it (tests/procs.py, bench/ and the
demo start every registry so)."""

from __future__ import annotations

from tdx_registry import parse_settings
from tdx_sim import BOOT_RTMRS, DEFAULT_MR_TD, td_image_allowlists


def test_td_image_allowlists_parse_to_exactly_the_sims_mrtd_and_boot_registers() -> None:
    for mr_td in (DEFAULT_MR_TD, bytes(range(48))):
        parsed = parse_settings([], td_image_allowlists(mr_td))
        assert parsed.any_measurement is False
        assert parsed.policy.mrtd_allowlist == frozenset({mr_td})
        assert parsed.policy.rtmr_allowlist == tuple(frozenset({BOOT_RTMRS[i]}) for i in range(3))
