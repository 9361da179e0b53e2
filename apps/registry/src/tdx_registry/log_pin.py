"""The log's verifier key pinned in the database (`log_key` table, `log_store.pin_verifier_key`).

The first registry that starts on a database stores its log verifier key there (public: the
note verifier key text, never the signer key). Every later start, of any replica, compares its
own key with the pinned one and refuses to serve when they differ (`LogKeyMismatch`; the
command exits 1), so one log is never signed by two keys: a replica or a restarted registry
that lacks the key file would otherwise create a key of its own, silently.
"""

from __future__ import annotations

from typing import Final

REMEDY: Final = (
    "every registry on one database must sign with the log's one key: copy the key file of "
    "the first registry (mode 0600), or start a new log on a new database (registry README, "
    "'The pinned verifier key')"
)


class LogKeyPinError(Exception):
    """The log key could not be pinned in or checked against the database."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class LogKeyMismatch(LogKeyPinError):
    """The database pins another log verifier key than this registry's."""

    def __init__(self, pinned: str, offered: str) -> None:
        shown = (key_id(pinned), key_id(offered))
        if shown[0] == shown[1]:  # same name and key id, another key: show the keys
            shown = (repr(pinned), repr(offered))
        super().__init__(
            f"the database pins the log key {shown[0]}, but this registry's log key "
            f"(--log-key-path, --log-origin) is {shown[1]}: {REMEDY}"
        )
        self.pinned = pinned
        self.offered = offered


def key_id(verifier_key: str) -> str:
    """`<name>+<key id>` of a note verifier key text (what a log line may name it by); the
    whole text, shortened, when it has no such shape (a pinned value altered by hand)."""
    name, plus, rest = verifier_key.partition("+")
    key_hex = rest.partition("+")[0]
    if plus and len(key_hex) == 8:
        return f"{name}+{key_hex}"
    shown = verifier_key if len(verifier_key) <= 80 else verifier_key[:80] + "..."
    return repr(shown)


def check_pinned(pinned: str, offered: str) -> None:
    """`LogKeyMismatch` unless `offered` is the pinned verifier key (public values: a plain
    comparison of the whole text, name, key id and key)."""
    if pinned != offered:
        raise LogKeyMismatch(pinned, offered)
