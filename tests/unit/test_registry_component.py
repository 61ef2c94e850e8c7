"""ModelRegistry under Pulumi's mocks, on both targets: recorded inputs and parentage."""

from __future__ import annotations

from typing import Any

import pulumi

import pulumi_mlops as mlops
from pulumi_mlops.render import Recording, record, unwrap_secrets
from pulumi_mlops.render.manifests import redact
from tests.recording import external_egress, failing

DEPLOYMENT = "kubernetes:apps/v1:Deployment"
STATEFULSET = "kubernetes:apps/v1:StatefulSet"
SERVICE = "kubernetes:core/v1:Service"
SECRET = "kubernetes:core/v1:Secret"
PVC = "kubernetes:core/v1:PersistentVolumeClaim"
NETPOL = "kubernetes:networking.k8s.io/v1:NetworkPolicy"
PDB = "kubernetes:policy/v1:PodDisruptionBudget"
INGRESS = "kubernetes:networking.k8s.io/v1:Ingress"
CONTAINER = "docker:index/container:Container"
VOLUME = "docker:index/volume:Volume"
NETWORK = "docker:index/network:Network"
COMPONENT = "mlops:index:ModelRegistry"


def k8s(**kwargs: Any) -> Recording:
    target = mlops.KubernetesTarget(namespace="ml", storage_class="fast")
    return record(lambda: mlops.ModelRegistry("reg", target=target, **kwargs))


def docker(**kwargs: Any) -> Recording:
    return record(lambda: mlops.ModelRegistry("reg", target=mlops.DockerTarget(), **kwargs))


def pod(rec: Recording, type_: str = DEPLOYMENT, name: str = "reg-mlflow") -> dict[str, Any]:
    return redact(dict(rec.get(type_, name).inputs))["spec"]["template"]["spec"]


def env_of(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}


def test_every_child_is_parented_to_the_component() -> None:
    for rec in (k8s(), docker()):
        component = rec.get(COMPONENT, "reg")
        children = [r for r in rec.resources if r is not component]
        assert children
        assert all(rec.parent_of(r) is component for r in children)
        assert all(r.name.startswith("reg-") for r in children)


def test_kubernetes_default_runs_postgres_with_a_generated_password() -> None:
    rec = k8s()
    statefulset = redact(dict(rec.get(STATEFULSET, "reg-postgres").inputs))
    assert statefulset["spec"]["volumeClaimTemplates"][0]["spec"]["storageClassName"] == "fast"
    db_env = env_of(pod(rec, STATEFULSET, "reg-postgres")["containers"][0])
    assert db_env["POSTGRES_PASSWORD"] == {
        "secretKeyRef": {"name": "reg-postgres", "key": "db-password"}}
    server_env = env_of(pod(rec)["containers"][0])
    assert server_env["PGPASSWORD"]["secretKeyRef"]["key"] == "db-password"
    assert server_env["MLFLOW_BACKEND_STORE_URI"] == (
        "postgresql+psycopg2://mlflow@reg-postgres.ml.svc.cluster.local:5432/mlflow")
    password = rec.get("random:index/randomPassword:RandomPassword", "reg-db-password")
    assert password.inputs["length"] >= 32
    # Each Secret holds only the keys its pod reads.
    assert set(unwrap_secrets(rec.get(SECRET, "reg-postgres").inputs["stringData"])) == {
        "db-password"}
    assert set(unwrap_secrets(rec.get(SECRET, "reg-mlflow").inputs["stringData"])) == {
        "admin-password", "flask-secret-key", "db-password", "basic_auth.ini"}


def test_server_command_enables_auth_artifact_proxy_and_host_allow_list() -> None:
    command = pod(k8s())["containers"][0]["command"]
    assert command[:4] == ["mlflow", "server", "--app-name", "basic-auth"]
    assert command[command.index("--artifacts-destination") + 1] == "/mlflow/artifacts"
    assert "--serve-artifacts" in command
    hosts = command[command.index("--allowed-hosts") + 1].split(",")
    assert "reg-mlflow.ml.svc.cluster.local:5000" in hosts
    assert "*" not in hosts


