"""Write the seed corpora of fuzz/corpus/ (`python -m fuzz.seeds`, in the fuzz environment).

The seeds are the real Intel vector (quote, collateral, at its valid time), the real GCP
quote, and quotes and collateral from an in-process simulator (`tdx_sim`) in a temporary
state directory; every harness's inputs are cut from them. Regenerating changes the simulator's
keys, so the committed corpus is kept as it is unless a harness's input format changes.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
import tempfile
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import quote as url_quote

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa as rsa_key
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding

from fuzz import issuer_chain, kbs_evidence, kbs_jwe, kbs_jwt, verify
from tdx_kbs_protocol import (
    Attestation,
    IdentityEvidence,
    RuntimeData,
    TdxEvidence,
    TeeEvidence,
    encrypt_resource,
    make_admin_token,
    runtime_data_binding,
)
from tdx_kbs_protocol._identity import possession_message
from tdx_measure import (
    BootEvent,
    ConfigEvent,
    EventLog,
    ExecutableEvent,
    IdentityEvent,
    SshHostKeyEvent,
    TlsKeyEvent,
    WorkloadEvent,
    ssh_ed25519_line,
)
from tdx_quote import build_quote, parse_quote
from tdx_sim import SimOptions, SimPlatform

ROOT = Path(__file__).resolve().parent.parent
CORPUS = ROOT / "fuzz" / "corpus"
VECTORS = ROOT / "tests" / "vectors"
INTEL_VALID_AT = 1752919234  # inside every validity window of the Intel vector's collateral
SIM_NOW = datetime(2026, 1, 15, 12, 0, tzinfo=UTC)


def write(harness: str, name: str, data: bytes) -> None:
    folder = CORPUS / harness
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_bytes(data)


def signed_response(member: str, body: str, signature_hex: str) -> bytes:
    """A PCCS answer as the PCCS sends it: the signed object's text, then its signature."""
    return f'{{"{member}":{body},"signature":"{signature_hex}"}}'.encode()


def collateral_seeds(tag: str, collateral: dict[str, str]) -> None:
    """The PCCS answers of `collateral`. The crl and issuer_chain harnesses check theirs
    against the Intel collateral and root: only Intel's CRLs and chains are seeds there."""
    write(
        "tcb_info",
        f"{tag}.json",
        signed_response("tcbInfo", collateral["tcb_info"], collateral["tcb_info_signature"]),
    )
    write(
        "qe_identity",
        f"{tag}.json",
        signed_response(
            "enclaveIdentity", collateral["qe_identity"], collateral["qe_identity_signature"]
        ),
    )
    if tag != "intel":
        return
    # The crl harness's first byte picks the CRL: even, the PCK CRL; odd, the root CA CRL.
    pck, root = bytes.fromhex(collateral["pck_crl"]), bytes.fromhex(collateral["root_ca_crl"])
    write("crl", f"{tag}_pck.der", b"\x00" + pck)
    write("crl", f"{tag}_root.hex", b"\x01" + root.hex().encode())
    pem = base64.encodebytes(root).decode()
    write(
        "crl",
        f"{tag}_root.pem",
        f"\x01-----BEGIN X509 CRL-----\n{pem}-----END X509 CRL-----\n".encode(),
    )
    for name, header in (
        ("pck_crl_issuer_chain", "SGX-PCK-CRL-Issuer-Chain"),
        ("tcb_info_issuer_chain", "TCB-Info-Issuer-Chain"),
    ):
        write(
            "issuer_chain",
            f"{tag}_{name}.txt",
            issuer_chain.encode(header, url_quote(collateral[name], safe="")),
        )


