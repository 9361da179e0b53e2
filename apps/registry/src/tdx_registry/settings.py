"""The registry's settings: parsed once from flags and environment into one frozen value.

A flag wins over its environment variable, which wins over the default.
"""

from __future__ import annotations

import argparse
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509

from tdx_measure import ExecutablePin, MeasurementError, MeasurementPolicy
from tdx_service_kit import (
    MAX_WORKERS,
    DatabaseTarget,
    HttpLimits,
    RateLimit,
    add_connection_limit_flags,
    parse_bool,
    with_connection_limits,
)
from tdx_verify import (
    DEFAULT_ACCEPTED_TCB_STATUSES,
    KNOWN_TCB_STATUSES,
    MAX_TCB_GRACE_DAYS,
    AllowlistError,
    Policy,
    parse_denied_advisories,
    parse_mrtd_allowlist,
    parse_rtmr_allowlist,
    parse_tcb_grace_days,
    require_td_image_pins,
)

from .ccel_check import CcelPolicy, CcelPolicyError
from .challenges import (
    DEFAULT_MAX_OUTSTANDING,
    MAX_TTL_SECONDS,
    MIN_TTL_SECONDS,
    ChallengeSettings,
)
from .challenges import DEFAULT_TTL_SECONDS as DEFAULT_CHALLENGE_TTL
from .read_cache import DEFAULT_MAX_BYTES, DEFAULT_TTL_SECONDS

INTEL_PCS_URL = "https://api.trustedservices.intel.com"
SHA384_LEN = 48
MAX_IMAGE_REF_LEN = 1024
DEFAULT_LOG_ORIGIN = "tdx-registry/log"
"""The log's checkpoint origin and note key name unless `--log-origin` says otherwise; a
deployment should name its own (`registry.example.com/log`) so its checkpoints name it."""
LOG_KEY_FILE_NAME = "registry-log.key"
_LOG_ORIGIN = re.compile(r"[!-*,-~]{1,255}")
"""Printable ASCII without spaces or '+' (a C2SP note key name and checkpoint origin)."""


def default_log_key_path(database: DatabaseTarget) -> Path:
    """`registry-log.key` next to the SQLite file; with PostgreSQL, in the working directory
    (where `registry.db` would be)."""
    if database.sqlite_path is not None:
        return database.sqlite_path.parent / LOG_KEY_FILE_NAME
    return Path(LOG_KEY_FILE_NAME).resolve()


REGISTRY_MAX_BODY_BYTES = 2 * 1024 * 1024
"""The registry's default body limit: room for a registration's base64 `ccel` at its bound
(`ccel_check.MAX_CCEL_BYTES`, 1 MiB decoded) beside the quote and the event log."""


def _registry_limits() -> HttpLimits:
    return HttpLimits(max_body_bytes=REGISTRY_MAX_BODY_BYTES)


class SettingsError(ValueError):
    """A flag or environment variable has a value the registry cannot run with."""


@dataclass(frozen=True)
class Settings:
    """Everything the registry needs to start, validated."""

    database: DatabaseTarget
    host: str = "127.0.0.1"
    port: int = 3000
    pccs_url: str = INTEL_PCS_URL
    trusted_root_ca_pem: bytes | None = None
    skip_tdx_auth: bool = False
    policy: Policy = field(default_factory=Policy)
    measurement_policy: MeasurementPolicy = field(default_factory=MeasurementPolicy)
    allow_missing_event_log: bool = False
    ccel_policy: CcelPolicy = field(default_factory=CcelPolicy)
    """`--pin-kernel` / `--pin-cmdline`: measured-boot pins on the registration's CCEL."""
    any_measurement: bool = False
    limits: HttpLimits = field(default_factory=_registry_limits)
    rate_limit: RateLimit | None = field(default_factory=RateLimit)
    log_level: str = "INFO"
    read_cache_ttl: float = DEFAULT_TTL_SECONDS
    read_cache_max_bytes: int = DEFAULT_MAX_BYTES
    challenges: ChallengeSettings = field(default_factory=ChallengeSettings)
    accept_v1_registrations: bool = False
    reappraise_every: float | None = None
    """`--reappraise-every SECONDS`: run a re-appraisal pass in the background that often."""
    log_key_path: Path | None = None
    """The log's note signer key file; None: `default_log_key_path(database)`."""
    log_origin: str = DEFAULT_LOG_ORIGIN
    workers: int = 1
    """`--workers N`: serving processes on the one listening socket (1: this process)."""

    @property
    def effective_log_key_path(self) -> Path:
        """`log_key_path`, or its default for `database`."""
        if self.log_key_path is not None:
            return self.log_key_path
        return default_log_key_path(self.database)


