"""Events: validation on construction, the canonical serialization, strict decoding."""

from __future__ import annotations

import dataclasses
import hashlib
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st
from measure_strategies import events

from tdx_measure import (
    DOMAIN_TAG,
    BootEvent,
    ConfigEvent,
    EventLogError,
    ExecutableEvent,
    IdentityEvent,
    SshHostKeyEvent,
    TlsKeyEvent,
    WorkloadEvent,
    decode_event,
    encode_event,
    event_digest,
    event_from_object,
    event_to_object,
    ssh_ed25519_line,
)
from tdx_measure._events import has_control_character

BOOT = BootEvent(boot_nonce=bytes(range(32)), timestamp=1_700_000_000)
EXE = ExecutableEvent(
    role="podman",
    path="/usr/bin/podman",
    sha384=bytes(48),
    build_id=bytes.fromhex("0e3835b7c5a7ab386fb021e7000ce875cf429c9d"),
    machine="EM_X86_64",
)
WORK = WorkloadEvent(
    transition="expose",
    image="docker.io/library/nginx:1.25",
    image_id="sha256:" + "ab" * 32,
    persist_dirs=("/data", "/srv/\u00e9t\u00e9"),
    port=8080,
)

SSH_KEY = bytes(range(32))
SSH_LINE = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIAABAgMEBQYHCAkKCwwNDg8QERITFBUWFxgZGhscHR4f"
SSH = SshHostKeyEvent(public_key=SSH_LINE)
TLS = TlsKeyEvent(spki_sha256=bytes(range(32)))
OWNER = IdentityEvent(role="owner", pubkey=bytes(range(32, 64)))
CONFIG = ConfigEvent.of({"ssh_port": "2222"})


def test_boot_event_encodes_to_the_documented_bytes() -> None:
    expected = (
        b"tdx-measure/event/v1\n"
        b'{"boot_nonce":"000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f",'
        b'"timestamp":1700000000,"type":"boot"}'
    )
    assert encode_event(BOOT) == expected


def test_executable_event_encodes_to_the_documented_bytes() -> None:
    expected = (
        b"tdx-measure/event/v1\n"
        b'{"build_id":"0e3835b7c5a7ab386fb021e7000ce875cf429c9d","machine":"EM_X86_64",'
        b'"path":"/usr/bin/podman","role":"podman","sha384":"' + b"00" * 48 + b'",'
        b'"type":"executable"}'
    )
    assert encode_event(EXE) == expected


def test_ssh_host_key_line_is_the_openssh_encoding() -> None:
    assert ssh_ed25519_line(SSH_KEY) == SSH_LINE


def test_ssh_host_key_event_encodes_to_the_documented_bytes() -> None:
    expected = (
        b'tdx-measure/event/v1\n{"public_key":"' + SSH_LINE.encode() + b'","type":"ssh_host_key"}'
    )
    assert encode_event(SSH) == expected


def test_tls_key_event_encodes_to_the_documented_bytes() -> None:
    expected = (
        b"tdx-measure/event/v1\n"
        b'{"spki_sha256":"000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f",'
        b'"type":"tls_key"}'
    )
    assert encode_event(TLS) == expected
    assert decode_event(expected) == TLS


def test_tls_key_event_of_an_spki_measures_its_sha256() -> None:
    spki = b"\x30\x59" + bytes(89)
    assert TlsKeyEvent.of_spki(spki).spki_sha256 == hashlib.sha256(spki).digest()
    with pytest.raises(EventLogError, match="spki_der"):
        TlsKeyEvent.of_spki(b"")


@pytest.mark.parametrize(
    ("obj", "reason"),
    [
        ({"type": "tls_key"}, "missing fields"),
        ({"type": "tls_key", "spki_sha256": "00" * 32, "der": ""}, "unexpected fields"),
        ({"type": "tls_key", "spki_sha256": "00" * 31}, "spki_sha256"),
        ({"type": "tls_key", "spki_sha256": "00" * 33}, "spki_sha256"),
        ({"type": "tls_key", "spki_sha256": "AB" * 32}, "spki_sha256"),
        ({"type": "tls_key", "spki_sha256": 7}, "spki_sha256"),
    ],
)
def test_a_malformed_tls_key_event_is_refused(obj: dict[str, object], reason: str) -> None:
    with pytest.raises(EventLogError, match=reason):
        event_from_object(obj)


