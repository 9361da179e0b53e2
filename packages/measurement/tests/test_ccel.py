"""The CCEL (TCG2 crypto-agile firmware event log): the real Google Cloud log replays to its
quote's RTMR0-2, its components are what it says, built logs round-trip, and malformed input of
any kind raises only `CcelError`."""

from __future__ import annotations

import contextlib
import hashlib
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tdx_measure import (
    SHA384_ONLY,
    CcelError,
    CcelEvent,
    CcelLog,
    CcelReplayMismatchError,
    SpecIdEvent,
    boot_components,
    decode_event_data,
    parse_ccel,
    replay_ccel,
    verify_ccel,
)
from tdx_measure._ccel import (
    EV_EFI_ACTION,
    EV_EFI_BOOT_SERVICES_APPLICATION,
    EV_EFI_GPT_EVENT,
    EV_EFI_VARIABLE_BOOT,
    EV_EVENT_TAG,
    EV_IPL,
    EV_NO_ACTION,
    EV_PLATFORM_CONFIG_FLAGS,
    EV_SEPARATOR,
    MAX_CCEL_BYTES,
    TPM_ALG_SHA256,
    TPM_ALG_SHA384,
)
from tdx_measure._ccel_decode import (
    LINUX_INITRD_TAG,
    LINUX_LOAD_OPTIONS_TAG,
    EfiVariable,
    FirmwareBlob,
    HandoffTables,
    ImageLoad,
    Separator,
    Text,
)
from tdx_quote import parse_quote
from tests.vectors import GCP_CCEL, GCP_QUOTE, read_vector

GCP_LOG_END = 18101  # the records end here; 0xFF padding fills the rest of the 256 KiB
GCP_CMDLINE = (
    "/syslinux/vmlinuz.A init=/usr/lib/systemd/systemd rootwait ro noresume loglevel=7 "
    "console=tty1 console=ttyS0,115200 security=apparmor virtio_net.napi_tx=1 nmi_watchdog=0 "
    "csm.disabled=1 loadpin.exclude=kernel-module,firmware modules-load=loadpin_trigger "
    "firmware_class.path=/var/lib/nvidia/firmware module.sig_enforce=1 "
    "dm_verity.error_behavior=3 dm_verity.max_bios=-1 dm_verity.dev_wait=1 i915.modeset=1 "
    'cros_efi root=/dev/dm-0 "dm-mod.create=vroot,,,ro,0 4077568 verity 0 '
    "PARTUUID=F981B9DF-D3B0-A349-9594-C1B5B28A3BEE PARTUUID=F981B9DF-D3B0-A349-9594-C1B5B28A3BEE "
    "4096 4096 509696 509696 sha256 "
    "2a0357a89582144472ca882632611094c66babdb6486d5d7b49597638bf52b12 "
    '5d0efafbace0a8274f4875002856103d582a438bd0c479f9d379deae00e66fa0"'
)
GCP_KERNEL_SHA384 = (
    "b1012372f421ad28c9f542e5a1b8c4d312a0d1c8637ffba5e52b632d4b632e50"
    "4da1b73964f6e8ba047bcd4f1d5a1dfe"
)

RAW = read_vector(GCP_CCEL)
LOG = parse_ccel(RAW)
EVENT_ENDS = [
    len(LOG.spec_id.encode()) + sum(len(e.encode()) for e in LOG.events[: i + 1])
    for i in range(len(LOG.events))
]


def gcp_rtmrs() -> tuple[bytes, bytes, bytes, bytes]:
    body = parse_quote(read_vector(GCP_QUOTE), allow_zero_padding=True).body
    return body.rtmrs


def test_the_real_log_has_43_events_after_its_sha384_spec_id_event() -> None:
    assert len(RAW) == 256 * 1024
    assert len(LOG.events) == 43
    assert LOG.spec_id.algorithms == ((TPM_ALG_SHA384, 48),)
    assert LOG.spec_id.spec_version == (2, 0, 0)
    assert LOG.spec_id.uintn_size == 2
    assert set(RAW[GCP_LOG_END:]) == {0xFF}
    assert LOG.encode(pad_to=len(RAW)) == RAW


