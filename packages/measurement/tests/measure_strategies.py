"""Hypothesis strategies for valid events, shared by the property tests."""

from __future__ import annotations

from hypothesis import strategies as st

from tdx_measure import (
    BootEvent,
    ConfigEvent,
    Event,
    ExecutableEvent,
    IdentityEvent,
    SshHostKeyEvent,
    TlsKeyEvent,
    WorkloadEvent,
    ssh_ed25519_line,
)

_segment_chars = st.characters(
    codec="utf-8",
    exclude_categories=("Cc", "Cs"),
    exclude_characters="/",
)
segments = st.text(_segment_chars, min_size=1, max_size=12).filter(lambda s: s not in (".", ".."))
clean_paths = st.lists(segments, min_size=1, max_size=4).map(lambda parts: "/" + "/".join(parts))
roles = st.from_regex(r"[a-z0-9][a-z0-9._-]{0,20}", fullmatch=True)
machines = st.from_regex(r"EM_[A-Z0-9_]{1,12}", fullmatch=True)
images = st.text(
    st.characters(codec="utf-8", exclude_categories=("Cc", "Cs", "Zs", "Zl", "Zp")),
    min_size=1,
    max_size=40,
).filter(lambda s: not any(c.isspace() for c in s))
image_ids = st.builds(
    lambda prefix, digest: prefix + digest,
    st.sampled_from(["", "sha256:"]),
    st.from_regex(r"[0-9a-f]{64}", fullmatch=True),
)
timestamps = st.integers(min_value=0, max_value=2**53 - 1)
ports = st.integers(min_value=1, max_value=65535)

boot_events = st.builds(
    BootEvent, boot_nonce=st.binary(min_size=32, max_size=32), timestamp=timestamps
)
executable_events = st.builds(
    ExecutableEvent,
    role=roles,
    path=clean_paths,
    sha384=st.binary(min_size=48, max_size=48),
    build_id=st.none() | st.binary(min_size=1, max_size=64),
    machine=machines,
)
workload_events = st.builds(
    WorkloadEvent,
    transition=st.sampled_from(["configure", "expose"]),
    image=images,
    image_id=image_ids,
    persist_dirs=st.lists(clean_paths, max_size=4).map(tuple),
    port=ports,
)
ssh_host_key_events = st.builds(
    lambda key: SshHostKeyEvent(public_key=ssh_ed25519_line(key)),
    st.binary(min_size=32, max_size=32),
)
tls_key_events = st.builds(TlsKeyEvent, spki_sha256=st.binary(min_size=32, max_size=32))
identity_events = st.builds(
    IdentityEvent,
    role=st.sampled_from(["operator", "owner"]),
    pubkey=st.binary(min_size=32, max_size=32),
)
setting_names = st.from_regex(r"[a-z][a-z0-9_]{0,20}", fullmatch=True)
setting_values = st.text(st.characters(codec="utf-8", exclude_categories=("Cc", "Cs")), max_size=40)
config_settings = st.dictionaries(setting_names, setting_values, max_size=8).map(
    lambda settings: tuple(sorted(settings.items()))
)
config_events = st.builds(ConfigEvent, settings=config_settings)
runtime_events = st.one_of(
    executable_events,
    workload_events,
    ssh_host_key_events,
    tls_key_events,
    identity_events,
    config_events,
)
events = st.one_of(boot_events, runtime_events)

FIELD_STRATEGIES: dict[type, dict[str, st.SearchStrategy[object]]] = {
    BootEvent: {"boot_nonce": st.binary(min_size=32, max_size=32), "timestamp": timestamps},
    ExecutableEvent: {
        "role": roles,
        "path": clean_paths,
        "sha384": st.binary(min_size=48, max_size=48),
        "build_id": st.none() | st.binary(min_size=1, max_size=64),
        "machine": machines,
    },
    WorkloadEvent: {
        "transition": st.sampled_from(["configure", "expose"]),
        "image": images,
        "image_id": image_ids,
        "persist_dirs": st.lists(clean_paths, max_size=4).map(tuple),
        "port": ports,
    },
    SshHostKeyEvent: {
        "public_key": st.binary(min_size=32, max_size=32).map(ssh_ed25519_line),
    },
    TlsKeyEvent: {"spki_sha256": st.binary(min_size=32, max_size=32)},
    IdentityEvent: {
        "role": st.sampled_from(["operator", "owner"]),
        "pubkey": st.binary(min_size=32, max_size=32),
    },
    ConfigEvent: {"settings": config_settings},
}


def logs_events(min_runtime: int = 0, max_runtime: int = 8) -> st.SearchStrategy[list[Event]]:
    """A boot event followed by runtime events: the shape every log has."""
    return st.builds(
        lambda boot, rest: [boot, *rest],
        boot_events,
        st.lists(runtime_events, min_size=min_runtime, max_size=max_runtime),
    )
