"""The release path's caches and fast paths decide exactly as before: the compiled policy
bundle gives a fresh interpreter's decisions (allow, deny, undefined, error), an evaluation
never sees an earlier one's input, the store's policy head is read at every release (an upload
through another replica counts at once) while the text is read and compiled only when the head
changes, and the attestation token parser refuses what it refused."""

from __future__ import annotations

import hashlib
import json
import threading
from datetime import UTC, datetime
from typing import Any

import pytest
import regopy
from kbs_helpers import KBS, Broker, Guest, error_variant
from test_kbs_policy import allowed_input, readme_example, with_change

from tdx_kbs import DatabaseTarget, KbsStore, ResourcePolicy, default_policy_text
from tdx_kbs.broker import PolicySource
from tdx_kbs.store import PolicyHead, StoredPolicy
from tdx_kbs.tokens import TokenError, TokenIssuer
from tdx_kbs_protocol import TeeKeyPair

ADMIN = "ab" * 32
PATH = "tdx-identity/store-key/" + "cd" * 32

POLICIES = {
    "default": default_policy_text(),
    "readme": readme_example(),
    "no-default": "package policy\n\nallow if input.tdx.debug == false\n",
    "default-true": (
        "package policy\n\ndefault allow := true\n\nallow := false if input.tdx.debug\n"
    ),
    "string": 'package policy\n\nallow := "yes"\n',
    "object": "package policy\n\nallow := input.resource\n",
    "no-allow": "package policy\n\nx := 1\n",
    "else": "package policy\n\nallow := true if { input.tdx.debug == false } else := false\n",
    "partial-set": "package policy\n\nallow contains x if { x := input.tdx.debug }\n",
    "function": (
        "package policy\n\ndefault allow := false\n\nok(x) if x == false\n\n"
        "allow if ok(input.tdx.debug)\n"
    ),
    "helper-rule": (
        "package policy\n\ndefault allow := false\n\nallow if data.policy.helper\n\n"
        "helper if input.tdx.debug == false\n"
    ),
    "with": (
        "package policy\n\ndefault allow := false\n\ninner if input.tdx.debug == false\n\n"
        "allow if inner with input.tdx.debug as false\n"
    ),
    "conflict": (
        "package policy\n\n"
        "allow := true if input.resource.tag\n"
        "allow := false if input.resource.type\n"
    ),
}
INPUTS = {
    "allowed": allowed_input(),
    "empty": {},
    "debug": with_change("tdx.debug", True),
    "other-tag": with_change("resource.tag", "44" * 32),
    "no-type": {"resource": {"tag": "x"}, "tdx": {"debug": False}},
    "unpinned": with_change("reference", None),
}


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def fresh_decision(text: str, input_doc: dict[str, Any]) -> bool | str:
    """What a fresh interpreter that parses the module again answers (the broker's old way):
    True/False for a boolean `allow`, "undefined", "error", or "other" for another value."""
    interpreter = regopy.Interpreter()
    interpreter.add_module("policy.rego", text)
    interpreter.set_input_term(json.dumps(input_doc, ensure_ascii=False))
    output = interpreter.query("data.policy")
    if not output.ok():
        return "error"
    rendered = str(output)
    if rendered.strip() == "undefined":
        return "undefined"
    document = json.loads(rendered)["expressions"][0]
    allow = document.get("allow") if isinstance(document, dict) else None
    if allow is None:
        return "undefined"
    return allow if isinstance(allow, bool) else "other"


@pytest.mark.parametrize("name", sorted(POLICIES))
def test_bundle_decides_as_a_fresh_interpreter(name: str) -> None:
    """Every policy on every input, in an order that alternates allow and deny on one
    compiled policy: exactly the fresh interpreter's decision each time."""
    policy = ResourcePolicy.compile(POLICIES[name])
    seen: set[bool | str] = set()
    for _round in range(2):
        for input_name, doc in INPUTS.items():
            expected = fresh_decision(POLICIES[name], doc)
            seen.add(expected)
            assert policy.allows(doc) is (expected is True), (name, input_name, expected)
    assert seen, name


def test_the_table_covers_allow_deny_undefined_and_error() -> None:
    outcomes = {fresh_decision(text, doc) for text in POLICIES.values() for doc in INPUTS.values()}
    assert {True, False, "undefined", "error", "other"} <= outcomes


def test_an_input_that_does_not_convert_denies_and_never_reuses_the_previous_input() -> None:
    """The interpreter keeps its input between evaluations: an input regopy refuses must deny,
    not be answered with the previous (allowed) input."""
    policy = ResourcePolicy.compile(default_policy_text())
    assert policy.allows(allowed_input())
    bad = allowed_input()
    bad["identity"]["config"] = {"weird": object()}
    assert not policy.allows(bad)
    assert not policy.allows(with_change("tdx.debug", True))
    assert policy.allows(allowed_input())


def test_an_evaluation_error_does_not_stick_to_the_policy() -> None:
    policy = ResourcePolicy.compile(POLICIES["conflict"])
    assert not policy.allows(allowed_input())  # tag and type: conflicting values, an error
    assert policy.allows(INPUTS["no-type"])  # only the tag: allow is true
    assert not policy.allows(allowed_input())
    assert not policy.allows(INPUTS["empty"])  # neither: undefined


