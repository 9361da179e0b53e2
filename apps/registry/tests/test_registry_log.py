"""The registry's Merkle log: the /log routes (checkpoint, key, entries, proofs, bad input), the
leaves byte for byte (docs/API.md, recomputed from GET /instance), `log_index` (cached GETs
too), and at the store: a refused merge appends nothing, an unchanged audited state appends
nothing, two stores on one database append one sequence, and records stored before the log
get their first leaf at open."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
from dataclasses import replace
from datetime import timedelta
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from log_helpers import check_log_invariants, expected_entry, expected_state, stored_log
from pony.orm import db_session
from registry_helpers import Instance, Running
from test_registry_store import T0, make_record

from tdx_merkle import (
    Checkpoint,
    NoteVerifier,
    leaf_hash,
    open_note,
    root_of,
    verify_consistency,
    verify_inclusion,
)
from tdx_registry import (
    DatabaseTarget,
    InstanceRecord,
    PonyRecordStore,
    RegistrationConflict,
)
from tdx_registry.settings import DEFAULT_LOG_ORIGIN


async def checkpoint_of(client: httpx.AsyncClient) -> Checkpoint:
    """GET /log/checkpoint, its note signature verified with GET /log/public-key's key."""
    key = await client.get("/log/public-key")
    assert key.status_code == 200 and key.headers["content-type"].startswith("text/plain")
    note = await client.get("/log/checkpoint")
    assert note.status_code == 200 and note.headers["content-type"].startswith("text/plain")
    verifier = NoteVerifier.from_verifier_key(key.text)
    signed = open_note(note.text, [verifier])
    assert signed.verified_names == (verifier.name,)
    return Checkpoint.parse(signed.text)


async def entries_of(client: httpx.AsyncClient, start: int, end: int) -> list[dict[str, Any]]:
    response = await client.get("/log/entries", params={"start": start, "end": end})
    assert response.status_code == 200, response.text
    entries: list[dict[str, Any]] = response.json()["entries"]
    return entries


async def register(client: httpx.AsyncClient, instance: Instance, *identities: Any) -> None:
    response = await client.post("/register", json=await instance.fresh(client, *identities))
    assert response.status_code == 200, response.text


async def record_of(client: httpx.AsyncClient, instance: Instance) -> dict[str, Any]:
    response = await client.get(f"/instance/{instance.pubkey.hex()}")
    assert response.status_code == 200
    record: dict[str, Any] = response.json()
    return record


async def test_every_accepted_change_is_a_leaf_and_every_proof_verifies(running: Running) -> None:
    instances = [Instance() for _ in range(6)]
    operator, owner = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    async with running() as client:
        empty = await checkpoint_of(client)
        assert (empty.origin, empty.size) == (DEFAULT_LOG_ORIGIN, 0)
        assert empty.root_hash == root_of([])
        await register(client, instances[0], operator)
        first_wire = await record_of(client, instances[0])
        for instance in instances[1:]:
            await register(client, instance)
        await register(client, instances[0], operator, owner)
        wires = [await record_of(client, instance) for instance in instances]
        checkpoint = await checkpoint_of(client)
        entries = await entries_of(client, 0, 1000)
        size = checkpoint.size
        assert size == 7
        inclusion = {
            (i, n): (
                await client.get("/log/proof/inclusion", params={"index": i, "tree_size": n})
            ).json()
            for n in range(1, size + 1)
            for i in range(n)
        }
        consistency = {
            (m, n): (
                await client.get("/log/proof/consistency", params={"first": m, "second": n})
            ).json()
            for n in range(1, size + 1)
            for m in range(1, n + 1)
        }
    assert [e["index"] for e in entries] == list(range(size))
    hashes = [leaf_hash(e["entry"].encode()) for e in entries]
    assert [base64.b64decode(e["leaf_hash"]) for e in entries] == hashes
    assert checkpoint.root_hash == root_of(hashes)
    # The leaves byte for byte: each instance's first leaf, then instance 0's owner.
    assert entries[0]["entry"].encode() == expected_entry(first_wire, ["instance"])
    for i, wire in enumerate(wires[1:], start=1):
        assert wire["log_index"] == i
        assert entries[i]["entry"].encode() == expected_entry(wire, ["instance"])
    assert wires[0]["log_index"] == 6
    before, after = expected_state(first_wire), expected_state(wires[0])
    changes = sorted(k for k in after if after[k] != before[k])
    assert "owner" in changes and "operator" not in changes and "registered_at" not in changes
    assert entries[6]["entry"].encode() == expected_entry(wires[0], changes)
    for (i, n), proof in inclusion.items():
        assert (proof["leaf_index"], proof["tree_size"]) == (i, n)
        path = [base64.b64decode(h) for h in proof["hashes"]]
        verify_inclusion(hashes[i], i, n, path, root_of(hashes[:n]))
    for (m, n), proof in consistency.items():
        assert (proof["first"], proof["second"]) == (m, n)
        path = [base64.b64decode(h) for h in proof["hashes"]]
        verify_consistency(m, n, root_of(hashes[:m]), root_of(hashes[:n]), path)


