"""verify_record and verify_attestation on real sim quotes: a genuine record gives its facts,
and each alteration of the quote, the binding, an identity, the PPID or the event log is
refused by the check that names it."""

from __future__ import annotations

import base64
import dataclasses
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from tdxctl_support import CONFIGURE, PODMAN, SimTd, altered_log, host_key_line, raw

from tdx_measure import (
    DOMAIN_TAG,
    EventLog,
    IdentityEvent,
    SshHostKeyEvent,
)
from tdx_report_data import prove_possession, report_data_for_v2
from tdx_sim import DEFAULT_MR_TD, SimOptions
from tdx_verify import Policy
from tdxctl import (
    BindingMismatch,
    EventLogRejected,
    ExpectationFailed,
    HostKeyMismatch,
    IdentityRejected,
    QuoteRejected,
    QuoteVerifier,
    RecordFormatError,
    RegistryRecord,
    RegistryRefusedRecord,
    TrustSettings,
    VerifiedFacts,
    check_registry_verdict,
    verify_attestation,
    verify_record,
)

OPERATOR = Ed25519PrivateKey.generate()
OWNER = Ed25519PrivateKey.generate()


async def check(td: SimTd, record: RegistryRecord, verifier: QuoteVerifier) -> VerifiedFacts:
    return await verify_record(record, instance_pubkey=td.pubkey, verifier=verifier)


async def test_a_genuine_record_verifies_and_gives_its_facts(
    td: SimTd, verifier: QuoteVerifier
) -> None:
    td.delegated(OPERATOR, OWNER)
    before = datetime.now(UTC)
    facts = await verify_record(
        td.record(),
        instance_pubkey=td.pubkey,
        verifier=verifier,
        expect_operator=raw(OPERATOR),
        expect_owner=raw(OWNER),
    )
    rtmrs = td.platform.rtmrs.read()
    assert facts.tcb_status == "UpToDate"
    assert facts.advisory_ids == ()
    assert facts.mr_td == DEFAULT_MR_TD
    assert (facts.rtmr0, facts.rtmr1, facts.rtmr2, facts.rtmr3) == rtmrs
    assert facts.operator == raw(OPERATOR)
    assert facts.owner == raw(OWNER)
    assert facts.helpers == (PODMAN,)
    assert facts.workload_events == (CONFIGURE,)
    assert facts.ssh_host_key == host_key_line(td.ssh_host_key)
    assert facts.ppid == td.platform.ppid
    assert before <= facts.verified_at <= datetime.now(UTC)
    shown = facts.to_object()
    assert shown["helpers"] == [
        {
            "role": "podman",
            "path": "/usr/bin/podman",
            "sha384": PODMAN.sha384.hex(),
            "build_id": bytes(range(20)).hex(),
        }
    ]
    assert shown["workload_events"] == [CONFIGURE.to_object()]
    assert shown["owner"] == raw(OWNER).hex()


async def test_a_fresh_instance_without_identities_verifies(
    td: SimTd, verifier: QuoteVerifier
) -> None:
    facts = await check(td, td.record(), verifier)
    assert (facts.operator, facts.owner, facts.ssh_host_key) == (None, None, None)


def test_facts_cannot_be_made_outside_the_verifier() -> None:
    fields = {f.name: None for f in dataclasses.fields(VerifiedFacts)}
    with pytest.raises(TypeError, match="cannot be constructed directly"):
        VerifiedFacts(**fields)  # type: ignore[arg-type]


async def test_an_altered_quote_signature_is_refused(td: SimTd, verifier: QuoteVerifier) -> None:
    td.delegated(OPERATOR, OWNER)
    obj = td.record_object()
    quote = bytearray(base64.b64decode(obj["attestation_quote"]))
    quote[48 + 584 + 4 + 10] ^= 0x01  # inside the quote's ECDSA signature
    record = td.record(attestation_quote=base64.b64encode(bytes(quote)).decode())
    with pytest.raises(QuoteRejected) as refused:
        await check(td, record, verifier)
    assert refused.value.step == "quote_signature"


