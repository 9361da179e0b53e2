"""The PCCS's TCB info answer: `{"tcbInfo": {...}, "signature": "..."}` as the PCCS sends it.

The signed member is cut out of the body (`raw_json_member`, the exact bytes Intel signs) and
parsed (`parse_tcb_info`), as `PccsClient` and `Verifier` do. Refusing is
`tdx_verify.VerificationError` (`CollateralFormatError`). A TCB info that parses must have
levels, and SVN components that are bytes.
"""

from __future__ import annotations

from fuzz._harness import Finding, Harness
from tdx_verify import VerificationError
from tdx_verify._pccs import _signed_member
from tdx_verify._tcb import parse_tcb_info


def target(data: bytes) -> None:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return  # PccsClient refuses a body that is not UTF-8 before parsing it
    member, _signature = _signed_member(text, "tcbInfo")
    info = parse_tcb_info(member)
    if not info.levels:
        raise Finding("a TCB info with no levels parsed")
    for level in info.levels:
        if not all(0 <= svn <= 255 for svn in (*level.sgx_components, *level.tdx_components)):
            raise Finding("a TCB component SVN outside 0..255 parsed")


HARNESS = Harness(
    name="tcb_info",
    summary="the PCCS TCB info answer: raw_json_member + parse_tcb_info",
    target=target,
    allowed=(VerificationError,),
)
