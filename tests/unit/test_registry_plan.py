"""The registry's pure plan: properties that hold for every valid input."""

from __future__ import annotations

import configparser
from urllib.parse import quote

import pytest
from hypothesis import given
from hypothesis import strategies as st

import pulumi_mlops as mlops
from pulumi_mlops.contracts.scrape import ScrapeTarget
from pulumi_mlops.plans.registry import (
    ModelRegistryArgs,
    RegistrySecrets,
    plan_registry,
    registry_secret_data,
    with_driver,
)
from pulumi_mlops.plans.workload import SecretRef

names = st.from_regex(r"[a-z][a-z0-9]{0,10}(-[a-z0-9]{1,5})?", fullmatch=True)
namespaces = st.from_regex(r"[a-z][a-z0-9-]{0,20}[a-z0-9]", fullmatch=True)
ports = st.integers(min_value=1024, max_value=65535)
# A marker prefix, so a secret cannot collide with a literal by chance (e.g. a path).
secrets = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=["Cs", "Cc"]),
                  min_size=8, max_size=64).map(lambda s: "S3CR3T-" + s)


@given(name=names, namespace=namespaces, port=ports, replicas=st.integers(1, 5))
def test_server_accepts_its_own_service_names_and_nothing_wild(
    name: str, namespace: str, port: int, replicas: int
) -> None:
    args = ModelRegistryArgs(target=mlops.KubernetesTarget(namespace=namespace), port=port,
                             replicas=replicas)
    plan = plan_registry(name, args)
    command = plan.server.command
    hosts = command[command.index("--allowed-hosts") + 1].split(",")
    service = f"{name}-mlflow"
    for host in (service, f"{service}.{namespace}", f"{service}.{namespace}.svc",
                 f"{service}.{namespace}.svc.cluster.local"):
        assert host in hosts and f"{host}:{port}" in hosts
    assert not any("*" in h for h in hosts)
    assert plan.tracking_uri == f"http://{service}.{namespace}.svc.cluster.local:{port}"
    assert command[command.index("--port") + 1] == str(port)


@given(admin=secrets, key=secrets, db=secrets)
def test_secret_values_never_appear_in_command_or_env(admin: str, key: str, db: str) -> None:
    for target in (mlops.KubernetesTarget(), mlops.DockerTarget()):
        plan = plan_registry("reg", ModelRegistryArgs(target=target))
        literal = " ".join(plan.server.command) + " ".join(
            v for v in plan.server.env.values() if isinstance(v, str))
        for value in (admin, key, db):
            assert value not in literal
        data = registry_secret_data(plan, RegistrySecrets(admin, key, db))
        refs = {v.key for v in plan.server.env.values() if isinstance(v, SecretRef)}
        assert refs <= set(data)
        assert data["admin-password"] == admin


@given(password=st.text(min_size=1, max_size=20))
def test_auth_ini_round_trips_any_database_uri(password: str) -> None:
    uri = f"postgresql+psycopg2://u:{quote(password, safe='')}@db:5432/mlflow"
    plan = plan_registry("reg", ModelRegistryArgs(
        target=mlops.KubernetesTarget(), database=mlops.Database.external(uri)))
    ini = registry_secret_data(plan, RegistrySecrets("a" * 16, "k" * 16, "", uri))["basic_auth.ini"]
    parser = configparser.ConfigParser()
    parser.read_string(ini)
    # MLflow reads the file with interpolation on; the URI must come back unchanged.
    assert parser["mlflow"]["database_uri"] == uri
    assert "admin_password" not in parser["mlflow"]


def test_sqlite_plan_keeps_database_and_auth_on_the_data_volume() -> None:
    plan = plan_registry("reg", ModelRegistryArgs(target=mlops.DockerTarget()))
    assert plan.server.env["MLFLOW_BACKEND_STORE_URI"] == "sqlite:////mlflow/data/mlflow.db"
    assert plan.auth_database_uri == "sqlite:////mlflow/data/basic_auth.db"
    assert {m.path for m in plan.server.mounts if m.kind == "data"} == {
        "/mlflow/data", "/mlflow/artifacts"}
    assert plan.database is None


