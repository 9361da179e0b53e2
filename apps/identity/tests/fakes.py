"""In-memory stand-ins for the quote source, the registry and the workload runtime."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from tdx_identity.quotes import QuoteSourceError
from tdx_identity.registry_client import RegistrationRequest, RegistryRejected, RegistryUnavailable
from tdx_identity.state import PersistedState
from tdx_identity.workload_api import WorkloadConfig
from tdx_quote import (
    CertificationData,
    CertificationDataType,
    EnclaveReport,
    Header,
    PpidCertData,
    QeReportCertData,
    Quote,
    QuoteSignatureData,
    TdReport10,
    build_quote,
)

PPID = bytes(range(0x10, 0x20))


def make_quote(report_data: bytes, ppid: bytes = PPID) -> bytes:
    """A structurally valid (unsigned) v4 TDX quote carrying `report_data` and a clear PPID."""
    ppid_data = CertificationData(
        cert_type=CertificationDataType.PPID_CLEARTEXT,
        body=PpidCertData(ppid=ppid, cpu_svn=bytes(16), pce_svn=11, pce_id=0),
    )
    qe_report = EnclaveReport(
        cpu_svn=bytes(16),
        misc_select=0,
        reserved1=bytes(28),
        attributes=bytes(16),
        mr_enclave=bytes(32),
        reserved2=bytes(32),
        mr_signer=bytes(32),
        reserved3=bytes(96),
        isv_prod_id=1,
        isv_svn=1,
        reserved4=bytes(60),
        report_data=bytes(64),
    )
    quote = Quote(
        header=Header(
            version=4,
            attestation_key_type=2,
            tee_type=0x81,
            qe_svn=0,
            pce_svn=11,
            qe_vendor_id=bytes(16),
            user_data=bytes(20),
        ),
        body_type=2,
        body=TdReport10(
            tee_tcb_svn=bytes(16),
            mr_seam=bytes(48),
            mr_signer_seam=bytes(48),
            seam_attributes=bytes(8),
            td_attributes=bytes(8),
            xfam=bytes(8),
            mr_td=bytes(48),
            mr_config_id=bytes(48),
            mr_owner=bytes(48),
            mr_owner_config=bytes(48),
            rtmr0=bytes(48),
            rtmr1=bytes(48),
            rtmr2=bytes(48),
            rtmr3=bytes(48),
            report_data=report_data,
        ),
        signature_data=QuoteSignatureData(
            signature=bytes(64),
            attestation_key=bytes(64),
            certification_data=CertificationData(
                cert_type=CertificationDataType.QE_REPORT_CERTIFICATION_DATA,
                body=QeReportCertData(
                    qe_report=qe_report,
                    qe_report_signature=bytes(64),
                    qe_auth_data=bytes(32),
                    certification_data=ppid_data,
                ),
            ),
        ),
    )
    return build_quote(quote)


@dataclass
class FakeQuoteSource:
    """Builds a quote for whatever report_data is asked; can be told to fail or to lie."""

    requests: list[bytes] = field(default_factory=list)
    fail: bool = False
    wrong_report_data: bool = False

    async def get_quote(self, report_data: bytes) -> bytes:
        self.requests.append(report_data)
        if self.fail:
            raise QuoteSourceError("fake quote source is down")
        if self.wrong_report_data:
            return make_quote(bytes(64 - 1) + b"\x01")
        return make_quote(report_data)


@dataclass
class FakeRegistry:
    """Records every registration; refuses or fails on demand; can delay to widen races."""

    accepted: list[RegistrationRequest] = field(default_factory=list)
    refuse_with: int | None = None
    unavailable: bool = False
    delay: float = 0.0

    async def register(self, request: RegistrationRequest) -> None:
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.unavailable:
            raise RegistryUnavailable("fake registry unreachable")
        if self.refuse_with is not None:
            raise RegistryRejected(self.refuse_with, "fake registry says no")
        self.accepted.append(request)


@dataclass
class FakeWorkload:
    """Records the calls the service makes on the workload runtime."""

    configured: list[WorkloadConfig] = field(default_factory=list)
    exposed: list[str] = field(default_factory=list)
    recovered: list[PersistedState] = field(default_factory=list)
    owners: list[bytes] = field(default_factory=list)
    shutdowns: int = 0
    recover_exposes: bool = False

    async def on_owner_registered(self, owner_pubkey: bytes) -> None:
        self.owners.append(owner_pubkey)

    async def configure(self, config: WorkloadConfig) -> None:
        self.configured.append(config)

    async def expose(self, image: str) -> None:
        self.exposed.append(image)

    async def recover(self, state: PersistedState) -> bool:
        self.recovered.append(state)
        return self.recover_exposes

    async def shutdown(self) -> None:
        self.shutdowns += 1
