"""The event data of the CCEL event types that firmware, shim, grub and the kernel's EFI stub
write, decoded strictly, and the measured boot components a log describes.

Only the digests are covered by the replay: event data is a claim. A component's text is given
only where the digest is the hash of that text (grub's strings), so it is checked here.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import uuid
from dataclasses import dataclass
from typing import Final, TypeAlias

from tdx_measure._ccel import (
    EV_ACTION,
    EV_EFI_ACTION,
    EV_EFI_BOOT_SERVICES_APPLICATION,
    EV_EFI_BOOT_SERVICES_DRIVER,
    EV_EFI_HANDOFF_TABLES,
    EV_EFI_HANDOFF_TABLES2,
    EV_EFI_PLATFORM_FIRMWARE_BLOB,
    EV_EFI_PLATFORM_FIRMWARE_BLOB2,
    EV_EFI_RUNTIME_SERVICES_DRIVER,
    EV_EFI_VARIABLE_AUTHORITY,
    EV_EFI_VARIABLE_BOOT,
    EV_EFI_VARIABLE_BOOT2,
    EV_EFI_VARIABLE_DRIVER_CONFIG,
    EV_EVENT_TAG,
    EV_IPL,
    EV_SEPARATOR,
    CcelEvent,
    CcelLog,
    _Reader,
)
from tdx_measure._errors import CcelError

LINUX_INITRD_TAG: Final = 0x8F3B22EC
"""The EV_EVENT_TAG id of the initrd the Linux EFI stub measures (its INITRD_EVENT_TAG_ID)."""
LINUX_LOAD_OPTIONS_TAG: Final = 0x8F3B22ED
"""The EV_EVENT_TAG id of the command line (LoadOptions) the Linux EFI stub measures."""
MAX_DEVICE_PATH_NODES: Final = 256
MAX_HANDOFF_TABLES: Final = 1024
_BOOT_OPTION = re.compile(r"Boot[0-9A-F]{4}")
_GRUB_CMD: Final = "grub_cmd: "
_GRUB_CMDLINE: Final = "kernel_cmdline: "
_GRUB_LINUX = frozenset({"linux", "linuxefi", "linux16"})
_GRUB_INITRD = frozenset({"initrd", "initrdefi", "initrd16"})


def _utf16(raw: bytes, what: str) -> str:
    if len(raw) % 2:
        raise CcelError(f"{what} is not UTF-16 (odd length)")
    try:
        return raw.decode("utf-16-le")
    except UnicodeDecodeError:
        raise CcelError(f"{what} is not valid UTF-16") from None


def _guid(raw: bytes) -> str:
    return str(uuid.UUID(bytes_le=raw))


@dataclass(frozen=True)
class DevicePathNode:
    node_type: int
    subtype: int
    data: bytes

    @property
    def text(self) -> str:
        if self.node_type == 4 and self.subtype == 4:  # media, file path
            return _utf16(self.data, "file path node").rstrip("\x00")
        return f"DevicePath({self.node_type:#04x},{self.subtype:#04x})"


@dataclass(frozen=True)
class DevicePath:
    """An EFI device path: nodes up to and without the End Entire node. `text` joins the file
    path nodes, the part a reader recognizes (e.g. \\EFI\\BOOT\\BOOTX64.EFI)."""

    nodes: tuple[DevicePathNode, ...]

    @property
    def file_path(self) -> str | None:
        parts = [node.text for node in self.nodes if node.node_type == 4 and node.subtype == 4]
        return "".join(parts) if parts else None


def parse_device_path(raw: bytes) -> DevicePath:
    """The nodes of a device path that must end with the End Entire node (0x7F, 0xFF)."""
    reader = _Reader(raw)
    nodes: list[DevicePathNode] = []
    while True:
        if len(nodes) > MAX_DEVICE_PATH_NODES:
            raise CcelError(f"a device path of more than {MAX_DEVICE_PATH_NODES} nodes")
        node_type = reader.u8("device path node type")
        subtype = reader.u8("device path node subtype")
        length = reader.u16("device path node length")
        if length < 4:
            raise CcelError(f"device path node length {length} is less than 4")
        data = reader.take(length - 4, "device path node")
        if node_type == 0x7F and subtype == 0xFF:
            break
        nodes.append(DevicePathNode(node_type, subtype, data))
    if reader.left():
        raise CcelError(f"{reader.left()} bytes after the device path's end node")
    return DevicePath(tuple(nodes))


def parse_device_paths(raw: bytes) -> tuple[DevicePath, ...]:
    """A packed list of device paths (an EFI_LOAD_OPTION's FilePathList)."""
    paths: list[DevicePath] = []
    reader = _Reader(raw)
    while reader.left():
        start = reader.pos
        while True:
            node_type = reader.u8("device path node type")
            subtype = reader.u8("device path node subtype")
            length = reader.u16("device path node length")
            if length < 4:
                raise CcelError(f"device path node length {length} is less than 4")
            reader.take(length - 4, "device path node")
            if node_type == 0x7F and subtype == 0xFF:
                break
        paths.append(parse_device_path(raw[start : reader.pos]))
        if len(paths) > MAX_DEVICE_PATH_NODES:
            raise CcelError("too many device paths")
    return tuple(paths)


@dataclass(frozen=True)
class LoadOption:
    """An EFI_LOAD_OPTION, the value of a Boot#### variable."""

    attributes: int
    description: str
    file_paths: tuple[DevicePath, ...]
    optional_data: bytes


def parse_load_option(raw: bytes) -> LoadOption:
    reader = _Reader(raw)
    attributes = reader.u32("load option attributes")
    path_length = reader.u16("FilePathListLength")
    chars: list[bytes] = []
    while True:
        char = reader.take(2, "load option description")
        if char == b"\x00\x00":
            break
        chars.append(char)
    description = _utf16(b"".join(chars), "load option description")
    paths = parse_device_paths(reader.take(path_length, "FilePathList"))
    return LoadOption(attributes, description, paths, reader.take(reader.left(), "optional data"))


@dataclass(frozen=True)
class EfiVariable:
    """UEFI_VARIABLE_DATA: the variable's vendor GUID, name and data. `load_option` is the
    decoded EFI_LOAD_OPTION of a Boot#### variable, `boot_order` the entries of BootOrder."""

    guid: str
    name: str
    data: bytes
    load_option: LoadOption | None = None
    boot_order: tuple[int, ...] | None = None


def _parse_variable(raw: bytes, boot: bool) -> EfiVariable:
    reader = _Reader(raw)
    guid = _guid(reader.take(16, "variable GUID"))
    name_length = reader.u64("UnicodeNameLength")
    data_length = reader.u64("VariableDataLength")
    if name_length > reader.left() // 2:
        raise CcelError(f"variable name of {name_length} characters beyond the event data")
    name = _utf16(reader.take(2 * name_length, "variable name"), "variable name")
    data = reader.take(data_length, "variable data")
    if reader.left():
        raise CcelError(f"{reader.left()} bytes after the variable data")
    load_option = None
    boot_order = None
    if boot and _BOOT_OPTION.fullmatch(name):
        load_option = parse_load_option(data)
    elif boot and name == "BootOrder":
        if len(data) % 2:
            raise CcelError("BootOrder is not a list of 16-bit entries")
        boot_order = tuple(
            int.from_bytes(data[i : i + 2], "little") for i in range(0, len(data), 2)
        )
    return EfiVariable(guid, name, data, load_option, boot_order)


@dataclass(frozen=True)
class ImageLoad:
    """UEFI_IMAGE_LOAD_EVENT: a PE image the firmware loaded and where it came from."""

    location: int
    length: int
    link_time_address: int
    device_path: DevicePath


def _parse_image_load(raw: bytes) -> ImageLoad:
    reader = _Reader(raw)
    location = reader.u64("ImageLocationInMemory")
    length = reader.u64("ImageLengthInMemory")
    link = reader.u64("ImageLinkTimeAddress")
    path_length = reader.u64("LengthOfDevicePath")
    path = parse_device_path(reader.take(path_length, "device path"))
    if reader.left():
        raise CcelError(f"{reader.left()} bytes after the image's device path")
    return ImageLoad(location, length, link, path)


@dataclass(frozen=True)
class FirmwareBlob:
    """UEFI_PLATFORM_FIRMWARE_BLOB(2): a firmware volume's base and length (and description)."""

    description: str | None
    base: int
    length: int


def _description(reader: _Reader) -> str:
    raw = reader.take(reader.u8("description size"), "description")
    try:
        return raw.decode("ascii").rstrip("\x00")
    except UnicodeDecodeError:
        raise CcelError("a blob or table description is not ASCII") from None


def _parse_blob(raw: bytes, v2: bool) -> FirmwareBlob:
    reader = _Reader(raw)
    description = _description(reader) if v2 else None
    blob = FirmwareBlob(description, reader.u64("blob base"), reader.u64("blob length"))
    if reader.left():
        raise CcelError(f"{reader.left()} bytes after the firmware blob")
    return blob


@dataclass(frozen=True)
class HandoffTables:
    """UEFI_HANDOFF_TABLE_POINTERS(2): the configuration tables (GUID, address) handed over."""

    description: str | None
    tables: tuple[tuple[str, int], ...]


def _parse_handoff(raw: bytes, v2: bool) -> HandoffTables:
    reader = _Reader(raw)
    description = _description(reader) if v2 else None
    count = reader.u64("NumberOfTables")
    if count > MAX_HANDOFF_TABLES or count * 24 != reader.left():
        raise CcelError(f"{count} handoff tables do not fill the {reader.left()} bytes left")
    tables = tuple(
        (_guid(reader.take(16, "table GUID")), reader.u64("table address")) for _ in range(count)
    )
    return HandoffTables(description, tables)


@dataclass(frozen=True)
class TaggedEvent:
    """TCG_PCClientTaggedEvent (EV_EVENT_TAG): a tag id and its data."""

    tag_id: int
    data: bytes


def _parse_tagged(raw: bytes) -> TaggedEvent:
    reader = _Reader(raw)
    tag_id = reader.u32("taggedEventID")
    data = reader.take(reader.u32("taggedEventDataSize"), "tagged event data")
    if reader.left():
        raise CcelError(f"{reader.left()} bytes after the tagged event data")
    return TaggedEvent(tag_id, data)


@dataclass(frozen=True)
class Separator:
    """EV_SEPARATOR: 0 normally, 1 when the firmware signals an error (per the profile)."""

    value: int


@dataclass(frozen=True)
class Text:
    """A string event: EV_EFI_ACTION / EV_ACTION (ASCII), or EV_IPL as grub writes it (UTF-8,
    one trailing NUL)."""

    text: str


Decoded: TypeAlias = (
    EfiVariable | ImageLoad | FirmwareBlob | HandoffTables | TaggedEvent | Separator | Text
)


def _ipl_text(raw: bytes) -> Text | None:
    """EV_IPL's data is the boot loader's own: grub's strings are UTF-8 ending in one NUL. Other
    content (binary, UTF-16) is left undecoded, never refused."""
    body = raw[:-1] if raw.endswith(b"\x00") else raw
    if b"\x00" in body:
        return None
    try:
        return Text(body.decode("utf-8"))
    except UnicodeDecodeError:
        return None


def decode_event_data(event: CcelEvent) -> Decoded | None:
    """The decoded event data of the types above, None for the others; `CcelError` when data
    of a decoded type is malformed."""
    kind, raw = event.event_type, event.data
    if kind in (EV_EFI_VARIABLE_DRIVER_CONFIG, EV_EFI_VARIABLE_AUTHORITY):
        return _parse_variable(raw, boot=False)
    if kind in (EV_EFI_VARIABLE_BOOT, EV_EFI_VARIABLE_BOOT2):
        return _parse_variable(raw, boot=True)
    if kind in (
        EV_EFI_BOOT_SERVICES_APPLICATION,
        EV_EFI_BOOT_SERVICES_DRIVER,
        EV_EFI_RUNTIME_SERVICES_DRIVER,
    ):
        return _parse_image_load(raw)
    if kind in (EV_EFI_PLATFORM_FIRMWARE_BLOB, EV_EFI_PLATFORM_FIRMWARE_BLOB2):
        return _parse_blob(raw, v2=kind == EV_EFI_PLATFORM_FIRMWARE_BLOB2)
    if kind in (EV_EFI_HANDOFF_TABLES, EV_EFI_HANDOFF_TABLES2):
        return _parse_handoff(raw, v2=kind == EV_EFI_HANDOFF_TABLES2)
    if kind == EV_EVENT_TAG:
        return _parse_tagged(raw)
    if kind == EV_SEPARATOR:
        if len(raw) != 4:
            raise CcelError(f"a separator is 4 bytes, not {len(raw)}")
        return Separator(int.from_bytes(raw, "little"))
    if kind in (EV_EFI_ACTION, EV_ACTION):
        try:
            return Text(raw.decode("ascii"))
        except UnicodeDecodeError:
            raise CcelError("an action string is not ASCII") from None
    if kind == EV_IPL:
        return _ipl_text(raw)
    return None


@dataclass(frozen=True)
class MeasuredFile:
    """A measured image or file: its SHA-384 digest (the value extended) and its path as the
    log names it (a claim: the path is not covered by the digest), and the event's number."""

    sha384: bytes
    path: str | None
    event: int

    def to_object(self) -> dict[str, object]:
        return {"sha384": self.sha384.hex(), "path": self.path, "event": self.event}


@dataclass(frozen=True)
class MeasuredCmdline:
    """The kernel command line: its SHA-384 digest and, when the digest is SHA-384 of the text
    (grub's kernel_cmdline event), the text."""

    sha384: bytes
    text: str | None
    event: int

    def to_object(self) -> dict[str, object]:
        return {"sha384": self.sha384.hex(), "text": self.text, "event": self.event}


@dataclass(frozen=True)
class BootComponents:
    """What the log says was booted: the boot loaders the firmware ran, the kernel, its command
    line and initrds (grub's measurements, or the Linux EFI stub's tagged events)."""

    boot_loaders: tuple[MeasuredFile, ...]
    kernel: MeasuredFile | None
    cmdline: MeasuredCmdline | None
    initrds: tuple[MeasuredFile, ...]

    def to_object(self) -> dict[str, object]:
        return {
            "boot_loaders": [item.to_object() for item in self.boot_loaders],
            "kernel": None if self.kernel is None else self.kernel.to_object(),
            "cmdline": None if self.cmdline is None else self.cmdline.to_object(),
            "initrds": [item.to_object() for item in self.initrds],
        }


def _checked_grub_text(event: CcelEvent, number: int, prefix: str) -> str | None:
    """The text after grub's `prefix` when the event is that string; `CcelError` when its digest
    is not SHA-384 of that text (the data would misstate what was measured)."""
    if event.event_type != EV_IPL:
        return None
    decoded = _ipl_text(event.data)
    if decoded is None or not decoded.text.startswith(prefix):
        return None
    text = decoded.text[len(prefix) :]
    if not hmac.compare_digest(hashlib.sha384(text.encode("utf-8")).digest(), event.sha384):
        raise CcelError(f"event {number}: its text {prefix.strip()!r} does not hash to its digest")
    return text


def _grub_string(event: CcelEvent, number: int) -> tuple[str, str] | None:
    """(prefix, text) when the event is one of grub's strings (`grub_cmd: ` or
    `kernel_cmdline: `), checked against its digest; None for any other event."""
    for prefix in (_GRUB_CMD, _GRUB_CMDLINE):
        text = _checked_grub_text(event, number, prefix)
        if text is not None:
            return prefix, text
    return None


def _file_at(events: list[tuple[int, CcelEvent]], index: int, path: str) -> MeasuredFile | None:
    """The file grub measured at `index` of the RTMR2 events for the command that named `path`:
    an EV_IPL event labelled with that path (an honest grub labels it so)."""
    number, event = events[index]
    decoded = _ipl_text(event.data) if event.event_type == EV_IPL else None
    if decoded is None or decoded.text != path:
        return None
    return MeasuredFile(event.sha384, path, number)


def _grub_components(
    events: tuple[CcelEvent, ...],
) -> tuple[MeasuredFile | None, MeasuredCmdline | None, list[MeasuredFile], bool]:
    """Kernel, command line and initrds of the last `linux` command grub ran, by position among
    the RTMR2 events: grub measures `grub_cmd: linux PATH ...`, then the file PATH, then
    `kernel_cmdline: ...`; `grub_cmd: initrd P1 .. Pn`, then the n files. Paths come from the
    checked command text; the file events must carry them as labels and must not be grub
    strings. Also whether grub ran a `linux` command at all."""
    rtmr2 = [(n, e) for n, e in enumerate(events, start=1) if e.rtmr == 2]
    strings = [_grub_string(e, n) for n, e in rtmr2]
    kernel: MeasuredFile | None = None
    cmdline: MeasuredCmdline | None = None
    initrds: list[MeasuredFile] = []
    seen_linux = False
    i = 0
    while i < len(rtmr2):
        string = strings[i]
        words = string[1].split() if string is not None and string[0] == _GRUB_CMD else []
        if len(words) >= 2 and words[0] in _GRUB_LINUX:
            seen_linux = True
            kernel, cmdline, initrds = None, None, []
            if i + 1 < len(rtmr2) and strings[i + 1] is None:
                kernel = _file_at(rtmr2, i + 1, words[1])
                i += 1
                following = strings[i + 1] if i + 1 < len(rtmr2) else None
                if kernel is not None and following is not None and following[0] == _GRUB_CMDLINE:
                    number, event = rtmr2[i + 1]
                    cmdline = MeasuredCmdline(event.sha384, following[1], number)
                    i += 1
        elif len(words) >= 2 and words[0] in _GRUB_INITRD:
            paths = words[1:]
            span = range(i + 1, i + 1 + len(paths))
            found = (
                [_file_at(rtmr2, j, path) for j, path in zip(span, paths, strict=True)]
                if span.stop <= len(rtmr2) and all(strings[j] is None for j in span)
                else []
            )
            initrds = [item for item in found if item is not None]
            if len(initrds) != len(paths):
                initrds = []
            else:
                i += len(paths)
        i += 1
    return kernel, cmdline, initrds, seen_linux


def boot_components(log: CcelLog) -> BootComponents:
    """The measured boot components of `log` (see `BootComponents`); `CcelError` when an event
    used here misstates its own digest."""
    events = log.events
    apps: list[MeasuredFile] = []
    kernel: MeasuredFile | None = None
    cmdline: MeasuredCmdline | None = None
    initrds: list[MeasuredFile] = []
    stub_tags = False
    for number, event in enumerate(events, start=1):
        if event.event_type == EV_EFI_BOOT_SERVICES_APPLICATION:
            decoded = decode_event_data(event)
            path = decoded.device_path.file_path if isinstance(decoded, ImageLoad) else None
            apps.append(MeasuredFile(event.sha384, path, number))
        elif event.event_type == EV_EVENT_TAG:
            tag = decode_event_data(event)
            if isinstance(tag, TaggedEvent) and tag.tag_id == LINUX_INITRD_TAG:
                initrds.append(MeasuredFile(event.sha384, None, number))
                stub_tags = True
            elif isinstance(tag, TaggedEvent) and tag.tag_id == LINUX_LOAD_OPTIONS_TAG:
                cmdline = MeasuredCmdline(event.sha384, None, number)
                stub_tags = True
    grub_kernel, grub_cmdline, grub_initrds, grub_linux = _grub_components(events)
    if grub_linux:
        # The Linux EFI stub that grub started may measure the initrd and the command line
        # itself (tagged events): they count when grub's own measurements do not name them.
        kernel = grub_kernel
        cmdline = grub_cmdline if grub_cmdline is not None else cmdline
        initrds = grub_initrds if grub_initrds else initrds
    elif stub_tags and apps:
        # No grub: the firmware (or shim) started the kernel's EFI stub, the last application.
        kernel = apps.pop()
    return BootComponents(tuple(apps), kernel, cmdline, tuple(initrds))
