"""Settings from flags and environment, and the `tdx-registry` command itself."""

from __future__ import annotations

import asyncio
import json
import os
import pickle
import re
import signal
import socket
import subprocess
import sys
import time
from functools import partial
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from tdx_measure import ExecutablePin, MeasurementPolicy
from tdx_registry import INTEL_PCS_URL, Settings, SettingsError, parse_settings
from tdx_registry.app import build_reappraisal_verifier
from tdx_registry.cli import main, worker_app
from tdx_service_kit.testing import with_x509_version
from tdx_verify import DEFAULT_ACCEPTED_TCB_STATUSES

MRTD, RTMR0, RTMR1, RTMR2 = ("1" * 96, "2" * 96, "3" * 96, "4" * 96)
PINNED = ["--mrtd-allowlist", MRTD, "--rtmr-allowlist", f"0={RTMR0},1={RTMR1}",
          "--rtmr-allowlist", f"2={RTMR2}"]  # fmt: skip


def parse(argv: list[str], env: dict[str, str]) -> Settings:
    """`parse_settings` for the tests of other settings: any TD image accepted, unless the
    test's own environment says otherwise."""
    return parse_settings(argv, {"REGISTRY_ANY_MEASUREMENT": "1", **env})


def test_defaults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    settings = parse([], {})
    assert settings.database.sqlite_path == tmp_path / "registry.db"
    assert settings.pccs_url == INTEL_PCS_URL
    assert settings.trusted_root_ca_pem is None
    assert settings.skip_tdx_auth is False
    assert settings.policy.accepted_tcb_statuses == DEFAULT_ACCEPTED_TCB_STATUSES
    assert settings.policy.allow_debug is False
    assert (settings.host, settings.port) == ("127.0.0.1", 3000)
    assert settings.rate_limit is not None
    assert settings.measurement_policy == MeasurementPolicy()
    assert settings.allow_missing_event_log is False


def test_allow_missing_event_log_from_the_flag_or_the_environment() -> None:
    assert parse(["--allow-missing-event-log"], {}).allow_missing_event_log is True
    env = {"REGISTRY_ALLOW_MISSING_EVENT_LOG": "yes"}
    assert parse([], env).allow_missing_event_log is True
    assert parse(["--require-event-log"], {}).allow_missing_event_log is False
    for argv, env in (
        (["--allow-missing-event-log", "--require-event-log"], {}),
        (["--allow-missing-event-log"], {"REGISTRY_REQUIRE_EVENT_LOG": "1"}),
    ):
        with pytest.raises(SettingsError, match="contradicts"):
            parse(argv, env)


BUILD_ID = "ab" * 20
SHA384 = "cd" * 48


def test_measurement_flags() -> None:
    settings = parse(
        ["--pin-helper", f"podman={BUILD_ID}", "--pin-helper", f"podman={SHA384}",
         "--pin-helper", "oci-runtime=0102", "--allow-image", "registry.example/app:1",
         "--allow-image", "docker.io/library/nginx@sha256:" + "0" * 64, "--require-event-log"],
        {"REGISTRY_PIN_HELPERS": "conmon=ff", "REGISTRY_ALLOWED_IMAGES": "other"},
    )  # fmt: skip
    policy = settings.measurement_policy
    assert dict(policy.executables or {}) == {
        "podman": ExecutablePin(
            build_ids=frozenset({bytes.fromhex(BUILD_ID)}),
            sha384s=frozenset({bytes.fromhex(SHA384)}),
        ),
        "oci-runtime": ExecutablePin(build_ids=frozenset({b"\x01\x02"})),
    }
    assert policy.allowed_images == frozenset(
        {
            "registry.example/app:1",
            "docker.io/library/nginx@sha256:" + "0" * 64,
        }
    )
    assert settings.allow_missing_event_log is False