def sim_cases(state: Path) -> Iterable[tuple[str, verify.Case, dict[str, str]]]:
    base = SimPlatform(state, SimOptions(), now=SIM_NOW)
    root_der = x509.load_pem_x509_certificate(base.root_ca_pem).public_bytes(Encoding.DER)
    for tag, options in (
        ("sim_default", SimOptions()),
        ("sim_debug", SimOptions(debug_td=True)),
        ("sim_out_of_date", SimOptions(tcb_status="OutOfDate")),
        ("sim_revoked_pck", SimOptions(revoke_pck=True)),
    ):
        platform = SimPlatform(state, options, now=SIM_NOW)
        quote = platform.quote(hashlib.sha512(tag.encode()).digest())
        collateral = platform.collateral(SIM_NOW)
        text = json.dumps(collateral, separators=(",", ":")).encode()
        yield tag, verify.Case(int(SIM_NOW.timestamp()), root_der, quote, text), collateral


def event_log() -> EventLog:
    """A log with one event of every type."""
    return EventLog.from_events(
        [
            BootEvent(boot_nonce=bytes(range(32)), timestamp=1700000000),
            ExecutableEvent(
                role="podman",
                path="/usr/bin/podman",
                sha384=bytes(48),
                build_id=bytes(range(20)),
                machine="EM_X86_64",
            ),
            ConfigEvent.of({"registry_url": "https://registry.example", "port": "8443"}),
            IdentityEvent(role="operator", pubkey=bytes(range(32))),
            IdentityEvent(role="owner", pubkey=bytes(range(1, 33))),
            SshHostKeyEvent(public_key=ssh_ed25519_line(bytes(range(2, 34)))),
            TlsKeyEvent(spki_sha256=bytes(range(3, 35))),
            WorkloadEvent(
                transition="configure",
                image="registry.example/app:1",
                image_id="sha256:" + "ab" * 32,
                persist_dirs=("/data",),
                port=8080,
            ),
            WorkloadEvent(
                transition="expose",
                image="registry.example/app:1",
                image_id="sha256:" + "ab" * 32,
                persist_dirs=("/data",),
                port=8080,
            ),
        ]
    )


def identity(seed: int) -> dict[str, str]:
    return {
        "pubkey": bytes([seed] * 32).hex(),
        "instance_signature": bytes([seed + 1] * 64).hex(),
        "identity_signature": bytes([seed + 2] * 64).hex(),
    }


def app_seeds(log: EventLog, quote: bytes) -> None:
    def body(obj: object) -> bytes:
        return json.dumps(obj, separators=(",", ":")).encode()

    register = {
        "instance_pubkey": bytes(range(32)).hex(),
        "ppid": bytes(range(16)).hex(),
        "attestation_quote": base64.b64encode(quote).decode(),
    }
    write("registry_body", "minimal.json", body(register))
    write(
        "registry_body",
        "full_v2.json",
        body(
            {
                **register,
                "operator": identity(1),
                "owner": identity(4),
                "event_log": log.to_json(),
                "challenge": bytes(range(32, 64)).hex(),
                "instance_signature": bytes(64).hex(),
            }
        ),
    )
    pubkey = bytes(range(32)).hex()
    write(
        "identity_body",
        "register.json",
        b"\x00" + body({"pubkey": bytes([7] * 32).hex(), "signature": bytes([8] * 64).hex()}),
    )
    write(
        "identity_body",
        "configure.json",
        b"\x01"
        + body(
            {
                "action": "configure",
                "seq": 1,
                "instance_pubkey": pubkey,
                "image": "registry.example/app:1",
                "persist_dirs": ["/data"],
                "port": 8080,
            }
        ),
    )
    write(
        "identity_body",
        "expose.json",
        b"\x02"
        + body(
            {
                "action": "expose",
                "seq": 2,
                "instance_pubkey": pubkey,
                "image": "registry.example/app@sha256:" + "ab" * 32,
            }
        ),
    )
    write(
        "identity_body",
        "configure_v1.json",
        b"\x04" + body({"instance_pubkey": pubkey, "image": "app", "persist_dirs": [], "port": 1}),
    )


