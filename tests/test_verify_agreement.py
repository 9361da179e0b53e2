"""tdx-verify against dcap-qvl (the reference) on simulator quotes and collateral.

Everything here comes from an in-process `SimPlatform` in a temporary state directory, so these
tests need no recorded vector. Both verifiers trust the sim's root CA; tdx-verify runs
with a policy accepting every TCB status (except `Revoked`, which it never accepts), so that the
two verdicts compare like with like. The only differences allowed are the one-directional ones
packages/tdx-verify/README.md documents (tdx-verify refuses, dcap-qvl accepts), and the few
more listed where they are allowed (`known_difference`, the CRL thisUpdate test).
"""

from __future__ import annotations

import base64
import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import dcap_qvl
import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tdx_sim import TCB_STATUSES, SimOptions, SimPlatform
from tdx_verify import (
    Collateral,
    CollateralExpiredError,
    CrlError,
    DebugTdRejected,
    PckChainError,
    Policy,
    QuoteParseError,
    RevokedError,
    RootCaError,
    TcbStatusRejected,
    VerificationError,
    VerifiedQuote,
    Verifier,
)

PROPERTY = settings(
    max_examples=50,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)

ANY_STATUS = Policy(accepted_tcb_statuses=None)
REPORT_DATA = bytes(range(64))
CUSTOM_MR_TD = bytes.fromhex("a5" * 24 + "5a" * 24)
SIM_ADVISORY = "INTEL-SA-00000"  # the advisory the sim's README says a non-UpToDate level names
DEFAULT_ACCEPTED = {
    "UpToDate",
    "SWHardeningNeeded",
    "ConfigurationNeeded",
    "ConfigurationAndSWHardeningNeeded",
}

# Every flag of the simulator, each TCB status it supports, and a custom MRTD.
CASES: dict[str, SimOptions] = {
    "default": SimOptions(),
    "debug_td": SimOptions(debug_td=True),
    **{f"tcb_{status}": SimOptions(tcb_status=status) for status in TCB_STATUSES},
    "revoke_pck": SimOptions(revoke_pck=True),
    "custom_mr_td": SimOptions(mr_td=CUSTOM_MR_TD),
}

# Byte layout of a sim quote (v4 header, TD report 1.0): the signature data follows a 4-byte
# length at 632; ECDSA signature (64) and attestation key (64) precede the outer certification
# data type (2 bytes at 764), which must be 6 (QE report certification data).
OUTER_CERT_TYPE = range(764, 766)

_PEM_CERT = re.compile(rb"-----BEGIN CERTIFICATE-----\n(.*?)-----END CERTIFICATE-----\n", re.S)


# -- the two verifiers -------------------------------------------------------------------------


@dataclass(frozen=True)
class Ours:
    verified: VerifiedQuote | None
    error: VerificationError | None

    @property
    def valid(self) -> bool:
        return self.verified is not None


@dataclass(frozen=True)
class Reference:
    report: Any  # dcap_qvl.VerifiedReport
    error: str | None

    @property
    def valid(self) -> bool:
        return self.report is not None


def ours(quote: bytes, collateral: dict[str, str], now: datetime, verifier: Verifier) -> Ours:
    """tdx-verify's verdict. Anything but a VerificationError propagates and fails the test:
    every refusal must be one of the library's named errors."""
    try:
        return Ours(
            verifier.verify(quote, Collateral.from_json(json.dumps(collateral)), now=now), None
        )
    except VerificationError as exc:
        return Ours(None, exc)


def reference(
    quote: bytes, collateral: dict[str, str], now: datetime, root_der: bytes | None
) -> Reference:
    """dcap-qvl's verdict: `verify_with_root_ca` with the given root, `verify` (Intel's) without."""
    coll = dcap_qvl.QuoteCollateralV3.from_json(json.dumps(collateral))
    ts = int(now.timestamp())
    try:
        if root_der is None:
            return Reference(dcap_qvl.verify(quote, coll, ts), None)
        return Reference(dcap_qvl.verify_with_root_ca(quote, coll, root_der, ts), None)
    except ValueError as exc:
        return Reference(None, str(exc))


# -- the simulated platform ------------------------------------------------------------------------


