"""The strict DER reader of the SGX extension against the reference it replaced: pyasn1's DER
decoder followed by a re-encode that must give the input's exact bytes (`pyasn1_reference`).

On the real Intel PCK extension, the simulator's (a fleet of minted platforms) and generated
ones, mutated structurally (tag swaps, long-form or padded lengths with the enclosing lengths
fixed up, dropped, repeated and swapped entries, padded INTEGERs, BOOLEAN 01, resized values)
and byte-wise (bit flips, truncations, inserted and deleted bytes, length octets changed):
both refuse, or both accept with the same values. And the writer gives pyasn1's bytes."""

from __future__ import annotations

import copy
import functools
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest
from cryptography import x509
from hypothesis import given
from hypothesis import strategies as st
from ppid_helpers import cert_with_extension, sgx_extensions
from pyasn1_reference import reference_encode, reference_parse

from tdx_ppid import (
    SGX_EXTENSION_OID,
    PpidError,
    SgxExtension,
    encode_sgx_extension,
    parse_sgx_extension,
)
from tdx_ppid._extension import _parse_extension_der
from tdx_sim.pki import load_or_create_pki

_SIM_PLATFORMS = 4


def _extension_der(cert: x509.Certificate) -> bytes:
    value = cert.extensions.get_extension_for_oid(x509.ObjectIdentifier(SGX_EXTENSION_OID)).value
    assert isinstance(value, x509.UnrecognizedExtension)
    return value.value


@functools.cache
def _real_der() -> bytes:
    from ppid_helpers import real_pem_blocks

    return _extension_der(x509.load_pem_x509_certificate(real_pem_blocks()[0]))


@functools.cache
def _sim_ders() -> tuple[bytes, ...]:
    """The SGX extensions of the simulator's platform and of platforms minted under its CA."""
    now = datetime.now(UTC)
    with tempfile.TemporaryDirectory() as tmp:
        pki = load_or_create_pki(Path(tmp), now=now)
    fleet = [pki, *(pki.mint_platform(now=now) for _ in range(_SIM_PLATFORMS - 1))]
    return tuple(_extension_der(p.pck_cert) for p in fleet)


def _verdict(der: bytes) -> SgxExtension | None:
    """The new reader's verdict, which must be the reference's (value, or refusal)."""
    try:
        expected: SgxExtension | None = reference_parse(der)
    except PpidError:
        expected = None
    try:
        got: SgxExtension | None = _parse_extension_der(der)
    except PpidError:
        got = None
    assert got == expected, (der.hex(), got, expected)
    return got


# --- a TLV tree, to mutate structure while keeping the framing around it right ---------------


