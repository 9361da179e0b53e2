"""End to end: a verifier challenges the real identity service (quotes from the real sim) with
a nonce, and checks the answer as an operator would before signing for the instance: full DCAP
of the quote against the sim's root, the challenge binding in its report_data, and the event
log replayed to its RTMR3; a malformed nonce is 400."""

from __future__ import annotations

import base64
import json
import secrets
import subprocess
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from tdx_ppid import quote_ppid
from tdx_quote import parse_quote
from tdx_report_data import challenge_report_data, report_data_for_v2
from tests.conftest import Stack
from tests.procs import program

pytestmark = pytest.mark.e2e


def _verify_quote(stack: Stack, tmp_path: Path, quote: bytes, event_log: str) -> dict[str, object]:
    quote_file, log_file = tmp_path / "challenge-quote.bin", tmp_path / "challenge-log.json"
    quote_file.write_bytes(quote)
    log_file.write_text(event_log)
    done = subprocess.run(
        [
            program("verify-quote"),
            "--quote",
            str(quote_file),
            "--pccs-url",
            stack.sim.url,
            "--root-ca",
            str(stack.tmp / "sim-state" / "root_ca.pem"),
            "--event-log",
            str(log_file),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    verdict: dict[str, object] = json.loads(done.stdout)
    assert done.returncode == 0, verdict
    return verdict


def test_a_challenge_answer_verifies_binds_the_nonce_and_its_log_replays(
    make_stack: Callable[..., Stack], tmp_path: Path
) -> None:
    stack = make_stack()
    instance = bytes.fromhex(httpx.get(stack.identity.url + "/instance/pubkey").json()["pubkey"])
    nonce = secrets.token_bytes(32)
    r = httpx.get(
        stack.identity.url + "/instance/attestation", params={"nonce": nonce.hex()}, timeout=60
    )
    assert r.status_code == 200, r.text
    answer = r.json()
    assert (answer["instance_pubkey"], answer["nonce"]) == (instance.hex(), nonce.hex())
    quote = base64.b64decode(answer["quote"], validate=True)
    assert parse_quote(quote).body.report_data == challenge_report_data(instance, nonce)
    verdict = _verify_quote(stack, tmp_path, quote, answer["event_log"])
    assert verdict["valid"] is True
    event_log = verdict["event_log"]
    assert isinstance(event_log, dict) and event_log["matches"] is True

    # A challenge answer never passes as a registration: not as a v1 body, and not as a v2 one
    # over a fresh registry challenge (its report_data is no registration binding, and whoever
    # forwards it does not hold the instance key to prove possession).
    ppid = quote_ppid(parse_quote(quote)).value
    registry_nonce = bytes.fromhex(httpx.get(stack.registry.url + "/challenge").json()["nonce"])
    registration = report_data_for_v2(instance, ppid, registry_nonce, None, None)
    assert registration != challenge_report_data(instance, nonce)
    forged: dict[str, object] = {
        "instance_pubkey": instance.hex(),
        "ppid": ppid.hex(),
        "attestation_quote": answer["quote"],
        "operator": None,
        "owner": None,
        "event_log": answer["event_log"],
    }
    v1 = httpx.post(stack.registry.url + "/register", json=forged, timeout=60)
    assert v1.status_code == 401, v1.text
    assert "v1 registration refused" in v1.json()["error"]
    forged |= {"challenge": registry_nonce.hex(), "instance_signature": "00" * 64}
    v2 = httpx.post(stack.registry.url + "/register", json=forged, timeout=60)
    assert v2.status_code == 401, v2.text
    assert "proof of possession" in v2.json()["error"]
    assert httpx.get(f"{stack.registry.url}/instance/{instance.hex()}").status_code == 404

    for bad in ("", "00" * 15, "00" * 65, "abc", "zz" * 16):
        r = httpx.get(stack.identity.url + "/instance/attestation", params={"nonce": bad})
        assert r.status_code == 400, bad
        assert "nonce" in r.json()["error"]
