"""Run tdx_verify and dcap-qvl on the same inputs and report both verdicts."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import dcap_qvl

from tdx_verify import Collateral, Policy, VerificationError, Verifier

ANY_STATUS = Policy(accepted_tcb_statuses=None)


@dataclass
class Verdicts:
    ours_status: str | None
    ours_error: VerificationError | None
    ref_status: str | None
    ref_error: str | None

    @property
    def agree(self) -> bool:
        return self.ours_status == self.ref_status


def both(
    quote: bytes,
    collateral: Collateral,
    now: datetime,
    *,
    root_pem: bytes | None = None,
    root_der: bytes | None = None,
) -> Verdicts:
    """Our verdict under a policy accepting every (non-revoked) status, and dcap-qvl's."""
    verifier = Verifier(root_ca_pem=root_pem, policy=ANY_STATUS)
    ours_status: str | None = None
    ours_error: VerificationError | None = None
    try:
        ours_status = verifier.verify(quote, collateral, now=now).tcb_status
    except VerificationError as exc:
        ours_error = exc
    ref_status: str | None = None
    ref_error: str | None = None
    try:
        coll = dcap_qvl.QuoteCollateralV3.from_json(collateral.to_json())
        ts = int(now.timestamp())
        report = (
            dcap_qvl.verify(quote, coll, ts)
            if root_der is None
            else dcap_qvl.verify_with_root_ca(quote, coll, root_der, ts)
        )
        ref_status = report.status
    except ValueError as exc:
        ref_error = str(exc)
    return Verdicts(ours_status, ours_error, ref_status, ref_error)
