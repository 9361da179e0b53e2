"""The lifecycle table: every (state, action) pair is either a transition or a named refusal."""

from __future__ import annotations

import pytest

from tdx_identity.core.lifecycle import (
    Action,
    Lifecycle,
    NotPermitted,
    StepOutOfOrder,
    TransitionRefused,
    next_state,
    require_owner,
)


def test_the_happy_path_walks_every_state_in_order() -> None:
    state = Lifecycle.FRESH
    for action, expected in [
        (Action.REGISTER_OPERATOR, Lifecycle.OPERATOR_REGISTERED),
        (Action.REGISTER_OWNER, Lifecycle.OWNER_REGISTERED),
        (Action.CONFIGURE_WORKLOAD, Lifecycle.CONFIGURED),
        (Action.CONFIGURE_WORKLOAD, Lifecycle.CONFIGURED),
        (Action.EXPOSE_WORKLOAD, Lifecycle.EXPOSED),
    ]:
        state = next_state(state, action)
        assert state is expected


@pytest.mark.parametrize("state", list(Lifecycle))
@pytest.mark.parametrize("action", list(Action))
def test_every_pair_is_decided(state: Lifecycle, action: Action) -> None:
    try:
        target = next_state(state, action)
    except TransitionRefused as refusal:
        assert isinstance(refusal, StepOutOfOrder | NotPermitted)
        assert refusal.state is state and refusal.action is action and refusal.reason
    else:
        assert list(Lifecycle).index(target) >= list(Lifecycle).index(state)


@pytest.mark.parametrize(
    ("state", "action", "refusal", "reason"),
    [
        (Lifecycle.OWNER_REGISTERED, Action.REGISTER_OPERATOR, StepOutOfOrder, "Operator already"),
        (Lifecycle.FRESH, Action.REGISTER_OWNER, NotPermitted, "no operator"),
        (Lifecycle.EXPOSED, Action.REGISTER_OWNER, NotPermitted, "already registered"),
        (Lifecycle.OPERATOR_REGISTERED, Action.CONFIGURE_WORKLOAD, NotPermitted, "no owner"),
        (Lifecycle.OWNER_REGISTERED, Action.EXPOSE_WORKLOAD, StepOutOfOrder, "not configured"),
        (Lifecycle.EXPOSED, Action.CONFIGURE_WORKLOAD, StepOutOfOrder, "already exposed"),
        (Lifecycle.EXPOSED, Action.EXPOSE_WORKLOAD, StepOutOfOrder, "already exposed"),
    ],
)
def test_refusals_carry_their_kind_and_reason(
    state: Lifecycle, action: Action, refusal: type[TransitionRefused], reason: str
) -> None:
    with pytest.raises(refusal, match=reason):
        next_state(state, action)


def test_owner_is_required_before_any_workload_step() -> None:
    for state in (Lifecycle.FRESH, Lifecycle.OPERATOR_REGISTERED):
        with pytest.raises(NotPermitted):
            require_owner(state, Action.CONFIGURE_WORKLOAD)
    for state in (Lifecycle.OWNER_REGISTERED, Lifecycle.CONFIGURED, Lifecycle.EXPOSED):
        require_owner(state, Action.EXPOSE_WORKLOAD)
