"""`tdxctl registry audit` against a fake registry on loopback: a tdx_merkle-backed in-memory
log of leaves built per the leaf format (docs/API.md), served with the /log routes and
GET /instance, that each test tampers with one way. Every failure exits 1 with one line on
stderr naming it, no traceback, and leaves the state file as it was."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import itertools
import json
import os
import stat
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import rfc8785
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sanic import Request, Sanic
from sanic.response import HTTPResponse
from sanic.response import json as json_response

from tdx_merkle import (
    Checkpoint,
    NodeId,
    NoteSigner,
    append_siblings,
    appended_nodes,
    consistency_proof,
    inclusion_proof,
    leaf_hash,
    root_hash,
    root_of,
    sign_note,
)
from tdx_service_kit.testing import free_port, serve
from tdxctl import AuditState, write_audit_state
from tdxctl._audit import _path_sides
from tdxctl.cli import main

_names = itertools.count()
ORIGIN = "registry.example/log"
INSTANCE = bytes(range(32))
OTHER = bytes(range(1, 33))


# ---- the leaf format, written out again here (not imported from tdxctl) ----------------------


def leaf_record(wire: dict[str, Any]) -> dict[str, Any]:
    """audited_state(wire) as docs/API.md's leaf format defines it."""
    return {
        "ppid": wire["ppid"],
        "attestation_quote_sha256": hashlib.sha256(
            base64.b64decode(wire["attestation_quote"])
        ).hexdigest(),
        "operator": wire["operator"],
        "owner": wire["owner"],
        "verification": {
            k: v for k, v in wire["verification"].items() if k not in ("verified_at", "history")
        },
        "rtmr3": wire["rtmr3"],
        "event_log_sha256": None
        if wire["event_log"] is None
        else hashlib.sha256(wire["event_log"].encode()).hexdigest(),
        "ssh_host_key": wire["ssh_host_key"],
        "binding_version": wire["binding_version"],
        "challenge": wire["challenge"],
        "proof_of_possession": wire["proof_of_possession"],
        "registered_at": wire["registered_at"],
    }


def leaf_text(wire: dict[str, Any], changes: list[str]) -> str:
    return rfc8785.dumps(
        {
            "v": 1,
            "instance_pubkey": wire["instance_pubkey"],
            "time": wire["updated_at"],
            "changes": sorted(changes),
            "record": leaf_record(wire),
        }
    ).decode("utf-8")


def wire_record(instance: bytes, *, n: int = 0) -> dict[str, Any]:
    """A record as GET /instance/{pubkey} gives it (record_json's fields), without log_index."""
    identity = {
        "pubkey": hashlib.sha256(b"op%d" % n).hexdigest(),
        "instance_signature": "11" * 64,
        "identity_signature": "22" * 64,
    }
    return {
        "instance_pubkey": instance.hex(),
        "ppid": hashlib.sha256(instance).hexdigest()[:32],
        "attestation_quote": base64.b64encode(b"quote %d of " % n + instance).decode(),
        "operator": identity,
        "owner": None,
        "verification": {
            "tcb_status": "UpToDate",
            "advisory_ids": [],
            "mr_td": "ab" * 48,
            "verified_at": f"2026-12-02T10:00:{n:02d}+00:00",
            "skipped": False,
        },
        "registered_at": "2026-12-02T10:00:00+00:00",
        "updated_at": f"2026-12-02T10:00:{n:02d}+00:00",
        "rtmr3": "cd" * 48,
        "event_log": json.dumps({"events": [n]}),
        "workload": None,
        "ssh_host_key": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIA",
        "event_log_history_count": 0,
        "binding_version": 2,
        "challenge": "ee" * 32,
        "proof_of_possession": "ff" * 64,
    }


# ---- the fake registry -------------------------------------------------------------------------


Raw = tuple[int, bytes]


