"""The ML policy rules on small programs recorded under Pulumi's mocks: each rule with a program
that passes and one that fails, as `mlops plan --policy` and the CrossGuard pack run them."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import pulumi
import pulumi_kubernetes as k8s
import pytest

import pulumi_mlops as mlops
from pulumi_mlops.contracts.lineage import (
    APPROVAL_ALIAS_TAG,
    APPROVAL_AT_TAG,
    APPROVAL_BY_TAG,
    APPROVAL_REASON_TAG,
    GATES_PASSED_TAG,
    ORIGIN_REGISTRY_TAG,
    promotion_record,
)
from pulumi_mlops.policy import (
    RULES,
    EnforcementLevel,
    PolicyConfigError,
    PolicyResource,
    Violation,
    evaluate,
    has_mandatory,
    resources_from_recording,
    rule_named,
)
from pulumi_mlops.policy.resources import UNKNOWN
from pulumi_mlops.render import record
from tests.recording import RUNTIME_IMAGE

K8S = mlops.KubernetesTarget(namespace="ml")
K8S_GW = mlops.KubernetesTarget(
    namespace="ml", gateway=mlops.GatewayRef(name="public", namespace="gateways",
                                             section_name="https"))
DOCKER = mlops.DockerTarget()
DIGEST = "registry.example.com/ml/mlops-runtime@sha256:" + "a" * 64
GATES = mlops.Gates(min={"roc_auc": 0.9})


@pytest.fixture(autouse=True)
def no_registry_in_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    # Aliases stay unresolved unless a test passes a resolver.
    for key in ("MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD",
                "MLFLOW_TRACKING_TOKEN"):
        monkeypatch.delenv(key, raising=False)


def pinned(version: str) -> Callable[[str, str], str]:
    """A resolver standing in for the registry: every alias points at ``version``."""
    return lambda name, alias: version


def violations(program: Callable[[], Any], rule: str, *, stack: str = "dev",
               config: Mapping[str, Any] | None = None) -> list[Violation]:
    """What ``rule`` finds in ``program`` recorded as ``stack``."""
    rec = record(program, stack=stack)
    return evaluate(resources_from_recording(rec), {rule: config} if config else None,
                    rules=[rule_named(rule)])


def platform(target: mlops.Target = K8S, **service: Any) -> Callable[[], None]:
    """A registry, a service reading it as its own user, and monitoring watching it."""
    def program() -> None:
        registry = mlops.ModelRegistry("reg", target=target)
        args = {"image": RUNTIME_IMAGE, "model_uri": "models:/fraud/3", **service}
        fraud = mlops.ModelService("fraud", target=target, registry=registry, **args)
        mlops.MonitoringStack("mon", target=target, services=[fraud])

    return program


# --------------------------------------------------------------------------- the set


def test_every_rule_has_a_level_a_description_and_defaults_for_its_config() -> None:
    assert [r.name for r in RULES] == [
        "model-version-pinned", "canary-weight-cap", "services-monitored",
        "promotion-approved", "retrain-gated", "registry-auth", "image-digest",
        "pod-security-restricted"]
    for rule in RULES:
        assert rule.description and rule.level in (EnforcementLevel.ADVISORY,
                                                   EnforcementLevel.MANDATORY)
        assert all("default" in schema and "type" in schema
                   for schema in rule.config_schema.values())


def test_config_for_an_unknown_rule_or_property_or_of_a_wrong_type_is_refused() -> None:
    with pytest.raises(PolicyConfigError, match="no policy named `canary-cap`"):
        evaluate([], {"canary-cap": {}})
    with pytest.raises(PolicyConfigError, match="unknown config property `max`"):
        evaluate([], {"canary-weight-cap": {"max": 10}})
    with pytest.raises(PolicyConfigError, match="`maxWeight` must be number"):
        evaluate([], {"canary-weight-cap": {"maxWeight": "10"}})
    with pytest.raises(PolicyConfigError, match="`enforcementLevel` must be"):
        evaluate([], {"canary-weight-cap": {"enforcementLevel": "blocking"}})


# --------------------------------------------------------------------------- 1. model versions


def test_a_prod_service_serving_an_unresolved_alias_is_reported() -> None:
    program = platform(model_uri="models:/fraud@champion")
    [found] = violations(program, "model-version-pinned", stack="prod")
    assert found.level is EnforcementLevel.ADVISORY
    assert "ModelService 'fraud'" in found.message
    assert "`models:/fraud@champion` with no version pinned" in found.message
    assert found.urn.endswith("::fraud")


def test_a_resolved_alias_a_pinned_version_or_a_stack_not_listed_passes() -> None:
    resolved = platform(model_uri="models:/fraud@champion", resolver=pinned("7"))
    assert violations(resolved, "model-version-pinned", stack="prod") == []
    assert violations(platform(), "model-version-pinned", stack="prod") == []
    unresolved = platform(model_uri="models:/fraud@champion")
    assert violations(unresolved, "model-version-pinned", stack="dev") == []
    assert violations(unresolved, "model-version-pinned", stack="dev",
                      config={"stacks": ["dev"]}) != []


def test_model_version_rule_reads_docker_containers_too() -> None:
    program = platform(DOCKER, model_uri="models:/fraud@champion")
    [found] = violations(program, "model-version-pinned", stack="prod")
    assert "Container `fraud`" in found.message


# --------------------------------------------------------------------------- 2. canary weight


def test_a_canary_above_the_cap_is_refused_through_a_gateway_and_by_replicas() -> None:
    heavy = mlops.Rollout.canary("models:/fraud/4", 40)
    [by_route] = violations(platform(K8S_GW, hostname="fraud.example.com", rollout=heavy),
                            "canary-weight-cap")
    assert by_route.level is EnforcementLevel.MANDATORY
    assert "the canary gets about 40% of requests" in by_route.message
    assert "HTTPRoute `fraud` sends it weight 40 of 100" in by_route.message
    # Without a Gateway the split follows replicas: one canary beside one stable pod is 50%.
    [by_replicas] = violations(platform(rollout=heavy), "canary-weight-cap")
    assert "about 50% of requests (its pods are 1 of 2 serving replicas)" in by_replicas.message


def test_a_canary_within_the_cap_passes_and_the_cap_is_config() -> None:
    light = mlops.Rollout.canary("models:/fraud/4", 10)
    program = platform(K8S_GW, hostname="fraud.example.com", rollout=light)
    assert violations(program, "canary-weight-cap") == []
    assert violations(platform(replicas=3, rollout=mlops.Rollout.canary("models:/fraud/4", 25)),
                      "canary-weight-cap") == []
    [found] = violations(program, "canary-weight-cap", config={"maxWeight": 5})
    assert "above the cap of 5%" in found.message


# --------------------------------------------------------------------------- 3. monitoring


def test_a_service_no_monitoring_stack_watches_is_reported() -> None:
    def program() -> None:
        registry = mlops.ModelRegistry("reg", target=K8S)
        fraud, _churn = (mlops.ModelService(n, target=K8S, registry=registry,
                                            image=RUNTIME_IMAGE, model_uri=f"models:/{n}/1")
                         for n in ("fraud", "churn"))
        mlops.MonitoringStack("mon", target=K8S, services=[fraud])

    [found] = violations(program, "services-monitored")
    assert found.level is EnforcementLevel.ADVISORY
    assert found.message.startswith("ModelService 'churn' is not watched by any MonitoringStack")


def test_services_watched_by_a_monitoring_stack_pass_on_both_targets() -> None:
    assert violations(platform(), "services-monitored") == []
    assert violations(platform(DOCKER), "services-monitored") == []


def test_the_monitoring_stack_registers_the_services_it_watches() -> None:
    rec = record(platform())
    [mon] = [r for r in resources_from_recording(rec) if r.type == "mlops:index:MonitoringStack"]
    assert mon.inputs["watched_services"] == ["fraud"]


# --------------------------------------------------------------------------- 3b. approvals

APPROVED = {APPROVAL_BY_TAG: "alice", APPROVAL_AT_TAG: "2026-11-30T10:00:00+00:00",
            APPROVAL_REASON_TAG: "CHG-42", APPROVAL_ALIAS_TAG: "champion"}


class TaggedVersion:
    """A resolver standing in for a registry whose every alias points at version 8, which
    carries ``tags`` (as `RegistryResolver` reports them)."""

    def __init__(self, tags: Mapping[str, str]) -> None:
        self.tags = dict(tags)

    def __call__(self, name: str, alias: str) -> str:
        return "8"

    def promotion(self, name: str, alias: str) -> dict[str, Any]:
        return promotion_record("8", alias, self.tags)


@pytest.mark.parametrize("target", [K8S, DOCKER], ids=["kubernetes", "docker"])
def test_a_prod_service_on_champion_without_an_approval_is_refused(target: mlops.Target) -> None:
    program = platform(target, model_uri="models:/fraud@champion", resolver=TaggedVersion({}))
    [found] = violations(program, "promotion-approved", stack="prod")
    assert found.level is EnforcementLevel.MANDATORY
    assert found.message.startswith(
        "ModelService 'fraud': the stable track serves `fraud` version 8 through the protected "
        "alias `@champion`, and that version carries no approval for it")
    assert "mlops promote --approved-by WHO --reason WHY" in found.message
    assert found.urn.endswith("::fraud")


def test_an_approval_for_that_alias_or_a_gated_retrain_of_this_registry_passes() -> None:
    def prod(tags: Mapping[str, str], **config: Any) -> list[Violation]:
        program = platform(model_uri="models:/fraud@champion", resolver=TaggedVersion(tags))
        return violations(program, "promotion-approved", stack="prod", config=config or None)

    assert prod(APPROVED) == []
    assert prod({GATES_PASSED_TAG: "true"}) == []
    # An approval of another alias, failed gates, or gates passed in the registry a copy was
    # promoted from are no approval here.
    assert len(prod({**APPROVED, APPROVAL_ALIAS_TAG: "challenger"})) == 1
    assert len(prod({GATES_PASSED_TAG: "false"})) == 1
    assert len(prod({GATES_PASSED_TAG: "true", ORIGIN_REGISTRY_TAG: "http://staging"})) == 1
    assert len(prod({GATES_PASSED_TAG: "true"}, acceptRetrainGates=False)) == 1
    assert prod({}, protectedAliases=["prod"]) == []


def test_unprotected_aliases_pinned_versions_other_stacks_and_silent_resolvers_pass() -> None:
    unapproved = TaggedVersion({})
    challenger = platform(model_uri="models:/fraud@challenger", resolver=unapproved)
    assert violations(challenger, "promotion-approved", stack="prod") == []
    assert violations(platform(resolver=unapproved), "promotion-approved", stack="prod") == []
    champion = platform(model_uri="models:/fraud@champion", resolver=unapproved)
    assert violations(champion, "promotion-approved", stack="staging") == []
    # A resolver that tells only the version (the program's own): nothing to check here.
    silent = platform(model_uri="models:/fraud@champion", resolver=pinned("8"))
    assert violations(silent, "promotion-approved", stack="prod") == []


def test_a_canary_on_champion_needs_its_approval_too() -> None:
    program = platform(model_uri="models:/fraud/7", resolver=TaggedVersion({}),
                       rollout=mlops.Rollout.canary(model_uri="models:/fraud@champion",
                                                    weight=10))
    [found] = violations(program, "promotion-approved", stack="prod")
    assert "the canary track serves `fraud` version 8" in found.message


def test_the_service_outputs_what_the_resolved_version_carries() -> None:
    outputs: dict[str, Any] = {}

    def program() -> None:
        registry = mlops.ModelRegistry("reg", target=K8S)
        fraud = mlops.ModelService("fraud", target=K8S, registry=registry, image=RUNTIME_IMAGE,
                                   model_uri="models:/fraud@champion",
                                   resolver=TaggedVersion(APPROVED))
        fraud.model_promotions.apply(outputs.update)

    record(program)
    assert outputs == {"stable": {
        "name": "fraud", "version": "8", "alias": "champion", "approved_by": "alice",
        "approved_at": "2026-11-30T10:00:00+00:00", "reason": "CHG-42", "gates_passed": False}}


# --------------------------------------------------------------------------- 4. retrain gates


def schedule(target: mlops.Target, gates: mlops.Gates) -> Callable[[], None]:
    def program() -> None:
        registry = mlops.ModelRegistry("reg", target=target)
        mlops.RetrainSchedule("nightly", target=target, registry=registry, image=RUNTIME_IMAGE,
                              schedule="0 3 * * *", model_name="fraud",
                              dataset="sklearn:breast_cancer",
                              estimator="sklearn.linear_model.LogisticRegression",
                              gates=gates, promote_alias="champion")

    return program


@pytest.mark.parametrize("target", [K8S, DOCKER], ids=["kubernetes", "docker"])
def test_a_retrain_schedule_without_gates_is_refused(target: mlops.Target) -> None:
    [found] = violations(schedule(target, mlops.Gates()), "retrain-gated")
    assert found.level is EnforcementLevel.MANDATORY
    assert found.message.startswith("RetrainSchedule 'nightly' has no gate: every version it "
                                    "trains is promoted to `@champion`")


@pytest.mark.parametrize("target", [K8S, DOCKER], ids=["kubernetes", "docker"])
def test_a_retrain_schedule_with_a_gate_passes(target: mlops.Target) -> None:
    assert violations(schedule(target, GATES), "retrain-gated") == []
    assert violations(schedule(target, mlops.Gates(max_regression={"log_loss": 0.05})),
                      "retrain-gated") == []


# --------------------------------------------------------------------------- 5. registry auth


@pytest.mark.parametrize("target", [K8S, DOCKER], ids=["kubernetes", "docker"])
def test_services_with_their_own_registry_user_pass(target: mlops.Target) -> None:
    assert violations(platform(target), "registry-auth") == []


@pytest.mark.parametrize("target", [K8S, DOCKER], ids=["kubernetes", "docker"])
def test_a_service_using_the_registry_admin_is_refused(target: mlops.Target) -> None:
    def program() -> None:
        registry = mlops.ModelRegistry("reg", target=target, admin_username="root-admin")
        as_admin = mlops.RegistryEndpoint(tracking_uri="http://reg-mlflow:5000",
                                          username="root-admin", password="not-the-real-one")
        mlops.ModelService("fraud", target=target, registry=as_admin, image=RUNTIME_IMAGE,
                           model_uri="models:/fraud/3")
        del registry

    [found] = violations(program, "registry-auth")
    assert found.level is EnforcementLevel.MANDATORY
    assert "with its admin credentials (MLFLOW_TRACKING_USERNAME=root-admin)" in found.message
    assert found.urn.endswith("::fraud")


def _server(command: list[str]) -> list[PolicyResource]:
    registry = PolicyResource("mlops:index:ModelRegistry", "reg",
                              "urn:pulumi:prod::p::mlops:index:ModelRegistry::reg")
    deployment = PolicyResource(
        "kubernetes:apps/v1:Deployment", "reg-mlflow",
        "urn:pulumi:prod::p::mlops:index:ModelRegistry$kubernetes:apps/v1:Deployment::reg-mlflow",
        {"kind": "Deployment", "metadata": {"name": "reg-mlflow"}, "spec": {"template": {"spec": {
            "containers": [{"name": "mlflow", "image": "mlflow:3", "command": command}]}}}},
        parent=registry.urn)
    return [registry, deployment]


def test_a_registry_server_without_authentication_is_refused() -> None:
    # The component always turns auth on; a stack whose registry was declared otherwise (or
    # edited by a transform) is what this catches.
    rule = [rule_named("registry-auth")]
    [found] = evaluate(_server(["mlflow", "server", "--port", "5000"]), rules=rule)
    assert "runs the MLflow server without authentication" in found.message
    assert evaluate(_server(["mlflow", "server", "--app-name", "basic-auth"]), rules=rule) == []


# --------------------------------------------------------------------------- 6. image digests


def test_images_by_tag_are_refused_in_prod_and_where_required() -> None:
    def program() -> None:
        mlops.ModelService("fraud", target=K8S, image=RUNTIME_IMAGE, model_uri="models:/fraud/3",
                           registry=mlops.RegistryEndpoint(tracking_uri="http://mlflow:5000"))

    [found] = violations(program, "image-digest", stack="prod")
    assert found.level is EnforcementLevel.MANDATORY
    assert (f"Deployment `fraud` container `server`: image `{RUNTIME_IMAGE}` is not pinned by "
            "digest (stack `prod` is in `stacks`)") in found.message
    assert violations(program, "image-digest", stack="dev") == []
    assert len(violations(program, "image-digest", config={"requireDigest": True})) == 1


def test_images_by_digest_pass_and_docker_pulls_are_checked_by_their_reference() -> None:
    def program(target: mlops.Target) -> Callable[[], None]:
        return lambda: mlops.ModelService(
            "fraud", target=target, image=DIGEST, model_uri="models:/fraud/3",
            registry=mlops.RegistryEndpoint(tracking_uri="http://mlflow:5000"))

    assert violations(program(K8S), "image-digest", stack="prod") == []
    assert violations(program(DOCKER), "image-digest", stack="prod") == []
    # The registry's RemoteImage pulls MLflow's image by tag: the pull is what is checked.
    found = violations(platform(DOCKER, image=DIGEST), "image-digest", stack="prod")
    assert found and all("RemoteImage" in v.message or "Container" in v.message for v in found)
    assert any("ghcr.io/mlflow/mlflow:" in v.message for v in found)


# --------------------------------------------------------------------------- 7. PSS restricted


def test_components_meet_the_restricted_pod_security_standard() -> None:
    assert violations(platform(), "pod-security-restricted") == []
    assert violations(schedule(K8S, GATES), "pod-security-restricted") == []


def test_a_privileged_pod_is_refused() -> None:
    def program() -> None:
        labels = {"app": "debug"}
        k8s.apps.v1.Deployment(
            "debug", metadata={"name": "debug", "namespace": "ml"},
            spec={"selector": {"match_labels": labels}, "template": {
                "metadata": {"labels": labels},
                "spec": {"host_network": True, "containers": [{
                    "name": "shell", "image": DIGEST,
                    "security_context": {"privileged": True}}]}}},
            opts=pulumi.ResourceOptions())

    found = violations(program, "pod-security-restricted")
    assert found and all(v.level is EnforcementLevel.MANDATORY for v in found)
    messages = "\n".join(v.message for v in found)
    assert "Deployment/debug: pod: hostNetwork must be false or unset" in messages
    assert "container `shell`: securityContext.privileged" in messages


# --------------------------------------------------------------------------- levels


def test_config_sets_a_rule_s_level_or_disables_it() -> None:
    program = schedule(K8S, mlops.Gates())
    rec = record(program)
    resources = resources_from_recording(rec)
    found = evaluate(resources, rules=[rule_named("retrain-gated")])
    assert has_mandatory(found)
    advisory = evaluate(resources, {"retrain-gated": {"enforcementLevel": "advisory"}},
                        rules=[rule_named("retrain-gated")])
    assert advisory and not has_mandatory(advisory)
    assert evaluate(resources, {"retrain-gated": {"enforcementLevel": "disabled"}},
                    rules=[rule_named("retrain-gated")]) == []


def test_values_unknown_at_preview_are_not_violations() -> None:
    # An image computed at deployment (another resource's output, such as RuntimeImage's pushed
    # digest) cannot be judged at preview; CrossGuard shows it as unknown.
    resources = resources_from_recording(record(platform()))
    unknown = [PolicyResource(r.type, r.name, r.urn, _with_unknown_images(r.inputs), r.parent)
               for r in resources]
    rule = [rule_named("image-digest")]
    assert evaluate(resources, {"image-digest": {"requireDigest": True}}, rules=rule) != []
    assert evaluate(unknown, {"image-digest": {"requireDigest": True}}, rules=rule) == []


def _with_unknown_images(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: UNKNOWN if k == "image" else _with_unknown_images(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_with_unknown_images(v) for v in value]
    return value


def test_the_policy_package_exports_names_it_has() -> None:
    import pulumi_mlops.policy as policy

    assert all(hasattr(policy, name) for name in policy.__all__)
