"""The tags a registered model version carries about how it may be served: written by
``mlops promote`` (where a copy came from, who approved moving a protected alias to it) and
``mlops retrain`` (whether its gates passed), read at preview by `ModelService` (its
``model_promotions`` output) and by the policy rule ``promotion-approved``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

__all__ = [
    "APPROVAL_ALIAS_TAG",
    "APPROVAL_AT_TAG",
    "APPROVAL_BY_TAG",
    "APPROVAL_REASON_TAG",
    "APPROVAL_TAGS",
    "GATES_PASSED_TAG",
    "ORIGIN_MODEL_TAG",
    "ORIGIN_REGISTRY_TAG",
    "ORIGIN_RUN_TAG",
    "ORIGIN_TAGS",
    "ORIGIN_VERSION_TAG",
    "promotion_record",
]

ORIGIN_REGISTRY_TAG: Final = "mlops.promoted_from.registry"
ORIGIN_MODEL_TAG: Final = "mlops.promoted_from.model"
ORIGIN_VERSION_TAG: Final = "mlops.promoted_from.version"
ORIGIN_RUN_TAG: Final = "mlops.promoted_from.run_id"
ORIGIN_TAGS: Final = (ORIGIN_REGISTRY_TAG, ORIGIN_MODEL_TAG, ORIGIN_VERSION_TAG, ORIGIN_RUN_TAG)
"""Tags on a promoted version (and its run) naming where it was copied from; the first three
identify the source version."""

APPROVAL_BY_TAG: Final = "mlops.approval.by"
APPROVAL_AT_TAG: Final = "mlops.approval.at"
APPROVAL_REASON_TAG: Final = "mlops.approval.reason"
APPROVAL_ALIAS_TAG: Final = "mlops.approval.alias"
APPROVAL_TAGS: Final = (APPROVAL_BY_TAG, APPROVAL_AT_TAG, APPROVAL_REASON_TAG, APPROVAL_ALIAS_TAG)
"""Tags recording who approved moving which alias to a version, when (ISO 8601, UTC) and why."""

GATES_PASSED_TAG: Final = "mlops.gates_passed"
"""``true`` on a version whose retrain run passed every gate (``false`` when one failed)."""


def promotion_record(version: str, alias: str, tags: Mapping[str, str]
                     ) -> dict[str, str | bool | None]:
    """What a version's tags say about serving it through ``alias``.

    Returns:
        ``version`` and ``alias``; ``approved_by``, ``approved_at`` and ``reason`` of an approval
        recorded for moving that alias to it (None without one); ``gates_passed``: trained by a
        retrain of this registry whose gates all passed (a copy promoted from another registry
        carries its source's gate tag, and is not).
    """
    approved = tags.get(APPROVAL_ALIAS_TAG) == alias and bool(tags.get(APPROVAL_BY_TAG))
    copied = any(tag in tags for tag in ORIGIN_TAGS)
    return {
        "version": version,
        "alias": alias,
        "approved_by": tags.get(APPROVAL_BY_TAG) if approved else None,
        "approved_at": tags.get(APPROVAL_AT_TAG) if approved else None,
        "reason": tags.get(APPROVAL_REASON_TAG) if approved else None,
        "gates_passed": tags.get(GATES_PASSED_TAG) == "true" and not copied,
    }
