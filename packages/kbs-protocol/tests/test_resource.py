"""Resource paths and the store-key path."""

from __future__ import annotations

import pytest

from tdx_kbs_protocol import (
    STORE_KEY_REPOSITORY,
    STORE_KEY_TYPE,
    ResourcePath,
    ResourcePathError,
    store_key_path,
)


def test_good_path_parses_and_prints_back() -> None:
    path = ResourcePath.parse("tdx-identity/store-key/ab12.x_y-z")
    assert (path.repository, path.type, path.tag) == ("tdx-identity", "store-key", "ab12.x_y-z")
    assert str(path) == "tdx-identity/store-key/ab12.x_y-z"
    assert ResourcePath.parse("a" * 128 + "/b/c").repository == "a" * 128


@pytest.mark.parametrize(
    "text",
    [
        "a/../c",
        "../b/c",
        "a/b/..",
        "a/b/x..y",
        "a/./c",
        "./b/c",
        "",
        "a/b",
        "a/b/c/d",
        "a//c",
        "/a/b",
        "a/b/c/",
        "a/b/c d",
        "a/b/c%2f",
        "a/b/ç",
        "a/b/-c",
        "a/b/.hidden",
        "a/b/c\n",
        "a" * 129 + "/b/c",
    ],
)
def test_bad_paths_are_refused(text: str) -> None:
    with pytest.raises(ResourcePathError):
        ResourcePath.parse(text)


def test_construction_validates_too() -> None:
    with pytest.raises(ResourcePathError):
        ResourcePath("a", "..", "c")


def test_store_key_path_is_the_lowercase_hex_of_the_instance_key() -> None:
    key = bytes(range(32))
    path = store_key_path(key)
    assert (path.repository, path.type) == (STORE_KEY_REPOSITORY, STORE_KEY_TYPE)
    assert str(path) == "tdx-identity/store-key/" + key.hex()
    assert len(path.tag) == 64
    for bad in (b"", bytes(31), bytes(33)):
        with pytest.raises(ResourcePathError):
            store_key_path(bad)
