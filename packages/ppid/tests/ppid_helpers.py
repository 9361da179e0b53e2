"""Test helpers: a small independent DER writer, certificates carrying a chosen SGX extension,
a test PKI (root -> platform CA -> PCK leaf) and minimal quotes around a certification data."""

from __future__ import annotations

import dataclasses
import datetime
import functools
import re
from collections.abc import Sequence

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from hypothesis import strategies as st
from pyasn1.codec.der import encoder as der_encoder
from pyasn1.type import univ

from tdx_ppid import SGX_EXTENSION_OID, PlatformConfiguration, SgxExtension
from tdx_quote import (
    AttestationKeyType,
    BodyType,
    CertificationData,
    Header,
    Quote,
    QuoteSignatureData,
    TdReport10,
    TeeType,
)
from tests.vectors import INTEL_QUOTE, vector_path

REAL_QUOTE = vector_path(INTEL_QUOTE)

SGX = SGX_EXTENSION_OID


# --- an independent DER writer (short and long definite lengths) ------------------------------


def tlv(tag: int, content: bytes) -> bytes:
    n = len(content)
    if n < 0x80:
        length = bytes([n])
    else:
        raw = n.to_bytes((n.bit_length() + 7) // 8, "big")
        length = bytes([0x80 | len(raw)]) + raw
    return bytes([tag]) + length + content


def seq(*items: bytes) -> bytes:
    return tlv(0x30, b"".join(items))


def oid(dotted: str) -> bytes:
    return bytes(der_encoder.encode(univ.ObjectIdentifier(dotted)))


def entry(dotted: str, value: bytes) -> bytes:
    return seq(oid(dotted), value)


def octets(data: bytes) -> bytes:
    return tlv(0x04, data)


def integer(n: int, tag: int = 0x02) -> bytes:
    length = max(1, (n.bit_length() + 8) // 8)  # room for the sign bit
    return tlv(tag, n.to_bytes(length, "big", signed=True))


def enumerated(n: int) -> bytes:
    return integer(n, tag=0x0A)


def boolean(flag: bool) -> bytes:
    return tlv(0x01, b"\xff" if flag else b"\x00")


# --- the reference extension, as a list of entries tests can edit ---------------------------

PPID = bytes(range(16))
CPU_SVN = bytes(range(100, 116))
COMPONENTS = tuple(range(1, 17))
PCE_SVN = 13
PCE_ID = b"\x00\x01"
FMSPC = bytes.fromhex("B0C06F000000")
PLATFORM_INSTANCE_ID = bytes(range(200, 216))


def tcb_entries() -> list[bytes]:
    items = [entry(f"{SGX}.2.{i}", integer(svn)) for i, svn in enumerate(COMPONENTS, 1)]
    items.append(entry(f"{SGX}.2.17", integer(PCE_SVN)))
    items.append(entry(f"{SGX}.2.18", octets(CPU_SVN)))
    return items


def config_entries() -> list[bytes]:
    return [
        entry(f"{SGX}.7.1", boolean(True)),
        entry(f"{SGX}.7.2", boolean(False)),
        entry(f"{SGX}.7.3", boolean(True)),
    ]


def top_entries(
    tcb: Sequence[bytes] | None = None, config: Sequence[bytes] | None = None
) -> list[bytes]:
    return [
        entry(f"{SGX}.1", octets(PPID)),
        entry(f"{SGX}.2", seq(*(tcb_entries() if tcb is None else tcb))),
        entry(f"{SGX}.3", octets(PCE_ID)),
        entry(f"{SGX}.4", octets(FMSPC)),
        entry(f"{SGX}.5", enumerated(1)),
        entry(f"{SGX}.6", octets(PLATFORM_INSTANCE_ID)),
        entry(f"{SGX}.7", seq(*(config_entries() if config is None else config))),
    ]


REFERENCE_EXTENSION = SgxExtension(
    ppid=PPID,
    tcb_components=COMPONENTS,
    pce_svn=PCE_SVN,
    cpu_svn=CPU_SVN,
    pce_id=PCE_ID,
    fmspc=FMSPC,
    sgx_type=1,
    platform_instance_id=PLATFORM_INSTANCE_ID,
    configuration=PlatformConfiguration(dynamic_platform=True, cached_keys=False, smt_enabled=True),
)


# --- certificates -----------------------------------------------------------------------------

_NOT_BEFORE = datetime.datetime(2025, 1, 1, tzinfo=datetime.UTC)
_NOT_AFTER = datetime.datetime(2035, 1, 1, tzinfo=datetime.UTC)


@functools.cache
def key(name: str) -> ec.EllipticCurvePrivateKey:
    """One P-256 key per role, generated once per test session."""
    return ec.generate_private_key(ec.SECP256R1())


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def make_cert(
    cn: str,
    issuer_cn: str,
    *,
    extensions: Sequence[tuple[str, bytes]] = (),
    ca: bool = False,
) -> x509.Certificate:
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(cn))
        .issuer_name(_name(issuer_cn))
        .public_key(key(cn).public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(_NOT_BEFORE)
        .not_valid_after(_NOT_AFTER)
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    for dotted, der in extensions:
        builder = builder.add_extension(
            x509.UnrecognizedExtension(x509.ObjectIdentifier(dotted), der), critical=False
        )
    return builder.sign(key(issuer_cn), hashes.SHA256())


def cert_with_extension(der: bytes) -> x509.Certificate:
    """A PCK-like leaf whose SGX extension value is exactly `der`."""
    return make_cert("Test PCK Certificate", "Test PCK Platform CA", extensions=[(SGX, der)])


def make_chain(extension_der: bytes | None) -> list[x509.Certificate]:
    """Leaf (with the SGX extension unless None), platform CA, root: the order of type 5."""
    root = make_cert("Test Root CA", "Test Root CA", ca=True)
    platform = make_cert("Test PCK Platform CA", "Test Root CA", ca=True)
    exts = [] if extension_der is None else [(SGX, extension_der)]
    leaf = make_cert("Test PCK Certificate", "Test PCK Platform CA", extensions=exts)
    return [leaf, platform, root]


def to_pem(certs: Sequence[x509.Certificate]) -> bytes:
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs)


def real_pem_blocks() -> list[bytes]:
    """The PEM certificates found in the raw bytes of the real quote: leaf, platform CA, root."""
    data = REAL_QUOTE.read_bytes()
    return re.findall(rb"-----BEGIN CERTIFICATE-----.*?-----END CERTIFICATE-----", data, re.S)


# --- quotes -----------------------------------------------------------------------------------


def make_quote(certification_data: CertificationData) -> Quote:
    """A v4 TDX quote (zero measurements and signature) around `certification_data`."""
    header = Header(
        version=4,
        attestation_key_type=AttestationKeyType.ECDSA_P256,
        tee_type=TeeType.TDX,
        qe_svn=0,
        pce_svn=0,
        qe_vendor_id=bytes(16),
        user_data=bytes(20),
    )
    sizes = {
        "tee_tcb_svn": 16,
        "seam_attributes": 8,
        "td_attributes": 8,
        "xfam": 8,
        "report_data": 64,
    }
    body = TdReport10(
        **{f.name: bytes(sizes.get(f.name, 48)) for f in dataclasses.fields(TdReport10)}
    )
    return Quote(
        header=header,
        body_type=BodyType.TD_REPORT_10,
        body=body,
        signature_data=QuoteSignatureData(
            signature=bytes(64),
            attestation_key=bytes(64),
            certification_data=certification_data,
        ),
    )


# --- hypothesis -------------------------------------------------------------------------------


def exact(n: int) -> st.SearchStrategy[bytes]:
    return st.binary(min_size=n, max_size=n)


optional_flag = st.none() | st.booleans()

sgx_extensions: st.SearchStrategy[SgxExtension] = st.builds(
    SgxExtension,
    ppid=exact(16),
    tcb_components=st.tuples(*([st.integers(0, 255)] * 16)),
    pce_svn=st.integers(0, 0xFFFF),
    cpu_svn=exact(16),
    pce_id=exact(2),
    fmspc=exact(6),
    sgx_type=st.sampled_from([0, 1, 2]),
    platform_instance_id=st.none() | exact(16),
    configuration=st.none()
    | st.builds(
        PlatformConfiguration,
        dynamic_platform=optional_flag,
        cached_keys=optional_flag,
        smt_enabled=optional_flag,
    ),
)
