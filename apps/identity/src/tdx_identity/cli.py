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
from tdx_service_kit import ListenError, StartupSignals, configure_logging, run_app

log = logging.getLogger("tdx_identity")

EXIT_STARTUP_FAILED = 1


def main(argv: Sequence[str] | None = None) -> int:
    """Run the service; returns 1 after one log line if it cannot start (usage errors exit 2)."""
    settings = parse_settings(argv, os.environ)
    configure_logging(settings.log_level)
    # A stop during the checks below is kept: the service then starts its listeners, runs
    # none of the workload's steps, and stops as gracefully as after serving.
    signals = StartupSignals().install()
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
        # The workload spawns podman, gocryptfs and SSH session programs. uvloop (0.23) passes
        # every inheritable descriptor to children (the HTTP listening socket ended up held by
        # the gocryptfs daemon) and gives them socketpair stdio that podman's conmon keeps open,
        # so a `podman run` never reached EOF. The standard loop closes them (close_fds).
        run_app(app, host=settings.host, port=settings.port, signals=signals, uvloop=False)
    except (StartupError, ListenError) as exc:
        log.error("cannot start: %s", exc)
        return EXIT_STARTUP_FAILED
    return 0


if __name__ == "__main__":
    sys.exit(main())