def test_pod_is_hardened_with_probes_and_resources() -> None:
    spec = pod(k8s())
    assert spec["automountServiceAccountToken"] is False
    assert spec["securityContext"]["runAsUser"] >= 10000
    container = spec["containers"][0]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert container["startupProbe"]["httpGet"]["path"] == "/health"
    assert container["startupProbe"]["failureThreshold"] * container["startupProbe"][
        "periodSeconds"] >= 300
    assert container["readinessProbe"] != container["livenessProbe"]
    assert set(container["resources"]) == {"requests", "limits"}
    mounts = {m["mountPath"] for m in container["volumeMounts"]}
    assert {"/tmp", "/mlflow/artifacts", "/etc/mlflow"} <= mounts


def test_one_replica_recreates_and_several_replicas_share_storage_and_spread() -> None:
    single = k8s()
    assert redact(dict(single.get(DEPLOYMENT, "reg-mlflow").inputs))["spec"]["strategy"][
        "type"] == "Recreate"
    assert single.of_type(PDB) == []
    assert single.get(PVC, "reg-artifacts").inputs["spec"]["accessModes"] == ["ReadWriteOnce"]
    ha = k8s(replicas=3)
    deployment = redact(dict(ha.get(DEPLOYMENT, "reg-mlflow").inputs))["spec"]
    assert deployment["replicas"] == 3
    assert deployment["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    assert deployment["template"]["spec"]["topologySpreadConstraints"]
    assert ha.get(PVC, "reg-artifacts").inputs["spec"]["accessModes"] == ["ReadWriteMany"]
    assert redact(dict(ha.get(PDB, "reg-mlflow").inputs))["spec"]["maxUnavailable"] == 1


def test_network_policies_limit_ingress_and_egress() -> None:
    rec = k8s(allow_from=[mlops.Peer.namespace("teams")])
    server = redact(dict(rec.get(NETPOL, "reg-mlflow").inputs))["spec"]
    assert server["policyTypes"] == ["Ingress", "Egress"]
    assert server["ingress"][0]["from"] == [
        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "teams"}}}]
    egress_ports = [p["port"] for rule in server["egress"] for p in rule["ports"]]
    assert sorted(egress_ports) == [53, 53, 5432]
    database = redact(dict(rec.get(NETPOL, "reg-postgres").inputs))["spec"]
    assert database["egress"] == []
    assert database["ingress"][0]["from"][0]["podSelector"]["matchLabels"][
        "app.kubernetes.io/component"] == "server"


def test_external_database_uri_stays_secret_and_no_postgres_is_run() -> None:
    uri = "postgresql://svc:s3cr3t-Pa55@db.example.com:5432/mlflow"
    rec = k8s(database=mlops.Database.external(uri))
    assert rec.of_type(STATEFULSET) == []
    server_env = env_of(pod(rec)["containers"][0])
    assert server_env["MLFLOW_BACKEND_STORE_URI"]["secretKeyRef"]["key"] == "backend-store-uri"
    assert "s3cr3t" not in str(redact(dict(rec.get(SECRET, "reg-mlflow").inputs)))
    data = unwrap_secrets(rec.get(SECRET, "reg-mlflow").inputs["stringData"])
    # The documented form names no driver: it gets the one MLflow's image carries.
    explicit = uri.replace("postgresql://", "postgresql+psycopg2://")
    assert data["backend-store-uri"] == explicit
    assert f"database_uri = {explicit}" in data["basic_auth.ini"]