def test_the_real_log_replays_to_the_real_quotes_rtmr0_to_2() -> None:
    rtmrs = gcp_rtmrs()
    replayed = LOG.replay()
    assert replayed[:3] == rtmrs[:3]
    assert [LOG.carries(i) for i in range(4)] == [True, True, True, False]
    result = verify_ccel(LOG, rtmrs)
    assert result.ok and result.compared == (True, True, True, False)
    assert result.to_object()[2]["log"] == rtmrs[2].hex()
    # The log does not extend RTMR3 (the runtime's register): a quote's RTMR3 is not compared.
    other3 = (*rtmrs[:3], b"\x01" * 48)
    assert verify_ccel(LOG, other3).ok


@pytest.mark.parametrize("index", [0, 1, 2])
def test_a_different_rtmr_refutes_the_real_log(index: int) -> None:
    rtmrs = list(gcp_rtmrs())
    rtmrs[index] = hashlib.sha384(rtmrs[index]).digest()
    assert replay_ccel(LOG, rtmrs).mismatched == (index,)
    with pytest.raises(CcelReplayMismatchError) as info:
        verify_ccel(LOG, rtmrs)
    assert info.value.mismatched == (index,)
    assert f"RTMR{index}" in info.value.reason


def test_the_real_logs_measured_boot_components() -> None:
    components = boot_components(LOG)
    assert components.kernel is not None and components.cmdline is not None
    assert components.kernel.path == "/syslinux/vmlinuz.A"
    assert components.kernel.sha384.hex() == GCP_KERNEL_SHA384
    assert components.kernel.event == 40
    assert components.cmdline.text == GCP_CMDLINE
    assert components.cmdline.sha384 == hashlib.sha384(GCP_CMDLINE.encode()).digest()
    assert components.initrds == ()
    assert [(b.path, b.event) for b in components.boot_loaders] == [
        ("\\EFI\\BOOT\\BOOTX64.EFI", 18),
        ("\\EFI\\BOOT\\grub-lakitu.efi", 24),
    ]
    obj = components.to_object()
    assert obj["kernel"] == {
        "sha384": GCP_KERNEL_SHA384,
        "path": "/syslinux/vmlinuz.A",
        "event": 40,
    }


def test_the_real_logs_event_data_decodes() -> None:
    decoded = [decode_event_data(event) for event in LOG.events]
    first, second = decoded[0], decoded[1]
    assert isinstance(first, HandoffTables) and first.description == "TdxTable"
    assert isinstance(second, FirmwareBlob)
    assert second.description == "Fv(48DB5E17-707C-472D-91CD-1613E7EF51B0)"
    assert second.length == 0x20000
    variables = [d for d in decoded if isinstance(d, EfiVariable)]
    assert [v.name for v in variables] == [
        "SecureBoot", "PK", "KEK", "db", "dbx", "BootOrder", "Boot0001", "Boot0000",
        "SbatLevel", "MokListTrusted",
    ]  # fmt: skip
    assert variables[0].guid == "8be4df61-93ca-11d2-aa0d-00e098032b8c"
    assert variables[0].data == b"\x00"  # Secure Boot off
    assert variables[5].boot_order == (1, 0)
    option = variables[6].load_option
    assert option is not None and option.description == "UEFI nvme_card-pd"
    assert variables[8].data == b"sbat,1,2021030218\n"
    assert [d for d in decoded if isinstance(d, Separator)] == [Separator(0), Separator(0)]
    actions = [d.text for e, d in zip(LOG.events, decoded, strict=True) if e.type_name ==
               "EV_EFI_ACTION" and isinstance(d, Text)]  # fmt: skip
    assert actions == [
        "Calling EFI Application from Boot Option",
        "Exit Boot Services Invocation",
        "Exit Boot Services Returned with Success",
    ]
    images = [d for d in decoded if isinstance(d, ImageLoad)]
    assert [i.device_path.file_path for i in images] == [
        "\\EFI\\BOOT\\BOOTX64.EFI",
        "\\EFI\\BOOT\\grub-lakitu.efi",
    ]
    assert LOG.events[16].type_name == "EV_EFI_GPT_EVENT" and decoded[16] is None


@given(st.integers(min_value=0, max_value=GCP_LOG_END - 1))
def test_a_truncated_real_log_is_refused_or_a_prefix(cut: int) -> None:
    for padding in (b"", b"\xff" * 64, bytes(64)):
        try:
            log = parse_ccel(RAW[:cut] + padding)
        except CcelError:
            continue
        # The events that end before the cut are the real log's; one the cut falls into may
        # have been completed by the padding (it is refused, or parses as other bytes).
        whole = [end <= cut for end in EVENT_ENDS]
        assert log.events[: sum(whole)] == LOG.events[: sum(whole)]
        assert log.encode() == (RAW[:cut] + padding)[: len(log.encode())]


