"""A registry client's own MLflow user (`ModelRegistry.grant_read` / `grant_write`): the spec of
what it may do, and the one-shot workload that reconciles it inside the registry's network.

The reconcile runs from the registry's own image (MLflow's, which every registry target already
pulls): the runtime module `pulumi_mlops.runtime.registry_access` is mounted as a file next to
its spec and run with ``python``; it imports only the standard library and mlflow. It
authenticates as the registry's admin, the one workload besides the server that holds the
admin's password.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from importlib import resources

from pulumi_mlops.errors import InputError
from pulumi_mlops.plans.registry import RegistryPlan
from pulumi_mlops.plans.registry_ref import RegistryClient
from pulumi_mlops.plans.workload import ConfigFile, Mount, Resources, SecretRef, Workload

__all__ = ["GRANT_PASSWORD", "GrantPlan", "check_username", "grant_secret_data", "plan_grant"]

GRANT_PASSWORD = "grant-password"
"""The key of the client user's password in the grant's secret data."""
_ADMIN_PASSWORD = "admin-password"
_DIR = "/etc/mlops-registry-access"
_USERNAME = re.compile(r"^[a-z0-9]([-a-z0-9]{0,46}[a-z0-9])?$")
# MLflow's client and its import: some 300 MiB at peak.
_RESOURCES = Resources(cpu_request="50m", memory_request="256Mi", cpu_limit="500m",
                       memory_limit="512Mi", pids_limit=64)
_TIMEOUT_SECONDS = 600


def check_username(value: str) -> str:
    """A client user's name: a DNS label of at most 48 characters (it names the objects that
    reconcile it)."""
    if not _USERNAME.match(value):
        raise InputError("must be lowercase letters, digits and '-', at most 48 characters, "
                         "starting and ending with a letter or digit",
                         "use e.g. 'fraud-service'.")
    return value


@dataclass(frozen=True)
class GrantPlan:
    """One client's grant.

    Attributes:
        client: Who, and what for.
        object_name: Name of the reconcile's objects (its container on Docker, its
            ServiceAccount, Secret and ConfigMap on Kubernetes).
        job_name: The Kubernetes Job's name: ``object_name`` and the spec's digest, so a changed
            spec runs a new Job.
        labels: Labels of its objects and pods.
        workload: The one-shot reconcile (a batch workload).
        timeout_seconds: How long the reconcile may take.
    """

    client: RegistryClient
    object_name: str
    job_name: str
    labels: dict[str, str]
    workload: Workload
    timeout_seconds: int


def plan_grant(registry: RegistryPlan, client: RegistryClient) -> GrantPlan:
    """The reconcile of ``client``'s user on ``registry``."""
    spec = json.dumps(client.spec(), sort_keys=True)
    # The module's own source, shipped as a file: the registry's image has mlflow, not us.
    source = resources.files("pulumi_mlops.runtime").joinpath("registry_access.py").read_text()
    digest = hashlib.sha256((spec + source).encode()).hexdigest()[:8]
    name = f"{registry.name}-grant-{client.user}"
    workload = Workload(
        name="grant",
        image=registry.server.image,
        command=("python", f"{_DIR}/registry_access.py", "--spec", f"{_DIR}/spec.json"),
        env={
            "HOME": "/tmp",
            "MLFLOW_TRACKING_URI": registry.tracking_uri,
            "MLFLOW_TRACKING_USERNAME": registry.server.env["MLFLOW_AUTH_ADMIN_USERNAME"],
            "MLFLOW_TRACKING_PASSWORD": SecretRef(_ADMIN_PASSWORD),
            "MLOPS_GRANT_PASSWORD": SecretRef(GRANT_PASSWORD),
            "MLFLOW_DISABLE_TELEMETRY": "true",
        },
        port=None,
        health=None,
        files=(ConfigFile(f"{_DIR}/registry_access.py", source),
               ConfigFile(f"{_DIR}/spec.json", spec)),
        mounts=(Mount("tmp", "/tmp", "scratch", "64Mi"),),
        resources=_RESOURCES,
    )
    labels = {**registry.labels, "app.kubernetes.io/name": "mlflow-grant",
              "app.kubernetes.io/component": "registry-access",
              "mlops.dev/registry-user": client.user}
    return GrantPlan(client, name, f"{name}-{digest}", labels, workload, _TIMEOUT_SECONDS)


def grant_secret_data(admin_password: str, password: str) -> dict[str, str]:
    """The reconcile's secret data: the admin's password and the client user's."""
    return {_ADMIN_PASSWORD: admin_password, GRANT_PASSWORD: password}