def test_ingress_exposes_the_service_and_admits_the_controller() -> None:
    rec = k8s(ingress=mlops.RegistryIngress(host="mlflow.example.com", tls_secret_name="tls"))
    ingress = redact(dict(rec.get(INGRESS, "reg-mlflow").inputs))["spec"]
    assert ingress["rules"][0]["host"] == "mlflow.example.com"
    assert ingress["tls"] == [{"hosts": ["mlflow.example.com"], "secretName": "tls"}]
    command = pod(rec)["containers"][0]["command"]
    assert "mlflow.example.com" in command[command.index("--allowed-hosts") + 1].split(",")
    peers = redact(dict(rec.get(NETPOL, "reg-mlflow").inputs))["spec"]["ingress"][0]["from"]
    assert {"namespaceSelector": {"matchLabels": {
        "kubernetes.io/metadata.name": "ingress-nginx"}}} in peers


def test_object_store_artifacts_need_no_volume_and_allow_https_egress() -> None:
    rec = k8s(artifacts_destination="s3://bucket/mlflow")
    assert rec.of_type(PVC) == []
    command = pod(rec)["containers"][0]["command"]
    assert command[command.index("--artifacts-destination") + 1] == "s3://bucket/mlflow"
    egress = redact(dict(rec.get(NETPOL, "reg-mlflow").inputs))["spec"]["egress"]
    assert external_egress(443) in egress


def test_docker_runs_sqlite_on_volumes_with_hardened_containers() -> None:
    rec = docker()
    assert {v.inputs["name"] for v in rec.of_type(VOLUME)} == {
        "reg-mlflow-data", "reg-mlflow-artifacts", "reg-mlflow-config-0", "reg-mlflow-config-1",
        "reg-mlflow-metrics"}
    assert rec.get(NETWORK, "reg-net").inputs["name"] == "reg-net"
    server = redact(dict(rec.get(CONTAINER, "reg-mlflow").inputs))
    assert server["user"] == "10001:10001"
    assert server["readOnly"] is True
    assert server["capabilities"] == {"drops": ["ALL"]}
    assert server["securityOpts"] == ["no-new-privileges:true"]
    assert server["ports"] == [{"internal": 5000, "external": 5000, "ip": "127.0.0.1"}]
    assert server["healthcheck"]["tests"][:2] == ["CMD", "python"]
    assert server["envs"] == "[secret]"
    envs = unwrap_secrets(rec.get(CONTAINER, "reg-mlflow").inputs["envs"])
    assert "MLFLOW_BACKEND_STORE_URI=sqlite:////mlflow/data/mlflow.db" in envs
    init = redact(dict(rec.get(CONTAINER, "reg-mlflow-init").inputs))
    assert init["capabilities"] == {"drops": ["ALL"], "adds": ["CHOWN"]}
    assert init["networkMode"] == "none"
    assert "chown 10001:10001 /mlflow/data /mlflow/artifacts" in init["entrypoints"][2]


def test_every_docker_container_is_bounded_in_processes_and_the_init_containers_in_all() -> None:
    rec = docker(database=mlops.Database.postgres())
    for name in ("reg-postgres", "reg-mlflow"):
        container = redact(dict(rec.get(CONTAINER, name).inputs))
        # pulumi-docker has no --pids-limit: the nproc ulimit is the bound it offers.
        assert container["ulimits"] == [{"name": "nproc", "soft": 4096, "hard": 4096}]
        assert container["restart"] == "unless-stopped"
    for name in ("reg-postgres-init", "reg-mlflow-init"):
        init = redact(dict(rec.get(CONTAINER, name).inputs))
        assert init["memory"] == 64
        assert init["cpus"] == "0.25"
        assert init["ulimits"] == [{"name": "nproc", "soft": 32, "hard": 32}]


