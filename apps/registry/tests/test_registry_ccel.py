"""POST /register with a `ccel`: the real Google Cloud CCEL (tests/vectors) replayed against the
quote's RTMR0-2, the kernel and command-line pins, the bounds of the field, and what GET
/instance shows (real HTTP, real SQLite, every answer checked against the OpenAPI document).

The quotes are built here with the real Google Cloud quote's RTMR0-3 and verified by the fake
collateral cache (as every test of this suite); the end-to-end test (tests/test_ccel_flow.py)
registers a ccel against a quote the sim signed, through real DCAP verification."""

from __future__ import annotations

import base64
import hashlib
import sqlite3
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from registry_helpers import Instance, Running, error_of

from tdx_measure import boot_components, parse_ccel
from tdx_quote import build_quote, parse_quote
from tdx_registry.ccel_check import MAX_CCEL_BYTES, CcelPolicy, CcelPolicyError
from tdx_registry.settings import REGISTRY_MAX_BODY_BYTES, SettingsError, parse_settings
from tests.vectors import GCP_CCEL, GCP_QUOTE, read_vector

CCEL = read_vector(GCP_CCEL)
GCP_BODY = parse_quote(read_vector(GCP_QUOTE), allow_zero_padding=True).body
KERNEL = bytes.fromhex(
    "b1012372f421ad28c9f542e5a1b8c4d312a0d1c8637ffba5e52b632d4b632e50"
    "4da1b73964f6e8ba047bcd4f1d5a1dfe"
)
CMDLINE_PREFIX = "/syslinux/vmlinuz.A init=/usr/lib/systemd/systemd rootwait ro noresume"
ALL_FF = "ff" * 48


def with_rtmrs(body: dict[str, Any], **rtmrs: bytes) -> dict[str, Any]:
    """`body` with its quote's RTMR0-2 set to the Google Cloud quote's (or `rtmrs`)."""
    quote = parse_quote(base64.b64decode(body["attestation_quote"]))
    values = {f"rtmr{i}": getattr(GCP_BODY, f"rtmr{i}") for i in range(3)} | rtmrs
    rebuilt = replace(quote, body=replace(quote.body, **values))
    return {**body, "attestation_quote": base64.b64encode(build_quote(rebuilt)).decode()}


async def ccel_body(
    client: Any, instance: Instance, ccel: bytes | str | None = CCEL, **rtmrs: bytes
) -> dict[str, Any]:
    body = with_rtmrs(await instance.fresh(client), **rtmrs)
    if ccel is not None:
        body["ccel"] = ccel if isinstance(ccel, str) else base64.b64encode(ccel).decode()
    return body


def cmdline_digest() -> bytes:
    cmdline = boot_components(parse_ccel(CCEL)).cmdline
    assert cmdline is not None
    return cmdline.sha384


async def test_a_ccel_that_replays_is_stored_and_its_components_served(
    running: Running, tmp_path: Path
) -> None:
    instance = Instance()
    async with running() as client:
        response = await client.post("/register", json=await ccel_body(client, instance))
        assert response.status_code == 200, response.text
        record = (await client.get(f"/instance/{instance.pubkey.hex()}")).json()
    ccel = record["ccel"]
    assert ccel["events"] == 43
    components = ccel["components"]
    assert components["kernel"] == {
        "sha384": KERNEL.hex(),
        "path": "/syslinux/vmlinuz.A",
        "event": 40,
    }
    assert components["cmdline"]["text"].startswith(CMDLINE_PREFIX)
    assert components["cmdline"]["sha384"] == cmdline_digest().hex()
    assert components["initrds"] == []
    assert [b["path"] for b in components["boot_loaders"]] == [
        "\\EFI\\BOOT\\BOOTX64.EFI",
        "\\EFI\\BOOT\\grub-lakitu.efi",
    ]
    with sqlite3.connect(tmp_path / "registry.db") as conn:
        (stored,) = conn.execute("SELECT ccel FROM instances").fetchone()
    assert bytes(stored) == CCEL[:18101]  # the log without its 0xFF padding
    assert parse_ccel(bytes(stored)) == parse_ccel(CCEL)


async def test_a_registration_without_ccel_shows_null(running: Running) -> None:
    instance = Instance()
    async with running() as client:
        response = await client.post("/register", json=await instance.fresh(client))
        assert response.status_code == 200, response.text
        record = (await client.get(f"/instance/{instance.pubkey.hex()}")).json()
    assert record["ccel"] is None


@pytest.mark.parametrize("index", [0, 1, 2])
async def test_a_ccel_that_does_not_replay_is_401_and_nothing_is_stored(
    running: Running, index: int
) -> None:
    instance = Instance()
    other = {f"rtmr{index}": hashlib.sha384(b"another boot").digest()}
    async with running() as client:
        response = await client.post("/register", json=await ccel_body(client, instance, **other))
        assert response.status_code == 401
        assert error_of(response).startswith(
            f"ccel does not replay to the verified quote's RTMR{index}: "
        )
        assert (await client.get(f"/instance/{instance.pubkey.hex()}")).status_code == 404


