"""RetrainSchedule on Kubernetes: a CronJob running the retrain job, with its ServiceAccount,
Secret, ConfigMap and an egress-only NetworkPolicy."""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_kubernetes as k8s

from pulumi_mlops.contracts.retrain import SLOT_ENV
from pulumi_mlops.plans.retrain import RetrainPlan
from pulumi_mlops.plans.target import KubernetesTarget
from pulumi_mlops.targets.kubernetes._objects import (
    PodObjects,
    dns_egress,
    external_egress,
    meta,
    network_policy,
    pod_objects,
    pod_spec,
    registry_egress,
    skip_annotations,
)

__all__ = ["JOB_NAME_LABEL", "KubernetesRetrain", "materialize"]

JOB_NAME_LABEL = "batch.kubernetes.io/job-name"
"""The label the API server sets on every pod of a Job (Kubernetes 1.27+, as ``timeZone``),
holding the Job's name: the CronJob's run's idempotency key, given to the job as ``SLOT_ENV``."""


@dataclass(frozen=True)
class KubernetesRetrain:
    """The schedule's Kubernetes objects.

    Attributes:
        pods: The job's ServiceAccount, Secret and ConfigMap (its config file).
        cron_job: The CronJob.
        initial_job: The Job running the job once at creation (``run_on_create``), if any.
        network_policy: No ingress; egress to DNS, the registry and a URL dataset.
    """

    pods: PodObjects
    cron_job: k8s.batch.v1.CronJob
    initial_job: k8s.batch.v1.Job | None
    network_policy: k8s.networking.v1.NetworkPolicy


def materialize(
    parent: pulumi.ComponentResource,
    plan: RetrainPlan,
    target: KubernetesTarget,
    secret_data: pulumi.Output[dict[str, str]],
) -> KubernetesRetrain:
    """Declare the schedule's CronJob, its ServiceAccount, Secret, ConfigMap and NetworkPolicy."""
    cron = plan.cron
    opts = target.resource_options(parent)
    name, labels, job = plan.object_name, plan.labels, plan.job
    pods = pod_objects(name, target, labels, job, secret_data, opts)
    spec = pod_spec(job, secret_name=name, config_map_name=f"{name}-files",
                    service_account=name, claims={})
    # The job retries as a new pod (backoffLimit), so a failed pod stays for its logs.
    spec["restart_policy"] = "Never"
    # The run's idempotency key is its Job's name, which only the cluster knows: the API server
    # labels every pod of a Job with it (a retried pod too), the downward API hands it over.
    spec["containers"][0]["env"].append({
        "name": SLOT_ENV,
        "value_from": {"field_ref": {"field_path": f"metadata.labels['{JOB_NAME_LABEL}']"}},
    })
    job_spec = {
        "backoff_limit": cron.retries,
        "active_deadline_seconds": cron.timeout_seconds,
        "ttl_seconds_after_finished": cron.ttl_seconds_after_finished,
        "template": {"metadata": {"labels": dict(labels)}, "spec": spec},
    }
    # Pods must not start before the Secret and ConfigMap they mount exist.
    after_mounts = pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(
        depends_on=pods.mounted()))
    cron_job = k8s.batch.v1.CronJob(
        name,
        metadata=meta(target, name, labels, skip_annotations(job)),
        spec={
            "schedule": cron.schedule,
            # The scheduler in the Docker target reads the expression in UTC too.
            "time_zone": "Etc/UTC",
            "concurrency_policy": "Forbid",
            "starting_deadline_seconds": cron.starting_deadline_seconds,
            "suspend": cron.suspend,
            "successful_jobs_history_limit": cron.successful_jobs_history,
            "failed_jobs_history_limit": cron.failed_jobs_history,
            "job_template": {"metadata": {"labels": dict(labels)}, "spec": job_spec},
        },
        opts=after_mounts,
    )
    initial_job = None
    if cron.run_on_create:
        # Its name is the run's key too (the pods' job-name label): a retry registers nothing.
        initial = f"{name}-initial"
        initial_job = k8s.batch.v1.Job(
            initial,
            metadata=meta(target, initial, labels, {
                **skip_annotations(job),
                # Created once; `pulumi up` does not wait for the training to finish.
                "pulumi.com/skipAwait": "true"}),
            # No TTL: a Job the cluster deleted would be created, and run, again by the next
            # `pulumi up`.
            spec={k: v for k, v in job_spec.items() if k != "ttl_seconds_after_finished"},
            opts=after_mounts,
        )
    egress = [dns_egress(target), registry_egress(plan.registry)]
    if plan.dataset_port is not None:
        egress.append(external_egress((plan.dataset_port,), plan.dataset_cidrs))
    # A batch job serves nothing: no ingress rule admits anyone.
    policy = network_policy(name, target, labels, plan.selector, [], egress, opts)
    return KubernetesRetrain(pods, cron_job, initial_job, policy)
