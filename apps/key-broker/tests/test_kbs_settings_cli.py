"""Settings from flags and environment, `--help`, and the real `tdx-kbs` program: it starts,
answers auth, and stops on SIGTERM."""

from __future__ import annotations

import base64
import json
import os
import re
import signal
import subprocess
import urllib.request
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from kbs_helpers import AUTH_BODY, Sim, pem_public

from tdx_kbs import SettingsError, TdImageReference, main, parse_settings
from tdx_service_kit.testing import Program, free_port, installed_program, with_x509_version
from tdx_sim import BOOT_RTMRS, DEFAULT_MR_TD, td_image_allowlists

SIM_IMAGE = td_image_allowlists(DEFAULT_MR_TD)
KBS_IMAGE_ENV = {
    "KBS_MRTD_ALLOWLIST": SIM_IMAGE["REGISTRY_MRTD_ALLOWLIST"],
    "KBS_RTMR_ALLOWLIST": SIM_IMAGE["REGISTRY_RTMR_ALLOWLIST"],
}
PINNED = ["--mrtd-allowlist", SIM_IMAGE["REGISTRY_MRTD_ALLOWLIST"],
          "--rtmr-allowlist", SIM_IMAGE["REGISTRY_RTMR_ALLOWLIST"]]  # fmt: skip
SIM_REFERENCE = TdImageReference(
    mr_td=frozenset({DEFAULT_MR_TD}), rtmrs=tuple(frozenset({v}) for v in BOOT_RTMRS[:3])
)


@pytest.fixture
def admin_pem(tmp_path: Path) -> Path:
    path = tmp_path / "admin.pem"
    path.write_bytes(pem_public(Ed25519PrivateKey.generate()))
    return path


def base_args(tmp_path: Path, admin_pem: Path, *, pinned: bool = True) -> list[str]:
    """The required flags, and the allow-lists of the sim's TD image unless `pinned` is off."""
    return [
        *(PINNED if pinned else []),
        "--db-path",
        str(tmp_path / "kbs.db"),
        "--storage-key-path",
        str(tmp_path / "storage.key"),
        "--admin-pubkey",
        str(admin_pem),
    ]


def test_defaults_and_flags(tmp_path: Path, admin_pem: Path) -> None:
    settings = parse_settings(base_args(tmp_path, admin_pem), {})
    assert (settings.host, settings.port) == ("127.0.0.1", 3020)
    assert settings.sessions.ttl == 300 and settings.token_ttl == 300
    assert settings.sessions.max_sessions == 10_000
    assert settings.database.sqlite_path == tmp_path / "kbs.db"
    assert settings.trusted_root_ca_pem is None and settings.initial_policy is None
    assert settings.reference == SIM_REFERENCE and settings.any_measurement is False
    flagged = parse_settings(
        [*base_args(tmp_path, admin_pem), "--port", "4000", "--session-ttl", "60"],
        {"KBS_PORT": "5000", "KBS_SESSION_TTL": "90", "KBS_TOKEN_TTL": "120"},
    )
    assert flagged.port == 4000 and flagged.sessions.ttl == 60 and flagged.token_ttl == 120


def test_environment(tmp_path: Path, admin_pem: Path, sim: Sim) -> None:
    root = tmp_path / "root.pem"
    root.write_bytes(sim.root_ca_pem)
    policy = tmp_path / "p.rego"
    policy.write_text("package policy\n\ndefault allow := false\n")
    env = {
        "KBS_HOST": "0.0.0.0",
        "KBS_PORT": "3999",
        "KBS_DB_URL": "postgresql://kbs@db.example/kbs",
        "KBS_STORAGE_KEY_PATH": str(tmp_path / "k"),
        "KBS_ADMIN_PUBKEY": str(admin_pem),
        "TDX_TRUSTED_ROOT_CA": str(root),
        "PCCS_URL": "https://pccs.example/",
        "KBS_POLICY": str(policy),
        "KBS_MAX_SESSIONS": "7",
        "LOG_LEVEL": "debug",
        **KBS_IMAGE_ENV,
    }
    settings = parse_settings([], env)
    assert (settings.host, settings.port, settings.pccs_url) == (
        "0.0.0.0",
        3999,
        "https://pccs.example",
    )
    assert settings.database.postgres_url == "postgresql://kbs@db.example/kbs"
    assert settings.trusted_root_ca_pem == sim.root_ca_pem
    assert settings.initial_policy == policy.read_text()
    assert settings.sessions.max_sessions == 7 and settings.log_level == "DEBUG"
    assert settings.reference == SIM_REFERENCE