def test_measurement_environment() -> None:
    settings = parse(
        [],
        {
            "REGISTRY_PIN_HELPERS": f"podman={BUILD_ID}, gocryptfs={SHA384}",
            "REGISTRY_ALLOWED_IMAGES": "a:1,b:2",
            "REGISTRY_REQUIRE_EVENT_LOG": "yes",
        },
    )
    policy = settings.measurement_policy
    assert policy.executables is not None
    assert policy.executables["podman"].build_ids == {bytes.fromhex(BUILD_ID)}
    assert policy.executables["gocryptfs"].sha384s == {bytes.fromhex(SHA384)}
    assert policy.allowed_images == frozenset({"a:1", "b:2"})
    assert settings.allow_missing_event_log is False
    assert parse([], {"REGISTRY_REQUIRE_EVENT_LOG": "0"}).allow_missing_event_log is False


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (["--pin-helper", "podman"], "not ROLE=HEX"),
        (["--pin-helper", f"={BUILD_ID}"], "not ROLE=HEX"),
        (["--pin-helper", "podman="], "not ROLE=HEX"),
        (["--pin-helper", "podman=xyz"], "not hex"),
        (["--pin-helper", "Podman=abcd"], "role"),
        (["--pin-helper", "podman=" + "ab" * 65], "build ID"),
        (["--allow-image", "two words"], "not an image reference"),
        (["--allow-image", "a\x00b"], "not an image reference"),
    ],
)
def test_bad_measurement_settings_are_refused(argv: list[str], fragment: str) -> None:
    with pytest.raises(SettingsError, match=fragment):
        parse(argv, {})


def test_environment_names_of_api_md(tmp_path: Path) -> None:
    env = {
        "REGISTRY_DB_PATH": str(tmp_path / "x.db"),
        "PCCS_URL": "http://127.0.0.1:3010/",
        "SKIP_TDX_AUTH": "1",
    }
    settings = parse([], env)
    assert settings.database.sqlite_path == tmp_path / "x.db"
    assert settings.pccs_url == "http://127.0.0.1:3010"
    assert settings.skip_tdx_auth is True


@pytest.mark.parametrize(("value", "expected"), [("0", False), ("false", False), (" OFF ", False),
                                                 ("no", False), ("yes", True), ("true", True),
                                                 ("1", True), ("On", True)])  # fmt: skip
def test_skip_tdx_auth_values(value: str, expected: bool) -> None:
    assert parse([], {"SKIP_TDX_AUTH": value}).skip_tdx_auth is expected


@pytest.mark.parametrize(
    "name",
    [
        "SKIP_TDX_AUTH",
        "REGISTRY_REQUIRE_EVENT_LOG",
        "REGISTRY_ALLOW_MISSING_EVENT_LOG",
        "REGISTRY_ANY_MEASUREMENT",
        "REGISTRY_ACCEPT_V1_REGISTRATIONS",
    ],
)
@pytest.mark.parametrize("value", ["disabled", "", "enabled", "2", "tru", "y"])
def test_a_boolean_setting_that_is_not_a_boolean_stops_start_up(name: str, value: str) -> None:
    """`SKIP_TDX_AUTH=disabled` once turned skipping ON: every unknown word is refused now."""
    with pytest.raises(SettingsError, match=f"{name}=.* is not a boolean"):
        parse([], {name: value})
    with pytest.raises(SettingsError, match=f"{name}=.* is not a boolean"):
        parse(["--skip-tdx-auth", "--require-event-log"], {name: value})


def test_flags_win_over_environment(tmp_path: Path) -> None:
    env = {"REGISTRY_DB_PATH": "/nonexistent/a.db", "PCCS_URL": "http://env"}
    settings = parse(
        ["--db-path", str(tmp_path / "b.db"), "--pccs-url", "http://flag", "--port", "4000"], env
    )
    assert settings.database.sqlite_path == tmp_path / "b.db"
    assert settings.pccs_url == "http://flag"
    assert settings.port == 4000


def test_postgres_url_selects_postgres() -> None:
    settings = parse([], {"REGISTRY_DB_URL": "postgresql://u@h/db"})
    assert settings.database.postgres_url == "postgresql://u@h/db"
    assert settings.database.sqlite_path is None
    with pytest.raises(SettingsError):
        parse(["--db-url", "sqlite:///x"], {})


