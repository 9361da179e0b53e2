"""The exception tree drawn in `tdx_identity.exceptions` is the one the classes form."""

from __future__ import annotations

import inspect
import re

from tdx_identity import exceptions


def drawn_tree() -> list[tuple[int, str]]:
    """(depth, class name) of every line of the docstring's tree, in order."""
    rows = []
    for line in inspect.cleandoc(exceptions.__doc__ or "").splitlines():
        match = re.match(r"((?:│   |    )*)(├── |└── )?([A-Z][A-Za-z]+)\b", line)
        if match and inspect.isclass(getattr(exceptions, match.group(3), None)):
            rows.append((len(match.group(1)) // 4 + bool(match.group(2)), match.group(3)))
    return rows


def test_every_exception_of_the_module_is_drawn() -> None:
    defined = {
        name
        for name, value in vars(exceptions).items()
        if inspect.isclass(value)
        and issubclass(value, Exception)
        and value.__module__ == exceptions.__name__
    }
    assert {name for _, name in drawn_tree()} == defined


def test_each_drawn_child_is_a_subclass_of_its_drawn_parent() -> None:
    parents: dict[int, str] = {}
    for depth, name in drawn_tree():
        parents[depth] = name
        if depth:
            child, parent = getattr(exceptions, name), getattr(exceptions, parents[depth - 1])
            assert issubclass(child, parent), f"{name} is drawn under {parents[depth - 1]}"
