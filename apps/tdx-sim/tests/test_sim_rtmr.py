"""The simulated TD's RTMRs: the TDX extension rule, serialized extends, the `/rtmr` routes,
quotes that carry the current values (and still verify), and a reset of RTMR3 on every start."""

from __future__ import annotations

import asyncio
import hashlib
import json
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dcap_qvl
import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tdx_measure import extend as measure_extend
from tdx_measure import parse_ccel
from tdx_quote import parse_quote
from tdx_sim.ccel import SIM_CCEL
from tdx_sim.platform import SimOptions, SimPlatform
from tdx_sim.rtmr import (
    BOOT_RTMRS,
    RtmrDigestError,
    RtmrNotExtendableError,
    SimRtmrs,
)

ZERO = bytes(48)
REPORT_DATA = hashlib.sha512(b"rtmr test").digest()
digests = st.binary(min_size=48, max_size=48)


def sha384_chain(start: bytes, extends: list[bytes]) -> bytes:
    """The TDX rule computed independently of both the sim and tdx_measure."""
    value = start
    for digest in extends:
        value = hashlib.sha384(value + digest).digest()
    return value


def acknowledged_order(start: bytes, acks: list[tuple[bytes, bytes]]) -> list[bytes]:
    """Order (digest, returned value) acknowledgements into the one chain they must form from
    `start`: each value must be SHA-384(previous value ‖ its digest). Fails if they do not."""
    order: list[bytes] = []
    current = start
    remaining = list(acks)
    while remaining:
        step = next(
            (ack for ack in remaining if hashlib.sha384(current + ack[0]).digest() == ack[1]),
            None,
        )
        assert step is not None, f"no acknowledged extend continues the chain after {len(order)}"
        remaining.remove(step)
        order.append(step[0])
        current = step[1]
    return order


# --- the register object -------------------------------------------------------------------


def test_a_fresh_td_has_the_boot_measurements_and_a_zero_rtmr3() -> None:
    assert SimRtmrs().read() == BOOT_RTMRS
    # RTMR0-2 are the replay of the simulated TD's CCEL boot log (test_sim_ccel.py), each
    # register SHA-384-extended from zero with its events' digests in order.
    registers = [ZERO] * 3
    for event in parse_ccel(SIM_CCEL).events:
        if event.rtmr is not None:
            registers[event.rtmr] = hashlib.sha384(registers[event.rtmr] + event.sha384).digest()
    assert BOOT_RTMRS[:3] == tuple(registers)
    assert BOOT_RTMRS[3] == ZERO


@pytest.mark.parametrize("index", [2, 3])
def test_extend_follows_the_tdx_rule_and_tdx_measure(index: int) -> None:
    rtmrs = SimRtmrs()
    before = rtmrs.read()
    digest = hashlib.sha384(b"event").digest()
    value = rtmrs.extend(index, digest)
    assert value == measure_extend(before[index], digest)
    assert value == hashlib.sha384(before[index] + digest).digest()
    after = rtmrs.read()
    assert after[index] == value
    assert [v for i, v in enumerate(after) if i != index] == [
        v for i, v in enumerate(before) if i != index
    ]


@settings(max_examples=50, deadline=None)
@given(st.lists(digests, max_size=8))
def test_a_sequence_of_extends_replays_to_the_same_value(extends: list[bytes]) -> None:
    rtmrs = SimRtmrs()
    for digest in extends:
        rtmrs.extend(3, digest)
    assert rtmrs.read()[3] == sha384_chain(ZERO, extends)


@settings(max_examples=50, deadline=None)
@given(digests, digests)
def test_the_order_of_extends_matters(first: bytes, second: bytes) -> None:
    forward, backward = SimRtmrs(), SimRtmrs()
    forward.extend(3, first)
    forward.extend(3, second)
    backward.extend(3, second)
    backward.extend(3, first)
    assert (forward.read()[3] == backward.read()[3]) == (first == second)


@pytest.mark.parametrize("index", [0, 1, 4, -1, 100])
def test_only_rtmr2_and_rtmr3_can_be_extended(index: int) -> None:
    rtmrs = SimRtmrs()
    with pytest.raises(RtmrNotExtendableError, match="only RTMR2 and RTMR3"):
        rtmrs.extend(index, bytes(48))
    assert rtmrs.read() == BOOT_RTMRS


@pytest.mark.parametrize("length", [0, 32, 47, 49, 64])
def test_a_digest_must_be_48_bytes(length: int) -> None:
    rtmrs = SimRtmrs()
    with pytest.raises(RtmrDigestError, match="48 bytes"):
        rtmrs.extend(3, bytes(length))
    assert rtmrs.read() == BOOT_RTMRS


