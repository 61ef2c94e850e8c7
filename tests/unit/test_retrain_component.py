"""RetrainSchedule under Pulumi's mocks: the CronJob on Kubernetes, the scheduler container on
Docker, the job's config file, secrets by reference, and errors naming the input."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import kubernetes_validate
import pulumi
import pytest

import pulumi_mlops as mlops
from pulumi_mlops.cli import _parser
from pulumi_mlops.components.retrain import RetrainSchedule
from pulumi_mlops.contracts.scrape import ScrapeTarget
from pulumi_mlops.local import localize
from pulumi_mlops.plans.retrain import (
    CONFIG_PATH,
    SCHEDULER_METRICS_PORT,
    SLOT_ENV,
    plan_retrain,
)
from pulumi_mlops.policy.pss import check_manifest
from pulumi_mlops.render import Recording, record, redact, unwrap_secrets
from pulumi_mlops.render.manifests import manifests
from pulumi_mlops.render.stack_plan import build_stack_plan, dump_stack_plan
from pulumi_mlops.runtime.retrain.config import RetrainConfig
from pulumi_mlops.targets.kubernetes.retrain import JOB_NAME_LABEL
from tests.recording import RUNTIME_IMAGE, external_egress, failing
from tests.unit.docker_init import init_files

COMPONENT = "mlops:index:RetrainSchedule"
CRON_JOB = "kubernetes:batch/v1:CronJob"
CONFIG_MAP = "kubernetes:core/v1:ConfigMap"
SECRET = "kubernetes:core/v1:Secret"
ACCOUNT = "kubernetes:core/v1:ServiceAccount"
NETPOL = "kubernetes:networking.k8s.io/v1:NetworkPolicy"
CONTAINER = "docker:index/container:Container"
NETWORK = "docker:index/network:Network"
K8S = mlops.KubernetesTarget(namespace="ml")
DOCKER = mlops.DockerTarget()
PASSWORD = "retrain-Pa55word-1234"
ENDPOINT = mlops.RegistryEndpoint(tracking_uri="http://mlflow.platform:5000", username="svc",
                                  password=PASSWORD)
WHERE = "RetrainSchedule 'fraud-nightly'"
NAME = "fraud-nightly-retrain"
GATES = mlops.Gates(min={"roc_auc": 0.9}, min_improvement={"roc_auc": 0.0})
BASE: dict[str, Any] = {
    "schedule": "0 3 * * *", "model_name": "fraud", "dataset": "sklearn:breast_cancer",
    "estimator": "sklearn.ensemble.GradientBoostingClassifier",
    "params": {"n_estimators": 200}, "gates": GATES, "promote_alias": "champion",
    "image": RUNTIME_IMAGE,
}


def schedule(target: mlops.Target = K8S, **kwargs: Any) -> Recording:
    args = {"registry": ENDPOINT, **BASE, **kwargs}
    return record(lambda: RetrainSchedule("fraud-nightly", target=target, **args))


def inputs(rec: Recording, type_: str, name: str = NAME) -> dict[str, Any]:
    return redact(dict(rec.get(type_, name).inputs))  # type: ignore[no-any-return]


def job_pod(rec: Recording) -> dict[str, Any]:
    return inputs(rec, CRON_JOB)["spec"]["jobTemplate"]["spec"]["template"]  # type: ignore


def env_of(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}


# --------------------------------------------------------------------------- Kubernetes


def test_kubernetes_declares_a_cron_job_and_its_objects_all_parented_to_the_schedule() -> None:
    rec = schedule()

    component = rec.get(COMPONENT, "fraud-nightly")
    owned = {(r.type, r.name) for r in rec.resources if r.parent == component.urn}
    assert owned == {(ACCOUNT, NAME), (SECRET, NAME), (CONFIG_MAP, f"{NAME}-files"),
                     (CRON_JOB, NAME), (NETPOL, NAME)}
    assert inputs(rec, ACCOUNT)["automountServiceAccountToken"] is False


def test_the_cron_job_never_overlaps_and_bounds_every_run() -> None:
    spec = inputs(schedule(timeout=1800, retries=2, starting_deadline=300, suspend=True,
                           successful_jobs_history=5, failed_jobs_history=2),
                  CRON_JOB)["spec"]

    assert spec["schedule"] == "0 3 * * *"
    assert spec["timeZone"] == "Etc/UTC"
    assert spec["concurrencyPolicy"] == "Forbid"
    assert spec["startingDeadlineSeconds"] == 300
    assert spec["suspend"] is True
    assert (spec["successfulJobsHistoryLimit"], spec["failedJobsHistoryLimit"]) == (5, 2)
    job = spec["jobTemplate"]["spec"]
    assert job["backoffLimit"] == 2
    assert job["activeDeadlineSeconds"] == 1800
    assert job["ttlSecondsAfterFinished"] > 0
    assert job["template"]["spec"]["restartPolicy"] == "Never"


def test_the_defaults_are_one_retry_an_hour_and_ten_minutes_of_grace() -> None:
    spec = inputs(schedule(), CRON_JOB)["spec"]

    assert spec["suspend"] is False
    assert spec["startingDeadlineSeconds"] == 600
    assert spec["jobTemplate"]["spec"]["backoffLimit"] == 1
    assert spec["jobTemplate"]["spec"]["activeDeadlineSeconds"] == 3600


def test_the_job_runs_mlops_retrain_on_the_mounted_config_without_probes() -> None:
    pod = job_pod(schedule())
    [container] = pod["spec"]["containers"]

    assert container["command"] == ["mlops", "retrain", "--config", CONFIG_PATH]
    assert container["image"] == RUNTIME_IMAGE
    for absent in ("ports", "startupProbe", "readinessProbe", "livenessProbe"):
        assert absent not in container
    assert {"name": "config-0", "mountPath": "/etc/mlops", "readOnly": True} in container[
        "volumeMounts"]
    assert container["resources"] == {"requests": {"cpu": "500m", "memory": "1Gi"},
                                      "limits": {"cpu": "2", "memory": "2Gi"}}
    env = env_of(container)
    assert env["HOME"] == "/tmp"
    assert env["MLOPS_IMAGE_DIGEST"] == container["image"]


def test_the_jobs_key_is_its_job_name_from_the_pod_label_by_the_downward_api() -> None:
    [container] = job_pod(schedule())["spec"]["containers"]

    # Every pod of one Job (a retry too) carries the Job's name in this label; a CronJob names
    # each Job after its scheduled time, `kubectl create job --from=cronjob/...` as told.
    assert env_of(container)[SLOT_ENV] == {
        "fieldRef": {"fieldPath": "metadata.labels['batch.kubernetes.io/job-name']"}}
    assert JOB_NAME_LABEL == "batch.kubernetes.io/job-name"
    assert SLOT_ENV == "MLOPS_SCHEDULE_SLOT"
    assert [e["name"] for e in container["env"]].count(SLOT_ENV) == 1


def test_the_plan_gives_no_key_so_a_run_by_hand_always_runs() -> None:
    args = mlops.RetrainScheduleArgs(registry=ENDPOINT, target=DOCKER, **BASE)
    plan = plan_retrain("fraud-nightly", args, tracking_uri="http://r:5000")

    # The platform adds the key to each run: the scheduler its slot, Kubernetes the Job's name.
    assert SLOT_ENV not in plan.job.env
    assert SLOT_ENV not in plan.scheduler.env


def test_docker_keys_each_run_by_the_schedulers_slot_not_the_container() -> None:
    envs = unwrap_secrets(schedule(DOCKER).get(CONTAINER, NAME).inputs["envs"])

    # `docker exec ... mlops retrain` inherits the container's environment: no key there, so
    # it runs; the scheduler gives every attempt of a slot `MLOPS_SCHEDULE_SLOT` itself.
    assert not [e for e in envs if e.startswith(f"{SLOT_ENV}=")]


def test_the_config_map_holds_a_valid_config_equal_to_the_inputs() -> None:
    data = inputs(schedule(), CONFIG_MAP, f"{NAME}-files")["data"]

    config = RetrainConfig.model_validate(json.loads(data["retrain.json"]))
    assert config == RetrainConfig(
        model_name="fraud", dataset="sklearn:breast_cancer",
        estimator="sklearn.ensemble.GradientBoostingClassifier",
        params={"n_estimators": 200}, gates=GATES, promote_alias="champion",
        schedule="0 3 * * *")


def test_registry_credentials_reach_the_job_only_by_secret_reference() -> None:
    rec = schedule()

    env = env_of(job_pod(rec)["spec"]["containers"][0])
    assert env["MLFLOW_TRACKING_URI"] == "http://mlflow.platform:5000"
    assert env["MLFLOW_TRACKING_USERNAME"] == "svc"
    assert env["MLFLOW_TRACKING_PASSWORD"] == {"secretKeyRef": {"name": NAME,
                                                                "key": "tracking-password"}}
    assert unwrap_secrets(rec.get(SECRET, NAME).inputs["stringData"]) == {
        "tracking-password": PASSWORD}
    for resource in rec.resources:
        assert PASSWORD not in json.dumps(redact(dict(resource.inputs)))


def test_a_registry_component_gives_its_uri_and_admin_credentials() -> None:
    def program() -> None:
        registry = mlops.ModelRegistry("reg", target=K8S)
        RetrainSchedule("fraud-nightly", registry=registry, target=K8S, **BASE)

    rec = record(program)

    env = env_of(job_pod(rec)["spec"]["containers"][0])
    assert env["MLFLOW_TRACKING_URI"] == "http://reg-mlflow.ml.svc.cluster.local:5000"
    assert env["MLFLOW_TRACKING_PASSWORD"]["secretKeyRef"]["name"] == NAME
    egress = inputs(rec, NETPOL)["spec"]["egress"]
    assert egress[1]["to"][0]["podSelector"]["matchLabels"]["app.kubernetes.io/instance"] == (
        "reg")


def test_the_network_policy_admits_nobody_and_reaches_dns_and_the_registry() -> None:
    spec = inputs(schedule(), NETPOL)["spec"]

    assert spec["policyTypes"] == ["Ingress", "Egress"]
    assert spec["ingress"] == []
    assert spec["podSelector"]["matchLabels"] == {"app.kubernetes.io/name": "retrain",
                                                  "app.kubernetes.io/instance": "fraud-nightly"}
    assert [p["port"] for p in spec["egress"][0]["ports"]] == [53, 53]
    assert spec["egress"][1] == external_egress(5000)
    assert len(spec["egress"]) == 2


def test_a_url_dataset_opens_its_port() -> None:
    spec = inputs(schedule(dataset="https://data.example.com/fraud.csv",
                           target_column="label"), NETPOL)["spec"]

    assert spec["egress"][2] == external_egress(443)
    # Narrowed to where the dataset is, when declared.
    narrowed = inputs(schedule(dataset="https://data.example.com/fraud.csv",
                               target_column="label", dataset_cidrs=["203.0.113.0/24"]),
                      NETPOL)["spec"]
    assert narrowed["egress"][2] == external_egress(443, cidrs=("203.0.113.0/24",))


def test_every_object_is_schema_valid_and_the_pod_restricted() -> None:
    objects = manifests(schedule())

    assert {m["kind"] for m in objects} == {"ServiceAccount", "Secret", "ConfigMap", "CronJob",
                                            "NetworkPolicy"}
    for manifest in objects:
        kubernetes_validate.validate(manifest, "1.33.0", strict=True)
        assert check_manifest(manifest) == []


# --------------------------------------------------------------------------- Docker


def test_docker_runs_a_hardened_scheduler_with_the_same_job_and_a_healthcheck() -> None:
    def program() -> None:
        registry = mlops.ModelRegistry("reg", target=DOCKER)
        RetrainSchedule("fraud-nightly", registry=registry, target=DOCKER, **BASE)

    rec = record(program)

    container = inputs(rec, CONTAINER)
    assert container["user"] == "10001:10001"
    assert container["readOnly"] is True
    assert container["capabilities"] == {"drops": ["ALL"]}
    assert container["securityOpts"] == ["no-new-privileges:true"]
    assert container["ports"] == []
    assert container["networksAdvanced"][0]["name"] == "reg-net"
    command = container["entrypoints"]
    assert command[:4] == ["mlops", "schedule", "--cron", "0 3 * * *"]
    assert command[command.index("--") + 1:] == ["mlops", "retrain", "--config", CONFIG_PATH]
    assert command[command.index("--timeout") + 1] == "3600"
    assert command[command.index("--retries") + 1] == "1"
    assert "--suspend" not in command
    assert container["healthcheck"]["tests"][:4] == ["CMD", "mlops", "schedule", "--check"]
    assert "/tmp" in container["tmpfs"]
    # The config file is written by the init container, from the same plan.
    content = init_files(rec.get(CONTAINER, f"{NAME}-init").inputs)[CONFIG_PATH]
    assert RetrainConfig.model_validate_json(content).model_name == "fraud"
    envs = unwrap_secrets(rec.get(CONTAINER, NAME).inputs["envs"])
    assert "MLFLOW_TRACKING_URI=http://reg-mlflow:5000" in envs
    # The scheduler starts once its own registry user is reconciled, which starts after the
    # registry's container; it authenticates as that user, never as the admin.
    grant = rec.get(CONTAINER, f"reg-grant-{NAME}")
    assert grant.urn in rec.get(CONTAINER, NAME).dependencies
    assert rec.get(CONTAINER, "reg-mlflow").urn in grant.dependencies
    assert f"MLFLOW_TRACKING_USERNAME={NAME}" in envs


def test_docker_scheduler_and_its_init_container_are_bounded() -> None:
    rec = schedule(DOCKER)

    container = inputs(rec, CONTAINER)
    assert container["ulimits"] == [{"name": "nproc", "soft": 4096, "hard": 4096}]
    assert (container["memory"], container["cpus"]) == (2048, "2.0")
    init = inputs(rec, CONTAINER, f"{NAME}-init")
    assert (init["memory"], init["cpus"]) == (64, "0.25")
    assert init["ulimits"] == [{"name": "nproc", "soft": 32, "hard": 32}]


def test_docker_with_a_registry_endpoint_gets_its_own_network_and_can_be_suspended() -> None:
    rec = schedule(DOCKER, suspend=True)

    component = rec.get(COMPONENT, "fraud-nightly")
    assert (NETWORK, f"{NAME}-net") in {(r.type, r.name) for r in rec.resources
                                        if r.parent == component.urn}
    assert "--suspend" in inputs(rec, CONTAINER)["entrypoints"]


def test_the_plan_gives_kubernetes_and_docker_the_same_job_command() -> None:
    args = mlops.RetrainScheduleArgs(registry=ENDPOINT, target=DOCKER, **BASE)
    plan = plan_retrain("fraud-nightly", args, tracking_uri="http://r:5000")

    assert plan.scheduler.command[-len(plan.job.command):] == plan.job.command
    assert plan.scheduler.files == plan.job.files
    assert plan.scheduler.env == plan.job.env


def test_the_docker_scheduler_serves_metrics_on_its_network_only() -> None:
    args = mlops.RetrainScheduleArgs(registry=ENDPOINT, target=DOCKER, **BASE)
    plan = plan_retrain("fraud-nightly", args, tracking_uri="http://r:5000")

    assert plan.scrape == ScrapeTarget(port=SCHEDULER_METRICS_PORT, path="/metrics")
    assert plan.scheduler.port == plan.scrape.port
    assert plan.job.port is None  # a CronJob's run serves nothing
    # The options the plan renders are the scheduler's own: in the container on every
    # address, run here (by the local runner) on loopback.
    command = plan.scheduler.command
    assert command[command.index("--host") + 1] == "0.0.0.0"
    local = localize(plan.scheduler, {}, Path("/nonexistent")).argv
    options = _parser().parse_args(local[1:local.index("--")])
    assert (options.host, options.metrics_port) == ("127.0.0.1", SCHEDULER_METRICS_PORT)
    # Prometheus reaches it on the Docker network; the host never sees the port.
    container = inputs(schedule(DOCKER), CONTAINER)
    assert container["ports"] == []
    assert container["entrypoints"][:len(command)] == list(command)


def test_outputs_are_the_config_and_the_schedule() -> None:
    built: list[RetrainSchedule] = []

    def program() -> None:
        built.append(RetrainSchedule("fraud-nightly", registry=ENDPOINT, target=K8S, **BASE))
        pulumi.export("config", built[0].config)
        pulumi.export("schedule", built[0].schedule)

    rec = record(program)

    assert rec.outputs["schedule"] == "0 3 * * *"
    assert json.loads(rec.outputs["config"])["model_name"] == "fraud"
    assert built[0].scheduler is built[0].children.cron_job


# --------------------------------------------------------------------------- validation


@pytest.mark.parametrize(("kwargs", "path"), [
    ({"schedule": "every night"}, "schedule"),
    ({"schedule": "0 3 * *"}, "schedule"),
    ({"schedule": "0 0 3 * * *"}, "schedule"),
    ({"schedule": "61 3 * * *"}, "schedule"),
    ({"trainer": "fraud.train:fit"}, "estimator"),
    ({"estimator": None}, "estimator"),
    ({"dataset": "sklearn:imagenet"}, "dataset"),
    ({"dataset": "s3://bucket/data.txt"}, "dataset"),
    ({"dataset": "https://data.example.com/x.csv"}, "target_column"),
    ({"estimator": "GradientBoostingClassifier"}, "estimator"),
    ({"model_name": "-fraud"}, "model_name"),
    ({"promote_alias": "challenger"}, "promote_alias"),
    ({"gates": {"min": {"ROC AUC": 0.9}}}, "gates.min.ROC AUC"),
    ({"task": "ranking"}, "task"),
    ({"timeout": 10}, "timeout"),
    ({"retries": -1}, "retries"),
    ({"registry": "http://mlflow:5000"}, "registry"),
    ({"image": "ghcr.io/pulumi-mlops/mlops-runtime:latest"}, "image"),
    ({"schedul": "0 3 * * *"}, "schedul"),
    ({"estimator": "subprocess.Popen", "params": {"args": ["id"]}}, "estimator"),
    ({"estimator": "sklearn.base.clone"}, "estimator"),
    ({"estimator": None, "trainer": "os:system"}, "trainer"),
    ({"estimator": None, "trainer": "subprocess:run"}, "trainer"),
    ({"dataset": "https://alice:s3cr3t@data.example.com/x.csv", "target_column": "y"},
     "dataset"),
    ({"dataset": "https://data.example.com/x.csv?token=s3cr3t", "target_column": "y"},
     "dataset"),
    ({"dataset_headers": {"Authorization": "Bearer s3cr3t"}}, "dataset_headers"),
    ({"dataset": "https://data.example.com/x.csv", "target_column": "y",
      "dataset_headers": {"Bad Header": "s3cr3t"}}, "dataset_headers"),
    ({"dataset_max_bytes": 0}, "dataset_max_bytes"),
    ({"dataset_max_ratio": 0.5}, "dataset_max_ratio"),
    ({"dataset_timeout": 0}, "dataset_timeout"),
    ({"image": None}, "image"),
])
def test_bad_input_is_rejected_naming_the_input_and_nothing_declared(
    kwargs: dict[str, Any], path: str
) -> None:
    args = {k: v for k, v in {"registry": ENDPOINT, **BASE, **kwargs}.items() if v is not None}

    err, rec = failing(lambda: RetrainSchedule("fraud-nightly", target=K8S, **args))

    assert err.where == WHERE
    paths = {p.path for p in err.problems}
    assert path in paths or any(p.startswith(path.split(".")[0]) for p in paths), str(err)
    assert f"`{path.split('.')[0]}" in str(err) and "Fix:" in str(err)
    assert "s3cr3t" not in str(err)
    assert rec.resources == []


def test_code_in_the_config_is_refused_before_it_is_imported() -> None:
    import sys

    sys.modules.pop("antigravity", None)
    err, _ = failing(lambda: RetrainSchedule("fraud-nightly", registry=ENDPOINT, target=K8S,
                                             **{**BASE, "estimator": "antigravity.Fly"}))

    assert "must not name the standard library's module 'antigravity'" in str(err)
    assert "antigravity" not in sys.modules


# --------------------------------------------------------------------------- pickle and secrets


@pytest.mark.parametrize("target", [K8S, DOCKER])
def test_the_job_loads_no_pickle_from_the_registry_unless_opted_in(
        target: mlops.Target) -> None:
    def env(**kwargs: Any) -> dict[str, Any]:
        rec = schedule(target, **kwargs)
        if target is K8S:
            return env_of(job_pod(rec)["spec"]["containers"][0])
        envs = unwrap_secrets(rec.get(CONTAINER, NAME).inputs["envs"])
        return dict(e.split("=", 1) for e in envs)

    assert env()["MLFLOW_ALLOW_PICKLE_DESERIALIZATION"] == "false"
    assert env(allow_pickle=True)["MLFLOW_ALLOW_PICKLE_DESERIALIZATION"] == "true"


TOKEN = "Bearer dataset-t0ken-4f9b2c7e"


def test_dataset_headers_reach_the_job_only_by_secret_reference() -> None:
    rec = schedule(dataset="https://data.example.com/fraud.csv", target_column="label",
                   dataset_headers={"Authorization": pulumi.Output.secret(TOKEN),
                                    "X-Team": "fraud"})

    env = env_of(job_pod(rec)["spec"]["containers"][0])
    assert env["MLOPS_DATASET_HEADERS"] == {"secretKeyRef": {"name": NAME,
                                                             "key": "dataset-headers"}}
    secret = unwrap_secrets(rec.get(SECRET, NAME).inputs["stringData"])
    assert json.loads(secret["dataset-headers"]) == {"Authorization": TOKEN, "X-Team": "fraud"}
    config = json.loads(inputs(rec, CONFIG_MAP, f"{NAME}-files")["data"]["retrain.json"])
    assert config["dataset_headers_env"] == "MLOPS_DATASET_HEADERS"
    # Nothing `mlops plan` writes (resources.json) holds the token: only the Secret has it.
    plan = dump_stack_plan(build_stack_plan(rec))
    assert TOKEN not in plan and "dataset-t0ken" not in plan
    assert "MLOPS_DATASET_HEADERS" in plan


def test_docker_gives_the_dataset_headers_as_a_secret_variable() -> None:
    rec = schedule(DOCKER, dataset="https://data.example.com/fraud.csv", target_column="label",
                   dataset_headers={"Authorization": TOKEN})

    envs = rec.get(CONTAINER, NAME).inputs["envs"]
    assert TOKEN not in json.dumps(redact(envs))
    assert f'MLOPS_DATASET_HEADERS={{"Authorization": "{TOKEN}"}}' in unwrap_secrets(envs)
    assert TOKEN not in dump_stack_plan(build_stack_plan(rec))


def test_both_estimator_and_trainer_says_only_one() -> None:
    err, _ = failing(lambda: RetrainSchedule("fraud-nightly", registry=ENDPOINT, target=K8S,
                                             **{**BASE, "trainer": "fraud.train:fit"}))

    assert "Only one of `estimator` or `trainer` can be provided" in str(err)


def test_a_registry_on_another_kind_of_target_is_rejected() -> None:
    def build() -> None:
        registry = mlops.ModelRegistry("reg", target=DOCKER)
        RetrainSchedule("fraud-nightly", registry=registry, target=K8S, **BASE)

    err, _ = failing(build)

    assert "registry" in {p.path for p in err.problems}


def test_run_on_create_adds_a_job_beside_the_cron_job_on_kubernetes() -> None:
    rec = schedule(run_on_create=True)

    job = inputs(rec, "kubernetes:batch/v1:Job", f"{NAME}-initial")
    cron = inputs(rec, CRON_JOB)["spec"]["jobTemplate"]["spec"]
    # The same pod as every scheduled run; kept (no TTL), so `pulumi up` never runs it again.
    assert job["spec"]["template"] == cron["template"]
    assert "ttlSecondsAfterFinished" not in job["spec"]
    assert job["spec"]["backoffLimit"] == cron["backoffLimit"]
    assert job["metadata"]["annotations"]["pulumi.com/skipAwait"] == "true"
    assert not schedule().of_type("kubernetes:batch/v1:Job")  # off by default


def test_run_on_create_makes_the_docker_scheduler_run_at_start() -> None:
    entrypoints = inputs(schedule(DOCKER, run_on_create=True), CONTAINER)["entrypoints"]
    suspended = inputs(schedule(DOCKER, run_on_create=True, suspend=True), CONTAINER)

    assert "--run-at-start" in entrypoints[:entrypoints.index("--")]
    assert "--run-at-start" not in suspended["entrypoints"]
    assert not schedule(K8S, run_on_create=True, suspend=True).of_type(
        "kubernetes:batch/v1:Job")
