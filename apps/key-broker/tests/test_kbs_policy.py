"""The Rego resource policy: the shipped default's every condition, the README's example
allow-list policy, and the fail-closed rules (evaluation errors and non-boolean results deny)."""

from __future__ import annotations

import copy
import json
import os
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from kbs_helpers import KBS, Broker, Guest, error_variant

from tdx_kbs import PolicyCompileError, ResourcePolicy, default_policy_text
from tdx_kbs_protocol import TeeKeyPair

README = Path(__file__).resolve().parents[1] / "README.md"
INSTANCE = "11" * 32
OWNER = "22" * 32


def allowed_input() -> dict[str, Any]:
    """An input the shipped policy allows: the instance's own store key, uploaded by its
    measured owner, on an up-to-date non-debug TD."""
    return {
        "resource": {
            "path": f"tdx-identity/store-key/{INSTANCE}",
            "repository": "tdx-identity",
            "type": "store-key",
            "tag": INSTANCE,
            "uploader": OWNER,
        },
        "tdx": {
            "tcb_status": "UpToDate",
            "advisory_ids": [],
            "debug": False,
            "mr_td": "aa" * 48,
            "rtmr0": "00" * 48,
            "rtmr1": "01" * 48,
            "rtmr2": "02" * 48,
            "rtmr3": "03" * 48,
        },
        "identity": {"instance_pubkey": INSTANCE, "operator": "33" * 32, "owner": OWNER},
        "reference": {
            "mr_td": ["a0" * 48, "aa" * 48],
            "rtmr0": ["00" * 48],
            "rtmr1": ["01" * 48],
            "rtmr2": ["02" * 48, "f2" * 48],
        },
        "admin_pubkey": OWNER,
    }


def with_change(path: str, value: object) -> dict[str, Any]:
    doc = allowed_input()
    target = doc
    *parents, leaf = path.split(".")
    for name in parents:
        target = target[name]
    target[leaf] = value
    return doc


def test_default_policy_allows_its_own_instance() -> None:
    assert ResourcePolicy.compile(default_policy_text()).allows(allowed_input())


@pytest.mark.parametrize(
    ("path", "value"),
    [
        ("resource.repository", "other"),
        ("resource.type", "secret"),
        ("resource.tag", "44" * 32),
        ("resource.uploader", "55" * 32),
        ("resource.uploader", None),
        ("identity.owner", None),
        ("identity.owner", "55" * 32),
        ("identity.instance_pubkey", "44" * 32),
        ("tdx.tcb_status", "OutOfDate"),
        ("tdx.tcb_status", "SWHardeningNeeded"),
        ("tdx.debug", True),
        ("tdx.debug", "false"),
        ("tdx.mr_td", "bb" * 48),
        ("tdx.rtmr0", "bb" * 48),
        ("tdx.rtmr1", "bb" * 48),
        ("tdx.rtmr2", "bb" * 48),
        ("tdx.mr_td", "AA" * 48),
        ("reference.mr_td", []),
        ("reference.rtmr1", ["bb" * 48]),
        ("reference.rtmr2", "02" * 48),
    ],
)
def test_default_policy_denies_each_condition(path: str, value: object) -> None:
    assert not ResourcePolicy.compile(default_policy_text()).allows(with_change(path, value))


def test_default_policy_denies_missing_claims() -> None:
    policy = ResourcePolicy.compile(default_policy_text())
    for part in ("tdx", "identity", "resource", "reference"):
        doc = allowed_input()
        del doc[part]
        assert not policy.allows(doc)
    for key in ("mr_td", "rtmr0", "rtmr1", "rtmr2"):
        doc = allowed_input()
        del doc["reference"][key]
        assert not policy.allows(doc), f"reference without {key}"
        doc = allowed_input()
        del doc["tdx"][key]
        assert not policy.allows(doc), f"claims without {key}"
    assert not policy.allows({})


