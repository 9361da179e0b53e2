"""`tdxctl`: the command line of the operator and the owner (API.md, "tdxctl").

Readable text by default, one JSON object on stdout with `--json`; exit 0 on success, 1 when
a check or a request fails (the reason on stderr, and in `"error"` with `--json`), 2 on a usage
error. Defaults come from the TDXCTL_* variables, read once into `Defaults`."""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import sys
from collections.abc import Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, NoReturn, TextIO
from urllib.parse import urlsplit

from cryptography import x509

from tdx_verify import KNOWN_TCB_STATUSES, Policy
from tdxctl._audit import (
    MAX_KEY_TEXT,
    LogClient,
    audit_instance,
    load_audit_state,
    parse_verifier_key,
    write_audit_state,
)
from tdxctl._clients import HEX, IdentityClient, RegistryClient
from tdxctl._errors import (
    BrokerRefused,
    LogKeyRejected,
    RegistryRefusedRecord,
    TdxctlError,
    VerificationFailed,
)
from tdxctl._flows import SshTarget, attested_ssh_target, register_operator, register_owner
from tdxctl._get import GetTarget, RegistryAppraiser, attested_get
from tdxctl._kbs import KbsAdmin, load_policy, load_store_key, new_store_key
from tdxctl._keys import generate_key_file, load_private_key, public_key_bytes
from tdxctl._ssh import DEFAULT_SSH_PORT, run_pinned_ssh
from tdxctl._verify import (
    INTEL_PCS_URL,
    QuoteVerifier,
    TrustSettings,
    VerifiedFacts,
    check_registry_verdict,
    verify_record,
)

__all__ = ["Defaults", "build_parser", "main"]

EXIT_OK: Final = 0
EXIT_FAILED: Final = 1
EXIT_USAGE: Final = 2


@dataclass(frozen=True)
class Defaults:
    """The TDXCTL_* defaults, read once from the environment."""

    identity_url: str | None = None
    registry_url: str | None = None
    key: str | None = None
    trusted_root_ca: str | None = None
    pccs_url: str | None = None
    kbs_url: str | None = None

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> Defaults:
        def get(name: str) -> str | None:
            return environ.get(name) or None

        return cls(
            identity_url=get("TDXCTL_IDENTITY_URL"),
            registry_url=get("TDXCTL_REGISTRY_URL"),
            key=get("TDXCTL_KEY"),
            trusted_root_ca=get("TDXCTL_TRUSTED_ROOT_CA"),
            pccs_url=get("TDXCTL_PCCS_URL"),
            kbs_url=get("TDXCTL_KBS_URL"),
        )


class UsageError(Exception):
    """A command line that does not parse (exit 2)."""


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser that raises `UsageError` instead of exiting, so `main` decides how
    to report it (also as JSON)."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{self.prog}: {message}")


@dataclass(frozen=True)
class Outcome:
    """A command's result: its JSON object, its readable lines (or `raw` bytes written to
    stdout as they are), and the exit status."""

    data: dict[str, Any]
    text: list[str] = field(default_factory=list)
    status: int = EXIT_OK
    raw: bytes | None = None


# ---- argument types: each refuses a bad value as a usage error -------------------------


def _hex_bytes(length: int, what: str) -> Callable[[str], bytes]:
    def parse(value: str) -> bytes:
        if HEX.fullmatch(value) is None:
            raise argparse.ArgumentTypeError(f"{what} must be hex")
        data = bytes.fromhex(value)
        if len(data) != length:
            raise argparse.ArgumentTypeError(f"{what} must be {length} bytes ({2 * length} hex)")
        return data

    return parse


_pubkey = _hex_bytes(32, "a public key")


def _port(value: str) -> int:
    if not value.isdigit() or not 1 <= int(value) <= 65535:
        raise argparse.ArgumentTypeError("a port is an integer from 1 to 65535")
    return int(value)


def _tcb_statuses(value: str) -> frozenset[str]:
    statuses = frozenset(s.strip() for s in value.split(",") if s.strip())
    unknown = sorted(statuses - KNOWN_TCB_STATUSES)
    if not statuses or unknown:
        raise argparse.ArgumentTypeError(
            f"unknown TCB status {', '.join(unknown) or '(none)'}; "
            f"known: {', '.join(sorted(KNOWN_TCB_STATUSES))}"
        )
    return statuses