async def test_an_altered_quote_body_is_refused(td: SimTd, verifier: QuoteVerifier) -> None:
    td.delegated(OPERATOR, OWNER)
    quote = bytearray(base64.b64decode(td.record_object()["attestation_quote"]))
    quote[48 + 136] ^= 0x01  # one byte of MRTD
    record = td.record(attestation_quote=base64.b64encode(bytes(quote)).decode())
    with pytest.raises(QuoteRejected, match="quote_signature"):
        await check(td, record, verifier)


async def test_a_quote_under_another_root_is_refused(td: SimTd, sim_url: str) -> None:
    """The caller's root, not the sim's: Intel's built-in root does not sign the sim's PCK."""
    td.delegated(OPERATOR, OWNER)
    async with QuoteVerifier(TrustSettings(root_ca_pem=None, pccs_url=sim_url)) as intel_only:
        with pytest.raises(QuoteRejected) as refused:
            await check(td, td.record(), intel_only)
    assert refused.value.check == "quote"


async def test_the_callers_policy_refuses_a_debug_td_and_an_unlisted_mrtd(
    sim_state: Path, trust: TrustSettings, verifier: QuoteVerifier
) -> None:
    debug = SimTd(sim_state, SimOptions(debug_td=True))
    with pytest.raises(QuoteRejected, match="debug"):
        await check(debug, debug.record(), verifier)
    async with QuoteVerifier(dataclasses.replace(trust, policy=Policy(allow_debug=True))) as qv:
        assert (await check(debug, debug.record(), qv)).mr_td == DEFAULT_MR_TD
    listed = Policy(mrtd_allowlist=frozenset({bytes(48)}))
    async with QuoteVerifier(dataclasses.replace(trust, policy=listed)) as qv:
        plain = SimTd(sim_state)
        with pytest.raises(QuoteRejected, match="MRTD"):
            await check(plain, plain.record(), qv)


async def test_a_record_whose_identities_differ_from_the_quotes_binding_is_refused(
    td: SimTd, verifier: QuoteVerifier
) -> None:
    """Another owner, validly signed by the instance, swapped into the stored record."""
    td.delegated(OPERATOR, OWNER)
    mallory = td.identity(Ed25519PrivateKey.generate(), "owner")
    record = td.record(owner=mallory.to_object())
    quote_for_original = td.record_object()["attestation_quote"]
    record = dataclasses.replace(record, attestation_quote=base64.b64decode(quote_for_original))
    with pytest.raises(BindingMismatch, match="report_data"):
        await check(td, record, verifier)


async def test_a_quote_over_another_report_data_is_refused(
    td: SimTd, verifier: QuoteVerifier
) -> None:
    td.delegated(OPERATOR, OWNER)
    other = td.quote(os.urandom(64))
    record = dataclasses.replace(td.record(), attestation_quote=other)
    with pytest.raises(BindingMismatch, match="report_data"):
        await check(td, record, verifier)


async def test_an_altered_identity_signature_is_refused(td: SimTd, verifier: QuoteVerifier) -> None:
    td.delegated(OPERATOR, OWNER)
    owner = td.record_object()["owner"]
    signature = bytearray(bytes.fromhex(owner["identity_signature"]))
    signature[0] ^= 0x01
    record = td.record(owner={**owner, "identity_signature": signature.hex()})
    with pytest.raises(IdentityRejected, match="owner"):
        await check(td, record, verifier)


async def test_an_identity_signed_by_another_instance_is_refused(
    sim_state: Path, td: SimTd, verifier: QuoteVerifier
) -> None:
    td.delegated(OPERATOR, OWNER)
    elsewhere = SimTd(sim_state).identity(OPERATOR, "operator")
    record = td.record(operator=elsewhere.to_object())
    with pytest.raises(IdentityRejected, match="operator"):
        await check(td, record, verifier)