async def test_pins_accept_the_measured_kernel_and_command_line(running: Running) -> None:
    policy = CcelPolicy(
        kernels=frozenset({KERNEL, bytes(48)}), cmdlines=frozenset({cmdline_digest()})
    )
    instance = Instance()
    async with running(ccel_policy=policy) as client:
        response = await client.post("/register", json=await ccel_body(client, instance))
    assert response.status_code == 200, response.text


@pytest.mark.parametrize(
    ("policy", "fragment"),
    [
        (CcelPolicy(kernels=frozenset({bytes(48)})), f"kernel {KERNEL.hex()} is not pinned"),
        (CcelPolicy(cmdlines=frozenset({bytes(48)})), "is not pinned (--pin-cmdline)"),
    ],
)
async def test_a_pin_refuses_another_kernel_or_command_line(
    running: Running, policy: CcelPolicy, fragment: str
) -> None:
    instance = Instance()
    async with running(ccel_policy=policy) as client:
        response = await client.post("/register", json=await ccel_body(client, instance))
        assert response.status_code == 401
        assert fragment in error_of(response)
        assert (await client.get(f"/instance/{instance.pubkey.hex()}")).status_code == 404


async def test_a_pin_requires_a_ccel(running: Running) -> None:
    instance = Instance()
    async with running(ccel_policy=CcelPolicy(kernels=frozenset({KERNEL}))) as client:
        response = await client.post("/register", json=await ccel_body(client, instance, None))
    assert response.status_code == 401
    assert error_of(response).startswith("ccel required")


@pytest.mark.parametrize(
    ("ccel", "fragment"),
    [
        ("not base64!", "not valid base64"),
        (base64.b64encode(CCEL[:5000]).decode(), "not a valid CCEL event log"),
        (base64.b64encode(b"\xff" * 64).decode(), "Spec ID"),
        (base64.b64encode(CCEL + b"\xff" * (MAX_CCEL_BYTES + 1 - len(CCEL))).decode(), "larger"),
        ("A" * (4 * ((MAX_CCEL_BYTES + 2) // 3) + 4), "larger"),
    ],
)
async def test_a_malformed_or_oversized_ccel_is_400(
    running: Running, ccel: str, fragment: str
) -> None:
    instance = Instance()
    async with running() as client:
        response = await client.post("/register", json=await ccel_body(client, instance, ccel))
    assert response.status_code == 400
    assert "ccel" in error_of(response) and fragment in error_of(response)


async def test_a_ccel_at_the_bound_is_accepted_under_the_default_body_limit(
    running: Running,
) -> None:
    """1 MiB decoded (the log, then 0xFF padding): the body is ~1.4 MB, under the default."""
    instance = Instance()
    padded = CCEL + b"\xff" * (MAX_CCEL_BYTES - len(CCEL))
    async with running() as client:
        body = await ccel_body(client, instance, padded)
        response = await client.post("/register", json=body)
    assert response.status_code == 200, response.text


def test_pin_flags_and_variables() -> None:
    kernel, cmdline = KERNEL.hex(), cmdline_digest().hex()
    parsed = parse_settings(["--any-measurement", "--pin-kernel", kernel, "--pin-kernel", ALL_FF,
                             "--pin-cmdline", cmdline], {})  # fmt: skip
    assert parsed.ccel_policy == CcelPolicy(
        kernels=frozenset({KERNEL, b"\xff" * 48}), cmdlines=frozenset({cmdline_digest()})
    )
    from_env = parse_settings(
        ["--any-measurement"],
        {"REGISTRY_PIN_KERNEL": f"{kernel}, {ALL_FF}", "REGISTRY_PIN_CMDLINE": cmdline},
    )
    assert from_env.ccel_policy == parsed.ccel_policy
    assert parse_settings(["--any-measurement"], {}).ccel_policy.requires_ccel is False
    assert (
        parse_settings(["--any-measurement"], {}).limits.max_body_bytes == REGISTRY_MAX_BODY_BYTES
    )
    for bad in ("ab" * 47, "zz" * 48, kernel + "00"):
        with pytest.raises(SettingsError, match="--pin-kernel"):
            parse_settings(["--any-measurement", "--pin-kernel", bad], {})
        with pytest.raises(SettingsError, match="--pin-cmdline"):
            parse_settings(["--any-measurement"], {"REGISTRY_PIN_CMDLINE": bad})
    with pytest.raises(CcelPolicyError):
        CcelPolicy(kernels=frozenset({b"short"}))
