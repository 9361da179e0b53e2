"""Typed measurement events and their one canonical serialization.

An event's serialization is ``DOMAIN_TAG ‖ canonical JSON of its object form`` (see README.md);
its digest, the value extended into the RTMR, is SHA-384 of that serialization. Every event
validates its fields when constructed, so a decoded event is as trustworthy as a built one.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar, Final, Literal, TypeAlias, get_args

from tdx_measure._errors import EventLogError
from tdx_measure._json import dumps_canonical, loads_strict

DOMAIN_TAG: Final = b"tdx-measure/event/v1\n"
DIGEST_SIZE: Final = 48
BOOT_NONCE_SIZE: Final = 32
MAX_SAFE_INTEGER: Final = 2**53 - 1
MAX_PATH_LENGTH: Final = 4096
MAX_IMAGE_LENGTH: Final = 1024
MAX_PERSIST_DIRS: Final = 256
MAX_BUILD_ID_SIZE: Final = 64
MAX_EVENT_BYTES: Final = 2 * 1024 * 1024

IDENTITY_KEY_SIZE: Final = 32
SPKI_SHA256_SIZE: Final = 32

Transition: TypeAlias = Literal["configure", "expose"]
TRANSITIONS: Final[frozenset[str]] = frozenset(get_args(Transition))
IdentityRole: TypeAlias = Literal["operator", "owner"]
IDENTITY_ROLES: Final[frozenset[str]] = frozenset(get_args(IdentityRole))
SSH_ED25519: Final = "ssh-ed25519"

MAX_CONFIG_SETTINGS: Final = 256
MAX_CONFIG_VALUE_LENGTH: Final = 1024

_ROLE = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")
_SETTING_NAME = re.compile(r"[a-z][a-z0-9_]{0,63}")
_MACHINE = re.compile(r"EM_[A-Z0-9_]{1,40}")
_IMAGE_ID = re.compile(r"(?:sha256:)?[0-9a-f]{64}")
_HEX = re.compile(r"(?:[0-9a-f]{2})*")
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")


def _fail(field: str, reason: str) -> EventLogError:
    return EventLogError(f"{field}: {reason}")


def _check_int(field: str, value: object, low: int, high: int) -> int:
    if type(value) is not int:
        raise _fail(field, f"must be an integer, not {type(value).__name__}")
    if not low <= value <= high:
        raise _fail(field, f"{value} is outside {low}..{high}")
    return value


def _check_bytes(field: str, value: object, low: int, high: int) -> bytes:
    if type(value) is not bytes:
        raise _fail(field, f"must be bytes, not {type(value).__name__}")
    if not low <= len(value) <= high:
        expected = str(low) if low == high else f"{low}..{high}"
        raise _fail(field, f"is {len(value)} bytes, expected {expected}")
    return value


def has_control_character(value: str) -> bool:
    """Whether `value` has a C0 (U+0000-U+001F), DEL (U+007F) or C1 (U+0080-U+009F) control
    character: one regex search (the character-by-character test cost ~0.1 ms a log)."""
    return _CONTROL.search(value) is not None


def _check_text(field: str, value: object, max_length: int) -> str:
    """Non-empty UTF-8-encodable text without control characters (they have no place in
    paths, roles or image references and would make the log misleading to read)."""
    if type(value) is not str:
        raise _fail(field, f"must be a string, not {type(value).__name__}")
    if not value:
        raise _fail(field, "must not be empty")
    if len(value) > max_length:
        raise _fail(field, f"is {len(value)} characters, more than {max_length}")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise _fail(field, "is not encodable as UTF-8 (lone surrogate)") from None
    if has_control_character(value):
        raise _fail(field, "contains a control character")
    return value


def _check_clean_absolute(field: str, value: object) -> str:
    """An absolute path with no empty, "." or ".." segment and no trailing slash."""
    path = _check_text(field, value, MAX_PATH_LENGTH)
    if not path.startswith("/"):
        raise _fail(field, f"{path!r} is not absolute")
    if path != "/" and any(seg in ("", ".", "..") for seg in path[1:].split("/")):
        raise _fail(field, f"{path!r} is not a clean path (empty, '.' or '..' segment)")
    return path


def _check_pattern(field: str, value: object, pattern: re.Pattern[str], what: str) -> str:
    if type(value) is not str:
        raise _fail(field, f"must be a string, not {type(value).__name__}")
    if pattern.fullmatch(value) is None:
        raise _fail(field, f"{value[:80]!r} is not {what}")
    return value


def validate_role(role: object) -> str:
    """A role names what a helper is for ("podman", "oci-runtime", ...): 1-64 of [a-z0-9._-]."""
    return _check_pattern("role", role, _ROLE, "a role (1-64 of a-z 0-9 . _ -)")


@dataclass(frozen=True)
class BootEvent:
    """The first event of every log: this boot of the TD, told apart from every other boot by a
    random nonce, so a log from an earlier boot can never be replayed as this boot's."""

    TYPE: ClassVar[str] = "boot"
    boot_nonce: bytes
    timestamp: int
    """Seconds since the Unix epoch (UTC) when the log was started; informative, not trusted."""

    def __post_init__(self) -> None:
        _check_bytes("boot_nonce", self.boot_nonce, BOOT_NONCE_SIZE, BOOT_NONCE_SIZE)
        _check_int("timestamp", self.timestamp, 0, MAX_SAFE_INTEGER)

    @classmethod
    def fresh(cls, timestamp: int) -> BootEvent:
        """A boot event with a new random nonce."""
        return cls(boot_nonce=secrets.token_bytes(BOOT_NONCE_SIZE), timestamp=timestamp)

    def to_object(self) -> dict[str, object]:
        """The event's fields in JSON form, without the log's "type" member."""
        return {"boot_nonce": self.boot_nonce.hex(), "timestamp": self.timestamp}


