"""The GET /instance answer cache: TTL, invalidation by this process's writes, bounds, off."""

from __future__ import annotations

import asyncio
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given
from hypothesis import strategies as st
from registry_helpers import Instance, Running

from tdx_registry import ReadCache

KEY, OTHER = b"\x01" * 32, b"\x02" * 32


@dataclass
class Clock:
    now: float = 100.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Loader:
    """Answers `body` and counts its calls; with `gate`, waits for it before answering."""

    body: bytes | None = b'{"v":1}'
    calls: int = 0
    gate: asyncio.Event | None = None
    started: asyncio.Event = field(default_factory=asyncio.Event)

    async def __call__(self) -> bytes | None:
        self.calls += 1
        self.started.set()
        if self.gate is not None:
            await self.gate.wait()
        return self.body


async def test_second_lookup_is_served_from_the_cache() -> None:
    cache, load = ReadCache(ttl=1.0, clock=Clock()), Loader()
    assert await cache.get_or_load(KEY, load) == b'{"v":1}'
    assert await cache.get_or_load(KEY, load) == b'{"v":1}'
    assert cache.get(KEY) == b'{"v":1}'
    assert load.calls == 1


async def test_entry_expires_ttl_after_its_read_began() -> None:
    clock = Clock()
    cache, load = ReadCache(ttl=1.0, clock=clock), Loader(gate=asyncio.Event())
    fill = asyncio.create_task(cache.get_or_load(KEY, load))
    await load.started.wait()
    clock.now += 0.4  # the database read takes 0.4 s
    load.gate.set()  # type: ignore[union-attr]
    await fill
    clock.now += 0.59
    assert cache.get(KEY) == b'{"v":1}'
    clock.now += 0.01  # 1.0 s after the read began
    assert cache.get(KEY) is None
    assert len(cache) == 0 and cache.size_bytes == 0
    load.gate = None
    load.body = b'{"v":2}'
    assert await cache.get_or_load(KEY, load) == b'{"v":2}'
    assert load.calls == 2


async def test_invalidation_drops_the_entry() -> None:
    cache, load = ReadCache(ttl=60.0, clock=Clock()), Loader()
    await cache.get_or_load(KEY, load)
    await cache.get_or_load(OTHER, load)
    cache.invalidate(KEY)
    assert cache.get(KEY) is None
    assert cache.get(OTHER) == b'{"v":1}'
    load.body = b'{"v":2}'
    assert await cache.get_or_load(KEY, load) == b'{"v":2}'


async def test_read_in_flight_during_a_write_is_answered_but_not_cached() -> None:
    """A read that began before this process wrote the instance may return the old state, but
    must not leave it in the cache for later readers."""
    cache, stale = ReadCache(ttl=60.0, clock=Clock()), Loader(gate=asyncio.Event())
    fill = asyncio.create_task(cache.get_or_load(KEY, stale))
    await stale.started.wait()
    cache.invalidate(KEY)
    stale.gate.set()  # type: ignore[union-attr]
    assert await fill == b'{"v":1}'
    assert cache.get(KEY) is None
    fresh = Loader(body=b'{"v":2}')
    assert await cache.get_or_load(KEY, fresh) == b'{"v":2}'
    assert cache.get(KEY) == b'{"v":2}'


async def test_invalidating_another_instance_keeps_a_read_cacheable() -> None:
    cache, load = ReadCache(ttl=60.0, clock=Clock()), Loader(gate=asyncio.Event())
    fill = asyncio.create_task(cache.get_or_load(KEY, load))
    await load.started.wait()
    cache.invalidate(OTHER)
    load.gate.set()  # type: ignore[union-attr]
    await fill
    assert cache.get(KEY) == b'{"v":1}'


async def test_failed_read_is_not_cached_and_leaves_no_trace() -> None:
    cache = ReadCache(ttl=60.0, clock=Clock())

    async def failing() -> bytes | None:
        raise RuntimeError("database down")

    with pytest.raises(RuntimeError):
        await cache.get_or_load(KEY, failing)
    assert cache.get(KEY) is None and len(cache) == 0


