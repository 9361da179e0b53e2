"""Test helpers: the sim platform + PCCS and the broker served in-process, admin tokens, and a
guest that runs the RCAR handshake with real sim quotes over a real RTMR3 event log."""

from __future__ import annotations

import base64
import hashlib
import os
import sqlite3
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from tdx_kbs import DatabaseTarget, KbsStore, Settings, TdImageReference, create_app
from tdx_kbs_protocol import (
    Attestation,
    IdentityEvidence,
    RuntimeData,
    TdxEvidence,
    TeeEvidence,
    TeeKeyPair,
    TeePublicKey,
    make_admin_token,
    runtime_data_binding,
    store_key_path,
)
from tdx_measure import BootEvent, Event, EventLog, ExecutableEvent, IdentityEvent, event_digest
from tdx_service_kit.testing import serve
from tdx_sim import SimOptions, SimPlatform, SimSettings, td_image_allowlists
from tdx_sim import create_app as create_sim_app
from tdx_verify import parse_mrtd_allowlist, parse_rtmr_allowlist

KBS = "/kbs/v0"
AUTH_BODY = {"version": "0.4.0", "tee": "tdx", "extra-params": ""}
ERROR_TYPE_BASE = "https://github.com/confidential-containers/kbs/errors/"


@dataclass
class Sim:
    """A simulated TDX platform's PCCS on loopback, its state directory and options."""

    url: str
    state_dir: Path
    options: SimOptions
    root_ca_pem: bytes

    def platform(self) -> SimPlatform:
        """A fresh TD boot on this platform (same PKI, fresh RTMRs)."""
        return SimPlatform(self.state_dir, self.options)

    def allowlist_args(self) -> list[str]:
        """`tdx-kbs` flags pinning this sim's TD image (its MRTD and boot RTMR0-2)."""
        forms = td_image_allowlists(self.options.mr_td)
        return [
            "--mrtd-allowlist",
            forms["REGISTRY_MRTD_ALLOWLIST"],
            "--rtmr-allowlist",
            forms["REGISTRY_RTMR_ALLOWLIST"],
        ]

    def reference(self) -> TdImageReference:
        """The broker's reference pinning this sim's TD image."""
        forms = td_image_allowlists(self.options.mr_td)
        return TdImageReference(
            mr_td=parse_mrtd_allowlist([forms["REGISTRY_MRTD_ALLOWLIST"]]),
            rtmrs=parse_rtmr_allowlist([forms["REGISTRY_RTMR_ALLOWLIST"]]),
        )


SimRunner = Callable[..., AbstractAsyncContextManager[Sim]]


@asynccontextmanager
async def start_sim(state_dir: Path, name: str, **options: Any) -> AsyncIterator[Sim]:
    sim_options = SimOptions(**options)
    app = create_sim_app(SimSettings(state_dir=state_dir, options=sim_options))
    app.name = name.replace("-", "_")
    async with serve(app) as url:
        yield Sim(url, state_dir, sim_options, app.ctx.platform.root_ca_pem)


def pem_public(key: Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def raw_public(key: Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes_raw()


@dataclass
class Broker:
    """A broker on loopback: its client, admin key, settings and files."""

    client: httpx.AsyncClient
    url: str
    admin: Ed25519PrivateKey
    settings: Settings
    sim: Sim
    app: Any

    def admin_token(self, **kwargs: Any) -> str:
        return make_admin_token(self.admin, **kwargs)

    def admin_headers(self, **kwargs: Any) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.admin_token(**kwargs)}"}

    async def put(self, path: str, data: bytes, **kwargs: Any) -> httpx.Response:
        return await self.client.post(
            f"{KBS}/resource/{path}", content=data, headers=self.admin_headers(**kwargs)
        )

    async def set_policy(self, rego: str, **kwargs: Any) -> httpx.Response:
        encoded = base64.urlsafe_b64encode(rego.encode()).rstrip(b"=").decode()
        return await self.client.post(
            f"{KBS}/resource-policy", json={"policy": encoded}, headers=self.admin_headers(**kwargs)
        )

    @property
    def store(self) -> KbsStore:
        store: KbsStore = self.app.ctx.store
        return store

    def guest_client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.url, timeout=30)


@asynccontextmanager
async def start_broker(
    sim: Sim,
    tmp: Path,
    name: str,
    *,
    admin: Ed25519PrivateKey | None = None,
    database: DatabaseTarget | None = None,
    clock: Callable[[], float] | None = None,
    **overrides: Any,
) -> AsyncIterator[Broker]:
    admin_key = admin or Ed25519PrivateKey.generate()
    overrides.setdefault("rate_limit", None)
    overrides.setdefault("reference", sim.reference())
    settings = Settings(
        database=database or DatabaseTarget(sqlite_path=tmp / "kbs.db"),
        storage_key_path=tmp / "storage.key",
        admin_pubkey=admin_key.public_key(),
        pccs_url=overrides.pop("pccs_url", sim.url),
        trusted_root_ca_pem=overrides.pop("trusted_root_ca_pem", sim.root_ca_pem),
        **overrides,
    )
    app = create_app(settings, name=name, clock=time.time if clock is None else clock)
    async with serve(app) as url, httpx.AsyncClient(base_url=url, timeout=30) as client:
        yield Broker(client, url, admin_key, settings, sim, app)