def test_identity_event_encodes_to_the_documented_bytes() -> None:
    expected = (
        b"tdx-measure/event/v1\n"
        b'{"pubkey":"202122232425262728292a2b2c2d2e2f303132333435363738393a3b3c3d3e3f",'
        b'"role":"owner","type":"identity"}'
    )
    assert encode_event(OWNER) == expected


def test_config_event_encodes_to_the_documented_bytes() -> None:
    event = ConfigEvent.of({"ssh_port": "2222", "accept_unsequenced_requests": "false"})
    expected = (
        b"tdx-measure/event/v1\n"
        b'{"settings":{"accept_unsequenced_requests":"false","ssh_port":"2222"},"type":"config"}'
    )
    assert encode_event(event) == expected
    assert event.get("ssh_port") == "2222"
    assert event.get("registry_url") is None


def test_config_event_settings_are_sorted_unique_names_and_strings() -> None:
    with pytest.raises(EventLogError, match="out of order or repeated"):
        ConfigEvent(settings=(("b", "1"), ("a", "2")))
    with pytest.raises(EventLogError, match="out of order or repeated"):
        ConfigEvent(settings=(("a", "1"), ("a", "2")))
    with pytest.raises(EventLogError, match="setting name"):
        ConfigEvent.of({"Port": "1"})
    with pytest.raises(EventLogError, match="control character"):
        ConfigEvent.of({"port": "1\n2"})
    assert ConfigEvent.of({"empty": ""}).get("empty") == ""


def test_executable_event_without_build_id_encodes_null() -> None:
    event = dataclasses.replace(EXE, build_id=None)
    assert b'"build_id":null,' in encode_event(event)


def test_workload_event_encodes_non_ascii_as_raw_utf8() -> None:
    expected = (
        b"tdx-measure/event/v1\n"
        b'{"image":"docker.io/library/nginx:1.25","image_id":"sha256:' + b"ab" * 32 + b'",'
        b'"persist_dirs":["/data","/srv/\xc3\xa9t\xc3\xa9"],"port":8080,'
        b'"transition":"expose","type":"workload"}'
    )
    assert encode_event(WORK) == expected


def test_quote_and_backslash_are_the_only_escapes() -> None:
    event = dataclasses.replace(EXE, path='/opt/a"b\\c')
    assert b'"path":"/opt/a\\"b\\\\c"' in encode_event(event)
    assert decode_event(encode_event(event)) == event


def test_digest_is_sha384_of_the_serialization() -> None:
    for event in (BOOT, EXE, WORK):
        assert event_digest(event) == hashlib.sha384(encode_event(event)).digest()


def test_fresh_boot_events_have_distinct_random_nonces() -> None:
    a, b = BootEvent.fresh(1), BootEvent.fresh(1)
    assert len(a.boot_nonce) == 32
    assert a.boot_nonce != b.boot_nonce


@given(events)
def test_serialization_round_trips(event: object) -> None:
    assert isinstance(
        event,
        BootEvent
        | ExecutableEvent
        | WorkloadEvent
        | SshHostKeyEvent
        | TlsKeyEvent
        | IdentityEvent
        | ConfigEvent,
    )
    assert decode_event(encode_event(event)) == event
    assert event_from_object(json.loads(json.dumps(event_to_object(event)))) == event
    assert event_to_object(event) == {"type": event.TYPE, **event.to_object()}


def test_a_workload_event_to_object_is_its_fields_without_the_type() -> None:
    assert WORK.to_object() == {
        "transition": WORK.transition,
        "image": WORK.image,
        "image_id": WORK.image_id,
        "persist_dirs": list(WORK.persist_dirs),
        "port": WORK.port,
    }