@dataclass(frozen=True)
class ExecutableEvent:
    """A helper program the service runs, identified by file hash and ELF build ID."""

    TYPE: ClassVar[str] = "executable"
    role: str
    path: str
    """The real path (symlinks resolved) the program is run from."""
    sha384: bytes
    build_id: bytes | None
    """The GNU build ID (NT_GNU_BUILD_ID note), or None when the ELF carries none."""
    machine: str
    """The ELF e_machine name, e.g. "EM_X86_64"."""

    def __post_init__(self) -> None:
        validate_role(self.role)
        _check_clean_absolute("path", self.path)
        _check_bytes("sha384", self.sha384, DIGEST_SIZE, DIGEST_SIZE)
        if self.build_id is not None:
            _check_bytes("build_id", self.build_id, 1, MAX_BUILD_ID_SIZE)
        _check_pattern("machine", self.machine, _MACHINE, "an ELF machine name (EM_...)")

    def to_object(self) -> dict[str, object]:
        """The event's fields in JSON form, without the log's "type" member."""
        return {
            "role": self.role,
            "path": self.path,
            "sha384": self.sha384.hex(),
            "build_id": None if self.build_id is None else self.build_id.hex(),
            "machine": self.machine,
        }


@dataclass(frozen=True)
class WorkloadEvent:
    """A workload lifecycle transition with the canonical workload configuration it applies."""

    TYPE: ClassVar[str] = "workload"
    transition: Transition
    image: str
    """The image reference the owner gave."""
    image_id: str
    """The image ID as podman reports it: 64 lowercase hex digits, optionally "sha256:"-prefixed."""
    persist_dirs: tuple[str, ...]
    """The persisted directories in the order the owner gave them."""
    port: int

    def __post_init__(self) -> None:
        if self.transition not in TRANSITIONS:
            raise _fail("transition", f"{self.transition!r} is not one of {sorted(TRANSITIONS)}")
        _check_text("image", self.image, MAX_IMAGE_LENGTH)
        if any(c.isspace() for c in self.image):
            raise _fail("image", "contains whitespace")
        _check_pattern("image_id", self.image_id, _IMAGE_ID, "a podman image ID")
        if type(self.persist_dirs) is not tuple:
            raise _fail("persist_dirs", f"must be a tuple, not {type(self.persist_dirs).__name__}")
        if len(self.persist_dirs) > MAX_PERSIST_DIRS:
            raise _fail("persist_dirs", f"has more than {MAX_PERSIST_DIRS} entries")
        for index, directory in enumerate(self.persist_dirs):
            _check_clean_absolute(f"persist_dirs[{index}]", directory)
        _check_int("port", self.port, 1, 65535)

    def to_object(self) -> dict[str, object]:
        """The event's fields in JSON form, without the log's "type" member: the "workload" of
        the registry's GET /instance and of `verify-quote --event-log`."""
        return {
            "transition": self.transition,
            "image": self.image,
            "image_id": self.image_id,
            "persist_dirs": list(self.persist_dirs),
            "port": self.port,
        }


