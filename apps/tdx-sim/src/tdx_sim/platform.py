"""The simulated TDX platform: TD quotes signed like a real QE, and the PCCS collateral for them.

A quote is a v4 quote with a TD report 1.0, certification data type 6 (the QE report signed by
the PCK key, binding the attestation key) wrapping type 5 (the PEM PCK chain). The collateral
is Intel's TDX TCB info v3 and TD_QE identity v2, signed by the sim's TCB-signing key, plus the
root and PCK CRLs. Flags in `SimOptions` make the bad cases real (debug TD, TCB status,
revoked PCK, another MRTD). At run time the sim's PCCS can publish what Intel's publishes over a
platform's life: a TCB recovery (`publish_tcb_recovery`: a newer TCB level the platform does
not reach, so it turns out of date) and a revocation of its PCK certificate (`revoke_pck`).
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from tdx_quote import (
    AttestationKeyType,
    BodyType,
    CertificationData,
    CertificationDataType,
    EnclaveReport,
    Header,
    QeReportCertData,
    Quote,
    QuoteSignatureData,
    TdReport10,
    TeeType,
    build_enclave_report,
    build_quote,
    build_signed_region,
)

from .pki import SimPki, load_or_create_pki
from .rtmr import SimRtmrs

TCB_STATUSES = (
    "UpToDate",
    "SWHardeningNeeded",
    "ConfigurationNeeded",
    "ConfigurationAndSWHardeningNeeded",
    "OutOfDate",
    "OutOfDateConfigurationNeeded",
    "Revoked",
)
SIM_ADVISORY_ID = "INTEL-SA-00000"  # the one advisory a non-UpToDate sim TCB level names

# Measurements of the simulated TD and TDX module: fixed, recognisable, not secret.
DEFAULT_MR_TD = hashlib.sha384(b"tdx-sim default MRTD").digest()
SIM_MR_SEAM = hashlib.sha384(b"tdx-sim TDX module").digest()
SIM_MR_SIGNER_SEAM = bytes(48)  # Intel's TDX module signer, as in Intel's TCB info
SIM_SEAM_ATTRIBUTES = bytes(8)
SIM_TD_ATTRIBUTES = bytes.fromhex("0000001000000000")  # SEPT_VE_DISABLE, not debug
SIM_XFAM = bytes.fromhex("e702060000000000")
# TEE TCB SVN: [0] TDX module SVN, [1] module major version (identity "TDX_01"), [2] microcode.
SIM_TEE_TCB_SVN = bytes([6, 1, 3]) + bytes(13)
SIM_TDX_TCB_COMPONENTS = (5, 0, 2) + (0,) * 13
SIM_TDX_MODULE_ISVSVN = 4

# The simulated Quoting Enclave, described the way Intel's TD_QE identity describes its QE.
INTEL_QE_VENDOR_ID = bytes.fromhex("939a7233f79c4ca9940a0db3957f0607")
SIM_QE_MR_ENCLAVE = hashlib.sha256(b"tdx-sim quoting enclave").digest()
SIM_QE_MR_SIGNER = hashlib.sha256(b"tdx-sim quoting enclave signer").digest()
SIM_QE_ATTRIBUTES = bytes.fromhex("1500000000000000e700000000000000")
SIM_QE_PROD_ID = 2
SIM_QE_ISVSVN = 6
SIM_QE_IDENTITY_ISVSVN = 4
SIM_QE_AUTH_DATA = bytes(range(32))
TCB_EVALUATION_DATA_NUMBER = 17
TCB_DATE = "2025-05-14T00:00:00Z"
_TCB_DATE = datetime(2025, 5, 14, tzinfo=UTC)

COLLATERAL_ISSUED_BEFORE = timedelta(hours=1)
COLLATERAL_VALID_FOR = timedelta(days=30)

_SGX_COMPONENT_LABELS: dict[int, dict[str, str]] = {
    0: {"category": "BIOS", "type": "Early Microcode Update"},
    1: {"category": "OS/VMM", "type": "SGX Late Microcode Update"},
    2: {"category": "OS/VMM", "type": "TXT SINIT"},
    3: {"category": "BIOS"},
    4: {"category": "BIOS"},
    5: {"category": "BIOS"},
    7: {"category": "OS/VMM", "type": "SEAMLDR ACM"},
}
_TDX_COMPONENT_LABELS: dict[int, dict[str, str]] = {
    0: {"category": "OS/VMM", "type": "TDX Module"},
    1: {"category": "OS/VMM", "type": "TDX Module"},
    2: {"category": "OS/VMM", "type": "TDX Late Microcode Update"},
}


ADVISORY_ID = re.compile(r"INTEL-SA-[0-9]{5}")
MAX_TCB_RECOVERIES = 255 - SIM_TDX_TCB_COMPONENTS[2]
"""Recovery k raises TDX TCB component 2 (an SVN, one byte) by k: past this it would not fit."""


class SimOptionsError(ValueError):
    """A simulator option is out of range (unknown TCB status, MRTD not 48 bytes)."""


class TcbRecoveryError(ValueError):
    """A TCB recovery that cannot be published (date not after the newest level's, naive date,
    malformed advisory ID)."""


@dataclass(frozen=True)
class TcbRecovery:
    """A TCB recovery the sim's PCCS has published: a TCB level newer than every earlier one,
    dated `tcb_date`, that fixes `advisory_ids`; `evaluation_data_number` is the
    tcbEvaluationDataNumber of the TCB info and QE identity that publish it."""

    tcb_date: datetime
    advisory_ids: tuple[str, ...]
    evaluation_data_number: int


@dataclass(frozen=True)
class SimOptions:
    """What the simulated platform reports; the defaults make a quote every verifier accepts."""

    debug_td: bool = False
    tcb_status: str = "UpToDate"
    revoke_pck: bool = False
    mr_td: bytes = DEFAULT_MR_TD

    def __post_init__(self) -> None:
        if self.tcb_status not in TCB_STATUSES:
            raise SimOptionsError(
                f"unknown TCB status {self.tcb_status!r}; one of {', '.join(TCB_STATUSES)}"
            )
        if len(self.mr_td) != 48:
            raise SimOptionsError(f"MRTD must be 48 bytes, got {len(self.mr_td)}")


@dataclass(frozen=True)
class SimCollateral:
    """Signed collateral for the sim's quotes, as the PCCS serves it and as dcap-qvl's
    `QuoteCollateralV3` holds it. `tcb_info` and `qe_identity` are the exact signed texts."""

    pck_crl_issuer_chain: str
    root_ca_crl: bytes
    pck_crl: bytes
    tcb_info_issuer_chain: str
    tcb_info: str
    tcb_info_signature: bytes
    qe_identity_issuer_chain: str
    qe_identity: str
    qe_identity_signature: bytes
    issued_at: datetime = field(compare=False)
    next_update: datetime = field(compare=False)

    def to_json_dict(self) -> dict[str, str]:
        """dcap-qvl's `QuoteCollateralV3` JSON form: CRLs and signatures as hex, chains PEM."""
        return {
            "pck_crl_issuer_chain": self.pck_crl_issuer_chain,
            "root_ca_crl": self.root_ca_crl.hex(),
            "pck_crl": self.pck_crl.hex(),
            "tcb_info_issuer_chain": self.tcb_info_issuer_chain,
            "tcb_info": self.tcb_info,
            "tcb_info_signature": self.tcb_info_signature.hex(),
            "qe_identity_issuer_chain": self.qe_identity_issuer_chain,
            "qe_identity": self.qe_identity,
            "qe_identity_signature": self.qe_identity_signature.hex(),
        }

    def tcb_info_body(self) -> str:
        """PCCS body of `/tdx/certification/v4/tcb`, embedding the signed text unchanged."""
        return f'{{"tcbInfo":{self.tcb_info},"signature":"{self.tcb_info_signature.hex()}"}}'

    def qe_identity_body(self) -> str:
        """PCCS body of `/tdx/certification/v4/qe/identity`."""
        return (
            f'{{"enclaveIdentity":{self.qe_identity},'
            f'"signature":"{self.qe_identity_signature.hex()}"}}'
        )


