"""DCAP verification of TDX quotes, step by step in the order of Intel's specification.

Collateral and certificate checks are cached by the exact bytes verified, so a warm
verification only parses the quote, checks time windows and revocation against prebuilt sets,
and verifies two ECDSA signatures (QE report and quote).

What is the same for a whole fleet (the pinned root, a verified collateral set, the links of
Intel's CA and signing certificates to the root, the parsed form of a CA certificate) is cached
for the process, shared by every `Verifier`, keyed by the exact bytes it vouches for and
bounded (`_SharedCaches`); what is one machine's (its PCK chain) is cached per `Verifier`.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import InitVar, dataclass
from datetime import UTC, datetime
from typing import Final

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding

from tdx_ppid import (
    Ppid,
    PpidError,
    PpidKind,
    SgxExtension,
    parse_sgx_extension,
    pck_chain_from_quote,
)
from tdx_quote import (
    AttestationKeyType,
    CertificationDataType,
    QeReportCertData,
    Quote,
    QuoteFormatError,
    TdReport10,
    TeeType,
    build_enclave_report,
    parse_quote,
)
from tdx_verify._collateral import Collateral
from tdx_verify._errors import (
    CollateralExpiredError,
    CollateralFormatError,
    CollateralMismatchError,
    CollateralSignatureError,
    CrlError,
    PckChainError,
    QeIdentityError,
    QeReportError,
    QuoteParseError,
    QuoteSignatureError,
    RootCaError,
    VerificationError,
)
from tdx_verify._pki import (
    BoundedCache,
    CaInfo,
    CaInfos,
    SignedBy,
    TrustedRoot,
    VerifiedCrl,
    Window,
    cert_window,
    check_not_revoked,
    check_windows,
    load_pem_chain,
    p256_key,
    spki,
    verify_crl,
    verify_raw,
    verify_to_root,
)
from tdx_verify._policy import Policy
from tdx_verify._root import INTEL_SGX_ROOT_CA_PEM
from tdx_verify._tcb import (
    OUT_OF_DATE_STATUSES,
    ModuleLevel,
    QeIdentity,
    TcbInfo,
    converge,
    masked_equal,
    match_platform_level,
    match_qe_level,
    match_tdx_module,
    merge_advisories,
    out_of_date_since,
    parse_qe_identity,
    parse_tcb_info,
    status_without_out_of_date,
    tdx_module_of,
)

_MAX_CACHED_ROOTS = 16
_MAX_CACHED_COLLATERAL = 64
_MAX_CACHED_CHAINS = 4096
_MAX_CACHED_LINKS = 256  # CA and signing certificates: a few per root
_DEFAULT_POLICY = Policy()


_VERIFIER: Final = object()
"""The constructor token of `VerifiedQuote`: only `Verifier.verify` passes it."""


@dataclass(frozen=True)
class VerifiedQuote:
    """A quote that passed every DCAP step and the policy. Only `Verifier.verify` makes one:
    constructing it directly (or through `dataclasses.replace`) raises `TypeError`, so code that
    takes a VerifiedQuote is never handed a quote nobody verified. A guard against mistakes in
    callers, not against code in the same process that sets out to forge one.

    `tcb_out_of_date_since` is the tcbDate of the TCB level that first put an out-of-date
    platform (or its QE, or TDX module) out of date (None when not out of date, or unknown);
    `tcb_status_within_grace` is the status it would have if none of its components were out of
    date (None when not out of date): what the TCB grace judges;
    `tcb_grace_until` is when the policy's TCB grace ends, set only when the status was
    accepted thanks to it (`tcb_status` stays the real one)."""

    quote: Quote
    tcb_status: str
    advisory_ids: tuple[str, ...]
    ppid: Ppid
    fmspc: bytes
    mr_td: bytes
    report_data: bytes
    verified_at: datetime
    tcb_out_of_date_since: datetime | None
    tcb_status_within_grace: str | None
    tcb_grace_until: datetime | None
    _token: InitVar[object] = None

    def __post_init__(self, _token: object) -> None:
        if _token is not _VERIFIER:
            raise TypeError(
                "a VerifiedQuote cannot be constructed directly: Verifier.verify returns it"
            )


@dataclass(frozen=True, slots=True)
class _VerifiedCollateral:
    """Steps 1-3 (and the PCK CRL of step 4) done once: what remains is time and lookups."""

    windows_root: tuple[Window, ...]
    windows_tcb: tuple[Window, ...]
    windows_qe: tuple[Window, ...]
    windows_pck_crl: tuple[Window, ...]
    root_revoked: frozenset[int]
    root_crl_number: int | None
    pck_crl: VerifiedCrl
    pck_crl_issuer_spki: bytes
    tcb_info: TcbInfo
    qe_identity: QeIdentity

    @property
    def windows(self) -> tuple[Window, ...]:
        return self.windows_root + self.windows_tcb + self.windows_qe + self.windows_pck_crl

    @property
    def expires_at(self) -> float:
        """The earliest end of any window: collateral must be refreshed before then."""
        return min(w.end for w in self.windows)


@dataclass(frozen=True, slots=True)
class _VerifiedPckChain:
    """A PCK chain from a quote whose signatures up to the pinned root have been checked."""

    leaf_key: ec.EllipticCurvePublicKey
    leaf_serial: int
    intermediate_serial: int
    intermediate: x509.Certificate
    intermediate_subject_der: bytes
    intermediate_spki: bytes
    windows: tuple[Window, ...]
    extension: SgxExtension
    pck_ca: str  # "platform" or "processor": which PCK CRL covers the leaf


class _SharedCaches:
    """The process's verified results that hold for every `Verifier` (each keyed by the exact
    bytes it vouches for, bounded, only successes put in): a root read and checked from its PEM
    (with its validity window), a collateral set's signatures and chains checked under a root
    (its windows are checked on every verification), links of certificates to a root, the
    parsed form of CA certificates, and the certificates that follow the leaf in a quote's PCK
    chain (the PCK CA and the root) by their exact PEM block. A fresh `Verifier` so costs
    what a new machine's quote does."""

    def __init__(self) -> None:
        self.roots: BoundedCache[bytes, tuple[TrustedRoot, Window]] = BoundedCache(
            _MAX_CACHED_ROOTS
        )
        self.collateral: BoundedCache[tuple[bytes, Collateral], _VerifiedCollateral] = BoundedCache(
            _MAX_CACHED_COLLATERAL
        )
        self.root_links: SignedBy = BoundedCache(_MAX_CACHED_LINKS)
        self.cas: CaInfos = BoundedCache(_MAX_CACHED_LINKS)
        self.pem_cas: BoundedCache[bytes, tuple[x509.Certificate, bytes]] = BoundedCache(
            _MAX_CACHED_LINKS
        )
        self.pck_ca_kinds: BoundedCache[bytes, str] = BoundedCache(_MAX_CACHED_LINKS)

    def clear(self) -> None:
        self.pck_ca_kinds.clear()
        self.pem_cas.clear()
        self.roots.clear()
        self.collateral.clear()
        self.root_links.clear()
        self.cas.clear()