def _ssh_string(data: bytes) -> bytes:
    return len(data).to_bytes(4, "big") + data


def ssh_ed25519_line(public_key: bytes) -> str:
    """The OpenSSH public key line ``ssh-ed25519 <base64>`` (no comment) of a 32-byte key."""
    _check_bytes("public_key", public_key, IDENTITY_KEY_SIZE, IDENTITY_KEY_SIZE)
    blob = _ssh_string(SSH_ED25519.encode("ascii")) + _ssh_string(public_key)
    return f"{SSH_ED25519} {base64.b64encode(blob).decode('ascii')}"


def _check_ssh_ed25519(field: str, value: object) -> str:
    """Exactly ``ssh-ed25519 <base64 of the key blob>``: one space, no comment, the blob's
    algorithm name equal to the line's and a 32-byte key, in the one canonical base64."""
    if type(value) is not str:
        raise _fail(field, f"must be a string, not {type(value).__name__}")
    prefix = SSH_ED25519 + " "
    if not value.startswith(prefix):
        raise _fail(field, "is not an OpenSSH ssh-ed25519 public key line")
    try:
        blob = base64.b64decode(value[len(prefix) :].encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError):
        raise _fail(field, "carries a key blob that is not base64") from None
    expected_head = _ssh_string(SSH_ED25519.encode("ascii"))
    if len(blob) != len(expected_head) + 4 + IDENTITY_KEY_SIZE or not blob.startswith(
        expected_head
    ):
        raise _fail(field, "is not an ssh-ed25519 key blob with a 32-byte key")
    if ssh_ed25519_line(blob[-IDENTITY_KEY_SIZE:]) != value:
        raise _fail(field, "is not in canonical form")
    return value


@dataclass(frozen=True)
class SshHostKeyEvent:
    """The SSH host key the service's setup server presents in this boot, measured before the
    server first listens, so a verifier of a later quote can pin it."""

    TYPE: ClassVar[str] = "ssh_host_key"
    public_key: str
    """The OpenSSH public key line ``ssh-ed25519 AAAA...``, without a comment."""

    def __post_init__(self) -> None:
        _check_ssh_ed25519("public_key", self.public_key)

    def to_object(self) -> dict[str, object]:
        """The event's fields in JSON form, without the log's "type" member."""
        return {"public_key": self.public_key}


@dataclass(frozen=True)
class TlsKeyEvent:
    """The TLS key the service's attested front presents in this start, measured before the
    quote its certificate carries is taken, so a verifier of a later quote can pin it."""

    TYPE: ClassVar[str] = "tls_key"
    spki_sha256: bytes
    """SHA-256 of the key's DER SubjectPublicKeyInfo (32 bytes)."""

    def __post_init__(self) -> None:
        _check_bytes("spki_sha256", self.spki_sha256, SPKI_SHA256_SIZE, SPKI_SHA256_SIZE)

    @classmethod
    def of_spki(cls, spki_der: bytes) -> TlsKeyEvent:
        """The event of a DER SubjectPublicKeyInfo (its SHA-256 is measured)."""
        if type(spki_der) is not bytes or not spki_der:
            raise _fail("spki_der", "must be non-empty bytes")
        return cls(spki_sha256=hashlib.sha256(spki_der).digest())

    def to_object(self) -> dict[str, object]:
        """The event's fields in JSON form, without the log's "type" member."""
        return {"spki_sha256": self.spki_sha256.hex()}


