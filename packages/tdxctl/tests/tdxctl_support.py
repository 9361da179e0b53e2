"""A simulated TD for the tests: real sim quotes over real bindings, a real RTMR3 event log,
the registry record and challenge answers it would produce, the real registry holding its
record and the identity service's read routes answering as it would."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import itertools
import json
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, redirect_stdout
from io import StringIO
from pathlib import Path
from typing import Any

import httpx
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sanic import Request, Sanic
from sanic.response import HTTPResponse
from sanic.response import json as json_response

from tdx_measure import (
    BootEvent,
    Event,
    EventLog,
    ExecutableEvent,
    IdentityEvent,
    IdentityRole,
    SshHostKeyEvent,
    WorkloadEvent,
    event_digest,
    ssh_ed25519_line,
)
from tdx_registry import DatabaseTarget, Settings, create_app
from tdx_registry.cli import main as registry_main
from tdx_report_data import (
    IdentityInfo,
    challenge_report_data,
    prove_possession,
    report_data_for,
    report_data_for_v2,
    sign_identity,
    sign_identity_v2,
    sign_instance_v2,
)
from tdx_service_kit.testing import serve
from tdx_sim import SimOptions, SimPlatform
from tdxctl import AttestationAnswer, RegistryRecord

_names = itertools.count()

REGISTRY_REFUSAL = "policy: TCB status UpToDate is not accepted"
"""How the registry's re-appraisal of `reappraise_refusing` words its verdict (its start)."""


async def reappraise_refusing(db_path: Path, sim_url: str, root_file: Path) -> dict[str, Any]:
    """`tdx-registry reappraise` over the registry's SQLite database with a policy that no
    longer accepts UpToDate: each record's verdict becomes the registry's refusal
    (`verification.refused`), written as the real re-appraisal writes it; its JSON summary."""
    argv = ["reappraise", "--db-path", str(db_path), "--pccs-url", sim_url,
            "--trusted-root-ca", str(root_file), "--accept-tcb-status", "SWHardeningNeeded",
            "--any-measurement", "--log-level", "ERROR"]  # fmt: skip
    out = StringIO()

    def run() -> int:
        with redirect_stdout(out):
            return registry_main(argv)

    status = await asyncio.to_thread(run)
    summary: dict[str, Any] = json.loads(out.getvalue())
    assert status == 0 and summary["changed"] >= 1, summary
    return summary