async def test_an_owner_without_an_operator_is_refused(td: SimTd, verifier: QuoteVerifier) -> None:
    td.delegated(OPERATOR, OWNER)
    with pytest.raises(IdentityRejected, match="no operator"):
        await check(td, td.record(operator=None), verifier)


async def test_a_record_whose_ppid_is_not_the_quotes_is_refused(
    td: SimTd, verifier: QuoteVerifier
) -> None:
    """report_data binds the claimed PPID (and the instance key proves possession over it), but
    the quoting platform's PCK says another."""
    td.delegated(OPERATOR, OWNER)
    claimed = bytes(16)
    report_data = report_data_for_v2(td.pubkey, claimed, td.challenge, td.operator, td.owner)
    record = dataclasses.replace(
        td.record(),
        ppid=claimed,
        attestation_quote=td.quote(report_data),
        proof_of_possession=prove_possession(td.instance, td.challenge, report_data),
    )
    with pytest.raises(BindingMismatch, match="PPID"):
        await check(td, record, verifier)


async def test_a_record_of_another_instance_is_refused(
    sim_state: Path, td: SimTd, verifier: QuoteVerifier
) -> None:
    other = SimTd(sim_state)
    with pytest.raises(BindingMismatch, match="another instance"):
        await verify_record(other.record(), instance_pubkey=td.pubkey, verifier=verifier)


async def test_an_altered_event_log_is_refused(td: SimTd, verifier: QuoteVerifier) -> None:
    td.delegated(OPERATOR, OWNER)
    record = dataclasses.replace(td.record(), event_log=altered_log(td.log))
    with pytest.raises(EventLogRejected, match="does not verify"):
        await check(td, record, verifier)


async def test_a_truncated_or_malformed_or_missing_event_log_is_refused(
    td: SimTd, verifier: QuoteVerifier
) -> None:
    td.delegated(OPERATOR, OWNER)
    record = td.record()
    truncated = EventLog(td.log.boot)
    for event in td.log.events[1:-1]:
        truncated.append(event)
    for log in (truncated.to_json(), "{not json", DOMAIN_TAG.decode()):
        with pytest.raises(EventLogRejected):
            await check(td, dataclasses.replace(record, event_log=log), verifier)
    with pytest.raises(EventLogRejected, match="no RTMR3 event log"):
        await check(td, dataclasses.replace(record, event_log=None), verifier)


async def test_a_log_that_does_not_name_the_records_identities_is_refused(
    td: SimTd, verifier: QuoteVerifier
) -> None:
    """The record has an operator and an owner; the TD's log never measured them."""
    td.append(PODMAN)
    td.operator, td.owner = td.identity(OPERATOR, "operator"), td.identity(OWNER, "owner")
    with pytest.raises(EventLogRejected, match="does not name the record's operator"):
        await check(td, td.record(), verifier)


async def test_a_log_whose_latest_owner_is_another_key_is_refused(
    td: SimTd, verifier: QuoteVerifier
) -> None:
    td.delegated(OPERATOR, OWNER)
    td.append(IdentityEvent(role="owner", pubkey=raw(Ed25519PrivateKey.generate())))
    with pytest.raises(EventLogRejected, match="latest owner"):
        await check(td, td.record(), verifier)


async def test_a_log_naming_an_identity_the_record_lacks_is_refused(
    td: SimTd, verifier: QuoteVerifier
) -> None:
    td.register("operator", OPERATOR)
    td.operator = None
    with pytest.raises(EventLogRejected, match="does not have"):
        await check(td, td.record(), verifier)


async def test_a_registry_ssh_host_key_other_than_the_measured_one_is_refused(
    td: SimTd, verifier: QuoteVerifier
) -> None:
    td.delegated(OPERATOR, OWNER)
    other = host_key_line(Ed25519PrivateKey.generate())
    with pytest.raises(HostKeyMismatch):
        await check(td, td.record(ssh_host_key=other), verifier)


