"""A real MLflow registry started from the command ModelRegistry renders, for end-to-end tests."""

from __future__ import annotations

import contextlib
import secrets
import urllib.parse
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path

import pulumi_mlops as mlops
from pulumi_mlops.components.registry import RegistryGrant
from pulumi_mlops.local import RunningWorkload, run_job, run_workload
from pulumi_mlops.plans.registry import (
    ModelRegistryArgs,
    Permission,
    RegistryPlan,
    RegistrySecrets,
    plan_registry,
    registry_secret_data,
)
from pulumi_mlops.plans.registry_access import grant_secret_data
from pulumi_mlops.plans.workload import Workload
from tests.e2e.ports import free_port
from tests.e2e.postgres import running_postgres

BACKENDS = ("sqlite-docker", "postgres-kubernetes")
"""The backends every registry end-to-end module runs against; ``postgres-external`` (a
database URI the user gives) is run by the tests that are about it."""


class Registry:
    """A running registry and the admin credentials its secret data holds."""

    def __init__(self, running: RunningWorkload, password: str, plan: RegistryPlan,
                 hosts: dict[str, str]) -> None:
        self.running = running
        self.plan = plan
        self._passwords: dict[str, str] = {}
        self.hosts = {**hosts, urllib.parse.urlsplit(plan.tracking_uri).netloc:
                      urllib.parse.urlsplit(running.url).netloc}
        """In-network ``host:port`` → local address, as the target's DNS would resolve them."""
        self.url = running.url
        self.metrics_url = running.sidecars["metrics"].url
        """The metrics exporter beside the server (what Prometheus scrapes)."""
        self.username = "admin"
        self.password = password

    def reconcile(self, grants: Iterable[RegistryGrant], root: Path,
                  hosts: Mapping[str, str]) -> dict[str, str]:
        """Run each grant's rendered reconcile (a component's `ModelRegistry.grants`) against
        this registry, its in-network address mapped here by ``hosts``; the users' passwords,
        by username, for the clients' secret data."""
        users: dict[str, str] = {}
        for grant in grants:
            # One password per user per registry: a client started earlier keeps working.
            password = self._passwords.setdefault(grant.client.user, secrets.token_urlsafe(24))
            run = run_job(grant.plan.workload, grant_secret_data(self.password, password),
                          root / f"grant-{grant.client.user}-{secrets.token_hex(3)}",
                          hosts=hosts, timeout=240)
            assert run.returncode == 0, run.stdout + run.stderr
            users[grant.client.user] = password
        return users

    def client_secrets(self, workload: Workload, users: Mapping[str, str]) -> dict[str, str]:
        """A client workload's secret data: the password of the user it authenticates as (its
        own, from `reconcile`; the admin's for a workload rendered with admin credentials)."""
        user = str(workload.env["MLFLOW_TRACKING_USERNAME"])
        return {"tracking-password": self.password if user == self.username else users[user]}

    def env(self) -> dict[str, str]:
        """The standard MLflow client variables for this registry."""
        return {"MLFLOW_TRACKING_URI": self.url, "MLFLOW_TRACKING_USERNAME": self.username,
                "MLFLOW_TRACKING_PASSWORD": self.password}


@contextlib.contextmanager
def running_registry(tmp_path: Path, backend: str = "sqlite-docker",
                     default_permission: Permission = Permission.READ,
                     max_upload_bytes: int | None = None) -> Iterator[Registry]:
    """Run the registry the Docker plan (SQLite) or the Kubernetes plan (PostgreSQL) declares
    (with ``max_upload_bytes``, when given).

    For the Kubernetes plan, cluster DNS is stood in for by mapping the database Service's name
    to a local PostgreSQL server holding the role and database the plan's container would
    create on first start.
    """
    with contextlib.ExitStack() as stack:
        port, metrics_port = free_port(), free_port()
        admin_password = secrets.token_urlsafe(24)
        values = {"admin_password": admin_password, "flask_secret_key": secrets.token_hex(32)}
        hosts: dict[str, str] = {}
        if backend == "sqlite-docker":
            args = ModelRegistryArgs(target=mlops.DockerTarget(), port=port,
                                     metrics_port=metrics_port,
                                     default_permission=default_permission)
        elif backend == "postgres-kubernetes":
            pg = stack.enter_context(running_postgres())
            db_password = secrets.token_urlsafe(24)
            pg.create_database("mlflow", "mlflow", db_password)
            args = ModelRegistryArgs(target=mlops.KubernetesTarget(namespace="ml"), port=port,
                                     metrics_port=metrics_port,
                                     default_permission=default_permission)
            values["db_password"] = db_password
            hosts = {"reg-postgres.ml.svc.cluster.local:5432": f"127.0.0.1:{pg.port}"}
        elif backend == "postgres-external":
            # A database the user runs, given as the documented URI, without a driver.
            pg = stack.enter_context(running_postgres())
            db_password = secrets.token_urlsafe(24)
            pg.create_database("mlflow", "mlflow", db_password)
            uri = f"postgresql://mlflow:{db_password}@127.0.0.1:{pg.port}/mlflow"
            args = ModelRegistryArgs(target=mlops.KubernetesTarget(namespace="ml"), port=port,
                                     metrics_port=metrics_port,
                                     database=mlops.Database.external(uri),
                                     default_permission=default_permission)
            values["backend_store_uri"] = uri
        else:
            raise ValueError(f"unknown backend {backend!r}; one of {BACKENDS}")
        if max_upload_bytes is not None:
            args = args.model_copy(update={"max_upload_bytes": max_upload_bytes})
        plan = plan_registry("reg", args)
        secret_data = registry_secret_data(plan, RegistrySecrets(**values))
        running = stack.enter_context(run_workload(plan.server, secret_data, tmp_path,
                                                   hosts=hosts))
        yield Registry(running, admin_password, plan, hosts)


@contextlib.contextmanager
def registry_client(tmp_path: Path, backend: str = "sqlite-docker",
                    max_upload_bytes: int | None = None, **extra_env: str) -> Iterator[Registry]:
    """A running registry that this process's MLflow client, and the processes it starts,
    talk to (``MLFLOW_TRACKING_*`` set, plus ``extra_env``); restored afterwards."""
    import mlflow
    import pytest

    with running_registry(tmp_path, backend, max_upload_bytes=max_upload_bytes) as registry, \
            pytest.MonkeyPatch.context() as monkeypatch:
        for key, value in {**registry.env(), **extra_env}.items():
            monkeypatch.setenv(key, value)
        previous = mlflow.get_tracking_uri()
        mlflow.set_tracking_uri(registry.url)
        try:
            yield registry
        finally:
            mlflow.set_tracking_uri(previous)