def test_default_policy_accepts_any_image_only_where_the_reference_is_null() -> None:
    """--any-measurement: a null reference accepts any image; a null list any value of that
    register while the others stay pinned."""
    policy = ResourcePolicy.compile(default_policy_text())
    unpinned = with_change("reference", None)
    unpinned["tdx"]["mr_td"] = "bb" * 48
    unpinned["tdx"]["rtmr1"] = "bb" * 48
    assert policy.allows(unpinned)
    partly = with_change("reference.rtmr1", None)
    partly["tdx"]["rtmr1"] = "bb" * 48
    assert policy.allows(partly)
    partly["tdx"]["mr_td"] = "bb" * 48
    assert not policy.allows(partly)
    assert not policy.allows(with_change("reference", {}))
    assert not policy.allows(with_change("reference", "any"))


def readme_example() -> str:
    """The example policy of the README (the rego block after `<!-- example-policy -->`)."""
    text = README.read_text()
    match = re.search(r"<!-- example-policy -->\s*```rego\n(.*?)```", text, re.S)
    assert match is not None, "the README has no example policy"
    return match.group(1)


def test_readme_example_allow_lists() -> None:
    policy = ResourcePolicy.compile(readme_example())
    doc = allowed_input()
    assert policy.allows(doc)
    assert not policy.allows(with_change("tdx.mr_td", "bb" * 48))
    assert not policy.allows(with_change("tdx.rtmr1", "bb" * 48))
    assert not policy.allows(with_change("tdx.rtmr2", "bb" * 48))
    assert not policy.allows(with_change("tdx.debug", True))
    assert not policy.allows(with_change("resource.uploader", "55" * 32))
    other = copy.deepcopy(doc)
    other["tdx"]["rtmr0"] = "ff" * 48
    assert policy.allows(other), "RTMR0 is not in the example's allow-lists"


@pytest.mark.parametrize(
    "rego",
    [
        'package policy\n\nallow := "yes"\n',
        "package policy\n\nallow := input.resource\n",
        "package policy\n\nallow := 1\n",
        "package policy\n\nx := 1\n",
    ],
    ids=["string", "object", "number", "no-allow"],
)
def test_non_boolean_allow_denies(rego: str) -> None:
    assert not ResourcePolicy.compile(rego).allows(allowed_input())