def test_docker_metrics_exporter_shares_a_tmpfs_volume_read_only_and_holds_no_secret() -> None:
    rec = docker()
    volume = rec.get(VOLUME, "reg-mlflow-metrics").inputs
    # A tmpfs the engine mounts (size-bounded, owned by the workloads' user), not kept on
    # delete: counters must not outlive the server's processes.
    assert volume["driverOpts"] == {
        "type": "tmpfs", "device": "tmpfs",
        "o": "noexec,nosuid,size=134217728,uid=10001,gid=10001,mode=0700"}
    assert not rec.get(VOLUME, "reg-mlflow-metrics").retain_on_delete
    server = redact(dict(rec.get(CONTAINER, "reg-mlflow").inputs))
    assert {"volumeName": "reg-mlflow-metrics", "containerPath": "/mlflow/metrics"} in \
        server["volumes"]
    assert "/mlflow/metrics" not in server["tmpfs"]
    exporter = dict(unwrap_secrets(dict(rec.get(CONTAINER, "reg-mlflow-metrics").inputs)))
    assert exporter["volumes"] == [{"volumeName": "reg-mlflow-metrics",
                                    "containerPath": "/mlflow/metrics", "readOnly": True}]
    assert exporter["user"] == "10001:10001" and exporter["readOnly"] is True
    assert exporter["capabilities"] == {"drops": ["ALL"]}
    assert exporter.get("ports", []) == []
    assert exporter["networksAdvanced"] == [{"name": "reg-net",
                                             "aliases": ["reg-mlflow-metrics"]}]
    assert exporter["envs"] == ["HOME=/tmp"]
    assert exporter["entrypoints"][-6:] == ["--host", "0.0.0.0", "--port", "9101",
                                            "--dir", "/mlflow/metrics"]
    assert exporter["memory"] == 128
    assert exporter["healthcheck"]["tests"][:2] == ["CMD", "python"]
    # The init container neither owns nor writes the exporter's volume.
    init = redact(dict(rec.get(CONTAINER, "reg-mlflow-init").inputs))
    assert "/mlflow/metrics" not in init["entrypoints"][2]


def test_kubernetes_metrics_exporter_is_a_sidecar_that_never_gates_readiness() -> None:
    spec = pod(k8s())
    server, exporter = spec["containers"]
    assert exporter["name"] == "metrics"
    assert exporter["ports"] == [{"name": "metrics", "containerPort": 9101, "protocol": "TCP"}]
    assert "readinessProbe" not in exporter
    assert exporter["livenessProbe"]["httpGet"] == {"path": "/metrics", "port": "metrics"}
    assert exporter["volumeMounts"] == [{"name": "metrics", "mountPath": "/mlflow/metrics",
                                         "readOnly": True}]
    assert {"name": "metrics", "mountPath": "/mlflow/metrics"} in server["volumeMounts"]
    assert [v for v in spec["volumes"] if v["name"] == "metrics"] == [
        {"name": "metrics", "emptyDir": {"sizeLimit": "128Mi"}}]
    assert exporter["securityContext"] == server["securityContext"]
    assert [e["name"] for e in exporter["env"]] == ["HOME"]
    assert server["readinessProbe"]["httpGet"]["port"] == "http"


def test_metrics_port_must_differ_from_the_server_port() -> None:
    err, rec = failing(lambda: mlops.ModelRegistry(
        "reg", target=mlops.DockerTarget(), port=5000, metrics_port=5000))
    assert [p.path for p in err.problems] == ["metrics_port"]
    assert "`metrics_port` must differ from `port`" in str(err)
    assert rec.resources == []


def test_docker_pids_limit_follows_the_resources() -> None:
    rec = docker(resources=mlops.Resources(pids_limit=512))
    server = redact(dict(rec.get(CONTAINER, "reg-mlflow").inputs))
    assert server["ulimits"] == [{"name": "nproc", "soft": 512, "hard": 512}]


def test_docker_postgres_is_optional() -> None:
    rec = docker(database=mlops.Database.postgres())
    names = {c.inputs["name"] for c in rec.of_type(CONTAINER)}
    assert names == {"reg-postgres", "reg-postgres-init", "reg-mlflow", "reg-mlflow-init",
                     "reg-mlflow-metrics"}
    db = redact(dict(rec.get(CONTAINER, "reg-postgres").inputs))
    assert db["ports"] == []
    assert db["healthcheck"]["tests"][:2] == ["CMD", "pg_isready"]