@given(st.binary(max_size=300))
def test_decoding_random_bytes_only_raises_event_log_error(data: bytes) -> None:
    for candidate in (data, DOMAIN_TAG + data):
        try:
            event = decode_event(candidate)
        except EventLogError:
            continue
        assert encode_event(event) == candidate


@pytest.mark.parametrize(
    "mutate",
    [
        pytest.param(lambda b: b.replace(b'{"', b'{ "', 1), id="whitespace"),
        pytest.param(
            lambda b: b.replace(b"tdx-measure/event/v1", b"tdx-measure/event/v2"), id="tag"
        ),
        pytest.param(lambda b: b[len(DOMAIN_TAG) :], id="no-tag"),
        pytest.param(lambda b: b.replace(b"ab" * 32, b"AB" * 32), id="uppercase-hex-in-text"),
        pytest.param(lambda b: b.replace(b"nginx", b"ngin\\u0078"), id="escaped-letter"),
        pytest.param(lambda b: b.replace(b"8080", b"8080.0"), id="float"),
        pytest.param(lambda b: b.replace(b"8080", b"08080"), id="leading-zero"),
        pytest.param(lambda b: b + b"\n", id="trailing-newline"),
        pytest.param(lambda b: b.replace(b'"image":', b'"port":1,"image":', 1), id="duplicate-key"),
        pytest.param(
            lambda b: (
                DOMAIN_TAG
                + json.dumps(json.loads(b[len(DOMAIN_TAG) :]), separators=(",", ":")).encode()
            ),
            id="unsorted-and-ascii-escaped",
        ),
    ],
)
def test_decoding_refuses_every_non_canonical_encoding(mutate: object) -> None:
    assert callable(mutate)
    data = mutate(encode_event(WORK))
    assert data != encode_event(WORK)
    with pytest.raises(EventLogError):
        decode_event(data)


def _obj(
    event: BootEvent
    | ExecutableEvent
    | WorkloadEvent
    | SshHostKeyEvent
    | IdentityEvent
    | ConfigEvent,
    **changes: object,
) -> dict[str, object]:
    obj = event_to_object(event)
    for key, value in changes.items():
        if value is KeyError:
            del obj[key]
        else:
            obj[key] = value
    return obj