def test_concurrent_evaluations_on_one_policy_keep_their_own_input() -> None:
    policy = ResourcePolicy.compile(default_policy_text())
    wrong: list[str] = []

    def run(doc: dict[str, Any], expected: bool) -> None:
        for _ in range(40):
            if policy.allows(doc) is not expected:
                wrong.append(repr(expected))

    threads = [
        threading.Thread(target=run, args=(allowed_input(), True)),
        threading.Thread(target=run, args=(with_change("tdx.debug", True), False)),
        threading.Thread(target=run, args=(with_change("tdx.mr_td", "bb" * 48), False)),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert wrong == []


class CountingStore:
    """A KbsStore that counts full policy reads (the text)."""

    def __init__(self, store: KbsStore) -> None:
        self.store = store
        self.text_reads = 0

    async def current_policy(self) -> StoredPolicy | None:
        self.text_reads += 1
        return await self.store.current_policy()


async def test_release_state_reads_the_resource_and_the_policy_head(
    db_target: DatabaseTarget,
) -> None:
    store = await KbsStore.open(db_target)
    try:
        assert await store.release_state(PATH) == (None, None)
        at = datetime(2026, 12, 1, tzinfo=UTC)
        await store.put_resource(PATH, b"sealed", ADMIN, at)
        first = await store.set_policy("package policy\n", "01" * 32, ADMIN, at)
        resource, head = await store.release_state(PATH)
        assert resource is not None and (resource.sealed, resource.uploader) == (b"sealed", ADMIN)
        assert head == PolicyHead(first.version, "01" * 32)
        second = await store.set_policy("package policy\nx := 1\n", "02" * 32, ADMIN, at)
        assert (await store.release_state("a/b/c")) == (None, PolicyHead(second.version, "02" * 32))
    finally:
        await store.close()


async def test_policy_text_is_read_and_compiled_only_when_the_head_changes(
    tmp_path: Any,
) -> None:
    target = DatabaseTarget(sqlite_path=tmp_path / "kbs.db")
    store = await KbsStore.open(target)
    replica = await KbsStore.open(target)
    try:
        counting = CountingStore(store)
        fallback = ResourcePolicy.compile(default_policy_text())
        source = PolicySource(counting, fallback)  # type: ignore[arg-type]

        async def current() -> ResourcePolicy | None:
            return await source.for_head((await store.release_state(PATH))[1])

        assert await current() is fallback
        assert counting.text_reads == 0
        at = datetime(2026, 12, 1, tzinfo=UTC)
        deny_all = "package policy\n\ndefault allow := false\n"
        await replica.set_policy(deny_all, sha256(deny_all), ADMIN, at)  # another replica
        first = await current()
        assert first is not None and first.text == deny_all and counting.text_reads == 1
        assert not first.allows(allowed_input())
        for _ in range(3):
            assert await current() is first
        assert counting.text_reads == 1
        await replica.set_policy(default_policy_text(), fallback.sha256, ADMIN, at)
        second = await current()
        assert second is fallback, "a text compiled before is not compiled again"
        assert counting.text_reads == 2
        await replica.set_policy("package policy\nallow if {", "22" * 32, ADMIN, at)
        assert await current() is None, "a stored policy that does not compile denies"
        assert await current() is None
        await replica.set_policy(deny_all, sha256(deny_all), ADMIN, at)
        assert await current() is first
        assert counting.text_reads == 5
    finally:
        await replica.close()
        await store.close()


async def test_an_upload_through_another_replica_is_seen_by_the_next_release(
    broker: Broker,
) -> None:
    guest = Guest(broker.sim, owner=broker.admin)
    assert (await broker.put(guest.store_key_path, b"k" * 32)).status_code == 200
    replica = await KbsStore.open(broker.settings.database)
    tee = TeeKeyPair.generate()
    try:
        async with broker.guest_client() as client:
            assert (await guest.attest(client, tee)).status_code == 200
            url = f"{KBS}/resource/{guest.store_key_path}"
            assert tee.decrypt((await client.get(url)).json()) == b"k" * 32
            at = datetime.now(UTC)
            await replica.set_policy(
                "package policy\n\ndefault allow := false\n", "0" * 64, ADMIN, at
            )
            refused = await client.get(url)
            assert refused.status_code == 401 and error_variant(refused) == "PolicyDeny"
            await replica.set_policy(default_policy_text(), "1" * 64, ADMIN, at)
            assert tee.decrypt((await client.get(url)).json()) == b"k" * 32
    finally:
        await replica.close()


@pytest.mark.parametrize(
    "mangle",
    [
        lambda t: t.replace(".", "..", 1),
        lambda t: t + "=",
        lambda t: t.replace("-", "+").replace("_", "/") if ("-" in t or "_" in t) else t + "+",
        lambda t: "\u0661" + t,
        lambda t: t.split(".")[0] + ".." + t.split(".")[2],
        lambda t: t + " ",
        lambda t: t + "\n",
    ],
    ids=["empty-part", "padding", "std-alphabet", "arabic-digit", "empty-body", "space", "newline"],
)
def test_token_parts_outside_base64url_are_refused(mangle: Any) -> None:
    issuer = TokenIssuer(60)
    token = issuer.issue({"tdx": {}, "identity": {}}, now=1000)
    assert issuer.verify(token, now=1000)["exp"] == 1060
    with pytest.raises(TokenError):
        issuer.verify(mangle(token), now=1000)