_SHARED: Final = _SharedCaches()


def clear_shared_caches() -> None:
    """Forget every process-wide verified result, so that the next verification starts from
    nothing (what the fleet bench's "nothing cached" rows measure)."""
    _SHARED.clear()


def _trusted_root(pem: bytes) -> tuple[TrustedRoot, Window]:
    cached = _SHARED.roots.get(pem)
    if cached is None:
        root = TrustedRoot.from_pem(pem)
        cached = root, cert_window(root.cert, "root_ca", "root CA", RootCaError)
        _SHARED.roots.put(pem, cached)
    return cached


def _timestamp(now: datetime) -> float:
    if now.tzinfo is None:
        raise ValueError("now must be a timezone-aware datetime")
    return now.timestamp()


class Verifier:
    """Verifies TDX quotes against collateral, a pinned root CA and a policy.

    Safe to share between threads; results of verifying collateral and certificate chains are
    cached by their bytes (bounded): collateral and CA links for the process, PCK chains per
    Verifier, so reuse one Verifier.
    """

    def __init__(
        self, *, root_ca_pem: bytes | None = None, policy: Policy = _DEFAULT_POLICY
    ) -> None:
        self._root, self._root_window = _trusted_root(
            INTEL_SGX_ROOT_CA_PEM if root_ca_pem is None else bytes(root_ca_pem)
        )
        self._policy = policy
        self._chain_cache: BoundedCache[bytes, _VerifiedPckChain] = BoundedCache(_MAX_CACHED_CHAINS)
        self._key_cache: BoundedCache[bytes, ec.EllipticCurvePublicKey] = BoundedCache(
            _MAX_CACHED_CHAINS
        )

    @property
    def policy(self) -> Policy:
        return self._policy

    def verify(
        self, quote: bytes | Quote, collateral: Collateral, *, now: datetime
    ) -> VerifiedQuote:
        """Run every DCAP step on `quote` at time `now`; raise the first failing step's error."""
        ts = _timestamp(now)
        parsed = quote if isinstance(quote, Quote) else parse(quote)
        qe_cert, pck_pem = _quote_shape(parsed)
        verified = self._verified_collateral(collateral)
        # Step 1: root CA and its CRL
        self._root_window.check(ts)
        check_windows(verified.windows_root, ts)
        # Step 2: TCB info; step 3: QE identity
        check_windows(verified.windows_tcb, ts)
        check_windows(verified.windows_qe, ts)
        # Step 4: PCK chain and revocation
        chain = self._pck_chain(parsed, pck_pem)
        check_windows(chain.windows, ts)
        check_windows(verified.windows_pck_crl, ts)
        _check_pck_revocation(chain, verified)
        _check_tcb_info_platform(verified.tcb_info, chain.extension)
        # Step 5: QE report
        _verify_qe_report(chain, parsed, qe_cert)
        qe_level = _check_qe_identity(qe_cert, verified.qe_identity)
        # Step 6: quote signature
        self._verify_quote_signature(parsed)
        # Step 7: TCB level and merged status
        status, advisories, since, within = _tcb_status(
            verified.tcb_info, chain.extension, parsed.body, verified.qe_identity, qe_level
        )
        # Step 8: policy
        grace_until = self._policy.check(
            parsed.body,
            status,
            advisories,
            out_of_date_since=since,
            status_within_grace=within,
            now=now,
        )
        return VerifiedQuote(
            quote=parsed,
            tcb_status=status,
            advisory_ids=advisories,
            ppid=Ppid(kind=PpidKind.PCK_CERTIFICATE, value=chain.extension.ppid),
            fmspc=chain.extension.fmspc,
            mr_td=parsed.body.mr_td,
            report_data=parsed.body.report_data,
            verified_at=now,
            tcb_out_of_date_since=since,
            tcb_status_within_grace=within,
            tcb_grace_until=grace_until,
            _token=_VERIFIER,
        )

    # -- collateral (steps 1-3 and the PCK CRL), cached by value ---------------------------

    def _verified_collateral(self, collateral: Collateral) -> _VerifiedCollateral:
        """Check every signature and chain of `collateral` (not its time windows); cached.
        `CollateralCache` also calls it, to learn when fetched collateral expires."""
        key = (self._root.der, collateral)
        cached = _SHARED.collateral.get(key)
        if cached is not None:
            return cached
        try:
            result = self._check_collateral(collateral)
        except VerificationError:
            raise
        except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
            raise CollateralFormatError(
                "collateral", f"malformed certificate or CRL: {type(exc).__name__}: {exc}"
            ) from None
        _SHARED.collateral.put(key, result)
        return result

    def _check_collateral(self, c: Collateral) -> _VerifiedCollateral:
        root = self._root
        # Step 1: root CA CRL, signed by the pinned root; the root itself must not be listed.
        root_crl = verify_crl(
            c.root_ca_crl, root.cert, root.key, step="root_ca", item="root CA CRL"
        )
        check_not_revoked(
            root.cert.serial_number,
            root_crl.revoked,
            step="root_ca",
            what="root CA",
            crl="root CA CRL",
        )
        # Step 2: TCB info
        tcb_windows, tcb_key = self._signing_chain(
            c.tcb_info_issuer_chain, root_crl, "tcb_info", "TCB info signing certificate"
        )
        if not verify_raw(tcb_key, c.tcb_info_signature, c.tcb_info.encode()):
            raise CollateralSignatureError("tcb_info", "TCB info signature does not verify")
        tcb_info = parse_tcb_info(c.tcb_info)
        tcb_windows += (
            Window(
                "tcb_info",
                "TCB info",
                tcb_info.issue_date,
                tcb_info.next_update,
                False,
                CollateralExpiredError,
            ),
        )
        # Step 3: QE identity
        qe_windows, qe_key = self._signing_chain(
            c.qe_identity_issuer_chain, root_crl, "qe_identity", "QE identity signing certificate"
        )
        if not verify_raw(qe_key, c.qe_identity_signature, c.qe_identity.encode()):
            raise CollateralSignatureError("qe_identity", "QE identity signature does not verify")
        qe_identity = parse_qe_identity(c.qe_identity)
        qe_windows += (
            Window(
                "qe_identity",
                "QE identity",
                qe_identity.issue_date,
                qe_identity.next_update,
                False,
                CollateralExpiredError,
            ),
        )
        # Step 4 (collateral part): PCK CRL signed by the PCK CA of its issuer chain
        certs = load_pem_chain(c.pck_crl_issuer_chain, "pck_crl", "PCK CRL issuer chain")
        chain, _ = verify_to_root(
            certs,
            root,
            step="pck_crl",
            names=("PCK CRL issuer certificate",),
            error=CollateralSignatureError,
            root_links=_SHARED.root_links,
            infos=_SHARED.cas,
        )
        issuer = chain[0]
        check_not_revoked(
            issuer.serial_number,
            root_crl.revoked,
            step="pck_crl",
            what="PCK CRL issuer certificate",
            crl="root CA CRL",
        )
        pck_crl = verify_crl(
            c.pck_crl,
            issuer,
            p256_key(issuer, "pck_crl", "PCK CRL issuer"),
            step="pck_crl",
            item="PCK CRL",
        )
        return _VerifiedCollateral(
            windows_root=(root_crl.window,),
            windows_tcb=tcb_windows,
            windows_qe=qe_windows,
            windows_pck_crl=(
                cert_window(
                    issuer, "pck_crl", "PCK CRL issuer certificate", CollateralExpiredError
                ),
                pck_crl.window,
            ),
            root_revoked=root_crl.revoked,
            root_crl_number=root_crl.number,
            pck_crl=pck_crl,
            pck_crl_issuer_spki=spki(issuer),
            tcb_info=tcb_info,
            qe_identity=qe_identity,
        )

    def _signing_chain(
        self, pem: str, root_crl: VerifiedCrl, step: str, name: str
    ) -> tuple[tuple[Window, ...], ec.EllipticCurvePublicKey]:
        certs = load_pem_chain(pem, step, f"{step} issuer chain")
        (leaf,), _ = verify_to_root(
            certs,
            self._root,
            step=step,
            names=(name,),
            error=CollateralSignatureError,
            root_links=_SHARED.root_links,
            infos=_SHARED.cas,
        )
        check_not_revoked(
            leaf.serial_number, root_crl.revoked, step=step, what=name, crl="root CA CRL"
        )
        _check_end_entity(leaf, step, name)
        return (cert_window(leaf, step, name, CollateralExpiredError),), p256_key(leaf, step, name)

    # -- step 4: the PCK chain in the quote, cached by its PEM bytes -------------------------

    def _pck_chain(self, quote: Quote, pem: bytes) -> _VerifiedPckChain:
        cached = self._chain_cache.get(pem)
        if cached is not None:
            return cached
        try:
            result = self._verify_pck_chain(quote)
        except VerificationError:
            raise
        except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
            raise PckChainError(
                "pck_chain", f"malformed PCK certificate: {type(exc).__name__}: {exc}"
            ) from None
        self._chain_cache.put(pem, result)
        return result

    def _verify_pck_chain(self, quote: Quote) -> _VerifiedPckChain:
        ders: list[bytes] = []

        def load(index: int, block: bytes) -> x509.Certificate:
            """The leaf is read each time; the certificates after it (the same in every quote
            of a fleet) once per exact PEM block."""
            loaded = _SHARED.pem_cas.get(block) if index else None
            if loaded is None:
                cert = x509.load_pem_x509_certificate(block)
                loaded = cert, cert.public_bytes(Encoding.DER)
                if index:
                    _SHARED.pem_cas.put(block, loaded)
            ders.append(loaded[1])
            return loaded[0]

        try:
            certs = pck_chain_from_quote(quote, load=load)
        except PpidError as exc:
            raise PckChainError("pck_chain", f"cannot read the PCK chain: {exc}") from None
        (leaf, _), (ca, _) = verify_to_root(
            certs,
            self._root,
            step="pck_chain",
            names=("PCK leaf certificate", "PCK CA certificate"),
            error=PckChainError,
            root_links=_SHARED.root_links,
            infos=_SHARED.cas,
            ders=ders,
        )
        try:
            extension = parse_sgx_extension(leaf)
        except PpidError as exc:
            raise PckChainError("pck_chain", f"PCK leaf SGX extension: {exc}") from None
        return _VerifiedPckChain(
            leaf_key=p256_key(leaf, "pck_chain", "PCK leaf certificate"),
            leaf_serial=leaf.serial_number,
            intermediate_serial=ca.cert.serial_number,
            intermediate=ca.cert,
            intermediate_subject_der=ca.subject_der,
            intermediate_spki=ca.spki,
            windows=(
                cert_window(leaf, "pck_chain", "PCK leaf certificate", PckChainError),
                cert_window(ca.cert, "pck_chain", "PCK CA certificate", PckChainError),
            ),
            extension=extension,
            pck_ca=_pck_ca_kind(ca),
        )

    def _platform_of(self, quote: Quote) -> tuple[bytes, str]:
        """(FMSPC, PCK CA kind) of a quote, from its verified PCK chain: the collateral
        `CollateralCache` fetches for it."""
        _, pem = _quote_shape(quote)
        chain = self._pck_chain(quote, pem)
        return chain.extension.fmspc, chain.pck_ca

    # -- step 6 ------------------------------------------------------------------------------

    def _verify_quote_signature(self, quote: Quote) -> None:
        raw_key = quote.signature_data.attestation_key
        key = self._key_cache.get(raw_key)
        if key is None:
            try:
                key = ec.EllipticCurvePublicKey.from_encoded_point(
                    ec.SECP256R1(), b"\x04" + raw_key
                )
            except ValueError:
                raise QuoteSignatureError(
                    "quote_signature", "attestation key is not a valid P-256 point"
                ) from None
            self._key_cache.put(raw_key, key)
        if not verify_raw(key, quote.signature_data.signature, quote.signed_bytes):
            raise QuoteSignatureError(
                "quote_signature", "quote signature by the attestation key does not verify"
            )


