"""The command line: usage errors exit 2, failed checks and requests exit 1 with the reason
on stderr (and in "error" with --json), `verify` against the real registry prints the facts,
`keygen` writes a private key once."""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import sqlite3
import stat
from collections.abc import AsyncIterator
from contextlib import closing
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from tdxctl_support import (
    REGISTRY_REFUSAL,
    SimTd,
    altered_log,
    raw,
    reappraise_refusing,
    served_registry,
)

from tdx_registry import DatabaseTarget, Settings, create_app
from tdx_service_kit.testing import free_port, serve, with_x509_version
from tdx_sim import DEFAULT_MR_TD
from tdxctl import load_private_key
from tdxctl.cli import Defaults, build_parser, main

OPERATOR = Ed25519PrivateKey.generate()
OWNER = Ed25519PrivateKey.generate()
_names = itertools.count()

FACT_KEYS = {
    "verified",
    "instance_pubkey",
    "ppid",
    "tcb_status",
    "advisory_ids",
    "mr_td",
    "rtmr0",
    "rtmr1",
    "rtmr2",
    "rtmr3",
    "operator",
    "owner",
    "helpers",
    "workload_events",
    "ssh_host_key",
    "verified_at",
    "registry_refused",
}


async def run(*argv: str, env: dict[str, str] | None = None) -> int:
    """`tdxctl argv...` in a worker thread (it runs its own event loop)."""
    return await asyncio.to_thread(main, list(argv), env or {})


@pytest.fixture
async def registry_url(tmp_path: Path, td: SimTd, sim_url: str) -> AsyncIterator[str]:
    """The real registry, trusting the sim's root, holding the delegated TD's record."""
    td.delegated(OPERATOR, OWNER)
    async with served_registry(tmp_path / "registry.db", td, sim_url) as url:
        yield url


@pytest.fixture
def root_file(tmp_path: Path, td: SimTd) -> Path:
    path = tmp_path / "root.pem"
    path.write_bytes(td.platform.root_ca_pem)
    return path


def trust_flags(root_file: Path, sim_url: str) -> list[str]:
    return ["--trusted-root-ca", str(root_file), "--pccs-url", sim_url]


def stdout_json(capsys: pytest.CaptureFixture[str]) -> tuple[dict[str, Any], str]:
    out, err = capsys.readouterr()
    lines = out.splitlines()
    assert len(lines) == 1, out
    parsed: dict[str, Any] = json.loads(lines[0])
    return parsed, err


