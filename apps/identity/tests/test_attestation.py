"""GET /instance/attestation: a fresh quote over the challenge binding of (instance key, nonce),
taken while the RTMR3 event log is frozen, so that the log it answers replays to its RTMR3."""

from __future__ import annotations

import asyncio
import base64
import json
from dataclasses import dataclass

import httpx
import pytest
from conftest import Running, instance_pubkey, register_operator, register_owner, sign
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fakes import FakeQuoteSource, FakeRegistry, FakeRtmr

from tdx_identity import Settings
from tdx_identity.core.state import STATE_FILE_NAME
from tdx_measure import EventLog, WorkloadEvent, verify_log
from tdx_quote import parse_quote
from tdx_report_data import challenge_report_data, report_data_for_v2


async def attest(client: httpx.AsyncClient, nonce: str) -> httpx.Response:
    return await client.get("/instance/attestation", params={"nonce": nonce})


def check_answer(answer: dict[str, str], instance: bytes, nonce: bytes) -> EventLog:
    """The answer's quote carries the challenge binding and its log replays to its RTMR3."""
    assert set(answer) == {"instance_pubkey", "nonce", "quote", "event_log"}
    assert answer["instance_pubkey"] == instance.hex()
    assert answer["nonce"] == nonce.hex()
    quote = parse_quote(base64.b64decode(answer["quote"], validate=True), allow_zero_padding=True)
    assert quote.body.report_data == challenge_report_data(instance, nonce)
    log = EventLog.from_json(answer["event_log"])
    verify_log(log, quote.body.rtmr3)
    return log


@pytest.mark.parametrize("size", [16, 32, 64])
async def test_a_nonce_gets_a_fresh_quote_over_the_challenge_binding(
    running: Running, quotes: FakeQuoteSource, rtmr: FakeRtmr, size: int
) -> None:
    nonce = bytes(range(size))
    async with running() as client:
        instance = await instance_pubkey(client)
        asked_before = len(quotes.requests)
        response = await attest(client, nonce.hex())
        assert response.status_code == 200, response.text
        check_answer(response.json(), instance, nonce)
        again = await attest(client, nonce.hex().upper())
        assert again.status_code == 200
    assert quotes.requests[asked_before:] == [challenge_report_data(instance, nonce)] * 2
    assert rtmr.extended, "the answer's log is the started log"


async def test_the_challenge_never_asks_for_a_registration_binding(
    running: Running, quotes: FakeQuoteSource, registry: FakeRegistry, settings: Settings
) -> None:
    async with running() as client:
        await register_operator(client, Ed25519PrivateKey.generate())
        instance = await instance_pubkey(client)
        before = (settings.storage_path / STATE_FILE_NAME).read_bytes()
        start = len(quotes.requests)
        assert (await attest(client, "ab" * 32)).status_code == 200
        assert (settings.storage_path / STATE_FILE_NAME).read_bytes() == before
    [asked] = quotes.requests[start:]
    ppid = bytes.fromhex(json.loads(before)["ppid"])
    [spent] = registry.challenges
    assert asked != report_data_for_v2(instance, ppid, spent, None, None)
    assert asked != report_data_for_v2(instance, ppid, bytes.fromhex("ab" * 32), None, None)


@pytest.mark.parametrize(
    "query",
    [
        {},
        {"nonce": ""},
        {"nonce": "00" * 15},
        {"nonce": "00" * 65},
        {"nonce": "0" * 33},
        {"nonce": "zz" * 16},
        {"nonce": "0x" + "00" * 16},
        {"nonce": " " + "00" * 16},
        {"nonce": "\uff10" * 32},
        {"nonce": ["00" * 16, "11" * 16]},
        {"other": "00" * 16},
    ],
)
async def test_a_missing_or_malformed_nonce_is_400_with_a_reason(
    running: Running, quotes: FakeQuoteSource, query: dict[str, str | list[str]]
) -> None:
    async with running() as client:
        start = len(quotes.requests)
        response = await client.get("/instance/attestation", params=query)
    assert response.status_code == 400, response.text
    assert "nonce" in response.json()["error"]
    assert quotes.requests[start:] == []


@pytest.mark.parametrize(
    ("nonce", "reason"),
    [
        ("", "nonce must be 16 to 64 bytes"),
        ("00" * 15, "nonce must be 16 to 64 bytes"),
        ("00" * 65, "nonce must be 16 to 64 bytes"),
        ("0" * 33, "nonce must be an even number of hex digits"),
        ("zz" * 16, "nonce must be an even number of hex digits"),
    ],
)
async def test_the_reason_names_what_is_wrong_with_the_nonce(
    running: Running, nonce: str, reason: str
) -> None:
    async with running() as client:
        response = await attest(client, nonce)
    assert response.status_code == 400
    assert response.json() == {"error": reason}


async def test_a_failing_quote_source_is_503(running: Running, quotes: FakeQuoteSource) -> None:
    async with running() as client:
        quotes.fail = True
        response = await attest(client, "00" * 16)
    assert response.status_code == 503
    assert response.json()["error"]


@dataclass
class SlowQuoteSource(FakeQuoteSource):
    """A quote source that reads RTMR3 only after a pause, as a TD's quote reflects the register
    when the quote is made: an extension in that pause would show in the quote."""

    pause: float = 0.0

    async def get_quote(self, report_data: bytes) -> bytes:
        await asyncio.sleep(self.pause)
        return await super().get_quote(report_data)


async def test_the_quote_is_taken_while_the_log_is_frozen(running: Running, rtmr: FakeRtmr) -> None:
    slow = SlowQuoteSource(rtmr=rtmr)
    owner = Ed25519PrivateKey.generate()
    async with running(quote_source=slow) as client:
        token = (await register_operator(client, Ed25519PrivateKey.generate())).json()
        await register_owner(client, owner, token["owner_token"])
        instance = await instance_pubkey(client)
        raw = json.dumps(
            {
                "action": "configure",
                "seq": 1,
                "instance_pubkey": instance.hex(),
                "image": "localhost/site:1",
                "persist_dirs": [],
                "port": 8080,
            }
        ).encode()
        slow.pause = 0.3
        nonces = [bytes([n]) * 16 for n in range(3)]
        answers = await asyncio.gather(
            attest(client, nonces[0].hex()),
            client.post(
                "/workload/configure", content=raw, headers={"x-signature": sign(owner, raw)}
            ),
            attest(client, nonces[1].hex()),
        )
        final = await attest(client, nonces[2].hex())
    assert [a.status_code for a in answers] == [200, 200, 200]
    check_answer(answers[0].json(), instance, nonces[0])
    check_answer(answers[2].json(), instance, nonces[1])
    last = check_answer(final.json(), instance, nonces[2])
    assert [e.transition for e in last.events if isinstance(e, WorkloadEvent)] == ["configure"]
