"""End to end: a registration carrying the simulated TD's CCEL, against a registry that pins the
kernel and the command line by digest and verifies every sim quote through the full DCAP path
(trusting the sim's root only because the test names it in TDX_TRUSTED_ROOT_CA).

The ccel replays to the RTMR0-2 of the verified sim quote: accepted, and GET /instance shows the
measured boot. Without a ccel, with the real Google Cloud CCEL (another boot), or with a pin the
sim's kernel does not meet, the registration is refused (401) and nothing is stored. The real
identity service sends its CCEL (the sim's GET /ccel) with every registration."""

from __future__ import annotations

import base64
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from tdx_ppid import quote_ppid
from tdx_quote import parse_quote
from tdx_report_data import prove_possession, report_data_for_v2, sign_instance_v2
from tdx_sim.ccel import SIM_CCEL, SIM_CMDLINE, SIM_CMDLINE_SHA384, SIM_KERNEL_SHA384
from tests.conftest import Stack
from tests.vectors import GCP_CCEL, read_vector

pytestmark = pytest.mark.e2e


def _registration(stack: Stack, key: Ed25519PrivateKey, ccel: bytes | None) -> dict[str, Any]:
    """A v2 registration of `key` over a fresh challenge: a genuine sim quote carrying the TD's
    current RTMR3, with the identity service's event log and `ccel`."""
    pubkey = key.public_key().public_bytes_raw()
    sim = stack.sim.url
    challenge = bytes.fromhex(httpx.get(stack.registry.url + "/challenge").json()["nonce"])
    probe = httpx.get(f"{sim}/attest/{'00' * 64}", timeout=30).content
    ppid = quote_ppid(parse_quote(probe, allow_zero_padding=True)).value
    report_data = report_data_for_v2(pubkey, ppid, challenge, None, None)
    quote = httpx.get(f"{sim}/attest/{report_data.hex()}", timeout=30).content
    body: dict[str, Any] = {
        "instance_pubkey": pubkey.hex(),
        "ppid": ppid.hex(),
        "attestation_quote": base64.b64encode(quote).decode(),
        "operator": None,
        "owner": None,
        "event_log": httpx.get(stack.identity.url + "/instance/eventlog").text,
        "challenge": challenge.hex(),
        "instance_signature": prove_possession(key, challenge, report_data).hex(),
    }
    if ccel is not None:
        body["ccel"] = base64.b64encode(ccel).decode()
    return body


def _register(stack: Stack, body: dict[str, Any]) -> httpx.Response:
    return httpx.post(stack.registry.url + "/register", json=body, timeout=60)


def _record(stack: Stack, key: Ed25519PrivateKey) -> httpx.Response:
    pubkey = key.public_key().public_bytes_raw()
    return httpx.get(f"{stack.registry.url}/instance/{pubkey.hex()}", timeout=30)


def test_the_sims_ccel_meets_the_pins_and_its_boot_is_shown(
    make_stack: Callable[..., Stack],
) -> None:
    stack = make_stack(
        registry_env={
            "REGISTRY_PIN_KERNEL": f"{'00' * 48},{SIM_KERNEL_SHA384.hex()}",
            "REGISTRY_PIN_CMDLINE": SIM_CMDLINE_SHA384.hex(),
        }
    )
    key = Ed25519PrivateKey.generate()
    assert httpx.get(stack.sim.url + "/ccel").content == SIM_CCEL

    missing = _register(stack, _registration(stack, key, None))
    assert missing.status_code == 401 and missing.json()["error"].startswith("ccel required")
    foreign = _register(stack, _registration(stack, key, read_vector(GCP_CCEL)))
    assert foreign.status_code == 401
    assert (
        "ccel does not replay to the verified quote's RTMR0, RTMR1, RTMR2"
        in (foreign.json()["error"])
    )
    assert _record(stack, key).status_code == 404

    accepted = _register(stack, _registration(stack, key, SIM_CCEL))
    assert accepted.status_code == 200, accepted.text
    record = _record(stack, key).json()
    assert record["verification"]["skipped"] is False
    assert record["verification"]["tcb_status"] == "UpToDate"
    boot = record["ccel"]
    assert boot["events"] == 13
    assert boot["components"]["kernel"]["sha384"] == SIM_KERNEL_SHA384.hex()
    assert boot["components"]["kernel"]["path"] == "/boot/vmlinuz"
    assert boot["components"]["cmdline"] == {
        "sha384": SIM_CMDLINE_SHA384.hex(),
        "text": SIM_CMDLINE,
        "event": 9,
    }
    assert [i["path"] for i in boot["components"]["initrds"]] == ["/boot/initrd.img"]


def test_a_kernel_pin_the_sim_does_not_meet_refuses_its_ccel(
    make_stack: Callable[..., Stack],
) -> None:
    stack = make_stack(registry_env={"REGISTRY_PIN_KERNEL": "11" * 48})
    key = Ed25519PrivateKey.generate()
    refused = _register(stack, _registration(stack, key, SIM_CCEL))
    assert refused.status_code == 401
    assert f"kernel {SIM_KERNEL_SHA384.hex()} is not pinned" in refused.json()["error"]
    assert _record(stack, key).status_code == 404


def test_the_identity_service_registers_with_its_ccel_under_the_pins(
    make_stack: Callable[..., Stack],
) -> None:
    """The real identity service sends the sim's CCEL with each registration: a registry that
    pins the sim's kernel and command line accepts its operator's registration and shows the
    measured boot."""
    stack = make_stack(
        registry_env={
            "REGISTRY_PIN_KERNEL": SIM_KERNEL_SHA384.hex(),
            "REGISTRY_PIN_CMDLINE": SIM_CMDLINE_SHA384.hex(),
        }
    )
    operator = Ed25519PrivateKey.generate()
    instance = bytes.fromhex(httpx.get(stack.identity.url + "/instance/pubkey").json()["pubkey"])
    body = {
        "pubkey": operator.public_key().public_bytes_raw().hex(),
        "signature": sign_instance_v2(operator, "operator", instance).hex(),
    }
    registered = httpx.post(stack.identity.url + "/operator/register", json=body, timeout=60)
    assert registered.status_code == 200, registered.text
    record = httpx.get(f"{stack.registry.url}/instance/{instance.hex()}", timeout=30).json()
    assert record["operator"]["pubkey"] == body["pubkey"]
    assert record["ccel"]["components"]["kernel"]["sha384"] == SIM_KERNEL_SHA384.hex()
    assert record["ccel"]["components"]["cmdline"]["text"] == SIM_CMDLINE