@pytest.mark.parametrize(
    ("drop", "extra", "env", "message"),
    [
        ("--admin-pubkey", [], {}, "--admin-pubkey"),
        ("--storage-key-path", [], {}, "--storage-key-path"),
        (None, ["--port", "0"], {}, "--port"),
        (None, ["--session-ttl", "5"], {}, "--session-ttl"),
        (None, ["--token-ttl", "100000"], {}, "--token-ttl"),
        (None, [], {"KBS_PORT": "x"}, "KBS_PORT"),
        (None, ["--max-sessions", "0"], {}, "max_sessions"),
        (None, ["--db-url", "mysql://x"], {}, "postgresql"),
        (None, ["--trusted-root-ca", "/nonexistent"], {}, "root CA"),
        (None, ["--policy", "/nonexistent"], {}, "policy"),
        (None, ["--log-level", "loud"], {}, "log level"),
    ],
)
def test_refused_settings(
    tmp_path: Path,
    admin_pem: Path,
    drop: str | None,
    extra: list[str],
    env: dict[str, str],
    message: str,
) -> None:
    args = base_args(tmp_path, admin_pem)
    if drop is not None:
        index = args.index(drop)
        del args[index : index + 2]
    with pytest.raises(SettingsError, match=message):
        parse_settings([*args, *extra], env)


