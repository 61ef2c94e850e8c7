"""Materializers from plan literals: a target needs a plan, the target and the secret data,
and no args or component (what makes a materializer testable without the whole component)."""

from __future__ import annotations

from typing import Any

import pulumi
import pulumi_docker as docker
import pulumi_kubernetes as k8s
import pytest

import pulumi_mlops as mlops
from pulumi_mlops.contracts.model_uri import ModelRef
from pulumi_mlops.contracts.scrape import ScrapeTarget
from pulumi_mlops.plans.registry_ref import RegistryPeer
from pulumi_mlops.plans.service import ServicePlan, TrackPlan
from pulumi_mlops.plans.workload import HttpCheck, Mount, SecretRef, Workload
from pulumi_mlops.render import Recording, record
from pulumi_mlops.targets.docker import service as docker_service
from pulumi_mlops.targets.docker._containers import InitContainerFailedError, after_init
from pulumi_mlops.targets.kubernetes import service as kubernetes_service
from tests.recording import external_egress

K8S = mlops.KubernetesTarget(namespace="ml")
LABELS = {"app.kubernetes.io/name": "model-service", "app.kubernetes.io/instance": "svc"}
SELECTOR = dict(LABELS)


def _plan(*, replicas: int | None = 3, autoscaler: tuple[int, int, int] | None = None,
          disruption_budget: bool = True) -> ServicePlan:
    model = ModelRef("models:/fraud/7", "fraud", "7", None)
    workload = Workload(
        name="server", image="repo/runtime:1.0", command=("mlops", "serve"),
        env={"MLFLOW_TRACKING_PASSWORD": SecretRef("tracking-password")}, port=8080,
        health=HttpCheck("/health"), mounts=(Mount("tmp", "/tmp", "scratch", "1Gi"),),
        startup_seconds=60)
    track = TrackPlan("stable", "svc", model, replicas, workload, {**LABELS, "t": "stable"},
                      {**SELECTOR, "t": "stable"}, {}, spread=True, create_timeout_seconds=240,
                      update_timeout_seconds=600)
    return ServicePlan(
        name="svc", tracks=(track,), labels=LABELS, selector=SELECTOR,
        endpoint_selector=SELECTOR, port=8080, autoscaler=autoscaler,
        disruption_budget=disruption_budget, wait_ready=False, allow_from=(),
        registry=RegistryPeer(ports=(5000,)), hostname=None,
        external_endpoint=None,
        scrape=ScrapeTarget(8080), rollout_deadline_seconds=180, pre_stop_seconds=3,
        grace_seconds=33)


def _materialize_kubernetes(plan: ServicePlan) -> tuple[Recording, list[Any]]:
    made: list[Any] = []

    def program() -> None:
        parent = pulumi.ComponentResource("test:index:Parent", "parent")
        data = pulumi.Output.secret({"tracking-password": "pw-0123456789abcdef"})
        made.append(kubernetes_service.materialize(parent, plan, K8S, data))

    return record(program), made


def test_a_service_plan_literal_materializes_on_kubernetes_as_the_plan_says() -> None:
    rec, [children] = _materialize_kubernetes(_plan())

    assert isinstance(children, kubernetes_service.KubernetesService)
    assert isinstance(children.deployments["stable"], k8s.apps.v1.Deployment)
    assert children.autoscaler is None and children.route is None
    spec = rec.get("kubernetes:apps/v1:Deployment", "svc").inputs["spec"]
    assert spec["replicas"] == 3
    assert spec["progressDeadlineSeconds"] == 180
    pod = spec["template"]["spec"]
    assert pod["terminationGracePeriodSeconds"] == 33
    assert pod["containers"][0]["lifecycle"]["preStop"]["exec"]["command"] == ["sleep", "3"]
    assert pod["topologySpreadConstraints"][0]["labelSelector"]["matchLabels"]["t"] == "stable"
    deployment = rec.get("kubernetes:apps/v1:Deployment", "svc")
    assert deployment.inputs["metadata"]["annotations"]["pulumi.com/skipAwait"] == "true"
    service = rec.get("kubernetes:core/v1:Service", "svc").inputs
    assert service["metadata"]["annotations"]["prometheus.io/port"] == "8080"
    assert service["metadata"]["labels"]["mlops.dev/scrape"] == "true"
    policy = rec.get("kubernetes:networking.k8s.io/v1:NetworkPolicy", "svc").inputs["spec"]
    # No peer admits nobody (an ingress rule with an empty `from` would admit everyone).
    assert policy["ingress"] == []
    assert policy["egress"][1] == external_egress(5000)
    assert rec.of_type("kubernetes:policy/v1:PodDisruptionBudget")