def test_the_external_tracking_uri_is_where_the_user_reaches_the_registry() -> None:
    docker = plan_registry("reg", ModelRegistryArgs(target=mlops.DockerTarget(), port=5001))
    ipv6 = plan_registry("reg", ModelRegistryArgs(
        target=mlops.DockerTarget(publish_host="::1")))
    ingress = plan_registry("reg", ModelRegistryArgs(
        target=mlops.KubernetesTarget(namespace="ml"),
        ingress=mlops.RegistryIngress(host="mlflow.example.com")))
    internal = plan_registry("reg", ModelRegistryArgs(
        target=mlops.KubernetesTarget(namespace="ml")))

    assert docker.external_tracking_uri == "http://127.0.0.1:5001"  # the published port
    assert ipv6.external_tracking_uri == "http://[::1]:5000"
    assert ingress.external_tracking_uri == "https://mlflow.example.com"
    assert internal.external_tracking_uri is None  # only reachable inside the cluster


@given(port=ports)
def test_the_server_exports_prometheus_metrics_from_a_scratch_directory(port: int) -> None:
    for target in (mlops.KubernetesTarget(), mlops.DockerTarget()):
        plan = plan_registry("reg", ModelRegistryArgs(target=target, port=port))
        command = plan.server.command
        directory = command[command.index("--expose-prometheus") + 1]
        # prometheus_client's multiprocess files: writable on a read-only root, and never
        # those of an earlier pod (an emptyDir; a tmpfs volume on Docker).
        [mount] = [m for m in plan.server.mounts if m.path == directory]
        assert mount.kind == "scratch" and not mount.read_only
        # Scraped at the exporter beside the server, which reads that directory (read-only).
        exporter = plan.metrics_exporter
        assert [(m.name, m.path, m.read_only) for m in exporter.mounts] == [
            (mount.name, directory, True)]
        args = exporter.command
        assert args[args.index("--dir") + 1] == directory
        assert plan.scrape == ScrapeTarget(port=9101, path="/metrics")
        assert exporter.port == 9101 and exporter.health is not None
        assert exporter.secret_keys() == frozenset()
        assert plan.scrape_host == (
            "reg-mlflow-metrics" if isinstance(target, mlops.DockerTarget) else
            plan.server_host)


@pytest.mark.parametrize("uri, expected", [
    ("postgresql://u:p@db:5432/mlflow", "postgresql+psycopg2://u:p@db:5432/mlflow"),
    ("mysql://u:p@db/mlflow", "mysql+pymysql://u:p@db/mlflow"),
    ("mssql://u:p@db/mlflow", "mssql+pymssql://u:p@db/mlflow"),
    # A driver the user chose stays.
    ("postgresql+psycopg://u:p@db/mlflow", "postgresql+psycopg://u:p@db/mlflow"),
    ("sqlite:////mlflow/data/mlflow.db", "sqlite:////mlflow/data/mlflow.db"),
])
def test_a_database_uri_without_a_driver_gets_the_one_the_image_carries(
        uri: str, expected: str) -> None:
    assert with_driver(uri) == expected


def test_the_server_and_its_auth_database_get_the_explicit_driver() -> None:
    uri = "postgresql://u:p%40ss@db:5432/mlflow"
    plan = plan_registry("reg", ModelRegistryArgs(target=mlops.KubernetesTarget(),
                                                  database=mlops.Database.external(uri)))
    data = registry_secret_data(plan, RegistrySecrets("a" * 20, "k" * 64,
                                                      backend_store_uri=uri))
    assert data["backend-store-uri"] == "postgresql+psycopg2://u:p%40ss@db:5432/mlflow"
    assert "database_uri = postgresql+psycopg2://u:p%%40ss@db:5432/mlflow" in data[
        "basic_auth.ini"]
