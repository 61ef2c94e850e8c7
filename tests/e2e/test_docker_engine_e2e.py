"""The dev stack on a real Docker engine: every container the Docker target declares, run.

What runs: the dev stack's program (`stacks/`, stack ``dev``) recorded under Pulumi's mocks,
applied by `tests.docker_engine.apply` to a private ``dockerd`` (the provider's semantics, see
that module), with the runtime image built from the repository's Dockerfile by the recorded
``docker.Image`` resource and the base and MLflow images stood in by local builds
(`tests.docker_engine.images`). No step is manual: the registry's init container, the registry,
the retrain scheduler (which runs the job once at start) and the model service come up as a
fresh ``pulumi up`` would bring them, and the service ends up answering predictions.

Every container is checked as declared: its user, a read-only root filesystem (so nothing in it
needs to write outside its volumes and tmpfs), capabilities, the health check's verdict.
"""

from __future__ import annotations

import base64
import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from unittest import mock

import mlflow
import pandas as pd
import pytest
from sklearn.datasets import load_breast_cancer

from pulumi_mlops.render import Recording, record_program, unwrap_secrets
from tests.docker_engine import images
from tests.docker_engine.apply import REMOTE_IMAGE, DockerStack
from tests.docker_engine.daemon import Daemon, running_daemon
from tests.recording import secret_values

pytestmark = [pytest.mark.timeout(1500), pytest.mark.docker_engine]

REPO = Path(__file__).resolve().parents[2]
REGISTRY_URL = "http://127.0.0.1:5000"
SERVICE_URL = "http://127.0.0.1:8080"
PROMETHEUS_URL = "http://127.0.0.1:9090"
RETRAIN = "cancer-nightly-retrain"
MLFLOW_CLIENT_VARS = ("MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_USERNAME",
                      "MLFLOW_TRACKING_PASSWORD")
TIMINGS: dict[str, float] = {}
LOGGED: list[str] = []


def _log(line: str) -> None:
    LOGGED.append(line)
    print(f"[docker-e2e] {line}", flush=True)


def _record(**overrides: Any) -> Recording:
    # Unresolved aliases, as on a laptop without registry credentials: the service resolves
    # `champion` when it starts, and waits for it.
    with mock.patch.dict(os.environ):
        for var in MLFLOW_CLIENT_VARS:
            os.environ.pop(var, None)
        return record_program(REPO, "dev", preview=False, config_overrides=overrides)


def _port_free(url: str) -> bool:
    parts = urllib.parse.urlsplit(url)
    with socket.socket() as probe:
        return probe.connect_ex((parts.hostname, parts.port)) != 0


@pytest.fixture(scope="module")
def daemon() -> Iterator[Daemon]:
    """A private dockerd with an empty stack on it; its image cache survives between runs."""
    TIMINGS["start"] = time.monotonic()
    with running_daemon() as running:
        client = running.client()
        # The data root is this test's own: whatever an interrupted run left goes.
        for container in client.containers.list(all=True):
            container.remove(force=True)
        for volume in client.volumes.list():
            volume.remove(force=True)
        client.networks.prune()
        _log(f"dockerd pid {running.pid}, storage {running.storage_driver}")
        yield running


@pytest.fixture(scope="module")
def recording() -> Recording:
    """The dev stack as `pulumi up` would declare it."""
    return _record()


@pytest.fixture(scope="module")
def stand_in_images(daemon: Daemon, recording: Recording) -> None:
    """The base and MLflow images no registry can provide here, built (or reused)."""
    started = time.monotonic()
    base = images.dockerfile_base(REPO / "Dockerfile")
    built = images.ensure_python_base(daemon, base)
    TIMINGS["base image"] = time.monotonic() - started
    _log(f"{base}: {'built' if built else 'cached'} in {TIMINGS['base image']:.1f}s")
    pulled = {r.inputs["name"] for r in recording.of_type(REMOTE_IMAGE)}
    for name in sorted(pulled):
        kind = "mlflow image" if "mlflow" in name else "prometheus image"
        ensure = (images.ensure_mlflow_image if "mlflow" in name
                  else images.ensure_prometheus_image)
        started = time.monotonic()
        built = ensure(daemon, name, base)
        TIMINGS[kind] = time.monotonic() - started
        _log(f"{name}: {'built' if built else 'cached'} in {TIMINGS[kind]:.1f}s")