def build_parser() -> argparse.ArgumentParser:
    """The `tdx-registry [serve]` flags (also used for --help)."""
    parser = argparse.ArgumentParser(
        prog="tdx-registry",
        usage="tdx-registry [serve] [options]\n       tdx-registry reappraise [options]\n"
        "       tdx-registry verify-quote --help",
        description="Registry of attested TDX instances (HTTP API of API.md).",
        epilog="`tdx-registry reappraise [options]` verifies every stored quote again with "
        "the database, PCCS and policy options, records the verdicts that changed, prints a "
        "JSON summary and exits (1 if the PCCS or the database failed). "
        "`tdx-registry verify-quote ...` runs the verify-quote command of tdx-verify.",
    )
    add = parser.add_argument
    add("--host", default="127.0.0.1", help="listen address (default 127.0.0.1)")
    add("--port", type=int, default=3000, help="listen port (default 3000)")
    add(
        "--workers",
        help=f"serving processes sharing the listening socket, 1 to {MAX_WORKERS} "
        "[REGISTRY_WORKERS] (default 1: this process serves). Each worker has its own "
        "connection and rate limits and its own read cache; /metrics sums every worker's",
    )
    add("--db-path", help="SQLite database file [REGISTRY_DB_PATH] (default registry.db)")
    add("--db-url", help="PostgreSQL URL postgresql://... instead of SQLite [REGISTRY_DB_URL]")
    add("--pccs-url", help=f"PCCS base URL (v4 API) [PCCS_URL] (default {INTEL_PCS_URL})")
    add(
        "--trusted-root-ca",
        help="PEM file of the trusted root CA [TDX_TRUSTED_ROOT_CA] "
        "(default: Intel SGX Root CA, built in)",
    )
    add(
        "--skip-tdx-auth",
        action="store_true",
        default=None,
        help="DEVELOPMENT ONLY: do not verify quotes, only parse them [SKIP_TDX_AUTH]",
    )
    add(
        "--accept-tcb-status",
        action="append",
        metavar="S[,S...]|any",
        help="TCB statuses to accept (repeatable; default: "
        + ",".join(sorted(DEFAULT_ACCEPTED_TCB_STATUSES))
        + ")",
    )
    add(
        "--tcb-grace-days",
        metavar="N",
        help="judge OutOfDate and OutOfDateConfigurationNeeded as the status without their "
        "out-of-date parts (accepted only if the accepted statuses hold it) while the TCB level "
        f"that put the platform out of date is less than N days old (1..{MAX_TCB_GRACE_DAYS}) "
        "[REGISTRY_TCB_GRACE_DAYS] (default: no grace)",
    )
    add(
        "--deny-advisory",
        action="append",
        metavar="ID[,ID...]",
        help="refuse a quote whose TCB is affected by this advisory (INTEL-SA-NNNNN; "
        "repeatable) [REGISTRY_DENY_ADVISORIES, comma-separated]",
    )
    add("--allow-debug", action="store_true", help="accept debug TDs")
    add(
        "--mrtd-allowlist",
        action="append",
        metavar="HEX[,HEX...]",
        help="accept only these MRTD values (48-byte hex, repeatable) "
        "[REGISTRY_MRTD_ALLOWLIST, comma-separated]; required unless --any-measurement",
    )
    add(
        "--rtmr-allowlist",
        action="append",
        metavar="INDEX=HEX[,INDEX=HEX...]",
        help="accept only these values of RTMR INDEX (0, 1 or 2; 48-byte hex; repeatable, "
        "several values of one index are alternatives) [REGISTRY_RTMR_ALLOWLIST, "
        "comma-separated]; each of RTMR0-2 is required unless --any-measurement",
    )
    add(
        "--any-measurement",
        action="store_true",
        default=None,
        help="accept TDs whose MRTD or RTMR0-2 no allow-list names (development; logged at "
        "start and with every registration) [REGISTRY_ANY_MEASUREMENT]",
    )
    add(
        "--allow-missing-event-log",
        action="store_true",
        default=None,
        help="accept registrations without an RTMR3 event log, as a v1 identity service sends "
        "them (logged as a warning at start) [REGISTRY_ALLOW_MISSING_EVENT_LOG]; never while a "
        "helper is pinned or an image allowed",
    )
    add(
        "--require-event-log",
        action="store_true",
        default=None,
        help="the default since event logs became required; kept so that older command lines "
        "still start [REGISTRY_REQUIRE_EVENT_LOG]; refused together with "
        "--allow-missing-event-log",
    )
    add(
        "--pin-helper",
        action="append",
        metavar="ROLE=HEX",
        help="accept only pinned helper programs: ROLE's GNU build ID, or its file SHA-384 when "
        "HEX is 48 bytes (repeatable; several pins of one role are alternatives; only pinned "
        "roles are accepted and each must be measured) [REGISTRY_PIN_HELPERS, comma-separated]",
    )
    add(
        "--allow-image",
        action="append",
        metavar="REF",
        help="accept only workloads with these image references (repeatable) "
        "[REGISTRY_ALLOWED_IMAGES, comma-separated]",
    )
    add(
        "--pin-kernel",
        action="append",
        metavar="SHA384HEX",
        help="accept only registrations whose CCEL measures one of these kernels (SHA-384 of "
        "the kernel image as the log measures it; repeatable, alternatives; requires a ccel) "
        "[REGISTRY_PIN_KERNEL, comma-separated]",
    )
    add(
        "--pin-cmdline",
        action="append",
        metavar="SHA384HEX",
        help="accept only registrations whose CCEL measures one of these kernel command lines "
        "(SHA-384 as the log measures it; repeatable, alternatives; requires a ccel) "
        "[REGISTRY_PIN_CMDLINE, comma-separated]",
    )
    add(
        "--max-body-bytes",
        type=int,
        default=REGISTRY_MAX_BODY_BYTES,
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
    add(
        "--read-cache-ttl",
        type=float,
        metavar="SECONDS",
        help="serve GET /instance answers from this process's cache for at most SECONDS (so a "
        "write by another replica may be unseen that long; 0 disables) [REGISTRY_READ_CACHE_TTL] "
        f"(default {DEFAULT_TTL_SECONDS:g})",
    )
    add(
        "--read-cache-max-bytes",
        type=int,
        default=DEFAULT_MAX_BYTES,
        help="largest total size of cached GET /instance answers (default %(default)s)",
    )
    add(
        "--challenge-ttl",
        type=int,
        metavar="SECONDS",
        help=f"how long a GET /challenge nonce stays valid, {MIN_TTL_SECONDS} to "
        f"{MAX_TTL_SECONDS} [REGISTRY_CHALLENGE_TTL] (default {DEFAULT_CHALLENGE_TTL})",
    )
    add(
        "--max-outstanding-challenges",
        type=int,
        default=DEFAULT_MAX_OUTSTANDING,
        help="unexpired challenges at most; beyond, GET /challenge answers 503 with Retry-After "
        "(default %(default)s)",
    )
    add(
        "--accept-v1-registrations",
        action="store_true",
        default=None,
        help="COMPATIBILITY: also accept v1 registrations (no challenge, replayable) and v1 "
        "identity signatures in v2 ones; logged as a warning at start and with each use "
        "[REGISTRY_ACCEPT_V1_REGISTRATIONS]",
    )
    add(
        "--reappraise-every",
        type=float,
        metavar="SECONDS",
        help="re-appraise every stored quote in the background, first SECONDS after start, then "
        "SECONDS after each pass ends (jittered by up to 10%%) [REGISTRY_REAPPRAISE_EVERY] "
        "(default: never; `tdx-registry reappraise` runs one pass)",
    )
    add(
        "--log-key-path",
        metavar="FILE",
        help="the Merkle log's signing key (C2SP note signer key, mode 0600; created if "
        "missing; every replica of one database needs the same file) [REGISTRY_LOG_KEY_PATH] "
        f"(default {LOG_KEY_FILE_NAME} next to the SQLite file, or in the working directory "
        "with --db-url)",
    )
    add(
        "--log-origin",
        metavar="ORIGIN",
        help="the log's checkpoint origin and note key name, e.g. registry.example.com/log "
        "(the same on every replica) [REGISTRY_LOG_ORIGIN] "
        f"(default {DEFAULT_LOG_ORIGIN})",
    )
    add("--log-level", help="DEBUG, INFO, WARNING or ERROR [LOG_LEVEL] (default INFO)")
    add_connection_limit_flags(parser)
    return parser


def _env_flag(env: Mapping[str, str], name: str) -> bool:
    try:
        return parse_bool(name, env.get(name))
    except ValueError as exc:
        raise SettingsError(str(exc)) from None


def _split(values: Sequence[str] | None) -> list[str]:
    return [item.strip() for value in values or () for item in value.split(",") if item.strip()]


def _tcb_statuses(values: Sequence[str] | None) -> frozenset[str] | None:
    statuses = _split(values)
    if not statuses:
        return DEFAULT_ACCEPTED_TCB_STATUSES
    if "any" in statuses:
        if len(statuses) > 1:
            raise SettingsError("--accept-tcb-status any cannot be combined with statuses")
        return None
    unknown = sorted(set(statuses) - KNOWN_TCB_STATUSES)
    if unknown:
        raise SettingsError(
            f"unknown TCB status(es) {', '.join(unknown)}; known: "
            + ", ".join(sorted(KNOWN_TCB_STATUSES))
        )
    return frozenset(statuses)


@dataclass(frozen=True)
class _TcbSettings:
    """`--tcb-grace-days` and `--deny-advisory` (or their variables), as given."""

    grace_days: str | None
    denied_advisories: Sequence[str]


def _tcb_settings(args: argparse.Namespace, env: Mapping[str, str]) -> _TcbSettings:
    grace = args.tcb_grace_days
    if grace is None:
        grace = env.get("REGISTRY_TCB_GRACE_DAYS")
    return _TcbSettings(
        grace_days=grace,
        denied_advisories=args.deny_advisory or [env.get("REGISTRY_DENY_ADVISORIES", "")],
    )


def _td_image_policy(
    tcb_statuses: frozenset[str] | None,
    allow_debug: bool,
    mrtd_values: Sequence[str],
    rtmr_values: Sequence[str],
    any_measurement: bool,
    tcb: _TcbSettings,
) -> Policy:
    """The verification policy with the TD image allow-lists and the TCB grace and advisory
    deny-list (`tdx_verify`'s parsing, shared with the key broker); refuse an MRTD or RTMR0-2
    nobody pinned, unless told so out loud."""
    try:
        policy = Policy(
            accepted_tcb_statuses=tcb_statuses,
            allow_debug=allow_debug,
            mrtd_allowlist=parse_mrtd_allowlist(mrtd_values),
            rtmr_allowlist=parse_rtmr_allowlist(rtmr_values),
            tcb_grace_days=parse_tcb_grace_days(tcb.grace_days),
            denied_advisory_ids=parse_denied_advisories(tcb.denied_advisories),
        )
        if not any_measurement:
            require_td_image_pins(policy.mrtd_allowlist, policy.rtmr_allowlist)
    except AllowlistError as exc:
        raise SettingsError(exc.reason) from None
    return policy


def _pins(values: Sequence[str]) -> dict[str, ExecutablePin] | None:
    """`ROLE=HEX` items into one pin per role: 48-byte HEX is a file SHA-384, else a build ID."""
    if not values:
        return None
    build_ids: dict[str, set[bytes]] = {}
    sha384s: dict[str, set[bytes]] = {}
    for item in values:
        role, sep, hex_value = item.partition("=")
        role, hex_value = role.strip(), hex_value.strip()
        if not sep or not role or not hex_value:
            raise SettingsError(f"--pin-helper: {item!r} is not ROLE=HEX")
        try:
            value = bytes.fromhex(hex_value)
        except ValueError:
            raise SettingsError(f"--pin-helper: {hex_value!r} is not hex") from None
        build_ids.setdefault(role, set())
        sha384s.setdefault(role, set())
        (sha384s if len(value) == SHA384_LEN else build_ids)[role].add(value)
    try:
        return {
            role: ExecutablePin(
                build_ids=frozenset(build_ids[role]), sha384s=frozenset(sha384s[role])
            )
            for role in build_ids
        }
    except MeasurementError as exc:
        raise SettingsError(f"--pin-helper: {exc.reason}") from None


def _images(values: Sequence[str]) -> frozenset[str] | None:
    if not values:
        return None
    for image in values:
        if len(image) > MAX_IMAGE_REF_LEN or any(c.isspace() or not c.isprintable() for c in image):
            raise SettingsError(f"--allow-image: {image[:80]!r} is not an image reference")
    return frozenset(values)


def _measurement_policy(args: argparse.Namespace, env: Mapping[str, str]) -> MeasurementPolicy:
    pins = args.pin_helper if args.pin_helper else _split([env.get("REGISTRY_PIN_HELPERS", "")])
    images = (
        args.allow_image if args.allow_image else _split([env.get("REGISTRY_ALLOWED_IMAGES", "")])
    )
    try:
        return MeasurementPolicy(executables=_pins(pins), allowed_images=_images(images))
    except MeasurementError as exc:
        raise SettingsError(f"--pin-helper: {exc.reason}") from None


def _ccel_policy(args: argparse.Namespace, env: Mapping[str, str]) -> CcelPolicy:
    kernels = args.pin_kernel if args.pin_kernel else _split([env.get("REGISTRY_PIN_KERNEL", "")])
    cmdlines = (
        args.pin_cmdline if args.pin_cmdline else _split([env.get("REGISTRY_PIN_CMDLINE", "")])
    )
    try:
        return CcelPolicy.from_hex(kernels, cmdlines)
    except CcelPolicyError as exc:
        raise SettingsError(str(exc)) from None


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


def _read_cache_ttl(flag: float | None, env_value: str | None) -> float:
    if flag is not None:
        ttl = flag
    elif env_value:
        try:
            ttl = float(env_value)
        except ValueError:
            raise SettingsError(f"REGISTRY_READ_CACHE_TTL: {env_value!r} is not a number") from None
    else:
        return DEFAULT_TTL_SECONDS
    if not math.isfinite(ttl) or ttl < 0:
        raise SettingsError(f"--read-cache-ttl must be a finite number >= 0, not {ttl}")
    return ttl


def _challenges(args: argparse.Namespace, env: Mapping[str, str]) -> ChallengeSettings:
    ttl: int = args.challenge_ttl if args.challenge_ttl is not None else DEFAULT_CHALLENGE_TTL
    env_ttl = env.get("REGISTRY_CHALLENGE_TTL")
    if args.challenge_ttl is None and env_ttl is not None:
        try:
            ttl = int(env_ttl)
        except ValueError:
            raise SettingsError(
                f"REGISTRY_CHALLENGE_TTL: {env_ttl!r} is not a whole number of seconds"
            ) from None
    try:
        return ChallengeSettings(ttl=ttl, max_outstanding=args.max_outstanding_challenges)
    except ValueError as exc:
        raise SettingsError(str(exc)) from None


MIN_REAPPRAISE_SECONDS = 1.0
MAX_REAPPRAISE_SECONDS = 366 * 24 * 3600.0
"""A year and a day: a longer period is a typo (and overflowed the passes' collateral max age)."""


def _reappraise_every(flag: float | None, env_value: str | None, skip: bool) -> float | None:
    if flag is not None:
        seconds = flag
    elif env_value:
        try:
            seconds = float(env_value)
        except ValueError:
            raise SettingsError(
                f"REGISTRY_REAPPRAISE_EVERY: {env_value!r} is not a number of seconds"
            ) from None
    else:
        return None
    if not (math.isfinite(seconds) and MIN_REAPPRAISE_SECONDS <= seconds <= MAX_REAPPRAISE_SECONDS):
        raise SettingsError(
            f"--reappraise-every must be a number of seconds from {MIN_REAPPRAISE_SECONDS:g} "
            f"to {MAX_REAPPRAISE_SECONDS:.0f} (366 days), not {seconds}"
        )
    if skip:
        raise SettingsError(
            "--reappraise-every needs quote verification: it cannot run with SKIP_TDX_AUTH"
        )
    return seconds


def _database(args: argparse.Namespace, env: Mapping[str, str]) -> DatabaseTarget:
    url = args.db_url or env.get("REGISTRY_DB_URL")
    try:
        if url:
            return DatabaseTarget(postgres_url=url)
        path = args.db_path or env.get("REGISTRY_DB_PATH") or "registry.db"
        return DatabaseTarget(sqlite_path=Path(path).expanduser().resolve())
    except ValueError as exc:
        raise SettingsError(str(exc)) from None


def _log_origin(args: argparse.Namespace, env: Mapping[str, str]) -> str:
    origin: str = args.log_origin or env.get("REGISTRY_LOG_ORIGIN") or DEFAULT_LOG_ORIGIN
    if _LOG_ORIGIN.fullmatch(origin) is None:
        raise SettingsError(
            f"--log-origin {origin[:80]!r} must be 1-255 printable ASCII characters without "
            "spaces or '+'"
        )
    return origin


def _log_key_path(args: argparse.Namespace, env: Mapping[str, str]) -> Path | None:
    path = args.log_key_path or env.get("REGISTRY_LOG_KEY_PATH")
    return Path(path).expanduser().resolve() if path else None


def _workers(flag: str | None, env_value: str | None) -> int:
    text = flag if flag is not None else env_value
    if text is None or text == "":
        return 1
    where = "--workers" if flag is not None else "REGISTRY_WORKERS"
    try:
        workers = int(text, 10)
    except ValueError:
        raise SettingsError(f"{where}: {text[:40]!r} is not a whole number") from None
    if not 1 <= workers <= MAX_WORKERS:
        raise SettingsError(f"{where} must be 1 to {MAX_WORKERS}, not {workers}")
    return workers


def parse_settings(argv: Sequence[str], env: Mapping[str, str]) -> Settings:
    """Parse `argv` (no program name) and `env` into `Settings`; `SettingsError` when invalid.

    argparse itself exits with status 2 on unknown flags and 0 on --help.
    """
    args = build_parser().parse_args(list(argv))
    if not 0 < args.port < 65536:
        raise SettingsError(f"--port must be 1..65535, not {args.port}")
    env_skip = _env_flag(env, "SKIP_TDX_AUTH")
    env_require_event_log = _env_flag(env, "REGISTRY_REQUIRE_EVENT_LOG")
    env_allow_missing_event_log = _env_flag(env, "REGISTRY_ALLOW_MISSING_EVENT_LOG")
    env_any_measurement = _env_flag(env, "REGISTRY_ANY_MEASUREMENT")
    env_accept_v1 = _env_flag(env, "REGISTRY_ACCEPT_V1_REGISTRATIONS")
    require_event_log = bool(args.require_event_log) or env_require_event_log
    allow_missing_event_log = bool(args.allow_missing_event_log) or env_allow_missing_event_log
    if require_event_log and allow_missing_event_log:
        raise SettingsError(
            "--allow-missing-event-log contradicts --require-event-log (REGISTRY_REQUIRE_EVENT_LOG)"
        )
    skip = bool(args.skip_tdx_auth) or env_skip
    read_cache_ttl = _read_cache_ttl(args.read_cache_ttl, env.get("REGISTRY_READ_CACHE_TTL"))
    if args.read_cache_max_bytes < 0:
        raise SettingsError("--read-cache-max-bytes must not be negative")
    log_level = (args.log_level or env.get("LOG_LEVEL") or "INFO").upper()
    if log_level not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        raise SettingsError(f"unknown log level {log_level}")
    try:
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
    any_measurement = bool(args.any_measurement) or env_any_measurement
    policy = _td_image_policy(
        _tcb_statuses(args.accept_tcb_status),
        args.allow_debug,
        [*(args.mrtd_allowlist or ()), env.get("REGISTRY_MRTD_ALLOWLIST", "")],
        [*(args.rtmr_allowlist or ()), env.get("REGISTRY_RTMR_ALLOWLIST", "")],
        any_measurement,
        _tcb_settings(args, env),
    )
    return Settings(
        database=_database(args, env),
        host=args.host,
        port=args.port,
        pccs_url=(args.pccs_url or env.get("PCCS_URL") or INTEL_PCS_URL).rstrip("/"),
        trusted_root_ca_pem=_root_ca(args.trusted_root_ca or env.get("TDX_TRUSTED_ROOT_CA")),
        skip_tdx_auth=skip,
        policy=policy,
        any_measurement=any_measurement,
        measurement_policy=_measurement_policy(args, env),
        ccel_policy=_ccel_policy(args, env),
        allow_missing_event_log=allow_missing_event_log,
        limits=limits,
        rate_limit=rate_limit,
        log_level=log_level,
        read_cache_ttl=read_cache_ttl,
        read_cache_max_bytes=args.read_cache_max_bytes,
        challenges=_challenges(args, env),
        accept_v1_registrations=bool(args.accept_v1_registrations) or env_accept_v1,
        reappraise_every=_reappraise_every(
            args.reappraise_every, env.get("REGISTRY_REAPPRAISE_EVERY"), skip
        ),
        log_key_path=_log_key_path(args, env),
        log_origin=_log_origin(args, env),
        workers=_workers(args.workers, env.get("REGISTRY_WORKERS")),
    )
