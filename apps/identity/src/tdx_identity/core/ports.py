"""The small interfaces the core asks of the outside world ("ports"), and the values crossing them.

Adapters implement them (`platform`: quote source and RTMR device; `registry_client`: the
registry; `workload`: the workload manager and its store key); `app.create_app` plugs them in.
An adapter imports from the core only this module.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from tdx_identity.core.lifecycle import WorkloadPhase
from tdx_identity.core.state import WorkloadSection
from tdx_identity.workload.config import WorkloadConfig
from tdx_measure import Transition
from tdx_report_data import IdentityInfo

__all__ = [
    "BootLogSource",
    "CommittedWorkload",
    "KeyProvider",
    "QuoteSource",
    "RegistrationRequest",
    "RegistryClient",
    "RegistryRecord",
    "RtmrDevice",
    "TlsCertificateMaker",
    "WorkloadConfig",
    "WorkloadManager",
    "WorkloadPhase",
    "WorkloadSection",
    "WorkloadSectionStore",
]


class QuoteSource(Protocol):
    """Produces a TDX quote whose report_data is exactly the 64 bytes given; raises
    QuoteSourceError."""

    async def get_quote(self, report_data: bytes) -> bytes: ...


class BootLogSource(Protocol):
    """The firmware's CCEL boot event log of this TD (TCG2 crypto-agile, as the ACPI CCEL table
    points to it), raw and unparsed; None when the platform exposes none. Raises
    QuoteSourceError when it exists but cannot be read."""

    async def read_ccel(self) -> bytes | None: ...


class TlsCertificateMaker(Protocol):
    """The attested front's TLS key of this start: the service measures its SPKI (``tls_key``
    event), takes a quote over `report_data()` and hands it back to `install_certificate`."""

    @property
    def spki_der(self) -> bytes:
        """The TLS key's DER SubjectPublicKeyInfo."""
        ...

    def report_data(self) -> bytes:
        """The 64 bytes the certificate's quote must carry (the claims binding the TLS key and
        the instance key)."""
        ...

    def install_certificate(self, quote: bytes) -> None:
        """Make the certificate carrying `quote` and put it where the front reads it;
        FrontError when it cannot."""
        ...


class RtmrDevice(Protocol):
    """Reads and extends RTMR3; raises RtmrDeviceError."""

    async def read_rtmr3(self) -> bytes:
        """The register's current 48-byte value."""
        ...

    async def extend_rtmr3(self, digest: bytes) -> bytes | None:
        """Extend the register with a 48-byte digest; its new value when the device reports it."""
        ...


@dataclass(frozen=True)
class RegistrationRequest:
    """What the registry's v2 POST /register records. `challenge` is the registry's single-use
    nonce the quote's report_data binds, `proof_of_possession` the instance key's signature
    over it and that report_data (`tdx_report_data.prove_possession`), `event_log` the RTMR3
    event log's JSON text (`tdx_measure.EventLog.to_json()`) that explains the quote's RTMR3."""

    instance_pubkey: bytes
    ppid: bytes
    attestation_quote: bytes
    operator: IdentityInfo | None
    owner: IdentityInfo | None
    challenge: bytes
    proof_of_possession: bytes
    event_log: str | None = None
    ccel: bytes | None = None
    """The firmware's CCEL boot log (`BootLogSource`), which the registry replays against the
    quote's RTMR0-2; None when the platform has none."""

    def to_json(self) -> dict[str, Any]:
        """The JSON body of API.md's v2 POST /register; `"event_log"` only when there is a log,
        `"ccel"` (standard base64) only when there is a boot log."""
        body: dict[str, Any] = {
            "instance_pubkey": self.instance_pubkey.hex(),
            "ppid": self.ppid.hex(),
            "attestation_quote": base64.b64encode(self.attestation_quote).decode("ascii"),
            "operator": self.operator.to_object() if self.operator is not None else None,
            "owner": self.owner.to_object() if self.owner is not None else None,
            "challenge": self.challenge.hex(),
            "instance_signature": self.proof_of_possession.hex(),
        }
        if self.event_log is not None:
            body["event_log"] = self.event_log
        if self.ccel is not None:
            body["ccel"] = base64.b64encode(self.ccel).decode("ascii")
        return body


@dataclass(frozen=True)
class RegistryRecord:
    """The identities the registry's record of an instance names, parsed strictly but not yet
    verified (the core checks their signatures against the instance key), and the latest
    workload transition the record shows (its `workload` or its event log's latest workload
    event; "expose" when either says so), None when it shows none."""

    operator: IdentityInfo | None
    owner: IdentityInfo | None
    workload: Transition | None = None
    workload_image_id: str | None = None
    """The image ID of the latest workload event of the record's event log (else of its
    `workload` member): what the registry accepted the container to run."""


