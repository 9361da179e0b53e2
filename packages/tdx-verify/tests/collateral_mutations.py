"""Mutations of a simulator's collateral for the differential test against dcap-qvl.

A `Draft` holds the collateral of one test PKI (`Keys`: a `SimPlatform`'s, or the tests' `World`
with Intel's TCB info layout) as parts that can be changed: the TCB info
and QE identity as JSON objects, the two CRLs as their parameters (dates, revoked serials,
signer), the three issuer chains as a choice of certificates, and how each signed JSON item is
signed. `Draft.render()` signs what needs signing with the sim's keys (or the key a mutation
chose), so a mutated item gets past the signature check unless the mutation is to the signature
itself. Each `Change` has a `kind` (what the differential test's list of known differences is
keyed by) and applies itself to a draft.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.x509.oid import NameOID
from hypothesis import strategies as st

from tdx_sim.pki import SimPki

_SHA256 = ec.ECDSA(hashes.SHA256())


def raw_sign(key: ec.EllipticCurvePrivateKey, data: bytes) -> bytes:
    r, s = decode_dss_signature(key.sign(data, _SHA256))
    return r.to_bytes(32, "big") + s.to_bytes(32, "big")


def iso(when: datetime) -> str:
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


def pem(*certs: x509.Certificate) -> str:
    return "".join(c.public_bytes(serialization.Encoding.PEM).decode() for c in certs)


@dataclass(frozen=True)
class Keys:
    """The keys and certificates of a test PKI that collateral is signed with."""

    root_key: ec.EllipticCurvePrivateKey
    root_cert: x509.Certificate
    platform_ca_key: ec.EllipticCurvePrivateKey
    platform_ca_cert: x509.Certificate
    tcb_signing_key: ec.EllipticCurvePrivateKey
    tcb_signing_cert: x509.Certificate
    pck_cert: x509.Certificate

    @classmethod
    def of_sim(cls, pki: SimPki) -> Keys:
        return cls(
            pki.root_key,
            pki.root_cert,
            pki.platform_ca_key,
            pki.platform_ca_cert,
            pki.tcb_signing_key,
            pki.tcb_signing_cert,
            pki.pck_cert,
        )


@dataclass(frozen=True)
class Foreign:
    """A second PKI, not the sim's: a root and a signer under it, and a bare key."""

    root_key: ec.EllipticCurvePrivateKey
    root: x509.Certificate
    signer_key: ec.EllipticCurvePrivateKey
    signer: x509.Certificate


def _cert(
    subject: x509.Name,
    key: ec.EllipticCurvePrivateKey,
    issuer: x509.Certificate | None,
    issuer_key: ec.EllipticCurvePrivateKey,
    *,
    ca: bool,
    not_before: datetime,
    not_after: datetime,
) -> x509.Certificate:
    issuer_ski = (
        x509.SubjectKeyIdentifier.from_public_key(issuer_key.public_key())
        if issuer is None
        else issuer.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    )
    usage = x509.KeyUsage(not ca, not ca, False, False, False, ca, ca, False, False)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject if issuer is None else issuer.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(issuer_ski), False
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
        .add_extension(usage, True)
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None if not ca else 1), True)
        .sign(issuer_key, hashes.SHA256())
    )


def make_foreign(pki: Keys, now: datetime) -> Foreign:
    """A root and a TCB signer with the sim's names but other keys (an impostor PKI)."""
    root_key = ec.generate_private_key(ec.SECP256R1())
    signer_key = ec.generate_private_key(ec.SECP256R1())
    window = {"not_before": now - timedelta(days=10), "not_after": now + timedelta(days=3650)}
    root = _cert(pki.root_cert.subject, root_key, None, root_key, ca=True, **window)
    signer = _cert(pki.tcb_signing_cert.subject, signer_key, root, root_key, ca=False, **window)
    return Foreign(root_key, root, signer_key, signer)


