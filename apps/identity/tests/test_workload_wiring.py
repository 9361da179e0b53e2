"""How the workload is wired into the service: settings, start-up checks, the SSH host key
route, the owner-registration hook, the 503 without a runtime, and the recovered expose."""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import cast
from unittest.mock import ANY

import asyncssh
import pytest
from conftest import AGREED, Running, instance_pubkey, register_operator, register_owner, sign
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fakes import FakeWorkload
from hypothesis import given
from hypothesis import strategies as st

from tdx_identity import Settings, StartupError, create_app
from tdx_identity.core.lifecycle import WorkloadPhase
from tdx_identity.core.state import STATE_FILE_NAME, WorkloadSection
from tdx_identity.settings import parse_settings
from tdx_identity.workload.config import Hardening, WorkloadConfig
from tdx_measure import EventLog

NEW_FLAGS = {
    "--ssh-listen": ("SSH_LISTEN", "ssh_listen", "0.0.0.0", "127.0.0.2", "10.0.0.1"),
    "--ssh-port": ("SSH_PORT", "ssh_port", 2222, "2300", "2400"),
    "--workload-port": ("WORKLOAD_PORT", "workload_port", 8080, "8100", "8200"),
    "--workload-publish-host": (
        "WORKLOAD_PUBLISH_HOST",
        "workload_publish_host",
        "0.0.0.0",
        "127.0.0.1",
        "::1",
    ),
    "--clear-mount-dir": (
        "CLEAR_MOUNT_DIR",
        "clear_mount_dir",
        Path("/run/tdx-identity/clear"),
        "/run/env-clear",
        "/run/flag-clear",
    ),
    "--store-key-path": (
        "STORE_KEY_PATH",
        "store_key_path",
        Path("/var/lib/tdx-identity/store.key"),
        "/var/lib/env/store.key",
        "/var/lib/flag/store.key",
    ),
    "--container-name": ("CONTAINER_NAME", "container_name", "tdx-workload", "env-wl", "flag-wl"),
}


def _typed(default: object, text: str) -> object:
    """`text` parsed as the type of `default` (str, int or Path)."""
    return cast(Callable[[str], object], type(default))(text)


def test_workload_settings_defaults_environment_and_flags() -> None:
    defaults = parse_settings([], {})
    for flag, (env, attr, default, env_value, flag_value) in NEW_FLAGS.items():
        assert getattr(defaults, attr) == default, flag
        from_env = parse_settings([], {env: env_value})
        assert getattr(from_env, attr) == _typed(default, env_value), flag
        from_flag = parse_settings([flag, flag_value], {env: env_value})
        assert getattr(from_flag, attr) == _typed(default, flag_value), flag


