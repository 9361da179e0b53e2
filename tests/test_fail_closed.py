"""End to end, issue 9's attacks on the TD: the host rewrites the identity service's files while
it is stopped, the registry refuses a step, a boolean setting is misspelt. Real identity-svc,
registry, sim, podman and gocryptfs; one stack per scenario that needs one."""

from __future__ import annotations

import json
import subprocess

import httpx
import paramiko
import pytest

from tdx_measure import EventLog, WorkloadEvent
from tdx_service_kit.testing import ExitedEarly
from tdx_sim import DEFAULT_MR_TD, td_image_allowlists
from tests import procs
from tests.workload_support import Workload, assert_error, listening

pytestmark = pytest.mark.e2e


def _rtmr3(workload: Workload) -> str:
    """RTMR3 as the simulated TD holds it now."""
    return str(httpx.get(workload.stack.sim.url + "/rtmr", timeout=30).json()["rtmr3"])


def _comparison(workload: Workload) -> dict[str, str | None]:
    """GET /instance/state's `registry_comparison`."""
    answer: dict[str, str | None] = httpx.get(workload.url + "/instance/state").json()[
        "registry_comparison"
    ]
    return answer


def test_after_expose_forged_events_and_a_rewritten_state_never_reopen_ssh(
    workload: Workload, image: str
) -> None:
    assert workload.configure(image).status_code == 200
    assert workload.expose(image).status_code == 200
    identity = workload.stack.identity
    storage = workload.state_file.parent
    eventlog = storage / "eventlog.json"
    identity.stop()
    genuine_state, genuine_log = workload.state_file.read_text(), eventlog.read_text()
    rtmr3 = _rtmr3(workload)

    # (b) events written into the event log file while the service is stopped.
    forged = EventLog.from_json(genuine_log)
    forged.append(WorkloadEvent("configure", "localhost/evil:1", "ab" * 32, (), 8080))
    eventlog.write_text(forged.to_json())
    with pytest.raises(ExitedEarly, match="beyond RTMR3"):
        identity.start()
    assert _rtmr3(workload) == rtmr3, "a forged event reached RTMR3"
    assert not listening(workload.ssh_port)

    # (a) the state file rewritten to "configured", keyed to the operator.
    eventlog.write_text(genuine_log)
    state = json.loads(genuine_state)
    state["lifecycle"] = "configured"
    state["owner"] = state["operator"]
    state["workload_config"]["owner_pubkey"] = state["operator"]["pubkey"]
    state["workload"]["phase"] = "configured"
    workload.state_file.write_text(json.dumps(state))
    identity.start()
    assert workload.state() == "configured"
    assert _comparison(workload)["status"] == "disagreed"
    assert not listening(workload.ssh_port), "SSH reopened after expose"
    with pytest.raises((paramiko.SSHException, OSError)):
        workload.ssh()
    assert_error(workload.configure(image), 503, "differs")
    assert not listening(workload.ssh_port)
    served = EventLog.from_json(httpx.get(workload.url + "/instance/eventlog").text)
    assert served.replay().hex() == _rtmr3(workload), "the served log explains RTMR3"
    assert served.workload is not None and served.workload.transition == "expose"
    assert all(
        not isinstance(event, WorkloadEvent) or event.image == image for event in served.events
    ), "a forged event reached the log"

    # Only the lifecycle rewritten (identities intact): still refused, SSH still closed.
    identity.stop()
    state = json.loads(genuine_state)
    state["lifecycle"] = "configured"
    state["workload"]["phase"] = "configured"
    workload.state_file.write_text(json.dumps(state))
    identity.start()
    assert _comparison(workload) == {
        "status": "disagreed",
        "reason": "the registry's record disagrees: the lifecycle differs: the state file says "
        "configured, the registry's record shows a expose workload transition",
    }
    assert not listening(workload.ssh_port)
    assert_error(workload.configure(image), 503, "lifecycle differs")


def test_a_configure_the_registry_refuses_leaves_ssh_closed_and_the_state_unchanged(
    workload: Workload, image: str
) -> None:
    stack = workload.stack
    allowed = {**stack.registry.env, "REGISTRY_ALLOWED_IMAGES": "localhost/another-image:1"}
    stack.registry.env = allowed
    stack.restart("registry")
    before = workload.state_file.read_text()

    r = workload.configure(image)
    assert_error(r, 401)
    assert workload.state() == "owner_registered"
    assert workload.last_seq() == 0
    assert workload.state_file.read_text() == before, "the state file changed"
    assert not listening(workload.ssh_port), "SSH opened for a configure the registry refused"
    assert not listening(workload.workload_port)
    containers = subprocess.run(
        ["podman", "ps", "--all", "--quiet", "--filter", f"name=^{workload.container}$"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert containers.stdout.strip() == "", "the refused configure's container still exists"
    record = httpx.get(f"{stack.registry.url}/instance/{workload.instance.hex()}").json()
    assert record["workload"] is None


def test_a_misspelt_boolean_stops_the_programs_instead_of_being_read_as_either() -> None:
    registry = subprocess.run(
        [procs.program("tdx-registry"), "--host", "127.0.0.1", "--port", "1"],
        env=procs.base_env(SKIP_TDX_AUTH="disabled", **td_image_allowlists(DEFAULT_MR_TD)),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert registry.returncode == 2, registry.stderr
    assert "SKIP_TDX_AUTH='disabled' is not a boolean" in registry.stderr
    identity = subprocess.run(
        [procs.program("identity-svc"), "--host", "127.0.0.1", "--port", "1"],
        env=procs.base_env(ACCEPT_UNSEQUENCED_REQUESTS="disabled"),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert identity.returncode == 2, identity.stderr
    assert "ACCEPT_UNSEQUENCED_REQUESTS='disabled' is not a boolean" in identity.stderr
