"""The key broker's settings: parsed once from flags and environment into one frozen value.

A flag wins over its environment variable, which wins over the default.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from tdx_service_kit import (
    DatabaseTarget,
    HttpLimits,
    RateLimit,
    add_connection_limit_flags,
    parse_bool,
    with_connection_limits,
)
from tdx_verify import (
    AllowlistError,
    parse_mrtd_allowlist,
    parse_rtmr_allowlist,
    require_td_image_pins,
)

from .reference import TdImageReference
from .sessions import DEFAULT_MAX_SESSIONS, SessionSettings

INTEL_PCS_URL = "https://api.trustedservices.intel.com"
DEFAULT_PORT = 3020
DEFAULT_TTL = 300
MIN_TTL = 10
MAX_TTL = 86_400
MAX_POLICY_FILE_BYTES = 256 * 1024
DEFAULT_MAX_BODY_BYTES = 1024 * 1024
"""An attest carries a quote and the whole RTMR3 event log; Trustee's own default is 2 MiB."""


class SettingsError(ValueError):
    """A flag or environment variable has a value the broker cannot run with."""


@dataclass(frozen=True)
class Settings:
    """Everything the broker needs to start, validated."""

    database: DatabaseTarget
    storage_key_path: Path
    admin_pubkey: Ed25519PublicKey
    reference: TdImageReference | None
    """The accepted TD image (`input.reference`); None, or partly unpinned, only with
    `any_measurement`."""
    any_measurement: bool = False
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    pccs_url: str = INTEL_PCS_URL
    trusted_root_ca_pem: bytes | None = None
    sessions: SessionSettings = field(default_factory=SessionSettings)
    token_ttl: int = DEFAULT_TTL
    initial_policy: str | None = None
    """The Rego text of --policy: the resource policy while none was uploaded (else the
    shipped default policy)."""
    limits: HttpLimits = field(
        default_factory=lambda: HttpLimits(max_body_bytes=DEFAULT_MAX_BODY_BYTES)
    )
    rate_limit: RateLimit | None = field(default_factory=RateLimit)
    log_level: str = "INFO"

    def __post_init__(self) -> None:
        if self.any_measurement:
            return
        missing = ["--mrtd-allowlist"] if self.reference is None else self.reference.missing
        if missing:
            raise ValueError(f"the TD image is not pinned ({', '.join(missing)})")

    @property
    def admin_pubkey_raw(self) -> bytes:
        """The admin key's 32 raw bytes (its name in the audit table and as uploader)."""
        return self.admin_pubkey.public_bytes_raw()