def _pck_ca_kind(ca: CaInfo) -> str:
    """Which PCK CRL covers the leaves of this (verified) PCK CA: "processor" or "platform";
    read once per exact subject."""
    kind = _SHARED.pck_ca_kinds.get(ca.subject_der)
    if kind is None:
        names = ca.cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
        kind = "processor" if names and "Processor" in str(names[0].value) else "platform"
        _SHARED.pck_ca_kinds.put(ca.subject_der, kind)
    return kind


def parse(data: bytes) -> Quote:
    """Parse raw quote bytes (trailing zero padding allowed, as real quote buffers carry)."""
    try:
        return parse_quote(bytes(data), allow_zero_padding=True)
    except QuoteFormatError as exc:
        raise QuoteParseError("quote", str(exc)) from None


def _quote_shape(quote: Quote) -> tuple[QeReportCertData, bytes]:
    """The quote must be a TDX quote signed with ECDSA-P256 and carry certification data type 6
    wrapping a type-5 PCK chain."""
    header = quote.header
    if header.tee_type != TeeType.TDX:
        raise QuoteParseError("quote", f"TEE type {header.tee_type:#x} is not TDX")
    if header.attestation_key_type != AttestationKeyType.ECDSA_P256:
        raise QuoteParseError(
            "quote", f"attestation key type {header.attestation_key_type} is not ECDSA-P256"
        )
    if not quote.signed_bytes:
        raise QuoteParseError("quote", "quote has no signed bytes (pass the parsed quote)")
    body = quote.signature_data.certification_data.body
    if not isinstance(body, QeReportCertData):
        raise QuoteParseError(
            "quote", "certification data is not QE report certification data (type 6)"
        )
    inner = body.certification_data
    if inner.cert_type != CertificationDataType.PCK_CERT_CHAIN or not isinstance(inner.body, bytes):
        raise QuoteParseError(
            "quote", f"QE certification data type {inner.cert_type} is not a PCK chain (type 5)"
        )
    return body, inner.body


