"""The workload manager used when no workload runtime can run here: every step answers 503."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path

from tdx_identity.core.ports import CommittedWorkload, WorkloadConfig
from tdx_identity.exceptions import WorkloadUnavailable

from .helpers import installed_helpers

__all__ = ["NotConfiguredWorkload"]

log = logging.getLogger("tdx_identity.workload")


class NotConfiguredWorkload:
    """A `WorkloadManager` that runs nothing; `reason` names what is missing (e.g. podman not
    installed). The store key is then created by the first configure once a runtime is
    available."""

    REASON = "workload runtime not available"

    def __init__(self, reason: str = REASON) -> None:
        self.reason = reason

    def helper_programs(self) -> Mapping[str, Path]:
        """The helper programs installed here: they could run, so they are measured."""
        return installed_helpers()

    async def on_owner_registered(self, owner_pubkey: bytes) -> None:
        return None

    async def configure(self, config: WorkloadConfig, owner_pubkey: bytes) -> None:
        raise WorkloadUnavailable(self.reason)

    async def open_setup_access(self, config: WorkloadConfig, owner_pubkey: bytes) -> None:
        raise WorkloadUnavailable(self.reason)

    async def abandon_configure(self) -> None:
        return None

    async def begin_expose(self, config: WorkloadConfig) -> str:
        raise WorkloadUnavailable(self.reason)

    async def expose(self, config: WorkloadConfig) -> None:
        raise WorkloadUnavailable(self.reason)

    async def close_setup_access_for_good(self) -> None:
        return None

    async def recover(self, committed: CommittedWorkload | None) -> bool:
        if committed is not None:
            log.warning(
                "a workload is configured but cannot run here", extra={"reason": self.reason}
            )
        return False

    async def shutdown(self) -> None:
        return None

    def running_image_id(self) -> str | None:
        return None

    def refusal(self) -> str | None:
        return None
