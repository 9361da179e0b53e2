"""The recovery decision on the pinned image, case by case, and the pin in the workload section."""

from __future__ import annotations

from dataclasses import replace

import pytest

from tdx_identity.core.lifecycle import WorkloadPhase
from tdx_identity.core.state import WorkloadSection
from tdx_identity.workload.config import WorkloadConfig
from tdx_identity.workload.image_pin import ImageEvidence, image_refusal

PINNED = "ab" * 32
OTHER = "cd" * 32
REF = "localhost/app:1"


def test_the_pinned_image_still_named_by_the_reference_is_started() -> None:
    running = ImageEvidence(
        recorded=PINNED, recorded_present=True, resolved=PINNED, container=PINNED
    )
    assert image_refusal(REF, running) is None
    no_container = ImageEvidence(
        recorded=PINNED, recorded_present=True, resolved=PINNED, container=None
    )
    assert image_refusal(REF, no_container) is None


def test_a_recorded_id_other_than_the_one_the_registry_accepted_is_refused() -> None:
    # The host rewrote the state's image_id and tagged its own image to match: podman agrees with
    # the state, but the registry's record (the log a quote's RTMR3 explained) names the pinned ID.
    rewritten = ImageEvidence(
        recorded=OTHER, recorded_present=True, resolved=OTHER, container=OTHER, accepted=PINNED
    )
    assert image_refusal(REF, rewritten) == (
        f"the pinned image {OTHER} of {REF} is not the image {PINNED} the registry accepted "
        "for this workload"
    )
    agreed = ImageEvidence(
        recorded=PINNED, recorded_present=True, resolved=PINNED, container=None, accepted=PINNED
    )
    assert image_refusal(REF, agreed) is None
    prefixed = replace(agreed, accepted=f"sha256:{PINNED}")  # as podman may print it
    assert image_refusal(REF, prefixed) is None


def test_a_retagged_reference_is_refused() -> None:
    retagged = ImageEvidence(recorded=PINNED, recorded_present=True, resolved=OTHER, container=None)
    reason = image_refusal(REF, retagged)
    assert reason == f"{REF} now names {OTHER}, not the pinned image {PINNED}"


def test_a_reference_that_names_nothing_any_more_is_refused() -> None:
    untagged = ImageEvidence(recorded=PINNED, recorded_present=True, resolved=None, container=None)
    assert image_refusal(REF, untagged) == (
        f"{REF} now names no local image, not the pinned image {PINNED}"
    )


def test_a_removed_pinned_image_is_refused() -> None:
    removed = ImageEvidence(recorded=PINNED, recorded_present=False, resolved=OTHER, container=None)
    reason = image_refusal(REF, removed)
    assert reason == f"the pinned image {PINNED} of {REF} is no longer in local storage"


def test_a_container_of_another_image_is_refused() -> None:
    swapped = ImageEvidence(
        recorded=PINNED, recorded_present=True, resolved=PINNED, container=OTHER
    )
    reason = image_refusal(REF, swapped)
    assert reason == f"the workload container runs image {OTHER}, not the pinned {PINNED}"


def test_no_recorded_image_id_is_refused_whatever_podman_says() -> None:
    unpinned = ImageEvidence(
        recorded=None, recorded_present=False, resolved=PINNED, container=PINNED
    )
    reason = image_refusal(REF, unpinned)
    assert reason is not None and reason.startswith(f"no image ID is recorded for {REF}")


def test_the_section_records_the_pinned_image_id_and_reads_it_back() -> None:
    config = WorkloadConfig(image=REF, persist_dirs=("/www",), port=8080)
    section = WorkloadSection(WorkloadPhase.CONFIGURED, config, PINNED)
    data = section.to_json()
    assert data["image_id"] == PINNED
    assert WorkloadSection.from_json(data) == section
    legacy = {k: v for k, v in data.items() if k != "image_id"}
    parsed = WorkloadSection.from_json(legacy)
    assert parsed is not None and parsed.image_id is None
    assert parsed.to_json() == legacy


@pytest.mark.parametrize("bad", ["sha256:" + PINNED, PINNED.upper(), PINNED[:-2], 7, ""])
def test_a_section_with_a_malformed_image_id_does_not_parse(bad: object) -> None:
    config = WorkloadConfig(image=REF, persist_dirs=(), port=8080)
    data = WorkloadSection(WorkloadPhase.CONFIGURED, config, PINNED).to_json() | {"image_id": bad}
    with pytest.raises(ValueError, match="Invalid image ID"):
        WorkloadSection.from_json(data)