async def test_a_registry_ssh_host_key_without_a_measured_one_is_refused(
    td: SimTd, verifier: QuoteVerifier
) -> None:
    line = host_key_line(Ed25519PrivateKey.generate())
    with pytest.raises(HostKeyMismatch):
        await check(td, td.record(ssh_host_key=line), verifier)


async def test_expect_owner_and_operator_with_other_keys_are_refused(
    td: SimTd, verifier: QuoteVerifier
) -> None:
    td.delegated(OPERATOR, OWNER)
    stranger = raw(Ed25519PrivateKey.generate())
    with pytest.raises(ExpectationFailed, match=r"owner is .* not the expected"):
        await verify_record(
            td.record(), instance_pubkey=td.pubkey, verifier=verifier, expect_owner=stranger
        )
    with pytest.raises(ExpectationFailed, match=r"operator is .* not the expected"):
        await verify_record(
            td.record(), instance_pubkey=td.pubkey, verifier=verifier, expect_operator=stranger
        )


async def test_expect_owner_of_an_instance_without_owner_is_refused(
    td: SimTd, verifier: QuoteVerifier
) -> None:
    with pytest.raises(ExpectationFailed, match="no owner"):
        await verify_record(
            td.record(), instance_pubkey=td.pubkey, verifier=verifier, expect_owner=raw(OWNER)
        )


async def test_a_v1_record_is_refused_unless_accept_v1_then_checked_as_v1(
    td: SimTd, verifier: QuoteVerifier
) -> None:
    td.delegated(OPERATOR, OWNER, v1=True)
    record = td.record(v1=True)
    assert record.binding_version == 1 and record.challenge is None
    with pytest.raises(BindingMismatch, match="v1 registration"):
        await check(td, record, verifier)
    facts = await verify_record(
        record, instance_pubkey=td.pubkey, verifier=verifier, accept_v1=True
    )
    assert facts.operator == raw(OPERATOR) and facts.owner == raw(OWNER)
    v2_identity = td.record(v1=True, owner=td.identity(OWNER, "owner").to_object())
    with pytest.raises(IdentityRejected, match="owner"):
        await verify_record(
            v2_identity, instance_pubkey=td.pubkey, verifier=verifier, accept_v1=True
        )


async def test_v1_identities_in_a_v2_record_pass_only_with_accept_v1(
    td: SimTd, verifier: QuoteVerifier
) -> None:
    """A v2 registration of an instance whose operator and owner signed before v2."""
    td.delegated(OPERATOR, OWNER, v1=True)
    record = td.record()
    with pytest.raises(IdentityRejected, match=r"operator.*v2 signature"):
        await check(td, record, verifier)
    facts = await verify_record(
        record, instance_pubkey=td.pubkey, verifier=verifier, accept_v1=True
    )
    assert facts.owner == raw(OWNER)


async def test_an_identity_signed_for_the_other_role_is_refused(
    td: SimTd, verifier: QuoteVerifier
) -> None:
    """The owner's key accepted the instance as its operator: valid v2 signatures, wrong role."""
    td.delegated(OPERATOR, OWNER)
    td.owner = td.identity(OWNER, "operator")
    with pytest.raises(IdentityRejected, match=r"owner.*v2 signature"):
        await check(td, td.record(), verifier)
    with pytest.raises(IdentityRejected, match="owner"):
        await verify_record(
            td.record(), instance_pubkey=td.pubkey, verifier=verifier, accept_v1=True
        )


async def test_a_record_over_another_challenge_is_refused(
    td: SimTd, verifier: QuoteVerifier
) -> None:
    """The registry claims a challenge other than the one the quote's report_data bound."""
    td.delegated(OPERATOR, OWNER)
    genuine = td.record_object()
    other = os.urandom(32)
    with pytest.raises(BindingMismatch, match="challenge"):
        await check(td, td.record(challenge=other.hex()), verifier)
    report_data = report_data_for_v2(
        td.pubkey, td.platform.ppid, td.challenge, td.operator, td.owner
    )
    moved = prove_possession(td.instance, other, report_data).hex()
    with pytest.raises(BindingMismatch, match="report_data"):
        await check(td, td.record(challenge=other.hex(), proof_of_possession=moved), verifier)
    assert (await check(td, RegistryRecord.from_object(genuine), verifier)).owner == raw(OWNER)


