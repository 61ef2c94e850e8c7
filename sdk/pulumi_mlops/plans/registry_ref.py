"""The registry reference protocol: what a service or a retrain job asks of its registry.

`ModelRegistry` (a component in the same program) and `RegistryEndpoint` (an address, e.g. a
platform stack's `StackReference` outputs) both implement `RegistryReference`. Consumers ask it
how their containers reach the registry, and as which user (`access`, given a `RegistryClient`:
who they are and what they read or write), where they connect to (`peer`) and where it
runs (`target_kind`); they never inspect which of the two they hold.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable
from urllib.parse import urlsplit

from pydantic import Field, field_validator, model_validator

from pulumi_mlops._validation import ArgsModel, Cidr, Secret
from pulumi_mlops.errors import InputError, Problem
from pulumi_mlops.plans.target import DockerTarget, KubernetesTarget
from pulumi_mlops.plans.workload import EnvValue, SecretRef, url_port

__all__ = [
    "RegistryAccess",
    "RegistryClient",
    "RegistryEndpoint",
    "RegistryPeer",
    "RegistryReference",
    "check_registry",
    "client_user",
    "credentials_env",
    "same_target_problem",
]


@dataclass(frozen=True)
class RegistryPeer:
    """Where a workload connects to reach its registry (network intent, target-neutral): a
    registry component says which pods serve it, a registry given by address only its ports.

    Attributes:
        ports: TCP ports the registry listens on.
        namespace: Namespace of the registry's server pods (a registry component on
            Kubernetes); None when only the address is known.
        pod_labels: Labels selecting those pods; None when only the address is known.
        cidrs: The networks the registry's address lies in, when only the address is known
            and they are declared; empty: anywhere but link-local addresses.
    """

    ports: tuple[int, ...]
    namespace: str | None = None
    pod_labels: Mapping[str, str] | None = None
    cidrs: tuple[str, ...] = ()


@dataclass(frozen=True)
class RegistryClient:
    """Who uses a registry, and for what.

    Attributes:
        user: The MLflow user it authenticates as.
        read: Registered models it reads and loads (a model service's).
        write: Registered models it registers versions of and moves aliases on (a retrain
            job's).
        experiments: Experiments it logs runs to, by name.
    """

    user: str
    read: tuple[str, ...] = ()
    write: tuple[str, ...] = ()
    experiments: tuple[str, ...] = ()

    def spec(self) -> dict[str, Any]:
        """The reconcile's spec file (`pulumi_mlops.runtime.registry_access.Spec`)."""
        return {"username": self.user, "read": sorted(set(self.read)),
                "write": sorted(set(self.write)), "experiments": sorted(set(self.experiments))}


@dataclass(frozen=True)
class RegistryAccess:
    """How a component's containers reach a registry: env values and their secret data.

    Attributes:
        tracking_uri: ``MLFLOW_TRACKING_URI``: a literal, or a secret reference when it is only
            known at deployment.
        username: ``MLFLOW_TRACKING_USERNAME`` (None without auth).
        secret_values: Secret data key → Pulumi input (``tracking-password`` and whatever else
            is only known at deployment).
        network: The registry's Docker network, when it is a component on Docker.
        after: Resources the containers start after (the registry's container on Docker).
    """

    tracking_uri: EnvValue
    username: EnvValue | None
    secret_values: Mapping[str, Any]
    network: Any = None
    after: tuple[Any, ...] = ()

    @property
    def has_password(self) -> bool:
        """Whether the containers read ``tracking-password``."""
        return "tracking-password" in self.secret_values


@runtime_checkable
class RegistryReference(Protocol):
    """A registry that services and retrain jobs can use."""

    @property
    def target_kind(self) -> str | None:
        """``kubernetes`` or ``docker`` for a registry its clients must share a target with;
        None for an address reachable from anywhere."""
        ...

    def access(self, client: RegistryClient) -> RegistryAccess:
        """How ``client``'s containers reach the registry, and as which user."""
        ...

    def peer(self) -> RegistryPeer:
        """Where a client's containers connect to (its egress rule)."""
        ...


class RegistryEndpoint(ArgsModel):
    """A registry given by address, e.g. from a platform stack's `StackReference` outputs.

    Attributes:
        tracking_uri: URI the service reaches the registry at.
        username: User the service authenticates as. Default: none (no auth).
        password: Its password (a Pulumi secret). Default: none.
        cidrs: The networks the registry's address lies in (the clients' Kubernetes egress
            is narrowed to them). Default: any address but link-local ones (cloud metadata),
            as the address may be known only at deployment.
    """

    tracking_uri: Any
    username: Any = None
    password: Secret[Any] = None
    cidrs: list[Cidr] = Field(default_factory=list)

    @field_validator("tracking_uri")
    @classmethod
    def _uri(cls, value: Any) -> Any:
        if isinstance(value, str) and urlsplit(value).scheme not in ("http", "https"):
            raise InputError("must be an http(s) URI", "use e.g. 'http://registry-mlflow:5000'.")
        return value

    @model_validator(mode="after")
    def _pair(self) -> RegistryEndpoint:
        if (self.username is None) != (self.password is None):
            raise InputError("needs both `username` and `password`, or neither",
                             "pass both, or neither for a registry without auth.",
                             field="password", related=("username",))
        return self

    @property
    def target_kind(self) -> str | None:
        """None: an address is reachable from any target."""
        return None

    def access(self, client: RegistryClient | None = None) -> RegistryAccess:
        """The endpoint's values, whoever the client (the endpoint's user was scoped by whoever
        made it, e.g. a platform stack's `ModelRegistry.grant_write`); those only known at
        deployment (outputs) travel through the Secret."""
        secrets: dict[str, Any] = {}
        tracking_uri: EnvValue = self.tracking_uri
        if not isinstance(self.tracking_uri, str):
            tracking_uri = SecretRef("tracking-uri")
            secrets["tracking-uri"] = self.tracking_uri
        username: EnvValue | None = self.username
        if self.username is not None and not isinstance(self.username, str):
            username = SecretRef("tracking-username")
            secrets["tracking-username"] = self.username
        if self.password is not None:
            secrets["tracking-password"] = self.password
        return RegistryAccess(tracking_uri, username, secrets)

    def peer(self) -> RegistryPeer:
        """Where a workload connects to reach this registry: the URI's port, or the usual
        registry ports while the URI is only known at deployment (a stack reference)."""
        port = url_port(self.tracking_uri) if isinstance(self.tracking_uri, str) else None
        return RegistryPeer(ports=(port,) if port is not None else (80, 443, 5000),
                            cidrs=tuple(self.cidrs))


def client_user(component: str, role: str) -> str:
    """The MLflow username of a component's own registry user: ``<component>-<role>``, cut to
    48 characters with a digest of the whole when longer (so two long names stay distinct)."""
    name = f"{component}-{role}"
    if len(name) <= 48:
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:6]
    return f"{component[:40 - len(role)].rstrip('-')}-{digest}-{role}"


def credentials_env(username: EnvValue | None, has_password: bool) -> dict[str, EnvValue]:
    """The MLflow client's credential variables of a registry's client (services and retrain
    jobs): the user, and the password from the secret data's ``tracking-password``."""
    env: dict[str, EnvValue] = {}
    if username is not None:
        env["MLFLOW_TRACKING_USERNAME"] = username
    if has_password:
        env["MLFLOW_TRACKING_PASSWORD"] = SecretRef("tracking-password")
    return env


def check_registry(value: Any) -> Any:
    """The ``registry`` input's validator (services and retrain schedules)."""
    if not isinstance(value, RegistryReference):
        raise InputError("must be a ModelRegistry or a RegistryEndpoint",
                         "pass the registry component, or RegistryEndpoint(tracking_uri="
                         "..., username=..., password=...).")
    return value


def same_target_problem(registry: RegistryReference,
                        target: KubernetesTarget | DockerTarget) -> Problem | None:
    """A client must run on the same kind of target as a registry component it uses."""
    registry_kind = registry.target_kind or target.kind
    if registry_kind == target.kind:
        return None
    return Problem("registry", "must run on the same kind of target", registry_kind,
                   "use a registry on the same target, or a RegistryEndpoint.")
