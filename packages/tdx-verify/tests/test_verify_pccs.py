"""PccsClient against an httpx.MockTransport serving the real vector's collateral the way Intel's
v4 API does, and CollateralCache's fetch-once behaviour."""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st
from verify_pccs_app import pccs_transport
from verify_vectors import VECTOR_NOW

from tdx_verify import (
    CacheEvent,
    Collateral,
    CollateralCache,
    CollateralExpiredError,
    PccsClient,
    PccsError,
    QuoteParseError,
    Verifier,
)
from tdx_verify._collateral import raw_json_member

FMSPC = bytes.fromhex("B0C06F000000")


def pccs_app(
    c: Collateral, *, requests: list[str] | None = None, root_crl_body: str = "hex"
) -> httpx.MockTransport:
    return pccs_transport(lambda: c, requests=requests, root_crl_body=root_crl_body)


@pytest.mark.parametrize("root_crl_body", ["hex", "der"])
async def test_fetch_collateral_returns_the_signed_texts(
    real_collateral: Collateral, root_crl_body: str
) -> None:
    requests: list[str] = []
    client = PccsClient(
        "http://pccs.test/",
        transport=pccs_app(real_collateral, requests=requests, root_crl_body=root_crl_body),
    )
    fetched = await client.fetch_collateral(FMSPC, "platform")
    await client.aclose()
    assert fetched == real_collateral
    assert len(requests) == 4


async def test_cache_fetches_once_and_verifies(
    real_quote: bytes, real_collateral: Collateral
) -> None:
    client = PccsClient("http://pccs.test", transport=pccs_app(real_collateral))
    cache = CollateralCache(client, Verifier())
    results = await asyncio.gather(
        *(cache.verify_quote(real_quote, now=VECTOR_NOW) for _ in range(5))
    )
    again = await cache.verify_quote(real_quote, now=VECTOR_NOW)
    await client.aclose()
    assert {r.tcb_status for r in results} == {again.tcb_status} == {"UpToDate"}
    assert cache.fetch_count == 1


async def test_cache_tells_its_observer_each_fetch_hit_and_failure(
    real_quote: bytes, real_collateral: Collateral
) -> None:
    events: list[CacheEvent] = []
    client = PccsClient("http://pccs.test", transport=pccs_app(real_collateral))
    cache = CollateralCache(client, Verifier(), observer=events.append)
    await cache.verify_quote(real_quote, now=VECTOR_NOW)
    await cache.verify_quote(real_quote, now=VECTOR_NOW)
    await cache.verify_quote(real_quote, now=VECTOR_NOW)
    with pytest.raises(CollateralExpiredError):
        await cache.verify_quote(real_quote, now=VECTOR_NOW + timedelta(seconds=1))
    await client.aclose()
    assert events == ["fetched", "hit", "hit", "fetch_failed"]


async def test_cache_refetches_after_the_earliest_next_update(
    real_quote: bytes, real_collateral: Collateral
) -> None:
    client = PccsClient("http://pccs.test", transport=pccs_app(real_collateral))
    cache = CollateralCache(client, Verifier())
    await cache.verify_quote(real_quote, now=VECTOR_NOW)
    with pytest.raises(CollateralExpiredError, match="PCK CRL expired"):
        await cache.verify_quote(real_quote, now=VECTOR_NOW + timedelta(seconds=1))
    await client.aclose()
    assert cache.fetch_count == 2


async def test_cache_refuses_garbage_without_fetching(real_collateral: Collateral) -> None:
    client = PccsClient("http://pccs.test", transport=pccs_app(real_collateral))
    cache = CollateralCache(client, Verifier())
    with pytest.raises(QuoteParseError):
        await cache.verify_quote(b"garbage", now=VECTOR_NOW)
    await client.aclose()
    assert cache.fetch_count == 0


def _failing(handler_status: int = 200, **kw: object) -> httpx.MockTransport:
    def handler(request: httpx.Request) -> httpx.Response:
        if "exc" in kw:
            raise kw["exc"]  # type: ignore[misc]
        return httpx.Response(handler_status, content=kw.get("content", b"x"))  # type: ignore[arg-type]

    return httpx.MockTransport(handler)


@pytest.mark.parametrize(
    ("transport", "message"),
    [
        (_failing(404), "HTTP 404"),
        (_failing(500), "HTTP 500"),
        (_failing(exc=httpx.ReadTimeout("slow")), "ReadTimeout"),
        (_failing(exc=httpx.ConnectError("refused")), "ConnectError"),
        (_failing(content=b"\x30" * 5000), "larger than"),
        (_failing(content=b"not a crl"), "malformed PCCS response"),
    ],
)
async def test_fetch_failures_are_pccs_errors(transport: httpx.MockTransport, message: str) -> None:
    client = PccsClient("http://pccs.test", transport=transport, max_response_bytes=4096)
    with pytest.raises(PccsError, match=message):
        await client.fetch_collateral(FMSPC, "platform")
    await client.aclose()


async def test_missing_issuer_chain_header_is_a_pccs_error(real_collateral: Collateral) -> None:
    inner = pccs_app(real_collateral)

    async def strip(request: httpx.Request) -> httpx.Response:
        response = await inner.handle_async_request(request)
        await response.aread()
        headers = {k: v for k, v in response.headers.items() if "issuer-chain" not in k.lower()}
        return httpx.Response(response.status_code, content=response.content, headers=headers)

    client = PccsClient("http://pccs.test", transport=httpx.MockTransport(strip))
    with pytest.raises(PccsError, match="issuer chain header is missing"):
        await client.fetch_collateral(FMSPC, "platform")
    await client.aclose()


async def test_bad_arguments_are_refused() -> None:
    client = PccsClient("http://pccs.test", transport=_failing(404))
    with pytest.raises(ValueError, match="ca must be"):
        await client.fetch_collateral(FMSPC, "other")
    with pytest.raises(ValueError, match="6 bytes"):
        await client.fetch_collateral(b"\x00", "platform")
    await client.aclose()


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=5), children, max_size=3)
    ),
    max_leaves=8,
)


@given(
    st.dictionaries(st.text(max_size=6), _json, max_size=4),
    _json,
    st.sampled_from(["", " ", "\n  ", "\t"]),
)
def test_raw_json_member_is_the_exact_source_text(
    others: dict[str, object], value: object, ws: str
) -> None:
    others.pop("tcbInfo", None)
    value_text = json.dumps(value, indent=1 if ws else None)
    members = [f"{json.dumps(k)}{ws}:{ws}{json.dumps(v)}" for k, v in others.items()]
    members.insert(len(members) // 2, f'"tcbInfo"{ws}:{ws}{value_text}')
    text = "{" + ws + ("," + ws).join(members) + ws + "}"
    assert raw_json_member(text, "tcbInfo") == value_text