async def test_unknown_instance_is_not_cached() -> None:
    cache, load = ReadCache(ttl=60.0, clock=Clock()), Loader(body=None)
    assert await cache.get_or_load(KEY, load) is None
    assert await cache.get_or_load(KEY, load) is None
    assert load.calls == 2
    assert len(cache) == 0


@pytest.mark.parametrize(("ttl", "max_bytes"), [(0.0, 1 << 20), (1.0, 0)])
async def test_zero_ttl_or_zero_size_disables_the_cache(ttl: float, max_bytes: int) -> None:
    cache, load = ReadCache(ttl=ttl, max_bytes=max_bytes, clock=Clock()), Loader()
    assert not cache.enabled
    for _ in range(3):
        assert await cache.get_or_load(KEY, load) == b'{"v":1}'
    assert load.calls == 3
    assert len(cache) == 0 and cache.get(KEY) is None


async def test_least_recently_used_answers_are_evicted_past_the_byte_bound() -> None:
    cache = ReadCache(ttl=60.0, max_bytes=25, clock=Clock())
    keys = [bytes([i]) * 32 for i in range(3)]
    for key in keys:
        await cache.get_or_load(key, Loader(body=b"x" * 10))
    assert len(cache) == 2 and cache.size_bytes == 20
    assert cache.get(keys[0]) is None
    assert cache.get(keys[1]) is not None  # now the most recently used
    await cache.get_or_load(b"\x09" * 32, Loader(body=b"y" * 10))
    assert cache.get(keys[2]) is None
    assert cache.get(keys[1]) is not None


async def test_answers_past_their_ttl_are_dropped_when_another_is_cached() -> None:
    # Found by the soak (bench/soak.py): GETs of many distinct instances filled the 32 MiB
    # bound with answers no lookup could serve any more, a replica's RSS grew 17-31% in 3 min.
    clock = Clock()
    cache = ReadCache(ttl=1.0, max_bytes=1000, clock=clock)
    keys = [bytes([i]) * 32 for i in range(3)]
    for key in keys:
        await cache.get_or_load(key, Loader(body=b"x" * 10))
    clock.now += 0.5
    assert cache.get(keys[0]) is not None  # used again: now the most recently used
    clock.now += 0.5  # all three are 1.0 s old: past the TTL
    await cache.get_or_load(b"\x09" * 32, Loader(body=b"y" * 10))
    assert len(cache) == 1 and cache.size_bytes == 10
    assert cache.get(b"\x09" * 32) == b"y" * 10


async def test_an_answer_within_its_ttl_is_kept_when_another_is_cached() -> None:
    clock = Clock()
    cache = ReadCache(ttl=1.0, max_bytes=1000, clock=clock)
    await cache.get_or_load(KEY, Loader(body=b"x" * 10))
    clock.now += 0.99
    await cache.get_or_load(OTHER, Loader(body=b"y" * 10))
    assert len(cache) == 2 and cache.get(KEY) == b"x" * 10


async def test_answer_larger_than_the_bound_is_not_cached() -> None:
    cache, load = ReadCache(ttl=60.0, max_bytes=8, clock=Clock()), Loader(body=b"z" * 9)
    assert await cache.get_or_load(KEY, load) == b"z" * 9
    assert len(cache) == 0 and cache.size_bytes == 0


@given(
    st.lists(
        st.tuples(
            st.sampled_from(["load", "invalidate", "tick"]),
            st.integers(0, 7),
            st.integers(0, 40),
        ),
        max_size=60,
    )
)
def test_size_never_exceeds_the_bound_and_answers_are_never_older_than_the_ttl(
    ops: list[tuple[str, int, int]],
) -> None:
    clock = Clock()
    cache = ReadCache(ttl=1.0, max_bytes=64, clock=clock)
    loaded_at: dict[bytes, float] = {}

    async def run() -> None:
        for op, index, value in ops:
            key = bytes([index]) * 32
            if op == "load":
                body = await cache.get_or_load(key, Loader(body=bytes(value)))
                if body is not None and cache.get(key) is not None and key not in loaded_at:
                    loaded_at[key] = clock.now
            elif op == "invalidate":
                cache.invalidate(key)
                loaded_at.pop(key, None)
            else:
                clock.now += value / 40
            for k in list(loaded_at):
                if cache.get(k) is None:
                    del loaded_at[k]
                else:
                    assert clock.now - loaded_at[k] < 1.0
            assert 0 <= cache.size_bytes <= 64

    asyncio.run(run())


