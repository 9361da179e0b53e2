"""Test helpers, never for production code: check an app's OpenAPI document with
openapi-spec-validator, check its paths are the app's routes, and validate real responses
against it (JSON Schema Draft 2020-12, which OpenAPI 3.1 schemas are).

Needs the test-only dependencies `jsonschema` and `openapi-spec-validator`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError
from openapi_spec_validator import validate as validate_spec
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012
from sanic import Sanic

from ._ops import OpenApiDocument, openapi_path

__all__ = [
    "DocumentMismatch",
    "RequestMismatch",
    "ResponseMismatch",
    "app_operations",
    "assert_routes_match",
    "check_document",
    "document_operations",
    "match_path",
    "validate_exchange",
    "validate_request",
    "validate_response",
]

_DOC_URI = "urn:tdx-service-kit:openapi"
_METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")
_IMPLICIT_METHODS = frozenset({"HEAD", "OPTIONS"})
_BINARY = object()
"""A body that is not text: only its media type is checked against the document."""


class DocumentMismatch(AssertionError):
    """The document is not valid OpenAPI 3.1, or its paths are not the app's routes."""


class ResponseMismatch(AssertionError):
    """A real response is not one the document describes for its method and path."""


class RequestMismatch(AssertionError):
    """A request the service accepted is not one the document's request body describes."""


def _document(doc: OpenApiDocument | Mapping[str, Any]) -> Mapping[str, Any]:
    return doc.document if isinstance(doc, OpenApiDocument) else doc


def check_document(doc: OpenApiDocument | Mapping[str, Any]) -> None:
    """Raise `DocumentMismatch` unless openapi-spec-validator accepts the document."""
    try:
        validate_spec(dict(_document(doc)))
    except Exception as exc:  # the validator's errors share no public base class
        raise DocumentMismatch(f"the OpenAPI document is invalid: {exc}") from exc


def document_operations(doc: OpenApiDocument | Mapping[str, Any]) -> set[tuple[str, str]]:
    """Every (METHOD, path) the document describes."""
    paths: Mapping[str, Any] = _document(doc)["paths"]
    return {(m.upper(), p) for p, item in paths.items() for m in _METHODS if m in item}


def app_operations(app: Sanic[Any, Any]) -> set[tuple[str, str]]:
    """Every (METHOD, OpenAPI path) the app routes, without the HEAD/OPTIONS Sanic adds."""
    ops: set[tuple[str, str]] = set()
    for route in app.router.routes:
        path = openapi_path(route.path)
        for method in route.methods:
            if method not in _IMPLICIT_METHODS:
                ops.add((method, path))
    return ops


def assert_routes_match(app: Sanic[Any, Any], doc: OpenApiDocument | Mapping[str, Any]) -> None:
    """Raise `DocumentMismatch` unless the app's routes and the document's are the same set."""
    routed, documented = app_operations(app), document_operations(doc)
    if routed != documented:
        raise DocumentMismatch(
            f"routes not documented: {sorted(routed - documented)}; "
            f"documented but not routed: {sorted(documented - routed)}"
        )


def _template_regex(template: str) -> re.Pattern[str]:
    pattern = re.sub(r"\\\{[^/]+?\\\}", "[^/]+", re.escape(template))
    return re.compile(pattern)


def match_path(doc: OpenApiDocument | Mapping[str, Any], path: str) -> str:
    """The document's path template a raw request path falls under (literal paths first)."""
    paths: Mapping[str, Any] = _document(doc)["paths"]
    if path in paths:
        return path
    for template in sorted(paths, key=lambda t: (t.count("{"), t)):
        if "{" in template and _template_regex(template).fullmatch(path):
            return template
    raise ResponseMismatch(f"no path of the document matches {path}")


def _documented(document: Mapping[str, Any], method: str, path: str) -> bool:
    try:
        template = match_path(document, path)
    except ResponseMismatch:
        return False
    return method.lower() in document["paths"][template]


def validate_exchange(
    doc: OpenApiDocument | Mapping[str, Any],
    method: str,
    path: str,
    status: int,
    content_type: str,
    body: bytes,
    *,
    request_body: bytes | None = None,
) -> None:
    """Validate a response as it came off the wire (`content_type` the header, `body` raw).

    A path or method the document does not describe must be answered 404 or 405 with
    `{"error": "<reason>"}` (no document can list every path a client may invent); HEAD and
    OPTIONS, which Sanic adds to every route, are not checked. With `request_body`, a request
    answered 2xx must also be valid against the operation's JSON request body schema (a
    refused one may be anything: the suites send malformed bodies on purpose)."""
    if method.upper() in _IMPLICIT_METHODS:
        return
    media = content_type.split(";", 1)[0].strip().lower()
    document = _document(doc)
    if not _documented(document, method, path):
        if status not in (404, 405):
            raise ResponseMismatch(f"{method} {path}: undocumented, yet answered {status}")
        decoded = _decode(method, path, media, body)
        if not (
            isinstance(decoded, dict)
            and set(decoded) == {"error"}
            and isinstance(decoded["error"], str)
        ):
            raise ResponseMismatch(f"{method} {path} {status}: not an error body: {body!r}")
        return
    validate_response(
        document, method, path, status, _decode(method, path, media, body), content_type=media
    )
    if request_body and 200 <= status < 300:
        try:
            decoded_request = json.loads(request_body)
        except ValueError as exc:
            raise RequestMismatch(f"{method} {path}: accepted a body that is not JSON") from exc
        validate_request(document, method, path, decoded_request)


