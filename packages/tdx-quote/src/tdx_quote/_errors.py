"""The one exception this library raises on bad input."""

from __future__ import annotations


class QuoteFormatError(ValueError):
    """The bytes are not a well-formed TDX quote. `field` names the offending field path
    (for example ``signature_data.certification_data.size``)."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason
