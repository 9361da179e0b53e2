"""The instance lifecycle: one enum and every transition between its states, in this module only.

    FRESH --register operator--> OPERATOR_REGISTERED --register owner--> OWNER_REGISTERED
          --configure--> CONFIGURED (--configure--> CONFIGURED) --expose--> EXPOSED

Each workload step also leaves a `WorkloadPhase` in the state file (written before and after
the runtime carries it out); a step interrupted by a failure constrains what may follow.

Handlers ask `next_state` whether an action may happen now; a refusal says why, as a
`StepOutOfOrder` (the caller may do it, but not now: HTTP 400) or a `NotPermitted` (the caller
cannot be authorized for it in this state: HTTP 401). No other module decides this.
"""

from __future__ import annotations

from enum import StrEnum

from tdx_identity.exceptions import NotPermitted, StepOutOfOrder, TransitionRefused

__all__ = [
    "Action",
    "Lifecycle",
    "NotPermitted",
    "StepOutOfOrder",
    "TransitionRefused",
    "WorkloadPhase",
    "has_operator",
    "has_owner",
    "has_workload",
    "next_state",
    "require_owner",
]


class Lifecycle(StrEnum):
    FRESH = "fresh"
    OPERATOR_REGISTERED = "operator_registered"
    OWNER_REGISTERED = "owner_registered"
    CONFIGURED = "configured"
    EXPOSED = "exposed"


class Action(StrEnum):
    REGISTER_OPERATOR = "register_operator"
    REGISTER_OWNER = "register_owner"
    CONFIGURE_WORKLOAD = "configure_workload"
    EXPOSE_WORKLOAD = "expose_workload"


class WorkloadPhase(StrEnum):
    """How far the last workload step got in the runtime; written before and after each step."""

    CONFIGURING = "configuring"
    CONFIGURED = "configured"
    EXPOSING = "exposing"
    EXPOSED = "exposed"


_TRANSITIONS: dict[tuple[Lifecycle, Action], Lifecycle] = {
    (Lifecycle.FRESH, Action.REGISTER_OPERATOR): Lifecycle.OPERATOR_REGISTERED,
    (Lifecycle.OPERATOR_REGISTERED, Action.REGISTER_OWNER): Lifecycle.OWNER_REGISTERED,
    (Lifecycle.OWNER_REGISTERED, Action.CONFIGURE_WORKLOAD): Lifecycle.CONFIGURED,
    (Lifecycle.CONFIGURED, Action.CONFIGURE_WORKLOAD): Lifecycle.CONFIGURED,
    (Lifecycle.CONFIGURED, Action.EXPOSE_WORKLOAD): Lifecycle.EXPOSED,
}

_OPERATOR_ALREADY = "Operator already registered"
_NO_OPERATOR = "invalid owner token: no operator is registered"
_OWNER_ALREADY = "invalid owner token: an owner is already registered"
_NO_OWNER = "no owner is registered"
_NOT_CONFIGURED = "workload not configured: configure it before exposing it"
_ALREADY_EXPOSED = "workload already exposed: it cannot be changed any more"
_BEING_EXPOSED = "the workload is being exposed; it cannot be configured again"
_CONFIGURE_UNFINISHED = "the last configure did not complete: configure again before exposing"

_REFUSALS: dict[tuple[Lifecycle, Action], tuple[type[TransitionRefused], str]] = {
    **{
        (state, Action.REGISTER_OPERATOR): (StepOutOfOrder, _OPERATOR_ALREADY)
        for state in Lifecycle
        if state is not Lifecycle.FRESH
    },
    (Lifecycle.FRESH, Action.REGISTER_OWNER): (NotPermitted, _NO_OPERATOR),
    **{
        (state, Action.REGISTER_OWNER): (NotPermitted, _OWNER_ALREADY)
        for state in (Lifecycle.OWNER_REGISTERED, Lifecycle.CONFIGURED, Lifecycle.EXPOSED)
    },
    **{
        (state, action): (NotPermitted, _NO_OWNER)
        for state in (Lifecycle.FRESH, Lifecycle.OPERATOR_REGISTERED)
        for action in (Action.CONFIGURE_WORKLOAD, Action.EXPOSE_WORKLOAD)
    },
    (Lifecycle.OWNER_REGISTERED, Action.EXPOSE_WORKLOAD): (StepOutOfOrder, _NOT_CONFIGURED),
    (Lifecycle.EXPOSED, Action.CONFIGURE_WORKLOAD): (StepOutOfOrder, _ALREADY_EXPOSED),
    (Lifecycle.EXPOSED, Action.EXPOSE_WORKLOAD): (StepOutOfOrder, _ALREADY_EXPOSED),
}


_PHASE_REFUSALS: dict[tuple[WorkloadPhase, Action], str] = {
    # An expose that began closed SSH setup access for good: it is only ever finished.
    (WorkloadPhase.EXPOSING, Action.CONFIGURE_WORKLOAD): _BEING_EXPOSED,
    (WorkloadPhase.EXPOSED, Action.CONFIGURE_WORKLOAD): _BEING_EXPOSED,
    (WorkloadPhase.CONFIGURING, Action.EXPOSE_WORKLOAD): _CONFIGURE_UNFINISHED,
}


def next_state(state: Lifecycle, action: Action, phase: WorkloadPhase | None = None) -> Lifecycle:
    """The state after `action` in `state`, with the runtime's last workload step at `phase`
    (None: none recorded); raises StepOutOfOrder or NotPermitted if refused."""
    target = _TRANSITIONS.get((state, action))
    if target is None:
        refusal, reason = _REFUSALS[(state, action)]
        raise refusal(state, action, reason)
    if phase is not None and (phase, action) in _PHASE_REFUSALS:
        raise StepOutOfOrder(state, action, _PHASE_REFUSALS[(phase, action)])
    return target


def has_owner(state: Lifecycle) -> bool:
    """Whether an owner key is registered in `state` (the key that signs workload requests)."""
    return state in (Lifecycle.OWNER_REGISTERED, Lifecycle.CONFIGURED, Lifecycle.EXPOSED)


def require_owner(state: Lifecycle, action: Action) -> None:
    """Raise NotPermitted unless an owner exists to authorize `action`."""
    if not has_owner(state):
        raise NotPermitted(state, action, _NO_OWNER)


def has_workload(state: Lifecycle) -> bool:
    """Whether a workload configuration is committed in `state`."""
    return state in (Lifecycle.CONFIGURED, Lifecycle.EXPOSED)


def has_operator(state: Lifecycle) -> bool:
    """Whether an operator is registered in `state`."""
    return state is not Lifecycle.FRESH