def _raw_signature(key: ec.EllipticCurvePrivateKey, data: bytes) -> bytes:
    """ECDSA-P256-SHA256 signature as Intel encodes it: r || s, 32 bytes big-endian each."""
    r, s = decode_dss_signature(key.sign(data, ec.ECDSA(hashes.SHA256())))
    return r.to_bytes(32, "big") + s.to_bytes(32, "big")


def _raw_public_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    numbers = key.public_key().public_numbers()
    return numbers.x.to_bytes(32, "big") + numbers.y.to_bytes(32, "big")


def _timestamp(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _components(svns: tuple[int, ...], labels: dict[int, dict[str, str]]) -> list[dict[str, Any]]:
    return [{"svn": svn, **labels.get(i, {})} for i, svn in enumerate(svns)]


# What a TCB recovery makes of the platform's own status (Intel's convergence of OutOfDate).
_OUT_OF_DATE = {
    "UpToDate": "OutOfDate",
    "SWHardeningNeeded": "OutOfDate",
    "ConfigurationNeeded": "OutOfDateConfigurationNeeded",
    "ConfigurationAndSWHardeningNeeded": "OutOfDateConfigurationNeeded",
}


def _unique(items: list[str]) -> list[str]:
    return list(dict.fromkeys(items))


def _compact_json(value: dict[str, Any]) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=True)


