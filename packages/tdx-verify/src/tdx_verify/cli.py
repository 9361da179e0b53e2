"""`verify-quote`: verify one TDX quote and print one JSON verdict.

With `--event-log FILE` the verdict also says whether that RTMR3 event log (tdx-measure's
`EventLog` JSON) replays to the verified quote's RTMR3; it is valid only if it does. That option
needs tdx-measure (`pip install 'tdx-verify[event-log]'`); without it, it is a usage error.
With `--ccel FILE` (the firmware's CCEL event log, as /sys/firmware/acpi/tables/data/CCEL holds
it) the verdict's "ccel" member gives the replay of RTMR0-3 beside the quote's values and the
measured boot components; a verified quote stays valid only if the log replays to its RTMR0-2
(and RTMR3 when the log extends it). It needs tdx-measure too.
Exit status: 0 valid, 1 invalid (any reason, including unreadable input), 2 usage error.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import string
import sys
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from tdx_verify._allowlist import (
    MAX_TCB_GRACE_DAYS,
    PolicySettingError,
    parse_denied_advisories,
    parse_tcb_grace_days,
)
from tdx_verify._collateral import Collateral
from tdx_verify._errors import AdvisoryDenied, TcbStatusRejected, TdxVerifyError
from tdx_verify._pccs import CollateralCache, PccsClient
from tdx_verify._policy import DEFAULT_ACCEPTED_TCB_STATUSES, Policy
from tdx_verify._tcb import KNOWN_TCB_STATUSES
from tdx_verify._verifier import VerifiedQuote, Verifier

if TYPE_CHECKING:
    from tdx_measure import CcelLog, EventLog

_MAX_INPUT_BYTES = 8 * 1024 * 1024
_HEX = frozenset(string.hexdigits.encode())


class _InputError(Exception):
    """An input file could not be used; reported as an invalid verdict."""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="verify-quote",
        description="Verify an Intel TDX quote with DCAP and print a JSON verdict.",
    )
    parser.add_argument("--quote", required=True, metavar="FILE", help="quote, raw or hex")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--collateral", metavar="FILE", help="collateral in dcap-qvl QuoteCollateralV3 JSON"
    )
    source.add_argument("--pccs-url", metavar="URL", help="fetch collateral from this PCCS")
    parser.add_argument(
        "--event-log",
        metavar="FILE",
        help="RTMR3 event log (tdx-measure EventLog JSON) that must replay to the quote's RTMR3",
    )
    parser.add_argument(
        "--ccel",
        metavar="FILE",
        help="the firmware's CCEL event log (TCG2 crypto-agile), replayed against RTMR0-2",
    )
    parser.add_argument("--now", type=int, metavar="UNIX", help="verification time (default now)")
    parser.add_argument(
        "--root-ca", metavar="PEM", help="trusted root CA PEM file (default: Intel SGX Root CA)"
    )
    parser.add_argument(
        "--accept-tcb-status",
        metavar="S[,S...]|any",
        help="accepted TCB statuses (default: "
        + ",".join(sorted(DEFAULT_ACCEPTED_TCB_STATUSES))
        + ")",
    )
    parser.add_argument(
        "--tcb-grace-days",
        metavar="N",
        help="judge OutOfDate and OutOfDateConfigurationNeeded as the status without their "
        "out-of-date parts (accepted only if the accepted statuses hold it) while the newer "
        f"TCB level is less than N days old (1..{MAX_TCB_GRACE_DAYS}; default: no grace)",
    )
    parser.add_argument(
        "--deny-advisory",
        action="append",
        default=[],
        metavar="ID",
        help="refuse a quote whose TCB is affected by this advisory (INTEL-SA-NNNNN); repeatable",
    )
    return parser


def _read(path: str, what: str) -> bytes:
    try:
        with open(path, "rb") as f:
            data = f.read(_MAX_INPUT_BYTES + 1)
    except OSError as exc:
        raise _InputError(f"cannot read {what} {path!r}: {exc.strerror or exc}") from None
    if len(data) > _MAX_INPUT_BYTES:
        raise _InputError(f"{what} {path!r} is larger than {_MAX_INPUT_BYTES} bytes")
    return data


def _quote_bytes(data: bytes) -> bytes:
    """Raw quote bytes, or the bytes of a hex-text quote (whitespace ignored)."""
    text = b"".join(data.split())
    if text and len(text) % 2 == 0 and all(c in _HEX for c in text):
        return bytes.fromhex(text.decode("ascii"))
    return data


def _accepted(value: str | None, parser: argparse.ArgumentParser) -> frozenset[str] | None:
    if value is None:
        return DEFAULT_ACCEPTED_TCB_STATUSES
    if value.strip().lower() == "any":
        return None
    statuses = frozenset(s.strip() for s in value.split(",") if s.strip())
    unknown = statuses - KNOWN_TCB_STATUSES
    if not statuses or unknown:
        parser.error(
            f"--accept-tcb-status: unknown status(es) {sorted(unknown)}; "
            f"known: {', '.join(sorted(KNOWN_TCB_STATUSES))} or 'any'"
        )
    return statuses


def _verdict(result: VerifiedQuote | None, error: str | None, **extra: Any) -> dict[str, Any]:
    if result is None:
        return {
            "valid": False,
            "tcb_status": extra.get("tcb_status"),
            "advisory_ids": list(extra.get("advisory_ids", ())),
            "mr_td": None,
            "report_data": None,
            "ppid": None,
            "tcb_grace_until": None,
            "error": error,
        }
    return {
        "valid": True,
        "tcb_status": result.tcb_status,
        "advisory_ids": list(result.advisory_ids),
        "mr_td": result.mr_td.hex(),
        "report_data": result.report_data.hex(),
        "ppid": result.ppid.value.hex(),
        "tcb_grace_until": (
            None
            if result.tcb_grace_until is None
            else result.tcb_grace_until.strftime("%Y-%m-%dT%H:%M:%SZ")
        ),
        "error": None,
    }


def _event_log_available() -> bool:
    """Whether tdx-measure, the `event-log` extra, is installed."""
    try:
        import tdx_measure  # noqa: F401
    except ModuleNotFoundError:
        return False
    return True


def _load_event_log(path: str) -> EventLog:
    from tdx_verify import _event_log

    try:
        return _event_log.load(_read(path, "event log"))
    except _event_log.MalformedEventLog as exc:
        raise _InputError(f"event log {path!r} is malformed: {exc}") from None


def _with_event_log(
    verdict: dict[str, Any], result: VerifiedQuote | None, log: EventLog | None
) -> dict[str, Any]:
    """The verdict with its "event_log" member: a verified quote stays valid only if the log
    replays to its RTMR3 (the TCB status stays visible, as for a rejected TCB status)."""
    if log is None:
        return {**verdict, "event_log": None}
    from tdx_verify import _event_log

    if result is None:
        return {**verdict, "event_log": _event_log.unmatched(log)}
    report, refusal = _event_log.replay_against(log, result)
    if refusal is not None:
        verdict = _verdict(
            None, refusal, tcb_status=result.tcb_status, advisory_ids=result.advisory_ids
        )
    return {**verdict, "event_log": report}


def _load_ccel(path: str) -> tuple[CcelLog, dict[str, Any]]:
    from tdx_verify import _ccel

    try:
        return _ccel.load(_read(path, "CCEL event log"))
    except _ccel.MalformedCcel as exc:
        raise _InputError(f"CCEL event log {path!r} is malformed: {exc}") from None


def _with_ccel(
    verdict: dict[str, Any],
    result: VerifiedQuote | None,
    ccel: tuple[CcelLog, dict[str, Any]] | None,
    quote: bytes | None,
) -> dict[str, Any]:
    """The verdict with its "ccel" member: a verified quote stays valid only if the log replays
    to its RTMR0-2 (and RTMR3 when the log extends RTMR3)."""
    if ccel is None:
        return {**verdict, "ccel": None}
    from tdx_verify import _ccel

    member, refusal = _ccel.report(ccel[0], ccel[1], result, quote)
    if refusal is not None and result is not None and verdict["valid"]:
        verdict = _verdict(
            None, refusal, tcb_status=result.tcb_status, advisory_ids=result.advisory_ids
        )
    return {**verdict, "ccel": member}


async def _via_pccs(verifier: Verifier, url: str, quote: bytes, now: datetime) -> VerifiedQuote:
    client = PccsClient(url)
    try:
        return await CollateralCache(client, verifier).verify_quote(quote, now=now)
    finally:
        await client.aclose()


def _policy(args: argparse.Namespace, parser: argparse.ArgumentParser) -> Policy:
    try:
        return Policy(
            accepted_tcb_statuses=_accepted(args.accept_tcb_status, parser),
            tcb_grace_days=parse_tcb_grace_days(args.tcb_grace_days),
            denied_advisory_ids=parse_denied_advisories(args.deny_advisory),
        )
    except PolicySettingError as exc:
        parser.error(exc.reason)


def _run(args: argparse.Namespace, policy: Policy) -> VerifiedQuote:
    root_pem = _read(args.root_ca, "root CA") if args.root_ca else None
    verifier = Verifier(root_ca_pem=root_pem, policy=policy)
    quote = _quote_bytes(_read(args.quote, "quote"))
    now = datetime.fromtimestamp(args.now if args.now is not None else time.time(), UTC)
    if args.collateral:
        collateral = Collateral.from_json(_read(args.collateral, "collateral"))
        return verifier.verify(quote, collateral, now=now)
    return asyncio.run(_via_pccs(verifier, args.pccs_url, quote, now))


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    try:
        args = parser.parse_args(argv)
        policy = _policy(args, parser)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 2
    for option, value in (("--event-log", args.event_log), ("--ccel", args.ccel)):
        if value is not None and not _event_log_available():
            sys.stderr.write(
                f"verify-quote: {option} needs tdx-measure: pip install 'tdx-verify[event-log]'\n"
            )
            return 2
    log: EventLog | None = None
    ccel: tuple[CcelLog, dict[str, Any]] | None = None
    quote: bytes | None = None
    result: VerifiedQuote | None = None
    try:
        if args.event_log is not None:
            log = _load_event_log(args.event_log)
        if args.ccel is not None:
            ccel = _load_ccel(args.ccel)
            quote = _quote_bytes(_read(args.quote, "quote"))
        result = _run(args, policy)
        verdict = _verdict(result, None)
    except (TcbStatusRejected, AdvisoryDenied) as exc:
        verdict = _verdict(None, str(exc), tcb_status=exc.tcb_status, advisory_ids=exc.advisory_ids)
    except (TdxVerifyError, _InputError) as exc:
        verdict = _verdict(None, str(exc))
    except (ValueError, OverflowError, OSError) as exc:
        verdict = _verdict(None, f"{type(exc).__name__}: {exc}")
    if args.event_log is not None:
        verdict = _with_event_log(verdict, result, log)
    if args.ccel is not None:
        verdict = _with_ccel(verdict, result, ccel, quote)
    sys.stdout.write(json.dumps(verdict) + "\n")
    return 0 if verdict["valid"] else 1


if __name__ == "__main__":
    sys.exit(main())