def _mrtd_list(value: str) -> frozenset[bytes]:
    parse = _hex_bytes(48, "an MRTD")
    items = [item.strip() for item in value.split(",") if item.strip()]
    if not items:
        raise argparse.ArgumentTypeError("give at least one MRTD (96 hex characters)")
    return frozenset(parse(item) for item in items)


def _root_ca(value: str) -> bytes:
    try:
        pem = Path(value).read_bytes()
    except OSError as exc:
        raise argparse.ArgumentTypeError(f"cannot read {value}: {exc.strerror}") from None
    try:
        x509.load_pem_x509_certificate(pem)
    except (ValueError, x509.InvalidVersion):
        raise argparse.ArgumentTypeError(f"{value} is not a PEM certificate") from None
    return pem


def _https_target(value: str) -> GetTarget:
    try:
        return GetTarget.parse(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _log_key(value: str) -> str:
    """A note verifier key given inline, or as @FILE; checked to be one (usage error else)."""
    text = value
    if value.startswith("@"):
        try:
            with Path(value[1:]).open("rb") as handle:
                data = handle.read(MAX_KEY_TEXT + 1)
        except OSError as exc:
            raise argparse.ArgumentTypeError(f"cannot read {value[1:]}: {exc.strerror}") from None
        if len(data) > MAX_KEY_TEXT:
            raise argparse.ArgumentTypeError(f"{value[1:]} is too large to be a verifier key")
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            raise argparse.ArgumentTypeError(f"{value[1:]} is not UTF-8 text") from None
    try:
        parse_verifier_key(text)
    except LogKeyRejected as exc:
        raise argparse.ArgumentTypeError(exc.reason) from None
    return text.strip()


def _url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise argparse.ArgumentTypeError(f"{value!r} is not an http(s) URL")
    return value.rstrip("/")


# ---- the parser ---------------------------------------------------------------------------


def build_parser(defaults: Defaults) -> argparse.ArgumentParser:
    """The whole command line; `defaults` fill the flags the TDXCTL_* variables name."""
    output = _Parser(add_help=False)
    output.add_argument(
        "--json", action="store_true", help="print one JSON object on stdout instead of text"
    )

    trust = _Parser(add_help=False)
    group = trust.add_argument_group("verification (the caller's own trust; never the registry's)")
    group.add_argument(
        "--trusted-root-ca",
        metavar="PEM",
        type=_root_ca,
        default=defaults.trusted_root_ca,
        help="root CA of the PCK chain (default: Intel's SGX Root CA, built in; "
        "env TDXCTL_TRUSTED_ROOT_CA)",
    )
    group.add_argument(
        "--pccs-url",
        metavar="URL",
        type=_url,
        default=defaults.pccs_url or INTEL_PCS_URL,
        help=f"PCCS serving the v4 API (default: {INTEL_PCS_URL}; env TDXCTL_PCCS_URL)",
    )
    group.add_argument(
        "--accept-tcb-status",
        metavar="S[,S...]",
        type=_tcb_statuses,
        default=None,
        help="TCB statuses to accept (default: UpToDate, SWHardeningNeeded, "
        "ConfigurationNeeded, ConfigurationAndSWHardeningNeeded; Revoked never)",
    )
    group.add_argument(
        "--mrtd-allowlist",
        metavar="HEX[,HEX...]",
        type=_mrtd_list,
        default=None,
        help="accept only these MRTD values (48 bytes each)",
    )
    group.add_argument(
        "--allow-debug", action="store_true", help="accept a debug TD (never in production)"
    )

    def url_flag(p: argparse.ArgumentParser, name: str, default: str | None, env: str) -> None:
        p.add_argument(
            f"--{name}",
            metavar="URL",
            type=_url,
            default=default,
            help=f"the {name.replace('-', ' ')} service base URL (env {env})",
        )

    def registry_refusal_flag(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--accept-registry-refusal",
            action="store_true",
            help="when the registry's own verdict on the record is a refusal "
            "(verification.refused), succeed on this verification alone, with a warning "
            "(default: exit 1, check registry_verdict)",
        )

    def key_flag(p: argparse.ArgumentParser, who: str) -> None:
        p.add_argument(
            "--key",
            metavar="FILE",
            type=Path,
            default=None if defaults.key is None else Path(defaults.key),
            help=f"the {who}'s ed25519 private key (PEM; env TDXCTL_KEY)",
        )

    parser = _Parser(
        prog="tdxctl",
        description="The operator's and owner's client of a TDX identity service: "
        "it verifies the instance's evidence before it signs, sends or connects.",
        parents=[output],
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    keygen = commands.add_parser(
        "keygen",
        parents=[output],
        help="create an ed25519 key file",
        description="Create a new ed25519 private key in FILE (PEM PKCS#8, mode 0600, never "
        "overwriting) and print its public key (hex).",
    )
    keygen.add_argument("file", metavar="FILE", type=Path)
    keygen.set_defaults(run=_blocking(_keygen))

    operator = commands.add_parser(
        "operator", help="operator commands", description="Operator commands."
    )
    operator_commands = operator.add_subparsers(
        dest="subcommand", metavar="SUBCOMMAND", required=True
    )
    op_register = operator_commands.add_parser(
        "register",
        parents=[output, trust],
        help="verify a fresh attestation, then register as operator",
        description="Fetch a fresh /instance/attestation with a random nonce, verify it "
        "(instance key, challenge binding, DCAP, event log replay), and only then sign the "
        "instance key and register as its operator. Prints the owner token.",
    )
    url_flag(op_register, "identity", defaults.identity_url, "TDXCTL_IDENTITY_URL")
    key_flag(op_register, "operator")
    op_register.set_defaults(run=_blocking(_operator_register), needs=("identity", "key"))

    owner = commands.add_parser("owner", help="owner commands", description="Owner commands.")
    owner_commands = owner.add_subparsers(dest="subcommand", metavar="SUBCOMMAND", required=True)
    ow_register = owner_commands.add_parser(
        "register",
        parents=[output, trust],
        help="verify a fresh attestation, register as owner, verify it measured you",
        description="Fetch a fresh /instance/attestation with a random nonce and verify it "
        "(instance key, challenge binding, DCAP, event log replay); its log must name an "
        "operator (--expect-operator: that one). Only then sign the instance key and register "
        "as its owner with the operator's token, and verify another fresh attestation of the "
        "same instance and platform: its log must name this owner under the same operator, or "
        "the command fails (exit 1, check 'expectation').",
    )
    url_flag(ow_register, "identity", defaults.identity_url, "TDXCTL_IDENTITY_URL")
    key_flag(ow_register, "owner")
    ow_register.add_argument("--token", required=True, help="the owner token from the operator")
    ow_register.add_argument(
        "--expect-operator",
        metavar="HEX",
        type=_pubkey,
        default=None,
        help="the operator the fresh attestation must name (its public key, hex)",
    )
    ow_register.set_defaults(run=_blocking(_owner_register), needs=("identity", "key"))

    verify = commands.add_parser(
        "verify",
        parents=[output, trust],
        help="verify an instance's registry record independently",
        description="Verify the registry's record of an instance with your own trust root and "
        "policy: a v2 registration (v1 only with --accept-v1), full DCAP of its quote, the "
        "report_data binding of the whole record over the registry's challenge, the instance "
        "key's proof of possession, both v2 signatures of each identity in its role, the PPID, "
        "the event log replayed to RTMR3 and naming the record's operator and owner, the SSH "
        "host key; print the facts.",
    )
    url_flag(verify, "registry", defaults.registry_url, "TDXCTL_REGISTRY_URL")
    verify.add_argument("--instance", metavar="HEX", type=_pubkey, required=True)
    verify.add_argument("--expect-operator", metavar="HEX", type=_pubkey, default=None)
    verify.add_argument("--expect-owner", metavar="HEX", type=_pubkey, default=None)
    verify.add_argument(
        "--accept-v1",
        action="store_true",
        help="also accept a v1 record (no registry challenge, no proof of possession, identity "
        "signatures naming no role), checked as v1: it could be a replayed registration",
    )
    registry_refusal_flag(verify)
    verify.set_defaults(run=_blocking(_verify), needs=("registry",))

    workload = commands.add_parser(
        "workload", help="owner's workload steps", description="The owner's signed workload steps."
    )
    workload_commands = workload.add_subparsers(
        dest="subcommand", metavar="SUBCOMMAND", required=True
    )
    configure = workload_commands.add_parser(
        "configure",
        parents=[output],
        help="sign and send configure with the next seq",
        description="Sign and send /workload/configure with the next seq (last_seq + 1).",
    )
    url_flag(configure, "identity", defaults.identity_url, "TDXCTL_IDENTITY_URL")
    key_flag(configure, "owner")
    configure.add_argument("--image", metavar="REF", required=True)
    configure.add_argument(
        "--persist-dir", metavar="DIR", action="append", default=[], dest="persist_dirs"
    )
    configure.add_argument("--port", metavar="N", type=_port, required=True)
    configure.set_defaults(run=_blocking(_configure), needs=("identity", "key"))

    expose = workload_commands.add_parser(
        "expose",
        parents=[output],
        help="sign and send expose with the next seq",
        description="Sign and send /workload/expose with the next seq: SSH closes for good.",
    )
    url_flag(expose, "identity", defaults.identity_url, "TDXCTL_IDENTITY_URL")
    key_flag(expose, "owner")
    expose.add_argument("--image", metavar="REF", required=True)
    expose.set_defaults(run=_blocking(_expose), needs=("identity", "key"))

    ssh = commands.add_parser(
        "ssh",
        parents=[output, trust],
        help="SSH into the workload, pinning the attested host key",
        description="Verify the record (your key as owner) and a fresh attestation, pin the "
        "SSH host key both measure, and run OpenSSH with it as the only known host key "
        "(StrictHostKeyChecking=yes). `-- COMMAND...` runs one command. The exit status is "
        "ssh's.",
    )
    url_flag(ssh, "identity", defaults.identity_url, "TDXCTL_IDENTITY_URL")
    url_flag(ssh, "registry", defaults.registry_url, "TDXCTL_REGISTRY_URL")
    key_flag(ssh, "owner")
    ssh.add_argument("--ssh-port", metavar="N", type=_port, default=DEFAULT_SSH_PORT)
    ssh.add_argument("--user", default="owner", help="the SSH user name (any is accepted)")
    ssh.add_argument("command_line", metavar="COMMAND", nargs="*", help="after --: one command")
    ssh.set_defaults(run=_ssh, needs=("identity", "registry", "key"))

    kbs = commands.add_parser(
        "kbs",
        help="the owner's key broker (admin)",
        description="Admin steps on the owner's key broker (tdx-kbs, Trustee's KBS protocol), "
        "each with a fresh admin JWT (EdDSA, 60 s lifetime) signed by --admin-key.",
    )
    kbs_commands = kbs.add_subparsers(dest="subcommand", metavar="SUBCOMMAND", required=True)

    def kbs_flags(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--kbs",
            metavar="URL",
            type=_url,
            default=defaults.kbs_url,
            help="the key broker's base URL (env TDXCTL_KBS_URL)",
        )
        p.add_argument(
            "--admin-key",
            metavar="FILE",
            type=Path,
            default=None if defaults.key is None else Path(defaults.key),
            help="the owner's ed25519 private key, which is also the broker's admin key "
            "(PEM; env TDXCTL_KEY)",
        )

    put_key = kbs_commands.add_parser(
        "put-key",
        parents=[output],
        help="upload an instance's store key",
        description="Upload the store key of an instance as the resource "
        "tdx-identity/store-key/<instance hex>: 32 bytes from --key-file (raw, or 64 hex "
        "digits; mode 0600), or a new random key when none is given, in an envelope signed "
        "by --admin-key for --instance. The admin key IS the owner's key: the broker's admin "
        "key and the instance's registered owner are the same ed25519 key, and the TD takes "
        "the key only when the envelope verifies with its registered owner's public key and "
        "names this instance. The key is never "
        "printed: a new one exists only at the broker (and in the TD it is released to). "
        "An upload replaces the instance's key at the broker: once the TD made its store with "
        "a key, uploading another makes that store unreadable.",
    )
    kbs_flags(put_key)
    put_key.add_argument(
        "--instance",
        metavar="HEX",
        type=_pubkey,
        required=True,
        help="the instance's ed25519 public key (64 hex digits), which the envelope names",
    )
    put_key.add_argument(
        "--key-file",
        metavar="FILE",
        type=Path,
        default=None,
        help="the store key to upload (32 raw bytes or 64 hex digits, mode 0600)",
    )
    put_key.set_defaults(run=_blocking(_kbs_put_key), needs=("kbs", "admin_key"))

    set_policy = kbs_commands.add_parser(
        "set-policy",
        parents=[output],
        help="upload the resource policy (Rego)",
        description="Replace the broker's resource policy with the Rego text of POLICY; "
        "the broker refuses one that does not compile, with its error.",
    )
    kbs_flags(set_policy)
    set_policy.add_argument("policy", metavar="POLICY.rego", type=Path)
    set_policy.set_defaults(run=_blocking(_kbs_set_policy), needs=("kbs", "admin_key"))

    get = commands.add_parser(
        "get",
        parents=[output, trust],
        help="GET a URL of an attested TD's TLS front, verifying its certificate first",
        description="Fetch the server's certificate without sending anything, verify it (the "
        "evidence extension binds the TLS key and names the instance, whose key signed it; full "
        "DCAP of its quote with your trust root; the instance's registry record verifies as "
        "`tdxctl verify` does, on the same platform, MRTD and RTMR0-2; "
        "--expect-owner/--expect-operator), then send "
        "the GET over a connection that trusts exactly that certificate and print the body "
        "(--json: status, headers, body). Exit 1 naming the failed check, or when the answer "
        "is 4xx/5xx.",
    )
    get.add_argument("url", metavar="URL", type=_https_target, help="https://HOST:PORT/PATH")
    url_flag(get, "registry", defaults.registry_url, "TDXCTL_REGISTRY_URL")
    get.add_argument("--expect-operator", metavar="HEX", type=_pubkey, default=None)
    get.add_argument("--expect-owner", metavar="HEX", type=_pubkey, default=None)
    get.add_argument(
        "--accept-v1", action="store_true", help="also accept a v1 registry record (see verify)"
    )
    registry_refusal_flag(get)
    get.set_defaults(run=_blocking(_get), needs=("registry",))

    registry = commands.add_parser(
        "registry", help="registry commands", description="Registry commands."
    )
    registry_commands = registry.add_subparsers(
        dest="subcommand", metavar="SUBCOMMAND", required=True
    )
    audit = registry_commands.add_parser(
        "audit",
        parents=[output],
        help="audit the registry's log for an instance's record",
        description="Check that the registry's append-only Merkle log vouches for the "
        "instance's record: the checkpoint opens with the log key (--log-key, else the one "
        "remembered in --state, else the served one, trusted on first use) and names its "
        "origin; the record's leaf is canonical, hashes into the tree, names the instance and "
        "carries exactly the record's audited state; no later leaf names the instance; the "
        "inclusion proof leads to the signed root; the remembered checkpoint is a prefix of "
        "this one. On success the state file is replaced (0600, atomically) and a JSON summary "
        "printed; on failure it is left untouched and the failure named (exit 1).",
    )
    url_flag(audit, "registry", defaults.registry_url, "TDXCTL_REGISTRY_URL")
    audit.add_argument("--instance", metavar="HEX", type=_pubkey, required=True)
    audit.add_argument(
        "--state",
        metavar="FILE",
        type=Path,
        required=True,
        help="the audit state: the log key and checkpoint remembered from the last audit "
        "(created on the first)",
    )
    audit.add_argument(
        "--log-key",
        metavar="VKEY",
        type=_log_key,
        default=None,
        help="pin the log's note verifier key (name+hexid+base64, or @FILE holding it)",
    )
    audit.set_defaults(run=_blocking(_registry_audit), needs=("registry",))
    return parser


_ENV_OF: Final = {
    "identity": "TDXCTL_IDENTITY_URL",
    "registry": "TDXCTL_REGISTRY_URL",
    "key": "TDXCTL_KEY",
    "kbs": "TDXCTL_KBS_URL",
    "admin_key": "TDXCTL_KEY",
}


def _require(args: argparse.Namespace) -> None:
    for name in getattr(args, "needs", ()):
        if getattr(args, name) is None:
            flag = name.replace("_", "-")
            raise UsageError(f"tdxctl: --{flag} is required (or set {_ENV_OF[name]})")


def _trust(args: argparse.Namespace) -> TrustSettings:
    policy = Policy(allow_debug=args.allow_debug, mrtd_allowlist=args.mrtd_allowlist)
    if args.accept_tcb_status is not None:
        policy = Policy(
            accepted_tcb_statuses=args.accept_tcb_status,
            allow_debug=args.allow_debug,
            mrtd_allowlist=args.mrtd_allowlist,
        )
    return TrustSettings(root_ca_pem=args.trusted_root_ca, pccs_url=args.pccs_url, policy=policy)


def _blocking(
    command: Callable[[argparse.Namespace], Coroutine[Any, Any, Outcome]],
) -> Callable[[argparse.Namespace], Outcome]:
    """`command` run to completion in its own event loop."""
    return lambda args: asyncio.run(command(args))


# ---- the commands ----------------------------------------------------------------------


def facts_text(facts: VerifiedFacts) -> list[str]:
    """The facts as aligned readable lines."""
    advisories = ", ".join(facts.advisory_ids) or "none"
    lines = [
        f"instance       {facts.instance_pubkey.hex()}",
        f"ppid           {facts.ppid.hex()}",
        f"tcb_status     {facts.tcb_status} (advisories: {advisories})",
        f"mr_td          {facts.mr_td.hex()}",
        f"rtmr0          {facts.rtmr0.hex()}",
        f"rtmr1          {facts.rtmr1.hex()}",
        f"rtmr2          {facts.rtmr2.hex()}",
        f"rtmr3          {facts.rtmr3.hex()}",
        f"operator       {facts.operator.hex() if facts.operator else 'none'}",
        f"owner          {facts.owner.hex() if facts.owner else 'none'}",
    ]
    for h in facts.helpers:
        build_id = h.build_id.hex() if h.build_id is not None else "none"
        lines.append(
            f"helper         {h.role} {h.path} sha384={h.sha384.hex()} build_id={build_id}"
        )
    for w in facts.workload_events:
        dirs = ",".join(w.persist_dirs) or "-"
        lines.append(
            f"workload       {w.transition} image={w.image} image_id={w.image_id} "
            f"persist_dirs={dirs} port={w.port}"
        )
    lines.append(f"ssh_host_key   {facts.ssh_host_key or 'none'}")
    lines.append(f"verified_at    {facts.verified_at.isoformat()}")
    return lines


async def _keygen(args: argparse.Namespace) -> Outcome:
    key = generate_key_file(args.file)
    pubkey = public_key_bytes(key).hex()
    return Outcome({"pubkey": pubkey, "file": str(args.file)}, [pubkey])


async def _operator_register(args: argparse.Namespace) -> Outcome:
    key = load_private_key(args.key)
    async with IdentityClient(args.identity) as identity, QuoteVerifier(_trust(args)) as qv:
        done = await register_operator(identity, key, qv)
    return Outcome(
        {"owner_token": done.owner_token, "attestation": done.attestation.to_object()},
        [
            "the instance's fresh attestation verified:",
            *("  " + line for line in facts_text(done.attestation)),
            "registered as operator; the owner token:",
            done.owner_token,
        ],
    )


async def _owner_register(args: argparse.Namespace) -> Outcome:
    key = load_private_key(args.key)
    async with IdentityClient(args.identity) as identity, QuoteVerifier(_trust(args)) as qv:
        done = await register_owner(
            identity, key, args.token, qv, expect_operator=args.expect_operator
        )
    owner, instance = public_key_bytes(key).hex(), done.after.instance_pubkey.hex()
    return Outcome(
        {
            "status": "success",
            "instance_pubkey": instance,
            "owner": owner,
            "attestation": done.after.to_object(),
        },
        [
            f"registered as owner {owner} of instance {instance}; a fresh attestation after "
            "the registration verified and names this owner:",
            *("  " + line for line in facts_text(done.after)),
        ],
    )


async def _verify(args: argparse.Namespace) -> Outcome:
    async with RegistryClient(args.registry) as registry, QuoteVerifier(_trust(args)) as qv:
        record = await registry.record(args.instance)
        facts = await verify_record(
            record,
            instance_pubkey=args.instance,
            verifier=qv,
            expect_operator=args.expect_operator,
            expect_owner=args.expect_owner,
            accept_v1=args.accept_v1,
        )
        refused = check_registry_verdict(record, accept_refusal=args.accept_registry_refusal)
    text = ["verified", *facts_text(facts)]
    if refused is not None:
        _warn_registry_refusal(refused)
        text.append(f"registry       REFUSED: {refused}")
    data = {"verified": True, "registry_refused": refused, **facts.to_object()}
    return Outcome(data, text)


def _warn_registry_refusal(refused: str) -> None:
    print(
        f"tdxctl: warning: the registry refused this record ({refused}); accepted on this "
        "verification alone (--accept-registry-refusal)",
        file=sys.stderr,
    )


async def _configure(args: argparse.Namespace) -> Outcome:
    key = load_private_key(args.key)
    async with IdentityClient(args.identity) as identity:
        instance = await identity.instance_pubkey()
        seq = await identity.configure(
            key, instance, image=args.image, persist_dirs=tuple(args.persist_dirs), port=args.port
        )
    return Outcome(
        {"status": "success", "seq": seq},
        [f"configured {args.image} (seq {seq}); SSH setup access is open"],
    )


async def _expose(args: argparse.Namespace) -> Outcome:
    key = load_private_key(args.key)
    async with IdentityClient(args.identity) as identity:
        instance = await identity.instance_pubkey()
        seq = await identity.expose(key, instance, image=args.image)
    return Outcome(
        {"status": "success", "seq": seq},
        [f"exposed {args.image} (seq {seq}); SSH setup access is closed for good"],
    )


def _ssh(args: argparse.Namespace) -> Outcome:
    key = load_private_key(args.key)
    host = urlsplit(args.identity).hostname
    if host is None:
        raise UsageError("tdxctl ssh: the identity URL names no host")

    async def pin() -> SshTarget:
        async with (
            IdentityClient(args.identity) as identity,
            RegistryClient(args.registry) as registry,
            QuoteVerifier(_trust(args)) as qv,
        ):
            return await attested_ssh_target(identity, registry, key, qv)

    target = asyncio.run(pin())
    print(f"tdxctl: pinned the attested host key {target.host_key}", file=sys.stderr)
    status = run_pinned_ssh(
        host=host,
        port=args.ssh_port,
        host_key=target.host_key,
        key=key,
        command=tuple(args.command_line),
        user=args.user,
    )
    return Outcome(
        {"exit_status": status, "ssh_host_key": target.host_key, "host": host},
        [],
        status=status,
    )


async def _kbs_put_key(args: argparse.Namespace) -> Outcome:
    admin = KbsAdmin(args.kbs, load_private_key(args.admin_key))
    generated = args.key_file is None
    key = new_store_key() if generated else load_store_key(args.key_file)
    path = await admin.put_store_key(args.instance, key)
    source = "a new random key, which exists only at the broker" if generated else "the key file"
    return Outcome(
        {"status": "success", "resource": str(path), "generated": generated, "kbs": args.kbs},
        [
            f"stored the store key of instance {args.instance.hex()} at {args.kbs} as {path} "
            f"({source})"
        ],
    )


async def _kbs_set_policy(args: argparse.Namespace) -> Outcome:
    admin = KbsAdmin(args.kbs, load_private_key(args.admin_key))
    rego = load_policy(args.policy)
    await admin.set_policy(rego)
    return Outcome(
        {"status": "success", "policy": str(args.policy), "kbs": args.kbs},
        [f"the resource policy of {args.kbs} is now {args.policy}"],
    )


async def _get(args: argparse.Namespace) -> Outcome:
    async with RegistryClient(args.registry) as registry, QuoteVerifier(_trust(args)) as qv:
        appraiser = RegistryAppraiser(
            registry,
            qv,
            expect_operator=args.expect_operator,
            expect_owner=args.expect_owner,
            accept_v1=args.accept_v1,
            accept_registry_refusal=args.accept_registry_refusal,
        )
        result = await attested_get(args.url, appraiser)
    if result.peer.appraisal.registry_refused is not None:
        _warn_registry_refusal(result.peer.appraisal.registry_refused)
    status = EXIT_OK if result.status < 400 else EXIT_FAILED
    if status != EXIT_OK and not args.json:
        print(f"tdxctl: {args.url.url} answered {result.status}", file=sys.stderr)
    body: dict[str, str]
    try:
        body = {"body": result.body.decode("utf-8")}
    except UnicodeDecodeError:
        body = {"body_base64": base64.b64encode(result.body).decode()}
    peer = result.peer
    data = {
        "status": result.status,
        "headers": [list(pair) for pair in result.headers],
        **body,
        "certificate_sha256": peer.certificate.fingerprint.hex(),
        "instance_pubkey": peer.appraisal.record.instance_pubkey.hex(),
        **peer.appraisal.to_object(),
    }
    return Outcome(data, status=status, raw=result.body)


async def _registry_audit(args: argparse.Namespace) -> Outcome:
    previous = load_audit_state(args.state)
    shown = [0]

    def progress(done: int, total: int) -> None:
        if total >= 10_000 and (done - shown[0] >= 10_000 or done == total):
            shown[0] = done
            print(f"tdxctl: scanned {done} of {total} later log leaves", file=sys.stderr)

    async with LogClient(args.registry) as log:
        result = await audit_instance(
            log, args.instance, previous=previous, pinned_key=args.log_key, progress=progress
        )
    write_audit_state(args.state, result.state)
    if result.trust_on_first_use:
        print(
            f"tdxctl: warning: trusted the registry's log key {result.state.verifier_key} on "
            f"first use (remembered in {args.state}); pin it with --log-key to check it",
            file=sys.stderr,
        )
    data = result.to_object()
    return Outcome(data, [json.dumps(data, sort_keys=True)])


# ---- main -------------------------------------------------------------------------------


def _emit_json(out: TextIO, value: dict[str, Any]) -> None:
    out.write(json.dumps(value, sort_keys=True) + "\n")


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    """Run one command; return its exit status (0, 1 or 2; ssh's own status for `ssh`)."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    defaults = Defaults.from_environ(os.environ if environ is None else environ)
    options = args_list[: args_list.index("--")] if "--" in args_list else args_list
    want_json = "--json" in options
    try:
        args = build_parser(defaults).parse_args(args_list)
        _require(args)
    except SystemExit as done:  # --help
        return done.code if isinstance(done.code, int) else EXIT_OK
    except UsageError as exc:
        print(f"{exc}\n(see tdxctl --help)", file=sys.stderr)
        if want_json:
            _emit_json(sys.stdout, {"error": str(exc), "usage_error": True})
        return EXIT_USAGE
    run: Callable[[argparse.Namespace], Outcome] = args.run
    try:
        outcome = run(args)
    except UsageError as exc:
        print(str(exc), file=sys.stderr)
        if want_json:
            _emit_json(sys.stdout, {"error": str(exc), "usage_error": True})
        return EXIT_USAGE
    except TdxctlError as exc:
        failure: dict[str, Any] = {"error": exc.reason}
        if isinstance(exc, BrokerRefused):
            failure.update(status=exc.status, variant=exc.variant, detail=exc.detail)
        if isinstance(exc, RegistryRefusedRecord):
            failure["registry_refused"] = exc.refused
        if isinstance(exc, VerificationFailed):
            failure["check"] = exc.check
            print(f"tdxctl: verification failed ({exc.check}): {exc.reason}", file=sys.stderr)
        else:
            print(f"tdxctl: {exc.reason}", file=sys.stderr)
        if want_json:
            _emit_json(sys.stdout, failure)
        return EXIT_FAILED
    except KeyboardInterrupt:
        return 130
    if want_json:
        _emit_json(sys.stdout, outcome.data)
    elif outcome.raw is not None:
        sys.stdout.flush()
        sys.stdout.buffer.write(outcome.raw)
        sys.stdout.buffer.flush()
    else:
        for line in outcome.text:
            print(line)
    return outcome.status
