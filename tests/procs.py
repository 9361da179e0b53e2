"""Start the project's real programs on loopback for end-to-end tests."""

from __future__ import annotations

import os
import urllib.parse
from collections.abc import Sequence
from pathlib import Path

from tdx_identity.settings import DEFAULT_FRONT_RUNTIME_PARENT
from tdx_identity.workload.front import stop_left_front
from tdx_identity.workload.helpers import HELPER_ROLES, installed_helpers
from tdx_service_kit.testing import Program, free_port, running
from tdx_service_kit.testing import installed_program as program
from tdx_sim import DEFAULT_MR_TD, td_image_allowlists

__all__ = [
    "Program",
    "base_env",
    "free_port",
    "identity",
    "kbs",
    "kbs_image_allowlists",
    "program",
    "registry",
    "running",
    "sim",
    "stop_front",
]


def _loopback(port: int) -> str:
    return f"http://127.0.0.1:{port}"


def base_env(**extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("REGISTRY_", "PCCS_", "TDX_", "KBS_"))
    }
    env.pop("SKIP_TDX_AUTH", None)
    env.pop("KEY_BROKER_URL", None)
    env.pop("MOCK_TDX_URL", None)
    env.pop("STORAGE_PATH", None)
    env.update(extra)
    return env


def sim(tmp: Path, flags: Sequence[str] = (), state: Path | None = None) -> Program:
    """The simulated platform, its PKI kept in `state` (default `tmp/sim-state`): another
    directory holding a copy of that PKI is another TD of the same platform."""
    port = free_port()
    state = state or tmp / "sim-state"
    return Program(
        "tdx-sim",
        [program("tdx-sim"), "--listen", f"127.0.0.1:{port}", "--state-dir", str(state), *flags],
        base_env(),
        _loopback(port),
        "/root_ca.pem",
        tmp / f"sim-{port}.log",
    )


def registry(
    tmp: Path,
    sim_url: str,
    root_ca: Path | None,
    db_url: str | None = None,
    *,
    flags: Sequence[str] = (),
    **extra_env: str,
) -> Program:
    """The registry trusting the sim's PCCS, pinned to the simulated TD image (its default
    MRTD and boot RTMR0-2) unless `extra_env` says otherwise; `flags` are added to its command
    line."""
    port = free_port()
    env = base_env(
        PCCS_URL=sim_url,
        REGISTRY_DB_PATH=str(tmp / "registry.db"),
        REGISTRY_LOG_KEY_PATH=str(tmp / "registry-log.key"),
        **(td_image_allowlists(DEFAULT_MR_TD) | extra_env),
    )
    if root_ca is not None:
        env["TDX_TRUSTED_ROOT_CA"] = str(root_ca)
    if db_url is not None:
        env["REGISTRY_DB_URL"] = db_url
    return Program(
        "tdx-registry",
        [program("tdx-registry"), "--host", "127.0.0.1", "--port", str(port), *flags],
        env,
        _loopback(port),
        "/instance/" + "00" * 32,
        tmp / f"registry-{port}.log",
    )


def identity(tmp: Path, sim_url: str, registry_url: str, **extra_env: str) -> Program:
    """The identity service of the sim's TD, its state in `tmp/identity` unless `extra_env`
    names another STORAGE_PATH."""
    port = free_port()
    env = base_env(
        MOCK_TDX_URL=sim_url,
        REGISTRY_URL=registry_url,
        **({"STORAGE_PATH": str(tmp / "identity")} | extra_env),
    )
    return Program(
        "identity-svc",
        [program("identity-svc"), "--host", "127.0.0.1", "--port", str(port)],
        env,
        _loopback(port),
        "/instance/pubkey",
        tmp / f"identity-{port}.log",
    )


def stop_front(ident: Program) -> bool:
    """Once `ident` (an identity service) stopped: stop the front it left serving (a stop of
    the service leaves a serving nginx for its next start to adopt) and remove its runtime dir.
    True when one ran."""
    runtime_dir = ident.env.get("FRONT_RUNTIME_DIR")
    if runtime_dir is None:
        port = urllib.parse.urlsplit(ident.url).port
        runtime_dir = str(DEFAULT_FRONT_RUNTIME_PARENT / f"front-{port}")
    nginx = installed_helpers({"nginx": HELPER_ROLES["nginx"]}).get("nginx")
    if nginx is None:
        return False
    return stop_left_front(Path(runtime_dir), nginx)


def kbs_image_allowlists(mr_td: bytes) -> dict[str, str]:
    """`td_image_allowlists` in the broker's variables (KBS_MRTD_ALLOWLIST, KBS_RTMR_ALLOWLIST)."""
    return {
        name.replace("REGISTRY_", "KBS_", 1): value
        for name, value in td_image_allowlists(mr_td).items()
    }


def kbs(
    tmp: Path,
    sim_url: str,
    root_ca: Path,
    admin_pubkey_pem: Path,
    *,
    db_url: str | None = None,
    flags: Sequence[str] = (),
    name: str = "kbs",
    **extra_env: str,
) -> Program:
    """The key broker trusting `root_ca` for quotes (collateral from the sim's PCCS) and
    `admin_pubkey_pem` (an ed25519 public key, PEM) for uploads, pinned to the simulated TD
    image (its default MRTD and boot RTMR0-2) unless `extra_env` says otherwise; its database
    and storage key in `tmp/<name>/` (kept across restarts of the same Program), on a free port
    of its own."""
    port = free_port()
    home = tmp / name
    home.mkdir(parents=True, exist_ok=True)
    argv = [
        program("tdx-kbs"),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--db-path",
        str(home / "kbs.db"),
        "--storage-key-path",
        str(home / "storage.key"),
        "--admin-pubkey",
        str(admin_pubkey_pem),
        "--trusted-root-ca",
        str(root_ca),
        "--pccs-url",
        sim_url,
    ]
    if db_url is not None:
        argv += ["--db-url", db_url]
    return Program(
        "tdx-kbs",
        [*argv, *flags],
        base_env(**(kbs_image_allowlists(DEFAULT_MR_TD) | extra_env)),
        _loopback(port),
        "/kbs/v0/auth",  # any HTTP answer (a GET here is 405): the broker serves
        tmp / f"{name}-{port}.log",
    )
