"""`identity-svc`: parse settings, check the platform, then serve until SIGINT/SIGTERM."""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from collections.abc import Sequence

from tdx_identity.app import create_app
from tdx_identity.core.service import IdentityService
from tdx_identity.exceptions import StartupError
from tdx_identity.settings import parse_settings
from tdx_service_kit import StartupSignals, configure_logging, run_app

log = logging.getLogger("tdx_identity")

EXIT_STARTUP_FAILED = 1
EXIT_INTERRUPTED = 130


def main(argv: Sequence[str] | None = None) -> int:
    """Run the service; returns 1 after one log line if it cannot start (usage errors exit 2)."""
    settings = parse_settings(argv, os.environ)
    configure_logging(settings.log_level)
    try:
        app = create_app(settings)
        service = app.ctx.service
        if not isinstance(service, IdentityService):
            raise RuntimeError("create_app did not attach an IdentityService")
        asyncio.run(service.prepare())
        log.info(
            "identity service starting",
            extra={
                "host": settings.host,
                "port": settings.port,
                "storage_path": str(settings.storage_path),
                "instance_pubkey": service.instance_pubkey.hex(),
                "lifecycle": service.state.lifecycle.value,
            },
        )
        StartupSignals().install().attach(app)
        run_app(app, host=settings.host, port=settings.port)
    except StartupError as exc:
        log.error("cannot start: %s", exc)
        return EXIT_STARTUP_FAILED
    except KeyboardInterrupt:
        log.info("interrupted during start-up")
        return EXIT_INTERRUPTED
    return 0


if __name__ == "__main__":
    sys.exit(main())
