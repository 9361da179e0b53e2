"""The firmware's CCEL event log: the TCG2 crypto-agile event log (TCG PC Client Platform Firmware
Profile) that TDX firmware keeps for RTMR0-2, its strict parser, its encoder and its replay.

The buffer starts with the SHA1-format Spec ID event ("Spec ID Event03", naming the digest
algorithms and their sizes), then TCG_PCR_EVENT2 records: MR index, event type, digest count,
(algorithm id, digest) pairs, event size, event data. The rest of the buffer after the last record
is padding (all 0xFF, or all zero). CCEL MR index 1..4 is RTMR0..3 (UEFI 2.10 section 38.4.1;
index 0, MRTD, cannot be extended by an event).
"""

from __future__ import annotations

import hashlib
import hmac
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Final

from tdx_measure._errors import CcelError, CcelReplayMismatchError

EV_PREBOOT_CERT: Final = 0x00000000
EV_POST_CODE: Final = 0x00000001
EV_NO_ACTION: Final = 0x00000003
EV_SEPARATOR: Final = 0x00000004
EV_ACTION: Final = 0x00000005
EV_EVENT_TAG: Final = 0x00000006
EV_S_CRTM_CONTENTS: Final = 0x00000007
EV_S_CRTM_VERSION: Final = 0x00000008
EV_CPU_MICROCODE: Final = 0x00000009
EV_PLATFORM_CONFIG_FLAGS: Final = 0x0000000A
EV_TABLE_OF_DEVICES: Final = 0x0000000B
EV_COMPACT_HASH: Final = 0x0000000C
EV_IPL: Final = 0x0000000D
EV_IPL_PARTITION_DATA: Final = 0x0000000E
EV_NONHOST_CODE: Final = 0x0000000F
EV_NONHOST_CONFIG: Final = 0x00000010
EV_NONHOST_INFO: Final = 0x00000011
EV_OMIT_BOOT_DEVICE_EVENTS: Final = 0x00000012
EV_POST_CODE2: Final = 0x00000013
EV_EFI_VARIABLE_DRIVER_CONFIG: Final = 0x80000001
EV_EFI_VARIABLE_BOOT: Final = 0x80000002
EV_EFI_BOOT_SERVICES_APPLICATION: Final = 0x80000003
EV_EFI_BOOT_SERVICES_DRIVER: Final = 0x80000004
EV_EFI_RUNTIME_SERVICES_DRIVER: Final = 0x80000005
EV_EFI_GPT_EVENT: Final = 0x80000006
EV_EFI_ACTION: Final = 0x80000007
EV_EFI_PLATFORM_FIRMWARE_BLOB: Final = 0x80000008
EV_EFI_HANDOFF_TABLES: Final = 0x80000009
EV_EFI_PLATFORM_FIRMWARE_BLOB2: Final = 0x8000000A
EV_EFI_HANDOFF_TABLES2: Final = 0x8000000B
EV_EFI_VARIABLE_BOOT2: Final = 0x8000000C
EV_EFI_GPT_EVENT2: Final = 0x8000000D
EV_EFI_HCRTM_EVENT: Final = 0x80000010
EV_EFI_VARIABLE_AUTHORITY: Final = 0x800000E0
EV_EFI_SPDM_FIRMWARE_BLOB: Final = 0x800000E1
EV_EFI_SPDM_FIRMWARE_CONFIG: Final = 0x800000E2

EVENT_TYPE_NAMES: Final[dict[int, str]] = {
    value: name
    for name, value in dict(globals()).items()
    if name.startswith("EV_") and isinstance(value, int)
}

TPM_ALG_SHA1: Final = 0x0004
TPM_ALG_SHA256: Final = 0x000B
TPM_ALG_SHA384: Final = 0x000C
TPM_ALG_SHA512: Final = 0x000D
TPM_ALG_SM3_256: Final = 0x0012
TPM_ALG_SHA3_256: Final = 0x0027
TPM_ALG_SHA3_384: Final = 0x0028
TPM_ALG_SHA3_512: Final = 0x0029
KNOWN_DIGEST_SIZES: Final[dict[int, int]] = {
    TPM_ALG_SHA1: 20,
    TPM_ALG_SHA256: 32,
    TPM_ALG_SHA384: 48,
    TPM_ALG_SHA512: 64,
    TPM_ALG_SM3_256: 32,
    TPM_ALG_SHA3_256: 32,
    TPM_ALG_SHA3_384: 48,
    TPM_ALG_SHA3_512: 64,
}

