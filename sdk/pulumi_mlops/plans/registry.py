"""ModelRegistry: an MLflow tracking server and model registry, production-grade by default.

Args are validated on construction; `plan_registry` is the pure function that decides every
name, command line, environment variable and config file; the component materializes that plan
on the chosen target.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from importlib import resources
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

import pulumi
from pydantic import Field, field_validator, model_validator

from pulumi_mlops._validation import (
    DNS_LABEL,
    HOSTNAME,
    QUANTITY,
    ArgsModel,
    Cidr,
    Secret,
    check_secret_input,
)
from pulumi_mlops.contracts.scrape import ScrapeTarget
from pulumi_mlops.errors import InputError, Problem
from pulumi_mlops.plans.target import DockerTarget, KubernetesTarget
from pulumi_mlops.plans.workload import (
    ConfigFile,
    EnvValue,
    ExecCheck,
    HttpCheck,
    Mount,
    Resources,
    SecretRef,
    UpdateStrategy,
    Workload,
    url_host,
)

__all__ = [
    "DEFAULT_MLFLOW_IMAGE",
    "DEFAULT_POSTGRES_IMAGE",
    "METRICS_PATH",
    "Database",
    "ModelRegistryArgs",
    "Peer",
    "Permission",
    "RegistryIngress",
    "RegistryPlan",
    "RegistrySecrets",
    "plan_registry",
    "registry_secret_data",
]

# The official image's "-full" variant carries the database drivers and the auth extra.
DEFAULT_MLFLOW_IMAGE = "ghcr.io/mlflow/mlflow:v3.17.2-full"
DEFAULT_POSTGRES_IMAGE = "postgres:16.10-bookworm"
MIN_MLFLOW_VERSION = (3, 17)
MIN_PASSWORD_LENGTH = 16
# MLflow's historical default admin password (GHSA-gq3w-7jj3-x7gr); never acceptable.
MLFLOW_DEFAULT_PASSWORD = "password1234"
# Model versions may only point at artifacts the server itself proxies or at logged models and
# runs it tracks, so nobody can register a version that makes the server read a local path or a
# foreign bucket (MLflow's security guidance for
# MLFLOW_CREATE_MODEL_VERSION_SOURCE_VALIDATION_REGEX).
MODEL_SOURCE_REGEX = r"^(mlflow-artifacts:/[^.]|models:/m-[0-9a-f]+$|runs:/[0-9a-f]+/)"

_DB_USER = "mlflow"
_DB_NAME = "mlflow"
_DB_PORT = 5432
_ARTIFACTS_PATH = "/mlflow/artifacts"
_SQLITE_PATH = "/mlflow/data"
_AUTH_INI_PATH = "/etc/mlflow/basic_auth.ini"
# `mlflow server --expose-prometheus DIR`: prometheus_client's multiprocess directory, where
# every worker keeps its counters in files. MLflow creates it if missing, but it must be
# writable (the root file system is read-only) and start empty: a scratch mount of its own (an
# emptyDir, fresh for every pod; on Docker a tmpfs volume, fresh whenever neither the server
# nor the exporter holds it). A server container restarted in place finds its files again, and
# its counters go on from where they were (no reset for Prometheus to see).
_METRICS_DIR = "/mlflow/metrics"
# The directory of the registry's cap on request bodies (`files/mlflow_upload_cap.py`, read
# here and mounted as a file: MLflow's image does not carry this package), on PYTHONPATH.
_PYTHON_DIR = "/etc/mlflow/python"
_UPLOAD_CAP_MODULE = "mlflow_upload_cap"
METRICS_PATH = "/metrics"
"""Where the registry's metrics exporter serves MLflow's Prometheus metrics."""
# MLflow's own /metrics is behind its basic-auth app, and that app serves it to admins only
# (mlflow/server/auth refuses every route it does not govern to other users: 401 without
# credentials, 403 for a non-admin). So Prometheus does not scrape the server: a sidecar of
# the server reads the same multiprocess directory with prometheus_client (which MLflow's image
# carries, as prometheus-flask-exporter's dependency) and serves the sum on a port of its own,
# without credentials, that only Prometheus is admitted to. Nothing is re-implemented: the
# exposition is prometheus_client's MultiProcessCollector, the one MLflow's /metrics runs.
# Its HTTP server is prometheus_client's too (a thread per connection, bounded by the
# container's memory and process limits).
_EXPORTER_SCRIPT = """\
import argparse, signal, sys
from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.multiprocess import MultiProcessCollector
parser = argparse.ArgumentParser(prog="mlflow-metrics-exporter")
parser.add_argument("--host", required=True)
parser.add_argument("--port", type=int, required=True)
parser.add_argument("--dir", required=True)
args = parser.parse_args()
signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
registry = CollectorRegistry()
MultiProcessCollector(registry, path=args.dir)
start_http_server(args.port, addr=args.host, registry=registry)
print(f"serving {args.dir} on {args.host}:{args.port}", flush=True)
signal.pause()
"""
_EXPORTER_RESOURCES = Resources(cpu_request="10m", memory_request="32Mi", cpu_limit="100m",
                                memory_limit="128Mi", pids_limit=64)
_REMOTE_ARTIFACT_SCHEMES = ("s3", "gs", "wasbs", "abfss", "hdfs")
_DATABASE_SCHEMES = ("postgresql", "mysql", "mssql")


class Permission(StrEnum):
    """What a user who was granted nothing explicitly may do (MLflow's default_permission)."""

    READ = "READ"
    EDIT = "EDIT"
    MANAGE = "MANAGE"
    NO_PERMISSIONS = "NO_PERMISSIONS"


class Database(ArgsModel):
    """The registry's backend store. Build one with a factory method.

    ``Database.postgres()`` runs PostgreSQL next to the server (a StatefulSet with a volume on
    Kubernetes, a container with a named volume on Docker). ``Database.sqlite()`` keeps a SQLite
    file on a volume (Docker only, one replica). ``Database.external(uri)`` uses a database you
    run; the URI carries credentials and is kept a secret.
    """

    kind: Literal["sqlite", "postgres", "external"]
    storage_size: Annotated[str, Field(pattern=QUANTITY)] = "10Gi"
    image: str = DEFAULT_POSTGRES_IMAGE
    uri: Secret[Any] = None

    @classmethod
    def sqlite(cls) -> Database:
        """SQLite on a named volume. Docker target only; one replica."""
        return cls(kind="sqlite")

    @classmethod
    def postgres(
        cls, storage_size: str = "10Gi", image: str = DEFAULT_POSTGRES_IMAGE
    ) -> Database:
        """PostgreSQL run by the component, its password generated and kept secret.

        Args:
            storage_size: Size of the data volume. Default: ``10Gi``.
            image: PostgreSQL image, pinned. Default: the project's tested version.
        """
        return cls(kind="postgres", storage_size=storage_size, image=image)

    @classmethod
    def external(cls, uri: pulumi.Input[str]) -> Database:
        """A database you operate, e.g. ``postgresql://user:pass@db:5432/mlflow``.

        Args:
            uri: SQLAlchemy URI with credentials; wrapped as a Pulumi secret. Without a
                driver it gets the one MLflow's image carries (``postgresql+psycopg2``,
                ``mysql+pymysql``, ``mssql+pymssql``); a custom image must carry it too.
        """
        return cls(kind="external", uri=uri)

    @field_validator("uri")
    @classmethod
    def _uri(cls, value: Any) -> Any:
        return check_secret_input(value, check_database_uri)

    @field_validator("image")
    @classmethod
    def _image(cls, value: str) -> str:
        check_pinned_image(value)
        return value

    @model_validator(mode="after")
    def _external_needs_uri(self) -> Database:
        if self.kind == "external" and self.uri is None:
            raise InputError("is required for an external database",
                             "use Database.external(uri) with the database's URI.", field="uri")
        return self


class Peer(ArgsModel):
    """Who may connect to a workload (a NetworkPolicy peer). Build one with a factory method."""

    namespace_labels: dict[str, str] | None = None
    pod_labels: dict[str, str] | None = None

    @classmethod
    def same_namespace(cls, pod_labels: Mapping[str, str] | None = None) -> Peer:
        """Pods in the component's own namespace (all of them, or those with ``pod_labels``)."""
        return cls(pod_labels=dict(pod_labels or {}))

    @classmethod
    def namespace(cls, name: str) -> Peer:
        """Every pod in the namespace called ``name``."""
        return cls(namespace_labels={"kubernetes.io/metadata.name": name})

    @classmethod
    def namespaces(cls, labels: Mapping[str, str]) -> Peer:
        """Every pod in namespaces carrying ``labels``."""
        return cls(namespace_labels=dict(labels))


class RegistryIngress(ArgsModel):
    """Expose the registry outside the cluster through an Ingress.

    Attributes:
        host: Public DNS name, e.g. ``mlflow.example.com``; added to the allowed hosts.
        tls_secret_name: Secret with the TLS certificate. Default: no TLS termination here.
        controller_namespace: Namespace of the ingress controller, allowed in by the
            NetworkPolicy. Default: ``ingress-nginx``.
    """

    host: Annotated[str, Field(pattern=HOSTNAME, max_length=253)]
    tls_secret_name: Annotated[str, Field(pattern=DNS_LABEL)] | None = None
    controller_namespace: Annotated[str, Field(pattern=DNS_LABEL)] = "ingress-nginx"


class ModelRegistryArgs(ArgsModel):
    """Inputs of `ModelRegistry`.

    Attributes:
        target: Where it runs: a `KubernetesTarget` or a `DockerTarget`.
        image: MLflow server image, pinned to a version ≥ 3.17. Default: the official image.
        replicas: Server replicas. Default: 1. Two or more need PostgreSQL or an external
            database, and shared artifact storage (the volume becomes ReadWriteMany).
        database: Backend store. Default: ``Database.postgres()`` on Kubernetes,
            ``Database.sqlite()`` on Docker.
        artifacts_destination: Where the server stores artifacts it proxies, e.g.
            ``s3://bucket/mlflow``. Default: a persistent volume mounted in the server.
        artifacts_storage_size: Size of that volume. Default: ``20Gi``.
        admin_username: The admin user MLflow's basic-auth app creates. Default: ``admin``.
        admin_password: The admin password (a secret). Default: generated.
        admin_password_length: Length of the generated password; at least 16.
            Default: 32.
        default_permission: What users may do on resources nobody granted them.
            Default: ``READ``.
        allowed_hosts: Extra Host headers the server accepts, besides its own service names.
            Default: none.
        allow_from: Who may connect (Kubernetes NetworkPolicy). Default: pods in the same
            namespace.
        ingress: Expose through an Ingress. Default: not exposed.
        egress_cidrs: The networks an external database and an object store
            (``artifacts_destination``) lie in; the server's Kubernetes egress on their ports
            is narrowed to them. Default: any address but link-local ones (cloud metadata),
            since an external database's URI is a secret the plan cannot read.
        port: Container port. Default: 5000.
        metrics_port: Port of the server's metrics exporter, which a MonitoringStack
            scrapes (MLflow serves its own ``/metrics`` to admins only). Default: 9101.
        workers: Server worker processes. Default: 2.
        max_upload_bytes: The largest request body the server accepts: an artifact upload
            through its proxy (one file per request) or any API call; a larger one gets 413
            and nothing of it is kept. The artifact volume's size bounds what all uploads
            together can store. Default: 1 GiB.
        resources: Requests and limits of the server container. Default: 250m/512Mi
            requested, 1 CPU/1Gi limit.
    """

    target: Annotated[KubernetesTarget | DockerTarget, Field(discriminator="kind")]
    image: str = DEFAULT_MLFLOW_IMAGE
    replicas: Annotated[int, Field(ge=1, le=20)] = 1
    database: Database | None = None
    artifacts_destination: str | None = None
    artifacts_storage_size: Annotated[str, Field(pattern=QUANTITY)] = "20Gi"
    admin_username: Annotated[str, Field(pattern=r"^[A-Za-z][A-Za-z0-9_.-]{1,63}$")] = "admin"
    admin_password: Secret[Any] = None
    admin_password_length: Annotated[int, Field(ge=MIN_PASSWORD_LENGTH, le=256)] = 32
    default_permission: Permission = Permission.READ
    allowed_hosts: list[Annotated[str, Field(pattern=r"^[A-Za-z0-9*.:\[\]-]+$")]] = Field(
        default_factory=list
    )
    allow_from: list[Peer] = Field(default_factory=lambda: [Peer.same_namespace()])
    ingress: RegistryIngress | None = None
    egress_cidrs: list[Cidr] = Field(default_factory=list)
    port: Annotated[int, Field(ge=1024, le=65535)] = 5000
    metrics_port: Annotated[int, Field(ge=1024, le=65535)] = 9101
    workers: Annotated[int, Field(ge=1, le=32)] = 2
    max_upload_bytes: Annotated[int, Field(ge=2**20, le=2**40)] = 2**30
    resources: Resources = Field(default_factory=Resources)

    @field_validator("image")
    @classmethod
    def _image(cls, value: str) -> str:
        check_pinned_image(value)
        check_mlflow_version(value)
        return value

    @field_validator("artifacts_destination")
    @classmethod
    def _artifacts(cls, value: str | None) -> str | None:
        parts = urlsplit(value) if value is not None else None
        if parts is not None and (parts.scheme not in _REMOTE_ARTIFACT_SCHEMES or not parts.netloc):
            schemes = ", ".join(s + "://" for s in _REMOTE_ARTIFACT_SCHEMES)
            raise InputError(
                f"must be an object-store URI ({schemes})",
                "use e.g. 's3://bucket/mlflow', or omit it to keep artifacts on a volume.",
            )
        return value

    @field_validator("admin_password")
    @classmethod
    def _password(cls, value: Any) -> Any:
        return check_secret_input(value, check_admin_password)

    def effective_database(self) -> Database:
        """The database in use: the given one, or the target's default."""
        if self.database is not None:
            return self.database
        if isinstance(self.target, KubernetesTarget):
            return Database.postgres()
        return Database.sqlite()

    def problems(self) -> list[Problem]:
        """Rules that span several inputs."""
        found: list[Problem] = []
        db = self.effective_database()
        on_docker = isinstance(self.target, DockerTarget)
        if on_docker and self.replicas > 1:
            found.append(Problem("replicas", "must be 1 on the Docker target", self.replicas,
                                 "set `replicas` to 1, or deploy to a Kubernetes `target` for "
                                 "HA.", related=("target",)))
        if db.kind == "sqlite" and not on_docker:
            found.append(Problem("database", "cannot be SQLite on Kubernetes", "sqlite",
                                 "set `database.kind` to postgres (run beside the server) or "
                                 "external (a database you run).", related=("database.kind",)))
        elif db.kind == "sqlite" and self.replicas > 1:
            found.append(Problem("replicas", "must be 1 with a SQLite database", self.replicas,
                                 "set `replicas` to 1, or `database.kind` to postgres.",
                                 related=("database.kind",)))
        if self.metrics_port == self.port:
            found.append(Problem("metrics_port", "must differ from `port`", self.metrics_port,
                                 "choose another `metrics_port` (default 9101).",
                                 related=("port",)))
        if on_docker and self.ingress is not None:
            found.append(Problem("ingress", "is only supported on the Kubernetes target",
                                 self.ingress.host,
                                 "remove `ingress`; on Docker the port is published on the host."))
        return found


def check_admin_password(password: str) -> None:
    """Never MLflow's documented default, never shorter than the minimum."""
    if password == MLFLOW_DEFAULT_PASSWORD:
        raise InputError(
            "must not be MLflow's documented default password",
            "omit `admin_password` to generate one, or set a strong one as a secret.",
        )
    if len(password) < MIN_PASSWORD_LENGTH:
        raise InputError(
            f"must be at least {MIN_PASSWORD_LENGTH} characters",
            "omit `admin_password` to generate one, or use a longer one.",
        )


def check_pinned_image(image: str) -> None:
    """Images must name an immutable version: a tag other than ``latest``, or a digest."""
    name, _, digest = image.partition("@")
    tag = name.rsplit("/", 1)[-1].partition(":")[2]
    if not digest and tag in ("", "latest"):
        raise InputError(
            "must be pinned to a version tag or a digest",
            "use e.g. 'repo/image:1.2.3' or 'repo/image@sha256:...'.",
        )


def check_mlflow_version(image: str) -> None:
    """MLflow images older than 3.17 lack security fixes the registry relies on."""
    tag = image.partition("@")[0].rsplit("/", 1)[-1].partition(":")[2]
    match = re.match(r"^v?(\d+)\.(\d+)", tag)
    if match and (int(match[1]), int(match[2])) < MIN_MLFLOW_VERSION:
        raise InputError(
            "must run MLflow 3.17 or newer (security fixes)",
            f"use {DEFAULT_MLFLOW_IMAGE!r} or a newer tag.",
        )


# The drivers MLflow's `db` extra installs (in the official `-full` image): a URI that names no
# driver gets the one the image carries, whatever SQLAlchemy's default for the dialect.
_DRIVERS = {"postgresql": "postgresql+psycopg2", "mysql": "mysql+pymysql",
            "mssql": "mssql+pymssql"}


def with_driver(uri: str) -> str:
    """``uri`` with the explicit driver the MLflow image carries when it names none
    (``postgresql://`` → ``postgresql+psycopg2://``); unchanged otherwise."""
    scheme, sep, rest = uri.partition("://")
    return f"{_DRIVERS[scheme]}{sep}{rest}" if sep and scheme in _DRIVERS else uri


def check_database_uri(uri: str) -> None:
    """A SQLAlchemy URI of a server database, with a host."""
    parts = urlsplit(uri)
    if parts.scheme.partition("+")[0] not in _DATABASE_SCHEMES or not parts.hostname:
        raise InputError(
            "must be a database URI like postgresql://user:password@host:5432/db",
            "pass a PostgreSQL, MySQL or MSSQL URI with a host.",
        )


@dataclass(frozen=True)
class RegistrySecrets:
    """Secret values the registry's secret data is rendered from.

    Attributes:
        admin_password: Password of the admin user.
        flask_secret_key: Key that signs the server's sessions and CSRF tokens.
        db_password: Password of the component-run PostgreSQL ("" when there is none).
        backend_store_uri: External database URI ("" when there is none).
    """

    admin_password: str
    flask_secret_key: str
    db_password: str = ""
    backend_store_uri: str = ""


@dataclass(frozen=True)
class RegistryPlan:
    """Everything the registry declares, independent of the target.

    Attributes:
        name: Component name.
        server: The MLflow server container.
        database: The PostgreSQL container, when the component runs one.
        labels: Labels shared by every object of the component.
        server_host: DNS name clients use to reach the server.
        tracking_uri: ``http://<server_host>:<port>``.
        external_tracking_uri: Where the registry is reached from outside its cluster or Docker
            network: the port published on the Docker host, or the Ingress; None without one.
        replicas: Server replicas.
        auth_database_uri: Database of the basic-auth app (a secret reference when it
            carries credentials).
        default_permission: MLflow's default_permission for the basic-auth app.
        allow_from: Who may connect to the server (besides the ingress controller).
        ingress: The Ingress in front of the server (host, TLS secret, controller namespace);
            None for none.
        external_database: Whether the server connects out to a database it does not run.
        artifact_store_egress: Whether the server connects out to an object store (HTTPS).
        egress_cidrs: Where the external database and object store are (empty: anywhere but
            link-local addresses).
        server_selector: Labels that select exactly the server's pods.
        database_selector: Labels that select exactly the database's pods.
        shared_storage: Whether several replicas mount the server's data volumes at once
            (so the volumes must be shared, and the replicas spread across nodes).
        update_strategy: How the server's pods are replaced: rolling when a new pod can
            mount the volumes beside the old one, else recreate.
        rollout_deadline_seconds: Seconds an update may take before it counts as failed.
        disruption_budget: Whether voluntary disruptions may take at most one server pod.
        scrape: Where Prometheus scrapes the server's metrics: the exporter sidecar's port
            and `METRICS_PATH` (``mlflow server --expose-prometheus``'s series,
            ``mlflow_http_request_*``), without credentials.
        scrape_host: The host Prometheus reaches the exporter at: on Docker its own
            container; on Kubernetes, where it runs in the server's pods, the server's Service
            (which does not carry the metrics port: a PodMonitor, or a standalone Prometheus's
            headless Service, selects the pods).
    """

    name: str
    server: Workload
    database: Workload | None
    labels: Mapping[str, str]
    server_host: str
    tracking_uri: str
    external_tracking_uri: str | None
    replicas: int
    auth_database_uri: str | SecretRef
    default_permission: str
    allow_from: tuple[Peer, ...]
    ingress: RegistryIngress | None
    external_database: bool
    artifact_store_egress: bool
    egress_cidrs: tuple[str, ...]
    server_selector: Mapping[str, str]
    database_selector: Mapping[str, str]
    shared_storage: bool
    update_strategy: UpdateStrategy
    rollout_deadline_seconds: int
    disruption_budget: bool
    scrape: ScrapeTarget
    scrape_host: str

    @property
    def server_name(self) -> str:
        """Name of the server's Deployment/Service/container."""
        return f"{self.name}-mlflow"

    @property
    def metrics_exporter(self) -> Workload:
        """The server's sidecar that serves its metrics to Prometheus."""
        return self.server.sidecars[0]

    @property
    def database_name(self) -> str:
        """Name of the PostgreSQL StatefulSet/Service/container."""
        return f"{self.name}-postgres"


def plan_registry(name: str, args: ModelRegistryArgs) -> RegistryPlan:
    """The registry's containers, commands, env and files: one pure function for all targets."""
    db = args.effective_database()
    target = args.target
    server_name, db_name = f"{name}-mlflow", f"{name}-postgres"
    if isinstance(target, KubernetesTarget):
        server_host, db_host = target.service_host(server_name), target.service_host(db_name)
        short = [server_name, f"{server_name}.{target.namespace}",
                 f"{server_name}.{target.namespace}.svc", server_host]
    else:
        server_host, db_host = server_name, db_name
        short = [server_name]
    names = [*short, "localhost", "127.0.0.1"]
    if args.ingress is not None:
        names.append(args.ingress.host)
    allowed = [*[h for n in names for h in (n, f"{n}:{args.port}")], *args.allowed_hosts]

    env: dict[str, EnvValue] = {
        "HOME": "/tmp",
        "MLFLOW_AUTH_CONFIG_PATH": _AUTH_INI_PATH,
        "MLFLOW_AUTH_ADMIN_USERNAME": args.admin_username,
        "MLFLOW_AUTH_ADMIN_PASSWORD": SecretRef("admin-password"),
        "MLFLOW_FLASK_SERVER_SECRET_KEY": SecretRef("flask-secret-key"),
        "MLFLOW_CREATE_MODEL_VERSION_SOURCE_VALIDATION_REGEX": MODEL_SOURCE_REGEX,
        # Server-side jobs execute work inside the registry; it has no use for them.
        "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
        # A registry holding a company's models does not report usage to third parties.
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "PYTHONPATH": _PYTHON_DIR,
        "MLOPS_MAX_REQUEST_BYTES": str(args.max_upload_bytes),
    }
    mounts = [Mount("tmp", "/tmp", "scratch", "1Gi"),
              Mount("metrics", _METRICS_DIR, "scratch", "128Mi")]
    auth_db: str | SecretRef
    if db.kind == "sqlite":
        mounts.append(Mount("data", _SQLITE_PATH, "data", db.storage_size))
        env["MLFLOW_BACKEND_STORE_URI"] = f"sqlite:///{_SQLITE_PATH}/mlflow.db"
        auth_db = f"sqlite:///{_SQLITE_PATH}/basic_auth.db"
    elif db.kind == "postgres":
        # libpq reads PGPASSWORD, so the URI itself carries no secret.
        uri = f"postgresql+psycopg2://{_DB_USER}@{db_host}:{_DB_PORT}/{_DB_NAME}"
        env["MLFLOW_BACKEND_STORE_URI"] = uri
        env["PGPASSWORD"] = SecretRef("db-password")
        auth_db = uri
    else:
        env["MLFLOW_BACKEND_STORE_URI"] = SecretRef("backend-store-uri")
        auth_db = SecretRef("backend-store-uri")
    artifacts = args.artifacts_destination
    if artifacts is None:
        mounts.append(Mount("artifacts", _ARTIFACTS_PATH, "data", args.artifacts_storage_size))
        artifacts = _ARTIFACTS_PATH

    command: tuple[str, ...] = (
        "mlflow", "server",
        "--app-name", "basic-auth",
        "--host", "0.0.0.0",
        "--port", str(args.port),
        "--workers", str(args.workers),
        "--serve-artifacts",
        "--artifacts-destination", artifacts,
        "--allowed-hosts", ",".join(allowed),
        "--x-frame-options", "DENY",
        "--expose-prometheus", _METRICS_DIR,
        "--uvicorn-opts", f"--http {_UPLOAD_CAP_MODULE}:CappedProtocol",
    )
    if args.ingress is not None:
        command += ("--cors-allowed-origins", f"https://{args.ingress.host}")
    exporter = Workload(
        name="metrics",
        image=args.image,
        command=("python", "-c", _EXPORTER_SCRIPT, "--host", "0.0.0.0",
                 "--port", str(args.metrics_port), "--dir", _METRICS_DIR),
        env={"HOME": "/tmp"},
        port=args.metrics_port,
        health=HttpCheck(METRICS_PATH),
        mounts=(Mount("metrics", _METRICS_DIR, "scratch", "128Mi", read_only=True),),
        resources=_EXPORTER_RESOURCES,
        startup_seconds=60,
    )
    server = Workload(
        name="mlflow",
        image=args.image,
        command=command,
        env=env,
        port=args.port,
        health=HttpCheck("/health"),
        files=(ConfigFile(_AUTH_INI_PATH, SecretRef("basic_auth.ini")),
               ConfigFile(f"{_PYTHON_DIR}/{_UPLOAD_CAP_MODULE}.py", _upload_cap_source())),
        mounts=tuple(mounts),
        resources=args.resources,
        startup_seconds=300,  # database migrations on first start or upgrade
        sidecars=(exporter,),
    )
    database = _plan_postgres(db) if db.kind == "postgres" else None
    labels = {
        "app.kubernetes.io/name": "mlflow",
        "app.kubernetes.io/instance": name,
        "app.kubernetes.io/part-of": "pulumi-mlops",
        "app.kubernetes.io/managed-by": "pulumi",
    }
    if isinstance(target, KubernetesTarget):
        labels.update(target.labels)
    shared = args.replicas > 1
    has_volumes = any(m.kind == "data" for m in server.mounts)
    return RegistryPlan(
        name=name,
        server=server,
        database=database,
        labels=labels,
        server_host=server_host,
        tracking_uri=f"http://{server_host}:{args.port}",
        external_tracking_uri=(
            f"http://{url_host(target.publish_host)}:{args.port}"
            if isinstance(target, DockerTarget) else
            f"https://{args.ingress.host}" if args.ingress is not None else None),
        replicas=args.replicas,
        auth_database_uri=auth_db,
        default_permission=args.default_permission.value,
        allow_from=tuple(args.allow_from),
        ingress=args.ingress,
        external_database=database is None and args.effective_database().kind == "external",
        artifact_store_egress=args.artifacts_destination is not None,
        egress_cidrs=tuple(args.egress_cidrs),
        server_selector={"app.kubernetes.io/name": "mlflow", "app.kubernetes.io/instance": name,
                         "app.kubernetes.io/component": "server"},
        database_selector={"app.kubernetes.io/name": "postgres",
                           "app.kubernetes.io/instance": name,
                           "app.kubernetes.io/component": "database"},
        shared_storage=shared,
        # A volume only one node can mount cannot attach to a surge pod on another node.
        update_strategy=(UpdateStrategy.ROLLING if shared or not has_volumes
                         else UpdateStrategy.RECREATE),
        rollout_deadline_seconds=server.startup_seconds + 300,
        disruption_budget=args.replicas >= 2,
        scrape=ScrapeTarget(port=args.metrics_port, path=METRICS_PATH),
        scrape_host=(f"{server_name}-{exporter.name}" if isinstance(target, DockerTarget)
                     else server_host),
    )


def _upload_cap_source() -> str:
    return (resources.files("pulumi_mlops.plans") / "files" / f"{_UPLOAD_CAP_MODULE}.py"
            ).read_text(encoding="utf-8")


def _plan_postgres(db: Database) -> Workload:
    data = "/var/lib/postgresql/data"
    return Workload(
        name="postgres",
        image=db.image,
        command=(
            "docker-entrypoint.sh", "postgres",
            "-c", "listen_addresses=*",
            "-c", "password_encryption=scram-sha-256",
        ),
        env={
            "POSTGRES_USER": _DB_USER,
            "POSTGRES_DB": _DB_NAME,
            "POSTGRES_PASSWORD": SecretRef("db-password"),
            "POSTGRES_INITDB_ARGS": "--auth-host=scram-sha-256",
            # A subdirectory, because a fresh volume's root holds lost+found.
            "PGDATA": f"{data}/pgdata",
        },
        port=_DB_PORT,
        health=ExecCheck(("pg_isready", "-h", "127.0.0.1", "-U", _DB_USER, "-d", _DB_NAME)),
        mounts=(
            Mount("data", data, "data", db.storage_size),
            Mount("run", "/var/run/postgresql", "scratch", "64Mi"),
            Mount("tmp", "/tmp", "scratch", "256Mi"),
        ),
        resources=Resources(memory_request="256Mi", memory_limit="1Gi"),
        startup_seconds=120,
    )


def render_auth_ini(database_uri: str, default_permission: str) -> str:
    """MLflow basic-auth config. The admin credentials come from env, not this file."""
    # configparser interpolates '%', and URL-encoded passwords contain it.
    uri = database_uri.replace("%", "%%")
    return (
        "[mlflow]\n"
        f"default_permission = {default_permission}\n"
        f"database_uri = {uri}\n"
        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
    )


def registry_secret_data(plan: RegistryPlan, secrets: RegistrySecrets) -> dict[str, str]:
    """The registry's secret data, keyed as the plan's `SecretRef`s name them."""
    data = {
        "admin-password": secrets.admin_password,
        "flask-secret-key": secrets.flask_secret_key,
    }
    if plan.database is not None:
        data["db-password"] = secrets.db_password
    if secrets.backend_store_uri:
        data["backend-store-uri"] = with_driver(secrets.backend_store_uri)
    auth_db = plan.auth_database_uri
    data["basic_auth.ini"] = render_auth_ini(
        data[auth_db.key] if isinstance(auth_db, SecretRef) else auth_db,
        plan.default_permission,
    )
    return data