@dataclass(frozen=True)
class IdentityEvent:
    """An operator or owner the TD serves: extended when the identity registers (before the
    quote the registration sends) and again after every reboot."""

    TYPE: ClassVar[str] = "identity"
    role: IdentityRole
    pubkey: bytes
    """The identity's 32-byte ed25519 public key."""

    def __post_init__(self) -> None:
        if self.role not in IDENTITY_ROLES:
            raise _fail("role", f"{self.role!r} is not one of {sorted(IDENTITY_ROLES)}")
        _check_bytes("pubkey", self.pubkey, IDENTITY_KEY_SIZE, IDENTITY_KEY_SIZE)

    def to_object(self) -> dict[str, object]:
        """The event's fields in JSON form, without the log's "type" member."""
        return {"role": self.role, "pubkey": self.pubkey.hex()}


def _check_setting_value(field: str, value: object) -> str:
    """Text without control characters, possibly empty (an unset setting is measured as "")."""
    if type(value) is not str:
        raise _fail(field, f"must be a string, not {type(value).__name__}")
    return "" if not value else _check_text(field, value, MAX_CONFIG_VALUE_LENGTH)


@dataclass(frozen=True)
class ConfigEvent:
    """The effective settings that change how the service behaves, measured once per start, so
    a verifier sees them; never a secret. `settings` is (name, value) pairs sorted by name."""

    TYPE: ClassVar[str] = "config"
    settings: tuple[tuple[str, str], ...]

    def __post_init__(self) -> None:
        if type(self.settings) is not tuple:
            raise _fail("settings", f"must be a tuple, not {type(self.settings).__name__}")
        if len(self.settings) > MAX_CONFIG_SETTINGS:
            raise _fail("settings", f"has more than {MAX_CONFIG_SETTINGS} entries")
        previous = ""
        for pair in self.settings:
            if type(pair) is not tuple or len(pair) != 2:
                raise _fail("settings", "each entry must be a (name, value) pair")
            name, value = pair
            _check_pattern("settings", name, _SETTING_NAME, "a setting name (a-z 0-9 _)")
            if name <= previous:
                raise _fail("settings", f"{name!r} is out of order or repeated")
            previous = name
            _check_setting_value(f"settings.{name}", value)

    @classmethod
    def of(cls, settings: Mapping[str, str]) -> ConfigEvent:
        """The event of a name -> value mapping (sorted here)."""
        return cls(settings=tuple(sorted(settings.items())))

    def get(self, name: str) -> str | None:
        """The value of setting `name`, or None when the event does not carry it."""
        return dict(self.settings).get(name)

    def to_object(self) -> dict[str, object]:
        """The event's fields in JSON form, without the log's "type" member."""
        return {"settings": dict(self.settings)}


Event: TypeAlias = (
    BootEvent
    | ExecutableEvent
    | WorkloadEvent
    | SshHostKeyEvent
    | TlsKeyEvent
    | IdentityEvent
    | ConfigEvent
)
RuntimeEvent: TypeAlias = (
    ExecutableEvent | WorkloadEvent | SshHostKeyEvent | TlsKeyEvent | IdentityEvent | ConfigEvent
)
"""Every event but the boot event: what `EventLog.append` takes."""

_FIELDS: Final[dict[str, frozenset[str]]] = {
    BootEvent.TYPE: frozenset({"type", "boot_nonce", "timestamp"}),
    ExecutableEvent.TYPE: frozenset({"type", "role", "path", "sha384", "build_id", "machine"}),
    WorkloadEvent.TYPE: frozenset(
        {"type", "transition", "image", "image_id", "persist_dirs", "port"}
    ),
    SshHostKeyEvent.TYPE: frozenset({"type", "public_key"}),
    TlsKeyEvent.TYPE: frozenset({"type", "spki_sha256"}),
    IdentityEvent.TYPE: frozenset({"type", "role", "pubkey"}),
    ConfigEvent.TYPE: frozenset({"type", "settings"}),
}