SPEC_ID_SIGNATURE: Final = b"Spec ID Event03\x00"
MAX_CCEL_BYTES: Final = 4 * 1024 * 1024
MAX_CCEL_EVENTS: Final = 16384
MAX_ALGORITHMS: Final = 16
MAX_DIGEST_SIZE: Final = 64
MAX_MR_INDEX: Final = 4
RTMR_COUNT: Final = 4
RTMR_SIZE: Final = 48
_SHA1_DIGEST: Final = 20
_U32_MAX: Final = 0xFFFFFFFF


class _Reader:
    """Bounded little-endian reads; running past the end raises `CcelError`, never an
    IndexError or struct.error."""

    __slots__ = ("data", "end", "pos")

    def __init__(self, data: bytes, pos: int = 0, end: int | None = None) -> None:
        self.data = data
        self.pos = pos
        self.end = len(data) if end is None else end

    def left(self) -> int:
        return self.end - self.pos

    def take(self, size: int, what: str) -> bytes:
        if size < 0 or size > self.left():
            raise CcelError(f"{what}: {size} bytes, but only {self.left()} remain", self.pos)
        chunk = self.data[self.pos : self.pos + size]
        self.pos += size
        return chunk

    def u8(self, what: str) -> int:
        return self.take(1, what)[0]

    def u16(self, what: str) -> int:
        return int.from_bytes(self.take(2, what), "little")

    def u32(self, what: str) -> int:
        return int.from_bytes(self.take(4, what), "little")

    def u64(self, what: str) -> int:
        return int.from_bytes(self.take(8, what), "little")


def _check_u32(what: str, value: object) -> int:
    if type(value) is not int or not 0 <= value <= _U32_MAX:
        raise CcelError(f"{what} must be an integer in 0..2^32-1, not {value!r}")
    return value


@dataclass(frozen=True)
class SpecIdEvent:
    """The Spec ID event (TCG_EfiSpecIdEvent) that opens the log: the digest algorithms every
    later event carries, with their sizes."""

    algorithms: tuple[tuple[int, int], ...]
    """(TPM_ALG_ID, digest size) per algorithm, in the log's order."""
    mr_index: int = 0
    platform_class: int = 0
    spec_version: tuple[int, int, int] = (2, 0, 0)
    """(major, minor, errata); the crypto-agile format is version 2.0."""
    uintn_size: int = 2
    """1 for UINT32, 2 for UINT64 (the firmware's UINTN)."""
    vendor_info: bytes = b""

    def __post_init__(self) -> None:
        _check_u32("Spec ID MR index", self.mr_index)
        _check_u32("platform class", self.platform_class)
        if type(self.algorithms) is not tuple or not 1 <= len(self.algorithms) <= MAX_ALGORITHMS:
            raise CcelError(f"the Spec ID event names 1..{MAX_ALGORITHMS} digest algorithms")
        seen: set[int] = set()
        for pair in self.algorithms:
            if type(pair) is not tuple or len(pair) != 2:
                raise CcelError("each Spec ID algorithm is an (id, size) pair")
            alg, size = pair
            if type(alg) is not int or not 0 <= alg <= 0xFFFF:
                raise CcelError(f"algorithm id {alg!r} is not a 16-bit integer")
            if alg in seen:
                raise CcelError(f"the Spec ID event names algorithm 0x{alg:04x} twice")
            seen.add(alg)
            if type(size) is not int or not 1 <= size <= MAX_DIGEST_SIZE:
                raise CcelError(f"algorithm 0x{alg:04x}: digest size {size!r} is not 1..64")
            known = KNOWN_DIGEST_SIZES.get(alg)
            if known is not None and known != size:
                raise CcelError(f"algorithm 0x{alg:04x} has {known}-byte digests, not {size}")
        if TPM_ALG_SHA384 not in seen:
            raise CcelError("the Spec ID event does not name SHA-384, the RTMRs' algorithm")
        if self.spec_version[:2] != (2, 0):
            raise CcelError(f"spec version {self.spec_version} is not the crypto-agile 2.0")
        if self.uintn_size not in (1, 2):
            raise CcelError(f"uintnSize {self.uintn_size} is neither 1 nor 2")
        if type(self.vendor_info) is not bytes or len(self.vendor_info) > 0xFF:
            raise CcelError("vendor info is at most 255 bytes")

    @property
    def sizes(self) -> dict[int, int]:
        return dict(self.algorithms)

    def encode(self) -> bytes:
        major, minor, errata = self.spec_version
        data = (
            SPEC_ID_SIGNATURE
            + struct.pack(
                "<IBBBBI",
                self.platform_class,
                minor,
                major,
                errata,
                self.uintn_size,
                len(self.algorithms),
            )
            + b"".join(struct.pack("<HH", alg, size) for alg, size in self.algorithms)
            + bytes([len(self.vendor_info)])
            + self.vendor_info
        )
        header = struct.pack("<II", self.mr_index, EV_NO_ACTION) + bytes(_SHA1_DIGEST)
        return header + struct.pack("<I", len(data)) + data