def validate_request(
    doc: OpenApiDocument | Mapping[str, Any], method: str, path: str, body: Any
) -> None:
    """Raise `RequestMismatch` unless `body` (decoded JSON) is valid against the JSON request
    body schema of (`method`, `path`), or the operation documents no request body."""
    document = _document(doc)
    template = match_path(document, path)
    operation = document["paths"][template].get(method.lower())
    if operation is None:
        raise RequestMismatch(f"the document has no {method.upper()} {template}")
    if "requestBody" not in operation:
        return
    base = _pointer("", "paths", template, method.lower(), "requestBody")
    request_body, pointer = _follow(document, operation["requestBody"], base)
    if "application/json" not in request_body.get("content", {}):
        raise RequestMismatch(f"{method.upper()} {template}: the document gives no JSON body")
    schema_pointer = pointer + "/" + _pointer("content", "application/json", "schema")
    message = _schema_error(document, schema_pointer, body)
    if message is not None:
        raise RequestMismatch(
            f"{method.upper()} {path}: accepted a body the document refuses: {message}"
        )


def _is_json(media: str) -> bool:
    return media == "application/json" or media.endswith("+json")


def _decode(method: str, path: str, media: str, body: bytes) -> Any:
    """JSON for a JSON media type, else the text; `_BINARY` for a body that is not UTF-8."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        if _is_json(media):
            raise ResponseMismatch(f"{method} {path}: the {media} body is not UTF-8") from exc
        return _BINARY
    if not _is_json(media):
        return text
    try:
        return json.loads(text)
    except ValueError as exc:
        raise ResponseMismatch(f"{method} {path}: the {media} body does not decode: {exc}") from exc


def _follow(
    document: Mapping[str, Any], obj: Mapping[str, Any], pointer: str
) -> tuple[Mapping[str, Any], str]:
    """`obj` (at `pointer`), or what its local `$ref` (a components/responses entry) names."""
    for _ in range(8):
        target = obj.get("$ref")
        if not isinstance(target, str):
            return obj, pointer
        if not target.startswith("#/"):
            raise ResponseMismatch(f"only local references are followed, not {target}")
        found: Any = document
        for part in target[2:].split("/"):
            found = found[part.replace("~1", "/").replace("~0", "~")]
        obj, pointer = found, target[1:]
    raise ResponseMismatch(f"a chain of references too long at {pointer}")


def _pointer(*parts: str) -> str:
    return "/".join(p.replace("~", "~0").replace("/", "~1") for p in parts)


def validate_response(
    doc: OpenApiDocument | Mapping[str, Any],
    method: str,
    path: str,
    status: int,
    body: Any,
    *,
    content_type: str = "application/json",
) -> None:
    """Raise `ResponseMismatch` unless the document lists `status` for (`method`, `path`) and
    `body` (already decoded JSON) validates against that response's schema. `path` may be the
    raw request path or a template of the document."""
    document = _document(doc)
    template = match_path(document, path)
    operation = document["paths"][template].get(method.lower())
    if operation is None:
        raise ResponseMismatch(f"the document has no {method.upper()} {template}")
    responses: Mapping[str, Any] = operation.get("responses", {})
    key = next((k for k in (str(status), f"{str(status)[0]}XX", "default") if k in responses), None)
    if key is None:
        raise ResponseMismatch(
            f"{method.upper()} {template} answered {status}, which the document does not list"
        )
    response, response_pointer = _follow(
        document, responses[key], _pointer("", "paths", template, method.lower(), "responses", key)
    )
    content = response.get("content", {})
    if content_type not in content:
        raise ResponseMismatch(
            f"{method.upper()} {template} {status}: the document gives no {content_type} body"
        )
    if body is _BINARY:
        return
    pointer = response_pointer + "/" + _pointer("content", content_type, "schema")
    message = _schema_error(document, pointer, body)
    if message is not None:
        raise ResponseMismatch(
            f"{method.upper()} {path} {status}: the body does not match the document: {message}"
        )


def _schema_error(document: Mapping[str, Any], pointer: str, instance: Any) -> str | None:
    """Why `instance` is not valid against the schema at `pointer` in `document`, or None."""
    registry: Registry[Any] = Registry().with_resource(
        _DOC_URI, Resource.from_contents(dict(document), default_specification=DRAFT202012)
    )
    validator = Draft202012Validator({"$ref": f"{_DOC_URI}#{pointer}"}, registry=registry)
    try:
        validator.validate(instance)
    except ValidationError as exc:
        return f"{exc.message} at {list(exc.absolute_path)}"
    return None