def test_the_plan_decides_autoscaler_and_disruption_budget() -> None:
    rec, [children] = _materialize_kubernetes(
        _plan(replicas=None, autoscaler=(2, 5, 60), disruption_budget=False))

    hpa = rec.get("kubernetes:autoscaling/v2:HorizontalPodAutoscaler", "svc").inputs["spec"]
    assert (hpa["minReplicas"], hpa["maxReplicas"]) == (2, 5)
    assert children.disruption_budget is None
    assert not rec.of_type("kubernetes:policy/v1:PodDisruptionBudget")
    assert "replicas" not in rec.get("kubernetes:apps/v1:Deployment", "svc").inputs["spec"]


def test_a_service_plan_literal_materializes_on_docker() -> None:
    made: list[Any] = []

    def program() -> None:
        parent = pulumi.ComponentResource("test:index:Parent", "parent")
        data = pulumi.Output.secret({"tracking-password": "pw-0123456789abcdef"})
        made.append(docker_service.materialize(parent, _plan(replicas=1), mlops.DockerTarget(),
                                               data, None, ()))

    rec = record(program)

    [children] = made
    assert isinstance(children.network, docker.Network)  # no registry network: its own
    container = rec.get("docker:index/container:Container", "svc").inputs
    assert container["wait"] is False  # the plan's wait_ready
    assert container["ports"] == [{"internal": 8080, "external": 8080, "ip": "127.0.0.1"}]
    assert container["networksAdvanced"][0]["aliases"] == ["svc"]


def test_docker_reports_a_container_unhealthy_before_its_watchdog_ends_it() -> None:
    from pulumi_mlops.plans.workload import UNHEALTHY_EXIT_SECONDS
    from pulumi_mlops.targets.docker._containers import healthcheck

    check = healthcheck(Workload(name="s", image="i", command=("serve",), env={}, port=8080,
                                 health=HttpCheck("/health"),
                                 unhealthy_exit_seconds=UNHEALTHY_EXIT_SECONDS))
    assert check is not None
    # `docker ps` shows "unhealthy" (and why, in `docker inspect`) before the restart.
    assert int(check["interval"].rstrip("s")) * check["retries"] < UNHEALTHY_EXIT_SECONDS


def _after_init(code: int | None) -> Recording:
    def program() -> None:
        pulumi.export("env", after_init(pulumi.Output.from_input(["A=1"]),
                                        pulumi.Output.from_input(code), "reg-init"))

    return record(program)


def test_a_failed_init_container_fails_the_update_before_the_workload_starts() -> None:
    # pulumi-docker ignores an attached container's exit status; the workload's environment
    # is what waits for it, so a failed init stops `pulumi up` with its name and code.
    assert _after_init(0).outputs["env"] == ["A=1"]
    assert _after_init(None).outputs["env"] == ["A=1"]  # nothing ran (mocks, preview)
    with pytest.raises(InitContainerFailedError, match=r"`reg-init` exited 3"):
        _after_init(3)


def test_docker_workloads_with_an_init_container_read_its_exit_code() -> None:
    rec = record(lambda: mlops.ModelRegistry("reg", target=mlops.DockerTarget()))
    server = rec.get("docker:index/container:Container", "reg-mlflow")
    init = rec.get("docker:index/container:Container", "reg-mlflow-init")
    assert init.urn in server.dependencies
    assert set(server.replace_on_changes) == {"tmpfs", "healthcheck", "init"}
    assert server.inputs["destroyGraceSeconds"] > 0
    assert server.inputs["memorySwap"] == server.inputs["memory"]
    volumes = {r.name: r for r in rec.of_type("docker:index/volume:Volume")}
    assert volumes["reg-mlflow-data"].retain_on_delete
    assert not volumes["reg-mlflow-config-0"].retain_on_delete