@pytest.fixture(scope="module")
def stack(daemon: Daemon, recording: Recording, stand_in_images: None) -> Iterator[DockerStack]:
    """The dev stack applied: `pulumi up` on a fresh engine."""
    for url in (REGISTRY_URL, SERVICE_URL, PROMETHEUS_URL):
        assert _port_free(url), f"{url} is in use: the dev stack publishes its ports there"
    applied = DockerStack(daemon.client(), REPO / "stacks", log=_log)
    try:
        started = time.monotonic()
        applied.apply(recording, refresh=True)
        TIMINGS["first apply"] = time.monotonic() - started
        TIMINGS["runtime image build"] = applied.durations["runtime-image"]
        _log(f"first apply: {TIMINGS['first apply']:.1f}s")
        yield applied
    finally:
        TIMINGS["module wall time"] = time.monotonic() - TIMINGS.pop("start")
        for name, seconds in TIMINGS.items():
            _log(f"timing {name}: {seconds:.1f}s")
        report = REPO / "out" / "docker-e2e-timings.json"
        report.parent.mkdir(exist_ok=True)
        report.write_text(json.dumps({"storage_driver": daemon.storage_driver,
                                      "seconds": TIMINGS}, indent=2) + "\n")
        applied.destroy()


def _admin(recording: Recording) -> tuple[str, str]:
    outputs = unwrap_secrets(recording.outputs)
    return outputs["registry_admin_username"], outputs["registry_admin_password"]


def _http(url: str, *, auth: tuple[str, str] | None = None, body: Any = None,
          timeout: float = 10) -> tuple[int, bytes]:
    request = urllib.request.Request(url, data=None if body is None else json.dumps(body).encode(),
                                     method="GET" if body is None else "POST")
    if body is not None:
        request.add_header("Content-Type", "application/json")
    if auth is not None:
        token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


def _champion(auth: tuple[str, str]) -> dict[str, Any] | None:
    status, body = _http(f"{REGISTRY_URL}/api/2.0/mlflow/registered-models/alias"
                         "?name=cancer&alias=champion", auth=auth)
    return json.loads(body)["model_version"] if status == 200 else None


def _wait_for(what: str, check: Any, timeout: float, stack: DockerStack,
              containers: tuple[str, ...]) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(2)
    logs = "\n".join(f"--- {name}\n" + stack.container(name).logs(tail=60).decode(errors="replace")
                     for name in containers)
    raise AssertionError(f"{what} within {timeout:.0f}s; container logs:\n{logs}")


def _healthy(stack: DockerStack, name: str) -> bool:
    container = stack.container(name)
    container.reload()
    return bool(container.attrs["State"].get("Health", {}).get("Status") == "healthy")


def _served(stack: DockerStack, auth: tuple[str, str]) -> dict[str, Any]:
    """Wait until the service is healthy and return the champion it resolved."""
    _wait_for("the model service is not healthy",
              lambda: _healthy(stack, "cancer"), 420, stack, ("cancer", RETRAIN))
    champion = _champion(auth)
    assert champion is not None
    return champion


def _features() -> pd.DataFrame:
    return load_breast_cancer(as_frame=True).frame.drop(columns=["target"]).head(25)


def _predict(frame: pd.DataFrame) -> list[Any]:
    status, body = _http(f"{SERVICE_URL}/invocations",
                         body={"dataframe_split": frame.to_dict(orient="split")}, timeout=30)
    assert status == 200, body[:500]
    return list(json.loads(body)["predictions"])


PYFUNC_PREDICT = """
import json, sys
import mlflow.pyfunc, pandas as pd
frame = pd.read_json(sys.stdin, orient="split")
print(json.dumps([int(p) for p in mlflow.pyfunc.load_model(sys.argv[1]).predict(frame)]))
"""