def test_evaluation_error_denies(caplog: pytest.LogCaptureFixture) -> None:
    rego = (
        "package policy\n\n"
        "allow := true if input.resource.tag\n"
        "allow := false if input.resource.type\n"
    )
    policy = ResourcePolicy.compile(rego)
    assert not policy.allows(allowed_input())
    assert any("evaluation failed" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize(
    "rego",
    ["package policy\nallow if {\n", "package other\n\ndefault allow := false\n", "\x00"],
    ids=["syntax", "other-package", "nul"],
)
def test_compile_refuses(rego: str) -> None:
    with pytest.raises(PolicyCompileError):
        ResourcePolicy.compile(rego)


def test_compile_refuses_oversized() -> None:
    with pytest.raises(PolicyCompileError, match="larger"):
        ResourcePolicy.compile("package policy\n" + "# x\n" * 100_000)


async def test_uploaded_policy_takes_effect(broker: Broker) -> None:
    """An allow-list policy uploaded over the default denies a TD whose MRTD it does not name,
    then serves it once it does."""
    guest = Guest(broker.sim, owner=broker.admin)
    secret = os.urandom(32)
    assert (await broker.put(guest.store_key_path, secret)).status_code == 200
    mr_td = guest.platform.td_report(bytes(64)).mr_td.hex()
    deny = readme_example().replace('"' + "aa" * 48 + '"', '"' + "bb" * 48 + '"')
    assert (await broker.set_policy(deny)).status_code == 200
    tee = TeeKeyPair.generate()
    async with broker.guest_client() as client:
        assert (await guest.attest(client, tee)).status_code == 200
        refused = await client.get(f"{KBS}/resource/{guest.store_key_path}")
        assert refused.status_code == 401
        assert error_variant(refused) == "PolicyDeny"
        body = guest.platform.td_report(bytes(64))
        allow = (
            readme_example()
            .replace('"' + "aa" * 48 + '"', f'"{mr_td}"')
            .replace('"' + "01" * 48 + '"', f'"{body.rtmr1.hex()}"')
            .replace('"' + "02" * 48 + '"', f'"{body.rtmr2.hex()}"')
        )
        assert (await broker.set_policy(allow)).status_code == 200
        got = await client.get(f"{KBS}/resource/{guest.store_key_path}")
        assert got.status_code == 200, got.text
        assert tee.decrypt(got.json()) == secret
    assert len(await broker.store.policy_history()) == 2


async def test_startup_policy_file_is_used_until_an_upload(start: Any, tmp_path: Path) -> None:
    open_all = "package policy\n\ndefault allow := false\n\nallow if input.tdx.debug == false\n"
    async with start(initial_policy=open_all) as broker:
        guest = Guest(broker.sim, owner=None)
        assert (await broker.put("any/thing/here", b"s3cret")).status_code == 200
        tee = TeeKeyPair.generate()
        async with broker.guest_client() as client:
            assert (await guest.attest(client, tee)).status_code == 200
            got = await client.get(f"{KBS}/resource/any/thing/here")
            assert got.status_code == 200, got.text
            assert tee.decrypt(got.json()) == b"s3cret"
            assert (await broker.set_policy(default_policy_text())).status_code == 200
            denied = await client.get(f"{KBS}/resource/any/thing/here")
            assert denied.status_code == 401


async def test_stored_policy_that_no_longer_compiles_denies(broker: Broker) -> None:
    """A policy row altered in the database (it no longer compiles) denies every release."""
    guest = Guest(broker.sim, owner=broker.admin)
    await broker.put(guest.store_key_path, os.urandom(32))
    at = datetime.now(UTC)
    await broker.store.set_policy("package policy\nallow if {", "00" * 32, "00" * 32, at)
    async with broker.guest_client() as client:
        assert (await guest.attest(client)).status_code == 200
        got = await client.get(f"{KBS}/resource/{guest.store_key_path}")
    assert got.status_code == 401
    assert error_variant(got) == "PolicyDeny"


# Strings that need JSON escapes (a quote, a backslash, control characters), non-ASCII ones,
# and strings that look like escapes: regopy's `set_input` compared the first kind wrongly.
TRICKY_STRINGS = ["plain", 'a"b', "a\\b", 'a\\"b', "\\u00e9", "é", "𝄞", "\n", "\t", "\x01"]
TRICKY_STRINGS += ["\x7f", "\u2028", "`", "'", "a/b", ""]


def literals(text: str) -> list[str]:
    """The Rego literals that denote `text`: the escaped string and, where one can hold it
    (no backtick, no control character), the raw string."""
    found = [json.dumps(text, ensure_ascii=False)]
    if "`" not in text and all(ord(c) >= 0x20 for c in text):
        found.append(f"`{text}`")
    return found


@pytest.mark.parametrize("text", TRICKY_STRINGS, ids=[repr(t) for t in TRICKY_STRINGS])
def test_an_input_string_equals_exactly_its_own_literals(text: str) -> None:
    for literal in literals(text):
        policy = ResourcePolicy.compile(
            f"package policy\ndefault allow := false\nallow if {{ input.s == {literal} }}\n"
        )
        decisions = {other: policy.allows({"s": other}) for other in TRICKY_STRINGS}
        assert decisions == {other: other == text for other in TRICKY_STRINGS}, literal


def test_an_input_that_is_not_json_denies(caplog: pytest.LogCaptureFixture) -> None:
    policy = ResourcePolicy.compile("package policy\nallow := true\n")
    assert policy.allows({"s": "x"})
    assert not policy.allows({"s": float("nan")})
    assert not policy.allows({"s": b"bytes"})
    reasons = [str(getattr(record, "reason", "")) for record in caplog.records]
    assert len(reasons) == 2 and all("not a JSON document" in r for r in reasons), reasons


def test_a_unicode_escape_in_a_policy_equals_no_input_string() -> None:
    """As the README says: rego-cpp keeps `"\\u00e9"` escaped, so it is not `é`."""
    policy = ResourcePolicy.compile(
        'package policy\ndefault allow := false\nallow if { input.s == "\\u00e9" }\n'
    )
    assert not any(policy.allows({"s": other}) for other in TRICKY_STRINGS)