def _check_pck_revocation(chain: _VerifiedPckChain, verified: _VerifiedCollateral) -> None:
    check_not_revoked(
        chain.intermediate_serial,
        verified.root_revoked,
        step="pck_chain",
        what="PCK CA certificate",
        crl="root CA CRL",
    )
    if (
        chain.intermediate_subject_der != verified.pck_crl.issuer_der
        or chain.intermediate_spki != verified.pck_crl_issuer_spki
    ):
        raise CrlError(
            "pck_chain",
            f"the PCK CRL is issued by {verified.pck_crl.issuer.rfc4514_string()}, but the PCK "
            f"leaf by {chain.intermediate.subject.rfc4514_string()}: fetch the CRL of that CA",
        )
    check_not_revoked(
        chain.leaf_serial,
        verified.pck_crl.revoked,
        step="pck_chain",
        what="PCK leaf certificate",
        crl="PCK CRL",
    )


def _check_tcb_info_platform(info: TcbInfo, ext: SgxExtension) -> None:
    if not hmac.compare_digest(info.fmspc, ext.fmspc):
        raise CollateralMismatchError(
            "tcb_info",
            f"TCB info is for FMSPC {info.fmspc.hex().upper()}, "
            f"the PCK certificate for {ext.fmspc.hex().upper()}",
        )
    if not hmac.compare_digest(info.pce_id, ext.pce_id):
        raise CollateralMismatchError(
            "tcb_info",
            f"TCB info is for PCE-ID {info.pce_id.hex()}, the PCK certificate for "
            f"{ext.pce_id.hex()}",
        )