def _pyfunc_predictions(model_uri: str, frame: pd.DataFrame,
                        auth: tuple[str, str]) -> list[int]:
    """MLflow's own predictions for the model, from the registry through its published port.

    In a fresh process: a tracking URI another test set in this one (``mlflow.set_tracking_uri``
    wins over the environment) must not decide which registry is asked.
    """
    env = {**os.environ, **dict(zip(MLFLOW_CLIENT_VARS, (REGISTRY_URL, *auth), strict=True))}
    run = subprocess.run([sys.executable, "-c", PYFUNC_PREDICT, model_uri],
                         input=frame.to_json(orient="split"), capture_output=True, text=True,
                         env=env, timeout=300, check=False)
    assert run.returncode == 0, run.stderr[-3000:]
    return list(json.loads(run.stdout.strip().splitlines()[-1]))


def test_fresh_dev_stack_serves_a_promoted_model_with_no_manual_step(
        stack: DockerStack, recording: Recording) -> None:
    auth = _admin(recording)
    # The registry's init container ran to completion, then the registry became healthy by its
    # own Docker health check (`wait: true` returned).
    assert stack.applied("registry-mlflow-init").exit_code == 0
    assert _healthy(stack, "registry-mlflow")
    assert _http(f"{REGISTRY_URL}/health")[0] == 200
    assert _http(f"{REGISTRY_URL}/api/2.0/mlflow/registered-models/search")[0] == 401
    assert _http(f"{REGISTRY_URL}/api/2.0/mlflow/registered-models/search", auth=auth)[0] == 200
    assert stack.applied("cancer-nightly-retrain-init").exit_code == 0

    started = time.monotonic()
    champion = _wait_for("the scheduler's run at start promoted no `champion`",
                         lambda: _champion(auth), 420, stack, (RETRAIN,))
    TIMINGS["run at start to champion"] = time.monotonic() - started
    assert champion["version"] == "1"
    started = time.monotonic()
    _served(stack, auth)
    TIMINGS["champion to healthy service"] = time.monotonic() - started

    frame = _features()
    predictions = _predict(frame)
    assert predictions == _pyfunc_predictions("models:/cancer/1", frame, auth)
    status, body = _http(f"{SERVICE_URL}/version")
    assert status == 200 and body.decode().strip() == mlflow.__version__


# What the engine itself puts into every container's root at creation.
def test_applying_the_same_program_again_changes_nothing(stack: DockerStack,
                                                        recording: Recording) -> None:
    # What `make up` run twice does: the provider's diff finds nothing, so nothing is replaced
    # (a value the provider reads back in another spelling would replace containers each time).
    before = len(stack.events)
    stack.apply(_record(), refresh=True)
    assert stack.events[before:] == []


ENGINE_PATHS = frozenset({"/etc/hosts", "/etc/hostname", "/etc/resolv.conf", "/dev", "/proc",
                          "/sys", "/usr/sbin/docker-init"})


def _written(container: Any) -> list[str]:
    """Paths changed in the container's root filesystem other than mount points (and their
    parents) and the files the engine creates."""
    mounts = {m["Destination"] for m in container.attrs["Mounts"]}
    mounts |= set(container.attrs["HostConfig"].get("Tmpfs") or {})
    allowed = set(ENGINE_PATHS)
    for path in mounts | ENGINE_PATHS:
        parts = Path(path).parts
        allowed |= {str(Path(*parts[:i])) for i in range(2, len(parts) + 1)}
    return sorted(change["Path"] for change in container.diff() or []
                  if change["Path"] not in allowed)