def test_outputs_expose_tracking_uri_and_admin_username() -> None:
    def program() -> None:
        registry = mlops.ModelRegistry("reg", target=mlops.KubernetesTarget(namespace="ml"))
        pulumi.export("uri", registry.tracking_uri)
        pulumi.export("user", registry.admin_username)

    outputs = record(program).outputs
    assert outputs == {"uri": "http://reg-mlflow.ml.svc.cluster.local:5000", "user": "admin"}


def test_admin_password_output_is_secret() -> None:
    rec = record(lambda: pulumi.export(
        "pw", mlops.ModelRegistry("reg", target=mlops.DockerTarget()).admin_password))
    assert redact(rec.outputs)["pw"] == "[secret]"
    assert len(unwrap_secrets(rec.outputs["pw"])) == 32


def test_args_object_and_keywords_build_the_same_registry() -> None:
    target = mlops.DockerTarget()
    by_kwargs = record(lambda: mlops.ModelRegistry("reg", target=target, workers=3))
    by_args = record(lambda: mlops.ModelRegistry(
        "reg", mlops.ModelRegistryArgs(target=target, workers=3)))
    # Registration order is asynchronous; the set of resources is what must match.
    assert sorted((r.type, r.name) for r in by_kwargs.resources) == sorted(
        (r.type, r.name) for r in by_args.resources)
    assert unwrap_secrets(by_kwargs.get(CONTAINER, "reg-mlflow").inputs["entrypoints"]) == \
        unwrap_secrets(by_args.get(CONTAINER, "reg-mlflow").inputs["entrypoints"])


def test_recording_works_after_asyncio_run_unset_the_event_loop() -> None:
    import asyncio

    asyncio.run(asyncio.sleep(0))  # leaves the main thread without a current loop
    assert k8s().of_type(DEPLOYMENT)


def test_the_metrics_directory_is_a_tmpfs_volume_on_docker_and_an_empty_dir_on_kubernetes(
        ) -> None:
    server = redact(dict(docker().get(CONTAINER, "reg-mlflow").inputs))
    command = server["entrypoints"]
    assert command[command.index("--expose-prometheus") + 1] == "/mlflow/metrics"
    assert server["tmpfs"]["/tmp"].startswith("rw,noexec,nosuid,size=")

    spec = pod(k8s())
    container = spec["containers"][0]
    args = [*container.get("command", []), *container.get("args", [])]
    assert args[args.index("--expose-prometheus") + 1] == "/mlflow/metrics"
    [mount] = [m for m in container["volumeMounts"] if m["mountPath"] == "/mlflow/metrics"]
    [volume] = [v for v in spec["volumes"] if v["name"] == mount["name"]]
    assert "sizeLimit" in volume["emptyDir"]


def test_external_database_and_object_store_egress_narrow_to_the_declared_networks() -> None:
    rec = k8s(database=mlops.Database.external("postgresql://u:p@db.example.com/mlflow"),
              artifacts_destination="s3://bucket/mlflow",
              egress_cidrs=["10.20.0.0/16", "2001:db8::/32"])
    egress = redact(dict(rec.get(NETPOL, "reg-mlflow").inputs))["spec"]["egress"]
    cidrs = ("10.20.0.0/16", "2001:db8::/32")
    assert external_egress(5432, 3306, 1433, cidrs=cidrs) in egress
    assert external_egress(443, cidrs=cidrs) in egress
    # Undeclared, anywhere but link-local: never the cloud metadata address.
    anywhere = redact(dict(k8s(artifacts_destination="s3://bucket/mlflow").get(
        NETPOL, "reg-mlflow").inputs))["spec"]["egress"]
    assert external_egress(443) in anywhere


def test_a_cidr_with_host_bits_is_refused_naming_the_input() -> None:
    err, rec = failing(lambda: mlops.ModelRegistry(
        "reg", target=mlops.KubernetesTarget(namespace="ml"), egress_cidrs=["10.20.0.1/16"]))
    assert [p.path for p in err.problems] == ["egress_cidrs[0]"]
    assert "CIDR notation" in str(err) and "10.20.0.0/16" in str(err)
    assert rec.resources == []