@dataclass
class FakeLog:
    """An in-memory log (tdx_merkle's plans over a dict of stored nodes) and the records, with
    the knobs the tests turn to make the registry lie."""

    signer: NoteSigner = field(
        default_factory=lambda: NoteSigner(ORIGIN, Ed25519PrivateKey.generate())
    )
    entries: list[str] = field(default_factory=list)
    hashes: list[bytes] = field(default_factory=list)
    nodes: dict[NodeId, bytes] = field(default_factory=dict)
    records: dict[str, dict[str, Any]] = field(default_factory=dict)
    url: str = ""
    # tampering
    served_key: str | None = None
    checkpoint_text: Callable[[str], str] | None = None
    served_size: int | None = None
    flip_inclusion: bool = False
    inclusion_of: int | None = None
    lying_hash: dict[int, bytes] = field(default_factory=dict)
    entry_text: dict[int, str] = field(default_factory=dict)
    hidden: set[int] = field(default_factory=set)
    raw: dict[str, Raw] = field(default_factory=dict)
    entries_asked: list[tuple[int, int]] = field(default_factory=list)

    def read(self, ids: Sequence[NodeId]) -> dict[NodeId, bytes]:
        return {i: self.nodes[i] for i in ids}

    def append(self, text: str) -> int:
        index = len(self.entries)
        digest = leaf_hash(text.encode("utf-8"))
        siblings = [self.nodes[i] for i in append_siblings(index)]
        for node, value in appended_nodes(index, digest, siblings):
            self.nodes[node] = value
        self.entries.append(text)
        self.hashes.append(digest)
        return index

    def put(self, wire: dict[str, Any], changes: list[str]) -> int:
        """Store `wire` and append its leaf; its log_index is that leaf."""
        index = self.append(leaf_text(wire, changes))
        self.records[wire["instance_pubkey"]] = {**wire, "log_index": index}
        return index

    def rebuild(self, entries: list[str]) -> None:
        """The log replaced by `entries` (history rewritten): nodes computed afresh."""
        self.entries, self.hashes, self.nodes = [], [], {}
        for text in entries:
            self.append(text)

    @property
    def size(self) -> int:
        return len(self.entries) if self.served_size is None else self.served_size

    def note(self) -> str:
        checkpoint = Checkpoint(ORIGIN, self.size, root_hash(self.size, self.read))
        text = sign_note(checkpoint.to_text(), [self.signer])
        return text if self.checkpoint_text is None else self.checkpoint_text(text)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def fake_app(log: FakeLog) -> Sanic[Any, Any]:
    app: Sanic[Any, Any] = Sanic(f"fake-log-{next(_names)}")

    def arg(request: Request, name: str) -> int:
        return int(request.args[name][0])

    def raw(name: str, answer: Callable[[], HTTPResponse]) -> HTTPResponse:
        """The tampered answer of route `name` if a test set one, else `answer()`."""
        if name not in log.raw:
            return answer()
        status, body = log.raw[name]
        return HTTPResponse(body, status=status, content_type="application/octet-stream")

    @app.get("/log/public-key")
    async def public_key(request: Request) -> HTTPResponse:
        key = log.signer.verifier_key() if log.served_key is None else log.served_key
        return raw("public-key", lambda: HTTPResponse(key + "\n", content_type="text/plain"))

    @app.get("/log/checkpoint")
    async def checkpoint(request: Request) -> HTTPResponse:
        return raw("checkpoint", lambda: HTTPResponse(log.note(), content_type="text/plain"))

    @app.get("/log/entries")
    async def entries(request: Request) -> HTTPResponse:
        start, end = arg(request, "start"), min(arg(request, "end"), log.size)
        log.entries_asked.append((start, end))
        return raw("entries", lambda: json_response({"entries": served_entries(start, end)}))

    def served_entries(start: int, end: int) -> list[dict[str, Any]]:
        served = [
            {
                "index": i,
                "leaf_hash": _b64(log.lying_hash.get(i, log.hashes[i])),
                "entry": log.entry_text.get(i, log.entries[i]),
            }
            for i in range(start, end)
        ]
        if log.hidden:
            served = [e for e in served if e["index"] not in log.hidden]
            for position, item in enumerate(served):
                item["index"] = start + position
        return served

    @app.get("/log/proof/inclusion")
    async def inclusion(request: Request) -> HTTPResponse:
        return raw("inclusion", lambda: inclusion_answer(request))

    def inclusion_answer(request: Request) -> HTTPResponse:
        index, size = arg(request, "index"), arg(request, "tree_size")
        proven = index if log.inclusion_of is None else log.inclusion_of
        hashes = inclusion_proof(proven, size, log.read)
        if log.flip_inclusion:
            hashes[-1] = bytes([hashes[-1][0] ^ 1]) + hashes[-1][1:]
        body = {"leaf_index": index, "tree_size": size, "hashes": [_b64(h) for h in hashes]}
        return json_response(body)

    @app.get("/log/proof/consistency")
    async def consistency(request: Request) -> HTTPResponse:
        first, second = arg(request, "first"), arg(request, "second")

        def answer() -> HTTPResponse:
            hashes = consistency_proof(first, second, log.read)
            return json_response(
                {"first": first, "second": second, "hashes": [_b64(h) for h in hashes]}
            )

        return raw("consistency", answer)

    @app.get("/instance/<pubkey:str>")
    async def instance(request: Request, pubkey: str) -> HTTPResponse:
        if pubkey not in log.records:
            return json_response({"error": "no such instance"}, status=404)
        return raw("instance", lambda: json_response(log.records[pubkey]))

    return app