@pytest.mark.parametrize(
    "argv",
    [
        ["--ssh-port", "0"],
        ["--workload-port", "65536"],
        ["--ssh-listen", "example.org"],
        ["--workload-publish-host", "-p"],
        ["--clear-mount-dir", "relative/dir"],
        ["--container-name", "--privileged"],
        ["--container-name", "a b"],
    ],
)
def test_bad_workload_settings_are_usage_errors(argv: list[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        parse_settings(argv, {})
    assert exit_info.value.code == 2


def test_help_lists_the_workload_settings(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        parse_settings(["--help"], {})
    out = capsys.readouterr().out
    for flag, (env, *_) in NEW_FLAGS.items():
        assert flag in out and env in out


@pytest.mark.parametrize("where", ["inside", "same", "parent"])
def test_a_clear_mount_dir_not_outside_storage_is_a_startup_error(
    settings: Settings, where: str
) -> None:
    storage = settings.storage_path
    clear = {"inside": storage / "clear", "same": storage, "parent": storage.parent}[where]
    with pytest.raises(StartupError, match="outside STORAGE_PATH"):
        create_app(replace(settings, clear_mount_dir=clear), workload=FakeWorkload())


def test_a_store_key_path_under_storage_is_a_startup_error(settings: Settings) -> None:
    key = settings.storage_path / "workload" / "store.key"
    with pytest.raises(StartupError, match="store key path"):
        create_app(replace(settings, store_key_path=key), workload=FakeWorkload())


def _files_under(root: Path) -> list[Path]:
    return [path for path in root.rglob("*") if path.is_file()]


def _private_forms(key: asyncssh.SSHKey) -> list[bytes]:
    """The host key's private seed raw, in hex, and in its PEM and OpenSSH exports."""
    pyca = key.pyca_key
    assert isinstance(pyca, Ed25519PrivateKey)
    seed = pyca.private_bytes_raw()
    return [seed, seed.hex().encode(), key.export_private_key("openssh")]


async def test_ssh_host_key_is_made_in_memory_at_each_start_and_is_the_measured_one(
    running: Running, settings: Settings, tmp_path: Path
) -> None:
    keys, secrets = [], []
    for _ in range(2):
        async with running() as client:
            response = await client.get("/workload/ssh-host-key")
            assert response.status_code == 200
            body = response.json()
            log = EventLog.from_json((await client.get("/instance/eventlog")).text)
            host_key = client.app.ctx.ssh_host_key.private_key  # type: ignore[attr-defined]
            secrets.append(_private_forms(host_key))
        kind, blob = body["public_key"].split()
        assert kind == "ssh-ed25519"
        digest = base64.b64encode(hashlib.sha256(base64.b64decode(blob)).digest()).rstrip(b"=")
        assert body["fingerprint"] == "SHA256:" + digest.decode()
        assert log.ssh_host_key == body["public_key"]
        keys.append(body["public_key"])
    assert keys[0] != keys[1], "every start makes a new host key"
    assert not (settings.storage_path / "ssh_host_ed25519_key").exists()
    for path in _files_under(tmp_path):
        data = path.read_bytes()
        assert b"OPENSSH PRIVATE KEY" not in data, path
        assert not any(form in data for forms in secrets for form in forms), path


async def test_a_v1_host_key_file_is_deleted_at_start_with_a_warning(
    running: Running, settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    settings.storage_path.mkdir(parents=True)
    v1 = settings.storage_path / "ssh_host_ed25519_key"
    v1.write_bytes(b"-----BEGIN OPENSSH PRIVATE KEY-----\nv1\n-----END OPENSSH PRIVATE KEY-----\n")
    async with running() as client:
        served = (await client.get("/workload/ssh-host-key")).json()["public_key"]
    assert not v1.exists()
    assert served.startswith("ssh-ed25519 ")
    assert any(
        "deleted the v1 SSH host key" in record.getMessage() and record.levelname == "WARNING"
        for record in caplog.records
    )


async def test_owner_registration_prepares_the_workload(
    running: Running, workload: FakeWorkload
) -> None:
    owner = Ed25519PrivateKey.generate()
    async with running() as client:
        token = (await register_operator(client, Ed25519PrivateKey.generate())).json()
        assert workload.owners == []
        assert (await register_owner(client, owner, token["owner_token"])).status_code == 200
    assert workload.owners == [owner.public_key().public_bytes_raw()]


async def _registered_and_configured(running: Running) -> None:
    owner = Ed25519PrivateKey.generate()
    async with running() as client:
        token = (await register_operator(client, Ed25519PrivateKey.generate())).json()
        await register_owner(client, owner, token["owner_token"])
        body = {
            "action": "configure",
            "seq": 1,
            "instance_pubkey": (await instance_pubkey(client)).hex(),
            "image": "localhost/site:1",
            "persist_dirs": ["/www"],
            "port": 8080,
        }
        raw = json.dumps(body).encode()
        response = await client.post(
            "/workload/configure", content=raw, headers={"x-signature": sign(owner, raw)}
        )
        assert response.status_code == 200


async def test_an_expose_that_began_but_was_never_committed_is_not_finished_at_recovery(
    running: Running, settings: Settings
) -> None:
    await _registered_and_configured(running)
    path = settings.storage_path / STATE_FILE_NAME
    state = json.loads(path.read_text())
    config = {k: v for k, v in state["workload_config"].items() if k != "owner_pubkey"}
    state["workload"] = {"version": 1, "phase": "exposing", "config": config}
    path.write_text(json.dumps(state))
    workload = FakeWorkload()
    async with running(workload=workload) as client:
        assert (await client.get("/instance/state")).json() == {
            "state": "configured",
            "last_seq": 1,
            "registry_comparison": AGREED,
            "workload": "running",
            "workload_reason": None,
            "front": "stopped",
            "tls_spki_sha256": ANY,
        }
    assert workload.ssh_closed_for_good, "an expose began: SSH never opens again"
    assert not workload.ssh_open and not workload.published
    assert workload.recovered[-1] is not None and not workload.recovered[-1].exposed


async def test_without_podman_the_workload_routes_answer_503_naming_it(
    running: Running, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    empty = tmp_path / "empty-path"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    owner = Ed25519PrivateKey.generate()
    async with running(workload=None) as client:
        token = (await register_operator(client, Ed25519PrivateKey.generate())).json()
        await register_owner(client, owner, token["owner_token"])
        body = {
            "action": "configure",
            "seq": 1,
            "instance_pubkey": (await instance_pubkey(client)).hex(),
            "image": "localhost/site:1",
            "persist_dirs": [],
            "port": 8080,
        }
        raw = json.dumps(body).encode()
        response = await client.post(
            "/workload/configure", content=raw, headers={"x-signature": sign(owner, raw)}
        )
    assert response.status_code == 503
    error = response.json()["error"]
    assert "podman" in error and "gocryptfs" in error


@pytest.mark.parametrize("path", ["/proc/x", "/a:b", "/a,b", "/dev"])
async def test_the_route_applies_the_runtime_path_rule(running: Running, path: str) -> None:
    owner = Ed25519PrivateKey.generate()
    async with running() as client:
        token = (await register_operator(client, Ed25519PrivateKey.generate())).json()
        await register_owner(client, owner, token["owner_token"])
        body = {
            "action": "configure",
            "seq": 1,
            "instance_pubkey": (await instance_pubkey(client)).hex(),
            "image": "localhost/site:1",
            "persist_dirs": [path],
            "port": 8080,
        }
        raw = json.dumps(body).encode()
        response = await client.post(
            "/workload/configure", content=raw, headers={"x-signature": sign(owner, raw)}
        )
    assert response.status_code == 400
    assert "Invalid directory path" in response.json()["error"]


def test_hardening_flags_tune_the_container_and_cannot_weaken_the_rest() -> None:
    settings = parse_settings(
        [
            "--workload-cap-add",
            "net_bind_service,CAP_CHOWN",
            "--workload-pids-limit",
            "64",
            "--workload-memory-mb",
            "128",
        ],
        {},
    )
    args = settings.hardening.podman_args()
    assert args.count("--cap-add") == 2 and "NET_BIND_SERVICE" in args and "CHOWN" in args
    pids = args.index("--pids-limit")
    assert args[pids + 1] == "64"
    assert str(128 * 1024 * 1024) in args and "--read-only" in args
    assert args[args.index("--log-driver") + 1] == "none"
    assert "no-new-privileges" in args and "--privileged" not in args and "host" not in args
    assert parse_settings([], {}).hardening == Hardening()
    assert parse_settings(["--workload-cap-add", ""], {}).hardening.cap_add == frozenset()


@pytest.mark.parametrize(
    "argv",
    [
        ["--workload-cap-add", "ALL;rm"],
        ["--workload-pids-limit", "0"],
        ["--workload-memory-mb", "2"],
        ["--workload-read-only-rootfs"],
    ],
)
def test_bad_hardening_flags_are_usage_errors(argv: list[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        parse_settings(argv, {})
    assert exit_info.value.code == 2


_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=12,
)


@given(
    st.dictionaries(
        st.sampled_from(["version", "phase", "config", "image", "persist_dirs", "port"]),
        _json_values,
    )
)
def test_a_workload_section_parses_or_is_refused_with_value_error(data: dict[str, object]) -> None:
    try:
        section = WorkloadSection.from_json(data)
    except ValueError:
        return
    assert section is None or WorkloadSection.from_json(section.to_json()) == section


@given(
    phase=st.sampled_from(list(WorkloadPhase)),
    dirs=st.lists(
        st.lists(st.from_regex(r"[a-z0-9_-]{1,12}", fullmatch=True), min_size=1, max_size=3).map(
            lambda parts: "/" + "/".join(parts)
        ),
        max_size=5,
        unique=True,
    ),
    port=st.integers(1, 65535),
)
def test_a_workload_section_round_trips(phase: WorkloadPhase, dirs: list[str], port: int) -> None:
    section = WorkloadSection(phase, WorkloadConfig("localhost/site:1", tuple(dirs), port))
    assert WorkloadSection.from_json(json.loads(json.dumps(section.to_json()))) == section
