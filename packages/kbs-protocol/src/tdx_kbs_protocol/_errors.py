"""The exceptions of tdx_kbs_protocol: one base class, one subclass per kind of failure."""

from __future__ import annotations


class KbsProtocolError(Exception):
    """Base of every error this package raises."""


class MessageError(KbsProtocolError):
    """A protocol message that does not parse or does not validate."""


class UnsupportedKeyError(MessageError):
    """A tee-pubkey JWK of a refused type, curve or algorithm, or one with private members."""


class ResourcePathError(MessageError):
    """A resource path with a bad repository, type or tag, or the wrong number of segments."""


class JweError(KbsProtocolError):
    """A JWE that does not parse or does not decrypt."""


class AdminTokenError(KbsProtocolError):
    """An admin bearer token that is malformed, wrongly signed, expired or otherwise refused."""


class KbsClientError(KbsProtocolError):
    """Base of the client's errors."""


class KbsUnavailable(KbsClientError):
    """The key broker could not be reached, timed out, or answered with a 5xx status."""


class KbsRefused(KbsClientError):
    """The key broker answered with a 4xx status."""

    def __init__(self, status: int, variant: str, detail: str) -> None:
        super().__init__(f"key broker refused ({status} {variant}): {detail}")
        self.status = status
        self.variant = variant
        self.detail = detail


class KbsAnswerError(KbsClientError):
    """A 2xx answer of the key broker that does not parse."""


class StoreKeyEnvelopeError(MessageError):
    """A store-key envelope of the wrong length, domain or instance, or not signed by the owner."""