def _write_root_ca(path: Path) -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(x509.oid.NameOID.COMMON_NAME, "test root")])
    now = __import__("datetime").datetime.now(__import__("datetime").UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name)
        .public_key(key.public_key()).serial_number(1)
        .not_valid_before(now).not_valid_after(now.replace(year=now.year + 1))
        .sign(key, hashes.SHA256())
    )  # fmt: skip
    pem = cert.public_bytes(serialization.Encoding.PEM)
    path.write_bytes(pem)
    return pem


def test_trusted_root_ca_is_read_once_and_checked(tmp_path: Path) -> None:
    pem = _write_root_ca(tmp_path / "root.pem")
    settings = parse([], {"TDX_TRUSTED_ROOT_CA": str(tmp_path / "root.pem")})
    assert settings.trusted_root_ca_pem == pem
    (tmp_path / "bad.pem").write_text("not a certificate")
    with pytest.raises(SettingsError, match="not a PEM certificate"):
        parse(["--trusted-root-ca", str(tmp_path / "bad.pem")], {})
    with pytest.raises(SettingsError, match="cannot read"):
        parse(["--trusted-root-ca", str(tmp_path / "missing.pem")], {})
    # A version other than v1 or v3 (cryptography's InvalidVersion, not a ValueError).
    (tmp_path / "v5.pem").write_bytes(with_x509_version(pem, 5))
    with pytest.raises(SettingsError, match="not a PEM certificate"):
        parse(["--trusted-root-ca", str(tmp_path / "v5.pem")], {})


def test_policy_flags() -> None:
    settings = parse(
        ["--accept-tcb-status", "UpToDate,OutOfDate", "--allow-debug",
         "--mrtd-allowlist", "11" * 48, "--mrtd-allowlist", "22" * 48],
        {},
    )  # fmt: skip
    assert settings.policy.accepted_tcb_statuses == frozenset({"UpToDate", "OutOfDate"})
    assert settings.policy.allow_debug is True
    assert settings.policy.mrtd_allowlist == frozenset({b"\x11" * 48, b"\x22" * 48})
    assert parse(["--accept-tcb-status", "any"], {}).policy.accepted_tcb_statuses is None


@pytest.mark.parametrize(
    "argv",
    [
        ["--accept-tcb-status", "UpToDat"],
        ["--accept-tcb-status", "any,UpToDate"],
        ["--mrtd-allowlist", "11" * 47],
        ["--mrtd-allowlist", "xyz"],
        ["--port", "70000"],
        ["--port", "0"],
        ["--log-level", "chatty"],
        ["--rate-limit-burst", "0"],
        ["--max-body-bytes", "0"],
    ],
)
def test_bad_settings_are_refused(argv: list[str]) -> None:
    with pytest.raises(SettingsError):
        parse(argv, {})


def test_bad_settings_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--port", "-1"]) == 2
    assert "--port must be 1..65535" in capsys.readouterr().err


def test_a_multiprocess_metrics_directory_that_is_missing_exits_2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("REGISTRY_ANY_MEASUREMENT", "1")
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path / "missing"))
    argv = ["--db-path", str(tmp_path / "r.db"), "--log-key-path", str(tmp_path / "log.key")]
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        assert main(argv) == 2
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
    assert "PROMETHEUS_MULTIPROC_DIR is not a directory" in capsys.readouterr().err