def event_to_object(event: Event) -> dict[str, object]:
    """The JSON object form of an event, as it appears in a serialized log: its `to_object()`
    with a "type" member naming the event type."""
    return {"type": event.TYPE, **event.to_object()}


def _hex_field(obj: dict[str, object], field: str) -> bytes:
    text = _check_pattern(field, obj[field], _HEX, "lowercase hex with an even number of digits")
    return bytes.fromhex(text)


def event_from_object(obj: object) -> Event:
    """Strictly decode the JSON object form: the exact field set of a known type, each with
    the right JSON type and a valid value; anything else raises `EventLogError`."""
    if type(obj) is not dict:
        raise EventLogError(f"an event must be a JSON object, not {type(obj).__name__}")
    kind = obj.get("type")
    if type(kind) is not str or kind not in _FIELDS:
        raise EventLogError(f"unknown event type {kind!r}")
    expected = _FIELDS[kind]
    keys = frozenset(obj)
    if keys != expected:
        missing, extra = sorted(expected - keys), sorted(keys - expected)
        raise EventLogError(f"{kind} event: missing fields {missing}, unexpected fields {extra}")
    if kind == BootEvent.TYPE:
        return BootEvent(boot_nonce=_hex_field(obj, "boot_nonce"), timestamp=obj["timestamp"])
    if kind == ExecutableEvent.TYPE:
        build_id = None if obj["build_id"] is None else _hex_field(obj, "build_id")
        return ExecutableEvent(
            role=obj["role"],
            path=obj["path"],
            sha384=_hex_field(obj, "sha384"),
            build_id=build_id,
            machine=obj["machine"],
        )
    if kind == SshHostKeyEvent.TYPE:
        return SshHostKeyEvent(public_key=obj["public_key"])
    if kind == TlsKeyEvent.TYPE:
        return TlsKeyEvent(spki_sha256=_hex_field(obj, "spki_sha256"))
    if kind == IdentityEvent.TYPE:
        return IdentityEvent(role=obj["role"], pubkey=_hex_field(obj, "pubkey"))
    if kind == ConfigEvent.TYPE:
        settings = obj["settings"]
        if type(settings) is not dict:
            raise _fail("settings", f"must be an object, not {type(settings).__name__}")
        return ConfigEvent.of(settings)
    persist_dirs = obj["persist_dirs"]
    if type(persist_dirs) is not list:
        raise _fail("persist_dirs", f"must be an array, not {type(persist_dirs).__name__}")
    return WorkloadEvent(
        transition=obj["transition"],
        image=obj["image"],
        image_id=obj["image_id"],
        persist_dirs=tuple(persist_dirs),
        port=obj["port"],
    )


def encode_event(event: Event) -> bytes:
    """The canonical serialization: DOMAIN_TAG followed by the canonical JSON object form."""
    return DOMAIN_TAG + dumps_canonical(event_to_object(event))


def decode_event(data: bytes) -> Event:
    """Decode a canonical serialization; any other byte string (including a non-canonical
    encoding of a valid event) raises `EventLogError`, so each event has exactly one encoding."""
    if type(data) is not bytes:
        raise EventLogError(f"an encoded event must be bytes, not {type(data).__name__}")
    if not data.startswith(DOMAIN_TAG):
        raise EventLogError("encoded event does not start with the tdx-measure/event/v1 tag")
    event = event_from_object(loads_strict(data[len(DOMAIN_TAG) :], max_bytes=MAX_EVENT_BYTES))
    if encode_event(event) != data:
        raise EventLogError("encoded event is not in canonical form")
    return event


def event_digest(event: Event) -> bytes:
    """SHA-384 of the canonical serialization: the value extended into the register."""
    return hashlib.sha384(encode_event(event)).digest()