def test_every_container_runs_as_declared(stack: DockerStack, recording: Recording) -> None:
    checked = 0
    for resource in recording.of_type("docker:index/container:Container"):
        declared = resource.inputs
        container = stack.container(resource.name)
        container.reload()
        host, config = container.attrs["HostConfig"], container.attrs["Config"]
        assert host["ReadonlyRootfs"] is True, resource.name
        assert config["User"] == declared["user"], resource.name
        assert sorted(host["CapDrop"] or []) == ["ALL"], resource.name
        assert host["SecurityOpt"] == ["no-new-privileges:true"], resource.name
        assert host["Ulimits"] and host["Ulimits"][0]["Name"] == "nproc", resource.name
        assert host["Memory"] > 0 and host["NanoCpus"] > 0, resource.name
        if declared.get("attach") and resource.name.endswith("-init"):
            # An init container: root only to chown what the service will own, one capability,
            # no network; it has exited.
            assert declared["user"] == "0:0"
            assert host["CapAdd"] == ["CHOWN"] and host["NetworkMode"] == "none"
            assert container.attrs["State"]["Status"] == "exited"
        elif declared.get("attach"):
            # A client's registry user, reconciled once as its grant declares: exited 0, as
            # the declared user, having written nothing outside its tmpfs.
            assert declared["user"] == "10001:10001", resource.name
            assert container.attrs["State"]["Status"] == "exited", resource.name
            assert container.attrs["State"]["ExitCode"] == 0, container.logs()[-2000:]
            assert _written(container) == [], resource.name
        else:
            assert declared["user"] == "10001:10001"
            assert container.attrs["State"]["Running"], resource.name
            uid = container.exec_run(["id", "-u"])
            assert uid.output.decode().strip() == "10001", resource.name
            # Nothing was written outside the volumes and tmpfs mounts.
            assert _written(container) == [], resource.name
        checked += 1
    _log(f"containers started and checked: {checked}")
    assert checked == 12


def _prometheus(promql: str) -> list[dict[str, Any]]:
    status, body = _http(f"{PROMETHEUS_URL}/api/v1/query?"
                         + urllib.parse.urlencode({"query": promql}))
    assert status == 200, body[:300]
    return list(json.loads(body)["data"]["result"])


def test_prometheus_scrapes_the_service_and_evaluates_every_rule(
        stack: DockerStack, recording: Recording) -> None:
    auth = _admin(recording)
    _served(stack, auth)
    assert _healthy(stack, "monitoring-prometheus")
    _wait_for("Prometheus does not scrape the service",
              lambda: _prometheus('up{service="cancer",track="stable"} == 1'), 120, stack,
              ("monitoring-prometheus",))
    for _ in range(4):
        _predict(_features())
    # The server's per-bin counters reach the drift rules, summed over its replicas.
    _wait_for("no drift rows recorded",
              lambda: _prometheus('mlops:drift_rows:increase{service="cancer"} > 0'), 120,
              stack, ("monitoring-prometheus",))
    # The registry's own metrics (MLflow's --expose-prometheus) and the retrain scheduler's,
    # whose run at start succeeded; the service reports its model loaded.
    for promql in ('up{registry="registry"} == 1', 'mlflow_http_request_total{status="200"}',
                   f'up{{schedule="{RETRAIN}"}} == 1',
                   f'mlops_retrain_runs_total{{schedule="{RETRAIN}",outcome="succeeded"}} >= 1',
                   f'mlops_retrain_last_success_timestamp_seconds{{schedule="{RETRAIN}"}} > 0',
                   'mlops_model_loaded{service="cancer"} == 1'):
        _wait_for(f"no {promql}", lambda q=promql: _prometheus(q), 120, stack,
                  ("monitoring-prometheus",))
    status, body = _http(f"{PROMETHEUS_URL}/api/v1/rules")
    assert status == 200
    groups = json.loads(body)["data"]["groups"]
    assert {g["name"] for g in groups} == {"mlops-service-cancer", "mlops-registry-registry",
                                           f"mlops-retrain-{RETRAIN}"}
    rules = [r for g in groups for r in g["rules"]]
    assert rules and all(r["health"] == "ok" for r in rules), [
        (r["name"], r.get("lastError")) for r in rules if r["health"] != "ok"]
    # Nothing is wrong: no alert fires. (One may be pending for a moment: the service waited
    # for its model while Prometheus started.)
    status, body = _http(f"{PROMETHEUS_URL}/api/v1/alerts")
    assert status == 200
    alerts = json.loads(body)["data"]["alerts"]
    assert [a for a in alerts if a["state"] == "firing"] == [], alerts