def test_help_lists_flags_and_the_verify_quote_command(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for flag in ("--db-path", "--pccs-url", "--trusted-root-ca", "--skip-tdx-auth",
                 "--accept-tcb-status", "--mrtd-allowlist", "--require-event-log",
                 "--pin-helper", "--allow-image", "verify-quote", "--rtmr-allowlist",
                 "--any-measurement", "--allow-missing-event-log"):  # fmt: skip
        assert flag in out


def test_verify_quote_subcommand_delegates(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    quote = tmp_path / "q.bin"
    quote.write_bytes(b"garbage")
    collateral = tmp_path / "c.json"
    collateral.write_text("{}")
    status = main(["verify-quote", "--quote", str(quote), "--collateral", str(collateral)])
    assert status == 1
    assert json.loads(capsys.readouterr().out)["valid"] is False


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def test_serve_answers_and_stops_gracefully_on_sigterm(tmp_path: Path) -> None:
    port = _free_port()
    env = {
        **os.environ,
        "SKIP_TDX_AUTH": "1",
        "REGISTRY_ANY_MEASUREMENT": "1",
        "REGISTRY_DB_PATH": str(tmp_path / "r.db"),
    }
    proc = subprocess.Popen(
        [sys.executable, "-c", "import sys; from tdx_registry.cli import main; sys.exit(main())",
         "serve", "--port", str(port)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                response = httpx.get(f"http://127.0.0.1:{port}/instance/{'ab' * 32}", timeout=1)
                break
            except httpx.TransportError:
                assert proc.poll() is None, proc.communicate()
                assert time.monotonic() < deadline, "registry did not start"
                time.sleep(0.1)
        assert response.status_code == 404
        assert response.json() == {"error": "no such instance"}
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0
    lines = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
    assert lines, err
    assert any("SKIP_TDX_AUTH IS ON" in line["message"] for line in lines)
    assert (tmp_path / "r.db").exists()


def test_read_cache_defaults_and_flags() -> None:
    defaults = parse([], {})
    assert (defaults.read_cache_ttl, defaults.read_cache_max_bytes) == (1.0, 32 * 1024 * 1024)
    flags = parse(["--read-cache-ttl", "0.25", "--read-cache-max-bytes", "4096"], {})
    assert (flags.read_cache_ttl, flags.read_cache_max_bytes) == (0.25, 4096)
    assert parse(["--read-cache-ttl", "0"], {}).read_cache_ttl == 0.0
    assert parse([], {"REGISTRY_READ_CACHE_TTL": "2.5"}).read_cache_ttl == 2.5
    env_and_flag = parse(["--read-cache-ttl", "0"], {"REGISTRY_READ_CACHE_TTL": "2.5"})
    assert env_and_flag.read_cache_ttl == 0.0


@pytest.mark.parametrize(
    ("argv", "env"),
    [
        (["--read-cache-ttl", "-1"], {}),
        (["--read-cache-ttl", "nan"], {}),
        (["--read-cache-ttl", "inf"], {}),
        ([], {"REGISTRY_READ_CACHE_TTL": "soon"}),
        ([], {"REGISTRY_READ_CACHE_TTL": "-0.5"}),
        (["--read-cache-max-bytes", "-1"], {}),
    ],
)
def test_bad_read_cache_settings_are_refused(argv: list[str], env: dict[str, str]) -> None:
    with pytest.raises(SettingsError, match=r"read-cache|READ_CACHE"):
        parse(argv, env)


def test_without_a_measurement_policy_the_registry_refuses_to_start() -> None:
    with pytest.raises(SettingsError, match="no measurement policy for the TD image") as info:
        parse_settings([], {})
    for missing in ("--mrtd-allowlist", "--rtmr-allowlist 0=HEX", "--rtmr-allowlist 2=HEX"):
        assert missing in str(info.value)
    with pytest.raises(SettingsError, match=r"--rtmr-allowlist 1=HEX\b"):
        parse_settings(["--mrtd-allowlist", MRTD, "--rtmr-allowlist", f"0={RTMR0},2={RTMR2}"], {})
    with pytest.raises(SettingsError, match="no measurement policy"):
        parse_settings([], {"REGISTRY_ANY_MEASUREMENT": "0"})


def test_a_pinned_td_image_from_flags_or_environment() -> None:
    settings = parse_settings(PINNED, {})
    assert settings.any_measurement is False
    assert settings.policy.mrtd_allowlist == frozenset({bytes.fromhex(MRTD)})
    assert settings.policy.rtmr_allowlist == (
        frozenset({bytes.fromhex(RTMR0)}),
        frozenset({bytes.fromhex(RTMR1)}),
        frozenset({bytes.fromhex(RTMR2)}),
    )
    env = {
        "REGISTRY_MRTD_ALLOWLIST": f"{MRTD},{'5' * 96}",
        "REGISTRY_RTMR_ALLOWLIST": f"0={RTMR0},1={RTMR1},2={RTMR2},2={'6' * 96}",
    }
    from_env = parse_settings([], env)
    assert from_env.policy.mrtd_allowlist == frozenset(
        {bytes.fromhex(MRTD), bytes.fromhex("5" * 96)}
    )
    assert from_env.policy.rtmr_allowlist is not None
    assert from_env.policy.rtmr_allowlist[2] == frozenset(
        {bytes.fromhex(RTMR2), bytes.fromhex("6" * 96)}
    )


def test_any_measurement_says_so_and_may_still_pin_some_registers() -> None:
    settings = parse_settings(["--any-measurement", "--mrtd-allowlist", MRTD], {})
    assert settings.any_measurement is True
    assert settings.policy.mrtd_allowlist == frozenset({bytes.fromhex(MRTD)})
    assert settings.policy.rtmr_allowlist is None


@pytest.mark.parametrize(
    ("item", "fragment"),
    [
        ("3=" + "1" * 96, "INDEX 0, 1 or 2"),
        ("1" * 96, "not INDEX=HEX"),
        ("0=" + "1" * 94, "not 48 bytes of hex"),
        ("0=" + "1" * 95 + " ", "not 48 bytes of hex"),
        ("0=" + "g" * 96, "not 48 bytes of hex"),
    ],
)
def test_a_bad_rtmr_allow_list_is_refused(item: str, fragment: str) -> None:
    with pytest.raises(SettingsError, match=fragment):
        parse_settings(["--any-measurement", "--rtmr-allowlist", item], {})


def test_challenge_settings_from_flags_or_environment() -> None:
    defaults = parse([], {})
    assert (defaults.challenges.ttl, defaults.challenges.max_outstanding) == (60, 10_000)
    assert defaults.accept_v1_registrations is False
    assert parse(["--challenge-ttl", "5"], {}).challenges.ttl == 5
    assert parse([], {"REGISTRY_CHALLENGE_TTL": "600"}).challenges.ttl == 600
    assert parse(["--challenge-ttl", "30"], {"REGISTRY_CHALLENGE_TTL": "90"}).challenges.ttl == 30
    capped = parse(["--max-outstanding-challenges", "7"], {})
    assert capped.challenges.max_outstanding == 7
    assert parse(["--accept-v1-registrations"], {}).accept_v1_registrations is True
    env = {"REGISTRY_ACCEPT_V1_REGISTRATIONS": "on"}
    assert parse([], env).accept_v1_registrations is True


@pytest.mark.parametrize(
    ("argv", "env", "fragment"),
    [
        (["--challenge-ttl", "4"], {}, "5 to 600 seconds"),
        (["--challenge-ttl", "601"], {}, "5 to 600 seconds"),
        ([], {"REGISTRY_CHALLENGE_TTL": "1m"}, "not a whole number"),
        (["--max-outstanding-challenges", "0"], {}, "at least 1"),
        ([], {"REGISTRY_ACCEPT_V1_REGISTRATIONS": "maybe"}, "REGISTRY_ACCEPT_V1_REGISTRATIONS"),
        ([], {"REGISTRY_ACCEPT_V1_REGISTRATIONS": ""}, "REGISTRY_ACCEPT_V1_REGISTRATIONS"),
    ],
)
def test_bad_challenge_settings_are_refused(
    argv: list[str], env: dict[str, str], fragment: str
) -> None:
    with pytest.raises(SettingsError, match=fragment):
        parse(argv, env)


def test_tcb_grace_and_advisory_deny_list_from_flags_or_environment() -> None:
    """Parsed with tdx-verify's helpers into the registry's `Policy`; a flag wins over its
    variable; IDs are kept upper-case, as the TCB info writes them."""
    assert (parse([], {}).policy.tcb_grace_days, parse([], {}).policy.denied_advisory_ids) == (
        None,
        frozenset(),
    )
    flags = parse(
        ["--tcb-grace-days", "30", "--deny-advisory", "INTEL-SA-00837,intel-sa-00615",
         "--deny-advisory", "INTEL-SA-00001"],
        {"REGISTRY_TCB_GRACE_DAYS": "7", "REGISTRY_DENY_ADVISORIES": "INTEL-SA-00002"},
    )  # fmt: skip
    assert flags.policy.tcb_grace_days == 30
    assert flags.policy.denied_advisory_ids == {
        "INTEL-SA-00837",
        "INTEL-SA-00615",
        "INTEL-SA-00001",
    }
    env = parse(
        [], {"REGISTRY_TCB_GRACE_DAYS": "7", "REGISTRY_DENY_ADVISORIES": " INTEL-SA-00837, "}
    )
    assert env.policy.tcb_grace_days == 7
    assert env.policy.denied_advisory_ids == frozenset({"INTEL-SA-00837"})


@pytest.mark.parametrize(
    ("argv", "env", "fragment"),
    [
        (["--tcb-grace-days", "0"], {}, "--tcb-grace-days"),
        (["--tcb-grace-days", "366"], {}, "--tcb-grace-days"),
        (["--tcb-grace-days", "-3"], {}, "--tcb-grace-days"),
        (["--tcb-grace-days", "1.5"], {}, "--tcb-grace-days"),
        ([], {"REGISTRY_TCB_GRACE_DAYS": "forever"}, "--tcb-grace-days"),
        (["--deny-advisory", "CVE-2024-0001"], {}, "--deny-advisory"),
        ([], {"REGISTRY_DENY_ADVISORIES": "INTEL-SA-1"}, "--deny-advisory"),
        (["--reappraise-every", "0.5"], {}, "--reappraise-every"),
        (["--reappraise-every", "nan"], {}, "--reappraise-every"),
        (["--reappraise-every", "1e15"], {}, "--reappraise-every"),
        ([], {"REGISTRY_REAPPRAISE_EVERY": "31622401"}, "--reappraise-every"),
        ([], {"REGISTRY_REAPPRAISE_EVERY": "soon"}, "REGISTRY_REAPPRAISE_EVERY"),
        (["--reappraise-every", "60"], {"SKIP_TDX_AUTH": "1"}, "SKIP_TDX_AUTH"),
    ],
)
def test_bad_policy_and_reappraisal_settings_are_refused(
    argv: list[str], env: dict[str, str], fragment: str
) -> None:
    with pytest.raises(SettingsError, match=fragment):
        parse(argv, env)


def test_the_longest_reappraise_period_builds_the_passes_verifier() -> None:
    """At the bound (366 days) the background passes' verifier is built (past it, its
    collateral max age overflowed timedelta at start, a traceback)."""
    settings = parse(["--reappraise-every", "31622400"], {})
    assert settings.reappraise_every == 31_622_400.0
    verifier = build_reappraisal_verifier(settings, settings.reappraise_every)
    asyncio.run(verifier.aclose())


def test_reappraise_every_from_flag_or_environment() -> None:
    assert parse([], {}).reappraise_every is None
    assert parse(["--reappraise-every", "3600"], {}).reappraise_every == 3600.0
    assert parse([], {"REGISTRY_REAPPRAISE_EVERY": "90"}).reappraise_every == 90.0
    flag = parse(["--reappraise-every", "5"], {"REGISTRY_REAPPRAISE_EVERY": "90"})
    assert flag.reappraise_every == 5.0


def test_reappraise_refuses_bad_flags_and_skip_tdx_auth_with_exit_2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("REGISTRY_ANY_MEASUREMENT", "1")
    monkeypatch.setenv("REGISTRY_DB_PATH", str(tmp_path / "r.db"))
    assert main(["reappraise", "--tcb-grace-days", "0"]) == 2
    assert "--tcb-grace-days" in capsys.readouterr().err
    monkeypatch.setenv("SKIP_TDX_AUTH", "1")
    assert main(["reappraise"]) == 2
    assert "SKIP_TDX_AUTH" in capsys.readouterr().err
    assert not (tmp_path / "r.db").exists()


def test_help_lists_the_reappraisal_and_policy_flags(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["reappraise", "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    texts = (
        "tdx-registry reappraise",
        "--tcb-grace-days",
        "--deny-advisory",
        "--reappraise-every",
        "REGISTRY_TCB_GRACE_DAYS",
        "REGISTRY_DENY_ADVISORIES",
    )
    for text in texts:
        assert text in out


def test_log_key_path_and_origin_defaults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    sqlite = parse(["--db-path", str(tmp_path / "data" / "r.db")], {})
    assert sqlite.effective_log_key_path == tmp_path / "data" / "registry-log.key"
    assert sqlite.log_origin == "tdx-registry/log"
    postgres = parse(["--db-url", "postgresql://u@h/db"], {})
    assert postgres.effective_log_key_path == tmp_path / "registry-log.key"


def test_log_key_path_and_origin_from_flags_or_environment(tmp_path: Path) -> None:
    env = {"REGISTRY_LOG_KEY_PATH": str(tmp_path / "env.key"), "REGISTRY_LOG_ORIGIN": "env/log"}
    from_env = parse([], env)
    assert (from_env.effective_log_key_path, from_env.log_origin) == (
        tmp_path / "env.key",
        "env/log",
    )
    flags = ["--log-key-path", str(tmp_path / "flag.key"), "--log-origin", "reg.example/log"]
    from_flags = parse(flags, env)
    assert (from_flags.effective_log_key_path, from_flags.log_origin) == (
        tmp_path / "flag.key",
        "reg.example/log",
    )


@pytest.mark.parametrize("origin", ["a b", "a+b", "tab\there", "é/log", "x" * 256, "new\nline"])
def test_a_bad_log_origin_is_refused(origin: str) -> None:
    with pytest.raises(SettingsError, match="--log-origin"):
        parse(["--log-origin", origin], {})
    with pytest.raises(SettingsError, match="--log-origin"):
        parse([], {"REGISTRY_LOG_ORIGIN": origin})


def test_connection_limit_flags() -> None:
    defaults = parse([], {}).limits
    assert (defaults.request_deadline, defaults.max_connections_per_client) == (30.0, 64)
    flagged = parse(["--request-deadline", "5", "--max-connections-per-client", "3"], {}).limits
    assert (flagged.request_deadline, flagged.max_connections_per_client) == (5.0, 3)
    assert flagged.max_body_bytes == defaults.max_body_bytes
    for argv in (["--request-deadline", "0"], ["--max-connections-per-client", "0"]):
        with pytest.raises(SettingsError):
            parse(argv, {})


def test_workers_from_flag_or_environment_and_their_app_factory_pickles() -> None:
    assert parse([], {}).workers == 1
    assert parse(["--workers", "2"], {}).workers == 2
    assert parse([], {"REGISTRY_WORKERS": "3"}).workers == 3
    assert parse(["--workers", "4"], {"REGISTRY_WORKERS": "3"}).workers == 4
    settings = parse(["--workers", "2", "--reappraise-every", "60", *PINNED], {})
    # Each worker gets the factory by pickle (multiprocessing's spawn): the settings must travel.
    factory = pickle.loads(pickle.dumps(partial(worker_app, settings)))
    assert factory.args == (settings,)


@pytest.mark.parametrize(
    ("argv", "env", "fragment"),
    [
        (["--workers", "0"], {}, "--workers must be 1 to 64, not 0"),
        (["--workers", "65"], {}, "--workers must be 1 to 64, not 65"),
        (["--workers", "two"], {}, "--workers: 'two' is not a whole number"),
        ([], {"REGISTRY_WORKERS": "-1"}, "REGISTRY_WORKERS must be 1 to 64, not -1"),
    ],
)
def test_bad_worker_counts_are_refused(argv: list[str], env: dict[str, str], fragment: str) -> None:
    with pytest.raises(SettingsError, match=re.escape(fragment)):
        parse(argv, env)
