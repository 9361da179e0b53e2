"""The kbs-types crate's JSON fixtures and Trustee's JCS runtime-data vector (tests/vectors)."""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path

import pytest
import rfc8785

from tdx_kbs_protocol import (
    Attestation,
    Challenge,
    JweError,
    MessageError,
    Request,
    TeeKeyPair,
    UnsupportedKeyError,
)
from tdx_kbs_protocol._jwe import parse_protected

VECTORS = Path(__file__).parent / "vectors"


def load(name: str) -> object:
    return json.loads((VECTORS / name).read_text())


def test_request_fixture_parses() -> None:
    request = Request.from_json(load("kbs_types_request.json"))
    assert (request.version, request.tee, request.extra_params) == ("0.0.0", "tdx", "")
    assert request.to_json() == load("kbs_types_request.json")


def test_challenge_fixture_parses() -> None:
    challenge = Challenge.from_json(load("kbs_types_challenge.json"))
    assert (challenge.nonce, challenge.extra_params) == ("42", "")
    assert challenge.to_json() == load("kbs_types_challenge.json")


@pytest.mark.parametrize(
    "name", ["kbs_types_attestation_ec.json", "kbs_types_attestation_rsa.json"]
)
def test_attestation_fixture_key_is_refused_as_unsupported(name: str) -> None:
    # The crate's fixtures carry fake keys ("fakecrv", "fakealgorithm"): the structure parses up
    # to the key, which our strict TeePublicKey refuses as unsupported (not as a shape error).
    with pytest.raises(UnsupportedKeyError):
        Attestation.from_json(load(name))


def test_attestation_fixture_with_a_real_key_reaches_the_evidence() -> None:
    data = load("kbs_types_attestation_ec.json")
    assert isinstance(data, dict)
    data["runtime-data"]["tee-pubkey"] = dict(TeeKeyPair.generate().public.jwk)
    # primary_evidence "test_primary_evidence" is not TDX evidence: refused, and only that.
    with pytest.raises(MessageError, match="TDX evidence is not a JSON object"):
        Attestation.from_json(data)
    quote = base64.b64encode(b"q" * 100).decode()
    data["tee-evidence"]["primary_evidence"] = {"cc_eventlog": None, "quote": quote}
    attestation = Attestation.from_json(data)
    assert attestation.runtime_data.nonce == "test_nonce"
    assert attestation.tee_evidence.additional_evidence == "test_additional_evidence"
    assert attestation.tee_evidence.primary_evidence.quote == b"q" * 100
    assert attestation.init_data is None


def test_protected_header_aad_vector() -> None:
    vector = load("kbs_types_protected_header_aad.json")
    assert isinstance(vector, dict)
    text = json.dumps(vector["header"], separators=(",", ":"))
    assert base64.urlsafe_b64encode(text.encode()).rstrip(b"=").decode() == vector["aad"]
    assert parse_protected(vector["aad"]) == vector["header"]


@pytest.mark.parametrize(
    ("name", "header"),
    [
        ("kbs_types_response.json", {"alg": "fakealg", "enc": "fakeenc"}),
        (
            "kbs_types_response_nested_protected_header.json",
            {
                "alg": "fakealg",
                "enc": "fakeenc",
                "epk": {
                    "kty": "OKP",
                    "crv": "X25519",
                    "x": "hSDwCYkwp1R0i33ctD73Wg2_Og0mOBr066SpjqqbTmo",
                },
            },
        ),
    ],
)
def test_response_fixtures_parse_and_are_refused_for_their_fake_alg(
    name: str, header: dict[str, object]
) -> None:
    response = load(name)
    assert isinstance(response, dict)
    assert parse_protected(response["protected"]) == header
    with pytest.raises(JweError, match="JWE must be ECDH-ES"):
        TeeKeyPair.generate().decrypt(response)


def test_trustee_jcs_runtime_data_vector() -> None:
    vector = load("trustee_jcs_runtime_data.json")
    assert isinstance(vector, dict)
    digest = hashlib.sha384(rfc8785.dumps(vector["structured"])).hexdigest()
    assert digest == vector["digest_hex"]
