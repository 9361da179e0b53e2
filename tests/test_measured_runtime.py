"""End to end: the quote commits to the helper programs and the exposed workload (RTMR3 log).

The identity service measures podman, runc, conmon, gocryptfs and fusermount at start, extends
the sim's RTMR3 with every event, and re-registers after configure and expose; the registry
replays the log against the quote's RTMR3 and applies its measurement policy."""

from __future__ import annotations

import base64
import json
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from tdx_measure import EventLog, WorkloadEvent
from tdx_quote import parse_quote
from tdx_report_data import IdentityInfo, prove_possession, report_data_for_v2, sign_instance_v2
from tests.conftest import Stack
from tests.procs import program
from tests.workload_support import CONTAINER_PORT, Workload, assert_error, raw_key

pytestmark = pytest.mark.e2e


def _record(stack: Stack, instance: bytes) -> dict[str, Any]:
    r = httpx.get(f"{stack.registry.url}/instance/{instance.hex()}")
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def _quote_rtmr3(record: dict[str, Any]) -> bytes:
    quote = base64.b64decode(record["attestation_quote"])
    return parse_quote(quote, allow_zero_padding=True).body.rtmr3


def _fresh_body(workload: Workload, record: dict[str, Any], event_log: str) -> dict[str, Any]:
    """The record's registration made afresh with `event_log`: a new registry challenge, a sim
    quote over its v2 binding (RTMR3 as the TD left it) and the instance key's proof of
    possession (read from the TD's disk, as the host can)."""
    stack = workload.stack
    pem = (stack.tmp / "identity" / "instance_key.pem").read_bytes()
    instance_key = serialization.load_pem_private_key(pem, password=None)
    assert isinstance(instance_key, Ed25519PrivateKey)
    challenge = bytes.fromhex(httpx.get(stack.registry.url + "/challenge").json()["nonce"])
    report_data = report_data_for_v2(
        workload.instance,
        bytes.fromhex(record["ppid"]),
        challenge,
        IdentityInfo.from_object(record["operator"], name="operator"),
        IdentityInfo.from_object(record["owner"], name="owner"),
    )
    quote = httpx.get(f"{stack.sim.url}/attest/{report_data.hex()}", timeout=30)
    assert quote.status_code == 200, quote.text
    return {
        "instance_pubkey": workload.instance.hex(),
        "ppid": record["ppid"],
        "attestation_quote": base64.b64encode(quote.content).decode(),
        "operator": record["operator"],
        "owner": record["owner"],
        "event_log": event_log,
        "challenge": challenge.hex(),
        "instance_signature": prove_possession(instance_key, challenge, report_data).hex(),
    }


def test_after_expose_the_registry_record_replays_to_the_quote_and_names_the_image(
    workload: Workload, image: str, tmp_path: Path
) -> None:
    assert workload.configure(image).status_code == 200
    assert workload.expose(image).status_code == 200

    record = _record(workload.stack, workload.instance)
    log = EventLog.from_json(record["event_log"])
    assert log.replay() == _quote_rtmr3(record) == bytes.fromhex(record["rtmr3"])
    roles = {getattr(e, "role", None) for e in log.events}
    assert {"podman", "oci-runtime", "conmon", "gocryptfs", "fusermount"} <= roles
    workloads = [e for e in log.events if isinstance(e, WorkloadEvent)]
    assert [e.transition for e in workloads] == ["configure", "expose"]
    assert workloads[-1].image == image and workloads[-1].port == CONTAINER_PORT
    assert workloads[-1].persist_dirs == ("/www",)
    assert record["workload"]["image"] == image
    assert record["workload"]["transition"] == "expose"
    # The identity service serves the same log.
    served = httpx.get(workload.url + "/instance/eventlog")
    assert served.status_code == 200
    assert EventLog.from_json(served.text).replay() == log.replay()

    # verify-quote replays the recorded log against the recorded quote.
    quote_file, log_file = tmp_path / "quote.bin", tmp_path / "log.json"
    quote_file.write_bytes(base64.b64decode(record["attestation_quote"]))
    log_file.write_text(record["event_log"])
    done = subprocess.run(
        [
            program("verify-quote"),
            "--quote",
            str(quote_file),
            "--pccs-url",
            workload.stack.sim.url,
            "--root-ca",
            str(workload.stack.tmp / "sim-state" / "root_ca.pem"),
            "--event-log",
            str(log_file),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    verdict = json.loads(done.stdout)
    assert done.returncode == 0, verdict
    assert verdict["event_log"]["matches"] is True
    assert verdict["event_log"]["workload"]["image"] == image


def _tampered(event_log: str, mutate: Callable[[list[dict[str, Any]]], None]) -> str:
    doc = json.loads(event_log)
    mutate(doc["events"])
    return json.dumps(doc)


def test_tampered_and_truncated_logs_are_refused_with_a_reason(
    workload: Workload, image: str
) -> None:
    assert workload.configure(image).status_code == 200
    record = _record(workload.stack, workload.instance)
    genuine = record["event_log"]
    assert isinstance(genuine, str)

    def other_image(events: list[dict[str, Any]]) -> None:
        for event in events:
            if event.get("image") == image:
                event["image"] = "localhost/something-else:1"

    def drop_last(events: list[dict[str, Any]]) -> None:
        events.pop()

    for mutate in (other_image, drop_last):
        forged = _tampered(genuine, mutate)
        r = httpx.post(
            workload.stack.registry.url + "/register",
            json=_fresh_body(workload, record, forged),
        )
        assert_error(r, 401, "RTMR3")
    # The captured registration itself cannot be replayed: its challenge is spent.
    keys = ("instance_pubkey", "ppid", "attestation_quote", "operator", "owner", "event_log")
    captured = {k: record[k] for k in keys}
    captured |= {
        "challenge": record["challenge"],
        "instance_signature": record["proof_of_possession"],
    }
    r = httpx.post(workload.stack.registry.url + "/register", json=captured)
    assert_error(r, 401, "challenge")
    # The genuine log is still what the registry holds, and it is accepted again afresh.
    r = httpx.post(
        workload.stack.registry.url + "/register",
        json=_fresh_body(workload, record, genuine),
    )
    assert r.status_code == 200, r.text
    assert _record(workload.stack, workload.instance)["event_log"] == genuine


def test_a_helper_not_on_the_registry_allow_list_is_refused(
    make_stack: Callable[..., Stack],
) -> None:
    # Pin podman to a build ID no real podman has: the instance's own log must be refused.
    stack = make_stack(registry_env={"REGISTRY_PIN_HELPERS": "podman=" + "ab" * 20})
    instance = bytes.fromhex(httpx.get(stack.identity.url + "/instance/pubkey").json()["pubkey"])
    operator = Ed25519PrivateKey.generate()
    r = httpx.post(
        stack.identity.url + "/operator/register",
        json={
            "pubkey": raw_key(operator).hex(),
            "signature": sign_instance_v2(operator, "operator", instance).hex(),
        },
        timeout=60,
    )
    assert r.status_code == 401, r.text
    assert "policy" in r.json()["error"]
    assert httpx.get(f"{stack.registry.url}/instance/{instance.hex()}").status_code == 404
    assert httpx.get(stack.identity.url + "/instance/state").json()["state"] == "fresh"
