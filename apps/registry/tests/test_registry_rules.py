"""The registration rules as pure functions: request shape and the merge rule (properties)."""

from __future__ import annotations

import hashlib
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given
from hypothesis import strategies as st
from registry_helpers import UNISSUED, Instance, helper, make_log, workload

from tdx_measure import EventLog, EventLogError, Transition
from tdx_registry import (
    EVENT_LOG_HISTORY_LIMIT,
    InstanceRecord,
    RegistrationConflict,
    RegressionRefused,
    Verdict,
    merge_registration,
    parse_registration,
)
from tdx_report_data import IdentityInfo
from tdx_service_kit import BadRequest

T0 = datetime(2026, 1, 1, tzinfo=UTC)
KEYS = [bytes([i]) * 32 for i in range(1, 4)]


def identity(key: bytes, sig: int = 0) -> IdentityInfo:
    return IdentityInfo(pubkey=key, instance_signature=bytes([sig]) * 64,
                        identity_signature=bytes([sig]) * 64)  # fmt: skip


def record(ppid: bytes, operator: IdentityInfo | None, owner: IdentityInfo | None,
           at: datetime = T0) -> InstanceRecord:  # fmt: skip
    verdict = Verdict("UpToDate", (), bytes(48), at, skipped=False)
    return InstanceRecord(b"\x09" * 32, ppid, b"q", operator, owner, verdict, at, at)


identities = st.none() | st.builds(identity, st.sampled_from(KEYS), st.integers(0, 2))
records = st.builds(
    lambda ppid, op, ow: record(ppid, op, ow if op is not None else None),
    st.sampled_from([b"\x01" * 16, b"\x02" * 16]),
    identities,
    identities,
)


@given(records, records)
def test_merge_never_changes_what_is_fixed_once_set(
    old: InstanceRecord, new: InstanceRecord
) -> None:
    new = replace(new, registered_at=T0 + timedelta(days=1), updated_at=T0 + timedelta(days=1))
    try:
        merged = merge_registration(old, new)
    except RegistrationConflict:
        changed_ppid = old.ppid != new.ppid
        changed = [
            getattr(old, r) is not None
            and (getattr(new, r) is None or getattr(new, r).pubkey != getattr(old, r).pubkey)
            for r in ("operator", "owner")
        ]
        assert changed_ppid or any(changed)
        return
    assert merged.ppid == old.ppid
    for role in ("operator", "owner"):
        if getattr(old, role) is not None:
            assert getattr(merged, role).pubkey == getattr(old, role).pubkey
    assert merged.registered_at == old.registered_at
    assert merged.updated_at == new.updated_at
    assert merged.attestation_quote == new.attestation_quote


@given(records)
def test_merge_into_nothing_is_the_new_record(new: InstanceRecord) -> None:
    assert merge_registration(None, new) == new


def test_a_missing_owner_key_means_no_owner() -> None:
    body = Instance().body(Ed25519PrivateKey.generate(), challenge=UNISSUED)
    del body["owner"]
    assert parse_registration(body).owner is None


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=70),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3)
    ),
    max_leaves=8,
)


@given(st.fixed_dictionaries({}, optional={
    "instance_pubkey": json_values | st.just("ab" * 32),
    "ppid": json_values | st.just("cd" * 16),
    "attestation_quote": json_values | st.just("AAAA"),
    "operator": json_values,
    "owner": json_values,
    "event_log": json_values | st.just(make_log().to_json()),
}))  # fmt: skip
def test_any_json_body_is_parsed_or_refused_with_bad_request(body: dict[str, Any]) -> None:
    """BadRequest for the shape, EventLogError for a malformed log: both answer 400."""
    try:
        parsed = parse_registration(body)
    except (BadRequest, EventLogError):
        return
    assert len(parsed.instance_pubkey) == 32 and parsed.attestation_quote
    assert (parsed.event_log is None) == (body.get("event_log") is None)


def test_a_log_is_parsed_into_an_event_log() -> None:
    log = make_log()
    body = Instance().body(event_log=log, challenge=UNISSUED)
    assert parse_registration(body).event_log == log
    del body["event_log"]
    assert parse_registration(body).event_log is None


def _log_text(name: str) -> str:
    """A real event log of its own boot, one per name (equal names, equal logs)."""
    return make_log(boot_nonce=hashlib.sha256(name.encode()).digest()).to_json()


def _logged(name: str | None, history: tuple[str, ...] = (), at: datetime = T0) -> InstanceRecord:
    log = None if name is None else _log_text(name)
    return replace(record(b"\x01" * 16, None, None, at), event_log=log, event_log_history=history)


def test_a_new_log_moves_the_current_one_to_the_history() -> None:
    a, b, x = _log_text("a"), _log_text("b"), _log_text("x")
    merged = merge_registration(_logged("a", (x,)), _logged("b"))
    assert (merged.event_log, merged.event_log_history) == (b, (x, a))


def test_the_same_log_again_does_not_grow_the_history() -> None:
    a, x = _log_text("a"), _log_text("x")
    merged = merge_registration(_logged("a", (x,)), _logged("a"))
    assert (merged.event_log, merged.event_log_history) == (a, (x,))


def test_a_registration_without_a_log_moves_the_current_one_to_the_history() -> None:
    """The current log always belongs to the current quote: an old log cannot stay current."""
    a = _log_text("a")
    merged = merge_registration(_logged("a"), _logged(None))
    assert (merged.event_log, merged.event_log_history) == (None, (a,))
    again = merge_registration(merged, _logged(None))
    assert again.event_log_history == (a,)