SHA384_ONLY: Final = SpecIdEvent(algorithms=((TPM_ALG_SHA384, 48),))
"""The Spec ID event of a log with one bank, SHA-384: what TDX firmware writes."""


@dataclass(frozen=True)
class CcelEvent:
    """One TCG_PCR_EVENT2 record. `digests` are the (TPM_ALG_ID, digest) pairs; `data` is the
    event data, which the replay does not cover (only the digests are extended)."""

    mr_index: int
    event_type: int
    digests: tuple[tuple[int, bytes], ...]
    data: bytes = field(repr=False)

    def __post_init__(self) -> None:
        _check_u32("MR index", self.mr_index)
        _check_u32("event type", self.event_type)
        if self.mr_index > MAX_MR_INDEX:
            raise CcelError(f"MR index {self.mr_index} is beyond RTMR3 (CCEL index 4)")
        if self.mr_index == 0 and self.event_type != EV_NO_ACTION:
            raise CcelError("MR index 0 is MRTD, which no event can extend")
        if type(self.digests) is not tuple or not self.digests:
            raise CcelError("an event carries at least one digest")
        for pair in self.digests:
            if (
                type(pair) is not tuple
                or len(pair) != 2
                or type(pair[0]) is not int
                or type(pair[1]) is not bytes
            ):
                raise CcelError("each digest is an (algorithm id, bytes) pair")
        if len({alg for alg, _ in self.digests}) != len(self.digests):
            raise CcelError("an event carries the same algorithm's digest twice")
        if type(self.data) is not bytes or len(self.data) > _U32_MAX:
            raise CcelError("event data must be bytes")

    @classmethod
    def measure(
        cls, mr_index: int, event_type: int, data: bytes, *, digested: bytes | None = None
    ) -> CcelEvent:
        """A SHA-384-only event whose digest is SHA-384 of `digested` (default: the data)."""
        content = data if digested is None else digested
        return cls(
            mr_index, event_type, ((TPM_ALG_SHA384, hashlib.sha384(content).digest()),), data
        )

    @property
    def type_name(self) -> str:
        return EVENT_TYPE_NAMES.get(self.event_type, f"0x{self.event_type:08x}")

    @property
    def rtmr(self) -> int | None:
        """The RTMR (0..3) this event extends, or None for EV_NO_ACTION (never extended)."""
        if self.event_type == EV_NO_ACTION:
            return None
        return self.mr_index - 1

    @property
    def sha384(self) -> bytes:
        for alg, digest in self.digests:
            if alg == TPM_ALG_SHA384:
                return digest
        raise CcelError("the event carries no SHA-384 digest")

    def encode(self) -> bytes:
        return (
            struct.pack("<III", self.mr_index, self.event_type, len(self.digests))
            + b"".join(struct.pack("<H", alg) + digest for alg, digest in self.digests)
            + struct.pack("<I", len(self.data))
            + self.data
        )


