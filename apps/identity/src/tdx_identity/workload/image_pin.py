"""Whether recovery may start the committed workload: its image must be the one pinned at configure.

Configure resolves the owner's reference once to podman's image ID and records it in the state's
workload section; the container runs by that ID. At recovery the host may have retagged the
reference, replaced or removed the image, started another container under our name, or rewritten
the recorded ID (it then differs from the ID the registry accepted): any of these refuses the
workload (no container, no published port, no mount of the owner's clear
dirs) until an owner step or the host's undoing of it. The decision is kept apart from podman so
that every case is tested on its own.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["ImageEvidence", "image_refusal"]


@dataclass(frozen=True)
class ImageEvidence:
    """What podman reports at recovery about the committed workload's image."""

    recorded: str | None
    """The image ID pinned at configure, from the workload section (None: none recorded)."""
    recorded_present: bool
    """Whether podman's local storage still holds the image `recorded` names."""
    resolved: str | None
    """The image ID the configured reference names in local storage now (None: none)."""
    container: str | None
    """The image ID of the existing workload container (None: no container)."""
    accepted: str | None = None
    """The image ID the registry's record accepted for the committed step (its verified event
    log's latest workload event), when the service knows it. The workload section lies on a
    disk the host can rewrite; the registry accepted only what a quote's RTMR3 explained."""


def _bare(image_id: str) -> str:
    """An image ID without podman's optional `sha256:` prefix."""
    return image_id.removeprefix("sha256:")


def image_refusal(reference: str, evidence: ImageEvidence) -> str | None:
    """Why the committed workload must not be started, or None when its pinned image stands."""
    recorded = evidence.recorded
    if recorded is None:
        return (
            f"no image ID is recorded for {reference}: the image cannot be pinned, "
            "so it is not run (configure again)"
        )
    if evidence.accepted is not None and _bare(evidence.accepted) != _bare(recorded):
        return (
            f"the pinned image {recorded} of {reference} is not the image "
            f"{evidence.accepted} the registry accepted for this workload"
        )
    if not evidence.recorded_present:
        return f"the pinned image {recorded} of {reference} is no longer in local storage"
    if evidence.resolved != recorded:
        now = evidence.resolved if evidence.resolved is not None else "no local image"
        return f"{reference} now names {now}, not the pinned image {recorded}"
    if evidence.container is not None and evidence.container != recorded:
        return f"the workload container runs image {evidence.container}, not the pinned {recorded}"
    return None