@dataclass(frozen=True)
class Sim:
    state_dir: Path
    now: datetime
    root_pem: bytes
    root_der: bytes
    verifier: Verifier  # sim root, every TCB status; shared so its caches stay warm

    def platform(self, options: SimOptions | None = None) -> SimPlatform:
        return SimPlatform(self.state_dir, options or SimOptions(), now=self.now)

    def both(
        self, quote: bytes, collateral: dict[str, str], now: datetime | None = None
    ) -> tuple[Ours, Reference]:
        at = self.now if now is None else now
        return (
            ours(quote, collateral, at, self.verifier),
            reference(quote, collateral, at, self.root_der),
        )


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory) -> Sim:
    """One test PKI for the module; each SimPlatform over it reports what its options say."""
    state_dir = tmp_path_factory.mktemp("sim-state")
    now = datetime.now(UTC).replace(microsecond=0)
    root_pem = SimPlatform(state_dir, SimOptions(), now=now).root_ca_pem
    root_der = x509.load_pem_x509_certificate(root_pem).public_bytes(Encoding.DER)
    return Sim(
        state_dir, now, root_pem, root_der, Verifier(root_ca_pem=root_pem, policy=ANY_STATUS)
    )


@dataclass(frozen=True)
class Layout:
    """Where the PEM PCK chain (certification data type 5) lies in a sim quote."""

    pem: range
    certs: tuple[range, ...]  # base64 bodies of leaf, PCK CA, root copy (absolute offsets)


def layout_of(quote: bytes) -> Layout:
    start = quote.index(b"-----BEGIN CERTIFICATE-----")
    assert quote[OUTER_CERT_TYPE.start : OUTER_CERT_TYPE.stop] == (6).to_bytes(2, "little")
    assert quote[start - 6 : start - 4] == (5).to_bytes(2, "little")
    size = int.from_bytes(quote[start - 4 : start], "little")
    assert start + size == len(quote), "sim quotes end with their PCK chain"
    certs = tuple(
        range(start + m.start(1), start + m.end(1))
        for m in _PEM_CERT.finditer(quote[start : start + size])
    )
    assert len(certs) == 3
    return Layout(range(start, start + size), certs)


@pytest.fixture(scope="module")
def default_quote(sim: Sim) -> bytes:
    return sim.platform().quote(REPORT_DATA)


@pytest.fixture(scope="module")
def default_collateral(sim: Sim) -> dict[str, str]:
    return sim.platform().collateral(sim.now)


def status_and_advisories(result: Ours | Reference) -> tuple[str, tuple[str, ...]]:
    if isinstance(result, Ours):
        assert result.verified is not None
        return result.verified.tcb_status, result.verified.advisory_ids
    return result.report.status, tuple(result.report.advisory_ids)


# -- every simulator flag: same verdict, status and advisories ------------------------------------


@pytest.mark.parametrize("case", CASES)
def test_sim_flags_get_the_same_verdict_status_and_advisories_from_both(
    sim: Sim, case: str
) -> None:
    options = CASES[case]
    platform = sim.platform(options)
    quote = platform.quote(REPORT_DATA)
    mine, ref = sim.both(quote, platform.collateral(sim.now))

    refused = options.debug_td or options.revoke_pck or options.tcb_status == "Revoked"
    assert mine.valid is not refused, mine.error
    assert ref.valid is not refused, ref.error
    if refused:
        return
    assert status_and_advisories(mine) == status_and_advisories(ref)
    expected_advisories = () if options.tcb_status == "UpToDate" else (SIM_ADVISORY,)
    assert status_and_advisories(mine) == (options.tcb_status, expected_advisories)
    assert mine.verified is not None
    report = json.loads(ref.report.to_json())["report"]["TD10"]
    assert mine.verified.mr_td == options.mr_td == bytes.fromhex(report["mr_td"])
    assert mine.verified.report_data == REPORT_DATA == bytes.fromhex(report["report_data"])
    assert mine.verified.ppid.value == platform.ppid == bytes(ref.report.ppid)