def error_variant(response: httpx.Response) -> str:
    """The Trustee variant of an error answer (asserting the body is exactly error_body's)."""
    body = response.json()
    assert set(body) == {"type", "detail", "error"}, body
    assert body["type"].startswith(ERROR_TYPE_BASE), body
    assert body["detail"] == body["error"]
    variant: str = body["type"][len(ERROR_TYPE_BASE) :]
    return variant


def helper_event(role: str) -> ExecutableEvent:
    return ExecutableEvent(
        role=role,
        path=f"/usr/bin/{role}",
        sha384=hashlib.sha384(role.encode()).digest(),
        build_id=None,
        machine="EM_X86_64",
    )


@dataclass
class Guest:
    """A TD on `sim` running tdx-identity: its instance key, its RTMR3 log (a boot, a helper,
    an operator and an owner identity), extended into its platform's RTMR3 as it is built."""

    sim: Sim
    owner: Ed25519PrivateKey | None = None
    operator: Ed25519PrivateKey = field(default_factory=Ed25519PrivateKey.generate)
    instance_key: Ed25519PrivateKey = field(default_factory=Ed25519PrivateKey.generate)
    platform: SimPlatform = field(init=False)
    log: EventLog = field(init=False)

    def __post_init__(self) -> None:
        self.platform = self.sim.platform()
        self.log = EventLog(BootEvent(boot_nonce=os.urandom(32), timestamp=1_800_000_000))
        self.platform.rtmrs.extend(3, event_digest(self.log.events[0]))
        self.measure(helper_event("podman"))
        self.measure(IdentityEvent(role="operator", pubkey=raw_public(self.operator)))
        if self.owner is not None:
            self.measure(IdentityEvent(role="owner", pubkey=raw_public(self.owner)))

    def measure(self, event: Event) -> None:
        """Append `event` to the log and extend it into RTMR3, as the identity service does."""
        self.log.append(event)
        self.platform.rtmrs.extend(3, event_digest(event))

    @property
    def instance_pubkey(self) -> bytes:
        return raw_public(self.instance_key)

    @property
    def store_key_path(self) -> str:
        return str(store_key_path(self.instance_pubkey))

    def attest_body(
        self,
        nonce: str,
        tee: TeeKeyPair,
        *,
        tee_pubkey: TeePublicKey | None = None,
        quote_nonce: str | None = None,
        event_log: str | None = None,
        report_data: bytes | None = None,
        possession_key: Ed25519PrivateKey | None = None,
        quote_transform: Callable[[bytes], bytes] | None = None,
    ) -> dict[str, Any]:
        """An attest body over `nonce` whose quote binds it (each knob breaks one part)."""
        pub = tee.public if tee_pubkey is None else tee_pubkey
        log_text = self.log.to_json() if event_log is None else event_log
        signer = self.instance_key if possession_key is None else possession_key
        evidence = IdentityEvidence.create(signer, nonce, pub, log_text)
        if possession_key is not None:
            evidence = IdentityEvidence(
                instance_pubkey=self.instance_pubkey,
                event_log=evidence.event_log,
                possession=evidence.possession,
            )
        additional = evidence.encode()
        bound_nonce = nonce if quote_nonce is None else quote_nonce
        data = (
            runtime_data_binding(bound_nonce, pub, additional)
            if report_data is None
            else report_data
        )
        quote = self.platform.quote(data)
        if quote_transform is not None:
            quote = quote_transform(quote)
        attestation = Attestation(
            runtime_data=RuntimeData(nonce=nonce, tee_pubkey=pub),
            tee_evidence=TeeEvidence(
                primary_evidence=TdxEvidence(quote=quote, cc_eventlog=None),
                additional_evidence=additional,
            ),
            init_data=None,
        )
        return attestation.to_json()

    async def auth(self, client: httpx.AsyncClient) -> str:
        response = await client.post(f"{KBS}/auth", json=AUTH_BODY)
        assert response.status_code == 200, response.text
        nonce: str = response.json()["nonce"]
        return nonce

    async def attest(
        self, client: httpx.AsyncClient, tee: TeeKeyPair | None = None, **knobs: Any
    ) -> httpx.Response:
        """auth then attest on `client`'s cookie jar."""
        nonce = await self.auth(client)
        return await client.post(
            f"{KBS}/attest", json=self.attest_body(nonce, tee or TeeKeyPair.generate(), **knobs)
        )


def db_contains(db_path: Path, needle: bytes) -> bool:
    """Whether any cell of any table of the SQLite file holds `needle` (bytes or text), or the
    raw file does (WAL included)."""
    for suffix in ("", "-wal"):
        path = db_path.with_name(db_path.name + suffix)
        if path.exists() and needle in path.read_bytes():
            return True
    with sqlite3.connect(db_path) as conn:
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        for table in tables:
            for row in conn.execute(f'SELECT * FROM "{table}"'):
                for cell in row:
                    raw = cell.encode() if isinstance(cell, str) else cell
                    if isinstance(raw, bytes) and needle in raw:
                        return True
    return False


class Clock:
    """A settable clock (seconds since the epoch) for session and token expiry."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now