def test_without_allow_lists_the_broker_refuses_to_start(
    tmp_path: Path, admin_pem: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    unpinned = base_args(tmp_path, admin_pem, pinned=False)
    with pytest.raises(SettingsError, match="no measurement policy for the TD image") as info:
        parse_settings(unpinned, {})
    for missing in ("--mrtd-allowlist", *(f"--rtmr-allowlist {i}=HEX" for i in range(3))):
        assert missing in str(info.value)
    assert "--any-measurement" in str(info.value)
    rtmr1 = BOOT_RTMRS[1].hex()
    with pytest.raises(SettingsError, match=r"give --rtmr-allowlist 0=HEX, --rtmr-allowlist 2=HEX"):
        parse_settings([*unpinned, "--mrtd-allowlist", DEFAULT_MR_TD.hex()],
                       {"KBS_RTMR_ALLOWLIST": f"1={rtmr1}"})  # fmt: skip
    with pytest.raises(SettingsError, match="no measurement policy"):
        parse_settings(unpinned, {"KBS_ANY_MEASUREMENT": "0"})
    assert main(unpinned) == 2
    err = capsys.readouterr().err
    assert err.startswith("tdx-kbs: error: no measurement policy for the TD image: give ")
    assert "Traceback" not in err


def test_allow_lists_from_flags_and_environment_add_up(tmp_path: Path, admin_pem: Path) -> None:
    """As the registry's: every value of the flags and of the environment is allowed."""
    other = "5" * 96
    settings = parse_settings(
        [*base_args(tmp_path, admin_pem, pinned=False), "--mrtd-allowlist", other],
        {
            **KBS_IMAGE_ENV,
            "KBS_RTMR_ALLOWLIST": KBS_IMAGE_ENV["KBS_RTMR_ALLOWLIST"] + ",2=" + other,
        },
    )
    assert settings.reference is not None and settings.reference.rtmrs is not None
    assert settings.reference.mr_td == frozenset({DEFAULT_MR_TD, bytes.fromhex(other)})
    assert settings.reference.rtmrs[2] == frozenset({BOOT_RTMRS[2], bytes.fromhex(other)})
    assert settings.reference.to_json()["rtmr2"] == sorted([BOOT_RTMRS[2].hex(), other])


@pytest.mark.parametrize(
    ("extra", "fragment"),
    [
        (["--mrtd-allowlist", "11" * 47], "--mrtd-allowlist: '" + "11" * 47 + "' is not 48 bytes"),
        (["--rtmr-allowlist", "3=" + "1" * 96], "INDEX 0, 1 or 2"),
        (["--rtmr-allowlist", "1" * 96], "is not INDEX=HEX"),
    ],
)
def test_a_bad_allow_list_item_is_refused(
    tmp_path: Path, admin_pem: Path, extra: list[str], fragment: str
) -> None:
    with pytest.raises(SettingsError, match=re.escape(fragment)):
        parse_settings([*base_args(tmp_path, admin_pem), *extra], {})


def test_any_measurement_is_said_out_loud(tmp_path: Path, admin_pem: Path) -> None:
    unpinned = base_args(tmp_path, admin_pem, pinned=False)
    for argv, env in (([*unpinned, "--any-measurement"], {}),
                      (unpinned, {"KBS_ANY_MEASUREMENT": "yes"})):  # fmt: skip
        settings = parse_settings(argv, env)
        assert settings.any_measurement is True and settings.reference is None
    partly = parse_settings([*unpinned, "--any-measurement", "--mrtd-allowlist", "11" * 48], {})
    assert partly.reference is not None
    assert partly.reference.to_json() == {
        "mr_td": ["11" * 48],
        "rtmr0": None,
        "rtmr1": None,
        "rtmr2": None,
    }
    with pytest.raises(SettingsError, match="KBS_ANY_MEASUREMENT='maybe' is not a boolean"):
        parse_settings(unpinned, {"KBS_ANY_MEASUREMENT": "maybe"})
    with pytest.raises(SettingsError, match="KBS_ANY_MEASUREMENT"):
        parse_settings(base_args(tmp_path, admin_pem), {"KBS_ANY_MEASUREMENT": ""})


def test_admin_pubkey_must_be_ed25519_pem(tmp_path: Path) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    pem = tmp_path / "ec.pem"
    pem.write_bytes(
        ec.generate_private_key(ec.SECP256R1())
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a key")
    for path, message in ((pem, "ed25519"), (garbage, "PEM")):
        args = base_args(tmp_path, path)
        with pytest.raises(SettingsError, match=message):
            parse_settings(args, {})


def test_a_root_ca_of_an_unknown_x509_version_is_refused(
    tmp_path: Path, admin_pem: Path, sim: Sim
) -> None:
    """cryptography's InvalidVersion (not a ValueError) is a refused setting too."""
    root = tmp_path / "v5.pem"
    root.write_bytes(with_x509_version(sim.root_ca_pem, 5))
    with pytest.raises(SettingsError, match="not a PEM certificate"):
        parse_settings([*base_args(tmp_path, admin_pem), "--trusted-root-ca", str(root)], {})


def test_storage_key_must_not_be_the_database(tmp_path: Path, admin_pem: Path) -> None:
    args = ["--db-path", str(tmp_path / "kbs.db"), "--storage-key-path", str(tmp_path / "kbs.db")]
    with pytest.raises(SettingsError, match="database"):
        parse_settings([*PINNED, *args, "--admin-pubkey", str(admin_pem)], {})


def test_main_exits_2_on_bad_settings(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--port", "3020"]) == 2
    assert "tdx-kbs: error:" in capsys.readouterr().err


def test_main_exits_2_on_a_policy_that_does_not_compile(
    tmp_path: Path, admin_pem: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.rego"
    bad.write_text("package policy\nallow if {\n")
    assert main([*base_args(tmp_path, admin_pem), "--policy", str(bad)]) == 2
    assert "--policy" in capsys.readouterr().err


def test_help(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["--help"])
    assert exited.value.code == 0
    out = capsys.readouterr().out
    for flag in ("--storage-key-path", "--admin-pubkey", "--trusted-root-ca", "--pccs-url",
                 "--mrtd-allowlist", "--rtmr-allowlist", "--any-measurement"):  # fmt: skip
        assert flag in out


def test_real_program_answers_auth_and_stops_on_sigterm(
    tmp_path: Path, admin_pem: Path, sim: Sim
) -> None:
    root = tmp_path / "root.pem"
    root.write_bytes(sim.root_ca_pem)
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KBS_", "PCCS_", "TDX_"))}
    env.update(PCCS_URL=sim.url, TDX_TRUSTED_ROOT_CA=str(root))
    program = Program(
        "tdx-kbs",
        [
            installed_program("tdx-kbs"),
            "--port",
            str(port),
            *base_args(tmp_path, admin_pem),
        ],
        env,
        f"http://127.0.0.1:{port}",
        "/kbs/v0/",
        tmp_path / "kbs.log",
    )
    help_run = subprocess.run(
        [installed_program("tdx-kbs"), "--help"], capture_output=True, text=True, check=False
    )
    assert help_run.returncode == 0 and "--admin-pubkey" in help_run.stdout
    program.start()
    try:
        request = urllib.request.Request(
            f"{program.url}/kbs/v0/auth",
            data=json.dumps(AUTH_BODY).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=10) as answer:
            assert answer.status == 200
            assert "kbs-session-id=" in answer.headers["Set-Cookie"]
            assert "HttpOnly" in answer.headers["Set-Cookie"]
            assert len(base64.b64decode(json.load(answer)["nonce"])) == 32
        assert program.proc is not None
        program.proc.send_signal(signal.SIGTERM)
        assert program.proc.wait(15) == 0
    finally:
        program.stop()
    log = program.log()
    assert "key broker ready" in log
    assert "Traceback" not in log


def test_main_exits_1_when_the_storage_key_cannot_be_created(
    tmp_path: Path, admin_pem: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = base_args(tmp_path, admin_pem)
    args[args.index("--storage-key-path") + 1] = str(tmp_path / "missing-dir" / "storage.key")
    assert main([*args, "--port", str(free_port())]) == 1
    err = capsys.readouterr().err
    assert "storage key" in err
    assert "Traceback" not in err


def test_connection_limit_flags(tmp_path: Path, admin_pem: Path) -> None:
    defaults = parse_settings(base_args(tmp_path, admin_pem), {}).limits
    assert (defaults.request_deadline, defaults.max_connections_per_client) == (30.0, 64)
    flagged = parse_settings(
        [*base_args(tmp_path, admin_pem), "--request-deadline", "7.5",
         "--max-connections-per-client", "2"],
        {},
    ).limits  # fmt: skip
    assert (flagged.request_deadline, flagged.max_connections_per_client) == (7.5, 2)
    assert flagged.max_body_bytes == defaults.max_body_bytes == 1024 * 1024
    with pytest.raises(SettingsError):
        parse_settings([*base_args(tmp_path, admin_pem), "--request-deadline", "-1"], {})
