"""The instance lifecycle: one enum and every transition between its states, in this module only.

    FRESH --register operator--> OPERATOR_REGISTERED --register owner--> OWNER_REGISTERED
          --configure--> CONFIGURED (--configure--> CONFIGURED) --expose--> EXPOSED

Handlers ask `next_state` whether an action may happen now; a refusal says why, as a
`StepOutOfOrder` (the caller may do it, but not now: HTTP 400) or a `NotPermitted` (the caller
cannot be authorized for it in this state: HTTP 401).
"""

from __future__ import annotations

from enum import StrEnum


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


class TransitionRefused(Exception):
    """`action` cannot happen in `state`; the message is safe to show to the caller."""

    def __init__(self, state: Lifecycle, action: Action, reason: str) -> None:
        super().__init__(reason)
        self.state = state
        self.action = action
        self.reason = reason


class StepOutOfOrder(TransitionRefused):
    """The action is taken out of order (HTTP 400)."""


class NotPermitted(TransitionRefused):
    """Nobody can be authorized for the action in this state (HTTP 401)."""


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


def next_state(state: Lifecycle, action: Action) -> Lifecycle:
    """The state after `action` in `state`; raises StepOutOfOrder or NotPermitted if refused."""
    target = _TRANSITIONS.get((state, action))
    if target is not None:
        return target
    refusal, reason = _REFUSALS[(state, action)]
    raise refusal(state, action, reason)


def has_owner(state: Lifecycle) -> bool:
    """Whether an owner key is registered in `state` (the key that signs workload requests)."""
    return state in (Lifecycle.OWNER_REGISTERED, Lifecycle.CONFIGURED, Lifecycle.EXPOSED)


def require_owner(state: Lifecycle, action: Action) -> None:
    """Raise NotPermitted unless an owner exists to authorize `action`."""
    if not has_owner(state):
        raise NotPermitted(state, action, _NO_OWNER)


def has_operator(state: Lifecycle) -> bool:
    """Whether an operator is registered in `state`."""
    return state is not Lifecycle.FRESH
