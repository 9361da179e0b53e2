"""`tdx-sim`: serve a simulated TDX platform and its PCCS on one address."""

from __future__ import annotations

import argparse
import logging
import re
from pathlib import Path

from tdx_service_kit import ListenError, StartupSignals, configure_logging, run_app

from .app import SimSettings, create_app
from .pki import PkiError
from .platform import DEFAULT_MR_TD, TCB_STATUSES, SimOptions

log = logging.getLogger("tdx_sim")

_LISTEN = re.compile(r"(?:\[(?P<v6>[0-9A-Fa-f:.]+)\]|(?P<host>[^:\[\]]+)):(?P<port>[0-9]{1,5})")
_MRTD = re.compile(r"[0-9A-Fa-f]{96}")


def _listen(value: str) -> tuple[str, int]:
    match = _LISTEN.fullmatch(value)
    if match is None:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT or [V6]:PORT, got {value!r}")
    port = int(match["port"])
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"port must be 1..65535, got {port}")
    return (match["v6"] or match["host"], port)


def _mrtd(value: str) -> bytes:
    if _MRTD.fullmatch(value) is None:
        raise argparse.ArgumentTypeError("MRTD must be 48 bytes of hex (96 characters)")
    return bytes.fromhex(value)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tdx-sim",
        description=(
            "Simulated Intel TDX platform and PCCS v4, for development and tests only: "
            "its root CA is a test key kept in the state directory and must never be "
            "trusted in production."
        ),
    )
    parser.add_argument(
        "--listen",
        type=_listen,
        default=("127.0.0.1", 3010),
        metavar="ADDR",
        help="HOST:PORT to listen on (default 127.0.0.1:3010)",
    )
    parser.add_argument(
        "--state-dir",
        type=Path,
        required=True,
        metavar="DIR",
        help="where the test PKI is created on first start and kept (root CA in DIR/root_ca.pem)",
    )
    parser.add_argument("--debug-td", action="store_true", help="report a debug TD")
    parser.add_argument(
        "--tcb-status",
        choices=TCB_STATUSES,
        default="UpToDate",
        metavar="STATUS",
        help=f"TCB status of the platform's TCB level: {', '.join(TCB_STATUSES)}",
    )
    parser.add_argument(
        "--revoke-pck", action="store_true", help="list the PCK certificate in the PCK CRL"
    )
    parser.add_argument(
        "--mrtd",
        type=_mrtd,
        default=DEFAULT_MR_TD,
        metavar="HEX",
        help=f"MRTD of the simulated TD (default {DEFAULT_MR_TD.hex()})",
    )
    parser.add_argument(
        "--log-level",
        default="INFO",
        choices=("DEBUG", "INFO", "WARNING", "ERROR"),
        help="log level (default INFO)",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    """Parse the command line, load or create the PKI, serve until SIGINT/SIGTERM."""
    args = build_parser().parse_args(argv)
    host, port = args.listen
    settings = SimSettings(
        state_dir=args.state_dir,
        options=SimOptions(
            debug_td=args.debug_td,
            tcb_status=args.tcb_status,
            revoke_pck=args.revoke_pck,
            mr_td=args.mrtd,
        ),
        host=host,
        port=port,
        log_level=args.log_level,
    )
    configure_logging(settings.log_level)
    # A stop while the PKI loads ends the program before it serves; run_app handles any later one.
    signals = StartupSignals().install()
    try:
        app = create_app(settings)
    except (PkiError, OSError) as exc:
        log.error("cannot start the simulator", extra={"reason": str(exc)})
        return 1
    if signals.received is not None:
        log.info("stop requested during start-up")
        return 0
    log.warning("tdx-sim is a test stand-in: never trust its root CA in production")
    try:
        run_app(app, host=settings.host, port=settings.port, signals=signals)
    except ListenError as exc:
        log.error("cannot start the simulator", extra={"reason": str(exc)})
        return 1
    return 0