def _parse_spec_id(reader: _Reader) -> SpecIdEvent:
    start = reader.pos
    mr_index = reader.u32("Spec ID MR index")
    event_type = reader.u32("Spec ID event type")
    if event_type != EV_NO_ACTION:
        raise CcelError("the log does not start with the Spec ID event (EV_NO_ACTION)", start)
    if reader.take(_SHA1_DIGEST, "Spec ID digest") != bytes(_SHA1_DIGEST):
        raise CcelError("the Spec ID event's digest is not zero", start)
    size = reader.u32("Spec ID event size")
    body = _Reader(reader.data, reader.pos, reader.pos + min(size, reader.left()))
    reader.take(size, "Spec ID event data")
    if body.take(16, "Spec ID signature") != SPEC_ID_SIGNATURE:
        raise CcelError("the first event is not a 'Spec ID Event03' event", start)
    platform_class = body.u32("platform class")
    minor = body.u8("spec version minor")
    major = body.u8("spec version major")
    errata = body.u8("spec errata")
    uintn_size = body.u8("uintnSize")
    count = body.u32("numberOfAlgorithms")
    if not 1 <= count <= MAX_ALGORITHMS:
        raise CcelError(f"numberOfAlgorithms {count} is not 1..{MAX_ALGORITHMS}", body.pos - 4)
    algorithms = tuple((body.u16("algorithm id"), body.u16("digest size")) for _ in range(count))
    vendor_info = body.take(body.u8("vendorInfoSize"), "vendor info")
    if body.left():
        raise CcelError(f"the Spec ID event has {body.left()} bytes after its vendor info", start)
    try:
        return SpecIdEvent(
            algorithms=algorithms,
            mr_index=mr_index,
            platform_class=platform_class,
            spec_version=(major, minor, errata),
            uintn_size=uintn_size,
            vendor_info=vendor_info,
        )
    except CcelError as exc:
        raise CcelError(exc.reason, start) from None


_FF_HEAD: Final = b"\xff" * 8
_ZERO_HEAD: Final = bytes(8)


def _is_padding(data: bytes, pos: int) -> bool:
    """Whether the buffer ends at `pos`: nothing left, or only 0xFF or only zero bytes. The
    whole rest is scanned only when it starts as padding would (8 bytes 0xFF or zero: an MR
    index no record may carry, or MR index 0 with type 0, which is refused too), so the scan
    runs at most once per parse, never once per record."""
    if pos >= len(data):
        return True
    head = data[pos : pos + 8]
    if head not in (_FF_HEAD[: len(head)], _ZERO_HEAD[: len(head)]):
        return False
    rest = data[pos:]
    return rest.count(head[0]) == len(rest)


def _parse_event(reader: _Reader, spec: SpecIdEvent) -> CcelEvent:
    start = reader.pos
    mr_index = reader.u32("MR index")
    event_type = reader.u32("event type")
    count = reader.u32("digest count")
    sizes = spec.sizes
    if count != len(sizes):
        raise CcelError(
            f"the event carries {count} digests; the Spec ID event names {len(sizes)} algorithms",
            start,
        )
    digests = []
    for _ in range(count):
        alg = reader.u16("algorithm id")
        size = sizes.get(alg)
        if size is None:
            raise CcelError(f"algorithm 0x{alg:04x} is not in the Spec ID event", reader.pos - 2)
        digests.append((alg, reader.take(size, f"digest of algorithm 0x{alg:04x}")))
    data = reader.take(reader.u32("event size"), "event data")
    try:
        return CcelEvent(mr_index, event_type, tuple(digests), data)
    except CcelError as exc:
        raise CcelError(exc.reason, start) from None


@dataclass(frozen=True)
class CcelLog:
    """A parsed CCEL: the Spec ID event and the TCG_PCR_EVENT2 records after it, in order."""

    spec_id: SpecIdEvent
    events: tuple[CcelEvent, ...]

    def __post_init__(self) -> None:
        if type(self.events) is not tuple or len(self.events) > MAX_CCEL_EVENTS:
            raise CcelError(f"a log holds a tuple of at most {MAX_CCEL_EVENTS} events")
        sizes = self.spec_id.sizes
        for number, event in enumerate(self.events, start=1):
            algs = {alg for alg, _ in event.digests}
            if algs != set(sizes) or any(len(d) != sizes[a] for a, d in event.digests):
                raise CcelError(
                    f"event {number}: its digests are not one per Spec ID algorithm, each of "
                    "that algorithm's size"
                )

    def carries(self, rtmr: int) -> bool:
        """Whether any event extends RTMR `rtmr` (0..3)."""
        return any(event.rtmr == rtmr for event in self.events)

    def replay(self) -> tuple[bytes, bytes, bytes, bytes]:
        """RTMR0..3 as the events extend them from zero (SHA-384 bank)."""
        registers = [bytes(RTMR_SIZE)] * RTMR_COUNT
        for event in self.events:
            index = event.rtmr
            if index is not None:
                registers[index] = hashlib.sha384(registers[index] + event.sha384).digest()
        return (registers[0], registers[1], registers[2], registers[3])

    def encode(self, *, pad_to: int | None = None, pad_byte: int = 0xFF) -> bytes:
        """The log's bytes, padded with `pad_byte` to `pad_to` bytes when given."""
        data = self.spec_id.encode() + b"".join(event.encode() for event in self.events)
        if pad_to is not None:
            if pad_to < len(data):
                raise CcelError(f"the log is {len(data)} bytes, more than pad_to={pad_to}")
            data += bytes([pad_byte]) * (pad_to - len(data))
        return data

    @classmethod
    def of(cls, events: Iterable[CcelEvent], spec_id: SpecIdEvent = SHA384_ONLY) -> CcelLog:
        return cls(spec_id, tuple(events))