def build_parser() -> argparse.ArgumentParser:
    """The `tdx-kbs` flags (also used for --help)."""
    parser = argparse.ArgumentParser(
        prog="tdx-kbs",
        description="The owner's key broker: releases a secret only to a TDX TD whose fresh "
        "evidence verifies and satisfies the resource policy (Trustee's KBS protocol 0.4.0).",
    )
    add = parser.add_argument
    add("--host", help="listen address [KBS_HOST] (default 127.0.0.1)")
    add("--port", type=int, help=f"listen port [KBS_PORT] (default {DEFAULT_PORT})")
    add("--db-path", help="SQLite database file [KBS_DB_PATH] (default kbs.db)")
    add("--db-url", help="PostgreSQL URL postgresql://... instead of SQLite [KBS_DB_URL]")
    add(
        "--storage-key-path",
        help="file of the 32-byte key sealing resources at rest (AES-256-GCM); created 0600 "
        "on first start; keep it outside the database [KBS_STORAGE_KEY_PATH] (required)",
    )
    add(
        "--admin-pubkey",
        help="PEM file of the admin's ed25519 public key, which verifies admin bearer tokens "
        "[KBS_ADMIN_PUBKEY] (required)",
    )
    add(
        "--trusted-root-ca",
        help="PEM file of the trusted root CA [TDX_TRUSTED_ROOT_CA] "
        "(default: Intel SGX Root CA, built in)",
    )
    add("--pccs-url", help=f"PCCS base URL (v4 API) [PCCS_URL] (default {INTEL_PCS_URL})")
    add(
        "--session-ttl",
        type=int,
        help=f"seconds a session (cookie kbs-session-id) lives, {MIN_TTL} to {MAX_TTL} "
        f"[KBS_SESSION_TTL] (default {DEFAULT_TTL})",
    )
    add(
        "--token-ttl",
        type=int,
        help=f"seconds an attestation token lives, {MIN_TTL} to {MAX_TTL} [KBS_TOKEN_TTL] "
        f"(default {DEFAULT_TTL})",
    )
    add(
        "--max-sessions",
        type=int,
        help="unexpired sessions at most; beyond, POST /kbs/v0/auth answers 503 with "
        f"Retry-After [KBS_MAX_SESSIONS] (default {DEFAULT_MAX_SESSIONS})",
    )
    add(
        "--policy",
        help="Rego file: the resource policy while none was uploaded (default: the shipped "
        "policy, store keys to their own instance only) [KBS_POLICY]",
    )
    add(
        "--mrtd-allowlist",
        action="append",
        metavar="HEX[,HEX...]",
        help="release only to TDs with these MRTD values (48-byte hex, repeatable) "
        "[KBS_MRTD_ALLOWLIST, comma-separated]; required unless --any-measurement",
    )
    add(
        "--rtmr-allowlist",
        action="append",
        metavar="INDEX=HEX[,INDEX=HEX...]",
        help="release only to TDs with these values of RTMR INDEX (0, 1 or 2; 48-byte hex; "
        "repeatable, several values of one index are alternatives) [KBS_RTMR_ALLOWLIST, "
        "comma-separated]; each of RTMR0-2 is required unless --any-measurement",
    )
    add(
        "--any-measurement",
        action="store_true",
        default=None,
        help="DEVELOPMENT: start without pinning the MRTD or RTMR0-2 (the shipped policy then "
        "releases to any TD image; logged as a warning at start) [KBS_ANY_MEASUREMENT]",
    )
    add(
        "--max-body-bytes",
        type=int,
        default=DEFAULT_MAX_BODY_BYTES,
        help="largest request body (default %(default)s)",
    )
    add(
        "--request-timeout",
        type=float,
        default=HttpLimits().request_timeout,
        help="seconds to receive a request (default %(default)s)",
    )
    add(
        "--rate-limit-per-second",
        type=float,
        default=RateLimit().per_second,
        help="requests per second per client IP (default %(default)s)",
    )
    add(
        "--rate-limit-burst",
        type=int,
        default=RateLimit().burst,
        help="burst per client IP (default %(default)s)",
    )
    add("--no-rate-limit", action="store_true", help="disable per-client rate limiting")
    add("--log-level", help="DEBUG, INFO, WARNING or ERROR [LOG_LEVEL] (default INFO)")
    add_connection_limit_flags(parser)
    return parser


def _int(flag: int | None, env: Mapping[str, str], name: str, default: int) -> int:
    if flag is not None:
        return flag
    text = env.get(name)
    if text is None or not text.strip():
        return default
    try:
        return int(text)
    except ValueError:
        raise SettingsError(f"{name}: {text!r} is not a whole number") from None


def _ttl(flag: str, value: int) -> int:
    if not MIN_TTL <= value <= MAX_TTL:
        raise SettingsError(f"{flag} must be {MIN_TTL}..{MAX_TTL} seconds, not {value}")
    return value


def _root_ca(path: str | None) -> bytes | None:
    if not path:
        return None
    try:
        pem = Path(path).read_bytes()
    except OSError as exc:
        raise SettingsError(f"cannot read the trusted root CA {path}: {exc.strerror}") from None
    try:
        x509.load_pem_x509_certificate(pem)
    except (ValueError, x509.InvalidVersion):
        raise SettingsError(f"the trusted root CA {path} is not a PEM certificate") from None
    return pem


def _admin_pubkey(path: str | None) -> Ed25519PublicKey:
    if not path:
        raise SettingsError("--admin-pubkey (KBS_ADMIN_PUBKEY) is required")
    try:
        pem = Path(path).read_bytes()
    except OSError as exc:
        raise SettingsError(f"cannot read the admin public key {path}: {exc.strerror}") from None
    try:
        key = load_pem_public_key(pem)
    except ValueError:
        raise SettingsError(f"the admin public key {path} is not a PEM public key") from None
    if not isinstance(key, Ed25519PublicKey):
        raise SettingsError(f"the admin public key {path} is not an ed25519 key")
    return key


def _policy(path: str | None) -> str | None:
    if not path:
        return None
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise SettingsError(f"cannot read the policy {path}: {exc.strerror}") from None
    if len(data) > MAX_POLICY_FILE_BYTES:
        raise SettingsError(f"the policy {path} is larger than {MAX_POLICY_FILE_BYTES} bytes")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise SettingsError(f"the policy {path} is not UTF-8 text") from None