@pytest.fixture
def frequent_thread_switches() -> Iterator[None]:
    """Make the interpreter switch threads as often as it can, so an unserialized
    read-modify-write of a register would interleave."""
    previous = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        yield
    finally:
        sys.setswitchinterval(previous)


@pytest.mark.usefixtures("frequent_thread_switches")
def test_extends_from_many_threads_are_serialized() -> None:
    rtmrs = SimRtmrs()
    acks: list[tuple[bytes, bytes]] = []
    acks_lock = threading.Lock()
    start = threading.Barrier(8)

    def worker(n: int) -> None:
        start.wait()
        for k in range(250):
            digest = hashlib.sha384(f"{n}/{k}".encode()).digest()
            value = rtmrs.extend(3, digest)
            with acks_lock:
                acks.append((digest, value))

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    order = acknowledged_order(ZERO, acks)
    assert len(order) == 2000
    assert rtmrs.read()[3] == sha384_chain(ZERO, order)


def test_the_platform_quotes_the_current_registers_and_a_new_platform_is_a_reboot(
    state_dir: Path,
) -> None:
    platform = SimPlatform(state_dir, SimOptions())
    d2, d3 = hashlib.sha384(b"two").digest(), hashlib.sha384(b"three").digest()
    rtmr2 = platform.rtmrs.extend(2, d2)
    rtmr3 = platform.rtmrs.extend(3, d3)
    body = parse_quote(platform.quote(REPORT_DATA)).body
    assert (body.rtmr0, body.rtmr1, body.rtmr2, body.rtmr3) == (
        BOOT_RTMRS[0],
        BOOT_RTMRS[1],
        rtmr2,
        rtmr3,
    )
    assert rtmr3 == sha384_chain(ZERO, [d3])
    rebooted = SimPlatform(state_dir, SimOptions())
    assert rebooted.rtmrs.read() == BOOT_RTMRS
    assert parse_quote(rebooted.quote(REPORT_DATA)).body.rtmr3 == ZERO


# --- the HTTP routes -----------------------------------------------------------------------


async def _extend(client: httpx.AsyncClient, base: str, index: int, digest: bytes) -> bytes:
    response = await client.post(f"{base}/rtmr/{index}/extend", json={"digest": digest.hex()})
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"index", "value"} and body["index"] == index
    return bytes.fromhex(body["value"])


async def _registers(client: httpx.AsyncClient, base: str) -> tuple[bytes, ...]:
    response = await client.get(f"{base}/rtmr")
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"rtmr0", "rtmr1", "rtmr2", "rtmr3"}
    return tuple(bytes.fromhex(body[f"rtmr{i}"]) for i in range(4))


async def test_get_rtmr_reports_the_boot_values_with_rtmr3_zero(
    sim: tuple[str, SimPlatform], client: httpx.AsyncClient
) -> None:
    base, _ = sim
    assert await _registers(client, base) == BOOT_RTMRS


async def test_extend_route_applies_the_rule_and_quotes_carry_the_result(
    sim: tuple[str, SimPlatform], client: httpx.AsyncClient, root_der: Any
) -> None:
    base, platform = sim
    boot = hashlib.sha384(b"boot event").digest()
    helper = hashlib.sha384(b"helper event").digest()
    first = await _extend(client, base, 3, boot)
    assert first == measure_extend(ZERO, boot) == hashlib.sha384(ZERO + boot).digest()
    second = await _extend(client, base, 3, helper)
    assert second == measure_extend(first, helper) == sha384_chain(ZERO, [boot, helper])
    rtmr2 = await _extend(client, base, 2, helper)
    assert rtmr2 == hashlib.sha384(BOOT_RTMRS[2] + helper).digest()
    assert await _registers(client, base) == (BOOT_RTMRS[0], BOOT_RTMRS[1], rtmr2, second)

    quote = (await client.get(f"{base}/attest/{REPORT_DATA.hex()}")).content
    body = parse_quote(quote).body
    assert (body.rtmr2, body.rtmr3) == (rtmr2, second)
    collateral = await dcap_qvl.get_collateral(base, quote)
    verdict = dcap_qvl.verify_with_root_ca(quote, collateral, root_der(platform), int(time.time()))
    assert verdict.status == "UpToDate"
    report = json.loads(verdict.to_json())["report"]["TD10"]
    assert bytes.fromhex(report["rt_mr3"]) == second
    assert bytes.fromhex(report["rt_mr2"]) == rtmr2


async def test_extend_route_accepts_uppercase_hex(
    sim: tuple[str, SimPlatform], client: httpx.AsyncClient
) -> None:
    base, _ = sim
    digest = hashlib.sha384(b"upper").digest()
    response = await client.post(f"{base}/rtmr/3/extend", json={"digest": digest.hex().upper()})
    assert response.status_code == 200
    assert response.json()["value"] == hashlib.sha384(ZERO + digest).hexdigest()


