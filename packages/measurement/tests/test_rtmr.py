"""The extension rule, replay, and the append-only log with its strict JSON form."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from typing import Any

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st
from measure_strategies import FIELD_STRATEGIES, boot_events, logs_events, runtime_events

from tdx_measure import (
    ZERO_REGISTER,
    BootEvent,
    ConfigEvent,
    Event,
    EventLog,
    EventLogError,
    ExecutableEvent,
    IdentityEvent,
    RegisterLengthError,
    ReplayMismatchError,
    SshHostKeyEvent,
    TlsKeyEvent,
    VerifiedLog,
    WorkloadEvent,
    event_digest,
    extend,
    replay,
    ssh_ed25519_line,
    verify_log,
)
from tdx_measure._rtmr import LOG_FORMAT, MAX_LOG_EVENTS

BOOT = BootEvent(boot_nonce=bytes(range(32)), timestamp=1_700_000_000)
EXE = ExecutableEvent("oci-runtime", "/usr/sbin/runc", bytes(range(48)), b"\x19\x4f", "EM_X86_64")
CONFIGURE = WorkloadEvent("configure", "nginx:1.25", "ab" * 32, ("/data",), 8080)
EXPOSE = dataclasses.replace(CONFIGURE, transition="expose")


def make_log(*events: Event) -> EventLog:
    return EventLog.from_events([BOOT, *events])


def test_extend_is_sha384_of_register_then_digest() -> None:
    register, digest = bytes(range(48)), bytes(range(48, 96))
    assert extend(register, digest) == hashlib.sha384(register + digest).digest()
    assert extend(digest, register) != extend(register, digest)


@pytest.mark.parametrize(
    ("register", "digest"), [(bytes(47), bytes(48)), (bytes(48), bytes(32)), (b"", b"")]
)
def test_extend_refuses_values_that_are_not_48_bytes(register: bytes, digest: bytes) -> None:
    with pytest.raises(RegisterLengthError):
        extend(register, digest)


def test_replay_of_a_boot_event_matches_an_independent_computation() -> None:
    serialized = (
        b"tdx-measure/event/v1\n"
        b'{"boot_nonce":"'
        + bytes(range(32)).hex().encode()
        + b'","timestamp":1700000000,"type":"boot"}'
    )
    expected = hashlib.sha384(bytes(48) + hashlib.sha384(serialized).digest()).digest()
    assert replay([BOOT]) == expected
    assert EventLog(BOOT).replay() == expected


def test_replay_chains_each_digest_in_order() -> None:
    expected = bytes(48)
    for event in (BOOT, EXE, CONFIGURE, EXPOSE):
        expected = hashlib.sha384(expected + event_digest(event)).digest()
    assert replay([BOOT, EXE, CONFIGURE, EXPOSE]) == expected


def test_replay_of_nothing_is_the_initial_value() -> None:
    assert replay([]) == ZERO_REGISTER
    assert replay([], initial=b"\x01" * 48) == b"\x01" * 48


def test_replay_starts_from_the_given_initial_value() -> None:
    initial = b"\x07" * 48
    assert replay([BOOT], initial) == hashlib.sha384(initial + event_digest(BOOT)).digest()
    assert make_log().replay(initial) == replay([BOOT], initial)


@given(logs_events(min_runtime=1), st.data())
def test_replay_is_order_sensitive(events: list[Event], data: st.DataObject) -> None:
    i = data.draw(st.integers(0, len(events) - 2))
    j = data.draw(st.integers(i + 1, len(events) - 1))
    assume(event_digest(events[i]) != event_digest(events[j]))
    swapped = list(events)
    swapped[i], swapped[j] = swapped[j], swapped[i]
    assert replay(swapped) != replay(events)


@given(logs_events(min_runtime=1), st.data())
def test_changing_any_field_of_any_event_changes_the_replay(
    events: list[Event], data: st.DataObject
) -> None:
    index = data.draw(st.integers(0, len(events) - 1))
    event = events[index]
    fields = FIELD_STRATEGIES[type(event)]
    name = data.draw(st.sampled_from(sorted(fields)))
    value = data.draw(fields[name].filter(lambda v: v != getattr(event, name)))
    changed = list(events)
    changes: dict[str, Any] = {name: value}
    changed[index] = dataclasses.replace(event, **changes)
    assert replay(changed) != replay(events)
    with pytest.raises(ReplayMismatchError):
        verify_log(EventLog.from_events(changed), replay(events))


@given(logs_events(min_runtime=1), st.data())
def test_dropping_any_event_is_detected(events: list[Event], data: st.DataObject) -> None:
    index = data.draw(st.integers(1, len(events) - 1))
    log = EventLog.from_events(events[:index] + events[index + 1 :])
    with pytest.raises(ReplayMismatchError):
        verify_log(log, replay(events))


@given(logs_events())
def test_log_json_round_trips(events: list[Event]) -> None:
    log = EventLog.from_events(events)
    text = log.to_json()
    again = EventLog.from_json(text)
    assert again == log
    assert again.events == tuple(events)
    assert again.to_json() == text
    assert EventLog.from_json(text.encode("utf-8")) == log
    verify_log(again, log.replay())


def test_log_json_is_the_documented_document() -> None:
    document = json.loads(make_log(EXE).to_json())
    assert document["format"] == "tdx-measure/eventlog/v1"
    assert [e["type"] for e in document["events"]] == ["boot", "executable"]


@given(st.binary(max_size=400))
def test_random_bytes_given_to_from_json_only_raise_event_log_error(data: bytes) -> None:
    with pytest.raises(EventLogError):
        EventLog.from_json(data)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=12,
)
_all_fields = sorted({name for fields in FIELD_STRATEGIES.values() for name in fields} | {"type"})
event_like = st.dictionaries(
    st.sampled_from(_all_fields),
    json_values
    | st.sampled_from(["boot", "executable", "workload"])
    | st.from_regex(r"[0-9a-f]{2,96}", fullmatch=True),
    max_size=7,
)
log_like = st.fixed_dictionaries(
    {
        "format": st.just(LOG_FORMAT) | json_values,
        "events": st.lists(event_like | json_values, max_size=4),
    },
    optional={"extra": json_values},
)


@given(json_values | log_like)
def test_random_json_given_to_from_json_only_raises_event_log_error(document: object) -> None:
    try:
        text = json.dumps(document)
    except ValueError:
        return
    try:
        log = EventLog.from_json(text)
    except EventLogError:
        return
    assert EventLog.from_json(log.to_json()) == log


@given(logs_events(min_runtime=1), st.data())
def test_a_corrupted_log_json_raises_event_log_error_or_changes_the_replay(
    events: list[Event], data: st.DataObject
) -> None:
    log = EventLog.from_events(events)
    text = log.to_json()
    position = data.draw(st.integers(0, len(text) - 1))
    replacement = data.draw(st.characters(codec="utf-8"))
    assume(replacement != text[position])
    corrupted = text[:position] + replacement + text[position + 1 :]
    try:
        parsed = EventLog.from_json(corrupted)
    except EventLogError:
        return
    assert parsed.replay() != log.replay()


def test_from_json_refuses_wrong_structure() -> None:
    good = json.loads(make_log(EXE).to_json())
    cases: list[object] = [
        [],
        {"format": LOG_FORMAT},
        {**good, "format": "tdx-measure/eventlog/v2"},
        {**good, "extra": 1},
        {**good, "events": {}},
        {**good, "events": []},
        {**good, "events": good["events"][1:]},
        {**good, "events": good["events"] + good["events"][:1]},
        {**good, "events": [*good["events"], {**good["events"][1], "type": "kernel"}]},
    ]
    for document in cases:
        with pytest.raises(EventLogError):
            EventLog.from_json(json.dumps(document))
    with pytest.raises(EventLogError, match="duplicate key"):
        EventLog.from_json('{"format":"tdx-measure/eventlog/v1","format":"x","events":[]}')
    with pytest.raises(EventLogError, match="NaN"):
        EventLog.from_json('{"format":NaN,"events":[]}')


def test_from_json_refuses_oversized_input() -> None:
    with pytest.raises(EventLogError, match="allowed"):
        EventLog.from_json(" " * (4 * 1024 * 1024 + 1))


def test_log_must_start_with_its_only_boot_event() -> None:
    with pytest.raises(EventLogError, match="start with a boot event"):
        EventLog.from_events([EXE])
    with pytest.raises(EventLogError, match="start with a boot event"):
        EventLog.from_events([])
    with pytest.raises(EventLogError, match="event 2: a boot event only starts a log"):
        EventLog.from_events([BOOT, EXE, BOOT])
    log = make_log()
    with pytest.raises(EventLogError, match="reboot starts a new log"):
        log.append(BootEvent.fresh(1))


def test_log_is_append_only() -> None:
    log = make_log()
    digest = log.append(EXE)
    assert digest == event_digest(EXE)
    snapshot = log.events
    log.append(CONFIGURE)
    assert snapshot == (BOOT, EXE)
    assert log.events == (BOOT, EXE, CONFIGURE)
    assert len(log) == 3
    assert log.boot == BOOT
    assert not hasattr(log, "__dict__")


def test_log_refuses_non_events_and_overflow() -> None:
    log = make_log()
    with pytest.raises(EventLogError, match="is not an event"):
        log.append("podman")  # type: ignore[arg-type]
    for _ in range(MAX_LOG_EVENTS - 1):
        log.append(EXE)
    with pytest.raises(EventLogError, match="maximum"):
        log.append(EXE)


def test_workload_is_the_latest_transition() -> None:
    assert make_log(EXE).workload is None
    log = make_log(EXE)
    log.append(CONFIGURE)
    assert log.workload == CONFIGURE
    log.append(EXPOSE)
    assert log.workload == EXPOSE


def test_ssh_host_key_and_identities_are_the_latest_of_their_kind() -> None:
    first, second = (SshHostKeyEvent(ssh_ed25519_line(bytes([n]) * 32)) for n in (1, 2))
    stray = IdentityEvent("operator", b"\x01" * 32)
    operator = IdentityEvent("operator", b"\x02" * 32)
    owner = IdentityEvent("owner", b"\x03" * 32)
    empty = make_log(EXE)
    assert empty.ssh_host_key is None
    assert empty.identity("operator") is None and empty.identity("owner") is None
    log = make_log(first, stray, operator, owner, second, CONFIGURE)
    assert log.ssh_host_key == second.public_key
    assert log.identity("operator") == operator.pubkey
    assert log.identity("owner") == owner.pubkey
    verified = verify_log(log, log.replay())
    assert verified.ssh_host_key == second.public_key
    assert verified.identity("operator") == operator.pubkey
    assert verified.identity("owner") == owner.pubkey


def test_config_is_the_latest_config_event() -> None:
    first = ConfigEvent.of({"ssh_port": "2222"})
    second = ConfigEvent.of({"ssh_port": "2223"})
    assert make_log(EXE).config is None
    log = make_log(first, EXE, second, CONFIGURE)
    assert log.config == second
    assert verify_log(log, log.replay()).config == second
    assert EventLog.from_json(log.to_json()).config == second


def test_appending_and_extending_keeps_log_and_register_in_step() -> None:
    register = extend(ZERO_REGISTER, event_digest(BOOT))
    log = EventLog(BOOT)
    for event in (EXE, CONFIGURE, EXPOSE):
        register = extend(register, log.append(event))
    verify_log(log, register)


def test_verify_log_refuses_tampered_dropped_and_reordered_logs() -> None:
    expected = make_log(EXE, CONFIGURE, EXPOSE).replay()
    verify_log(make_log(EXE, CONFIGURE, EXPOSE), expected)
    tampered = make_log(EXE, dataclasses.replace(CONFIGURE, image="evil:1"), EXPOSE)
    for log in (tampered, make_log(EXE, CONFIGURE), make_log(CONFIGURE, EXE, EXPOSE)):
        with pytest.raises(ReplayMismatchError) as info:
            verify_log(log, expected)
        assert info.value.expected == expected
        assert info.value.replayed == log.replay()
        assert expected.hex() in str(info.value)
    with pytest.raises(RegisterLengthError):
        verify_log(make_log(), expected[:32])


def test_verify_log_returns_a_snapshot_of_the_events_and_the_register_they_replay_to() -> None:
    log = make_log(EXE, CONFIGURE)
    expected = log.replay()
    verified = verify_log(log, expected)
    assert isinstance(verified, VerifiedLog)
    assert verified.events == (BOOT, EXE, CONFIGURE) and len(verified) == 3
    assert verified.rtmr == expected
    assert verified.boot == BOOT
    assert verified.workload == CONFIGURE
    log.append(EXPOSE)
    assert verified.events == (BOOT, EXE, CONFIGURE)
    assert verified.workload == CONFIGURE
    assert verify_log(make_log(EXE, CONFIGURE), expected) == verified
    assert verify_log(make_log(), make_log().replay()).workload is None


def test_a_verified_log_cannot_be_constructed_directly() -> None:
    log = make_log(EXE)
    with pytest.raises(TypeError, match="cannot be constructed directly"):
        VerifiedLog(log.events, log.replay())
    with pytest.raises(TypeError, match="cannot be constructed directly"):
        VerifiedLog(log.events, log.replay(), _token=object())


def test_pending_returns_the_events_written_ahead_of_the_register() -> None:
    log = make_log(EXE, CONFIGURE)
    register = replay([BOOT, EXE])
    assert log.pending(register) == (CONFIGURE,)
    assert log.pending(log.replay()) == ()
    with pytest.raises(EventLogError, match="rebooted"):
        log.pending(ZERO_REGISTER)
    with pytest.raises(ReplayMismatchError):
        log.pending(b"\x01" * 48)


@given(boot_events, st.lists(runtime_events, max_size=5))
def test_appending_returns_the_digest_replay_extends(boot: BootEvent, rest: list[Event]) -> None:
    log = EventLog(boot)
    register = extend(ZERO_REGISTER, event_digest(boot))
    for event in rest:
        register = extend(register, log.append(event))
    assert log.replay() == register


def test_the_tls_key_is_the_latest_of_its_kind() -> None:
    first, second = (TlsKeyEvent(bytes([n]) * 32) for n in (1, 2))
    empty = make_log(EXE)
    assert empty.tls_key is None
    log = make_log(first, CONFIGURE, second)
    assert log.tls_key == second.spki_sha256
    assert verify_log(log, log.replay()).tls_key == second.spki_sha256
