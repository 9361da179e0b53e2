"""The simulated TD's CCEL boot log: GET /ccel serves a strict TCG2 crypto-agile log that replays
to the boot RTMR0-2 a quote of the sim carries, with the kernel, command line and initrd it
measures; an extension of RTMR2 after boot is not in it."""

from __future__ import annotations

import hashlib

import httpx

from tdx_measure import boot_components, parse_ccel, replay_ccel, verify_ccel
from tdx_quote import parse_quote
from tdx_sim.ccel import (
    CCEL_BUFFER_SIZE,
    SIM_CCEL,
    SIM_CMDLINE,
    SIM_CMDLINE_SHA384,
    SIM_INITRD_SHA384,
    SIM_KERNEL_SHA384,
)
from tdx_sim.platform import SimPlatform


async def test_get_ccel_replays_to_the_rtmrs_of_a_quote(
    sim: tuple[str, SimPlatform], client: httpx.AsyncClient
) -> None:
    base, _ = sim
    response = await client.get(f"{base}/ccel")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/octet-stream"
    assert response.content == SIM_CCEL and len(SIM_CCEL) == CCEL_BUFFER_SIZE
    log = parse_ccel(response.content)
    quote = await client.get(f"{base}/attest/{'00' * 64}")
    rtmrs = parse_quote(quote.content, allow_zero_padding=True).body.rtmrs
    result = verify_ccel(log, rtmrs)
    assert result.compared == (True, True, True, False)
    components = boot_components(log)
    assert components.kernel is not None and components.cmdline is not None
    assert (components.kernel.path, components.kernel.sha384) == (
        "/boot/vmlinuz",
        SIM_KERNEL_SHA384,
    )
    assert components.cmdline.text == SIM_CMDLINE
    assert (
        components.cmdline.sha384
        == SIM_CMDLINE_SHA384
        == hashlib.sha384(SIM_CMDLINE.encode()).digest()
    )
    assert [i.sha384 for i in components.initrds] == [SIM_INITRD_SHA384]
    assert [b.path for b in components.boot_loaders] == ["\\EFI\\BOOT\\BOOTX64.EFI"]


async def test_an_rtmr2_extension_after_boot_is_not_in_the_ccel(
    sim: tuple[str, SimPlatform], client: httpx.AsyncClient
) -> None:
    base, _ = sim
    extended = await client.post(f"{base}/rtmr/2/extend", json={"digest": "ab" * 48})
    assert extended.status_code == 200
    quote = await client.get(f"{base}/attest/{'00' * 64}")
    rtmrs = parse_quote(quote.content, allow_zero_padding=True).body.rtmrs
    log = parse_ccel((await client.get(f"{base}/ccel")).content)
    assert replay_ccel(log, rtmrs).mismatched == (2,)
