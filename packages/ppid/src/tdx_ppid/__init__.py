"""The PPID of a TDX quote: certification data types 1-3, and the PCK certificate's SGX extension
(types 4, 5 and 5 nested in 6), parsed strictly and built for issuing PCK certificates."""

from tdx_ppid._errors import PpidError
from tdx_ppid._extension import (
    SGX_EXTENSION_OID,
    PlatformConfiguration,
    SgxExtension,
    encode_sgx_extension,
    parse_sgx_extension,
)
from tdx_ppid._quote import PemLoader, Ppid, PpidKind, pck_chain_from_quote, quote_ppid

__all__ = [
    "SGX_EXTENSION_OID",
    "PemLoader",
    "PlatformConfiguration",
    "Ppid",
    "PpidError",
    "PpidKind",
    "SgxExtension",
    "encode_sgx_extension",
    "parse_sgx_extension",
    "pck_chain_from_quote",
    "quote_ppid",
]
