"""The lifecycle table: every (state, action) pair is either a transition or a named refusal."""

from __future__ import annotations

import pytest

from tdx_identity.core.lifecycle import (
    Action,
    Lifecycle,
    NotPermitted,
    StepOutOfOrder,
    TransitionRefused,
    WorkloadPhase,
    has_workload,
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


@pytest.mark.parametrize(
    ("phase", "action", "reason"),
    [
        (WorkloadPhase.EXPOSING, Action.CONFIGURE_WORKLOAD, "being exposed"),
        (WorkloadPhase.EXPOSED, Action.CONFIGURE_WORKLOAD, "being exposed"),
        (WorkloadPhase.CONFIGURING, Action.EXPOSE_WORKLOAD, "did not complete"),
    ],
)
def test_an_interrupted_workload_step_constrains_the_next_one(
    phase: WorkloadPhase, action: Action, reason: str
) -> None:
    with pytest.raises(StepOutOfOrder, match=reason):
        next_state(Lifecycle.CONFIGURED, action, phase)


@pytest.mark.parametrize("phase", [None, *WorkloadPhase])
def test_a_phase_never_overrides_the_lifecycle_refusals(phase: WorkloadPhase | None) -> None:
    with pytest.raises(NotPermitted, match="no owner"):
        next_state(Lifecycle.OPERATOR_REGISTERED, Action.CONFIGURE_WORKLOAD, phase)
    with pytest.raises(StepOutOfOrder, match="already exposed"):
        next_state(Lifecycle.EXPOSED, Action.EXPOSE_WORKLOAD, phase)


def test_completed_or_absent_phases_let_the_steps_happen() -> None:
    assert next_state(Lifecycle.CONFIGURED, Action.CONFIGURE_WORKLOAD, WorkloadPhase.CONFIGURING)
    assert next_state(Lifecycle.CONFIGURED, Action.EXPOSE_WORKLOAD, WorkloadPhase.CONFIGURED)
    assert next_state(Lifecycle.CONFIGURED, Action.EXPOSE_WORKLOAD, None) is Lifecycle.EXPOSED


def test_a_workload_is_committed_only_when_configured_or_exposed() -> None:
    assert [s for s in Lifecycle if has_workload(s)] == [Lifecycle.CONFIGURED, Lifecycle.EXPOSED]