async def test_entries_end_past_the_size_serves_what_there_is(running: Running) -> None:
    async with running() as client:
        await register(client, Instance())
        await register(client, Instance())
        entries = await entries_of(client, 1, 900)
    assert [e["index"] for e in entries] == [1]


BAD_QUERIES = [
    ("/log/entries", "'start' is required"),
    ("/log/entries?start=0", "'end' is required"),
    ("/log/entries?start=a&end=1", "decimal integer"),
    ("/log/entries?start=-1&end=1", "decimal integer"),
    ("/log/entries?start=%2B0&end=1", "decimal integer"),
    ("/log/entries?start=+0&end=1", "decimal integer"),
    ("/log/entries?start=0x1&end=2", "decimal integer"),
    ("/log/entries?start=1.0&end=2", "decimal integer"),
    ("/log/entries?start=" + "9" * 20 + "&end=1", "decimal integer"),
    ("/log/entries?start=9223372036854775808&end=1", "too large"),
    ("/log/entries?start=0&end=1&start=1", "more than once"),
    ("/log/entries?start=1&end=1", "start must be below end"),
    ("/log/entries?start=2&end=1", "start must be below end"),
    ("/log/entries?start=0&end=1001", "at most 1000"),
    ("/log/entries?start=2&end=3", "not below the log's current size 2"),
    ("/log/proof/inclusion?tree_size=1", "'index' is required"),
    ("/log/proof/inclusion?index=0", "'tree_size' is required"),
    ("/log/proof/inclusion?index=-1&tree_size=1", "decimal integer"),
    ("/log/proof/inclusion?index=%2B1&tree_size=2", "decimal integer"),
    ("/log/proof/inclusion?index=1&tree_size=1", "index must be below tree_size"),
    ("/log/proof/inclusion?index=2&tree_size=1", "index must be below tree_size"),
    ("/log/proof/inclusion?index=0&tree_size=3", "tree_size 3 is past the log's current size 2"),
    ("/log/proof/inclusion?index=0&tree_size=" + "9" * 19, "too large"),
    ("/log/proof/consistency?second=1", "'first' is required"),
    ("/log/proof/consistency?first=1", "'second' is required"),
    ("/log/proof/consistency?first=x&second=1", "decimal integer"),
    ("/log/proof/consistency?first=1&second=-2", "decimal integer"),
    ("/log/proof/consistency?first=2&second=1", "first must not be above second"),
    ("/log/proof/consistency?first=1&second=3", "second 3 is past the log's current size 2"),
]


@pytest.mark.parametrize(("path", "fragment"), BAD_QUERIES, ids=[q[0] for q in BAD_QUERIES])
async def test_bad_log_queries_are_400_with_a_reason(
    running: Running, path: str, fragment: str
) -> None:
    async with running() as client:
        await register(client, Instance())
        await register(client, Instance())
        response = await client.get(path)
    assert response.status_code == 400, response.text
    assert response.headers["content-type"].startswith("application/json")
    assert set(response.json()) == {"error"}
    assert fragment in response.json()["error"]


async def test_log_index_is_in_cached_answers_too(running: Running) -> None:
    instance, other = Instance(), Instance()
    async with running(read_cache_ttl=60) as client:
        await register(client, other)
        await register(client, instance)
        assert (await record_of(client, instance))["log_index"] == 1
        assert (await record_of(client, instance))["log_index"] == 1  # from the cache
        await register(client, instance, Ed25519PrivateKey.generate())
        assert (await record_of(client, instance))["log_index"] == 2