@dataclass
class _Node:
    tag: int
    content: bytes | list[_Node]
    length_pad: int = 0  # extra leading zero octets of a long-form length (-1: 0x81 form)

    def encode(self) -> bytes:
        body = (
            self.content
            if isinstance(self.content, bytes)
            else b"".join(c.encode() for c in self.content)
        )
        n = len(body)
        if self.length_pad == 0:
            if n < 0x80:
                return bytes((self.tag, n)) + body
            raw = n.to_bytes((n.bit_length() + 7) // 8, "big")
        elif self.length_pad < 0:
            raw = n.to_bytes(max(1, (n.bit_length() + 7) // 8), "big")
        else:
            raw = bytes(self.length_pad) + n.to_bytes(max(1, (n.bit_length() + 7) // 8), "big")
        return bytes((self.tag, 0x80 | len(raw))) + raw + body


def _tree(der: bytes) -> _Node:
    def read(pos: int) -> tuple[_Node, int]:
        tag, first = der[pos], der[pos + 1]
        start = pos + 2
        if first & 0x80:
            count = first & 0x7F
            length = int.from_bytes(der[start : start + count], "big")
            start += count
        else:
            length = first
        end = start + length
        if tag != 0x30:
            return _Node(tag, der[start:end]), end
        children: list[_Node] = []
        at = start
        while at < end:
            child, at = read(at)
            children.append(child)
        return _Node(tag, children), end

    node, end = read(0)
    assert end == len(der)
    return node


def _nodes(node: _Node) -> list[_Node]:
    out = [node]
    if isinstance(node.content, list):
        for child in node.content:
            out += _nodes(child)
    return out


_TAGS = [0x30, 0x31, 0x04, 0x24, 0x02, 0x0A, 0x01, 0x06, 0x05, 0x03, 0x0C, 0xA0, 0x1F]


@st.composite
def _structural(draw: st.DrawFn, der: bytes) -> bytes:
    root = _tree(der)
    for _ in range(draw(st.integers(1, 3))):
        nodes = _nodes(root)
        node = nodes[draw(st.integers(0, len(nodes) - 1))]
        action = draw(
            st.sampled_from(["tag", "long", "drop", "repeat", "swap", "pad", "bool", "resize"])
        )
        if action == "tag":
            node.tag = draw(st.sampled_from(_TAGS))
        elif action == "long":
            node.length_pad = draw(st.sampled_from([-1, 1, 2]))
        elif isinstance(node.content, list) and node.content:
            i = draw(st.integers(0, len(node.content) - 1))
            j = draw(st.integers(0, len(node.content) - 1))
            if action == "drop":
                del node.content[i]
            elif action == "repeat":
                node.content.insert(j, copy.deepcopy(node.content[i]))
            else:
                node.content[i], node.content[j] = node.content[j], node.content[i]
        elif isinstance(node.content, bytes):
            if action == "pad":  # a redundant sign octet
                node.content = draw(st.sampled_from([b"\x00", b"\xff"])) + node.content
            elif action == "bool":
                node.content = bytes([draw(st.integers(0, 255))])
            elif action == "resize":
                if draw(st.booleans()) or not node.content:
                    node.content += draw(st.binary(min_size=1, max_size=2))
                else:
                    node.content = node.content[:-1]
    return root.encode()


@st.composite
def _bytewise(draw: st.DrawFn, der: bytes) -> bytes:
    data = bytearray(der)
    for _ in range(draw(st.integers(1, 3))):
        if not data:
            break
        pos = draw(st.integers(0, len(data) - 1))
        action = draw(st.sampled_from(["flip", "truncate", "insert", "delete", "length"]))
        if action == "flip":
            data[pos] ^= 1 << draw(st.integers(0, 7))
        elif action == "truncate":
            del data[pos:]
        elif action == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=3))
        elif action == "delete":
            del data[pos : pos + draw(st.integers(1, 3))]
        else:  # a length octet (or any octet read as one) moved by a little
            data[pos] = (data[pos] + draw(st.sampled_from([-2, -1, 1, 2]))) % 256
    return bytes(data)


def _source(draw: st.DrawFn) -> bytes:
    kind = draw(st.sampled_from(["real", "sim", "generated"]))
    if kind == "real":
        return _real_der()
    if kind == "sim":
        return draw(st.sampled_from(_sim_ders()))
    return encode_sgx_extension(draw(sgx_extensions))


@st.composite
def _mutated(draw: st.DrawFn) -> bytes:
    der = _source(draw)
    if draw(st.booleans()):
        der = draw(_structural(der))
    if draw(st.booleans()):
        der = draw(_bytewise(der))
    return der


# --- the properties ---------------------------------------------------------------------------


def test_real_and_sim_extensions_parse_as_the_reference_parses_them() -> None:
    for der in (_real_der(), *_sim_ders()):
        ext = _verdict(der)
        assert ext is not None
        assert encode_sgx_extension(ext) == der


def test_sim_fleet_platforms_have_distinct_ppids_under_one_fmspc() -> None:
    exts = [_parse_extension_der(der) for der in _sim_ders()]
    assert len({e.ppid for e in exts}) == len(exts)
    assert len({(e.fmspc, e.pce_id, e.tcb_components) for e in exts}) == 1


@given(_mutated())
def test_mutated_extension_gets_the_reference_verdict(der: bytes) -> None:
    _verdict(der)


@given(sgx_extensions.flatmap(lambda ext: _structural(encode_sgx_extension(ext))))
def test_structurally_mutated_extension_gets_the_reference_verdict(der: bytes) -> None:
    _verdict(der)


@given(st.binary(max_size=400))
def test_arbitrary_bytes_get_the_reference_verdict(der: bytes) -> None:
    _verdict(der)


@given(sgx_extensions)
def test_writer_gives_pyasn1_bytes(ext: SgxExtension) -> None:
    der = encode_sgx_extension(ext)
    assert der == reference_encode(ext)
    assert _verdict(der) == ext


@pytest.mark.parametrize("pad", [-1, 1])
def test_long_form_lengths_are_refused_at_every_level(pad: int) -> None:
    """A length in long form where the short form fits, or with a leading zero octet, is BER,
    not DER: refused wherever it is, as the reference refuses it."""
    der = _sim_ders()[0]
    mutated_count = 0
    for index in range(len(_nodes(_tree(der)))):
        root = _tree(der)
        _nodes(root)[index].length_pad = pad
        mutated = root.encode()
        if mutated == der:  # 0x81/0x82 form of a length of 128 or more: that is DER
            continue
        mutated_count += 1
        assert _verdict(mutated) is None
        with pytest.raises(PpidError, match="canonical DER form"):
            _parse_extension_der(mutated)
    assert mutated_count > 30


def test_a_certificate_carrying_a_mutated_extension_is_refused_through_the_public_api() -> None:
    root = _tree(_real_der())
    assert isinstance(root.content, list)
    ppid_entry = root.content[0]
    assert isinstance(ppid_entry.content, list)
    ppid_entry.content[1].content = bytes(17)
    der = root.encode()
    assert _verdict(der) is None
    with pytest.raises(PpidError, match="PPID: expected 16 bytes, got 17"):
        parse_sgx_extension(cert_with_extension(der))
