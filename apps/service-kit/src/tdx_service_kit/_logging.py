"""JSON-lines logging on stderr, with secret-looking extra fields redacted."""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any

_STANDARD_ATTRS = frozenset(
    vars(logging.LogRecord("x", logging.INFO, "x", 0, "x", None, None)).keys()
) | {"message", "asctime", "taskName"}
_SECRET_MARKERS = ("token", "secret", "password", "private", "authorization", "cookie")
SANIC_LOGGERS = ("sanic.root", "sanic.error", "sanic.access", "sanic.server", "sanic.websockets")


def _jsonable(value: Any) -> Any:
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return repr(value)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, extra fields, traceback."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key in _STANDARD_ATTRS or key.startswith("_") or key in out:
                continue
            lowered = key.lower()
            redact = any(marker in lowered for marker in _SECRET_MARKERS)
            out[key] = "[redacted]" if redact else _jsonable(value)
        if record.exc_info:
            out["traceback"] = self.formatException(record.exc_info)
        return json.dumps(out, separators=(",", ":"))


def configure_logging(level: str = "INFO") -> None:
    """Send every log record, Sanic's included, as JSON lines to stderr at `level`."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    route_sanic_logs_to_root()


def route_sanic_logs_to_root() -> None:
    """Drop Sanic's own handlers so its records reach the root handler (constructing a `Sanic`
    app installs them again, so `run_app` calls this once more before serving)."""
    for name in SANIC_LOGGERS:
        sanic_logger = logging.getLogger(name)
        for old in list(sanic_logger.handlers):
            sanic_logger.removeHandler(old)
        sanic_logger.propagate = True
        sanic_logger.setLevel(logging.NOTSET)


def json_logging_configured() -> bool:
    """Whether `configure_logging` installed its handler on the root logger."""
    return any(isinstance(h.formatter, JsonFormatter) for h in logging.getLogger().handlers)