def _reference(
    args: argparse.Namespace, env: Mapping[str, str], any_measurement: bool
) -> TdImageReference | None:
    """The allow-lists of flags and environment together (as the registry's), parsed and
    checked by `tdx_verify`: the MRTD and each of RTMR0-2 pinned, unless --any-measurement."""
    try:
        reference = TdImageReference(
            mr_td=parse_mrtd_allowlist(
                [*(args.mrtd_allowlist or ()), env.get("KBS_MRTD_ALLOWLIST", "")]
            ),
            rtmrs=parse_rtmr_allowlist(
                [*(args.rtmr_allowlist or ()), env.get("KBS_RTMR_ALLOWLIST", "")]
            ),
        )
        if not any_measurement:
            require_td_image_pins(reference.mr_td, reference.rtmrs)
    except AllowlistError as exc:
        raise SettingsError(exc.reason) from None
    return None if any_measurement and reference.pins_nothing else reference


def _database(args: argparse.Namespace, env: Mapping[str, str]) -> DatabaseTarget:
    url = args.db_url or env.get("KBS_DB_URL")
    try:
        if url:
            return DatabaseTarget(postgres_url=url)
        path = args.db_path or env.get("KBS_DB_PATH") or "kbs.db"
        return DatabaseTarget(sqlite_path=Path(path).expanduser().resolve())
    except ValueError as exc:
        raise SettingsError(str(exc)) from None


def _storage_key_path(value: str | None, database: DatabaseTarget) -> Path:
    if not value:
        raise SettingsError("--storage-key-path (KBS_STORAGE_KEY_PATH) is required")
    path = Path(value).expanduser().resolve()
    if database.sqlite_path is not None and path in (
        database.sqlite_path,
        *(database.sqlite_path.with_name(database.sqlite_path.name + s) for s in ("-wal", "-shm")),
    ):
        raise SettingsError("--storage-key-path must not be the database file")
    return path


def parse_settings(argv: Sequence[str], env: Mapping[str, str]) -> Settings:
    """Parse `argv` (no program name) and `env` into `Settings`; `SettingsError` when invalid.

    argparse itself exits with status 2 on unknown flags and 0 on --help.
    """
    args = build_parser().parse_args(list(argv))
    port = _int(args.port, env, "KBS_PORT", DEFAULT_PORT)
    if not 0 < port < 65536:
        raise SettingsError(f"--port must be 1..65535, not {port}")
    log_level = (args.log_level or env.get("LOG_LEVEL") or "INFO").upper()
    if log_level not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        raise SettingsError(f"unknown log level {log_level}")
    session_ttl = _ttl("--session-ttl", _int(args.session_ttl, env, "KBS_SESSION_TTL", DEFAULT_TTL))
    token_ttl = _ttl("--token-ttl", _int(args.token_ttl, env, "KBS_TOKEN_TTL", DEFAULT_TTL))
    max_sessions = _int(args.max_sessions, env, "KBS_MAX_SESSIONS", DEFAULT_MAX_SESSIONS)
    try:
        sessions = SessionSettings(ttl=session_ttl, max_sessions=max_sessions)
        limits = with_connection_limits(
            HttpLimits(max_body_bytes=args.max_body_bytes, request_timeout=args.request_timeout),
            args,
        )
        rate_limit = (
            None
            if args.no_rate_limit
            else RateLimit(per_second=args.rate_limit_per_second, burst=args.rate_limit_burst)
        )
    except ValueError as exc:
        raise SettingsError(str(exc)) from None
    try:
        any_measurement = bool(args.any_measurement) or parse_bool(
            "KBS_ANY_MEASUREMENT", env.get("KBS_ANY_MEASUREMENT")
        )
    except ValueError as exc:
        raise SettingsError(str(exc)) from None
    reference = _reference(args, env, any_measurement)
    database = _database(args, env)
    return Settings(
        database=database,
        storage_key_path=_storage_key_path(
            args.storage_key_path or env.get("KBS_STORAGE_KEY_PATH"), database
        ),
        admin_pubkey=_admin_pubkey(args.admin_pubkey or env.get("KBS_ADMIN_PUBKEY")),
        reference=reference,
        any_measurement=any_measurement,
        host=args.host or env.get("KBS_HOST") or "127.0.0.1",
        port=port,
        pccs_url=(args.pccs_url or env.get("PCCS_URL") or INTEL_PCS_URL).rstrip("/"),
        trusted_root_ca_pem=_root_ca(args.trusted_root_ca or env.get("TDX_TRUSTED_ROOT_CA")),
        sessions=sessions,
        token_ttl=token_ttl,
        initial_policy=_policy(args.policy or env.get("KBS_POLICY")),
        limits=limits,
        rate_limit=rate_limit,
        log_level=log_level,
    )
