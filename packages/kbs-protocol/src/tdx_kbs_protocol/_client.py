"""An async client of the key broker (httpx): attested resource retrieval and admin calls."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Final, Protocol

import httpx

from tdx_kbs_protocol._codec import b64url_encode
from tdx_kbs_protocol._errors import (
    JweError,
    KbsAnswerError,
    KbsRefused,
    KbsUnavailable,
    MessageError,
)
from tdx_kbs_protocol._jwe import TeeKeyPair
from tdx_kbs_protocol._messages import (
    ERROR_TYPE_BASE,
    PROTOCOL_VERSION,
    TEE_TDX,
    Attestation,
    Challenge,
    Request,
    RuntimeData,
    TdxEvidence,
    TeeEvidence,
    TeePublicKey,
    runtime_data_binding,
)
from tdx_kbs_protocol._resource import ResourcePath

SESSION_COOKIE: Final = "kbs-session-id"
MAX_ANSWER_BYTES: Final = 32 * 1024 * 1024
# RFC 6265 cookie-octets, 1 to 4096 of them.
_COOKIE_VALUE: Final = re.compile(r"[\x21\x23-\x2b\x2d-\x3a\x3c-\x5b\x5d-\x7e]{1,4096}")


class EvidenceProvider(Protocol):
    """What the client needs from the TD: additional evidence and a quote over report_data."""

    async def additional_evidence(self, nonce: str, tee_pubkey: TeePublicKey) -> str: ...

    async def quote(self, report_data: bytes) -> TdxEvidence: ...


@dataclass(frozen=True)
class _Answer:
    status: int
    content: bytes
    session: str | None


def _refusal(answer: _Answer) -> KbsRefused:
    variant = "Unknown"
    detail = f"HTTP {answer.status}"
    try:
        body = json.loads(answer.content[:65536])
    except ValueError:
        body = None
    if isinstance(body, dict):
        kind = body.get("type")
        if isinstance(kind, str):
            variant = kind.removeprefix(ERROR_TYPE_BASE)[:128]
        text = body.get("detail")
        if isinstance(text, str):
            detail = text[:1024]
    return KbsRefused(answer.status, variant, detail)


class KbsClient:
    """One client per key broker; each get_resource runs its own fresh attested session."""

    def __init__(
        self,
        base_url: str,
        *,
        timeout: float = 10.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._http = httpx.AsyncClient(
            base_url=base_url.rstrip("/") + "/kbs/v0",
            timeout=timeout,
            transport=transport,
            follow_redirects=False,
        )

    async def _send(
        self,
        method: str,
        url: str,
        *,
        json_body: object = None,
        content: bytes | None = None,
        headers: dict[str, str] | None = None,
        cookies: dict[str, str] | None = None,
    ) -> _Answer:
        request = self._http.build_request(
            method, url, json=json_body, content=content, headers=headers
        )
        if cookies:
            request.headers["Cookie"] = "; ".join(f"{k}={v}" for k, v in cookies.items())
        try:
            response = await self._http.send(request, stream=True)
            try:
                body = bytearray()
                async for chunk in response.aiter_bytes():
                    body += chunk
                    if len(body) > MAX_ANSWER_BYTES:
                        raise KbsAnswerError("key broker answer is too large")
            finally:
                await response.aclose()
        except httpx.HTTPError as exc:
            raise KbsUnavailable(f"key broker unreachable: {type(exc).__name__}") from exc
        finally:
            # Sessions are carried explicitly; nothing lingers in httpx's cookie jar.
            self._http.cookies.clear()
        answer = _Answer(response.status_code, bytes(body), response.cookies.get(SESSION_COOKIE))
        if answer.status >= 500:
            raise KbsUnavailable(f"key broker answered HTTP {answer.status}")
        if answer.status >= 400:
            raise _refusal(answer)
        if not 200 <= answer.status < 300:
            raise KbsAnswerError(f"key broker answered HTTP {answer.status}")
        return answer

    @staticmethod
    def _json(answer: _Answer, what: str) -> object:
        try:
            return json.loads(answer.content)
        except ValueError as exc:
            raise KbsAnswerError(f"{what} answer is not JSON") from exc

    async def get_resource(self, path: ResourcePath, evidence: EvidenceProvider) -> bytes:
        """One fresh session: auth, attest with a fresh TeeKeyPair, GET with the cookie, decrypt."""
        auth = await self._send(
            "POST",
            "/auth",
            json_body=Request(PROTOCOL_VERSION, TEE_TDX, "").to_json(),
        )
        try:
            challenge = Challenge.from_json(self._json(auth, "auth"))
        except MessageError as exc:
            raise KbsAnswerError(f"auth answer: {exc}") from exc
        session = auth.session
        if session is None or _COOKIE_VALUE.fullmatch(session) is None:
            raise KbsAnswerError(f"auth answer has no valid {SESSION_COOKIE} cookie")
        cookies = {SESSION_COOKIE: session}

        keys = TeeKeyPair.generate()
        additional = await evidence.additional_evidence(challenge.nonce, keys.public)
        report_data = runtime_data_binding(challenge.nonce, keys.public, additional)
        tdx = await evidence.quote(report_data)
        attestation = Attestation(
            runtime_data=RuntimeData(challenge.nonce, keys.public),
            tee_evidence=TeeEvidence(tdx, additional),
        )
        attest = await self._send(
            "POST", "/attest", json_body=attestation.to_json(), cookies=cookies
        )
        token = self._json(attest, "attest")
        if not isinstance(token, dict) or not isinstance(token.get("token"), str):
            raise KbsAnswerError("attest answer has no token")

        resource = await self._send("GET", f"/resource/{path}", cookies=cookies)
        try:
            return keys.decrypt(self._json(resource, "resource"))
        except JweError as exc:
            raise KbsAnswerError(f"resource answer: {exc}") from exc

    async def put_resource(self, path: ResourcePath, data: bytes, admin_token: str) -> None:
        await self._send(
            "POST",
            f"/resource/{path}",
            content=data,
            headers={
                "Authorization": f"Bearer {admin_token}",
                "Content-Type": "application/octet-stream",
            },
        )

    async def set_policy(self, rego: str, admin_token: str) -> None:
        await self._send(
            "POST",
            "/resource-policy",
            json_body={"policy": b64url_encode(rego.encode("utf-8"))},
            headers={"Authorization": f"Bearer {admin_token}"},
        )

    async def aclose(self) -> None:
        await self._http.aclose()
