"""Where components run: a Kubernetes namespace or a Docker engine."""

from __future__ import annotations

from typing import Annotated, Any, Literal

import pulumi
from pydantic import ConfigDict, Field, field_validator

from pulumi_mlops._validation import DNS_LABEL, HOSTNAME, LABEL_VALUE, ValidatedModel
from pulumi_mlops.plans.image_registry import ImageRegistry

__all__ = ["DockerTarget", "GatewayRef", "KubernetesTarget", "Target"]


class _TargetBase(ValidatedModel):
    model_config = ConfigDict(frozen=True, extra="forbid", arbitrary_types_allowed=True)

    provider: Any = None

    def resource_options(self, parent: pulumi.Resource) -> pulumi.ResourceOptions:
        """Options for a child resource: the parent and, when given, the provider."""
        return pulumi.ResourceOptions(parent=parent, provider=self.provider)


class GatewayRef(ValidatedModel):
    """A Gateway API ``Gateway`` that routes to components (for exact traffic splits).

    Attributes:
        name: The Gateway's name.
        namespace: Its namespace (its listeners must allow routes from the target's).
        section_name: The listener to attach to. Default: every listener that allows it.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")
    name: Annotated[str, Field(pattern=DNS_LABEL, max_length=253)]
    namespace: Annotated[str, Field(pattern=DNS_LABEL, max_length=63)]
    section_name: Annotated[str, Field(pattern=DNS_LABEL, max_length=253)] | None = None


class KubernetesTarget(_TargetBase):
    """Run components in a Kubernetes namespace.

    Attributes:
        namespace: Namespace the components are declared in. It must exist (declare it with
            pulumi-kubernetes, or let your cluster bootstrap own it). Default: ``mlops``.
        provider: Explicit pulumi-kubernetes provider. Default: the ambient provider (the
            current kubeconfig context).
        storage_class: StorageClass for persistent volumes. Default: the cluster's default.
        ingress_class: IngressClass used when a component is given an ingress. Default: the
            cluster's default.
        cluster_domain: DNS suffix of the cluster. Default: ``cluster.local``.
        dns_namespace: Namespace of the cluster DNS pods, which egress policies allow.
            Default: ``kube-system``.
        dns_pod_labels: Labels of the cluster DNS pods. Default: ``{"k8s-app": "kube-dns"}``.
        labels: Extra labels put on every object. Default: none.
        image_registry: Registry that images built for this target (`RuntimeImage`) are
            pushed to and that the cluster pulls them from. Default: none; a `RuntimeImage`
            then needs its own ``registry``.
        gateway: Gateway (Gateway API) that routes to services: exact canary weights and
            shadow traffic need one. Default: none; canaries split by replica count.
    """

    kind: Literal["kubernetes"] = "kubernetes"
    namespace: Annotated[str, Field(pattern=DNS_LABEL, max_length=63)] = "mlops"
    storage_class: Annotated[str, Field(pattern=HOSTNAME)] | None = None
    ingress_class: Annotated[str, Field(pattern=HOSTNAME)] | None = None
    cluster_domain: Annotated[str, Field(pattern=HOSTNAME)] = (
        "cluster.local"
    )
    dns_namespace: Annotated[str, Field(pattern=DNS_LABEL)] = "kube-system"
    dns_pod_labels: dict[str, Annotated[str, Field(pattern=LABEL_VALUE)]] = Field(
        default_factory=lambda: {"k8s-app": "kube-dns"}
    )
    labels: dict[str, Annotated[str, Field(pattern=LABEL_VALUE)]] = Field(default_factory=dict)
    image_registry: ImageRegistry | None = None
    gateway: GatewayRef | None = None

    @field_validator("provider")
    @classmethod
    def _provider_is_resource(cls, value: Any) -> Any:
        _check_provider(value, "pulumi_kubernetes.Provider")
        return value

    def service_host(self, service: str) -> str:
        """The fully qualified in-cluster DNS name of a Service in this namespace."""
        return f"{service}.{self.namespace}.svc.{self.cluster_domain}"


class DockerTarget(_TargetBase):
    """Run components as containers on a Docker engine.

    Attributes:
        provider: Explicit pulumi-docker provider. Default: the ambient provider (the local
            Docker daemon).
        publish_host: Host address that published ports bind to. Default: ``127.0.0.1``, so
            nothing is reachable from other machines unless you choose so.
        image_registry: Registry that images built for this target (`RuntimeImage`) are
            pushed to. Default: none; images are built on the target's Docker engine and
            used from there without a push.
    """

    kind: Literal["docker"] = "docker"
    publish_host: Annotated[str, Field(pattern=r"^[0-9a-fA-F.:]+$")] = "127.0.0.1"
    image_registry: ImageRegistry | None = None

    @field_validator("provider")
    @classmethod
    def _provider_is_resource(cls, value: Any) -> Any:
        _check_provider(value, "pulumi_docker.Provider")
        return value


Target = KubernetesTarget | DockerTarget


def _check_provider(value: Any, expected: str) -> None:
    from pulumi_mlops.errors import InputError

    if value is not None and not isinstance(value, pulumi.ProviderResource):
        raise InputError("must be a Pulumi provider resource", f"pass a {expected} or omit it.")