async def test_a_missing_or_forged_proof_of_possession_is_refused(
    td: SimTd, verifier: QuoteVerifier
) -> None:
    td.delegated(OPERATOR, OWNER)
    proof = bytearray(bytes.fromhex(td.record_object()["proof_of_possession"]))
    proof[5] ^= 0x01
    with pytest.raises(BindingMismatch, match="proof of possession"):
        await check(td, td.record(proof_of_possession=proof.hex()), verifier)
    report_data = report_data_for_v2(
        td.pubkey, td.platform.ppid, td.challenge, td.operator, td.owner
    )
    stranger = prove_possession(Ed25519PrivateKey.generate(), td.challenge, report_data)
    with pytest.raises(BindingMismatch, match="proof of possession"):
        await check(td, td.record(proof_of_possession=stranger.hex()), verifier)
    with pytest.raises(RecordFormatError, match="proof_of_possession"):
        td.record(proof_of_possession=None)
    dropped = dataclasses.replace(td.record(), proof_of_possession=None)
    with pytest.raises(RecordFormatError, match="lacks"):
        await check(td, dropped, verifier)


@pytest.mark.parametrize(
    "binding",
    [
        {"binding_version": 3},
        {"binding_version": "2"},
        {"binding_version": True},
        {"binding_version": 2, "challenge": None},
        {"binding_version": 2, "challenge": "zz" * 32},
        {"binding_version": 2, "proof_of_possession": "00" * 63},
        {"binding_version": 1, "proof_of_possession": None},
    ],
)
def test_a_malformed_binding_is_a_format_error(td: SimTd, binding: dict[str, Any]) -> None:
    with pytest.raises(RecordFormatError, match=r"binding_version|challenge|proof_of_possession"):
        td.record(**binding)


def test_the_registrys_refusal_is_decoded_printable_and_checked(td: SimTd) -> None:
    assert td.record().registry_refused is None  # an older registry: no "verification"
    assert td.record(verification=None).registry_refused is None
    assert td.record(verification={"refused": None}).registry_refused is None
    record = td.record(verification={"refused": "policy: revoked\x1b[2J"})
    assert record.registry_refused == "policy: revoked\\x1b[2J"  # escaped for a terminal
    with pytest.raises(RegistryRefusedRecord) as refused:
        check_registry_verdict(record)
    assert refused.value.check == "registry_verdict"
    assert refused.value.refused == record.registry_refused
    assert check_registry_verdict(record, accept_refusal=True) == record.registry_refused
    assert check_registry_verdict(td.record()) is None
    assert td.record(verification={"refused": ""}).registry_refused == "(no reason given)"
    bad: object
    for bad in ([], "refused", {"refused": 1}, {"refused": ["x"]}):
        with pytest.raises(RecordFormatError, match="verification"):
            td.record(verification=bad)


def test_a_malformed_record_is_a_format_error() -> None:
    bad: object
    for bad in (
        [],
        {"instance_pubkey": "00"},
        {"instance_pubkey": "00" * 32, "ppid": "zz", "attestation_quote": ""},
        {"instance_pubkey": "00" * 32, "ppid": "00 11", "attestation_quote": ""},
        {"instance_pubkey": " " + "00" * 32, "ppid": "00", "attestation_quote": ""},
        {"instance_pubkey": "00" * 32, "ppid": "00", "attestation_quote": "***"},
        {"instance_pubkey": "00" * 32, "ppid": "00", "attestation_quote": "", "owner": 3},
        {"instance_pubkey": "00" * 32, "ppid": "", "attestation_quote": "", "event_log": 1},
        {
            "instance_pubkey": "00" * 32,
            "ppid": "",
            "attestation_quote": "",
            "operator": {"pubkey": "00"},
        },
    ):
        with pytest.raises(RecordFormatError):
            RegistryRecord.from_object(bad)