def test_retrain_runs_on_demand_and_moves_champion(stack: DockerStack,
                                                   recording: Recording) -> None:
    auth = _admin(recording)
    _served(stack, auth)
    started = time.monotonic()
    result = stack.container(RETRAIN).exec_run(
        ["mlops", "retrain", "--config", "/etc/mlops/retrain.json"])
    TIMINGS["retrain on demand"] = time.monotonic() - started
    assert result.exit_code == 0, result.output.decode(errors="replace")[-3000:]
    champion = _champion(auth)
    assert champion is not None and int(champion["version"]) >= 2


KILL_SERVER = """
import os, signal
children = open("/proc/1/task/1/children").read().split()
os.kill(int(children[0]), signal.SIGKILL)
"""


def test_a_service_whose_process_dies_is_restarted(stack: DockerStack,
                                                   recording: Recording) -> None:
    # What `--exit-when-unhealthy-seconds` relies on: the process exiting is what makes Docker
    # restart the container (`restart: unless-stopped`), and the restarted server serves again.
    auth = _admin(recording)
    _served(stack, auth)
    container = stack.container("cancer")
    restarts = container.attrs["RestartCount"]
    # PID 1 is the declared init; its child is `mlops serve`.
    # Its exit status races with the container going down; the restart count tells.
    container.exec_run(["python", "-c", KILL_SERVER])

    def restarted() -> bool:
        container.reload()
        return bool(container.attrs["RestartCount"] > restarts)

    _wait_for("the container was not restarted", restarted, 60, stack, ("cancer",))
    _served(stack, auth)
    assert len(_predict(_features())) == 25


def _versions(auth: tuple[str, str]) -> set[str]:
    status, body = _http(f"{REGISTRY_URL}/api/2.0/mlflow/model-versions/search"
                         "?filter=name%3D%27cancer%27", auth=auth)
    assert status == 200, body[:300]
    return {v["version"] for v in json.loads(body).get("model_versions", [])}


def test_registry_data_survives_recreate_removed_containers_and_destroy(
        stack: DockerStack, recording: Recording) -> None:
    auth = _admin(recording)
    before = _versions(auth)
    assert "1" in before
    old_registry = stack.applied("registry-mlflow").real_id
    # A changed input that replaces the registry's container (cpus is not updatable).
    stack.apply(_record(**{"mlops:registry": {"database": "sqlite", "resources": {
        "cpuLimit": "750m", "memoryLimit": "1Gi"}}}), refresh=True)
    assert stack.applied("registry-mlflow").real_id != old_registry
    # The scheduler may register more at its start; what was there is still there.
    assert before <= _versions(auth)

    # Containers removed by hand; `make up` (pulumi up --refresh) creates them again.
    stack.remove_containers()
    stack.apply(recording, refresh=True)
    assert before <= _versions(auth)

    # `make down` then `make up`: the data volumes are retained, and found again.
    stack.destroy()
    assert {"registry-mlflow-data", "registry-mlflow-artifacts"} <= {
        v.name for v in stack.client.volumes.list()}
    stack.apply(recording, refresh=True)
    assert before <= _versions(auth)
    _served(stack, auth)
    assert len(_predict(_features())) == 25


def test_no_secret_reaches_a_log(stack: DockerStack, recording: Recording) -> None:
    # Neither what the harness logged nor what any container wrote to its log.
    secrets = secret_values(recording)
    assert secrets and LOGGED
    assert not [line for line in LOGGED if any(secret in line for secret in secrets)]
    for resource in recording.of_type("docker:index/container:Container"):
        logs = stack.container(resource.name).logs().decode(errors="replace")
        assert logs or resource.inputs.get("attach"), resource.name
        assert not [secret for secret in secrets if secret in logs], resource.name
