"""The harnesses, by name: each is the module `fuzz.<module>` exposing `HARNESS`."""

from __future__ import annotations

import importlib

from fuzz._harness import Harness

# name -> module of fuzz/. The name is also the corpus folder: fuzz/corpus/<name>/.
MODULES: dict[str, str] = {
    "quote": "quote",
    "verify": "verify",
    "tcb_info": "tcb_info",
    "qe_identity": "qe_identity",
    "crl": "crl",
    "issuer_chain": "issuer_chain",
    "event_log": "event_log",
    "ccel": "ccel",
    "registry_body": "registry_body",
    "identity_body": "identity_body",
    "kbs_jwk": "kbs_jwk",
    "kbs_jwt": "kbs_jwt",
    "kbs_jwe": "kbs_jwe",
    "kbs_evidence": "kbs_evidence",
}


class UnknownHarness(KeyError):
    """A harness name that fuzz/harnesses.py does not list."""


def load(name: str) -> Harness:
    """Import the harness `name` (and through it, the libraries it exercises)."""
    if name not in MODULES:
        raise UnknownHarness(f"unknown harness {name!r}; known: {', '.join(MODULES)}")
    harness = importlib.import_module(f"fuzz.{MODULES[name]}").HARNESS
    if not isinstance(harness, Harness) or harness.name != name:
        raise UnknownHarness(f"fuzz.{MODULES[name]}.HARNESS is not the harness {name!r}")
    return harness
