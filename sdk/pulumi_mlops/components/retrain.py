"""RetrainSchedule: train, evaluate, compare, register and promote a model on a cron schedule.

The inputs and `plan_retrain`, the pure function deciding the job's config file, command line
and environment and the scheduler around it, are in `pulumi_mlops.plans.retrain`; this
component materializes the plan on the chosen target.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pulumi

from pulumi_mlops.components._base import Component, secret_data
from pulumi_mlops.plans.registry_ref import RegistryClient, client_user
from pulumi_mlops.plans.retrain import (
    RetrainPlan,
    RetrainScheduleArgs,
    plan_retrain,
    render_config,
)
from pulumi_mlops.plans.target import KubernetesTarget
from pulumi_mlops.targets.docker import retrain as docker_retrain
from pulumi_mlops.targets.kubernetes import retrain as kubernetes_retrain

__all__ = ["RetrainSchedule"]


class RetrainSchedule(Component[RetrainScheduleArgs, RetrainPlan]):
    """Retrain a model on a schedule and promote it when it passes the gates.

    Every run trains on ``dataset``, evaluates on a holdout, compares with the version the
    ``promote_alias`` points at, registers the new version (alias ``challenger``) with lineage
    tags, and moves ``promote_alias`` to it only when every gate passes.

    Example:
        >>> mlops.RetrainSchedule(
        ...     "fraud-nightly", registry=reg, target=k8s, schedule="0 3 * * *",
        ...     model_name="fraud", dataset="sklearn:breast_cancer",
        ...     estimator="sklearn.ensemble.GradientBoostingClassifier",
        ...     params={"n_estimators": 200},
        ...     gates=mlops.Gates(min={"roc_auc": 0.9}, min_improvement={"roc_auc": 0.0}))
    """

    kind = "RetrainSchedule"
    args_type = RetrainScheduleArgs

    config: pulumi.Output[str]
    """The job's config file (JSON), as mounted at ``/etc/mlops/retrain.json``."""
    schedule: pulumi.Output[str]
    """The cron schedule (UTC)."""
    children: kubernetes_retrain.KubernetesRetrain | docker_retrain.DockerRetrain
    """What the component declared on its target (a CronJob … or a scheduler container)."""
    scheduler: pulumi.Resource
    """The CronJob (Kubernetes) or the scheduler Container (Docker)."""

    def __init__(
        self,
        name: str,
        args: RetrainScheduleArgs | None = None,
        opts: pulumi.ResourceOptions | None = None,
        **kwargs: Any,
    ) -> None:
        """Declare a retrain schedule.

        Args:
            name: Component name; also the prefix of every child's name (a DNS label).
            args: The inputs as one object; or pass them as keyword arguments.
            opts: Pulumi resource options.
            **kwargs: The fields of `RetrainScheduleArgs`.
        """
        super().__init__(name, args, opts, kwargs)

    def _plan(self, name: str, args: RetrainScheduleArgs) -> RetrainPlan:
        # A user of its own that writes its model and logs to its experiment; never the
        # registry's admin.
        config = args.config()
        self._access = access = args.registry.access(RegistryClient(
            client_user(name, "retrain"), write=(config.model_name,),
            experiments=(config.experiment_name(),)))
        return plan_retrain(name, args, tracking_uri=access.tracking_uri,
                            username=access.username, has_password=access.has_password)

    def _declare(self, name: str, args: RetrainScheduleArgs,
                 plan: RetrainPlan) -> Mapping[str, Any]:
        access = self._access
        values = dict(access.secret_values)
        if args.dataset_headers:
            values["dataset-headers"] = pulumi.Output.json_dumps(args.dataset_headers)
        data = secret_data(values)
        if isinstance(args.target, KubernetesTarget):
            k8s = kubernetes_retrain.materialize(self, plan, args.target, data)
            self.children, self.scheduler = k8s, k8s.cron_job
        else:
            docker = docker_retrain.materialize(self, plan, args.target, data, access.network,
                                                access.after)
            self.children, self.scheduler = docker, docker.scheduler.container
        self.config = pulumi.Output.from_input(render_config(plan.config))
        self.schedule = pulumi.Output.from_input(args.schedule)
        return {"config": self.config, "schedule": self.schedule}