class SimPlatform:
    """A simulated TDX host running one TD: its PKI lives in `state_dir`; `options` choose what
    it reports; `rtmrs` are the TD's registers, fresh (a new boot) with every platform object."""

    def __init__(self, state_dir: Path, options: SimOptions, *, now: datetime | None = None):
        self._start(load_or_create_pki(state_dir, now=now or datetime.now(UTC)), options)

    def mint_platform(self, *, now: datetime | None = None) -> SimPlatform:
        """Another simulated host under this one's PCK Platform CA and FMSPC
        (`SimPki.mint_platform`: its own PCK certificate, PPID and attestation key), with the
        same options, freshly booted. Its quotes verify against this platform's collateral
        (`collateral(now)`), as a fleet of machines of one FMSPC shares Intel's collateral.
        In memory only."""
        member = object.__new__(SimPlatform)
        member._start(self.pki.mint_platform(now=now or datetime.now(UTC)), self.options)
        return member

    def _start(self, pki: SimPki, options: SimOptions) -> None:
        self.options = options
        self.pki = pki
        self.rtmrs = SimRtmrs()
        self._lock = threading.Lock()
        self._recoveries: tuple[TcbRecovery, ...] = ()
        self._revoked: frozenset[int] = (
            frozenset({self.pki.pck_cert.serial_number}) if options.revoke_pck else frozenset()
        )
        self._revision = 0
        self._last_crl_number = 0

    @property
    def revision(self) -> int:
        """Counts what was published at run time (recoveries, revocations): collateral issued
        before the last change is stale."""
        return self._revision

    @property
    def recoveries(self) -> tuple[TcbRecovery, ...]:
        """The TCB recoveries published so far, oldest first."""
        return self._recoveries

    @property
    def tcb_evaluation_data_number(self) -> int:
        return TCB_EVALUATION_DATA_NUMBER + len(self._recoveries)

    def publish_tcb_recovery(
        self, *, tcb_date: datetime, advisory_ids: Iterable[str] = ()
    ) -> TcbRecovery:
        """Publish a TCB level above every earlier one (a PCESVN and a TDX microcode SVN this
        platform does not reach), dated `tcb_date`, with the next tcbEvaluationDataNumber:
        collateral issued from now on reports the platform out of date, its level (and every
        older one) naming `advisory_ids`."""
        if tcb_date.tzinfo is None:
            raise TcbRecoveryError("tcb_date must be a timezone-aware datetime")
        ids = tuple(dict.fromkeys(advisory_ids))
        for advisory in ids:
            if ADVISORY_ID.fullmatch(advisory) is None:
                raise TcbRecoveryError(
                    f"advisory ID {advisory!r} is not shaped like INTEL-SA-00837"
                )
        date = tcb_date.astimezone(UTC).replace(microsecond=0)
        with self._lock:
            if len(self._recoveries) >= MAX_TCB_RECOVERIES:
                raise TcbRecoveryError(
                    f"no more TCB recoveries: {MAX_TCB_RECOVERIES} published, the next would "
                    "raise a TDX TCB SVN past 255"
                )
            newest = self._recoveries[-1].tcb_date if self._recoveries else _TCB_DATE
            if date <= newest:
                raise TcbRecoveryError(
                    f"tcb_date {_timestamp(date)} is not after the newest TCB level's "
                    f"({_timestamp(newest)})"
                )
            recovery = TcbRecovery(date, ids, self.tcb_evaluation_data_number + 1)
            self._recoveries += (recovery,)
            self._revision += 1
        return recovery

    def revoke_pck(self) -> int:
        """List this platform's PCK certificate in the PCK CRLs issued from now on; its serial."""
        serial = self.pki.pck_cert.serial_number
        with self._lock:
            self._revoked |= {serial}
            self._revision += 1
        return serial

    @property
    def root_ca_pem(self) -> bytes:
        return self.pki.root_ca_pem

    @property
    def fmspc(self) -> bytes:
        return self.pki.sgx_extension.fmspc

    @property
    def ppid(self) -> bytes:
        return self.pki.sgx_extension.ppid

    def td_report(self, report_data: bytes) -> TdReport10:
        """The TD report body this platform's TD would produce for `report_data` now, with the
        current RTMR values."""
        if len(report_data) != 64:
            raise ValueError(f"report_data must be 64 bytes, got {len(report_data)}")
        rtmr0, rtmr1, rtmr2, rtmr3 = self.rtmrs.read()
        td_attributes = bytearray(SIM_TD_ATTRIBUTES)
        if self.options.debug_td:
            td_attributes[0] |= 0x01
        return TdReport10(
            tee_tcb_svn=SIM_TEE_TCB_SVN,
            mr_seam=SIM_MR_SEAM,
            mr_signer_seam=SIM_MR_SIGNER_SEAM,
            seam_attributes=SIM_SEAM_ATTRIBUTES,
            td_attributes=bytes(td_attributes),
            xfam=SIM_XFAM,
            mr_td=self.options.mr_td,
            mr_config_id=bytes(48),
            mr_owner=bytes(48),
            mr_owner_config=bytes(48),
            rtmr0=rtmr0,
            rtmr1=rtmr1,
            rtmr2=rtmr2,
            rtmr3=rtmr3,
            report_data=report_data,
        )

    def quote(self, report_data: bytes) -> bytes:
        """A v4 TDX quote over `report_data` (64 bytes), signed by the attestation key, whose
        QE report is signed by the PCK key and commits to that attestation key."""
        body = self.td_report(report_data)
        header = Header(
            version=4,
            attestation_key_type=AttestationKeyType.ECDSA_P256,
            tee_type=TeeType.TDX,
            qe_svn=0,
            pce_svn=0,
            qe_vendor_id=INTEL_QE_VENDOR_ID,
            user_data=bytes(20),
        )
        attestation_key = _raw_public_key(self.pki.attestation_key)
        sgx = self.pki.sgx_extension
        qe_report = EnclaveReport(
            cpu_svn=sgx.cpu_svn,
            misc_select=0,
            reserved1=bytes(28),
            attributes=SIM_QE_ATTRIBUTES,
            mr_enclave=SIM_QE_MR_ENCLAVE,
            reserved2=bytes(32),
            mr_signer=SIM_QE_MR_SIGNER,
            reserved3=bytes(96),
            isv_prod_id=SIM_QE_PROD_ID,
            isv_svn=SIM_QE_ISVSVN,
            reserved4=bytes(60),
            report_data=hashlib.sha256(attestation_key + SIM_QE_AUTH_DATA).digest() + bytes(32),
        )
        qe_cert_data = QeReportCertData(
            qe_report=qe_report,
            qe_report_signature=_raw_signature(self.pki.pck_key, build_enclave_report(qe_report)),
            qe_auth_data=SIM_QE_AUTH_DATA,
            certification_data=CertificationData(
                cert_type=CertificationDataType.PCK_CERT_CHAIN, body=self.pki.pck_chain_pem
            ),
        )
        signed_region = build_signed_region(header, BodyType.TD_REPORT_10, body)
        return build_quote(
            Quote(
                header=header,
                body_type=BodyType.TD_REPORT_10,
                body=body,
                signature_data=QuoteSignatureData(
                    signature=_raw_signature(self.pki.attestation_key, signed_region),
                    attestation_key=attestation_key,
                    certification_data=CertificationData(
                        cert_type=CertificationDataType.QE_REPORT_CERTIFICATION_DATA,
                        body=qe_cert_data,
                    ),
                ),
            )
        )

    def tcb_info(self, *, issued_at: datetime, next_update: datetime) -> dict[str, Any]:
        """Intel's TDX TCB info v3 for this platform's FMSPC; the platform's own level carries
        `options.tcb_status`."""
        sgx = self.pki.sgx_extension
        zero_signer = SIM_MR_SIGNER_SEAM.hex().upper()
        module = {
            "mrsigner": zero_signer,
            "attributes": SIM_SEAM_ATTRIBUTES.hex().upper(),
            "attributesMask": "FFFFFFFFFFFFFFFF",
        }
        recoveries = self._recoveries
        fixed_later = [a for r in recoveries for a in r.advisory_ids]
        status = self.options.tcb_status
        if recoveries:
            status = _OUT_OF_DATE.get(status, status)
        platform_level: dict[str, Any] = {
            "tcb": {
                "sgxtcbcomponents": _components(sgx.tcb_components, _SGX_COMPONENT_LABELS),
                "pcesvn": sgx.pce_svn,
                "tdxtcbcomponents": _components(SIM_TDX_TCB_COMPONENTS, _TDX_COMPONENT_LABELS),
            },
            "tcbDate": TCB_DATE,
            "tcbStatus": status,
        }
        advisories = ([SIM_ADVISORY_ID] if self.options.tcb_status != "UpToDate" else []) + [
            a for a in fixed_later if a != SIM_ADVISORY_ID
        ]
        if advisories:
            platform_level["advisoryIDs"] = _unique(advisories)
        older_level = {
            "tcb": {
                "sgxtcbcomponents": _components(sgx.tcb_components, _SGX_COMPONENT_LABELS),
                "pcesvn": max(sgx.pce_svn - 6, 0),
                "tdxtcbcomponents": _components(SIM_TDX_TCB_COMPONENTS, _TDX_COMPONENT_LABELS),
            },
            "tcbDate": "2018-01-04T00:00:00Z",
            "tcbStatus": "OutOfDate",
            "advisoryIDs": _unique([SIM_ADVISORY_ID, *fixed_later]),
        }
        # Each recovery k (1 = oldest) raises the PCESVN and the TDX microcode SVN by k above the
        # platform's; every level but the newest is out of date, naming what later ones fix.
        newer_levels: list[dict[str, Any]] = []
        for k, recovery in enumerate(recoveries, start=1):
            tdx = list(SIM_TDX_TCB_COMPONENTS)
            tdx[2] += k
            level: dict[str, Any] = {
                "tcb": {
                    "sgxtcbcomponents": _components(sgx.tcb_components, _SGX_COMPONENT_LABELS),
                    "pcesvn": sgx.pce_svn + k,
                    "tdxtcbcomponents": _components(tuple(tdx), _TDX_COMPONENT_LABELS),
                },
                "tcbDate": _timestamp(recovery.tcb_date),
                "tcbStatus": "UpToDate" if k == len(recoveries) else "OutOfDate",
            }
            later = [a for r in recoveries[k:] for a in r.advisory_ids]
            if later:
                level["advisoryIDs"] = _unique(later)
            newer_levels.insert(0, level)
        return {
            "id": "TDX",
            "version": 3,
            "issueDate": _timestamp(issued_at),
            "nextUpdate": _timestamp(next_update),
            "fmspc": sgx.fmspc.hex().upper(),
            "pceId": sgx.pce_id.hex().upper(),
            "tcbType": 0,
            "tcbEvaluationDataNumber": self.tcb_evaluation_data_number,
            "tdxModule": module,
            "tdxModuleIdentities": [
                {
                    "id": f"TDX_{SIM_TEE_TCB_SVN[1]:02X}",
                    **module,
                    "tcbLevels": [
                        {
                            "tcb": {"isvsvn": SIM_TDX_MODULE_ISVSVN},
                            "tcbDate": TCB_DATE,
                            "tcbStatus": "UpToDate",
                        }
                    ],
                }
            ],
            "tcbLevels": [*newer_levels, platform_level, older_level],
        }

    def qe_identity(self, *, issued_at: datetime, next_update: datetime) -> dict[str, Any]:
        """Intel's TD_QE enclave identity v2 describing the sim's quoting enclave."""
        return {
            "id": "TD_QE",
            "version": 2,
            "issueDate": _timestamp(issued_at),
            "nextUpdate": _timestamp(next_update),
            "tcbEvaluationDataNumber": self.tcb_evaluation_data_number,
            "miscselect": "00000000",
            "miscselectMask": "FFFFFFFF",
            "attributes": "11000000000000000000000000000000",
            "attributesMask": "FBFFFFFFFFFFFFFF0000000000000000",
            "mrsigner": SIM_QE_MR_SIGNER.hex().upper(),
            "isvprodid": SIM_QE_PROD_ID,
            "tcbLevels": [
                {
                    "tcb": {"isvsvn": SIM_QE_IDENTITY_ISVSVN},
                    "tcbDate": TCB_DATE,
                    "tcbStatus": "UpToDate",
                }
            ],
        }

    def collateral_bundle(self, now: datetime) -> SimCollateral:
        """All collateral, issued an hour before `now` and valid for 30 days after it."""
        issued_at = (now - COLLATERAL_ISSUED_BEFORE).replace(microsecond=0)
        next_update = (now + COLLATERAL_VALID_FOR).replace(microsecond=0)
        pki = self.pki
        with self._lock:
            tcb_info = _compact_json(self.tcb_info(issued_at=issued_at, next_update=next_update))
            qe_identity = _compact_json(
                self.qe_identity(issued_at=issued_at, next_update=next_update)
            )
            revoked = sorted(self._revoked)
            # A CRL issued later carries a larger number, even within the same second.
            crl_number = max(int(issued_at.timestamp()), self._last_crl_number + 1)
            self._last_crl_number = crl_number
        signing_chain = pki.tcb_signing_chain_pem.decode()
        return SimCollateral(
            pck_crl_issuer_chain=pki.pck_crl_issuer_chain_pem.decode(),
            root_ca_crl=pki.root_ca_crl(
                this_update=issued_at, next_update=next_update, number=crl_number
            ),
            pck_crl=pki.pck_crl(
                this_update=issued_at, next_update=next_update, revoked=revoked, number=crl_number
            ),
            tcb_info_issuer_chain=signing_chain,
            tcb_info=tcb_info,
            tcb_info_signature=_raw_signature(pki.tcb_signing_key, tcb_info.encode()),
            qe_identity_issuer_chain=signing_chain,
            qe_identity=qe_identity,
            qe_identity_signature=_raw_signature(pki.tcb_signing_key, qe_identity.encode()),
            issued_at=issued_at,
            next_update=next_update,
        )

    def collateral(self, now: datetime) -> dict[str, str]:
        """The collateral in dcap-qvl's `QuoteCollateralV3` JSON form."""
        return self.collateral_bundle(now).to_json_dict()