@pytest.mark.parametrize("case", CASES)
def test_default_policy_verdict_is_the_policys_and_names_the_step(sim: Sim, case: str) -> None:
    options = CASES[case]
    platform = sim.platform(options)
    verifier = Verifier(root_ca_pem=sim.root_pem, policy=Policy())
    result = ours(platform.quote(REPORT_DATA), platform.collateral(sim.now), sim.now, verifier)
    error = result.error
    if options.revoke_pck:
        assert isinstance(error, RevokedError), error
        assert error.step == "pck_chain"
        assert "revoked by the PCK CRL" in error.reason
    elif options.debug_td:
        assert isinstance(error, DebugTdRejected), error
        assert error.step == "policy"
        assert "debug" in error.reason
    elif options.tcb_status not in DEFAULT_ACCEPTED:
        assert isinstance(error, TcbStatusRejected), error
        assert error.step == "policy"
        assert (error.tcb_status, error.advisory_ids) == (options.tcb_status, (SIM_ADVISORY,))
        assert options.tcb_status in error.reason
    else:
        assert result.verified is not None, error
        assert result.verified.tcb_status == options.tcb_status
        return
    assert str(error).startswith(f"{error.step}: ")


@pytest.mark.parametrize("case", CASES)
def test_a_verifier_pinned_to_intels_root_refuses_every_sim_quote(sim: Sim, case: str) -> None:
    """Intel's root is built in: the sim's chain and CRLs do not lead to it, so the first step
    that meets them (the root CA CRL, then the PCK chain) refuses; dcap-qvl's `verify` agrees."""
    platform = sim.platform(CASES[case])
    quote, collateral = platform.quote(REPORT_DATA), platform.collateral(sim.now)
    mine = ours(quote, collateral, sim.now, Verifier())
    assert isinstance(mine.error, RootCaError | PckChainError | CrlError), mine.error
    assert mine.error.step in ("root_ca", "pck_chain")
    assert "Intel Corporation" in mine.error.reason or "root" in mine.error.reason.lower()
    assert not reference(quote, collateral, sim.now, None).valid


# -- mutated quotes --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Mutation:
    """One change to a quote: flip (xor `value` at `offset`), truncate to `offset` bytes, or
    append `data`."""

    kind: str
    offset: int = 0
    value: int = 0
    data: bytes = b""

    def apply(self, quote: bytes) -> bytes:
        if self.kind == "flip":
            out = bytearray(quote)
            out[self.offset] ^= self.value
            return bytes(out)
        if self.kind == "truncate":
            return quote[: self.offset]
        return quote + self.data

    def __str__(self) -> str:
        if self.kind == "flip":
            return f"flip quote[{self.offset}] ^= {self.value:#04x}"
        if self.kind == "truncate":
            return f"truncate the quote to {self.offset} bytes"
        return f"append {self.data.hex()} to the quote"


def size_fields(layout: Layout) -> tuple[range, ...]:
    """The little-endian length fields of a sim quote: signature data (632), outer certification
    data (766), QE authentication data (1218) and the PCK chain (just before the PEM)."""
    return (
        range(632, 636),
        range(766, 770),
        range(1218, 1220),
        range(layout.pem.start - 4, layout.pem.start),
    )


def known_difference(layout: Layout, mutation: Mutation, error: VerificationError) -> bool:
    """tdx-verify refuses what dcap-qvl accepts, in a case its README lists (a damaged PEM chain
    or root copy in the quote, an unknown certification data type, non-zero trailing bytes) or
    in one more: nested sizes that disagree (dcap-qvl reads a shorter PCK chain than the outer
    size leaves room for and ignores the rest; tdx-verify refuses any inconsistent size)."""
    if mutation.kind == "flip" and mutation.offset in OUTER_CERT_TYPE:
        return isinstance(error, QuoteParseError)
    if mutation.kind == "flip" and mutation.offset in layout.pem:
        return isinstance(error, PckChainError)
    if mutation.kind == "flip" and any(mutation.offset in f for f in size_fields(layout)):
        return isinstance(error, QuoteParseError) and "size" in error.reason
    if mutation.kind == "append" and any(mutation.data):
        return isinstance(error, QuoteParseError)
    return False


