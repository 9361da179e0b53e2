"""The PCCS's QE identity answer: `{"enclaveIdentity": {...}, "signature": "..."}`.

Cut (`raw_json_member`) and parsed (`parse_qe_identity`) as `PccsClient` and `Verifier` do.
Refusing is `tdx_verify.VerificationError` (`CollateralFormatError`).
"""

from __future__ import annotations

from fuzz._harness import Finding, Harness
from tdx_verify import VerificationError
from tdx_verify._pccs import _signed_member
from tdx_verify._tcb import parse_qe_identity


def target(data: bytes) -> None:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return  # PccsClient refuses a body that is not UTF-8 before parsing it
    member, _signature = _signed_member(text, "enclaveIdentity")
    identity = parse_qe_identity(member)
    if not identity.levels:
        raise Finding("a QE identity with no levels parsed")
    if len(identity.mr_signer) != 32 or len(identity.attributes) != 16:
        raise Finding("a QE identity with a wrong-sized field parsed")


HARNESS = Harness(
    name="qe_identity",
    summary="the PCCS QE identity answer: raw_json_member + parse_qe_identity",
    target=target,
    allowed=(VerificationError,),
)
