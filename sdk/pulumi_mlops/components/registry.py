"""ModelRegistry: an MLflow tracking server and model registry, production-grade by default.

The inputs and `plan_registry`, the pure function deciding every name, command line,
environment variable and config file, are in `pulumi_mlops.plans.registry`; this component
generates the secrets and materializes the plan on the chosen target.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import pulumi
import pulumi_random as random

from pulumi_mlops.components._base import Component
from pulumi_mlops.errors import InputError, ValidationError
from pulumi_mlops.plans.registry import (
    ModelRegistryArgs,
    RegistryPlan,
    RegistrySecrets,
    check_admin_password,
    check_database_uri,
    plan_registry,
    registry_secret_data,
)
from pulumi_mlops.plans.registry_ref import RegistryAccess, RegistryPeer
from pulumi_mlops.plans.target import KubernetesTarget
from pulumi_mlops.targets.docker import registry as docker_registry
from pulumi_mlops.targets.kubernetes import registry as kubernetes_registry

__all__ = ["ModelRegistry"]


class ModelRegistry(Component[ModelRegistryArgs, RegistryPlan]):
    """An MLflow tracking server and model registry.

    Auth is on (MLflow's basic-auth app, generated admin password), artifacts are proxied by the
    server so clients need no storage credentials, Host headers are restricted to the server's
    own names, and model versions may only point at artifacts the registry tracks.

    Example:
        >>> reg = mlops.ModelRegistry("registry", target=mlops.KubernetesTarget(namespace="ml"))
        >>> pulumi.export("tracking_uri", reg.tracking_uri)
    """

    kind = "ModelRegistry"
    args_type = ModelRegistryArgs

    tracking_uri: pulumi.Output[str]
    """URI clients use inside the cluster / Docker network, e.g. ``http://registry-mlflow...``."""
    external_tracking_uri: pulumi.Output[str | None]
    """URI from outside the cluster or Docker network: ``http://127.0.0.1:<port>`` (the port
    published on the Docker host), or ``https://<ingress host>``; None without either."""
    admin_username: pulumi.Output[str]
    """Username of the admin user."""
    admin_password: pulumi.Output[str]
    """Password of the admin user (a Pulumi secret)."""
    children: kubernetes_registry.KubernetesRegistry | docker_registry.DockerRegistry
    """What the component declared on its target (its Deployment, Service … or containers)."""
    server: pulumi.Resource
    """The server: its Deployment on Kubernetes, its Container on Docker."""

    def __init__(
        self,
        name: str,
        args: ModelRegistryArgs | None = None,
        opts: pulumi.ResourceOptions | None = None,
        **kwargs: Any,
    ) -> None:
        """Declare a registry.

        Args:
            name: Component name; also the prefix of every child's name (a DNS label).
            args: The inputs as one object; or pass them as keyword arguments.
            opts: Pulumi resource options.
            **kwargs: The fields of `ModelRegistryArgs`.
        """
        super().__init__(name, args, opts, kwargs)

    def _plan(self, name: str, args: ModelRegistryArgs) -> RegistryPlan:
        return plan_registry(name, args)

    def _declare(self, name: str, args: ModelRegistryArgs,
                 plan: RegistryPlan) -> Mapping[str, Any]:
        child = self._child
        if args.admin_password is None:
            admin_password = random.RandomPassword(
                f"{name}-admin-password", length=args.admin_password_length, special=False,
                opts=child,
            ).result
        else:
            # A secret given as an Output is only known at deployment; check it there.
            admin_password = pulumi.Output.secret(args.admin_password).apply(
                _deferred_check(name, "admin_password", check_admin_password))
        flask_key = random.RandomPassword(
            f"{name}-flask-secret-key", length=64, special=False, opts=child
        ).result
        db_password: pulumi.Input[str] = ""
        if plan.database is not None:
            db_password = random.RandomPassword(
                f"{name}-db-password", length=32, special=False, opts=child
            ).result
        backend_uri: pulumi.Input[str] = ""
        db = args.effective_database()
        if db.kind == "external":
            backend_uri = pulumi.Output.from_input(db.uri).apply(
                _deferred_check(name, "database.uri", check_database_uri))
        data: pulumi.Output[dict[str, str]] = pulumi.Output.secret(
            pulumi.Output.all(admin_password, flask_key, db_password, backend_uri).apply(
                lambda v: registry_secret_data(plan, RegistrySecrets(*v))
            )
        )

        if isinstance(args.target, KubernetesTarget):
            self.children = kubernetes_registry.materialize(self, plan, args.target, data)
            self.server = self.children.server
        else:
            self.children = docker_registry.materialize(self, plan, args.target, data)
            self.server = self.children.server.container
        self.tracking_uri = pulumi.Output.from_input(plan.tracking_uri)
        self.external_tracking_uri = pulumi.Output.from_input(plan.external_tracking_uri)
        self.admin_username = pulumi.Output.from_input(args.admin_username)
        self.admin_password = pulumi.Output.secret(admin_password)
        return {
            "tracking_uri": self.tracking_uri,
            "external_tracking_uri": self.external_tracking_uri,
            "admin_username": self.admin_username,
            "admin_password": self.admin_password,
        }

    @property
    def target_kind(self) -> str:
        """Where the registry runs: its clients must run on the same kind of target."""
        return self.args.target.kind

    def access(self) -> RegistryAccess:
        """How a client's containers reach the registry: its in-network URI and the admin
        credentials; on Docker, its network, started after its server."""
        credentials = {"tracking-password": self.admin_password}
        if isinstance(self.children, docker_registry.DockerRegistry):
            return RegistryAccess(self.plan.tracking_uri, self.args.admin_username, credentials,
                                  self.children.network, (self.server,))
        return RegistryAccess(self.plan.tracking_uri, self.args.admin_username, credentials)

    def peer(self) -> RegistryPeer:
        """Where a workload connects to reach this registry: its server pods (in their
        namespace on Kubernetes) on its port."""
        target = self.args.target
        return RegistryPeer(
            ports=(self.args.port,),
            namespace=target.namespace if isinstance(target, KubernetesTarget) else None,
            pod_labels=dict(self.plan.server_selector))


def _deferred_check(name: str, path: str, check: Callable[[str], None]) -> Callable[[str], str]:
    """An apply callback that validates a secret input once its value is known."""

    def run(value: str) -> str:
        try:
            if not isinstance(value, str):
                raise InputError("must be a string", f"pass `{path}` as a string secret.")
            check(value)
        except InputError as err:
            raise ValidationError.single(
                f"ModelRegistry {name!r}", path, err.rule, "[redacted]", err.fix
            ) from None
        return value

    return run
