r"""The resource policy: one Rego module, `package policy`, whose `allow` decides each release.

Rego runs in-process with `regopy` (Microsoft's rego-cpp). Each policy is parsed and compiled
once, into a bundle with the `data.policy` query and the `policy/allow` entrypoint, on its own
interpreter. The compile check reads the whole `data.policy` document; each evaluation runs the
`policy/allow` entrypoint. (A direct `data.policy.allow` *query* is not used: rego-cpp 1.5
answers `undefined` to it when the value comes from a `default` rule. The compiled entrypoint
carries the default; the tests compare every decision with a fresh interpreter's reading of the
whole document.) Anything but exactly `true` denies: a missing or non-boolean `allow`, an
undefined value, an evaluation error (logged).

The input goes in as JSON text (`set_input_term`), which rego-cpp parses as it parses the
policy's own literals. regopy's `set_input` of a Python value hands each string over raw, and
rego-cpp compares strings in their escaped form: an input string holding `"`, `\` or a
control character then equals a *different* policy literal (`"a\"b"` matched the four
characters `a\"b`, not `a"b`). As JSON text, every input string equals exactly the literal
that denotes it, plain or raw (the tests check both ways).
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
from collections.abc import Mapping
from importlib import resources
from typing import Any, Final

import regopy

log = logging.getLogger("tdx_kbs.policy")

MODULE_NAME: Final = "policy.rego"
QUERY: Final = "data.policy"
ENTRYPOINT: Final = "policy/allow"
"""Each evaluation runs the bundle's plan for `data.policy.allow` only (its query part costs
about a quarter less than rendering the whole document); the compile check reads the whole
`data.policy` document."""
MAX_POLICY_BYTES: Final = 256 * 1024
MAX_REASON_CHARS: Final = 2000


class PolicyError(Exception):
    """A policy the broker refuses; `reason` is safe to show the admin."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class PolicyCompileError(PolicyError):
    """The Rego text does not compile, or is not `package policy`."""


class PolicyEvaluationError(PolicyError):
    """rego-cpp answered an error for this input (conflicting values, a failing built-in)."""


def default_policy_text() -> str:
    """The shipped policy (package data `policies/default.rego`)."""
    return resources.files("tdx_kbs").joinpath("policies/default.rego").read_text("utf-8")


def _read(output: regopy.Output) -> object:
    """The one value of a query's output (a document, or `allow`); None when undefined."""
    if not output.ok():
        raise PolicyEvaluationError(f"the policy failed to evaluate ({output.node()})")
    rendered = str(output)
    if rendered.strip() == "undefined":
        return None
    parsed = json.loads(rendered)
    expressions = parsed.get("expressions") if isinstance(parsed, dict) else None
    if not isinstance(expressions, list) or len(expressions) != 1:
        return None
    return expressions[0]


def _input_term(input_doc: Mapping[str, Any]) -> str:
    """`input_doc` as the JSON text rego-cpp parses into the input (see the module's doc):
    non-ASCII characters as themselves, as a policy writes them; no NaN or infinity."""
    try:
        return json.dumps(input_doc, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    except (TypeError, ValueError) as exc:
        raise PolicyEvaluationError(f"the input is not a JSON document: {exc}") from None


def _build(text: str) -> tuple[regopy.Interpreter, regopy.Bundle]:
    """An interpreter holding `text` and the bundle compiled from it for the `data.policy`
    query and the `policy/allow` entrypoint (rego-cpp parses and compiles the module once,
    here)."""
    interpreter = regopy.Interpreter()
    interpreter.add_module(MODULE_NAME, text)
    bundle = interpreter.build(QUERY, [ENTRYPOINT])
    if not bundle.ok():
        raise ValueError(f"the bundle did not build ({bundle.node()})")
    return interpreter, bundle


class ResourcePolicy:
    """A compiled-once, checked Rego resource policy.

    The module is parsed and compiled into a bundle once, by `compile`; each evaluation sets
    the input on the policy's own interpreter and runs the bundle's `allow` entrypoint (about
    1 ms on the shipped policy and a 2 KB input, most of it parsing the input, where
    a fresh interpreter re-parsing the module took 5-14 ms). rego-cpp's thread
    safety is not documented, so evaluations of one policy hold its lock: never two at once on
    one interpreter.
    """

    def __init__(
        self,
        text: str,
        interpreter: regopy.Interpreter,
        bundle: regopy.Bundle,
        *,
        _checked: bool = False,
    ) -> None:
        if not _checked:
            raise TypeError("use ResourcePolicy.compile")
        self.text = text
        self.sha256 = hashlib.sha256(text.encode("utf-8")).hexdigest()
        self._interpreter = interpreter
        self._bundle = bundle
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"ResourcePolicy(sha256={self.sha256[:16]}...)"

    @classmethod
    def compile(cls, text: str) -> ResourcePolicy:
        """`text` checked: it compiles and declares `package policy`; `PolicyCompileError`."""
        if len(text.encode("utf-8")) > MAX_POLICY_BYTES:
            raise PolicyCompileError(f"the policy is larger than {MAX_POLICY_BYTES} bytes")
        if "\x00" in text:
            raise PolicyCompileError("the policy contains a NUL character")
        try:
            interpreter, bundle = _build(text)
            document = _read(interpreter.query_bundle(bundle))
        except regopy.RegoError as exc:
            raise PolicyCompileError(
                f"the policy does not compile: {str(exc)[:MAX_REASON_CHARS]}"
            ) from None
        except (ValueError, RuntimeError) as exc:
            raise PolicyCompileError(f"the policy does not compile: {exc}") from None
        if not isinstance(document, dict):
            raise PolicyCompileError(
                "the policy defines no `package policy` document (declare `package policy` "
                "and `default allow := false`)"
            )
        return cls(text, interpreter, bundle, _checked=True)

    def _allow(self, input_doc: Mapping[str, Any]) -> object:
        with self._lock:
            # The input replaces the whole previous one or raises (then nothing is queried):
            # an evaluation never sees a previous evaluation's input.
            self._interpreter.set_input_term(_input_term(input_doc))
            return _read(self._interpreter.query_bundle_entrypoint(self._bundle, ENTRYPOINT))

    def allows(self, input_doc: Mapping[str, Any]) -> bool:
        """True only when the policy's `allow` is exactly true for `input_doc`."""
        try:
            allow = self._allow(input_doc)
        except (regopy.RegoError, PolicyEvaluationError, ValueError, RuntimeError) as exc:
            log.warning(
                "resource policy evaluation failed: denied",
                extra={"policy_sha256": self.sha256, "reason": str(exc)[:MAX_REASON_CHARS]},
            )
            return False
        if allow is True:
            return True
        if allow is not False:
            log.warning(
                "resource policy gave no boolean `allow`: denied",
                extra={"policy_sha256": self.sha256, "allow": repr(allow)[:200]},
            )
        return False
