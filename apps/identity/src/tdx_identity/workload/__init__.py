"""The owner's workload: a hardened podman container on gocryptfs storage, set up over SSH.

Building blocks the identity service wires together: `config` (validated settings),
`runtime` (container engine), `keys` (store key source), `store` (encrypted storage) and
`ssh` (owner-only setup access).
"""

from .config import (
    DEFAULT_CAP_ADD,
    Hardening,
    WorkloadConfig,
    WorkloadConfigError,
    validate_image_reference,
    validate_persist_dir,
    validate_persist_dirs,
    validate_port,
)
from .keys import (
    KeyExistsError,
    KeyNotFoundError,
    KeyProvider,
    KeyProviderError,
    LocalFileKeyProvider,
)
from .runtime import (
    CONFIG_LABEL,
    MANAGED_LABEL,
    ContainerInfo,
    ContainerRuntime,
    ContainerRuntimeError,
    ImageUnavailableError,
    PodmanRuntime,
)
from .ssh import (
    ExecArgvFactory,
    HostKey,
    SessionRequest,
    SetupSshServer,
    SshServerError,
    container_exec_factory,
)
from .store import EncryptedStore, GocryptfsStore, StoreError

__all__ = [
    "CONFIG_LABEL",
    "DEFAULT_CAP_ADD",
    "MANAGED_LABEL",
    "ContainerInfo",
    "ContainerRuntime",
    "ContainerRuntimeError",
    "EncryptedStore",
    "ExecArgvFactory",
    "GocryptfsStore",
    "Hardening",
    "HostKey",
    "ImageUnavailableError",
    "KeyExistsError",
    "KeyNotFoundError",
    "KeyProvider",
    "KeyProviderError",
    "LocalFileKeyProvider",
    "PodmanRuntime",
    "SessionRequest",
    "SetupSshServer",
    "SshServerError",
    "StoreError",
    "WorkloadConfig",
    "WorkloadConfigError",
    "container_exec_factory",
    "validate_image_reference",
    "validate_persist_dir",
    "validate_persist_dirs",
    "validate_port",
]