def parse_ccel(data: bytes) -> CcelLog:
    """Strictly parse a CCEL buffer. Every length and count is bounded by the buffer and by this
    module's limits; the records end where only padding (all 0xFF or all zero) remains. Every
    malformed input raises `CcelError`; the event data of the types `decode_event_data` knows
    must decode too."""
    from tdx_measure._ccel_decode import decode_event_data

    if type(data) is not bytes:
        raise CcelError(f"a CCEL is bytes, not {type(data).__name__}")
    if len(data) > MAX_CCEL_BYTES:
        raise CcelError(f"the CCEL is {len(data)} bytes, more than {MAX_CCEL_BYTES}")
    reader = _Reader(data)
    spec = _parse_spec_id(reader)
    events: list[CcelEvent] = []
    while not _is_padding(data, reader.pos):
        if len(events) >= MAX_CCEL_EVENTS:
            raise CcelError(f"more than {MAX_CCEL_EVENTS} events", reader.pos)
        start = reader.pos
        event = _parse_event(reader, spec)
        try:
            decode_event_data(event)
        except CcelError as exc:
            raise CcelError(
                f"event {len(events) + 1} ({event.type_name}): {exc.reason}", start
            ) from None
        events.append(event)
    return CcelLog(spec, tuple(events))


@dataclass(frozen=True)
class CcelReplay:
    """A CCEL replayed against a quote's RTMR0..3. RTMR0-2 are always compared; RTMR3 only when
    the log extends it (otherwise it belongs to the runtime, not the firmware)."""

    replayed: tuple[bytes, ...]
    expected: tuple[bytes, ...]
    compared: tuple[bool, ...]
    matched: tuple[bool, ...]

    @property
    def mismatched(self) -> tuple[int, ...]:
        return tuple(i for i in range(RTMR_COUNT) if self.compared[i] and not self.matched[i])

    @property
    def ok(self) -> bool:
        return not self.mismatched

    def to_object(self) -> list[dict[str, object]]:
        """Per RTMR: the log's value, the quote's, whether it is compared, and whether equal."""
        return [
            {
                "rtmr": i,
                "log": self.replayed[i].hex(),
                "quote": self.expected[i].hex(),
                "compared": self.compared[i],
                "equal": self.matched[i],
            }
            for i in range(RTMR_COUNT)
        ]


def replay_ccel(log: CcelLog, rtmrs: Sequence[bytes]) -> CcelReplay:
    """Replay `log` and compare, in constant time, with the quote's RTMR0..3 (four 48-byte
    values); never raises on a mismatch (see `verify_ccel`)."""
    if len(rtmrs) != RTMR_COUNT or any(len(r) != RTMR_SIZE for r in rtmrs):
        raise CcelError("a quote's RTMRs are four 48-byte values")
    replayed = log.replay()
    compared = tuple(i < 3 or log.carries(i) for i in range(RTMR_COUNT))
    matched = tuple(hmac.compare_digest(replayed[i], bytes(rtmrs[i])) for i in range(RTMR_COUNT))
    return CcelReplay(replayed, tuple(bytes(r) for r in rtmrs), compared, matched)


def verify_ccel(log: CcelLog, rtmrs: Sequence[bytes]) -> CcelReplay:
    """`replay_ccel`, raising `CcelReplayMismatchError` unless every compared RTMR matches."""
    result = replay_ccel(log, rtmrs)
    if not result.ok:
        raise CcelReplayMismatchError(result.mismatched)
    return result
