"""A simulated TD for the tests: real sim quotes over real bindings, a real RTMR3 event log,
and the registry record and challenge answers it would produce."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

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
from tdx_report_data import (
    IdentityInfo,
    challenge_report_data,
    report_data_for,
    sign_identity,
)
from tdx_sim import SimOptions, SimPlatform
from tdxctl import AttestationAnswer, RegistryRecord


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
    fresh boot) and the RTMR3 log it keeps, extended as the identity service would."""

    def __init__(self, state_dir: Path, options: SimOptions | None = None) -> None:
        self.platform = SimPlatform(state_dir, options or SimOptions())
        self.instance = Ed25519PrivateKey.generate()
        self.log = EventLog(BootEvent.fresh(timestamp=1_800_000_000))
        self.platform.rtmrs.extend(3, event_digest(self.log.boot))
        self.operator: IdentityInfo | None = None
        self.owner: IdentityInfo | None = None
        self.ssh_host_key = Ed25519PrivateKey.generate()

    @property
    def pubkey(self) -> bytes:
        return raw(self.instance)

    def append(self, event: Event) -> None:
        self.platform.rtmrs.extend(3, self.log.append(event))

    def identity(self, key: Ed25519PrivateKey) -> IdentityInfo:
        return sign_identity(self.instance, raw(key), key.sign(self.pubkey))

    def register(self, role: IdentityRole, key: Ed25519PrivateKey) -> IdentityInfo:
        """Measure the identity, as the service does before its registration's quote."""
        identity = self.identity(key)
        self.append(IdentityEvent(role=role, pubkey=raw(key)))
        setattr(self, role, identity)
        return identity

    def delegated(self, operator: Ed25519PrivateKey, owner: Ed25519PrivateKey) -> SimTd:
        """The whole lifecycle up to a configured workload with SSH open."""
        self.append(PODMAN)
        self.register("operator", operator)
        self.register("owner", owner)
        self.append(SshHostKeyEvent(public_key=host_key_line(self.ssh_host_key)))
        self.append(CONFIGURE)
        return self

    def quote(self, report_data: bytes) -> bytes:
        return self.platform.quote(report_data)

    def record_object(self, **overrides: Any) -> dict[str, Any]:
        """The registry's JSON for this TD now (what GET /instance/{pubkey} answers)."""
        operator, owner = self.operator, self.owner
        quote = self.quote(report_data_for(self.pubkey, self.platform.ppid, operator, owner))
        obj: dict[str, Any] = {
            "instance_pubkey": self.pubkey.hex(),
            "ppid": self.platform.ppid.hex(),
            "attestation_quote": base64.b64encode(quote).decode(),
            "operator": None if operator is None else operator.to_object(),
            "owner": None if owner is None else owner.to_object(),
            "event_log": self.log.to_json(),
            "ssh_host_key": self.log.ssh_host_key,
        }
        obj.update(overrides)
        return obj

    def record(self, **overrides: Any) -> RegistryRecord:
        return RegistryRecord.from_object(self.record_object(**overrides))

    def registration_body(self) -> dict[str, Any]:
        """The POST /register body the identity service would send now."""
        body = self.record_object()
        del body["ssh_host_key"]
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