def check_mutation(
    sim: Sim, quote: bytes, collateral: dict[str, str], mutation: Mutation
) -> tuple[Ours, Reference]:
    """Both refuse, or both accept with the same status and advisories, or the difference is a
    known one (only ever tdx-verify being the stricter)."""
    mine, ref = sim.both(mutation.apply(quote), collateral)
    if mine.valid:
        assert ref.valid, f"{mutation}: tdx-verify accepts, dcap-qvl refuses: {ref.error}"
        assert status_and_advisories(mine) == status_and_advisories(ref), str(mutation)
    elif ref.valid:
        assert mine.error is not None
        assert known_difference(layout_of(quote), mutation, mine.error), (
            f"{mutation}: dcap-qvl accepts ({ref.report.status}), tdx-verify refuses "
            f"and this is not a known difference: {mine.error!r}"
        )
    return mine, ref


def mutations(quote_len: int) -> st.SearchStrategy[Mutation]:
    return st.one_of(
        st.builds(
            Mutation,
            kind=st.just("flip"),
            offset=st.integers(0, quote_len - 1),
            value=st.integers(1, 255),
        ),
        st.builds(Mutation, kind=st.just("truncate"), offset=st.integers(0, quote_len - 1)),
        st.builds(Mutation, kind=st.just("append"), data=st.binary(min_size=1, max_size=64)),
    )


@PROPERTY
@given(data=st.data())
def test_mutated_quotes_get_the_same_verdict_from_both(
    sim: Sim, default_quote: bytes, default_collateral: dict[str, str], data: st.DataObject
) -> None:
    mutation = data.draw(mutations(len(default_quote)), label="mutation")
    mine, ref = check_mutation(sim, default_quote, default_collateral, mutation)
    if mutation.kind == "truncate":
        assert not mine.valid and not ref.valid, str(mutation)


def test_every_single_bit_flip_of_a_quote_gets_the_same_verdict_from_both(
    sim: Sim, default_quote: bytes, default_collateral: dict[str, str]
) -> None:
    """Exhaustive over the quote: flipping the low bit of any one byte is caught by a signature,
    a parser or a known stricter check. Both may accept only where neither reads the byte: a PEM
    line break turned into another whitespace, or the root copy ending the PCK chain (tdx-verify
    matches it to the pinned root by name and key; dcap-qvl uses its own root)."""
    accepted = []
    for offset in range(len(default_quote)):
        mutation = Mutation("flip", offset, 0x01)
        mine, _ = check_mutation(sim, default_quote, default_collateral, mutation)
        if mine.valid:
            accepted.append(offset)
    root_copy = layout_of(default_quote).certs[2]
    unread = [o for o in accepted if default_quote[o] != ord("\n") and o not in root_copy]
    assert unread == [], f"both accept a flip of the low bit at quote offsets {unread}"


def test_zero_padding_after_the_quote_is_accepted_by_both(
    sim: Sim, default_quote: bytes, default_collateral: dict[str, str]
) -> None:
    mine, ref = check_mutation(
        sim, default_quote, default_collateral, Mutation("append", data=bytes(16))
    )
    assert mine.valid and ref.valid


# -- tampered collateral ---------------------------------------------------------------------------

HEX_FIELDS = ("root_ca_crl", "pck_crl", "tcb_info_signature", "qe_identity_signature")
TEXT_FIELDS = ("tcb_info", "qe_identity")
CHAIN_FIELDS = ("tcb_info_issuer_chain", "qe_identity_issuer_chain", "pck_crl_issuer_chain")


def tamper(collateral: dict[str, str], field: str, offset: int, value: int) -> dict[str, str]:
    """Flip one byte of a collateral item: in the decoded bytes of hex items (so a hex digit's
    case change, which decodes to the same bytes, is never counted as tampering), in the text of
    the others (keeping it ASCII)."""
    out = dict(collateral)
    if field in HEX_FIELDS:
        raw = bytearray(bytes.fromhex(collateral[field]))
        raw[offset % len(raw)] ^= value
        out[field] = raw.hex()
    else:
        text = bytearray(collateral[field].encode("ascii"))
        text[offset % len(text)] ^= value & 0x7F or 0x01
        out[field] = text.decode("ascii")
    assert out[field] != collateral[field]
    return out


