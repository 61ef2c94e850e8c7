"""The ML policy pack: pulumi-mlops' policy rules as CrossGuard stack validation policies.

``pulumi preview --policy-pack policy-pack`` (and ``pulumi up``) runs it; ``mlops plan
--policy`` runs the same rules without the Pulumi CLI. See docs/policy.md.

The rules are plain functions in ``pulumi_mlops.policy``, which imports only the standard
library: they are loaded from this repository's ``sdk/`` (beside this folder), so the pack's
environment needs pulumi-policy alone. Constructing the `PolicyPack` starts the analyzer's gRPC
server and never returns, so nothing here may be imported by tests; they call the rules.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

# The rules of the repository this pack lives in (an installed pulumi-mlops may be another
# version).
_SDK = Path(__file__).resolve().parent.parent / "sdk"
if (_SDK / "pulumi_mlops" / "policy").is_dir():
    sys.path.insert(0, str(_SDK))

from pulumi_policy import (  # noqa: E402
    EnforcementLevel,
    PolicyConfigSchema,
    PolicyPack,
    ReportViolation,
    StackValidationArgs,
    StackValidationPolicy,
)
from pulumi_policy.proxy import UnknownValueError  # noqa: E402

from pulumi_mlops.policy import RULES, PolicyResource, Rule, evaluate  # noqa: E402
from pulumi_mlops.policy.resources import UNKNOWN  # noqa: E402


def _plain(value: Any) -> Any:
    """A property as plain values: what CrossGuard cannot know at preview becomes the
    engine's unknown sentinel instead of raising when a rule reads it."""
    if isinstance(value, Mapping):
        out = {}
        for key in value:
            try:
                out[str(key)] = _plain(value[key])
            except UnknownValueError:
                out[str(key)] = UNKNOWN
        return out
    if isinstance(value, Sequence) and not isinstance(value, str | bytes):
        items = []
        for i in range(len(value)):
            try:
                items.append(_plain(value[i]))
            except UnknownValueError:
                items.append(UNKNOWN)
        return items
    return value


def _validate(rule: Rule) -> Callable[[StackValidationArgs, ReportViolation], None]:
    def validate(args: StackValidationArgs, report_violation: ReportViolation) -> None:
        resources = [
            PolicyResource(type=r.resource_type, name=r.name, urn=r.urn,
                           inputs=_plain(r.props),
                           parent=r.parent.urn if r.parent is not None else "")
            for r in args.resources
        ]
        # The level is CrossGuard's to apply (config's enforcementLevel included): run the rule
        # as enabled and report every finding.
        config = {k: v for k, v in args.get_config().items() if k != "enforcementLevel"}
        for violation in evaluate(resources, {rule.name: {**config,
                                                          "enforcementLevel": "mandatory"}},
                                  rules=[rule]):
            report_violation(violation.message, violation.urn or None)

    return validate


def policies() -> list[StackValidationPolicy]:
    """One stack validation policy per rule, at the rule's level, with its config schema."""
    return [
        StackValidationPolicy(
            name=rule.name,
            description=rule.description,
            enforcement_level=EnforcementLevel(str(rule.level)),
            config_schema=PolicyConfigSchema(properties={
                k: dict(v) for k, v in rule.config_schema.items()}) if rule.config_schema
            else None,
            validate=_validate(rule),
        )
        for rule in RULES
    ]


if __name__ == "__main__":
    PolicyPack(name="pulumi-mlops", enforcement_level=EnforcementLevel.ADVISORY,
               policies=policies())