@given(
    st.lists(
        st.tuples(st.integers(min_value=0, max_value=GCP_LOG_END - 1), st.integers(0, 255)),
        min_size=1,
        max_size=8,
    )
)
def test_a_mutated_real_log_raises_only_ccel_error(changes: list[tuple[int, int]]) -> None:
    data = bytearray(RAW[:GCP_LOG_END])
    for position, value in changes:
        data[position] = value
    try:
        log = parse_ccel(bytes(data))
    except CcelError:
        return
    log.replay()
    with contextlib.suppress(CcelError):
        boot_components(log)


@given(st.binary(max_size=512))
def test_arbitrary_bytes_after_a_valid_spec_id_raise_only_ccel_error(tail: bytes) -> None:
    with contextlib.suppress(CcelError):
        parse_ccel(SHA384_ONLY.encode() + tail)


def _variable(name: str, data: bytes) -> bytes:
    encoded = name.encode("utf-16-le")
    return bytes(16) + struct.pack("<QQ", len(name), len(data)) + encoded + data


_DATA_BY_TYPE = {
    EV_PLATFORM_CONFIG_FLAGS: st.binary(max_size=64),
    EV_EFI_GPT_EVENT: st.binary(max_size=64),
    EV_NO_ACTION: st.binary(max_size=64),
    EV_SEPARATOR: st.sampled_from([bytes(4), b"\x01\x00\x00\x00"]),
    EV_EFI_ACTION: st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126)).map(
        str.encode
    ),
    EV_IPL: st.text(max_size=40).map(lambda t: t.encode() + b"\x00"),
    EV_EFI_VARIABLE_BOOT: st.binary(max_size=32).map(lambda d: _variable("Timeout", d)),
}


@st.composite
def built_events(draw: st.DrawFn) -> CcelEvent:
    kind = draw(st.sampled_from(sorted(_DATA_BY_TYPE)))
    return CcelEvent.measure(draw(st.integers(1, 4)), kind, draw(_DATA_BY_TYPE[kind]))


@given(st.lists(built_events(), max_size=20), st.sampled_from([0xFF, 0x00]))
def test_a_built_log_round_trips_and_replays_by_the_extension_rule(
    events: list[CcelEvent], pad: int
) -> None:
    log = CcelLog.of(events)
    data = log.encode(pad_to=len(log.encode()) + 100, pad_byte=pad)
    assert parse_ccel(data) == log
    expected = [bytes(48)] * 4
    for event in events:
        if event.event_type != EV_NO_ACTION:
            i = event.mr_index - 1
            expected[i] = hashlib.sha384(expected[i] + event.sha384).digest()
    assert list(log.replay()) == expected


def test_an_algorithm_the_spec_id_names_with_its_size_is_accepted() -> None:
    spec = SpecIdEvent(algorithms=((TPM_ALG_SHA384, 48), (0x1234, 24)))
    event = CcelEvent(1, EV_SEPARATOR, ((0x1234, b"\x07" * 24), (TPM_ALG_SHA384, b"\x01" * 48)),
                      bytes(4))  # fmt: skip
    log = CcelLog.of([event], spec)
    assert parse_ccel(log.encode()) == log


