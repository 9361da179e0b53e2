"""Settings: defaults from API.md, environment variables, flags winning over both."""

from __future__ import annotations

from pathlib import Path

import pytest

from tdx_identity.settings import measured_settings, parse_settings
from tdx_measure import ConfigEvent


def test_defaults_follow_the_api_contract() -> None:
    settings = parse_settings([], {})
    assert (settings.host, settings.port) == ("127.0.0.1", 3001)
    assert settings.storage_path == Path("/mnt")
    assert settings.mock_tdx_url is None
    assert settings.registry_url == "http://localhost:3000"


def test_environment_variables_are_read() -> None:
    env = {
        "STORAGE_PATH": "/var/lib/id",
        "MOCK_TDX_URL": "http://127.0.0.1:3010/",
        "REGISTRY_URL": "http://reg:3000",
    }
    settings = parse_settings([], env)
    assert settings.storage_path == Path("/var/lib/id")
    assert settings.mock_tdx_url == "http://127.0.0.1:3010"
    assert settings.registry_url == "http://reg:3000"


def test_flags_win_over_the_environment() -> None:
    env = {"STORAGE_PATH": "/env", "MOCK_TDX_URL": "http://env", "REGISTRY_URL": "http://env"}
    settings = parse_settings(
        [
            "--storage-path=/flag",
            "--mock-tdx-url=http://flag",
            "--registry-url=http://flag",
            "--host=0.0.0.0",
            "--port=4001",
        ],
        env,
    )
    assert settings.storage_path == Path("/flag")
    assert settings.mock_tdx_url == "http://flag"
    assert settings.registry_url == "http://flag"
    assert (settings.host, settings.port) == ("0.0.0.0", 4001)


@pytest.mark.parametrize("port", ["0", "65536", "http"])
def test_bad_port_is_a_usage_error(port: str) -> None:
    with pytest.raises(SystemExit) as exit_info:
        parse_settings(["--port", port], {})
    assert exit_info.value.code == 2


def test_help_lists_every_setting(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        parse_settings(["--help"], {})
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for flag in ("--host", "--port", "--storage-path", "--mock-tdx-url", "--registry-url"):
        assert flag in out


def test_unsequenced_requests_are_refused_unless_the_flag_or_its_variable_says_so() -> None:
    assert parse_settings([], {}).accept_unsequenced_requests is False
    for off in ("0", "false", "No", "off"):
        env = {"ACCEPT_UNSEQUENCED_REQUESTS": off}
        assert parse_settings([], env).accept_unsequenced_requests is False
    for on in ("1", "true", "YES", "on"):
        assert parse_settings([], {"ACCEPT_UNSEQUENCED_REQUESTS": on}).accept_unsequenced_requests
    assert parse_settings(["--accept-unsequenced-requests"], {}).accept_unsequenced_requests


def test_v1_signatures_are_refused_unless_the_flag_or_its_boolean_variable_says_so() -> None:
    assert parse_settings([], {}).accept_v1_signatures is False
    assert parse_settings([], {"ACCEPT_V1_SIGNATURES": "false"}).accept_v1_signatures is False
    assert parse_settings([], {"ACCEPT_V1_SIGNATURES": "0"}).accept_v1_signatures is False
    assert parse_settings([], {"ACCEPT_V1_SIGNATURES": "yes"}).accept_v1_signatures
    assert parse_settings(["--accept-v1-signatures"], {}).accept_v1_signatures


@pytest.mark.parametrize("value", ["", "disabled", "2", "y"])
def test_another_value_of_accept_v1_signatures_is_a_usage_error(
    value: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        parse_settings([], {"ACCEPT_V1_SIGNATURES": value})
    assert exit_info.value.code == 2
    assert "ACCEPT_V1_SIGNATURES" in capsys.readouterr().err


@pytest.mark.parametrize("value", ["", "disabled", "2", "enable", "tru"])
def test_another_value_of_accept_unsequenced_requests_stops_the_start_naming_it(
    value: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        parse_settings([], {"ACCEPT_UNSEQUENCED_REQUESTS": value})
    assert exit_info.value.code == 2
    assert "ACCEPT_UNSEQUENCED_REQUESTS" in capsys.readouterr().err


def test_the_measured_settings_name_what_changes_behaviour_and_no_secret() -> None:
    settings = parse_settings(
        ["--ssh-port=2300", "--workload-cap-add=", "--accept-unsequenced-requests"],
        {
            "REGISTRY_URL": "https://user:hunter2@registry.example:3000",
            "MOCK_TDX_URL": "http://sim:3010",
        },
    )
    measured = measured_settings(settings)
    assert measured["registry_url"] == "https://registry.example:3000"
    assert "hunter2" not in "".join(measured.values())
    assert measured["mock_tdx_url"] == "http://sim:3010"
    assert measured["ssh_port"] == "2300"
    assert measured["accept_unsequenced_requests"] == "true"
    assert measured["hardening_cap_add"] == ""
    assert measured["hardening_no_new_privileges"] == "true"
    assert measured["store_key_path"] == str(settings.store_key_path)
    assert ConfigEvent.of(measured).get("workload_port") == "8080"


def test_connection_limit_flags() -> None:
    defaults = parse_settings([], {}).limits
    assert (defaults.request_deadline, defaults.max_connections_per_client) == (30.0, 64)
    flagged = parse_settings(
        ["--request-deadline", "12", "--max-connections-per-client", "4"], {}
    ).limits
    assert (flagged.request_deadline, flagged.max_connections_per_client) == (12.0, 4)
    with pytest.raises(SystemExit):
        parse_settings(["--max-connections-per-client", "0"], {})