# ---- through the app ----------------------------------------------------------------------


def _set_tcb_status_behind_the_registry(db: Path, instance: Instance, status: str) -> None:
    """What another replica sharing the database would do: write without this process knowing."""
    with sqlite3.connect(db) as conn:
        conn.execute(
            "UPDATE instances SET tcb_status = ? WHERE pubkey = ?", (status, instance.pubkey.hex())
        )


async def test_registration_answered_200_is_seen_by_the_next_get(running: Running) -> None:
    instance = Instance()
    operator, owner = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    async with running(read_cache_ttl=60.0) as client:
        assert (
            await client.post("/register", json=await instance.fresh(client, operator))
        ).status_code == 200
        before = (await client.get(f"/instance/{instance.pubkey.hex()}")).json()
        with_owner = await instance.fresh(client, operator, owner)
        assert (await client.post("/register", json=with_owner)).status_code == 200
        after = (await client.get(f"/instance/{instance.pubkey.hex()}")).json()
    assert before["owner"] is None
    assert after["owner"] == with_owner["owner"]


async def test_refused_registration_leaves_the_cached_answer_correct(running: Running) -> None:
    instance, operator = Instance(), Ed25519PrivateKey.generate()
    async with running(read_cache_ttl=60.0) as client:
        await client.post("/register", json=await instance.fresh(client, operator))
        first = await client.get(f"/instance/{instance.pubkey.hex()}")
        refused = await client.post(
            "/register", json=await instance.fresh(client, Ed25519PrivateKey.generate())
        )
        second = await client.get(f"/instance/{instance.pubkey.hex()}")
    assert refused.status_code == 403
    assert second.json() == first.json()


async def test_write_by_another_process_is_seen_once_the_ttl_has_passed(
    running: Running, tmp_path: Path
) -> None:
    instance = Instance()
    url = f"/instance/{instance.pubkey.hex()}"
    async with running(read_cache_ttl=0.5) as client:
        await client.post(
            "/register", json=await instance.fresh(client, Ed25519PrivateKey.generate())
        )
        assert (await client.get(url)).json()["verification"]["tcb_status"] == "UpToDate"
        _set_tcb_status_behind_the_registry(tmp_path / "registry.db", instance, "OutOfDate")
        cached = (await client.get(url)).json()["verification"]["tcb_status"]
        await asyncio.sleep(0.6)
        fresh = (await client.get(url)).json()["verification"]["tcb_status"]
    assert cached == "UpToDate"
    assert fresh == "OutOfDate"


async def test_zero_ttl_reads_the_database_every_time(running: Running, tmp_path: Path) -> None:
    instance = Instance()
    url = f"/instance/{instance.pubkey.hex()}"
    async with running(read_cache_ttl=0.0) as client:
        await client.post(
            "/register", json=await instance.fresh(client, Ed25519PrivateKey.generate())
        )
        assert (await client.get(url)).json()["verification"]["tcb_status"] == "UpToDate"
        _set_tcb_status_behind_the_registry(tmp_path / "registry.db", instance, "OutOfDate")
        assert (await client.get(url)).json()["verification"]["tcb_status"] == "OutOfDate"


async def test_cached_answer_is_the_same_json_as_a_fresh_one(running: Running) -> None:
    instance = Instance()
    url = f"/instance/{instance.pubkey.hex()}"
    async with running(read_cache_ttl=60.0) as client:
        await client.post(
            "/register", json=await instance.fresh(client, Ed25519PrivateKey.generate())
        )
        fresh, cached = await client.get(url), await client.get(url)
    assert cached.content == fresh.content
    assert cached.headers["content-type"] == fresh.headers["content-type"] == "application/json"
