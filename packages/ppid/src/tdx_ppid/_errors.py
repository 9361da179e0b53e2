"""The one exception this library raises on bad input."""

from __future__ import annotations


class PpidError(ValueError):
    """The PPID, the PCK certificate chain or its SGX extension is absent or malformed.

    `reason` says what was wrong, in words a user can act on.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason
