"""ModelRegistry: an MLflow tracking server and model registry, production-grade by default.

The inputs and `plan_registry`, the pure function deciding every name, command line,
environment variable and config file, are in `pulumi_mlops.plans.registry`; this component
generates the secrets and materializes the plan on the chosen target.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
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
from pulumi_mlops.plans.registry_access import (
    GrantPlan,
    check_username,
    grant_secret_data,
    plan_grant,
)
from pulumi_mlops.plans.registry_ref import RegistryAccess, RegistryClient, RegistryPeer
from pulumi_mlops.plans.target import KubernetesTarget
from pulumi_mlops.targets.docker import registry as docker_registry
from pulumi_mlops.targets.docker import registry_access as docker_access
from pulumi_mlops.targets.docker._containers import DockerWorkload
from pulumi_mlops.targets.kubernetes import registry as kubernetes_registry
from pulumi_mlops.targets.kubernetes import registry_access as kubernetes_access

__all__ = ["ModelRegistry", "RegistryGrant"]


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
    grants: dict[str, RegistryGrant]
    """The users granted so far (`grant_read`, `grant_write`, and the clients' own), by name."""

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
        self.grants = {}
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

    def grant_read(self, user: str, models: Sequence[str]) -> RegistryGrant:
        """A user of its own for a client that reads and loads ``models`` (READ on them and on
        the experiments their versions come from), and nothing else.

        Args:
            user: The MLflow username (lowercase letters, digits and '-', at most 48).
            models: The registered models it may read.

        Returns:
            The grant: its username, its generated password (a secret), and the reconcile
            that creates them in the registry.
        """
        return self._grant(RegistryClient(user, read=tuple(models)))

    def grant_write(self, user: str, models: Sequence[str],
                    experiments: Sequence[str] = ()) -> RegistryGrant:
        """A user of its own for a client that registers versions of ``models`` and moves
        their aliases (EDIT on them; READ to load them) and logs runs to ``experiments``
        (EDIT), and nothing else: it cannot delete them or grant anyone.

        Args:
            user: The MLflow username (lowercase letters, digits and '-', at most 48).
            models: The registered models it writes (created empty when missing, so the user
                is never their owner).
            experiments: Experiments it logs runs to, by name (created when missing).

        Returns:
            The grant (see `grant_read`).
        """
        return self._grant(RegistryClient(user, write=tuple(models),
                                          experiments=tuple(experiments)))

    def _grant(self, client: RegistryClient) -> RegistryGrant:
        where = self.where(self.component_name)
        try:
            check_username(client.user)
        except InputError as err:
            raise ValidationError.single(where, "user", err.rule, client.user, err.fix) from None
        if client.user == self.args.admin_username:
            raise ValidationError.single(where, "user", "must not be the admin's",
                                         client.user, "choose a username of the client's own.")
        known = self.grants.get(client.user)
        if known is not None and known.client != client:
            raise ValidationError.single(
                where, "user", "is granted twice with different rights", client.user,
                "give each client a user of its own, or grant one user everything once.")
        if known is None:
            self.grants[client.user] = known = RegistryGrant(self, client)
        return known

    def access_network(self) -> Any:
        """On Docker, the network its clients join (None on Kubernetes)."""
        children = self.children
        return children.network if isinstance(children, docker_registry.DockerRegistry) else None

    def access(self, client: RegistryClient) -> RegistryAccess:
        """How ``client``'s containers reach the registry: its in-network URI and a user of
        the client's own (`grant_read`/`grant_write`, declared on first use), never the
        admin's; on Docker, its network, started once the user is reconciled."""
        return self._grant(client).access()

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


class RegistryGrant(pulumi.ComponentResource):
    """A registry client's own MLflow user, reconciled inside the registry's network (a Job on
    Kubernetes, a one-shot container on Docker). Made by `ModelRegistry.grant_read` and
    `ModelRegistry.grant_write`; child of the registry.

    Export ``username`` and ``password`` for another stack's `RegistryEndpoint`.
    """

    client: RegistryClient
    """Who, and what it may do."""
    plan: GrantPlan
    """The reconcile's plan."""
    username: pulumi.Output[str]
    """The MLflow username."""
    password: pulumi.Output[str]
    """Its password (a Pulumi secret), generated; available once the reconcile has run."""
    children: kubernetes_access.KubernetesGrant | DockerWorkload
    """The reconcile's Job and objects, or its containers."""

    def __init__(self, registry: ModelRegistry, client: RegistryClient) -> None:
        """Declare the grant of ``client`` on ``registry`` (use the registry's verbs)."""
        name = f"{registry.component_name}-grant-{client.user}"
        super().__init__("mlops:index:RegistryGrant", name, None,
                         pulumi.ResourceOptions(parent=registry))
        self.client, self._registry = client, registry
        self.plan = plan_grant(registry.plan, client)
        password = random.RandomPassword(f"{name}-password", length=32, special=False,
                                         opts=pulumi.ResourceOptions(parent=self)).result
        data: pulumi.Output[dict[str, str]] = pulumi.Output.secret(
            pulumi.Output.all(registry.admin_password, password).apply(
                lambda v: grant_secret_data(*v)))
        target = registry.args.target
        if isinstance(target, KubernetesTarget):
            self.children = kubernetes_access.materialize(
                self, self.plan, registry.plan, target, data, (registry.server,))
            self._after: tuple[pulumi.Resource, ...] = (self.children.job,)
            # Through the Job (which `pulumi up` awaits): the clients' Secret, and so their
            # pods, come after the user exists.
            job = self.children.job
            ready: pulumi.Output[str] = pulumi.Output.secret(
                pulumi.Output.all(password, job.id).apply(lambda v: str(v[0])))
        else:
            self.children = docker_access.materialize(
                self, self.plan, target, data, registry.access_network(), (registry.server,))
            self._after = (self.children.container,)
            ready = docker_access.reconciled(password, self.children, self.plan.object_name)
        self.username = pulumi.Output.from_input(client.user)
        self.password = ready
        self.register_outputs({"username": self.username, "password": self.password})

    def access(self) -> RegistryAccess:
        """How the client's containers reach the registry as this user."""
        registry = self._registry
        network = (registry.access_network()
                   if isinstance(self.children, DockerWorkload) else None)
        return RegistryAccess(registry.plan.tracking_uri, self.client.user,
                              {"tracking-password": self.password}, network, self._after)