@PROPERTY
@given(
    field=st.sampled_from(HEX_FIELDS + TEXT_FIELDS),
    offset=st.integers(0, 1 << 16),
    value=st.integers(1, 255),
)
def test_tampered_collateral_is_refused_by_both(
    sim: Sim,
    default_quote: bytes,
    default_collateral: dict[str, str],
    field: str,
    offset: int,
    value: int,
) -> None:
    tampered = tamper(default_collateral, field, offset, value)
    mine, ref = sim.both(default_quote, tampered)
    where = f"{field} byte {offset % len(default_collateral[field])} ^= {value:#04x}"
    assert not mine.valid, f"tdx-verify accepts tampered collateral: {where}"
    assert not ref.valid, f"dcap-qvl accepts tampered collateral: {where}"


@PROPERTY
@given(
    field=st.sampled_from(CHAIN_FIELDS), offset=st.integers(0, 1 << 16), value=st.integers(1, 127)
)
def test_damaged_issuer_chains_are_never_accepted_by_tdx_verify_alone(
    sim: Sim,
    default_quote: bytes,
    default_collateral: dict[str, str],
    field: str,
    offset: int,
    value: int,
) -> None:
    """dcap-qvl does not read every certificate of the collateral issuer chains (their root
    copies, the PCK CRL issuer chain); whatever tdx-verify accepts, dcap-qvl accepts alike."""
    mine, ref = sim.both(default_quote, tamper(default_collateral, field, offset, value))
    if mine.valid:
        assert ref.valid, ref.error
        assert status_and_advisories(mine) == status_and_advisories(ref)


def _crl_der(collateral: dict[str, str], field: str) -> bytes:
    return bytes.fromhex(collateral[field])


@pytest.mark.parametrize("field", ["root_ca_crl", "pck_crl"])
def test_a_crl_with_an_invalid_version_is_refused_with_a_named_error(
    sim: Sim, default_quote: bytes, default_collateral: dict[str, str], field: str
) -> None:
    """The version INTEGER (1, i.e. v2) flipped to 0: a one-byte tampering of the CRL."""
    der = bytearray(_crl_der(default_collateral, field))
    version = der.index(b"\x02\x01\x01")
    der[version + 2] ^= 0x01
    tampered = dict(default_collateral, **{field: der.hex()})
    mine, ref = sim.both(default_quote, tampered)  # a non-library exception fails here
    assert not ref.valid
    assert isinstance(mine.error, CrlError), mine.error


@pytest.mark.parametrize("field", ["root_ca_crl", "pck_crl"])
def test_a_crl_whose_signature_bit_string_claims_unused_bits_is_refused_by_both(
    sim: Sim, default_quote: bytes, field: str
) -> None:
    """DER requires a signature BIT STRING with 0 unused bits; declaring 1 (when the last bit is
    0, so a lax parser still reads the same signature) is a one-byte tampering dcap-qvl refuses
    as BadDer."""
    platform = sim.platform()
    for _ in range(64):  # each collateral is signed afresh: find a signature ending in a 0 bit
        collateral = platform.collateral(sim.now)
        der = bytearray(_crl_der(collateral, field))
        signature = x509.load_der_x509_crl(bytes(der)).signature
        if signature[-1] & 1 == 0:
            break
    else:
        pytest.fail("no CRL signature ending in a 0 bit in 64 tries")
    unused_bits = len(der) - len(signature) - 1
    assert der[unused_bits - 2 : unused_bits + 1] == bytes([0x03, len(signature) + 1, 0x00])
    der[unused_bits] = 0x01
    mine, ref = sim.both(default_quote, dict(collateral, **{field: der.hex()}))
    assert not ref.valid
    assert not mine.valid, f"tdx-verify accepts {field} with its BIT STRING unused bits set to 1"


def _with_cert_version(pem: bytes, index: int, version: int) -> bytes:
    """`pem` with certificate `index`'s DER version INTEGER set to `version`, same length."""
    match = list(_PEM_CERT.finditer(pem))[index]
    der = bytearray(base64.b64decode(match.group(1)))
    assert der[8:13] == bytes.fromhex("a003020102"), "v3 certificate expected"
    der[12] = version
    b64 = base64.b64encode(bytes(der))
    body = b"".join(b64[i : i + 64] + b"\n" for i in range(0, len(b64), 64))
    assert len(body) == match.end(1) - match.start(1)
    return pem[: match.start(1)] + body + pem[match.end(1) :]


