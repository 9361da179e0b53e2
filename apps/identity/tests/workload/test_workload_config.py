"""Validation of the owner's workload settings and of the hardening flags they run with."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tdx_identity.exceptions import WorkloadConfigError
from tdx_identity.workload.config import (
    Hardening,
    WorkloadConfig,
    validate_image_reference,
    validate_persist_dir,
    validate_persist_dirs,
    validate_port,
)

GOOD_IMAGES = [
    "busybox",
    "nginx:1.27",
    "library/nginx:latest",
    "docker.io/library/nginx:1.27-alpine",
    "localhost/tdx-identity-test:1",
    "localhost:5000/team/app_v2:2024.01.01",
    "registry.example.com/a/b/c",
    "ghcr.io/owner/image@sha256:" + "a" * 64,
    "quay.io/x/y:tag@sha256:" + "0123456789abcdef" * 4,
    "my-app__x.y",
]

BAD_IMAGES = [
    ("", "empty"),
    ("--privileged", "start with '-'"),
    ("-v", "start with '-'"),
    ("busybox --privileged", "whitespace"),
    ("busy box", "whitespace"),
    ("busybox\n", "control"),
    ("busybox\x00", "control"),
    ("busybox\x1b[31m", "control"),
    ("bad\tname", "control"),
    ("library/Nginx", "expected"),
    ("Nginx", "expected"),
    ("name:", "expected"),
    ("name@sha256:abc", "expected"),
    ("name@md5:" + "a" * 32, "expected"),
    ("a" * 600, "longer than"),
    ("/abs/path", "expected"),
    ("name:tag:extra", "expected"),
    ("na..me", "expected"),
    ("ünïcode", "expected"),
    ("name;rm", "expected"),
    ("$(id)", "expected"),
]

GOOD_DIRS = ["/data", "/var/lib/app", "/www", "/srv/my dir", "/a/b.c/d-e/_f", "/...", "/a/..b"]

BAD_DIRS = [
    "",
    "data",
    "relative/path",
    "./data",
    "/",
    "//",
    "/data/",
    "//data",
    "/data//x",
    "/data/.",
    "/data/./x",
    "/.",
    "/..",
    "/data/..",
    "/data/../etc",
    "/data\x00",
    "/da\x00ta",
    "/data\n",
    "/da\tta",
    "/a,b",
    "/a:b",
    "/a=b",
    "/proc",
    "/proc/self",
    "/sys",
    "/dev/shm",
    "/" + "a" * 256,
    "/" + "/a" * 3000,
]


@pytest.mark.parametrize("image", GOOD_IMAGES)
def test_plain_image_references_are_accepted(image: str) -> None:
    assert validate_image_reference(image) == image


@pytest.mark.parametrize(("image", "reason"), BAD_IMAGES)
def test_bad_image_references_are_refused_with_reason(image: str, reason: str) -> None:
    with pytest.raises(WorkloadConfigError, match="Invalid image reference") as info:
        validate_image_reference(image)
    assert reason in str(info.value)


@pytest.mark.parametrize("value", [None, 5, b"busybox", ["busybox"]])
def test_non_string_image_is_refused(value: object) -> None:
    with pytest.raises(WorkloadConfigError, match="Invalid image reference"):
        validate_image_reference(value)


@pytest.mark.parametrize("path", GOOD_DIRS)
def test_clean_absolute_dirs_are_accepted(path: str) -> None:
    assert validate_persist_dir(path) == path


@pytest.mark.parametrize("path", BAD_DIRS)
def test_unclean_dirs_are_refused_as_invalid_directory_path(path: str) -> None:
    with pytest.raises(WorkloadConfigError, match="Invalid directory path"):
        validate_persist_dir(path)


@pytest.mark.parametrize("value", [None, 3, b"/data", ["/data"]])
def test_non_string_dir_is_refused_as_invalid_directory_path(value: object) -> None:
    with pytest.raises(WorkloadConfigError, match="Invalid directory path"):
        validate_persist_dir(value)


@pytest.mark.parametrize(
    "dirs", ["/data", b"/data", 7, None, ["/data", "/data"], [f"/d{i}" for i in range(33)]]
)
def test_bad_dir_lists_are_refused(dirs: object) -> None:
    with pytest.raises(WorkloadConfigError, match="Invalid directory path"):
        validate_persist_dirs(dirs)


def test_dir_lists_keep_order() -> None:
    assert validate_persist_dirs(["/b", "/a"]) == ("/b", "/a")
    assert validate_persist_dirs([]) == ()


@pytest.mark.parametrize("port", [1, 80, 8080, 65535])
def test_ports_in_range_are_accepted(port: int) -> None:
    assert validate_port(port) == port


@pytest.mark.parametrize("port", [0, -1, 65536, 70000, True, False, 8080.0, "8080", None])
def test_ports_out_of_range_or_mistyped_are_refused(port: object) -> None:
    with pytest.raises(WorkloadConfigError, match="Invalid port"):
        validate_port(port)


def test_workload_config_validates_every_field() -> None:
    ok = WorkloadConfig(image="busybox:1", persist_dirs=("/data",), port=8080)
    assert ok.persist_dirs == ("/data",)
    with pytest.raises(WorkloadConfigError, match="Invalid image reference"):
        WorkloadConfig(image="--privileged", persist_dirs=(), port=8080)
    with pytest.raises(WorkloadConfigError, match="Invalid directory path"):
        WorkloadConfig(image="busybox", persist_dirs=("/data/../etc",), port=8080)
    with pytest.raises(WorkloadConfigError, match="Invalid port"):
        WorkloadConfig(image="busybox", persist_dirs=(), port=0)


def test_default_hardening_flags() -> None:
    args = Hardening().podman_args()
    joined = " ".join(args)
    assert "--security-opt no-new-privileges" in joined
    assert "--cap-drop all" in joined
    assert "--privileged" not in args
    assert "--network" not in args
    assert "seccomp" not in joined  # podman's default profile stays in force
    assert "--pids-limit 512" in joined
    assert "--memory 1073741824" in joined
    assert "--ulimit nofile=1024:1024 --ulimit nproc=1024:1024" in joined
    added = {args[i + 1] for i, a in enumerate(args) if a == "--cap-add"}
    assert added == {
        "CHOWN",
        "DAC_OVERRIDE",
        "FOWNER",
        "KILL",
        "NET_BIND_SERVICE",
        "SETGID",
        "SETUID",
    }


def test_hardening_weakening_is_explicit() -> None:
    args = Hardening(
        privileged=True,
        host_network=True,
        seccomp_unconfined=True,
        no_new_privileges=False,
        pids_limit=None,
        memory_bytes=None,
        cap_add=frozenset({"cap_net_raw"}),
    ).podman_args()
    joined = " ".join(args)
    assert "--privileged" in args
    assert "--network host" in joined
    assert "seccomp=unconfined" in joined
    assert "no-new-privileges" not in joined
    assert "--pids-limit" not in args
    assert "--memory" not in args
    assert "--cap-add NET_RAW" in joined


@pytest.mark.parametrize(
    "kwargs",
    [
        {"cap_add": frozenset({"ALL; rm"})},
        {"pids_limit": 0},
        {"memory_bytes": 1024},
        {"seccomp_profile": "relative.json"},
        {"seccomp_profile": "/p.json", "seccomp_unconfined": True},
        {"nofile_limit": 0},
    ],
)
def test_bad_hardening_settings_are_refused(kwargs: dict[str, object]) -> None:
    with pytest.raises(WorkloadConfigError):
        Hardening(**kwargs)  # type: ignore[arg-type]


_component = st.from_regex(r"[a-z0-9]{1,8}(?:[._-][a-z0-9]{1,8}){0,2}", fullmatch=True)


@settings(max_examples=80, deadline=None)
@given(
    domain=st.one_of(st.none(), st.sampled_from(["localhost", "localhost:5000", "ghcr.io"])),
    path=st.lists(_component, min_size=1, max_size=3),
    tag=st.one_of(st.none(), st.from_regex(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,20}", fullmatch=True)),
    digest=st.one_of(st.none(), st.binary(min_size=32, max_size=32)),
)
def test_generated_references_in_the_grammar_are_accepted(
    domain: str | None, path: list[str], tag: str | None, digest: bytes | None
) -> None:
    ref = "/".join(([domain] if domain else []) + path)
    if tag:
        ref += f":{tag}"
    if digest:
        ref += f"@sha256:{digest.hex()}"
    assert validate_image_reference(ref) == ref


@settings(max_examples=150, deadline=None)
@given(st.text(max_size=80))
def test_any_text_is_either_a_clean_reference_or_refused(text: str) -> None:
    try:
        validate_image_reference(text)
    except WorkloadConfigError:
        return
    assert text and not text.startswith("-")
    assert all(ch.isascii() and ch.isprintable() and not ch.isspace() for ch in text)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.sampled_from(["a", "b", ".", "..", "", "x y", "\x00", ",", "..."]), max_size=5))
def test_dirs_are_accepted_only_when_every_segment_is_clean(segments: list[str]) -> None:
    path = "/" + "/".join(segments)
    clean = bool(segments) and all(
        s not in ("", ".", "..") and not set(s) & {"\x00", ","} for s in segments
    )
    if clean:
        assert validate_persist_dir(path) == path
    else:
        with pytest.raises(WorkloadConfigError, match="Invalid directory path"):
            validate_persist_dir(path)
