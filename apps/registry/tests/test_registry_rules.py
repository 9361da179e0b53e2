"""The registration rules as pure functions: request shape and the merge rule (properties)."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given
from hypothesis import strategies as st
from registry_helpers import Instance, make_log

from tdx_measure import EventLogError
from tdx_registry import (
    EVENT_LOG_HISTORY_LIMIT,
    InstanceRecord,
    RegistrationConflict,
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
    body = Instance().body(Ed25519PrivateKey.generate())
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
    body = Instance().body(event_log=log)
    assert parse_registration(body).event_log == log
    del body["event_log"]
    assert parse_registration(body).event_log is None


def _logged(log: str | None, history: tuple[str, ...] = (), at: datetime = T0) -> InstanceRecord:
    return replace(record(b"\x01" * 16, None, None, at), event_log=log, event_log_history=history)


def test_a_new_log_moves_the_current_one_to_the_history() -> None:
    merged = merge_registration(_logged("a", ("x",)), _logged("b"))
    assert (merged.event_log, merged.event_log_history) == ("b", ("x", "a"))


def test_the_same_log_again_does_not_grow_the_history() -> None:
    merged = merge_registration(_logged("a", ("x",)), _logged("a"))
    assert (merged.event_log, merged.event_log_history) == ("a", ("x",))


def test_a_registration_without_a_log_moves_the_current_one_to_the_history() -> None:
    """The current log always belongs to the current quote: an old log cannot stay current."""
    merged = merge_registration(_logged("a"), _logged(None))
    assert (merged.event_log, merged.event_log_history) == (None, ("a",))
    again = merge_registration(merged, _logged(None))
    assert again.event_log_history == ("a",)


@given(st.lists(st.text(min_size=1, max_size=3), max_size=2 * EVENT_LOG_HISTORY_LIMIT + 5))
def test_history_keeps_the_most_recent_replaced_logs_in_order(logs: list[str]) -> None:
    stored: InstanceRecord | None = None
    replaced: list[str] = []
    for text in logs:
        if stored is not None and stored.event_log is not None and stored.event_log != text:
            replaced.append(stored.event_log)
        stored = merge_registration(stored, _logged(text))
    if stored is not None:
        assert stored.event_log == logs[-1]
        assert list(stored.event_log_history) == replaced[-EVENT_LOG_HISTORY_LIMIT:]
        assert len(stored.event_log_history) <= EVENT_LOG_HISTORY_LIMIT


def test_bad_request_names_the_nested_field() -> None:
    body = Instance().body(Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate())
    body["owner"]["pubkey"] = "00"
    with pytest.raises(BadRequest, match=r"'owner\.pubkey'"):
        parse_registration(body)
