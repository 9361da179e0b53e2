"""In-memory stand-ins for the quote source, RTMR3, the registry and the workload runtime."""

from __future__ import annotations

import asyncio
import http.server
import json
import secrets
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from tdx_identity.core.ports import (
    CommittedWorkload,
    RegistrationRequest,
    RegistryRecord,
    WorkloadConfig,
)
from tdx_identity.exceptions import (
    QuoteSourceError,
    RegistryRejected,
    RegistryUnavailable,
    RtmrDeviceError,
)
from tdx_identity.workload.helpers import installed_helpers
from tdx_measure import ZERO_REGISTER, EventLog, extend
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


def make_quote(
    report_data: bytes,
    ppid: bytes = PPID,
    rtmr3: bytes = ZERO_REGISTER,
    boot_rtmrs: tuple[bytes, bytes, bytes] = (ZERO_REGISTER, ZERO_REGISTER, ZERO_REGISTER),
) -> bytes:
    """A structurally valid (unsigned) v4 TDX quote carrying `report_data`, a clear PPID,
    `boot_rtmrs` as RTMR0-2 and `rtmr3`."""
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
            rtmr0=boot_rtmrs[0],
            rtmr1=boot_rtmrs[1],
            rtmr2=boot_rtmrs[2],
            rtmr3=rtmr3,
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
class FakeRtmr:
    """An in-memory RTMR3 with the TDX extension rule; can be told to fail."""

    value: bytes = ZERO_REGISTER
    extended: list[bytes] = field(default_factory=list)
    fail: bool = False

    async def read_rtmr3(self) -> bytes:
        if self.fail:
            raise RtmrDeviceError("fake RTMR3 is broken")
        return self.value

    async def extend_rtmr3(self, digest: bytes) -> bytes | None:
        if self.fail:
            raise RtmrDeviceError("fake RTMR3 is broken")
        self.value = extend(self.value, digest)
        self.extended.append(digest)
        return self.value


@dataclass
class FakeQuoteSource:
    """Builds a quote for whatever report_data is asked, carrying `rtmr`'s current RTMR3 as a
    TD's quote does; can be told to fail or to lie."""

    requests: list[bytes] = field(default_factory=list)
    fail: bool = False
    wrong_report_data: bool = False
    rtmr: FakeRtmr | None = None
    boot_rtmrs: tuple[bytes, bytes, bytes] = (ZERO_REGISTER, ZERO_REGISTER, ZERO_REGISTER)

    async def get_quote(self, report_data: bytes) -> bytes:
        self.requests.append(report_data)
        if self.fail:
            raise QuoteSourceError("fake quote source is down")
        rtmr3 = self.rtmr.value if self.rtmr is not None else ZERO_REGISTER
        if self.wrong_report_data:
            return make_quote(bytes(64 - 1) + b"\x01", rtmr3=rtmr3)
        return make_quote(report_data, rtmr3=rtmr3, boot_rtmrs=self.boot_rtmrs)


@dataclass
class FakeRegistry:
    """Records every registration and answers lookups from the latest one it accepted, as the
    registry does; refuses or fails on demand; can delay to widen races. `record` (when set)
    is the answer to every lookup instead; `lookup_unavailable` makes lookups fail. Hands out
    single-use challenges (`challenge_unavailable` makes that fail) and, as the registry does,
    refuses with 401 a registration naming a challenge it did not issue or already spent."""

    accepted: list[RegistrationRequest] = field(default_factory=list)
    challenges: list[bytes] = field(default_factory=list)
    spent: set[bytes] = field(default_factory=set)
    challenge_unavailable: bool = False
    refuse_with: int | None = None
    unavailable: bool = False
    delay: float = 0.0
    record: RegistryRecord | None = None
    lookup_unavailable: bool = False
    lookups: int = 0

    async def lookup(self, instance_pubkey: bytes) -> RegistryRecord | None:
        self.lookups += 1
        if self.lookup_unavailable:
            raise RegistryUnavailable("fake registry unreachable")
        if self.record is not None:
            return self.record
        for request in reversed(self.accepted):
            if request.instance_pubkey == instance_pubkey:
                latest = None
                if request.event_log is not None:
                    latest = EventLog.from_json(request.event_log).workload
                return RegistryRecord(
                    operator=request.operator,
                    owner=request.owner,
                    workload=None if latest is None else latest.transition,
                    workload_image_id=None if latest is None else latest.image_id,
                )
        return None

    async def challenge(self) -> bytes:
        if self.challenge_unavailable:
            raise RegistryUnavailable("fake registry gives no challenge")
        nonce = secrets.token_bytes(32)
        self.challenges.append(nonce)
        return nonce

    async def register(self, request: RegistrationRequest) -> None:
        if request.challenge not in self.challenges or request.challenge in self.spent:
            raise RegistryRejected(401, "challenge unknown or already used")
        self.spent.add(request.challenge)
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.unavailable:
            raise RegistryUnavailable("fake registry unreachable")
        if self.refuse_with is not None:
            raise RegistryRejected(self.refuse_with, "fake registry says no")
        self.accepted.append(request)


FAKE_IMAGE_ID = "sha256:" + "5e" * 32


