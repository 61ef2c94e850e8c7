"""A registry grant on Docker: the one-shot container reconciling the client's MLflow user, on
the registry's network, run when the grant is created or its spec changes."""

from __future__ import annotations

import pulumi
import pulumi_docker as docker

from pulumi_mlops.plans.registry_access import GrantPlan
from pulumi_mlops.plans.target import DockerTarget
from pulumi_mlops.targets.docker._containers import DockerWorkload, materialize_workload

__all__ = ["ReconcileFailedError", "materialize", "reconciled"]


class ReconcileFailedError(RuntimeError):
    """The reconcile container exited non-zero (`pulumi up` fails before the client starts)."""


def materialize(parent: pulumi.Resource, plan: GrantPlan, target: DockerTarget,
                secret_data: pulumi.Output[dict[str, str]], network: docker.Network,
                after: tuple[pulumi.Resource, ...]) -> DockerWorkload:
    """Declare the reconcile container (and its init container writing its files) on the
    registry's ``network``, started after ``after`` (the registry's server)."""
    opts = pulumi.ResourceOptions.merge(target.resource_options(parent),
                                        pulumi.ResourceOptions(depends_on=list(after)))
    return materialize_workload(plan.object_name, plan.workload, target=target,
                                network=network, aliases=[plan.object_name],
                                labels=plan.labels, secret_data=secret_data, opts=opts,
                                publish=False, once=True)


def reconciled(password: pulumi.Output[str], grant: DockerWorkload,
               name: str) -> pulumi.Output[str]:
    """The client's password once its reconcile has exited 0: the provider ignores an attached
    container's exit status, so the clients' secret data carries the check, and a failed
    reconcile fails `pulumi up` with the reason instead of starting clients that cannot log
    in. The code is None where nothing ran (under mocks)."""
    def check(values: list[object]) -> str:
        secret, code = values
        if code not in (None, 0):
            raise ReconcileFailedError(
                f"the registry access reconcile `{name}` exited {code}: see `docker logs "
                f"{name}`, fix the cause and run `pulumi up` again")
        return str(secret)

    return pulumi.Output.secret(pulumi.Output.all(password, grant.container.exit_code)
                                .apply(check))