@pytest.fixture
async def log() -> AsyncIterator[FakeLog]:
    """A log of five leaves: another instance registered (0), the instance registered (1), the
    instance's owner added (2: its log_index), two changes of the other instance (3, 4)."""
    state = FakeLog()
    other, mine = wire_record(OTHER), wire_record(INSTANCE, n=1)
    state.put(other, ["instance"])
    state.put(mine, ["instance"])
    owner = {"pubkey": "99" * 32, "instance_signature": "33" * 64, "identity_signature": "44" * 64}
    state.put({**mine, "owner": owner, "updated_at": "2026-12-02T10:01:00+00:00"}, ["owner"])
    state.put({**other, "ssh_host_key": None}, ["ssh_host_key"])
    state.put({**other, "ssh_host_key": "ssh-ed25519 AAAA"}, ["ssh_host_key"])
    assert state.records[INSTANCE.hex()]["log_index"] == 2
    async with serve(fake_app(state)) as url:
        state.url = url
        yield state


async def run(*argv: str) -> int:
    """`tdxctl argv...` in a worker thread (it runs its own event loop)."""
    return await asyncio.to_thread(main, list(argv), {})


def audit_argv(log: FakeLog, state: Path, *extra: str) -> list[str]:
    return [
        "registry",
        "audit",
        "--registry",
        log.url,
        "--instance",
        INSTANCE.hex(),
        "--state",
        str(state),
        *extra,
    ]


def one_json(out: str) -> dict[str, Any]:
    lines = out.splitlines()
    assert len(lines) == 1, out
    parsed: dict[str, Any] = json.loads(lines[0])
    return parsed


async def passes(log: FakeLog, state: Path, capsys: pytest.CaptureFixture[str], *extra: str) -> Any:
    status = await run(*audit_argv(log, state, *extra))
    out, err = capsys.readouterr()
    assert status == 0, err
    return one_json(out), err


def snapshot(path: Path) -> tuple[bytes, int, list[str]] | None:
    """The state file's bytes and mtime, and the temporary files beside it (None: no file)."""
    temps = sorted(p.name for p in path.parent.glob(f".{path.name}.*"))
    if not path.exists():
        assert temps == []
        return None
    return path.read_bytes(), path.stat().st_mtime_ns, temps


