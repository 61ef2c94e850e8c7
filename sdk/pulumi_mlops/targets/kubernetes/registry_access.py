"""A registry grant on Kubernetes: the Job reconciling the client's MLflow user in the
registry's namespace (its name carries the spec's digest, so a changed spec runs a new Job),
its ServiceAccount, Secret (the admin's and the user's passwords) and ConfigMap, and the
NetworkPolicies that let it reach the registry's server and nothing else."""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_kubernetes as k8s

from pulumi_mlops.plans.registry import RegistryPlan
from pulumi_mlops.plans.registry_access import GrantPlan
from pulumi_mlops.plans.target import KubernetesTarget
from pulumi_mlops.targets.kubernetes._objects import (
    PodObjects,
    dns_egress,
    meta,
    network_policy,
    pod_objects,
    pod_spec,
    skip_annotations,
)

__all__ = ["KubernetesGrant", "materialize"]


@dataclass(frozen=True)
class KubernetesGrant:
    """A grant's Kubernetes objects.

    Attributes:
        pods: The reconcile's ServiceAccount, Secret and ConfigMap.
        job: The Job (`pulumi up` waits for it to complete, and fails when it fails).
        network_policy: Its pods reach DNS and the registry's server only; nobody reaches them.
        admission: Lets its pods reach the registry's server port (additive to the server's
            own policy, whatever its ``allow_from``).
    """

    pods: PodObjects
    job: k8s.batch.v1.Job
    network_policy: k8s.networking.v1.NetworkPolicy
    admission: k8s.networking.v1.NetworkPolicy


def materialize(parent: pulumi.Resource, plan: GrantPlan, registry: RegistryPlan,
                target: KubernetesTarget, secret_data: pulumi.Output[dict[str, str]],
                after: tuple[pulumi.Resource, ...]) -> KubernetesGrant:
    """Declare the reconcile Job and what it needs under ``parent``, after ``after`` (the
    registry's server)."""
    opts = target.resource_options(parent)
    name, labels, workload = plan.object_name, plan.labels, plan.workload
    pods = pod_objects(name, target, labels, workload, secret_data, opts)
    spec = pod_spec(workload, secret_name=name, config_map_name=f"{name}-files",
                    service_account=name, claims={})
    spec["restart_policy"] = "Never"
    selector = {"app.kubernetes.io/instance": labels["app.kubernetes.io/instance"],
                "app.kubernetes.io/component": "registry-access",
                "mlops.dev/registry-user": plan.client.user}
    job = k8s.batch.v1.Job(
        plan.job_name,
        metadata=meta(target, plan.job_name, labels, skip_annotations(workload)),
        spec={"backoff_limit": 4, "active_deadline_seconds": plan.timeout_seconds,
              "template": {"metadata": {"labels": dict(labels)}, "spec": spec}},
        # No TTL: a Job the cluster deleted would be created, and run, again by `pulumi up`.
        opts=pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(
            depends_on=[*pods.mounted(), *after])),
    )
    port = registry.server.port
    assert port is not None
    to_server = {"to": [{"pod_selector": {"match_labels": dict(registry.server_selector)}}],
                 "ports": [{"protocol": "TCP", "port": port}]}
    policy = network_policy(name, target, labels, selector, [], [dns_egress(target), to_server],
                            opts)
    admission = k8s.networking.v1.NetworkPolicy(
        f"{name}-admit", metadata=meta(target, f"{name}-admit", labels),
        spec={"pod_selector": {"match_labels": dict(registry.server_selector)},
              "policy_types": ["Ingress"],
              "ingress": [{"from": [{"pod_selector": {"match_labels": selector}}],
                           "ports": [{"protocol": "TCP", "port": port}]}]},
        opts=opts)
    return KubernetesGrant(pods, job, policy, admission)