@pytest.mark.parametrize(("index", "reference_reads_it"), [(0, True), (1, True), (2, False)])
def test_a_pck_chain_certificate_with_an_invalid_version_is_refused_with_a_named_error(
    sim: Sim,
    default_quote: bytes,
    default_collateral: dict[str, str],
    index: int,
    reference_reads_it: bool,
) -> None:
    """Certificate `index` of the quote's PCK chain (leaf, PCK CA, root copy) claiming X.509
    version 6 (INTEGER 5): malformed input, refused as a `VerificationError`."""
    pem = layout_of(default_quote).pem
    quote = default_quote[: pem.start] + _with_cert_version(default_quote[pem.start :], index, 5)
    mine, ref = sim.both(quote, default_collateral)  # a non-library exception fails here
    assert isinstance(mine.error, PckChainError | QuoteParseError), mine.error
    assert ref.valid is not reference_reads_it


@pytest.mark.parametrize("field", CHAIN_FIELDS)
@pytest.mark.parametrize("index", [0, 1])
def test_an_issuer_chain_certificate_with_an_invalid_version_is_refused_with_a_named_error(
    sim: Sim, default_quote: bytes, default_collateral: dict[str, str], field: str, index: int
) -> None:
    chain = _with_cert_version(default_collateral[field].encode(), index, 5).decode()
    mine, ref = sim.both(default_quote, dict(default_collateral, **{field: chain}))
    assert isinstance(mine.error, VerificationError), mine.error
    if index == 0 and field != "pck_crl_issuer_chain":
        assert not ref.valid  # dcap-qvl reads the signing certificate of TCB info / QE identity


# -- time: outside the collateral window -----------------------------------------------------------

ITEMS: dict[str, tuple[tuple[str, ...], str, str]] = {
    # which collateral fields come from the other issue, the step, the item named
    "root_ca_crl": (("root_ca_crl",), "root_ca", "root CA CRL"),
    "tcb_info": (("tcb_info", "tcb_info_signature"), "tcb_info", "TCB info"),
    "qe_identity": (("qe_identity", "qe_identity_signature"), "qe_identity", "QE identity"),
    "pck_crl": (("pck_crl",), "pck_crl", "PCK CRL"),
}


@pytest.mark.parametrize("item", ITEMS)
@pytest.mark.parametrize("when", ["expired", "not_yet_valid"])
def test_one_collateral_item_outside_its_window_is_refused_naming_it(
    sim: Sim,
    default_quote: bytes,
    default_collateral: dict[str, str],
    item: str,
    when: str,
) -> None:
    """Every item is genuinely signed; one comes from an issue whose window (issued an hour
    before, valid 30 days) ended 5 days ago, or starts in 2 days. dcap-qvl does not check a
    CRL's thisUpdate, so it accepts a CRL issued in the future: there only tdx-verify refuses."""
    fields, step, name = ITEMS[item]
    issued = sim.now - timedelta(days=35) if when == "expired" else sim.now + timedelta(days=2)
    other = sim.platform().collateral(issued)
    collateral = dict(default_collateral, **{f: other[f] for f in fields})
    mine, ref = sim.both(default_quote, collateral)
    assert isinstance(mine.error, CollateralExpiredError), mine.error
    assert mine.error.step == step
    assert mine.error.reason.startswith(name)
    assert ("expired at" if when == "expired" else "is not valid before") in mine.error.reason
    future_crl = when == "not_yet_valid" and item in ("root_ca_crl", "pck_crl")
    assert ref.valid is future_crl, ref.error


@pytest.mark.parametrize(
    ("shift", "says"),
    [(timedelta(hours=-2), "is not valid before"), (timedelta(days=31), "expired at")],
    ids=["before_issue", "after_next_update"],
)
def test_a_time_outside_the_whole_collateral_window_is_refused_naming_the_first_item(
    sim: Sim, default_quote: bytes, default_collateral: dict[str, str], shift: timedelta, says: str
) -> None:
    """Collateral is issued an hour before `now` and valid 30 days. Checked in Intel's order,
    the root CA CRL is the first item whose window the verification time misses."""
    mine, ref = sim.both(default_quote, default_collateral, now=sim.now + shift)
    assert isinstance(mine.error, CollateralExpiredError), mine.error
    assert mine.error.step == "root_ca"
    assert mine.error.reason.startswith(f"root CA CRL {says}")
    assert not ref.valid
