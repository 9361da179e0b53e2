"""The start-up comparison of the state file's identities with the registry's record.

The operator controls the host, so it can rewrite `identity_state.json` while the service is
stopped (even with signatures made by the instance key, which lies on the same disk). The
registry's record was accepted against a quote that bound the identities, so at every start the
service compares the two and serves no lifecycle step until they agree: for each role the
state's public key equals the record's (both absent counts as equal), compared in constant time,
and every identity of the record verifies against this instance key in its role, as v2
(`verify_identity_v2`; v1 `verify_identity` only as a fallback under `--accept-v1-signatures`).
A record that does not parse or verify is a disagreement, never an agreement.

The lifecycle too: the record's latest workload transition (none, configure, expose) must be
the one the state's lifecycle implies, and within a boot an `expose` in the event log (which
replays to RTMR3, so the host cannot forge it) needs a state that exposed or began to. A step
is committed only after the registry accepted it, so the two agree unless the state file was
rewritten (or the registry's record was). `closed_for_good` says when SSH setup access must
stay closed whatever the state file says.
"""

from __future__ import annotations

import enum
import hmac
from dataclasses import dataclass

from tdx_identity.core.lifecycle import Lifecycle, WorkloadPhase
from tdx_identity.core.ports import RegistryRecord
from tdx_identity.core.state import PersistedState
from tdx_measure import Transition
from tdx_report_data import (
    EncodingError,
    IdentityInfo,
    Role,
    SignatureError,
    verify_identity,
    verify_identity_v2,
)

__all__ = [
    "Backoff",
    "Comparison",
    "ComparisonStatus",
    "closed_for_good",
    "disagreement",
    "lifecycle_disagreement",
]

_PREFIX_HEX = 16


@dataclass(frozen=True)
class Backoff:
    """Delays between comparisons while they do not agree: `initial` seconds, doubling up to
    `maximum`."""

    initial: float = 1.0
    maximum: float = 60.0

    def __post_init__(self) -> None:
        if not 0 < self.initial <= self.maximum:
            raise ValueError("backoff needs 0 < initial <= maximum")

    def after(self, delay: float) -> float:
        """The delay that follows `delay`."""
        return min(delay * 2, self.maximum)


class ComparisonStatus(enum.Enum):
    """Where the comparison stands (`GET /instance/state`'s `registry_comparison.status`)."""

    PENDING = "pending"
    DISAGREED = "disagreed"
    AGREED = "agreed"


@dataclass(frozen=True)
class Comparison:
    """The latest outcome and, unless agreed, why lifecycle steps are refused."""

    status: ComparisonStatus
    reason: str | None = None


def _prefix(identity: IdentityInfo | None) -> str:
    return "none" if identity is None else identity.pubkey.hex()[:_PREFIX_HEX] + "..."


def _same(mine: IdentityInfo | None, theirs: IdentityInfo | None) -> bool:
    if mine is None or theirs is None:
        return mine is None and theirs is None
    return hmac.compare_digest(mine.pubkey, theirs.pubkey)


def _verify(instance_pubkey: bytes, role: Role, identity: IdentityInfo, *, accept_v1: bool) -> None:
    """`identity` verifies in `role` as v2, or (only with `accept_v1`) as v1; else raises."""
    try:
        verify_identity_v2(instance_pubkey, role, identity)
    except SignatureError:
        if not accept_v1:
            raise
        verify_identity(instance_pubkey, identity)


def disagreement(
    instance_pubkey: bytes,
    state: PersistedState,
    record: RegistryRecord | None,
    *,
    accept_v1: bool = False,
) -> str | None:
    """None when `state` and `record` (None: the registry has no record) name the same operator
    and owner and the record's identities verify in their roles against `instance_pubkey` (v2;
    v1 too with `accept_v1`); else the reason."""
    pairs: tuple[tuple[Role, IdentityInfo | None, IdentityInfo | None], ...] = (
        ("operator", state.operator, None if record is None else record.operator),
        ("owner", state.owner, None if record is None else record.owner),
    )
    for role, mine, theirs in pairs:
        if theirs is not None:
            try:
                _verify(instance_pubkey, role, theirs, accept_v1=accept_v1)
            except (SignatureError, EncodingError) as exc:
                return (
                    f"the registry's {role} {_prefix(theirs)} does not verify against this "
                    f"instance key: {exc}"
                )
        if not _same(mine, theirs):
            return (
                f"the {role} differs: the state file names {_prefix(mine)}, the registry's "
                f"record {_prefix(theirs)}"
            )
    return None


def _stage(state: PersistedState) -> Transition | None:
    """The latest workload transition the state's lifecycle implies."""
    if state.lifecycle is Lifecycle.EXPOSED:
        return "expose"
    return "configure" if state.lifecycle is Lifecycle.CONFIGURED else None


def _expose_began(state: PersistedState) -> bool:
    phase = state.workload.phase if state.workload is not None else None
    return state.lifecycle is Lifecycle.EXPOSED or phase in (
        WorkloadPhase.EXPOSING,
        WorkloadPhase.EXPOSED,
    )


def lifecycle_disagreement(
    state: PersistedState, record: RegistryRecord | None, logged: Transition | None
) -> str | None:
    """None when the state's lifecycle is the one the registry's record shows and this boot's
    event log (latest workload transition `logged`) shows no expose the state lacks."""
    shown = None if record is None else record.workload
    if _stage(state) != shown:
        return (
            f"the lifecycle differs: the state file says {state.lifecycle.value}, the "
            f"registry's record shows {'a ' + shown if shown else 'no'} workload transition"
        )
    if logged == "expose" and not _expose_began(state):
        return (
            f"the lifecycle differs: this boot's event log shows an expose, the state file "
            f"says {state.lifecycle.value}"
        )
    return None


def closed_for_good(
    state: PersistedState, record: RegistryRecord | None, logged: Transition | None
) -> bool:
    """Whether anything shows that an expose began: then SSH setup access never opens again."""
    shown = None if record is None else record.workload
    return _expose_began(state) or shown == "expose" or logged == "expose"