async def test_the_order_of_extends_over_http_matters(
    run_sim: Any, client: httpx.AsyncClient
) -> None:
    a, b = hashlib.sha384(b"a").digest(), hashlib.sha384(b"b").digest()
    async with run_sim(SimOptions()) as (base, _):
        await _extend(client, base, 3, a)
        forward = await _extend(client, base, 3, b)
    async with run_sim(SimOptions()) as (base, _):
        await _extend(client, base, 3, b)
        backward = await _extend(client, base, 3, a)
    assert forward == sha384_chain(ZERO, [a, b])
    assert backward == sha384_chain(ZERO, [b, a])
    assert forward != backward


async def test_concurrent_extends_are_serialized_in_the_acknowledged_order(
    sim: tuple[str, SimPlatform], client: httpx.AsyncClient
) -> None:
    base, _ = sim
    sent = [hashlib.sha384(f"concurrent {n}".encode()).digest() for n in range(32)]

    async def extend_one(digest: bytes) -> tuple[bytes, bytes]:
        return digest, await _extend(client, base, 3, digest)

    acks = await asyncio.gather(*(extend_one(d) for d in sent))
    order = acknowledged_order(ZERO, list(acks))
    assert sorted(order) == sorted(sent)
    final = sha384_chain(ZERO, order)
    assert (await _registers(client, base))[3] == final
    quote = (await client.get(f"{base}/attest/{REPORT_DATA.hex()}")).content
    assert parse_quote(quote).body.rtmr3 == final


async def test_a_restarted_sim_is_a_rebooted_td(
    run_sim: Any, client: httpx.AsyncClient, state_dir: Path
) -> None:
    async with run_sim(SimOptions()) as (base, _):
        await _extend(client, base, 2, hashlib.sha384(b"x").digest())
        extended = await _extend(client, base, 3, hashlib.sha384(b"y").digest())
        root = (await client.get(f"{base}/root_ca.pem")).content
    assert extended != ZERO
    async with run_sim(SimOptions()) as (base, _):
        assert await _registers(client, base) == BOOT_RTMRS
        quote = (await client.get(f"{base}/attest/{REPORT_DATA.hex()}")).content
        assert parse_quote(quote).body.rtmr3 == ZERO
        assert (await client.get(f"{base}/root_ca.pem")).content == root


GOOD = {"digest": "ab" * 48}


@pytest.mark.parametrize(
    ("index", "body", "reason"),
    [
        ("0", GOOD, "RTMR0 holds a boot measurement"),
        ("1", GOOD, "RTMR1 holds a boot measurement"),
        ("4", GOOD, "there is no RTMR 4"),
        ("-1", GOOD, "not a number"),
        ("02", GOOD, "not a number"),
        ("rtmr3", GOOD, "not a number"),
        ("99999", GOOD, "not a number"),
        ("3", b"", "body is empty"),
        ("3", b"not json", "not valid JSON"),
        ("3", b'["ab"]', "not a JSON object"),
        ("3", b'{"digest": "aa", "digest": "bb"}', "duplicate key"),
        ("3", {}, "'digest' is missing"),
        ("3", {"digest": 48}, "must be a hex string"),
        ("3", {"digest": "zz" * 48}, "not valid hex"),
        ("3", {"digest": "a" * 95}, "not valid hex"),
        ("3", {"digest": "ab" * 47}, "48 bytes"),
        ("3", {"digest": "ab" * 49}, "48 bytes"),
        ("3", {"digest": " " + "ab" * 48}, "not valid hex"),
        ("3", {"digest": "ab" * 48, "index": 3}, "unexpected field(s) 'index'"),
    ],
)
async def test_extend_refuses_bad_requests_with_json_400_and_leaves_the_registers(
    sim: tuple[str, SimPlatform],
    client: httpx.AsyncClient,
    index: str,
    body: dict[str, object] | bytes,
    reason: str,
) -> None:
    base, _ = sim
    url = f"{base}/rtmr/{index}/extend"
    if isinstance(body, bytes):
        response = await client.post(url, content=body)
    else:
        response = await client.post(url, json=body)
    assert response.status_code == 400
    assert reason in response.json()["error"]
    assert await _registers(client, base) == BOOT_RTMRS


async def test_rtmr_routes_refuse_other_methods_with_json(
    sim: tuple[str, SimPlatform], client: httpx.AsyncClient
) -> None:
    base, _ = sim
    wrong = await client.get(f"{base}/rtmr/3/extend")
    assert wrong.status_code == 405 and wrong.json()["error"]
    wrong = await client.post(f"{base}/rtmr", json=GOOD)
    assert wrong.status_code == 405 and wrong.json()["error"]
