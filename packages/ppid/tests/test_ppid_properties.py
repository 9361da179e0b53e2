"""Properties: encode -> parse round-trips for any extension, and arbitrary or mutated DER only
ever raises PpidError (anything accepted is exactly what the encoder would write)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from ppid_helpers import cert_with_extension, sgx_extensions

from tdx_ppid import PpidError, SgxExtension, encode_sgx_extension, parse_sgx_extension


def _parse_or_refuse(der: bytes) -> SgxExtension | None:
    try:
        ext = parse_sgx_extension(cert_with_extension(der))
    except PpidError:
        return None
    assert encode_sgx_extension(ext) == der
    return ext


@given(sgx_extensions)
def test_encode_then_parse_round_trips(ext: SgxExtension) -> None:
    der = encode_sgx_extension(ext)
    assert parse_sgx_extension(cert_with_extension(der)) == ext


@given(st.binary(max_size=600))
def test_random_bytes_only_raise_ppid_error(der: bytes) -> None:
    _parse_or_refuse(der)


@st.composite
def _mutated(draw: st.DrawFn) -> tuple[bytes, bytes]:
    der = encode_sgx_extension(draw(sgx_extensions))
    data = bytearray(der)
    for _ in range(draw(st.integers(1, 4))):
        action = draw(st.sampled_from(["flip", "insert", "delete", "truncate"]))
        pos = draw(st.integers(0, max(len(data) - 1, 0)))
        if action == "flip" and data:
            data[pos] ^= draw(st.integers(1, 255))
        elif action == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=4))
        elif action == "delete" and data:
            del data[pos : pos + draw(st.integers(1, 4))]
        else:
            del data[pos:]
    return der, bytes(data)


@given(_mutated())
def test_mutated_der_only_raises_ppid_error_or_is_canonical(case: tuple[bytes, bytes]) -> None:
    original, mutated = case
    ext = _parse_or_refuse(mutated)
    if mutated == original:
        assert ext is not None