def _verify_qe_report(chain: _VerifiedPckChain, quote: Quote, qe: QeReportCertData) -> None:
    """Step 5a: the PCK key signed the QE report, which binds the attestation key."""
    if not verify_raw(chain.leaf_key, qe.qe_report_signature, build_enclave_report(qe.qe_report)):
        raise QeReportError("qe_report", "QE report signature by the PCK key does not verify")
    expected = hashlib.sha256(
        quote.signature_data.attestation_key + qe.qe_auth_data
    ).digest() + bytes(32)
    if not hmac.compare_digest(qe.qe_report.report_data, expected):
        raise QeReportError(
            "qe_report",
            "QE report data is not SHA-256(attestation key || QE auth data) || 32 zero bytes",
        )


def _check_qe_identity(qe: QeReportCertData, identity: QeIdentity) -> ModuleLevel:
    """Step 5b: the QE report matches the QE identity; its ISVSVN gives the QE TCB status."""
    report = qe.qe_report
    if report.mr_signer != identity.mr_signer:
        raise QeIdentityError(
            "qe_identity", f"QE MRSIGNER {report.mr_signer.hex()} is not the expected signer"
        )
    if report.isv_prod_id != identity.isv_prod_id:
        raise QeIdentityError(
            "qe_identity",
            f"QE ISVPRODID {report.isv_prod_id} is not {identity.isv_prod_id}",
        )
    mask = identity.miscselect_mask
    if report.misc_select & mask != identity.miscselect & mask:
        raise QeIdentityError(
            "qe_identity", f"QE MISCSELECT {report.misc_select:#010x} does not match"
        )
    if not masked_equal(report.attributes, identity.attributes, identity.attributes_mask):
        raise QeIdentityError(
            "qe_identity", f"QE ATTRIBUTES {report.attributes.hex()} do not match"
        )
    if report.attributes[0] & 0x02:
        raise QeIdentityError("qe_identity", "the quoting enclave runs in debug mode")
    return match_qe_level(identity, report.isv_svn)