@dataclass
class FakeWorkload:
    """Records the calls the service makes on the workload runtime; every container it
    "starts" runs the image `image_id`."""

    configured: list[WorkloadConfig] = field(default_factory=list)
    configured_for: list[bytes] = field(default_factory=list)
    exposed: list[str] = field(default_factory=list)
    recovered: list[CommittedWorkload | None] = field(default_factory=list)
    owners: list[bytes] = field(default_factory=list)
    shutdowns: int = 0
    image_id: str = FAKE_IMAGE_ID
    started: str | None = None
    ssh_open: bool = False
    ssh_closed_for_good: bool = False
    abandoned: int = 0
    published: bool = False

    def helper_programs(self) -> Mapping[str, Path]:
        return installed_helpers()

    async def on_owner_registered(self, owner_pubkey: bytes) -> None:
        self.owners.append(owner_pubkey)

    async def configure(self, config: WorkloadConfig, owner_pubkey: bytes) -> None:
        self.configured.append(config)
        self.configured_for.append(owner_pubkey)
        self.ssh_open = False
        self.started = self.image_id

    async def open_setup_access(self, config: WorkloadConfig, owner_pubkey: bytes) -> None:
        assert not self.ssh_closed_for_good, "SSH opened after it was closed for good"
        self.ssh_open = True

    async def abandon_configure(self) -> None:
        self.abandoned += 1
        self.started = None

    async def begin_expose(self, config: WorkloadConfig) -> str:
        await self.close_setup_access_for_good()
        return self.image_id

    async def expose(self, config: WorkloadConfig) -> None:
        assert self.ssh_closed_for_good, "published before SSH was closed for good"
        self.exposed.append(config.image)
        self.published = True
        self.started = self.image_id

    async def close_setup_access_for_good(self) -> None:
        self.ssh_closed_for_good = True
        self.ssh_open = False

    async def recover(self, committed: CommittedWorkload | None) -> bool:
        self.recovered.append(committed)
        exposed = committed is not None and committed.exposed
        if committed is not None:
            self.started = self.image_id
            if exposed:
                self.ssh_closed_for_good = self.published = True
            elif not self.ssh_closed_for_good:
                self.ssh_open = True
        return exposed

    def running_image_id(self) -> str | None:
        return self.started

    def refusal(self) -> str | None:
        return None

    async def shutdown(self) -> None:
        self.shutdowns += 1


class MockTdxServer(http.server.ThreadingHTTPServer):
    """A threaded HTTP server holding the simulated TD's RTMR3 for `MockTdxHandler`."""

    def __init__(self, handler: type[http.server.BaseHTTPRequestHandler]) -> None:
        super().__init__(("127.0.0.1", 0), handler)
        self.rtmr3 = ZERO_REGISTER
        self.rtmr_lock = threading.Lock()
        self.records: dict[str, dict[str, object]] = {}

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class MockTdxHandler(http.server.BaseHTTPRequestHandler):
    """tdx-sim's routes a real identity-svc process uses: `GET /attest/{report_data}` (a quote
    carrying the current RTMR3), `GET /rtmr`, `POST /rtmr/3/extend`. Subclasses add routes by
    overriding `other_get`/`other_post`."""

    server: MockTdxServer

    def do_GET(self) -> None:
        if self.path.startswith("/attest/"):
            report_data = bytes.fromhex(self.path.removeprefix("/attest/"))
            with self.server.rtmr_lock:
                rtmr3 = self.server.rtmr3
            self.reply(make_quote(report_data, rtmr3=rtmr3), "application/octet-stream")
        elif self.path == "/rtmr":
            with self.server.rtmr_lock:
                values = [bytes(48)] * 3 + [self.server.rtmr3]
            body = {f"rtmr{i}": value.hex() for i, value in enumerate(values)}
            self.reply(json.dumps(body).encode(), "application/json")
        else:
            self.other_get()

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if self.path == "/rtmr/3/extend":
            digest = bytes.fromhex(json.loads(body)["digest"])
            with self.server.rtmr_lock:
                self.server.rtmr3 = extend(self.server.rtmr3, digest)
                value = self.server.rtmr3
            answer = {"index": 3, "value": value.hex()}
            self.reply(json.dumps(answer).encode(), "application/json")
        else:
            self.other_post(body)

    def other_get(self) -> None:
        self.send_error(404)

    def other_post(self, body: bytes) -> None:
        self.send_error(404)

    def reply(self, body: bytes, content_type: str) -> None:
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        return


class MockTdxAndRegistryHandler(MockTdxHandler):
    """The mock TDX plus a registry that accepts every POST /register and answers
    GET /instance/{pubkey} with the latest registration's identities and event log (404 before
    any), and hands out a fresh nonce at every GET /challenge."""

    def other_post(self, body: bytes) -> None:
        if self.path != "/register":
            self.send_error(404)
            return
        request = json.loads(body)
        with self.server.rtmr_lock:
            self.server.records[request["instance_pubkey"]] = {
                "ppid": request["ppid"],
                "attestation_quote": request["attestation_quote"],
                "operator": request["operator"],
                "owner": request["owner"],
                "event_log": request.get("event_log"),
            }
        self.reply(b"{}", "application/json")

    def other_get(self) -> None:
        if self.path == "/challenge":
            answer = {"nonce": secrets.token_hex(32), "expires_at": "2099-01-01T00:00:00Z"}
            self.reply(json.dumps(answer).encode(), "application/json")
            return
        with self.server.rtmr_lock:
            record = self.server.records.get(self.path.removeprefix("/instance/"))
        if not self.path.startswith("/instance/") or record is None:
            self.send_error(404)
            return
        self.reply(json.dumps(record).encode(), "application/json")


@contextmanager
def serve_mock_tdx(
    handler: type[MockTdxHandler] = MockTdxHandler,
) -> Iterator[MockTdxServer]:
    """Serve `handler` on a loopback port in a thread for the duration of the block."""
    server = MockTdxServer(handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
