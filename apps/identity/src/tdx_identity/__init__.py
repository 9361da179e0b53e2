"""Identity service of a TDX confidential VM: instance key, operator and owner, workload.

The app exports `create_app`, its settings and `main`. The core's interfaces are in
`tdx_identity.core.ports`, the exceptions in `tdx_identity.exceptions`.
"""

from collections.abc import Sequence

from tdx_identity.app import create_app
from tdx_identity.exceptions import StartupError
from tdx_identity.settings import Settings, parse_settings

__all__ = ["Settings", "StartupError", "create_app", "main", "parse_settings"]


def main(argv: Sequence[str] | None = None) -> int:
    """`identity-svc` (`tdx_identity.cli.main`), imported only when called: `python -m
    tdx_identity.cli` must not find the module already loaded."""
    from tdx_identity.cli import main as cli_main

    return cli_main(argv)