def saved(path: Path) -> dict[str, Any]:
    value: dict[str, Any] = json.loads(path.read_text())
    return value


def mode_of(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def write_state(path: Path, text: str, mode: int = 0o600) -> None:
    path.write_text(text)
    path.chmod(mode)


async def fails(log: FakeLog, state: Path, capsys: pytest.CaptureFixture[str], *extra: str) -> str:
    """Run the audit expecting exit 1: one line on stderr, no traceback, the state file as it
    was (same bytes, same mtime, no temporary file left)."""
    before = snapshot(state)
    status = await run(*audit_argv(log, state, *extra))
    out, err = capsys.readouterr()
    assert status == 1, (out, err)
    assert out == ""
    assert len(err.splitlines()) == 1, err
    assert "Traceback" not in err
    assert snapshot(state) == before
    return err


@pytest.fixture
def state(tmp_path: Path) -> Path:
    return tmp_path / "audit.json"


# ---- the happy path ---------------------------------------------------------------------------


async def test_first_audit_trusts_on_first_use_and_the_second_checks_consistency(
    log: FakeLog, state: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    summary, err = await passes(log, state, capsys)
    root = _b64(root_hash(5, log.read))
    assert summary == {
        "instance": INSTANCE.hex(),
        "log_index": 2,
        "tree_size": 5,
        "root": root,
        "consistent_with_previous": None,
        "trust_on_first_use": True,
        "origin": ORIGIN,
    }
    assert "warning" in err and "first use" in err and log.signer.verifier_key() in err
    remembered = saved(state)
    assert remembered["verifier_key"] == log.signer.verifier_key()
    assert remembered["origin"] == ORIGIN
    assert remembered["checkpoint"]["size"] == 5 and remembered["checkpoint"]["root"] == root
    assert remembered["checkpoint"]["note"] == log.note()
    assert mode_of(state) == 0o600
    assert (3, 5) in log.entries_asked, "the later leaves were scanned"

    # the log grows (another instance's leaves): consistent with the remembered checkpoint
    log.put({**wire_record(OTHER), "owner": {"pubkey": "77" * 32}}, ["owner"])
    log.put({**wire_record(OTHER), "rtmr3": "00" * 48}, ["rtmr3"])
    summary, err = await passes(log, state, capsys)
    assert summary["consistent_with_previous"] is True
    assert summary["trust_on_first_use"] is False
    assert summary["tree_size"] == 7 and summary["log_index"] == 2
    assert err == ""
    assert saved(state)["checkpoint"]["size"] == 7

    # the same size again: the roots are compared
    summary, _ = await passes(log, state, capsys)
    assert summary["consistent_with_previous"] is True


async def test_a_pinned_key_is_used_and_not_trusted_on_first_use(
    log: FakeLog, state: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    key_file = tmp_path / "log.vkey"
    key_file.write_text(log.signer.verifier_key() + "\n")
    summary, err = await passes(log, state, capsys, "--log-key", f"@{key_file}")
    assert summary["trust_on_first_use"] is False and err == ""


async def test_a_long_scan_of_later_leaves_goes_by_pages_with_progress(
    log: FakeLog, state: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    other = wire_record(OTHER)
    for n in range(12_000):
        log.append(leaf_text({**other, "updated_at": str(n)}, ["ssh_host_key"]))
    summary, err = await passes(log, state, capsys)
    assert summary["tree_size"] == 12_005
    assert [b - a for a, b in log.entries_asked[1:]] == [1000] * 12 + [2]
    assert "scanned 10000 of 12002 later log leaves" in err
    assert "scanned 12002 of 12002 later log leaves" in err


# ---- the log key and the checkpoint -------------------------------------------------------------


async def test_a_registry_serving_another_key_than_the_pinned_one_fails(
    log: FakeLog, state: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pinned = NoteSigner(ORIGIN, Ed25519PrivateKey.generate()).verifier_key()
    err = await fails(log, state, capsys, "--log-key", pinned)
    assert "(log_key)" in err and "not the trusted" in err


async def test_a_pinned_key_other_than_the_remembered_one_fails(
    log: FakeLog, state: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    await passes(log, state, capsys)
    other = NoteSigner(ORIGIN, Ed25519PrivateKey.generate()).verifier_key()
    err = await fails(log, state, capsys, "--log-key", other)
    assert "(log_key)" in err and "not the key remembered in the state file" in err


async def test_json_failures_name_the_check(
    log: FakeLog, state: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log.flip_inclusion = True
    assert await run(*audit_argv(log, state, "--json")) == 1
    out, err = capsys.readouterr()
    failure = one_json(out)
    assert failure["check"] == "inclusion" and "leaf 2" in failure["error"]
    assert len(err.splitlines()) == 1
    assert snapshot(state) is None


async def test_a_registry_changing_its_key_after_the_first_audit_fails(
    log: FakeLog, state: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    await passes(log, state, capsys)
    log.signer = NoteSigner(ORIGIN, Ed25519PrivateKey.generate())
    err = await fails(log, state, capsys)
    assert "(log_key)" in err


async def test_a_checkpoint_with_a_bad_signature_fails(
    log: FakeLog, state: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    def forged(note: str) -> str:
        body, _, signature = note.rpartition("\n\n")
        name, text = signature.split(" ", 2)[1:]
        raw_sig = bytearray(base64.b64decode(text))
        raw_sig[-1] ^= 1
        return f"{body}\n\n— {name} {_b64(bytes(raw_sig))}\n"

    log.checkpoint_text = forged
    err = await fails(log, state, capsys)
    assert "(checkpoint)" in err and "does not open with the log key" in err


async def test_a_checkpoint_of_another_origin_fails(
    log: FakeLog, state: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log.checkpoint_text = lambda _: sign_note(
        Checkpoint("elsewhere.example/log", log.size, root_hash(log.size, log.read)).to_text(),
        [log.signer],
    )
    err = await fails(log, state, capsys)
    assert "(checkpoint)" in err and "origin 'elsewhere.example/log'" in err


async def test_a_signed_checkpoint_with_a_huge_size_fails(
    log: FakeLog, state: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The registry signs what it likes with its own key: a size of 5000 digits is a named
    refusal, not a traceback."""
    root = _b64(root_hash(log.size, log.read))
    log.checkpoint_text = lambda _: sign_note(f"{ORIGIN}\n{'9' * 5000}\n{root}\n", [log.signer])
    err = await fails(log, state, capsys)
    assert "(checkpoint)" in err and "the checkpoint is malformed" in err


# ---- the proofs --------------------------------------------------------------------------------


async def test_an_inclusion_proof_with_one_hash_flipped_fails(
    log: FakeLog, state: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log.flip_inclusion = True
    err = await fails(log, state, capsys)
    assert "(inclusion)" in err and "leaf 2" in err


async def test_the_inclusion_proof_of_another_index_fails(
    log: FakeLog, state: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log.inclusion_of = 3
    err = await fails(log, state, capsys)
    assert "(inclusion)" in err


async def test_history_rewritten_at_an_old_index_fails_consistency(
    log: FakeLog, state: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    await passes(log, state, capsys)
    rewritten = list(log.entries)
    rewritten[1] = leaf_text({**wire_record(OTHER), "owner": {"pubkey": "66" * 32}}, ["instance"])
    log.rebuild(rewritten)
    log.append(leaf_text(wire_record(OTHER, n=9), ["rtmr3"]))
    err = await fails(log, state, capsys)
    assert "(consistency)" in err and "not an extension of the remembered one of 5" in err


async def test_history_rewritten_at_the_same_size_fails(
    log: FakeLog, state: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    await passes(log, state, capsys)
    rewritten = list(log.entries)
    rewritten[4] = leaf_text(wire_record(OTHER, n=8), ["rtmr3"])
    log.rebuild(rewritten)
    err = await fails(log, state, capsys)
    assert "(consistency)" in err and "history was rewritten" in err


async def test_a_log_that_shrank_fails(
    log: FakeLog, state: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    await passes(log, state, capsys)
    log.served_size = 4
    err = await fails(log, state, capsys)
    assert "(consistency)" in err and "the log shrank from 5 leaves (remembered) to 4" in err


# ---- the record's leaf, and later leaves -------------------------------------------------------


async def test_an_entry_whose_leaf_hash_lies_fails(
    log: FakeLog, state: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log.lying_hash[2] = log.hashes[3]
    err = await fails(log, state, capsys)
    assert "(log_entry)" in err and "leaf_hash of log leaf 2 is not the hash of its entry" in err


async def test_a_non_canonical_entry_fails(
    log: FakeLog, state: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spaced = json.dumps(json.loads(log.entries[2]), indent=1)
    log.rebuild([*log.entries[:2], spaced, *log.entries[3:]])
    err = await fails(log, state, capsys)
    assert "(log_entry)" in err and "log leaf 2 is not canonical JSON" in err


@pytest.mark.parametrize("version", [True, 2, "1"])
async def test_a_leaf_of_another_version_fails(
    log: FakeLog, state: Path, capsys: pytest.CaptureFixture[str], version: Any
) -> None:
    leaf = {**json.loads(log.entries[2]), "v": version}
    log.rebuild([*log.entries[:2], rfc8785.dumps(leaf).decode(), *log.entries[3:]])
    err = await fails(log, state, capsys)
    assert "(log_entry)" in err and "log leaf 2 is not a version 1 leaf" in err


async def test_an_entry_of_another_instance_at_the_log_index_fails(
    log: FakeLog, state: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log.records[INSTANCE.hex()]["log_index"] = 0
    err = await fails(log, state, capsys)
    assert "(log_entry)" in err and "names another instance" in err


@pytest.mark.parametrize(
    ("field_name", "value"),
    [
        ("owner", {"pubkey": "55" * 32, "instance_signature": "", "identity_signature": ""}),
        ("attestation_quote_sha256", _b64(b"another quote")),
        ("verification", {"tcb_status": "OutOfDate"}),
        ("event_log_sha256", "another log"),
    ],
)
async def test_a_record_edited_behind_the_logs_back_fails_naming_the_field(
    log: FakeLog,
    state: Path,
    capsys: pytest.CaptureFixture[str],
    field_name: str,
    value: Any,
) -> None:
    record = log.records[INSTANCE.hex()]
    if field_name == "attestation_quote_sha256":
        record["attestation_quote"] = value
    elif field_name == "event_log_sha256":
        record["event_log"] = value
    elif field_name == "verification":
        record["verification"] = {**record["verification"], **value}
    else:
        record[field_name] = value
    err = await fails(log, state, capsys)
    assert f"the record's {field_name} differs from its log leaf 2" in err
    assert "(log_record)" in err


async def test_moving_only_verified_at_is_not_a_difference(
    log: FakeLog, state: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    record = log.records[INSTANCE.hex()]
    record["verification"] = {**record["verification"], "verified_at": "2027-01-01T00:00:00Z"}
    record["updated_at"] = "2027-01-01T00:00:00Z"
    await passes(log, state, capsys)


async def test_a_later_hidden_leaf_of_the_instance_fails_naming_it(
    log: FakeLog, state: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    stale = dict(log.records[INSTANCE.hex()])
    log.put({**stale, "owner": None, "updated_at": "T3"}, ["owner"])  # leaf 5: the owner gone
    log.records[INSTANCE.hex()] = stale  # ...but the registry still shows the old record
    err = await fails(log, state, capsys)
    assert "(log_record)" in err and "log leaf 5 is a later change of the instance" in err


async def test_a_later_leaf_left_out_of_the_entries_fails(
    log: FakeLog, state: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    stale = dict(log.records[INSTANCE.hex()])
    log.put({**stale, "owner": None, "updated_at": "T3"}, ["owner"])  # leaf 5
    log.put(wire_record(OTHER, n=7), ["rtmr3"])  # leaf 6
    log.records[INSTANCE.hex()] = stale
    log.hidden = {5}  # and the registry leaves leaf 5 out of /log/entries
    err = await fails(log, state, capsys)
    assert "(inclusion)" in err and "leaves 4..6 as served are not the tree's" in err


async def test_a_record_changed_just_after_the_checkpoint_was_read_passes(
    log: FakeLog, state: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A live registry: the instance changes (a new leaf, the record's log_index past the
    checkpoint just served) between the audit's two reads. A newer checkpoint is read, not a
    false alarm raised."""
    served: list[int] = []

    def then_change(note: str) -> str:
        served.append(log.size)
        if len(served) == 1:
            record = dict(log.records[INSTANCE.hex()])
            log.put({**record, "owner": None, "updated_at": "T9"}, ["owner"])
        return note

    log.checkpoint_text = then_change
    summary, _ = await passes(log, state, capsys)
    assert served == [5, 6]
    assert (summary["log_index"], summary["tree_size"]) == (5, 6)
    assert saved(state)["checkpoint"]["size"] == 6


async def test_a_log_index_past_the_checkpoint_fails(
    log: FakeLog, state: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log.served_size = 2
    err = await fails(log, state, capsys)
    assert "(log_record)" in err and "log_index 2 is not in the checkpoint's tree of 2" in err


# ---- the state file ----------------------------------------------------------------------------


async def test_the_state_file_is_untouched_by_a_failure(
    log: FakeLog, state: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    await passes(log, state, capsys)
    before = snapshot(state)
    log.put(wire_record(OTHER, n=3), ["rtmr3"])
    log.flip_inclusion = True
    await fails(log, state, capsys)  # asserts bytes, mtime, no temporary file
    assert snapshot(state) == before
    log.flip_inclusion = False
    summary, _ = await passes(log, state, capsys)
    assert summary["tree_size"] == 6 and summary["consistent_with_previous"] is True


async def test_a_corrupt_or_loose_state_file_fails(
    log: FakeLog, state: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_state(state, "{not json")
    assert "is not JSON" in await fails(log, state, capsys)
    fresh = state.with_name("fresh.json")
    await passes(log, fresh, capsys)
    good = saved(fresh)
    good["checkpoint"]["size"] = 4
    write_state(state, json.dumps(good))
    assert "does not say its origin, size and root" in await fails(log, state, capsys)
    good["checkpoint"]["size"] = 5
    write_state(state, json.dumps(good), 0o666)
    assert "writable by others" in await fails(log, state, capsys)


async def test_a_state_file_of_another_user_fails(
    log: FakeLog, state: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its owner may rewrite it (the remembered log key and checkpoint) whatever its mode."""
    await passes(log, state, capsys)
    mine = os.geteuid()
    monkeypatch.setattr(os, "geteuid", lambda: mine + 1)
    err = await fails(log, state, capsys)
    assert f"belongs to uid {mine}, not to this user" in err


async def test_usage_errors_exit_2(
    log: FakeLog, state: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad_instance = ["registry", "audit", "--registry", log.url, "--instance", "zz"]
    assert await run(*bad_instance, "--state", str(state)) == 2
    assert await run(*audit_argv(log, state, "--log-key", "not a key")) == 2
    assert await run(*audit_argv(log, state, "--log-key", f"@{state}.missing")) == 2
    assert await run("registry", "audit", "--instance", INSTANCE.hex(), "--state", "x") == 2
    _, err = capsys.readouterr()
    assert "Traceback" not in err
    assert snapshot(state) is None


# ---- garbage answers ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("route", "answer", "expected"),
    [
        ("public-key", (200, b"not a key"), "not a note verifier key"),
        ("public-key", (500, b""), "answered 500"),
        ("checkpoint", (200, b"\xff\xfe"), "not UTF-8"),
        ("checkpoint", (200, b"just text\n"), "(checkpoint)"),
        ("instance", (200, b"<html>"), "not JSON"),
        ("instance", (200, b"[1, 2]"), "not a JSON object"),
        ("instance", (200, b"[" * 100_000), "not JSON"),
        ("instance", (503, b'{"error": "down\\u001b[31m"}'), "answered 503: down\\x1b[31m"),
        ("entries", (200, b'{"entries": "x"}'), "no 'entries' list"),
        ("entries", (200, b'{"entries": [{"index": "2"}]}'), "integer 'index'"),
        ("entries", (200, b'{"entries": []}'), "has 0 entries"),
        ("entries", (200, b"null"), "no 'entries' list"),
        ("entries", (200, b"{" * 17 * 1024 * 1024), "larger than 16 MiB"),
        ("inclusion", (200, b'{"hashes": [1]}'), "not a base64 string"),
        ("inclusion", (200, b'{"hashes": ["AAAA"], "leaf_index": 2, "tree_size": 5}'), "32 bytes"),
        ("inclusion", (200, b'{"hashes": [], "leaf_index": true, "tree_size": 5}'), "leaf_index"),
        ("inclusion", (500, b"oops"), "answered 500: (no error reason)"),
    ],
)
async def test_garbage_answers_are_named_failures(
    log: FakeLog,
    state: Path,
    capsys: pytest.CaptureFixture[str],
    route: str,
    answer: Raw,
    expected: str,
) -> None:
    log.raw[route] = answer
    err = await fails(log, state, capsys)
    assert expected in err


async def test_garbage_consistency_proof_is_a_named_failure(
    log: FakeLog, state: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    await passes(log, state, capsys)
    log.put(wire_record(OTHER, n=4), ["rtmr3"])
    log.raw["consistency"] = (200, b'{"first": 5, "second": 6, "hashes": {}}')
    assert "'hashes'" in await fails(log, state, capsys)
    log.raw["consistency"] = (200, b'{"first": 4, "second": 6, "hashes": []}')
    assert "(consistency)" in await fails(log, state, capsys)


async def test_an_unreachable_registry_is_a_named_failure(
    state: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log = FakeLog(url=f"http://127.0.0.1:{free_port()}")  # nothing listens there
    err = await fails(log, state, capsys)
    assert "cannot reach the registry" in err


def test_the_state_is_written_atomically_with_mode_0600(tmp_path: Path) -> None:
    path = tmp_path / "s.json"
    write_state(path, "old", 0o644)
    signer = NoteSigner(ORIGIN, Ed25519PrivateKey.generate())
    root = hashlib.sha256(b"").digest()
    note = sign_note(Checkpoint(ORIGIN, 0, root).to_text(), [signer])
    write_audit_state(path, AuditState(signer.verifier_key(), ORIGIN, 0, root, note))
    assert mode_of(path) == 0o600
    assert json.loads(path.read_text())["checkpoint"]["size"] == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.json"]


def test_the_audit_path_sides_are_the_proofs_subtrees() -> None:
    """For every leaf of every tree up to 40 leaves, `_path_sides` names the subtree of each
    proof hash (its MTH is that hash), on the side it is on, tiling the tree around the leaf:
    what the later-leaf check relies on."""
    fake = FakeLog()
    for size in range(1, 41):
        fake.append(f"leaf {size - 1}")
        for index in range(size):
            sides = _path_sides(index, size)
            proof = inclusion_proof(index, size, fake.read)
            assert len(sides) == len(proof)
            covered = {index}
            for (right, lo, hi), given in zip(sides, proof, strict=True):
                assert root_of(fake.hashes[lo:hi]) == given
                assert (lo > index) is right and (hi <= index) is not right
                assert covered.isdisjoint(range(lo, hi))
                covered.update(range(lo, hi))
            assert covered == set(range(size))