def reissued_signer(
    pki: Keys, now: datetime, *, not_before: timedelta, not_after: timedelta
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    """A TCB signing certificate from the sim's root for a new key, valid `now + not_before`
    to `now + not_after`."""
    key = ec.generate_private_key(ec.SECP256R1())
    cert = _cert(
        pki.tcb_signing_cert.subject,
        key,
        pki.root_cert,
        pki.root_key,
        ca=False,
        not_before=now + not_before,
        not_after=now + not_after,
    )
    return key, cert


def _name_with_cn(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


@dataclass
class CrlPlan:
    """What a CRL says and who signs it: "own" (its CA, as the sim does), "root" (the sim's
    root), "foreign" (the impostor root's key)."""

    this_update: timedelta = timedelta(hours=-1)
    next_update: timedelta = timedelta(days=30)
    revoked: list[int] = field(default_factory=list)
    signer: str = "own"
    number: int = 100


@dataclass
class SignedPlan:
    """How a signed JSON item (TCB info, QE identity) is signed and which chain it names.

    `chain`: "sim" (TCB signing cert, root), "no_root" (the signing cert alone), "reversed"
    (root first), "foreign" (the impostor's signer and root, signed by its key), "platform_ca"
    (the sim's PCK Platform CA and root, signed by its key), "expired" / "not_yet_valid" (a new
    signing cert from the sim's root, outside its validity at `now`, signed by its key).
    `signature`: "good", "flip" (one bit of the signature), "short" (its first 63 bytes),
    "other_text" (a valid signature over the unmutated text)."""

    chain: str = "sim"
    signature: str = "good"
    flip_at: int = 0


@dataclass
class Draft:
    keys: Keys
    now: datetime
    foreign: Foreign
    tcb_info: dict[str, Any]
    qe_identity: dict[str, Any]
    original_tcb_info: str
    original_qe_identity: str
    pck_crl: CrlPlan = field(default_factory=CrlPlan)
    root_crl: CrlPlan = field(default_factory=CrlPlan)
    pck_crl_chain: str = "sim"  # "sim", "no_root", "reversed", "foreign", "root_only"
    tcb_plan: SignedPlan = field(default_factory=SignedPlan)
    qe_plan: SignedPlan = field(default_factory=SignedPlan)

    @classmethod
    def of(cls, keys: Keys, now: datetime, tcb: dict[str, Any], qe: dict[str, Any]) -> Draft:
        """The draft of valid collateral at `now`: `tcb` and `qe` (the TCB info and QE identity
        objects) as given, CRLs issued an hour before and valid 30 days."""
        return cls(
            keys,
            now,
            make_foreign(keys, now),
            tcb,
            qe,
            json.dumps(tcb, separators=(",", ":")),
            json.dumps(qe, separators=(",", ":")),
        )

    def copy(self) -> Draft:
        return Draft(
            self.keys,
            self.now,
            self.foreign,
            copy.deepcopy(self.tcb_info),
            copy.deepcopy(self.qe_identity),
            self.original_tcb_info,
            self.original_qe_identity,
            copy.deepcopy(self.pck_crl),
            copy.deepcopy(self.root_crl),
            self.pck_crl_chain,
            copy.deepcopy(self.tcb_plan),
            copy.deepcopy(self.qe_plan),
        )

    # -- rendering -------------------------------------------------------------------------------

    def _crl(self, plan: CrlPlan, issuer: x509.Certificate, own: ec.EllipticCurvePrivateKey) -> str:
        pki = self.keys
        key = {"own": own, "root": pki.root_key, "foreign": self.foreign.root_key}[plan.signer]
        builder = (
            x509.CertificateRevocationListBuilder()
            .issuer_name(issuer.subject)
            .last_update(self.now + plan.this_update)
            .next_update(self.now + plan.next_update)
            .add_extension(x509.CRLNumber(plan.number), critical=False)
        )
        for serial in sorted(set(plan.revoked)):
            builder = builder.add_revoked_certificate(
                x509.RevokedCertificateBuilder()
                .serial_number(serial)
                .revocation_date(self.now - timedelta(days=1))
                .build()
            )
        return builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.DER).hex()

    def _signed(self, plan: SignedPlan, text: str, original: str) -> tuple[str, str]:
        """(issuer chain PEM, signature hex) of `text` under `plan`."""
        pki = self.keys
        key: ec.EllipticCurvePrivateKey
        if plan.chain == "foreign":
            key, chain = self.foreign.signer_key, pem(self.foreign.signer, self.foreign.root)
        elif plan.chain == "platform_ca":
            key, chain = pki.platform_ca_key, pem(pki.platform_ca_cert, pki.root_cert)
        elif plan.chain in ("expired", "not_yet_valid"):
            window = (
                (timedelta(days=-400), timedelta(days=-2))
                if plan.chain == "expired"
                else (timedelta(days=2), timedelta(days=400))
            )
            key, cert = reissued_signer(pki, self.now, not_before=window[0], not_after=window[1])
            chain = pem(cert, pki.root_cert)
        else:
            key = pki.tcb_signing_key
            chain = {
                "sim": pem(pki.tcb_signing_cert, pki.root_cert),
                "no_root": pem(pki.tcb_signing_cert),
                "reversed": pem(pki.root_cert, pki.tcb_signing_cert),
            }[plan.chain]
        signature = raw_sign(key, (original if plan.signature == "other_text" else text).encode())
        if plan.signature == "flip":
            flipped = bytearray(signature)
            flipped[plan.flip_at % 64] ^= 0x01
            signature = bytes(flipped)
        elif plan.signature == "short":
            signature = signature[:63]
        return chain, signature.hex()

    def render(self) -> dict[str, str]:
        """The collateral in dcap-qvl's QuoteCollateralV3 JSON form."""
        pki = self.keys
        tcb_text = json.dumps(self.tcb_info, separators=(",", ":"))
        qe_text = json.dumps(self.qe_identity, separators=(",", ":"))
        tcb_chain, tcb_sig = self._signed(self.tcb_plan, tcb_text, self.original_tcb_info)
        qe_chain, qe_sig = self._signed(self.qe_plan, qe_text, self.original_qe_identity)
        pck_crl_chain = {
            "sim": pem(pki.platform_ca_cert, pki.root_cert),
            "no_root": pem(pki.platform_ca_cert),
            "reversed": pem(pki.root_cert, pki.platform_ca_cert),
            "root_only": pem(pki.root_cert),
            "foreign": pem(self.foreign.signer, self.foreign.root),
        }[self.pck_crl_chain]
        return {
            "pck_crl_issuer_chain": pck_crl_chain,
            "root_ca_crl": self._crl(self.root_crl, pki.root_cert, pki.root_key),
            "pck_crl": self._crl(self.pck_crl, pki.platform_ca_cert, pki.platform_ca_key),
            "tcb_info_issuer_chain": tcb_chain,
            "tcb_info": tcb_text,
            "tcb_info_signature": tcb_sig,
            "qe_identity_issuer_chain": qe_chain,
            "qe_identity": qe_text,
            "qe_identity_signature": qe_sig,
        }


@dataclass(frozen=True)
class Change:
    """One mutation: `kind` names what it changes (the known-difference list is keyed by it),
    `detail` says how (for the failure message), `apply` makes it."""

    kind: str
    detail: str
    apply: Callable[[Draft], None] = field(compare=False, repr=False)

    def __str__(self) -> str:
        return f"{self.kind}: {self.detail}"


def serials(draft: Draft) -> dict[str, int]:
    pki = draft.keys
    return {
        "pck": pki.pck_cert.serial_number,
        "platform_ca": pki.platform_ca_cert.serial_number,
        "tcb_signing": pki.tcb_signing_cert.serial_number,
        "root": pki.root_cert.serial_number,
        "other": 0x5EED,
    }


# -- strategies ----------------------------------------------------------------------------------


STATUSES = (
    "UpToDate",
    "SWHardeningNeeded",
    "ConfigurationNeeded",
    "ConfigurationAndSWHardeningNeeded",
    "OutOfDate",
    "OutOfDateConfigurationNeeded",
    "Revoked",
)
ODD_STATUSES = ("uptodate", "Unknown", "", "UpToDate ")
SHIFTS = st.one_of(
    st.sampled_from([-31 * 86400, -7200, -1, 0, 1, 3600, 7200, 29 * 86400, 31 * 86400]),
    st.integers(-40 * 86400, 40 * 86400),
)
ODD_DATES = (
    "not a date",
    "2025-13-01T00:00:00Z",
    "2025-05-14T00:00:00",
    "2025-05-14",
    "2025-05-14T00:00:00.500Z",
    "2025-05-14T00:00:00+00:00",
    "1969-12-31T23:59:59Z",
    "9999-12-31T23:59:59Z",
)


def _date_value(now: datetime, choice: int | str | None) -> str | None:
    if isinstance(choice, int):
        return iso(now + timedelta(seconds=choice))
    return choice


DATE_CHOICES: st.SearchStrategy[int | str | None] = st.one_of(
    SHIFTS, st.sampled_from(ODD_DATES), st.none()
)


def _set(target: dict[str, Any], key: str, value: Any) -> None:
    """Set `key`, or remove it when `value` is None."""
    if value is None:
        target.pop(key, None)
    else:
        target[key] = value


def _item_date(item: str, key: str, choice: int | str | None) -> Change:
    def apply(d: Draft) -> None:
        _set(d.tcb_info if item == "tcb" else d.qe_identity, key, _date_value(d.now, choice))

    return Change(f"{item}.{key}", repr(choice), apply)


def _item_field(item: str, key: str, value: Any) -> Change:
    def apply(d: Draft) -> None:
        _set(d.tcb_info if item == "tcb" else d.qe_identity, key, value)

    return Change(f"{item}.{key}", repr(value), apply)


def _levels(d: Draft, item: str) -> list[dict[str, Any]]:
    levels = (d.tcb_info if item == "tcb" else d.qe_identity)["tcbLevels"]
    assert isinstance(levels, list)
    return levels


def _level_at(d: Draft, item: str, level: int) -> dict[str, Any] | None:
    """TCB level `level` (modulo their number) of `item`; None when an earlier change removed
    them all (the change is then a no-op)."""
    levels = _levels(d, item)
    return levels[level % len(levels)] if levels else None


def _level_svn(level: int, component: str, index: int, value: int) -> Change:
    """Set one SVN of TCB level `level % n`: SGX component, TDX component or the PCESVN."""

    def apply(d: Draft) -> None:
        found = _level_at(d, "tcb", level)
        if found is None:
            return
        tcb = found["tcb"]
        if component == "pcesvn":
            tcb["pcesvn"] = value
        else:
            tcb[component][index]["svn"] = value

    return Change(f"tcb.level.{component}", f"level {level} [{index}] = {value}", apply)


def _level_key(item: str, level: int, key: str, value: Any) -> Change:
    def apply(d: Draft) -> None:
        found = _level_at(d, item, level)
        if found is not None:
            _set(found, key, value)

    return Change(f"{item}.level.{key}", f"level {level} = {value!r}", apply)


def _level_date(item: str, level: int, choice: int | str | None) -> Change:
    def apply(d: Draft) -> None:
        found = _level_at(d, item, level)
        if found is not None:
            _set(found, "tcbDate", _date_value(d.now, choice))

    return Change(f"{item}.level.tcbDate", f"level {level} = {choice!r}", apply)


def _levels_shape(item: str, how: str, level: int) -> Change:
    def apply(d: Draft) -> None:
        levels = _levels(d, item)
        if not levels:
            return
        if how == "drop":
            del levels[level % len(levels)]
        elif how == "duplicate":
            levels.insert(0, copy.deepcopy(levels[level % len(levels)]))
        elif how == "reverse":
            levels.reverse()
        else:  # "empty"
            levels.clear()

    return Change(f"{item}.levels.{how}", f"level {level}", apply)


def _qe_isvsvn(level: int, value: int) -> Change:
    def apply(d: Draft) -> None:
        found = _level_at(d, "qe", level)
        if found is not None:
            found["tcb"]["isvsvn"] = value

    return Change("qe.level.isvsvn", f"level {level} = {value}", apply)


def _module(key: str, value: str | None) -> Change:
    def apply(d: Draft) -> None:
        _set(d.tcb_info["tdxModule"], key, value)

    return Change(f"tcb.tdxModule.{key}", repr(value), apply)


def _module_identity(key: str, value: Any) -> Change:
    """Change the TDX module identity: a key of it, its level's isvsvn or status, or drop
    them all."""

    def apply(d: Draft) -> None:
        if key == "drop":
            d.tcb_info.pop("tdxModuleIdentities", None)
            return
        identities = d.tcb_info.get("tdxModuleIdentities")
        if not isinstance(identities, list) or not identities:
            return  # an earlier change dropped them
        identity = identities[0]
        if key == "isvsvn":
            identity["tcbLevels"][0]["tcb"]["isvsvn"] = value
        elif key == "tcbStatus":
            identity["tcbLevels"][0]["tcbStatus"] = value
        else:
            _set(identity, key, value)

    return Change(f"tcb.tdxModuleIdentities.{key}", repr(value), apply)


def _signed(item: str, chain: str, signature: str, flip_at: int) -> Change:
    def apply(d: Draft) -> None:
        plan = d.tcb_plan if item == "tcb" else d.qe_plan
        plan.chain, plan.signature, plan.flip_at = chain, signature, flip_at

    return Change(f"{item}.signed.{chain}.{signature}", f"flip at {flip_at}", apply)


def _crl_dates(which: str, this_update: int, validity: int) -> Change:
    """The CRL issued `this_update` seconds from now, valid `validity` seconds (> 0) after."""

    def apply(d: Draft) -> None:
        plan = d.pck_crl if which == "pck_crl" else d.root_crl
        plan.this_update = timedelta(seconds=this_update)
        plan.next_update = timedelta(seconds=this_update + validity)

    return Change(f"{which}.dates", f"thisUpdate {this_update:+} s, valid {validity} s", apply)


def _crl_revokes(which: str, serial_names: tuple[str, ...]) -> Change:
    def apply(d: Draft) -> None:
        known = serials(d)
        plan = d.pck_crl if which == "pck_crl" else d.root_crl
        plan.revoked = [known[n] for n in serial_names]

    return Change(f"{which}.revoked", ",".join(serial_names) or "none", apply)


def _crl_signer(which: str, signer: str) -> Change:
    def apply(d: Draft) -> None:
        (d.pck_crl if which == "pck_crl" else d.root_crl).signer = signer

    return Change(f"{which}.signer.{signer}", signer, apply)


def _pck_crl_chain(choice: str) -> Change:
    def apply(d: Draft) -> None:
        d.pck_crl_chain = choice

    return Change(f"pck_crl_issuer_chain.{choice}", choice, apply)


HEX48 = st.binary(min_size=48, max_size=48).map(lambda b: b.hex().upper())
LEVEL = st.integers(0, 3)

TCB_INFO_CHANGES: st.SearchStrategy[Change] = st.one_of(
    st.builds(
        _item_date, st.just("tcb"), st.sampled_from(["issueDate", "nextUpdate"]), DATE_CHOICES
    ),
    st.builds(
        _item_field, st.just("tcb"), st.just("id"), st.sampled_from(["TDX", "SGX", "tdx", "", None])
    ),
    st.builds(
        _item_field, st.just("tcb"), st.just("version"), st.sampled_from([2, 3, 4, "3", None])
    ),
    st.builds(
        _item_field,
        st.just("tcb"),
        st.just("fmspc"),
        st.one_of(st.sampled_from(["90c06f000000", "90C06F000001", "00806F050000", None])),
    ),
    st.builds(
        _item_field, st.just("tcb"), st.just("pceId"), st.sampled_from(["0001", "0000", "00", None])
    ),
    st.builds(_item_field, st.just("tcb"), st.just("tcbType"), st.sampled_from([0, 1, None])),
    st.builds(
        _item_field,
        st.just("tcb"),
        st.just("tcbEvaluationDataNumber"),
        st.one_of(st.integers(0, 1 << 20), st.none()),
    ),
    st.builds(
        _level_svn,
        LEVEL,
        st.sampled_from(["sgxtcbcomponents", "tdxtcbcomponents", "pcesvn"]),
        st.integers(0, 15),
        st.one_of(st.integers(0, 16), st.integers(0, 255)),
    ),
    st.builds(
        _level_key,
        st.just("tcb"),
        LEVEL,
        st.just("tcbStatus"),
        st.sampled_from(STATUSES + ODD_STATUSES),
    ),
    st.builds(
        _level_key,
        st.just("tcb"),
        LEVEL,
        st.just("advisoryIDs"),
        st.one_of(
            st.none(),
            st.lists(
                st.sampled_from(["INTEL-SA-00837", "INTEL-SA-00615", "INTEL-SA-00000"]), max_size=3
            ),
        ),
    ),
    st.builds(_level_date, st.just("tcb"), LEVEL, DATE_CHOICES),
    st.builds(
        _levels_shape,
        st.just("tcb"),
        st.sampled_from(["drop", "duplicate", "reverse", "empty"]),
        LEVEL,
    ),
    st.builds(
        _module,
        st.sampled_from(["mrsigner", "attributes", "attributesMask"]),
        st.one_of(st.none(), HEX48, st.sampled_from(["0000000000000000", "FFFFFFFFFFFFFFFF"])),
    ),
    st.builds(
        _module_identity,
        st.sampled_from(["drop", "id", "mrsigner", "attributes", "isvsvn", "tcbStatus"]),
        st.one_of(
            st.sampled_from(["TDX_01", "TDX_03", "TDX_00", "0000000000000001", None]),
            HEX48,
            st.integers(0, 10),
            st.sampled_from(STATUSES),
        ),
    ),
    st.builds(
        _signed,
        st.just("tcb"),
        st.sampled_from(
            ["sim", "no_root", "reversed", "foreign", "platform_ca", "expired", "not_yet_valid"]
        ),
        st.sampled_from(["good", "good", "flip", "short", "other_text"]),
        st.integers(0, 63),
    ),
)

QE_IDENTITY_CHANGES: st.SearchStrategy[Change] = st.one_of(
    st.builds(
        _item_date, st.just("qe"), st.sampled_from(["issueDate", "nextUpdate"]), DATE_CHOICES
    ),
    st.builds(
        _item_field, st.just("qe"), st.just("id"), st.sampled_from(["TD_QE", "QE", "QVE", None])
    ),
    st.builds(_item_field, st.just("qe"), st.just("version"), st.sampled_from([1, 2, 3, None])),
    st.builds(
        _item_field,
        st.just("qe"),
        st.sampled_from(["miscselect", "miscselectMask"]),
        st.sampled_from(["00000000", "FFFFFFFF", "00000001", None]),
    ),
    st.builds(
        _item_field,
        st.just("qe"),
        st.sampled_from(["attributes", "attributesMask"]),
        st.one_of(
            st.binary(min_size=16, max_size=16).map(lambda b: b.hex().upper()),
            st.sampled_from(
                ["11000000000000000000000000000000", "FBFFFFFFFFFFFFFF0000000000000000"]
            ),
        ),
    ),
    st.builds(
        _item_field,
        st.just("qe"),
        st.just("mrsigner"),
        st.binary(min_size=32, max_size=32).map(lambda b: b.hex().upper()),
    ),
    st.builds(_item_field, st.just("qe"), st.just("isvprodid"), st.sampled_from([0, 1, 2, 3])),
    st.builds(
        _item_field,
        st.just("qe"),
        st.just("tcbEvaluationDataNumber"),
        st.one_of(st.integers(0, 1 << 20), st.none()),
    ),
    st.builds(_qe_isvsvn, LEVEL, st.integers(0, 10)),
    st.builds(
        _level_key,
        st.just("qe"),
        LEVEL,
        st.just("tcbStatus"),
        st.sampled_from(STATUSES + ODD_STATUSES),
    ),
    st.builds(_level_date, st.just("qe"), LEVEL, DATE_CHOICES),
    st.builds(_levels_shape, st.just("qe"), st.sampled_from(["drop", "duplicate", "empty"]), LEVEL),
    st.builds(
        _signed,
        st.just("qe"),
        st.sampled_from(
            ["sim", "no_root", "reversed", "foreign", "platform_ca", "expired", "not_yet_valid"]
        ),
        st.sampled_from(["good", "good", "flip", "short", "other_text"]),
        st.integers(0, 63),
    ),
)

SERIAL_NAMES = st.lists(
    st.sampled_from(["pck", "platform_ca", "tcb_signing", "root", "other"]), max_size=2
).map(tuple)

CRL_CHANGES: st.SearchStrategy[Change] = st.one_of(
    st.builds(
        _crl_dates,
        st.sampled_from(["pck_crl", "root_ca_crl"]),
        st.one_of(st.sampled_from([-3600, -1, 0, 1, 3600]), st.integers(-40 * 86400, 2 * 86400)),
        st.one_of(st.sampled_from([1, 3600, 3601, 30 * 86400]), st.integers(1, 45 * 86400)),
    ),
    st.builds(_crl_revokes, st.sampled_from(["pck_crl", "root_ca_crl"]), SERIAL_NAMES),
    st.builds(
        _crl_signer,
        st.sampled_from(["pck_crl", "root_ca_crl"]),
        st.sampled_from(["root", "foreign", "own"]),
    ),
    st.builds(_pck_crl_chain, st.sampled_from(["no_root", "reversed", "foreign", "root_only"])),
)

CHANGES = st.one_of(TCB_INFO_CHANGES, QE_IDENTITY_CHANGES, CRL_CHANGES)