def _check_end_entity(cert: x509.Certificate, step: str, name: str) -> None:
    """A signing certificate is an end entity: one whose basic constraints make it a CA (such
    as the PCK Platform CA) does not sign TCB info or a QE identity (dcap-qvl refuses it too,
    `CaUsedAsEndEntity`)."""
    try:
        constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        return
    if constraints.ca:
        raise CollateralSignatureError(step, f"the {name} is a CA certificate, not a signer")


def _tcb_status(
    info: TcbInfo,
    ext: SgxExtension,
    body: TdReport10,
    qe_identity: QeIdentity,
    qe_level: ModuleLevel,
) -> tuple[str, tuple[str, ...], datetime | None, str | None]:
    """Step 7: platform level, TDX module level, and Intel's convergence with the QE status;
    with the date since which the result is out of date (see `out_of_date_since`) and the
    status without its out-of-date parts (`status_without_out_of_date`), both None when the
    result is not out of date."""
    platform = match_platform_level(info, ext.tcb_components, ext.pce_svn, body.tee_tcb_svn)
    module = match_tdx_module(info, body.tee_tcb_svn, body.mr_signer_seam, body.seam_attributes)
    status = platform.status
    advisories: tuple[str, ...] = platform.advisory_ids
    out_of_date: list[float | None] = []
    if platform.status in OUT_OF_DATE_STATUSES:
        out_of_date.append(out_of_date_since(info.levels, platform))
    if module is not None:
        status = converge(status, module.status)
        advisories = merge_advisories(advisories, module.advisory_ids)
        if module.status in OUT_OF_DATE_STATUSES:
            _, identity = tdx_module_of(info, body.tee_tcb_svn)
            out_of_date.append(out_of_date_since(identity.levels, module))
    if qe_level.status in OUT_OF_DATE_STATUSES:
        out_of_date.append(out_of_date_since(qe_identity.levels, qe_level))
    status = converge(status, qe_level.status)
    since: datetime | None = None
    within: str | None = None
    if status in OUT_OF_DATE_STATUSES:
        others = (qe_level.status,) if module is None else (module.status, qe_level.status)
        within = status_without_out_of_date(platform.status, others)
        if out_of_date and None not in out_of_date:
            # Out of date since the earliest component went out of date.
            since = datetime.fromtimestamp(min(d for d in out_of_date if d is not None), UTC)
    return status, merge_advisories(advisories, qe_level.advisory_ids), since, within
