"""The verifier's policy over a replayed log: pinned helpers, allowed images, a valid lifecycle."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given
from hypothesis import strategies as st
from measure_strategies import executable_events

from tdx_measure import (
    BootEvent,
    Event,
    EventLog,
    EventLogError,
    ExecutableEvent,
    ExecutablePin,
    InvalidPolicyError,
    MeasurementPolicy,
    PolicyViolationError,
    VerifiedLog,
    WorkloadEvent,
    check_log,
    verify_log,
)

BOOT = BootEvent(boot_nonce=bytes(32), timestamp=0)
RUNC = ExecutableEvent("oci-runtime", "/usr/sbin/runc", b"\x01" * 48, b"\x19\x4f\x1d", "EM_X86_64")
PODMAN = ExecutableEvent("podman", "/usr/bin/podman", b"\x02" * 48, None, "EM_X86_64")
CONFIGURE = WorkloadEvent("configure", "nginx:1.25", "ab" * 32, ("/data",), 8080)
EXPOSE = dataclasses.replace(CONFIGURE, transition="expose")

PINNED = MeasurementPolicy(
    executables={
        "oci-runtime": ExecutablePin(build_ids=frozenset({b"\x19\x4f\x1d"})),
        "podman": ExecutablePin(sha384s=frozenset({b"\x02" * 48})),
    },
    allowed_images=frozenset({"nginx:1.25"}),
    allowed_image_ids=frozenset({"ab" * 32}),
)


def log_of(*events: Event) -> VerifiedLog:
    """A log of `events` after a boot, verified against the register it replays to."""
    log = EventLog.from_events([BOOT, *events])
    return verify_log(log, log.replay())


def test_check_log_takes_only_a_verified_log() -> None:
    unverified = EventLog.from_events([BOOT, RUNC, PODMAN])
    with pytest.raises(TypeError, match="VerifiedLog that verify_log returns, not EventLog"):
        check_log(unverified, PINNED)  # type: ignore[arg-type]


def test_a_log_matching_every_pin_and_image_is_accepted() -> None:
    check_log(log_of(RUNC, PODMAN, CONFIGURE, EXPOSE), PINNED)
    check_log(log_of(RUNC, PODMAN), PINNED)


@given(st.lists(executable_events, max_size=5))
def test_the_empty_policy_accepts_any_well_formed_log(events: list[Event]) -> None:
    check_log(log_of(*events, CONFIGURE, EXPOSE), MeasurementPolicy())


def test_an_unpinned_role_is_refused_by_name() -> None:
    fuse = ExecutableEvent("fusermount", "/usr/bin/fusermount3", b"\x03" * 48, b"\x01", "EM_X86_64")
    with pytest.raises(PolicyViolationError, match="not allowed") as info:
        check_log(log_of(RUNC, PODMAN, fuse), PINNED)
    assert info.value.subject == "fusermount"
    assert info.value.value == "/usr/bin/fusermount3"


def test_a_helper_with_another_build_id_is_refused() -> None:
    other = dataclasses.replace(RUNC, build_id=b"\xff\xff")
    with pytest.raises(PolicyViolationError, match="build ID ffff") as info:
        check_log(log_of(other, PODMAN), PINNED)
    assert info.value.subject == "oci-runtime"


def test_a_helper_without_build_id_needs_a_pinned_hash() -> None:
    no_id = dataclasses.replace(RUNC, build_id=None)
    with pytest.raises(PolicyViolationError, match="build ID none"):
        check_log(log_of(no_id, PODMAN), PINNED)
    by_hash = MeasurementPolicy(
        executables={"oci-runtime": ExecutablePin(sha384s=frozenset({RUNC.sha384}))}
    )
    check_log(log_of(no_id), by_hash)


def test_a_pinned_hash_does_not_accept_another_file() -> None:
    other = dataclasses.replace(PODMAN, sha384=b"\x09" * 48)
    with pytest.raises(PolicyViolationError) as info:
        check_log(log_of(RUNC, other), PINNED)
    assert info.value.subject == "podman"


def test_a_pinned_role_missing_from_the_log_is_refused() -> None:
    with pytest.raises(PolicyViolationError, match="missing") as info:
        check_log(log_of(RUNC), PINNED)
    assert info.value.subject == "podman"


def test_an_image_not_allowed_is_refused_by_reference() -> None:
    evil = dataclasses.replace(CONFIGURE, image="evil:latest")
    with pytest.raises(PolicyViolationError, match="not an allowed image") as info:
        check_log(log_of(RUNC, PODMAN, evil), PINNED)
    assert (info.value.subject, info.value.value) == ("image", "evil:latest")


def test_an_image_id_not_allowed_is_refused() -> None:
    other = dataclasses.replace(CONFIGURE, image_id="cd" * 32)
    with pytest.raises(PolicyViolationError, match="not an allowed image ID") as info:
        check_log(log_of(RUNC, PODMAN, other), PINNED)
    assert info.value.subject == "image_id"


@pytest.mark.parametrize(
    ("events", "reason"),
    [
        ((EXPOSE,), "without a preceding configure"),
        ((CONFIGURE, EXPOSE, CONFIGURE), "configure after expose"),
        ((CONFIGURE, dataclasses.replace(EXPOSE, port=9090)), "differs from the configured"),
        ((CONFIGURE, dataclasses.replace(EXPOSE, persist_dirs=())), "differs from the configured"),
    ],
)
def test_an_impossible_lifecycle_is_refused(events: tuple[Event, ...], reason: str) -> None:
    with pytest.raises(PolicyViolationError, match=reason):
        check_log(log_of(*events), MeasurementPolicy())


def test_reconfigure_before_expose_and_repeated_expose_are_accepted() -> None:
    first = dataclasses.replace(CONFIGURE, port=9000)
    check_log(log_of(first, CONFIGURE, EXPOSE, EXPOSE), MeasurementPolicy())


def test_invalid_pins_and_roles_are_refused() -> None:
    with pytest.raises(InvalidPolicyError, match="at least one"):
        ExecutablePin()
    with pytest.raises(InvalidPolicyError, match="SHA-384"):
        ExecutablePin(sha384s=frozenset({b"\x00" * 32}))
    with pytest.raises(InvalidPolicyError, match="build ID"):
        ExecutablePin(build_ids=frozenset({b""}))
    with pytest.raises(EventLogError, match="role"):
        MeasurementPolicy(executables={"Bad Role": ExecutablePin(build_ids=frozenset({b"\x01"}))})
    with pytest.raises(InvalidPolicyError, match="not an ExecutablePin"):
        MeasurementPolicy(executables={"podman": b"\x01"})  # type: ignore[dict-item]


def test_policy_executables_cannot_be_changed_after_construction() -> None:
    pins = {"podman": ExecutablePin(build_ids=frozenset({b"\x01"}))}
    policy = MeasurementPolicy(executables=pins)
    pins["oci-runtime"] = ExecutablePin(build_ids=frozenset({b"\x02"}))
    assert policy.executables is not None
    assert set(policy.executables) == {"podman"}
    with pytest.raises(TypeError):
        policy.executables["x"] = pins["podman"]  # type: ignore[index]