async def test_a_fresh_challenge_answer_verifies(td: SimTd, verifier: QuoteVerifier) -> None:
    td.delegated(OPERATOR, OWNER)
    nonce = os.urandom(32)
    facts = await verify_attestation(
        td.answer(nonce),
        instance_pubkey=td.pubkey,
        nonce=nonce,
        verifier=verifier,
        expect_ppid=td.platform.ppid,
    )
    assert facts.nonce == nonce
    assert (facts.operator, facts.owner) == (raw(OPERATOR), raw(OWNER))
    assert facts.ssh_host_key == host_key_line(td.ssh_host_key)
    assert facts.to_object()["nonce"] == nonce.hex()


async def test_a_challenge_answer_for_another_nonce_is_refused(
    td: SimTd, verifier: QuoteVerifier
) -> None:
    asked, answered = os.urandom(32), os.urandom(32)
    with pytest.raises(BindingMismatch, match="another nonce"):
        await verify_attestation(
            td.answer(answered), instance_pubkey=td.pubkey, nonce=asked, verifier=verifier
        )
    relabelled = dataclasses.replace(td.answer(answered), nonce=asked)
    with pytest.raises(BindingMismatch, match="challenge binding"):
        await verify_attestation(
            relabelled, instance_pubkey=td.pubkey, nonce=asked, verifier=verifier
        )


async def test_a_challenge_answer_from_another_instance_is_refused(
    sim_state: Path, td: SimTd, verifier: QuoteVerifier
) -> None:
    nonce = os.urandom(32)
    other = SimTd(sim_state)
    with pytest.raises(BindingMismatch, match="another instance"):
        await verify_attestation(
            other.answer(nonce), instance_pubkey=td.pubkey, nonce=nonce, verifier=verifier
        )
    forwarded = dataclasses.replace(other.answer(nonce), instance_pubkey=td.pubkey)
    with pytest.raises(BindingMismatch, match="challenge binding"):
        await verify_attestation(
            forwarded, instance_pubkey=td.pubkey, nonce=nonce, verifier=verifier
        )


async def test_a_registration_quote_never_passes_as_a_challenge_answer(
    td: SimTd, verifier: QuoteVerifier
) -> None:
    nonce = os.urandom(32)
    registered = report_data_for_v2(td.pubkey, td.platform.ppid, nonce, None, None)
    with pytest.raises(BindingMismatch, match="challenge binding"):
        await verify_attestation(
            td.answer(nonce, report_data=registered),
            instance_pubkey=td.pubkey,
            nonce=nonce,
            verifier=verifier,
        )


async def test_a_challenge_answer_from_another_platform_is_refused(
    td: SimTd, verifier: QuoteVerifier
) -> None:
    nonce = os.urandom(32)
    with pytest.raises(BindingMismatch, match="PPID"):
        await verify_attestation(
            td.answer(nonce),
            instance_pubkey=td.pubkey,
            nonce=nonce,
            verifier=verifier,
            expect_ppid=bytes(16),
        )


async def test_a_challenge_answer_whose_log_does_not_replay_is_refused(
    td: SimTd, verifier: QuoteVerifier
) -> None:
    nonce = os.urandom(32)
    answer = td.answer(nonce)
    td.append(SshHostKeyEvent(public_key=host_key_line(Ed25519PrivateKey.generate())))
    stale_quote_new_log = dataclasses.replace(answer, event_log=td.log.to_json())
    with pytest.raises(EventLogRejected):
        await verify_attestation(
            stale_quote_new_log, instance_pubkey=td.pubkey, nonce=nonce, verifier=verifier
        )