def kbs_seeds(log: EventLog, intel_quote: bytes) -> None:
    admin = make_admin_token(kbs_jwt.key(), now=kbs_jwt.NOW)
    write("kbs_jwt", "admin.txt", b"\x00" + admin.encode())
    token = kbs_jwt.issuer().issue({"sub": "fuzz"}, now=kbs_jwt.NOW)
    write("kbs_jwt", "attestation.txt", b"\x01" + token.encode())
    tee = kbs_jwe.tee_key()
    write("kbs_jwk", "ec_p256.json", json.dumps(dict(tee.public.jwk)).encode())
    rsa = rsa_key.generate_private_key(public_exponent=65537, key_size=2048).public_key()
    numbers = rsa.public_numbers()

    def b64u(n: int) -> str:
        return (
            base64.urlsafe_b64encode(n.to_bytes((n.bit_length() + 7) // 8, "big"))
            .rstrip(b"=")
            .decode()
        )

    write(
        "kbs_jwk",
        "rsa_2048.json",
        json.dumps(
            {"kty": "RSA", "alg": "RSA-OAEP-256", "n": b64u(numbers.n), "e": b64u(numbers.e)}
        ).encode(),
    )
    write(
        "kbs_jwe", "resource.json", json.dumps(encrypt_resource(b"store key", tee.public)).encode()
    )
    # An attest body whose evidence passes every check the kbs_evidence harness makes.
    instance = Ed25519PrivateKey.from_private_bytes(bytes(range(100, 132)))
    instance_pub = instance.public_key().public_bytes_raw()
    possession = instance.sign(possession_message(kbs_evidence.SESSION_NONCE, tee.public))
    evidence = IdentityEvidence(
        instance_pubkey=instance_pub, event_log=log.to_json(), possession=possession
    ).encode()
    parsed = parse_quote(intel_quote, allow_zero_padding=True)
    body_ = dataclasses.replace(
        parsed.body,
        rtmr3=log.replay(),
        report_data=runtime_data_binding(kbs_evidence.SESSION_NONCE, tee.public, evidence),
    )
    quote = build_quote(dataclasses.replace(parsed, body=body_))
    attest = Attestation(
        runtime_data=RuntimeData(nonce=kbs_evidence.SESSION_NONCE, tee_pubkey=tee.public),
        tee_evidence=TeeEvidence(
            primary_evidence=TdxEvidence(quote=quote, cc_eventlog=None),
            additional_evidence=evidence,
        ),
    )
    write("kbs_evidence", "attest.json", b"\x01" + json.dumps(attest.to_json()).encode())
    write(
        "kbs_evidence",
        "auth.json",
        b"\x00" + json.dumps({"version": "0.4.0", "tee": "tdx", "extra-params": ""}).encode(),
    )


def main() -> None:
    intel_quote = (VECTORS / "tdx_quote_v4.bin").read_bytes()
    intel_text = (VECTORS / "tdx_quote_v4_collateral.json").read_bytes()
    write(
        "verify",
        "intel_v4.bin",
        verify.encode(verify.Case(INTEL_VALID_AT, b"", intel_quote, intel_text)),
    )
    collateral_seeds("intel", json.loads(intel_text))
    with tempfile.TemporaryDirectory() as tmp:
        for index, (tag, case, collateral) in enumerate(sim_cases(Path(tmp))):
            write("verify", f"{tag}.bin", verify.encode(case))
            write("quote", f"{tag}.bin", case.quote)
            if index == 0:
                collateral_seeds("sim", collateral)
    log = event_log()
    app_seeds(log, intel_quote)
    kbs_seeds(log, intel_quote)
    write("event_log", "every_type.json", log.to_json().encode())
    write("event_log", "boot_only.json", EventLog.from_events(log.events[:1]).to_json().encode())
    write("event_log", "spaced.json", json.dumps(json.loads(log.to_json()), indent=1).encode())


if __name__ == "__main__":
    main()