@given(st.lists(st.text(min_size=1, max_size=3), max_size=2 * EVENT_LOG_HISTORY_LIMIT + 5))
def test_history_keeps_the_most_recent_replaced_logs_in_order(logs: list[str]) -> None:
    stored: InstanceRecord | None = None
    replaced: list[str] = []
    for name in logs:
        text = _log_text(name)
        if stored is not None and stored.event_log is not None and stored.event_log != text:
            replaced.append(stored.event_log)
        stored = merge_registration(stored, _logged(name))
    if stored is not None:
        assert stored.event_log == _log_text(logs[-1])
        assert list(stored.event_log_history) == replaced[-EVENT_LOG_HISTORY_LIMIT:]
        assert len(stored.event_log_history) <= EVENT_LOG_HISTORY_LIMIT


def test_bad_request_names_the_nested_field() -> None:
    body = Instance().body(
        Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate(), challenge=UNISSUED
    )
    body["owner"]["pubkey"] = "00"
    with pytest.raises(BadRequest, match=r"'owner\.pubkey'"):
        parse_registration(body)


# ---- no regression ---------------------------------------------------------------------------

NONCE_A, NONCE_B = b"\xaa" * 32, b"\xbb" * 32


def _with_log(log: EventLog | None, *, skipped: bool = False) -> InstanceRecord:
    base = record(b"\x01" * 16, None, None)
    verdict = replace(base.verdict, skipped=skipped, tcb_status=None if skipped else "UpToDate")
    return replace(base, verdict=verdict, event_log=None if log is None else log.to_json())


def _refused(existing: InstanceRecord, new: InstanceRecord, rule: str) -> None:
    with pytest.raises(RegressionRefused) as info:
        merge_registration(existing, new)
    assert rule in info.value.reason
    assert info.value.reason.startswith("no regression: ")


def test_an_unverified_registration_never_replaces_a_verified_record() -> None:
    log = make_log(boot_nonce=NONCE_A)
    _refused(_with_log(log), _with_log(log, skipped=True), "unverified registration")
    merge_registration(_with_log(log, skipped=True), _with_log(log))
    merge_registration(_with_log(log, skipped=True), _with_log(log, skipped=True))


@pytest.mark.parametrize(
    ("stored", "new"),
    [
        (("configure", "expose"), ("configure",)),
        (("configure", "expose"), ()),
        (("configure",), ()),
    ],
)
def test_the_workload_lifecycle_never_moves_back_even_across_a_reboot(
    stored: tuple[Transition, ...], new: tuple[Transition, ...]
) -> None:
    old = make_log(*(workload(t) for t in stored), boot_nonce=NONCE_A)
    rebooted = make_log(*(workload(t) for t in new), boot_nonce=NONCE_B)
    _refused(_with_log(old), _with_log(rebooted), "the lifecycle only moves forward")
    _refused(_with_log(old), _with_log(None), "the lifecycle only moves forward")


def test_the_lifecycle_may_stay_or_move_forward() -> None:
    configured = make_log(workload("configure"), boot_nonce=NONCE_A)
    exposed = make_log(workload("configure"), workload("expose"), boot_nonce=NONCE_A)
    rebooted = make_log(helper("podman"), workload("configure"), workload("expose"))
    merged = merge_registration(_with_log(configured), _with_log(exposed))
    assert merged.event_log == exposed.to_json()
    assert merge_registration(merged, _with_log(rebooted)).event_log == rebooted.to_json()


def test_a_log_of_the_stored_boot_must_extend_the_stored_log() -> None:
    stored = make_log(helper("podman"), helper("conmon"), boot_nonce=NONCE_A)
    shorter = make_log(helper("podman"), boot_nonce=NONCE_A)
    forked = make_log(helper("podman"), helper("runc"), helper("conmon"), boot_nonce=NONCE_A)
    longer = make_log(helper("podman"), helper("conmon"), helper("runc"), boot_nonce=NONCE_A)
    _refused(_with_log(stored), _with_log(shorter), "must extend the stored log")
    _refused(_with_log(stored), _with_log(forked), "must extend the stored log")
    assert merge_registration(_with_log(stored), _with_log(longer)).event_log == longer.to_json()
    other_boot = make_log(helper("runc"), boot_nonce=NONCE_B)
    assert merge_registration(_with_log(stored), _with_log(other_boot)).event_log == (
        other_boot.to_json()
    )


_steps = st.lists(
    st.tuples(
        st.sampled_from([NONCE_A, NONCE_B]),
        st.lists(st.sampled_from(["podman", "conmon"]), max_size=2),
        st.sampled_from([(), ("configure",), ("configure", "expose")]),
        st.booleans(),
    ),
    max_size=8,
)


@given(_steps)
def test_whatever_is_registered_the_stored_stage_and_boot_log_never_go_back(
    steps: list[tuple[bytes, list[str], tuple[Transition, ...], bool]],
) -> None:
    stored: InstanceRecord | None = None
    for nonce, helpers, transitions, skipped in steps:
        log = make_log(
            *(helper(h) for h in helpers), *(workload(t) for t in transitions), boot_nonce=nonce
        )
        new = _with_log(log, skipped=skipped)
        try:
            merged = merge_registration(stored, new)
        except RegressionRefused:
            continue
        if stored is not None and stored.event_log is not None:
            before = EventLog.from_json(stored.event_log)
            after = EventLog.from_json(merged.event_log or "")
            assert _stage_of(after) >= _stage_of(before)
            if before.boot == after.boot:
                assert after.events[: len(before)] == before.events
            assert stored.verdict.skipped or not merged.verdict.skipped
        stored = merged


def _stage_of(log: EventLog) -> int:
    return {None: 0, "configure": 1, "expose": 2}[
        None if log.workload is None else log.workload.transition
    ]
