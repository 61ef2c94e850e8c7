"""The ML policy rules: plain functions over a stack's resources.

Each `Rule` has a name, an enforcement level and a config schema with defaults, and a check
that reads the resources as the engine reports them (`StackResources`). The same rules run in
the CrossGuard pack (``policy-pack/``, ``pulumi preview --policy-pack policy-pack``) and in
``mlops plan --policy``; docs/policy.md describes each.

Config, in both places, is CrossGuard's: rule name → ``{"enforcementLevel": ..., <property>:
<value>}``; a property not given takes the schema's default.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from itertools import pairwise
from typing import Any

from pulumi_mlops.policy.pss import check_manifest
from pulumi_mlops.policy.resources import (
    DOCKER_REMOTE_IMAGE,
    MODEL_REGISTRY,
    MODEL_SERVICE,
    MONITORING_STACK,
    RETRAIN_SCHEDULE,
    Container,
    PolicyResource,
    StackResources,
    containers_of,
    docker_init_files,
    is_unknown,
    json_documents,
)

__all__ = [
    "RULES",
    "EnforcementLevel",
    "PolicyConfigError",
    "Rule",
    "Violation",
    "evaluate",
    "has_mandatory",
    "rule_named",
]


class EnforcementLevel(StrEnum):
    """What a violation does (CrossGuard's levels)."""

    ADVISORY = "advisory"
    """Reported; the preview or update goes on."""
    MANDATORY = "mandatory"
    """Reported; the update is blocked (``mlops plan --policy`` exits 1)."""
    DISABLED = "disabled"
    """Not run."""


class PolicyConfigError(ValueError):
    """Policy config that names no rule, or gives a property of the wrong type."""


Finding = tuple[str, PolicyResource | None]
"""A violation's message and the resource it is about (None: the stack)."""


@dataclass(frozen=True)
class Rule:
    """One policy.

    Attributes:
        name: Its name in CrossGuard and in config (``canary-weight-cap``).
        description: One line, as CrossGuard lists it.
        level: Enforcement level unless config sets ``enforcementLevel``.
        config_schema: JSON-schema properties of its config, each with a ``default``.
        check: The rule: the stack's resources and the effective config → findings.
    """

    name: str
    description: str
    level: EnforcementLevel
    check: Callable[[StackResources, Mapping[str, Any]], Iterable[Finding]]
    config_schema: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)

    def settings(self, given: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """The effective config: the defaults, overridden by ``given`` (whose
        ``enforcementLevel`` is not a property and is left out).

        Raises:
            PolicyConfigError: an unknown property, or a value of the wrong type.
        """
        values = {k: v.get("default") for k, v in self.config_schema.items()}
        for key, value in (given or {}).items():
            if key == "enforcementLevel":
                continue
            schema = self.config_schema.get(key)
            if schema is None:
                known = ", ".join(sorted(self.config_schema)) or "none"
                raise PolicyConfigError(
                    f"policy `{self.name}`: unknown config property `{key}` (known: {known})")
            if not _has_type(value, str(schema.get("type"))):
                raise PolicyConfigError(
                    f"policy `{self.name}`: `{key}` must be {schema.get('type')}, got {value!r}")
            values[key] = value
        return values

    def level_for(self, given: Mapping[str, Any] | None = None) -> EnforcementLevel:
        """The enforcement level: ``given``'s ``enforcementLevel``, else the rule's.

        Raises:
            PolicyConfigError: not one of advisory, mandatory, disabled.
        """
        level = (given or {}).get("enforcementLevel", self.level)
        try:
            return EnforcementLevel(level)
        except ValueError:
            raise PolicyConfigError(
                f"policy `{self.name}`: `enforcementLevel` must be advisory, mandatory or "
                f"disabled, got {level!r}") from None


def _has_type(value: Any, type_: str) -> bool:
    if type_ == "boolean":
        return isinstance(value, bool)
    if type_ in ("integer", "number"):
        return isinstance(value, int | float) and not isinstance(value, bool)
    if type_ == "array":
        return isinstance(value, list) and all(isinstance(v, str) for v in value)
    return True


@dataclass(frozen=True)
class Violation:
    """A rule's finding, at the level it was enforced at.

    Attributes:
        policy: The rule's name.
        level: ``advisory`` or ``mandatory``.
        message: What is wrong, where, and how to fix it.
        urn: The resource it is about; "" for the stack.
    """

    policy: str
    level: EnforcementLevel
    message: str
    urn: str = ""

    def line(self) -> str:
        """One line for a terminal: ``[mandatory] retrain-gated: …``."""
        return f"[{self.level}] {self.policy}: {self.message}"


def _env_var(containers: Iterable[Container], name: str) -> Iterator[tuple[Container, str]]:
    for container in containers:
        value = container.env.get(name)
        if value is not None:
            yield container, value


# --------------------------------------------------------------------------- 1. model versions

def _model_version_pinned(stack: StackResources, config: Mapping[str, Any]) -> Iterator[Finding]:
    # Reliable from resources alone: the serving containers' MLOPS_MODEL_NAME/VERSION/ALIAS
    # environment, which every ModelService track sets (Kubernetes and Docker alike); the
    # plan's `models` section is mlops-only, and labels are sanitised.
    if stack.stack not in config["stacks"]:
        return
    for service in stack.of_type(MODEL_SERVICE):
        for resource in stack.descendants(service):
            for container in containers_of(resource):
                name = container.env.get("MLOPS_MODEL_NAME")
                if name is None or "MLOPS_MODEL_VERSION" not in container.env:
                    continue
                version = container.env["MLOPS_MODEL_VERSION"]
                if version:
                    continue
                alias = container.env.get("MLOPS_MODEL_ALIAS") or "?"
                yield (f"{service.label}: {container.where} serves `models:/{name}@{alias}` "
                       "with no version pinned (MLOPS_MODEL_VERSION is empty), so it resolves "
                       "the alias when its pods start and moving the alias changes production "
                       "without a diff. Fix: preview where the registry is reachable "
                       "(MLFLOW_TRACKING_URI and credentials) so the alias is pinned, or serve "
                       f"`models:/{name}/<version>`.", resource)


# --------------------------------------------------------------------------- 2. canary weight

_TRACK = "mlops.dev/track"


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _canary_share(stack: StackResources, service: PolicyResource) -> tuple[float, str] | None:
    """The percent of requests the service's canary gets, and how that was read."""
    children = stack.descendants(service)
    canary_services = set()
    for r in children:
        spec, meta = r.inputs.get("spec"), r.inputs.get("metadata")
        selector = spec.get("selector") if isinstance(spec, Mapping) else None
        if (r.type == "kubernetes:core/v1:Service" and isinstance(selector, Mapping)
                and selector.get(_TRACK) == "canary"):
            canary_services.add(str(meta.get("name", r.name)) if isinstance(meta, Mapping)
                                else r.name)
    for route in (r for r in children if r.type.endswith(":HTTPRoute")):
        spec = route.inputs.get("spec")
        rules = spec.get("rules") if isinstance(spec, Mapping) else None
        for rule in rules if isinstance(rules, list) else []:
            refs = rule.get("backendRefs") if isinstance(rule, Mapping) else None
            weights = [(str(ref.get("name")), _number(ref.get("weight", 1)))
                       for ref in refs if isinstance(ref, Mapping)] if isinstance(
                           refs, list) else []
            total = sum(w or 0 for _, w in weights)
            canary = sum(w or 0 for n, w in weights if n in canary_services)
            if total and canary:
                return 100 * canary / total, f"{route.label} sends it weight {canary:g} of " \
                    f"{total:g}"
    # No route: a Service selects both tracks' pods, so traffic follows the replica counts.
    replicas: dict[str, float] = {}
    autoscaled = {
        str(ref.get("name")): _number(spec.get("minReplicas")) or 1.0
        for r in children if r.type.endswith(":HorizontalPodAutoscaler")
        and isinstance(spec := r.inputs.get("spec"), Mapping)
        and isinstance(ref := spec.get("scaleTargetRef"), Mapping)}
    for r in children:
        if r.type not in ("kubernetes:apps/v1:Deployment", "kubernetes:apps/v1:StatefulSet"):
            continue
        spec = r.inputs.get("spec")
        template = spec.get("template") if isinstance(spec, Mapping) else None
        meta = template.get("metadata") if isinstance(template, Mapping) else None
        labels = meta.get("labels") if isinstance(meta, Mapping) else None
        track = labels.get(_TRACK) if isinstance(labels, Mapping) else None
        if track not in ("stable", "canary") or not isinstance(spec, Mapping):
            continue
        count = _number(spec.get("replicas"))
        if count is None:
            meta = r.inputs.get("metadata")
            name = meta.get("name", r.name) if isinstance(meta, Mapping) else r.name
            count = autoscaled.get(str(name), 1.0)
        replicas[str(track)] = replicas.get(str(track), 0.0) + count
    if replicas.get("canary"):
        total = replicas["canary"] + replicas.get("stable", 0.0)
        return (100 * replicas["canary"] / total,
                f"its pods are {replicas['canary']:g} of {total:g} serving replicas")
    return None


def _canary_weight_cap(stack: StackResources, config: Mapping[str, Any]) -> Iterator[Finding]:
    cap = float(config["maxWeight"])
    for service in stack.of_type(MODEL_SERVICE):
        share = _canary_share(stack, service)
        if share is not None and share[0] > cap:
            yield (f"{service.label}: the canary gets about {share[0]:.4g}% of requests "
                   f"({share[1]}), above the cap of {cap:g}%. Fix: lower `rollout.weight` (or "
                   "add stable replicas when the split follows replicas), or raise "
                   "`maxWeight` in the policy config.", service)


# --------------------------------------------------------------------------- 3. monitoring

def _services_monitored(stack: StackResources, config: Mapping[str, Any]) -> Iterator[Finding]:
    watched: set[str] = set()
    for monitoring in stack.of_type(MONITORING_STACK):
        names = monitoring.inputs.get("watched_services")
        if not isinstance(names, list):
            return  # a MonitoringStack that does not say what it watches: cannot tell
        watched |= {str(n) for n in names}
    for service in stack.of_type(MODEL_SERVICE):
        if service.name not in watched:
            yield (f"{service.label} is not watched by any MonitoringStack of this stack: no "
                   "scraping, SLO or drift alerts for it. Fix: pass it in a MonitoringStack's "
                   "`services`.", service)


# --------------------------------------------------------------------------- 3b. approvals

def _promotion_approved(stack: StackResources, config: Mapping[str, Any]
                        ) -> Iterator[Finding]:
    # From ModelService's `model_promotions` output: what the version each alias resolved to
    # at preview carries (the approval `mlops promote` records; the gate tag of a retrain).
    # An alias left unresolved says nothing here: `model-version-pinned` reports it.
    if stack.stack not in config["stacks"]:
        return
    protected = set(config["protectedAliases"])
    for service in stack.of_type(MODEL_SERVICE):
        promotions = service.inputs.get("model_promotions")
        if not isinstance(promotions, Mapping):
            continue
        for track, record in sorted(promotions.items()):
            if not isinstance(record, Mapping) or record.get("alias") not in protected:
                continue
            if record.get("approved_by") or (config["acceptRetrainGates"]
                                              and record.get("gates_passed") is True):
                continue
            name, alias, version = record.get("name"), record.get("alias"), record.get("version")
            yield (f"{service.label}: the {track} track serves `{name}` version {version} "
                   f"through the protected alias `@{alias}`, and that version carries no "
                   "approval for it (nor passed the gates of a retrain in this registry). "
                   f"Fix: move `@{alias}` with `mlops promote --approved-by WHO --reason WHY`, "
                   "which records who approved it, when and why on the version.", service)


# --------------------------------------------------------------------------- 4. retrain gates

_GATE_KINDS = ("min", "max", "min_improvement", "max_regression")


def _retrain_gated(stack: StackResources, config: Mapping[str, Any]) -> Iterator[Finding]:
    for schedule in stack.of_type(RETRAIN_SCHEDULE):
        # The job's config file (retrain.json): in a ConfigMap on Kubernetes, written by the
        # init container on Docker.
        configs = [doc for r in stack.descendants(schedule)
                   for doc in json_documents([dict(r.inputs), docker_init_files(r.inputs)])
                   if isinstance(doc.get("gates"), Mapping) and "model_name" in doc]
        for doc in configs[:1]:
            gates = doc["gates"]
            if not any(isinstance(gates.get(k), Mapping) and gates.get(k) for k in _GATE_KINDS):
                alias = doc.get("promote_alias")
                yield (f"{schedule.label} has no gate: every version it trains is promoted"
                       f"{f' to `@{alias}`' if alias else ''}, however it scores. Fix: set "
                       "`gates` (`min`, `max`, `min_improvement` or `max_regression`).",
                       schedule)


# --------------------------------------------------------------------------- 5. registry auth

def _is_mlflow_server(command: tuple[str, ...]) -> bool:
    return any(a.endswith("mlflow") and b == "server" for a, b in pairwise(command))


def _registry_auth(stack: StackResources, config: Mapping[str, Any]) -> Iterator[Finding]:
    admins: set[str] = set()
    admin_secrets: set[tuple[str, str]] = set()
    inside: set[str] = set()
    for registry in stack.of_type(MODEL_REGISTRY):
        for resource in stack.descendants(registry):
            inside.add(resource.urn)
            for container in containers_of(resource):
                if container.command is None or not _is_mlflow_server(container.command):
                    continue
                command = list(container.command)
                app = (command[command.index("--app-name") + 1]
                       if "--app-name" in command[:-1] else None)
                if app != "basic-auth":
                    yield (f"{registry.label}: {container.where} runs the MLflow server without "
                           "authentication (no `--app-name basic-auth`): anyone who reaches it "
                           "can change the registry. Fix: keep the registry's auth on.",
                           resource)
                    continue
                admins.add(container.env.get("MLFLOW_AUTH_ADMIN_USERNAME") or "admin")
                ref = container.env_refs.get("MLFLOW_AUTH_ADMIN_PASSWORD")
                if ref is not None:
                    admin_secrets.add(ref)
    for resource in stack.resources:
        if resource.urn in inside:
            continue  # the registry's own workloads (server, grant jobs) act as its admin
        for container in containers_of(resource):
            user = container.env.get("MLFLOW_TRACKING_USERNAME")
            uses_admin_secret = any(ref in admin_secrets for ref in container.env_refs.values())
            if (user is not None and user in admins) or uses_admin_secret:
                yield (f"{container.where} reaches the registry with its admin credentials"
                       f"{f' (MLFLOW_TRACKING_USERNAME={user})' if user in admins else ''}. "
                       "Fix: give the workload its own user (`registry.grant_read(...)`, "
                       "`grant_write(...)`); ModelService and RetrainSchedule do so when given "
                       "the registry.", resource)


# --------------------------------------------------------------------------- 6. image digests

def _pinned(image: str) -> bool:
    return "@sha256:" in image or image.startswith("sha256:")


def _image_digest(stack: StackResources, config: Mapping[str, Any]) -> Iterator[Finding]:
    if not (config["requireDigest"] or stack.stack in config["stacks"]):
        return
    why = ("`requireDigest` is on" if config["requireDigest"]
           else f"stack `{stack.stack}` is in `stacks`")
    for resource in stack.resources:
        images = [(c.where, c.image) for c in containers_of(resource)]
        if resource.type == DOCKER_REMOTE_IMAGE and isinstance(resource.inputs.get("name"), str):
            images.append((resource.label, resource.inputs["name"]))
        for where, image in images:
            # Computed at deployment: another resource's output (RuntimeImage's pushed digest).
            if not image or is_unknown(image) or _pinned(image):
                continue
            yield (f"{where}: image `{image}` is not pinned by digest ({why}): a tag can move, "
                   "so what runs is not what was reviewed. Fix: use `repository@sha256:...` "
                   "(`docker buildx imagetools inspect <image>` shows the digest).", resource)


# --------------------------------------------------------------------------- 7. PSS restricted

def _pod_security(stack: StackResources, config: Mapping[str, Any]) -> Iterator[Finding]:
    for resource in stack.resources:
        if not resource.type.startswith("kubernetes:"):
            continue
        try:
            violations = check_manifest(resource.inputs)
        except ValueError:
            continue  # a kind that holds pods, with its pod spec unknown at preview
        for violation in violations:
            yield (f"{violation} (Pod Security Standard restricted). Fix: keep the components' "
                   "security defaults; a namespace enforcing `restricted` rejects this pod.",
                   resource)


# --------------------------------------------------------------------------- the set

_PRODUCTION_STACKS = {"type": "array", "items": {"type": "string"}, "default": ["prod"]}

RULES: tuple[Rule, ...] = (
    Rule("model-version-pinned",
         "Production model services serve a pinned version, not an alias resolved at start-up.",
         EnforcementLevel.ADVISORY, _model_version_pinned,
         {"stacks": {**_PRODUCTION_STACKS,
                     "description": "Stacks whose services must serve a pinned version."}}),
    Rule("canary-weight-cap",
         "A canary gets at most `maxWeight` percent of a service's requests.",
         EnforcementLevel.MANDATORY, _canary_weight_cap,
         {"maxWeight": {"type": "number", "default": 25,
                        "description": "Largest share of requests (percent) a canary may get."}}),
    Rule("services-monitored",
         "Every ModelService is watched by a MonitoringStack of the same stack.",
         EnforcementLevel.ADVISORY, _services_monitored),
    Rule("promotion-approved",
         "Production services serve a protected alias only at a version approved for it.",
         EnforcementLevel.MANDATORY, _promotion_approved,
         {"stacks": {**_PRODUCTION_STACKS,
                     "description": "Stacks whose protected aliases need an approval."},
          "protectedAliases": {"type": "array", "items": {"type": "string"},
                               "default": ["champion"],
                               "description": "Aliases a version is served through only "
                                              "with an approval recorded on it."},
          "acceptRetrainGates": {"type": "boolean", "default": True,
                                 "description": "Count a version a retrain of the same "
                                                "registry trained and whose gates all passed "
                                                "as approved."}}),
    Rule("retrain-gated",
         "Every RetrainSchedule has at least one gate before it promotes a version.",
         EnforcementLevel.MANDATORY, _retrain_gated),
    Rule("registry-auth",
         "The model registry has authentication on, and no workload uses its admin user.",
         EnforcementLevel.MANDATORY, _registry_auth),
    Rule("image-digest",
         "Images are pinned by digest (in the stacks listed, or everywhere with requireDigest).",
         EnforcementLevel.MANDATORY, _image_digest,
         {"requireDigest": {"type": "boolean", "default": False,
                            "description": "Require digests in every stack."},
          "stacks": {**_PRODUCTION_STACKS,
                     "description": "Stacks whose images must be pinned by digest."}}),
    Rule("pod-security-restricted",
         "Every pod meets the Pod Security Standard restricted profile.",
         EnforcementLevel.MANDATORY, _pod_security),
)
"""Every rule, in the order they run and are reported."""


def rule_named(name: str) -> Rule:
    """The rule called ``name``.

    Raises:
        PolicyConfigError: no rule has that name.
    """
    for rule in RULES:
        if rule.name == name:
            return rule
    known = ", ".join(r.name for r in RULES)
    raise PolicyConfigError(f"no policy named `{name}` (known: {known})")


def evaluate(resources: Iterable[PolicyResource],
             config: Mapping[str, Mapping[str, Any]] | None = None,
             rules: Iterable[Rule] = RULES) -> list[Violation]:
    """Run the rules on a stack's resources.

    Args:
        resources: Every resource of the stack (`resources_from_recording`, or CrossGuard's).
        config: Rule name → its config (``enforcementLevel`` and properties).
        rules: The rules to run. Default: all.

    Returns:
        The violations, rule by rule in ``rules`` order.

    Raises:
        PolicyConfigError: config for an unknown rule, or a bad property.
    """
    config = config or {}
    for name in config:
        rule_named(name)
    stack = StackResources(resources)
    found = []
    for rule in rules:
        given = config.get(rule.name)
        level = rule.level_for(given)
        if level is EnforcementLevel.DISABLED:
            continue
        for message, resource in rule.check(stack, rule.settings(given)):
            found.append(Violation(rule.name, level, message,
                                   resource.urn if resource is not None else ""))
    return found


def has_mandatory(violations: Iterable[Violation]) -> bool:
    """Whether any violation blocks (is mandatory)."""
    return any(v.level is EnforcementLevel.MANDATORY for v in violations)