def raw(key: Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes_raw()


def host_key_line(key: Ed25519PrivateKey) -> str:
    return ssh_ed25519_line(raw(key))


PODMAN = ExecutableEvent(
    role="podman",
    path="/usr/bin/podman",
    sha384=bytes(range(48)),
    build_id=bytes(range(20)),
    machine="EM_X86_64",
)
CONFIGURE = WorkloadEvent(
    transition="configure",
    image="localhost/app:1",
    image_id="sha256:" + "ab" * 32,
    persist_dirs=("/data",),
    port=8080,
)


class SimTd:
    """One simulated TD on the sim PKI in `state_dir`: its instance key, its registers (a
    fresh boot) and the RTMR3 log it keeps, extended as the identity service would.
    `challenge` is the registry nonce its latest (v2) registration bound."""

    def __init__(self, state_dir: Path, options: SimOptions | None = None) -> None:
        self.platform = SimPlatform(state_dir, options or SimOptions())
        self.instance = Ed25519PrivateKey.generate()
        self.log = EventLog(BootEvent.fresh(timestamp=1_800_000_000))
        self.platform.rtmrs.extend(3, event_digest(self.log.boot))
        self.operator: IdentityInfo | None = None
        self.owner: IdentityInfo | None = None
        self.ssh_host_key = Ed25519PrivateKey.generate()
        self.challenge = os.urandom(32)

    @property
    def pubkey(self) -> bytes:
        return raw(self.instance)

    def append(self, event: Event) -> None:
        self.platform.rtmrs.extend(3, self.log.append(event))

    def identity(self, key: Ed25519PrivateKey, role: IdentityRole) -> IdentityInfo:
        """`key` accepted in `role` with both v2 signatures, as the identity service makes it."""
        return sign_identity_v2(
            self.instance, role, raw(key), sign_instance_v2(key, role, self.pubkey)
        )

    def identity_v1(self, key: Ed25519PrivateKey) -> IdentityInfo:
        """`key` with both v1 signatures (over raw keys, naming no role)."""
        return sign_identity(self.instance, raw(key), key.sign(self.pubkey))

    def register(
        self, role: IdentityRole, key: Ed25519PrivateKey, *, v1: bool = False
    ) -> IdentityInfo:
        """Measure the identity, as the service does before its registration's quote."""
        identity = self.identity_v1(key) if v1 else self.identity(key, role)
        self.append(IdentityEvent(role=role, pubkey=raw(key)))
        setattr(self, role, identity)
        return identity

    def delegated(
        self, operator: Ed25519PrivateKey, owner: Ed25519PrivateKey, *, v1: bool = False
    ) -> SimTd:
        """The whole lifecycle up to a configured workload with SSH open (`v1`: identities
        with v1 signatures)."""
        self.append(PODMAN)
        self.register("operator", operator, v1=v1)
        self.register("owner", owner, v1=v1)
        self.append(SshHostKeyEvent(public_key=host_key_line(self.ssh_host_key)))
        self.append(CONFIGURE)
        return self

    def quote(self, report_data: bytes) -> bytes:
        return self.platform.quote(report_data)

    def record_object(self, *, v1: bool = False, **overrides: Any) -> dict[str, Any]:
        """The registry's JSON for this TD now (what GET /instance/{pubkey} answers): a v2
        registration over `challenge`, or (`v1`) a v1 registration."""
        operator, owner, ppid = self.operator, self.owner, self.platform.ppid
        if v1:
            report_data = report_data_for(self.pubkey, ppid, operator, owner)
        else:
            report_data = report_data_for_v2(self.pubkey, ppid, self.challenge, operator, owner)
        obj: dict[str, Any] = {
            "instance_pubkey": self.pubkey.hex(),
            "ppid": ppid.hex(),
            "attestation_quote": base64.b64encode(self.quote(report_data)).decode(),
            "operator": None if operator is None else operator.to_object(),
            "owner": None if owner is None else owner.to_object(),
            "event_log": self.log.to_json(),
            "ssh_host_key": self.log.ssh_host_key,
            "binding_version": 1 if v1 else 2,
            "challenge": None if v1 else self.challenge.hex(),
            "proof_of_possession": (
                None if v1 else prove_possession(self.instance, self.challenge, report_data).hex()
            ),
        }
        obj.update(overrides)
        return obj

    def record(self, *, v1: bool = False, **overrides: Any) -> RegistryRecord:
        return RegistryRecord.from_object(self.record_object(v1=v1, **overrides))

    def registration_body(self, challenge: bytes) -> dict[str, Any]:
        """The v2 POST /register body the identity service would send now, over the registry's
        `challenge`."""
        self.challenge = challenge
        record = self.record_object()
        body = {key: record[key] for key in ("instance_pubkey", "ppid", "attestation_quote")}
        body.update(operator=record["operator"], owner=record["owner"])
        body.update(
            event_log=record["event_log"],
            challenge=record["challenge"],
            instance_signature=record["proof_of_possession"],
        )
        return body

    def answer(self, nonce: bytes, *, report_data: bytes | None = None) -> AttestationAnswer:
        """The service's answer to GET /instance/attestation?nonce=."""
        data = challenge_report_data(self.pubkey, nonce) if report_data is None else report_data
        return AttestationAnswer(
            instance_pubkey=self.pubkey,
            nonce=nonce,
            quote=self.quote(data),
            event_log=self.log.to_json(),
        )


def altered_log(log: EventLog) -> str:
    """`log`'s JSON with its workload events naming another image: well formed, but it no
    longer replays to the RTMR3 the quote reports."""
    altered = EventLog(log.boot)
    for event in log.events[1:]:
        if isinstance(event, WorkloadEvent):
            event = dataclasses.replace(event, image="localhost/other:1")
        altered.append(event)
    return altered.to_json()


@asynccontextmanager
async def served_registry(db_path: Path, td: SimTd, sim_url: str) -> AsyncIterator[str]:
    """The real registry on loopback (SQLite at `db_path`), trusting the sim's root, holding
    `td`'s record as a v2 registration of its state now; its base URL."""
    settings = Settings(
        database=DatabaseTarget(sqlite_path=db_path),
        pccs_url=sim_url,
        trusted_root_ca_pem=td.platform.root_ca_pem,
        rate_limit=None,
    )
    async with serve(create_app(settings, name=f"served-registry-{next(_names)}")) as url:
        async with httpx.AsyncClient(base_url=url) as client:
            nonce = bytes.fromhex((await client.get("/challenge")).json()["nonce"])
            answer = await client.post("/register", json=td.registration_body(nonce))
            assert answer.status_code == 200, answer.text
        yield url


def identity_app(td: SimTd) -> Sanic[Any, Any]:
    """The identity service's read routes as `td` answers them now (API.md): GET
    /instance/pubkey, and GET /instance/attestation?nonce= with a fresh sim quote over the
    challenge binding and the TD's current log."""
    app: Sanic[Any, Any] = Sanic(f"sim-identity-{next(_names)}")

    @app.get("/instance/pubkey")
    async def pubkey(request: Request) -> HTTPResponse:
        return json_response({"pubkey": td.pubkey.hex()})

    @app.get("/instance/attestation")
    async def attestation(request: Request) -> HTTPResponse:
        answer = td.answer(bytes.fromhex(request.args["nonce"][0]))
        return json_response(
            {
                "instance_pubkey": answer.instance_pubkey.hex(),
                "nonce": answer.nonce.hex(),
                "quote": base64.b64encode(answer.quote).decode(),
                "event_log": answer.event_log,
            }
        )

    return app
