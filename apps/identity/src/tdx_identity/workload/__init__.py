"""The owner's workload: a hardened podman container on gocryptfs storage, set up over SSH.

Building blocks: `config` (the one `WorkloadConfig`, its validators, the hardening),
`requests` (the owner's signed configure and expose bodies), `manager` (the `WorkloadManager`
the app wires in, and its `WorkloadSettings`), `runtime` (podman), `store` (gocryptfs),
`store_key` (where the store key is made and kept), `ssh` (owner-only setup access), `helpers`
(the helper programs measured into RTMR3) and `unavailable` (the manager without a runtime).
"""

from tdx_identity.exceptions import (
    ContainerRuntimeError,
    ImageUnavailableError,
    KeyExistsError,
    KeyNotFoundError,
    KeyProviderError,
    SshServerError,
    StoreError,
    WorkloadConfigError,
)

from .config import (
    DEFAULT_CAP_ADD,
    Hardening,
    WorkloadConfig,
    validate_image_reference,
    validate_persist_dir,
    validate_persist_dirs,
    validate_port,
)
from .helpers import HELPER_ROLES, HelperSpec, installed_helpers, resolve_helper, resolve_helpers
from .runtime import (
    CONFIG_LABEL,
    MANAGED_LABEL,
    ContainerInfo,
    ContainerRuntime,
    PodmanRuntime,
)
from .ssh import (
    ExecArgvFactory,
    HostKey,
    SessionRequest,
    SetupSshServer,
    container_exec_factory,
)
from .store import EncryptedStore, GocryptfsStore
from .store_key import LocalFileKeyProvider

__all__ = [
    "CONFIG_LABEL",
    "DEFAULT_CAP_ADD",
    "HELPER_ROLES",
    "MANAGED_LABEL",
    "ContainerInfo",
    "ContainerRuntime",
    "ContainerRuntimeError",
    "EncryptedStore",
    "ExecArgvFactory",
    "GocryptfsStore",
    "Hardening",
    "HelperSpec",
    "HostKey",
    "ImageUnavailableError",
    "KeyExistsError",
    "KeyNotFoundError",
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
    "installed_helpers",
    "resolve_helper",
    "resolve_helpers",
    "validate_image_reference",
    "validate_persist_dir",
    "validate_persist_dirs",
    "validate_port",
]
