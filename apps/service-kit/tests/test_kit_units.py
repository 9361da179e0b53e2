"""Token buckets, strict JSON/hex parsing and JSON logging, without a server."""

import contextlib
import json
import logging
from collections.abc import Iterator

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tdx_service_kit import (
    BadRequest,
    HttpLimits,
    RateLimit,
    configure_logging,
    parse_bool,
    parse_hex,
    parse_json_object,
)
from tdx_service_kit._ratelimit import TokenBuckets
from tdx_service_kit.config import FALSE_WORDS, TRUE_WORDS


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_bucket_allows_burst_then_asks_to_wait() -> None:
    clock = FakeClock()
    buckets = TokenBuckets(RateLimit(per_second=2.0, burst=3), clock=clock)
    assert [buckets.take("a") for _ in range(3)] == [0, 0, 0]
    assert buckets.take("a") == 1
    clock.now += 0.5
    assert buckets.take("a") == 0


def test_buckets_are_per_client() -> None:
    buckets = TokenBuckets(RateLimit(per_second=1.0, burst=1), clock=FakeClock())
    assert buckets.take("a") == 0
    assert buckets.take("a") == 1
    assert buckets.take("b") == 0


def test_refill_never_exceeds_burst() -> None:
    clock = FakeClock()
    buckets = TokenBuckets(RateLimit(per_second=10.0, burst=2), clock=clock)
    buckets.take("a")
    clock.now += 1000
    assert [buckets.take("a") for _ in range(3)] == [0, 0, 1]


def test_retry_after_rounds_up_to_whole_seconds() -> None:
    buckets = TokenBuckets(RateLimit(per_second=0.25, burst=1), clock=FakeClock())
    buckets.take("a")
    assert buckets.take("a") == 4


def test_bucket_table_is_bounded() -> None:
    buckets = TokenBuckets(RateLimit(), clock=FakeClock(), max_clients=10)
    for i in range(100):
        buckets.take(f"10.0.0.{i}")
    assert len(buckets) == 10


@pytest.mark.parametrize(
    "kwargs", [{"max_body_bytes": 0}, {"request_timeout": 0}, {"response_timeout": -1.0}]
)
def test_limits_reject_nonsense(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        HttpLimits(**kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize("kwargs", [{"per_second": 0}, {"burst": 0}])
def test_rate_limit_rejects_nonsense(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        RateLimit(**kwargs)  # type: ignore[arg-type]


def test_deeply_nested_json_is_400() -> None:
    with pytest.raises(BadRequest, match="nested too deeply"):
        parse_json_object(b'{"a":' + b"[" * 100_000 + b"]" * 100_000 + b"}")


@given(st.binary(max_size=200))
def test_parse_json_object_only_raises_bad_request(raw: bytes) -> None:
    with contextlib.suppress(BadRequest):
        assert isinstance(parse_json_object(raw), dict)


@given(st.dictionaries(st.text(max_size=8), st.integers() | st.text(max_size=8), max_size=5))
def test_parse_json_object_round_trips(obj: dict[str, object]) -> None:
    assert parse_json_object(json.dumps(obj).encode()) == obj


@given(st.binary(max_size=64))
def test_parse_hex_round_trips_both_cases(data: bytes) -> None:
    assert parse_hex(data.hex(), "f") == data
    assert parse_hex(data.hex().upper(), "f", length=len(data)) == data


@given(st.text(max_size=20))
def test_parse_hex_only_raises_bad_request(text: str) -> None:
    try:
        assert parse_hex(text, "f") == bytes.fromhex(text)
    except BadRequest as exc:
        assert "'f'" in str(exc)


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def test_logs_are_json_lines_with_secrets_redacted(
    restore_logging: None, capsys: pytest.CaptureFixture[str]
) -> None:
    configure_logging("INFO")
    log = logging.getLogger("tdx.test")
    log.info("registered", extra={"owner_token": "abcd", "path": "/x", "n": 3})
    try:
        raise ValueError("boom")
    except ValueError:
        log.exception("failed")
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    assert lines[0]["message"] == "registered"
    assert lines[0]["owner_token"] == "[redacted]"
    assert lines[0]["path"] == "/x" and lines[0]["n"] == 3
    assert lines[0]["level"] == "INFO" and lines[0]["logger"] == "tdx.test"
    assert "ValueError: boom" in lines[1]["traceback"]
    assert "abcd" not in capsys.readouterr().err


@pytest.mark.parametrize(
    ("value", "expected"),
    [("1", True), ("TRUE", True), (" yes ", True), ("on", True),
     ("0", False), ("False", False), ("no", False), ("OFF", False)],
)  # fmt: skip
def test_parse_bool_reads_the_eight_words(value: str, expected: bool) -> None:
    assert parse_bool("X", value) is expected


def test_parse_bool_gives_the_default_only_when_unset() -> None:
    assert parse_bool("X", None) is False
    assert parse_bool("X", None, default=True) is True


@given(st.text(max_size=12))
def test_parse_bool_refuses_every_other_value_naming_the_setting(value: str) -> None:
    if value.strip().lower() in TRUE_WORDS | FALSE_WORDS:
        return
    with pytest.raises(ValueError, match=r"^SKIP_TDX_AUTH=.* is not a boolean"):
        parse_bool("SKIP_TDX_AUTH", value)