async def test_verify_prints_the_facts_of_a_registered_instance(
    registry_url: str,
    td: SimTd,
    root_file: Path,
    sim_url: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    base = ["verify", "--registry", registry_url, "--instance", td.pubkey.hex()]
    expect = ["--expect-operator", raw(OPERATOR).hex(), "--expect-owner", raw(OWNER).hex()]
    assert await run(*base, *expect, *trust_flags(root_file, sim_url), "--json") == 0
    facts, _ = stdout_json(capsys)
    assert set(facts) == FACT_KEYS
    assert facts["verified"] is True
    assert facts["registry_refused"] is None
    assert facts["tcb_status"] == "UpToDate"
    assert facts["owner"] == raw(OWNER).hex()
    assert facts["helpers"][0]["role"] == "podman"
    assert facts["workload_events"][0]["transition"] == "configure"
    assert facts["ssh_host_key"] == td.log.ssh_host_key

    assert await run(*base, *trust_flags(root_file, sim_url)) == 0
    out, _ = capsys.readouterr()
    assert out.splitlines()[0] == "verified"
    assert "tcb_status     UpToDate (advisories: none)" in out
    assert f"owner          {raw(OWNER).hex()}" in out
    assert f"ssh_host_key   {td.log.ssh_host_key}" in out


async def test_a_record_the_registry_refused_fails_unless_accepted_and_is_never_hidden(
    registry_url: str,
    td: SimTd,
    tmp_path: Path,
    root_file: Path,
    sim_url: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The registry's re-appraisal refused the record (its policy no longer accepts UpToDate)
    while the caller's policy accepts the quote: `verify` exits 1 naming the registry's
    verdict; with --accept-registry-refusal it exits 0, warns on stderr, shows the reason on
    stdout and in "registry_refused"."""
    await reappraise_refusing(tmp_path / "registry.db", sim_url, root_file)
    base = ["verify", "--registry", registry_url, "--instance", td.pubkey.hex(),
            *trust_flags(root_file, sim_url)]  # fmt: skip

    assert await run(*base, "--json") == 1
    failure, err = stdout_json(capsys)
    assert failure["check"] == "registry_verdict"
    assert failure["registry_refused"].startswith(REGISTRY_REFUSAL)
    assert REGISTRY_REFUSAL in failure["error"]
    assert "verification failed (registry_verdict)" in err and REGISTRY_REFUSAL in err
    assert await run(*base) == 1
    out, err = capsys.readouterr()
    assert out == "" and REGISTRY_REFUSAL in err

    assert await run(*base, "--accept-registry-refusal", "--json") == 0
    facts, err = stdout_json(capsys)
    assert set(facts) == FACT_KEYS
    assert facts["verified"] is True and facts["tcb_status"] == "UpToDate"
    assert facts["registry_refused"].startswith(REGISTRY_REFUSAL)
    assert "warning: the registry refused this record" in err and REGISTRY_REFUSAL in err
    assert await run(*base, "--accept-registry-refusal") == 0
    out, err = capsys.readouterr()
    assert out.splitlines()[0] == "verified"
    assert f"registry       REFUSED: {REGISTRY_REFUSAL}" in out
    assert "warning: the registry refused this record" in err


async def test_verify_refuses_a_v1_record_unless_accept_v1(
    tmp_path: Path,
    td: SimTd,
    root_file: Path,
    sim_url: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A registry in compatibility mode holding a v1 registration (no challenge, no proof of
    possession, v1 identity signatures): `verify` fails the binding check, `--accept-v1` passes."""
    td.delegated(OPERATOR, OWNER, v1=True)
    settings = Settings(
        database=DatabaseTarget(sqlite_path=tmp_path / "registry-v1.db"),
        pccs_url=sim_url,
        trusted_root_ca_pem=td.platform.root_ca_pem,
        rate_limit=None,
        accept_v1_registrations=True,
    )
    body = td.record_object(v1=True)
    for field in ("ssh_host_key", "binding_version", "challenge", "proof_of_possession"):
        del body[field]
    app = create_app(settings, name=f"tdxctl-registry-{next(_names)}")
    async with serve(app) as url:
        async with httpx.AsyncClient(base_url=url) as client:
            answer = await client.post("/register", json=body)
            assert answer.status_code == 200, answer.text
        base = ["verify", "--registry", url, "--instance", td.pubkey.hex()]
        assert await run(*base, *trust_flags(root_file, sim_url), "--json") == 1
        failure, _ = stdout_json(capsys)
        assert failure["check"] == "binding" and "v1 registration" in failure["error"]
        accepted = [*base, *trust_flags(root_file, sim_url), "--accept-v1", "--json"]
        assert await run(*accepted) == 0
        facts, _ = stdout_json(capsys)
        assert facts["verified"] is True and facts["owner"] == raw(OWNER).hex()


async def test_verify_takes_its_defaults_from_the_environment(
    registry_url: str,
    td: SimTd,
    root_file: Path,
    sim_url: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    env = {
        "TDXCTL_REGISTRY_URL": registry_url,
        "TDXCTL_TRUSTED_ROOT_CA": str(root_file),
        "TDXCTL_PCCS_URL": sim_url,
    }
    assert await run("verify", "--instance", td.pubkey.hex(), "--json", env=env) == 0
    facts, _ = stdout_json(capsys)
    assert facts["instance_pubkey"] == td.pubkey.hex()


async def test_verify_with_another_expected_owner_fails_with_the_check_named(
    registry_url: str,
    td: SimTd,
    root_file: Path,
    sim_url: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    stranger = raw(Ed25519PrivateKey.generate()).hex()
    argv = ["verify", "--registry", registry_url, "--instance", td.pubkey.hex()]
    argv += ["--expect-owner", stranger, *trust_flags(root_file, sim_url)]
    assert await run(*argv, "--json") == 1
    failure, err = stdout_json(capsys)
    assert failure["check"] == "expectation"
    assert stranger in failure["error"]
    assert "verification failed (expectation)" in err
    assert await run(*argv) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert "not the expected" in err


async def test_verify_refuses_a_record_whose_stored_event_log_was_altered(
    registry_url: str,
    td: SimTd,
    tmp_path: Path,
    root_file: Path,
    sim_url: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The host rewrote the registry's database after the registration: the served record's
    event log no longer replays to the quote's RTMR3. `verify` exits 1 naming check
    `event_log`, in its readable output and with --json."""
    with closing(sqlite3.connect(tmp_path / "registry.db")) as db, db:
        changed = db.execute(
            "UPDATE instances SET event_log = ? WHERE pubkey = ?",
            (altered_log(td.log), td.pubkey.hex()),
        ).rowcount
    assert changed == 1
    argv = ["verify", "--registry", registry_url, "--instance", td.pubkey.hex()]
    argv += trust_flags(root_file, sim_url)

    assert await run(*argv) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert "tdxctl: verification failed (event_log): " in err
    assert "does not verify" in err
    assert "Traceback" not in err

    assert await run(*argv, "--json") == 1
    failure, err = stdout_json(capsys)
    assert set(failure) == {"error", "check"}
    assert failure["check"] == "event_log"
    assert "does not verify" in failure["error"]
    assert f"verification failed (event_log): {failure['error']}" in err


async def test_verify_without_the_callers_root_refuses_the_sim_quote(
    registry_url: str, td: SimTd, sim_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Intel's root (the default) does not sign the sim's PCK: the registry's own verdict,
    made with the sim root, counts for nothing."""
    argv = ["verify", "--registry", registry_url, "--instance", td.pubkey.hex()]
    assert await run(*argv, "--pccs-url", sim_url, "--json") == 1
    failure, _ = stdout_json(capsys)
    assert failure["check"] == "quote"


async def test_the_policy_flags_reach_the_verifier(
    registry_url: str,
    td: SimTd,
    root_file: Path,
    sim_url: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    argv = ["verify", "--registry", registry_url, "--instance", td.pubkey.hex()]
    argv += [*trust_flags(root_file, sim_url), "--json"]
    assert await run(*argv, "--mrtd-allowlist", f"{'00' * 48},{DEFAULT_MR_TD.hex()}") == 0
    capsys.readouterr()
    assert await run(*argv, "--mrtd-allowlist", "00" * 48) == 1
    failure, _ = stdout_json(capsys)
    assert (failure["check"], "MRTD" in failure["error"]) == ("quote", True)
    assert await run(*argv, "--accept-tcb-status", "OutOfDate,SWHardeningNeeded") == 1
    failure, _ = stdout_json(capsys)
    assert "TCB status UpToDate is not accepted" in failure["error"]


async def test_an_unknown_instance_is_a_failed_request(
    registry_url: str, root_file: Path, sim_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["verify", "--registry", registry_url, "--instance", "11" * 32]
    assert await run(*argv, *trust_flags(root_file, sim_url)) == 1
    _, err = capsys.readouterr()
    assert "answered 404: no such instance" in err


async def test_a_registry_that_is_down_fails_with_a_clear_message(
    capsys: pytest.CaptureFixture[str],
) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    env = {"TDXCTL_REGISTRY_URL": url}
    assert await run("verify", "--instance", "22" * 32, env=env) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert f"tdxctl: cannot reach the registry at {url}" in err
    assert "Traceback" not in err
    assert await run("verify", "--instance", "22" * 32, "--json", env=env) == 1
    failure, _ = stdout_json(capsys)
    assert set(failure) == {"error"}
    assert failure["error"].startswith(f"cannot reach the registry at {url}")


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["bogus"],
        ["verify"],
        ["verify", "--registry", "http://x", "--instance", "zz"],
        ["verify", "--registry", "http://x", "--instance", "00 " + "00" * 31],
        ["verify", "--registry", "http://x", "--instance", "00" * 31],
        ["verify", "--registry", "ftp://x", "--instance", "00" * 32],
        ["verify", "--registry", "http://x", "--instance", "00" * 32, "--unknown"],
        ["verify", "--registry", "http://x", "--instance", "00" * 32,
         "--accept-tcb-status", "Fine"],
        ["verify", "--registry", "http://x", "--instance", "00" * 32, "--mrtd-allowlist", "00"],
        ["verify", "--registry", "http://x", "--instance", "00" * 32, "--trusted-root-ca", "/no"],
        ["operator", "register", "--identity", "http://x"],
        ["owner", "register", "--identity", "http://x", "--key", "k"],
        ["workload", "configure", "--identity", "http://x", "--key", "k", "--image", "i"],
        ["workload", "configure", "--identity", "http://x", "--key", "k", "--image", "i",
         "--port", "0"],
        ["workload", "expose", "--identity", "http://x", "--key", "k"],
        ["ssh", "--identity", "http://x", "--key", "k"],
        ["ssh", "--identity", "http://x", "--registry", "http://y", "--key", "k",
         "--ssh-port", "70000"],
        ["keygen"],
    ],
)  # fmt: skip
async def test_usage_errors_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert await run(*argv) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith("tdxctl")
    assert "Traceback" not in err
    assert await run(*argv, "--json") == 2
    out, _ = capsys.readouterr()
    assert "error" in json.loads(out)


async def test_a_root_ca_of_an_unknown_x509_version_is_a_usage_error(
    tmp_path: Path, td: SimTd, capsys: pytest.CaptureFixture[str]
) -> None:
    """cryptography's InvalidVersion (not a ValueError) is refused like any other non-PEM."""
    root = tmp_path / "v5.pem"
    root.write_bytes(with_x509_version(td.platform.root_ca_pem, 5))
    argv = ["verify", "--registry", "http://x", "--instance", "00" * 32]
    assert await run(*argv, "--trusted-root-ca", str(root)) == 2
    _, err = capsys.readouterr()
    assert f"{root} is not a PEM certificate" in err
    assert "Traceback" not in err


HELP_COMMANDS = [
    [],
    ["keygen"],
    ["operator"],
    ["operator", "register"],
    ["owner"],
    ["owner", "register"],
    ["verify"],
    ["workload"],
    ["workload", "configure"],
    ["workload", "expose"],
    ["ssh"],
    ["registry"],
    ["registry", "audit"],
]
HELP_TESTED_ELSEWHERE = [["kbs"], ["kbs", "put-key"], ["kbs", "set-policy"], ["get"]]
"""The kbs commands' help is tested in test_kbs.py, `get`'s in test_get.py."""


@pytest.mark.parametrize("argv", HELP_COMMANDS)
async def test_every_command_has_help(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert await run(*argv, "--help") == 0
    out, _ = capsys.readouterr()
    assert out.startswith(" ".join(["usage: tdxctl", *argv]))


def _command_paths(parser: argparse.ArgumentParser, path: list[str]) -> list[list[str]]:
    """`path` and every command under it, as the words that name it."""
    paths = [path]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                paths += _command_paths(sub, [*path, name])
    return paths


def test_the_help_tests_cover_every_command_of_the_parser() -> None:
    """A command added to the parser without a help test fails here."""
    parsed = sorted(_command_paths(build_parser(Defaults()), []))
    assert parsed == sorted(HELP_COMMANDS + HELP_TESTED_ELSEWHERE)


def test_keygen_writes_a_private_key_once(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "owner.pem"
    assert main(["keygen", str(path)], {}) == 0
    out, _ = capsys.readouterr()
    key = load_private_key(path)
    assert out == raw(key).hex() + "\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    before = path.read_bytes()

    assert main(["keygen", str(path), "--json"], {}) == 1
    failure, err = stdout_json(capsys)
    assert "already exists" in failure["error"]
    assert "never overwritten" in err
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["owner.pem"]

    other = tmp_path / "operator.pem"
    assert main(["--json", "keygen", str(other)], {}) == 0
    shown, _ = stdout_json(capsys)
    assert shown == {"pubkey": raw(load_private_key(other)).hex(), "file": str(other)}


def test_keygen_does_not_follow_a_link_into_place(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "elsewhere"
    link = tmp_path / "key.pem"
    link.symlink_to(target)
    assert main(["keygen", str(link)], {}) == 1
    assert not target.exists()
    _, err = capsys.readouterr()
    assert "already exists" in err


def test_a_key_file_others_can_read_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "loose.pem"
    path.write_bytes(
        OWNER.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    path.chmod(0o644)
    argv = ["owner", "register", "--identity", "http://127.0.0.1:1", "--key", str(path)]
    assert main([*argv, "--token", "t"], {}) == 1
    _, err = capsys.readouterr()
    assert "accessible by others" in err
    path.chmod(0o600)
    (tmp_path / "junk.pem").write_bytes(b"not a key")
    (tmp_path / "junk.pem").chmod(0o600)
    argv[-1] = str(tmp_path / "junk.pem")
    assert main([*argv, "--token", "t"], {}) == 1
    _, err = capsys.readouterr()
    assert "not an unencrypted PEM private key" in err
