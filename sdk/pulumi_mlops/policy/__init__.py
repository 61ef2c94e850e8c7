"""Governance rules for ML stacks, as plain functions over a stack's resources.

The same rules run in ``mlops plan --policy`` and in the CrossGuard pack in ``policy-pack/``
(``pulumi preview --policy-pack policy-pack``); see docs/policy.md. The package imports nothing
but the standard library, so the pack can load it beside pulumi-policy in its own environment.
"""

from pulumi_mlops.policy.resources import (
    PolicyResource,
    StackResources,
    resources_from_recording,
)
from pulumi_mlops.policy.rules import (
    RULES,
    EnforcementLevel,
    PolicyConfigError,
    Rule,
    Violation,
    evaluate,
    has_mandatory,
    rule_named,
)

__all__ = [
    "RULES",
    "EnforcementLevel",
    "PolicyConfigError",
    "PolicyResource",
    "Rule",
    "StackResources",
    "Violation",
    "evaluate",
    "has_mandatory",
    "resources_from_recording",
    "rule_named",
]