@pytest.mark.parametrize(
    ("obj", "reason"),
    [
        (["boot"], "JSON object"),
        (_obj(BOOT, type="reboot"), "unknown event type"),
        (_obj(BOOT, type=None), "unknown event type"),
        (_obj(BOOT, type=KeyError), "unknown event type"),
        (_obj(BOOT, extra=1), "unexpected fields ['extra']"),
        (_obj(EXE, build_id=KeyError), "missing fields ['build_id']"),
        (_obj(BOOT, timestamp="1700000000"), "timestamp: must be an integer"),
        (_obj(BOOT, timestamp=True), "timestamp: must be an integer"),
        (_obj(BOOT, timestamp=-1), "timestamp: -1 is outside"),
        (_obj(BOOT, boot_nonce="00" * 31), "boot_nonce: is 31 bytes"),
        (_obj(BOOT, boot_nonce="0g" * 32), "boot_nonce"),
        (_obj(EXE, sha384="00" * 47), "sha384: is 47 bytes"),
        (_obj(EXE, sha384=0), "sha384: must be a string"),
        (_obj(EXE, build_id=""), "build_id: is 0 bytes"),
        (_obj(EXE, build_id="0"), "build_id"),
        (_obj(EXE, role="Podman"), "role"),
        (_obj(EXE, role=""), "role"),
        (_obj(EXE, path="usr/bin/podman"), "not absolute"),
        (_obj(EXE, path="/usr/../bin/podman"), "not a clean path"),
        (_obj(EXE, path="/usr//bin"), "not a clean path"),
        (_obj(EXE, path="/usr/bin/"), "not a clean path"),
        (_obj(EXE, path="/usr/bin/pod\nman"), "control character"),
        (_obj(EXE, path="/usr/bin/pod\x00man"), "control character"),
        (_obj(EXE, path="/usr/bin/\ud800"), "lone surrogate"),
        (_obj(EXE, machine="x86_64"), "machine"),
        (_obj(WORK, transition="destroy"), "transition"),
        (_obj(WORK, port=0), "port: 0 is outside"),
        (_obj(WORK, port=65536), "port: 65536 is outside"),
        (_obj(WORK, port=False), "port: must be an integer"),
        (_obj(WORK, image=""), "image: must not be empty"),
        (_obj(WORK, image="nginx latest"), "image: contains whitespace"),
        (_obj(WORK, image_id="sha256:" + "AB" * 32), "image_id"),
        (_obj(WORK, image_id="sha512:" + "ab" * 32), "image_id"),
        (_obj(WORK, persist_dirs="/data"), "persist_dirs: must be an array"),
        (_obj(WORK, persist_dirs=["/data", "rel"]), "persist_dirs[1]"),
        (_obj(WORK, persist_dirs=[1]), "persist_dirs[0]: must be a string"),
        (_obj(SSH, public_key=SSH_LINE + " comment"), "public_key"),
        (_obj(SSH, public_key=SSH_LINE.replace("ssh-ed25519", "ssh-rsa", 1)), "public_key"),
        (_obj(SSH, public_key=SSH_LINE[:-4]), "public_key"),
        (_obj(SSH, public_key=SSH_LINE + "="), "public_key"),
        (_obj(SSH, public_key="ssh-ed25519  " + SSH_LINE[12:]), "public_key"),
        (_obj(SSH, public_key=1), "public_key: must be a string"),
        (_obj(OWNER, role="admin"), "role"),
        (_obj(OWNER, pubkey="00" * 31), "pubkey: is 31 bytes"),
        (_obj(OWNER, pubkey="AB" * 32), "pubkey"),
        (_obj(OWNER, fingerprint="x"), "unexpected fields ['fingerprint']"),
        (_obj(CONFIG, settings=[["port", "1"]]), "settings: must be an object"),
        (_obj(CONFIG, settings={"port": 1}), "settings.port: must be a string"),
        (_obj(CONFIG, settings={"Port": "1"}), "setting name"),
        (_obj(CONFIG, settings={"port": "\x7f"}), "control character"),
    ],
)
def test_decoding_refuses_malformed_objects_naming_the_field(obj: object, reason: str) -> None:
    with pytest.raises(EventLogError) as info:
        event_from_object(obj)
    assert reason in info.value.reason


def test_constructing_an_invalid_event_raises_event_log_error() -> None:
    with pytest.raises(EventLogError, match="port"):
        WorkloadEvent("configure", "nginx", "ab" * 32, (), 70000)
    with pytest.raises(EventLogError, match="persist_dirs: must be a tuple"):
        WorkloadEvent("configure", "nginx", "ab" * 32, ["/data"], 80)  # type: ignore[arg-type]
    with pytest.raises(EventLogError, match="sha384: must be bytes"):
        ExecutableEvent("podman", "/usr/bin/podman", bytearray(48), None, "EM_X86_64")  # type: ignore[arg-type]


def _control_by_character(value: str) -> bool:
    """The character-by-character test the regex search replaced (the reference)."""
    return any(ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F for c in value)


@given(
    st.text(
        alphabet=st.one_of(
            st.characters(codec=None),
            st.characters(min_codepoint=0, max_codepoint=0xA0),
        )
    )
)
def test_control_character_search_agrees_with_the_character_by_character_test(
    value: str,
) -> None:
    assert has_control_character(value) == _control_by_character(value)


@pytest.mark.parametrize("code", [*range(0x20), *range(0x7F, 0xA0)])
def test_every_control_character_is_refused_alone_and_inside_text(code: int) -> None:
    for value in (chr(code), f"/usr/bin/a{chr(code)}b"):
        assert has_control_character(value)
        with pytest.raises(EventLogError, match="control character"):
            dataclasses.replace(EXE, path=value)


@pytest.mark.parametrize("code", [0x20, 0x7E, 0xA0, 0x2028, 0xFEFF, 0x10FFFF])
def test_the_characters_beside_the_control_ranges_pass(code: int) -> None:
    assert not has_control_character(f"a{chr(code)}b")