class RegistryClient(Protocol):
    """The registry: hands out challenges, records registrations and answers what it holds for
    an instance."""

    async def challenge(self) -> bytes:
        """A fresh single-use nonce for the next registration (GET /challenge); raises
        RegistryUnavailable when none can be had."""
        ...

    async def register(self, request: RegistrationRequest) -> None:
        """Returns only when the registry accepted it; else RegistryRejected or
        RegistryUnavailable."""
        ...

    async def lookup(self, instance_pubkey: bytes) -> RegistryRecord | None:
        """The record of `instance_pubkey`, None when the registry has none (404); raises
        RegistryUnavailable on any other failure and RegistryRecordMalformed when the record
        does not parse."""
        ...


class KeyProvider(Protocol):
    """Source of the 256-bit key of the encrypted workload store."""

    async def get_key(self) -> bytes:
        """Return the existing key; raise `KeyNotFoundError` if none was created."""
        ...

    async def create_key(self) -> bytes:
        """Create, keep and return a new key; raise `KeyExistsError` if one exists."""
        ...


class WorkloadSectionStore(Protocol):
    """Read and durably replace the state's `workload` section (raises StateWriteError).

    Only call it from inside `configure`, `expose` or `recover`: the service holds its
    transition lock then, so nothing else writes the state at the same time.
    """

    def load(self) -> WorkloadSection | None: ...

    def save(self, section: WorkloadSection | None) -> None: ...


@dataclass(frozen=True)
class CommittedWorkload:
    """What the state file commits about the workload, for `WorkloadManager.recover`."""

    config: WorkloadConfig
    owner_pubkey: bytes
    exposed: bool
    accepted_image_id: str | None = None
    """The image ID the registry's record accepted for this workload (None: not known)."""


class WorkloadManager(Protocol):
    """A container runtime driven by the lifecycle; each call returns once the step is done.

    The service has already asked the lifecycle whether the step may happen; the manager only
    carries it out, raising a WorkloadError if it cannot.
    """

    def helper_programs(self) -> Mapping[str, Path]:
        """The programs this manager runs, by role, as their real paths: what the RTMR3 log
        measures at every start. Raises HelperMeasurementError if one it needs is missing."""
        ...

    async def on_owner_registered(self, owner_pubkey: bytes) -> None:
        """Prepare what the owner's workload will need (the store key); idempotent on retry."""
        ...

    async def configure(self, config: WorkloadConfig, owner_pubkey: bytes) -> None:
        """(Re)create the workload from `config`, unpublished, with SSH setup access closed
        (the registry has not accepted the step yet)."""
        ...

    async def open_setup_access(self, config: WorkloadConfig, owner_pubkey: bytes) -> None:
        """After the registry accepted `configure`: open SSH setup access for `owner_pubkey`."""
        ...

    async def abandon_configure(self) -> None:
        """After the registry refused `configure`: stop and remove the container it started;
        SSH setup access stays closed."""
        ...

    async def begin_expose(self, config: WorkloadConfig) -> str:
        """Close SSH setup access for good; return the ID of the image `expose` will publish."""
        ...

    async def expose(self, config: WorkloadConfig) -> None:
        """After the registry accepted the expose: publish the workload's port, running the
        image `begin_expose` named."""
        ...

    async def close_setup_access_for_good(self) -> None:
        """Close SSH setup access now and never open it again (the registry knows the instance
        as exposed)."""
        ...

    async def recover(self, committed: CommittedWorkload | None) -> bool:
        """At start-up: bring the runtime back to the `committed` workload (None: none).

        Returns True when the committed workload is exposed. An expose that began but was never
        committed is neither finished nor undone: SSH stays closed for good, the port
        unpublished, until the owner sends it again and the registry accepts it.
        """
        ...

    async def shutdown(self) -> None:
        """At shutdown: close listeners and sessions; the workload's committed state is kept."""
        ...

    def running_image_id(self) -> str | None:
        """podman's ID of the image the workload container was last started from by this
        process (configure, expose or recover), as the manager resolved it just before starting
        it; None when no container was started. What the RTMR3 workload events record."""
        ...

    def refusal(self) -> str | None:
        """Why `recover` refused to start the committed workload (its image is not the one
        pinned at configure), None when it did not: GET /instance/state shows it."""
        ...