SPEC = SHA384_ONLY.encode()
SEPARATOR = CcelEvent.measure(1, EV_SEPARATOR, bytes(4)).encode()


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "only 0 remain"),
        (SPEC[:-1], "remain"),
        (SPEC.replace(b"Spec ID Event03", b"Spec ID Event02"), "Spec ID Event03"),
        (struct.pack("<II", 0, 4) + SPEC[8:], "does not start with the Spec ID"),
        (SPEC[:8] + b"\x01" + SPEC[9:], "digest is not zero"),
        (SPEC.replace(b"\x0c\x00\x30\x00", b"\x0c\x00\x20\x00"), "48-byte digests, not 32"),
        (SPEC.replace(b"\x0c\x00\x30\x00", b"\x0b\x00\x20\x00"), "does not name SHA-384"),
        (SPEC + SEPARATOR.replace(b"\x0c\x00", b"\x0b\x00", 1), "not in the Spec ID event"),
        (SPEC + SEPARATOR[:8] + struct.pack("<I", 2**32 - 1) + SEPARATOR[12:], "carries"),
        (SPEC + SEPARATOR[:-8] + struct.pack("<I", 2**31) + bytes(4), "remain"),
        (SPEC + struct.pack("<I", 5) + SEPARATOR[4:], "beyond RTMR3"),
        (SPEC + struct.pack("<I", 0) + SEPARATOR[4:], "MRTD"),
        (SPEC + SEPARATOR[:-4], "remain"),
        (SPEC + SEPARATOR + b"\xff" * 12 + b"\x01", "carries 4294967295 digests"),
        (SPEC + SEPARATOR + bytes(12) + b"\x01", "carries 0 digests"),
        (SPEC + CcelEvent.measure(1, EV_SEPARATOR, bytes(5)).encode(), "separator is 4 bytes"),
        (SPEC + CcelEvent.measure(1, EV_EFI_ACTION, b"\xff").encode(), "not ASCII"),
        (SPEC + CcelEvent.measure(2, EV_EVENT_TAG, b"\x00" * 7).encode(), "remain"),
        (
            SPEC + CcelEvent.measure(2, EV_EFI_BOOT_SERVICES_APPLICATION, bytes(32)).encode(),
            "remain",
        ),
        (SPEC + CcelEvent.measure(1, EV_EFI_VARIABLE_BOOT, bytes(40)).encode(), "after the"),
        (SPEC + CcelEvent.measure(1, EV_EFI_VARIABLE_BOOT, bytes(31)).encode(), "remain"),
        (
            SPEC
            + CcelEvent.measure(
                1, EV_EFI_VARIABLE_BOOT, _variable("Boot0001", b"\x01\x00\x00\x00\x40\x00")
            ).encode(),
            "load option description",
        ),
    ],
)
def test_malformed_logs_raise_ccel_error(data: bytes, message: str) -> None:
    with pytest.raises(CcelError) as info:
        parse_ccel(data)
    assert message in info.value.reason


def test_limits_and_types() -> None:
    with pytest.raises(CcelError, match="more than"):
        parse_ccel(bytes(MAX_CCEL_BYTES + 1))
    with pytest.raises(CcelError, match="is bytes"):
        parse_ccel(bytearray(SPEC))  # type: ignore[arg-type]
    with pytest.raises(CcelError, match="twice"):
        SpecIdEvent(algorithms=((TPM_ALG_SHA384, 48), (TPM_ALG_SHA384, 48)))
    with pytest.raises(CcelError, match="one per Spec ID algorithm"):
        CcelLog.of(
            [CcelEvent.measure(1, EV_SEPARATOR, bytes(4))],
            SpecIdEvent(algorithms=((TPM_ALG_SHA384, 48), (TPM_ALG_SHA256, 32))),
        )
    with pytest.raises(CcelError, match="four 48-byte"):
        replay_ccel(LOG, [bytes(48)] * 3)


def _grub(text: str, *, digest_of: str | None = None) -> CcelEvent:
    _, _, rest = text.partition(": ")
    body = rest if digest_of is None else digest_of
    return CcelEvent.measure(3, EV_IPL, text.encode() + b"\x00", digested=body.encode())


def _file(path: str, content: bytes) -> CcelEvent:
    return CcelEvent.measure(3, EV_IPL, path.encode() + b"\x00", digested=content)


def test_grub_components_with_an_initrd() -> None:
    log = CcelLog.of(
        [
            _grub("grub_cmd: linux /boot/vmlinuz root=/dev/vda1"),
            _file("/boot/vmlinuz", b"kernel"),
            _grub("kernel_cmdline: /boot/vmlinuz root=/dev/vda1"),
            _grub("grub_cmd: initrd /boot/initrd.img"),
            _file("/boot/initrd.img", b"initrd"),
        ]
    )
    components = boot_components(parse_ccel(log.encode()))
    assert components.kernel is not None and components.cmdline is not None
    assert components.kernel.sha384 == hashlib.sha384(b"kernel").digest()
    assert components.cmdline.text == "/boot/vmlinuz root=/dev/vda1"
    assert [i.sha384 for i in components.initrds] == [hashlib.sha384(b"initrd").digest()]
    assert components.initrds[0].path == "/boot/initrd.img"


def test_a_grub_string_that_does_not_hash_to_its_digest_is_refused() -> None:
    log = CcelLog.of([_grub("kernel_cmdline: console=ttyS0", digest_of="console=tty1")])
    with pytest.raises(CcelError, match="does not hash to its digest"):
        boot_components(log)


