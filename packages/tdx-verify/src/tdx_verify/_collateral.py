"""The collateral that verifies a quote, in the field layout of dcap-qvl's QuoteCollateralV3."""

from __future__ import annotations

import base64
import binascii
import json
import re
from dataclasses import dataclass
from typing import Any

from tdx_verify._errors import CollateralFormatError

_PEM_CRL = re.compile(rb"-----BEGIN X509 CRL-----\s*(.+?)\s*-----END X509 CRL-----", re.DOTALL)
_MAX_COLLATERAL_JSON = 8 * 1024 * 1024


@dataclass(frozen=True)
class Collateral:
    """Everything besides the quote that DCAP verification needs.

    Chains are PEM text (leaf first); CRLs are DER; `tcb_info`/`qe_identity` are the exact JSON
    text of the signed objects (the signature covers these bytes); signatures are raw r || s.
    """

    pck_crl_issuer_chain: str
    root_ca_crl: bytes
    pck_crl: bytes
    tcb_info_issuer_chain: str
    tcb_info: str
    tcb_info_signature: bytes
    qe_identity_issuer_chain: str
    qe_identity: str
    qe_identity_signature: bytes

    @classmethod
    def from_json(cls, text: str | bytes) -> Collateral:
        """Read dcap-qvl's JSON form: CRLs and signatures hex (CRLs may also be PEM)."""
        if len(text) > _MAX_COLLATERAL_JSON:
            raise CollateralFormatError("collateral", "JSON document is too large")
        try:
            obj = json.loads(text)
        except (ValueError, UnicodeDecodeError) as exc:
            raise CollateralFormatError("collateral", f"not valid JSON: {exc}") from None
        except RecursionError:
            raise CollateralFormatError("collateral", "not valid JSON: nested too deeply") from None
        if not isinstance(obj, dict):
            raise CollateralFormatError("collateral", "JSON document is not an object")
        return cls(
            pck_crl_issuer_chain=_text(obj, "pck_crl_issuer_chain"),
            root_ca_crl=crl_der(_text(obj, "root_ca_crl"), "root_ca_crl"),
            pck_crl=crl_der(_text(obj, "pck_crl"), "pck_crl"),
            tcb_info_issuer_chain=_text(obj, "tcb_info_issuer_chain"),
            tcb_info=_text(obj, "tcb_info"),
            tcb_info_signature=_hex(obj, "tcb_info_signature"),
            qe_identity_issuer_chain=_text(obj, "qe_identity_issuer_chain"),
            qe_identity=_text(obj, "qe_identity"),
            qe_identity_signature=_hex(obj, "qe_identity_signature"),
        )

    def to_json(self) -> str:
        """Write dcap-qvl's JSON form (`QuoteCollateralV3.from_json` reads it back)."""
        return json.dumps(
            {
                "pck_crl_issuer_chain": self.pck_crl_issuer_chain,
                "root_ca_crl": self.root_ca_crl.hex(),
                "pck_crl": self.pck_crl.hex(),
                "tcb_info_issuer_chain": self.tcb_info_issuer_chain,
                "tcb_info": self.tcb_info,
                "tcb_info_signature": self.tcb_info_signature.hex(),
                "qe_identity_issuer_chain": self.qe_identity_issuer_chain,
                "qe_identity": self.qe_identity,
                "qe_identity_signature": self.qe_identity_signature.hex(),
            }
        )


def _text(obj: dict[str, Any], name: str) -> str:
    value = obj.get(name)
    if not isinstance(value, str):
        raise CollateralFormatError("collateral", f"field {name!r} is missing or not a string")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate escape (\ud800): not Unicode text
        raise CollateralFormatError(
            "collateral", f"field {name!r} is not Unicode text (a lone surrogate)"
        ) from None
    return value


def _hex(obj: dict[str, Any], name: str) -> bytes:
    try:
        return bytes.fromhex(_text(obj, name))
    except ValueError:
        raise CollateralFormatError("collateral", f"field {name!r} is not hex") from None


def crl_der(body: str | bytes, name: str) -> bytes:
    """A CRL given as DER, hex of DER, or PEM, returned as DER."""
    raw = body.encode("ascii", "replace") if isinstance(body, str) else body
    if raw[:1] == b"\x30":
        return raw
    match = _PEM_CRL.search(raw)
    if match is not None:
        try:
            return base64.b64decode(match.group(1), validate=False)
        except (binascii.Error, ValueError):
            raise CollateralFormatError(name, "PEM CRL has invalid base64") from None
    try:
        der = bytes.fromhex(raw.decode("ascii").strip())
    except (ValueError, UnicodeDecodeError):
        raise CollateralFormatError(name, "CRL is neither DER, hex of DER, nor PEM") from None
    if der[:1] != b"\x30":
        raise CollateralFormatError(name, "CRL hex does not decode to a DER SEQUENCE")
    return der


_WS = " \t\n\r"


def raw_json_member(text: str, key: str) -> str:
    """The exact source text of member `key` of the top-level JSON object in `text`.

    Intel signs the bytes of the `tcbInfo` / `enclaveIdentity` object as they appear in the
    response body, so the signed text must be cut out, never re-serialized.
    """
    decoder = json.JSONDecoder()
    try:
        json.loads(text)
    except ValueError as exc:
        raise CollateralFormatError(key, f"response is not valid JSON: {exc}") from None
    except RecursionError:
        raise CollateralFormatError(key, "response is not valid JSON: nested too deeply") from None
    i = _skip(text, 0)
    if i >= len(text) or text[i] != "{":
        raise CollateralFormatError(key, "response is not a JSON object")
    i = _skip(text, i + 1)
    found: str | None = None
    while i < len(text) and text[i] != "}":
        name, i = decoder.raw_decode(text, i)
        i = _skip(text, i)
        if text[i] != ":":
            raise CollateralFormatError(key, "malformed JSON object")
        start = _skip(text, i + 1)
        _, end = decoder.raw_decode(text, start)
        if name == key:
            if found is not None:
                raise CollateralFormatError(key, f"member {key!r} appears twice")
            found = text[start:end]
        i = _skip(text, end)
        if i < len(text) and text[i] == ",":
            i = _skip(text, i + 1)
    if found is None:
        raise CollateralFormatError(key, f"response has no member {key!r}")
    return found


def _skip(text: str, i: int) -> int:
    while i < len(text) and text[i] in _WS:
        i += 1
    return i