def _merging(record: InstanceRecord) -> Any:
    return lambda old: record if old is None else replace(record, registered_at=old.registered_at)


async def test_refused_merge_appends_nothing(db_target: DatabaseTarget) -> None:
    instance = Instance()
    store = await PonyRecordStore.open(db_target)
    try:
        await store.register(instance.pubkey, _merging(make_record(instance)))
        before = await stored_log(store)

        def refuse(old: InstanceRecord | None) -> InstanceRecord:
            raise RegistrationConflict("refused for the test")

        with pytest.raises(RegistrationConflict):
            await store.register(instance.pubkey, refuse)
        with pytest.raises(RegistrationConflict):
            await store.register(Instance().pubkey, refuse)
        assert await stored_log(store) == before
        assert before.size == 1
    finally:
        await store.close()


async def test_an_unchanged_audited_state_appends_no_leaf(db_target: DatabaseTarget) -> None:
    instance, operator = Instance(), Ed25519PrivateKey.generate()
    record = make_record(instance)
    store = await PonyRecordStore.open(db_target)
    try:
        first = await store.register(instance.pubkey, _merging(record))
        later = T0 + timedelta(hours=1)
        moved = replace(
            record, updated_at=later, verdict=replace(record.verdict, verified_at=later)
        )
        again = await store.register(instance.pubkey, _merging(moved))
        assert (first.log_index, again.log_index) == (0, 0)
        assert (await stored_log(store)).size == 1
        with_operator = await store.register(
            instance.pubkey, _merging(make_record(instance, operator))
        )
        assert with_operator.log_index == 1
        log = await check_log_invariants(store)
        assert json.loads(log.leaves[1][2])["changes"] == ["operator"]
    finally:
        await store.close()


async def test_two_stores_on_one_database_append_one_sequence(db_target: DatabaseTarget) -> None:
    stores = [await PonyRecordStore.open(db_target), await PonyRecordStore.open(db_target)]
    try:
        instances = [Instance() for _ in range(16)]
        operators = [Ed25519PrivateKey.generate() for _ in instances]
        for round_ in range(2):
            await asyncio.gather(
                *(
                    stores[(i + round_) % 2].register(
                        instance.pubkey,
                        _merging(make_record(instance, operators[i] if round_ else None)),
                    )
                    for i, instance in enumerate(instances)
                )
            )
        log = await check_log_invariants(stores[0])
        assert log.size == 32
        assert sorted(pubkey for *_, pubkey in log.leaves) == sorted(
            [i.pubkey.hex() for i in instances] * 2
        )
        assert await stored_log(stores[1]) == log
    finally:
        for store in stores:
            await store.close()


async def test_records_stored_before_the_log_get_their_first_leaf_at_open(
    db_target: DatabaseTarget, caplog: pytest.LogCaptureFixture
) -> None:
    instances = [Instance() for _ in range(7)]
    store = await PonyRecordStore.open(db_target)
    try:
        for instance in instances:
            await store.register(instance.pubkey, _merging(make_record(instance)))

        @db_session  # type: ignore[untyped-decorator]
        def forget_the_log() -> None:  # the state of a database written before the log
            db = store._db
            db.execute("UPDATE instances SET log_index = NULL")
            db.execute("DELETE FROM log_leaves")
            db.execute("DELETE FROM log_nodes")
            db.execute("UPDATE log_head SET size = 0")

        await asyncio.get_running_loop().run_in_executor(store._executor, forget_the_log)
    finally:
        await store.close()
    with caplog.at_level(logging.INFO, logger="tdx_registry.store"):
        store = await PonyRecordStore.open(db_target, backfill_batch=3)
    try:
        log = await check_log_invariants(store)
        assert log.size == 7
        assert all(json.loads(entry)["changes"] == ["instance"] for _, _, entry, _ in log.leaves)
        progress = [r for r in caplog.records if r.getMessage() == "log backfill progress"]
        assert [r.__dict__["appended"] for r in progress] == [3, 6, 7]
        assert await store.backfill_log() == 0
    finally:
        await store.close()