def _image(path: str, content: bytes) -> CcelEvent:
    node = path.encode("utf-16-le") + b"\x00\x00"
    device_path = struct.pack("<BBH", 4, 4, 4 + len(node)) + node + b"\x7f\xff\x04\x00"
    data = struct.pack("<QQQQ", 0x1000, len(content), 0, len(device_path)) + device_path
    return CcelEvent.measure(2, EV_EFI_BOOT_SERVICES_APPLICATION, data, digested=content)


def _tag(tag_id: int, label: bytes, content: bytes) -> CcelEvent:
    data = struct.pack("<II", tag_id, len(label)) + label
    return CcelEvent.measure(3, EV_EVENT_TAG, data, digested=content)


def test_efi_stub_components_without_grub() -> None:
    log = CcelLog.of(
        [
            _image("\\EFI\\BOOT\\BOOTX64.EFI", b"shim"),
            _image("\\vmlinuz", b"kernel"),
            _tag(LINUX_LOAD_OPTIONS_TAG, b"LOADED_IMAGE::LoadOptions\x00", b"c\x00o\x00"),
            _tag(LINUX_INITRD_TAG, b"Linux initrd\x00", b"initrd"),
        ]
    )
    components = boot_components(parse_ccel(log.encode()))
    assert components.kernel is not None and components.cmdline is not None
    assert components.kernel.path == "\\vmlinuz"
    assert components.kernel.sha384 == hashlib.sha384(b"kernel").digest()
    assert [b.path for b in components.boot_loaders] == ["\\EFI\\BOOT\\BOOTX64.EFI"]
    assert components.cmdline.text is None
    assert components.cmdline.sha384 == hashlib.sha384(b"c\x00o\x00").digest()
    assert [i.sha384 for i in components.initrds] == [hashlib.sha384(b"initrd").digest()]


def test_grub_components_are_taken_by_position_not_by_label() -> None:
    """Event data is not covered by the digests: a label moved to another event does not move
    the kernel. The kernel is the file event right after the checked `linux` command, the
    command line the checked `kernel_cmdline` right after it."""
    honest = [
        _file("/boot/vmlinuz", b"pinned kernel"),  # read earlier, e.g. by another command
        _grub("grub_cmd: linux /boot/vmlinuz root=/dev/vda1"),
        _file("/boot/other", b"booted kernel"),  # relabelled: its label names no kernel
        _grub("kernel_cmdline: /boot/vmlinuz root=/dev/vda1"),
    ]
    components = boot_components(CcelLog.of(honest))
    assert components.kernel is None and components.cmdline is None
    relabelled = [*honest[:2], _file("/boot/vmlinuz", b"booted kernel"), honest[3]]
    components = boot_components(CcelLog.of(relabelled))
    assert components.kernel is not None and components.cmdline is not None
    assert components.kernel.sha384 == hashlib.sha384(b"booted kernel").digest()
    assert components.kernel.event == 3
    # A later linux command replaces the earlier one; a kernel_cmdline elsewhere is not taken.
    later = [
        *relabelled,
        _grub("grub_cmd: linux /boot/vmlinuz.new quiet"),
        _file("/boot/vmlinuz.new", b"newer kernel"),
        _grub("grub_cmd: set x=1"),
        _grub("kernel_cmdline: /boot/vmlinuz.new quiet"),
    ]
    components = boot_components(CcelLog.of(later))
    assert components.kernel is not None
    assert components.kernel.sha384 == hashlib.sha384(b"newer kernel").digest()
    assert components.cmdline is None


def test_an_initrd_command_takes_exactly_its_files() -> None:
    base = [
        _grub("grub_cmd: linux /boot/vmlinuz"),
        _file("/boot/vmlinuz", b"kernel"),
        _grub("kernel_cmdline: /boot/vmlinuz"),
        _grub("grub_cmd: initrd /boot/a.img /boot/b.img"),
    ]
    two = [*base, _file("/boot/a.img", b"a"), _file("/boot/b.img", b"b")]
    assert [i.sha384 for i in boot_components(CcelLog.of(two)).initrds] == [
        hashlib.sha384(b"a").digest(),
        hashlib.sha384(b"b").digest(),
    ]
    # One file missing (the command failed), a grub command in a file's place, a wrong label:
    # no initrd is derived.
    for events in (
        [*base, _file("/boot/a.img", b"a")],
        [*base, _file("/boot/a.img", b"a"), _grub("grub_cmd: boot")],
        [*base, _file("/boot/a.img", b"a"), _file("/boot/c.img", b"c")],
    ):
        assert boot_components(CcelLog.of(events)).initrds == ()
