"""ModelService end to end: the serving command the component renders, run for real.

A real MLflow registry (run from ModelRegistry's rendered command) holds model `cancer`; the
service is declared under Pulumi's mock runtime on each target, and the workload of its plan is
started with `run_workload`, with the registry's in-network name mapped to the local registry
as the target's DNS would resolve it.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import mlflow
import numpy as np
import pandas as pd
import pytest
import requests
from mlflow.tracking import MlflowClient
from sklearn.datasets import load_breast_cancer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

import pulumi_mlops as mlops
from pulumi_mlops.components.registry import ModelRegistry
from pulumi_mlops.components.resolver import ModelResolver
from pulumi_mlops.components.service import ModelService
from pulumi_mlops.local import RunningWorkload, run_workload
from pulumi_mlops.plans.service import TrackPlan
from pulumi_mlops.render import Recording, build_stack_plan, diff_stack_plans, record
from pulumi_mlops.render.diff import Named
from pulumi_mlops.runtime.drift.profile import build_profile
from pulumi_mlops.runtime.drift.spec import PROFILE_ARTIFACT_PATH
from tests.e2e.ports import free_port
from tests.e2e.registry import Registry, registry_client
from tests.recording import RUNTIME_IMAGE

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

TARGETS = ("docker", "kubernetes")
MODEL = "cancer"
ALIAS = "champion"
DEPLOYMENT = "kubernetes:apps/v1:Deployment::cancer"
CONTAINER = "docker:index/container:Container::cancer"


def _features() -> pd.DataFrame:
    x, _ = load_breast_cancer(return_X_y=True, as_frame=True)
    return x


def _register(c: float) -> str:
    """Train on breast_cancer, log through the registry's artifact proxy (with an input example
    and the drift profile on the same run) and register a new version of `cancer`."""
    x, y = load_breast_cancer(return_X_y=True, as_frame=True)
    model = make_pipeline(StandardScaler(), LogisticRegression(C=c)).fit(x, y)
    with mlflow.start_run():
        # Requirements stated, not inferred (inference loads the model in a subprocess).
        info = mlflow.sklearn.log_model(
            model, name="model", input_example=x.head(3), registered_model_name=MODEL,
            pip_requirements=mlflow.sklearn.get_default_pip_requirements(include_skops=True))
        mlflow.log_dict(build_profile(x, predictions=model.predict(x)), PROFILE_ARTIFACT_PATH)
    return str(info.registered_model_version)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    """A registry with `cancer` version 1 under alias `champion`."""
    with registry_client(tmp_path_factory.mktemp("registry")) as registry:
        mlflow.set_experiment("service-e2e")
        assert _register(c=1.0) == "1"
        MlflowClient().set_registered_model_alias(MODEL, ALIAS, "1")
        yield registry


@pytest.fixture(scope="module")
def version_two(store: Registry) -> str:
    """A second, different model (stronger regularization) registered as the next version."""
    return _register(c=0.01)


@dataclass
class Rendered:
    """One render of the program: the recording and the service's stable track."""

    recording: Recording
    service: ModelService
    registry: ModelRegistry

    @property
    def track(self) -> TrackPlan:
        return self.service.plan.tracks[0]

    def hosts(self, store: Registry) -> dict[str, str]:
        """The registry's in-network ``host:port`` → the local registry, as DNS would map it."""
        return {urlsplit(self.registry.plan.tracking_uri).netloc: urlsplit(store.url).netloc}


def render(kind: str, store: Registry, *, port: int, resolver: ModelResolver,
           metrics_port: int | None = None) -> Rendered:
    """Declare a registry and the `cancer` service on one target under mocks (a preview),
    serving on ``port`` and its metrics on ``metrics_port`` (default: a free port)."""
    registry_port = urlsplit(store.url).port
    metrics_port = metrics_port or free_port()

    def program() -> None:
        target: mlops.Target = (mlops.DockerTarget() if kind == "docker"
                                else mlops.KubernetesTarget(namespace="ml"))
        registry = mlops.ModelRegistry("reg", target=target, port=registry_port)
        mlops.ModelService(MODEL, registry=registry, target=target, image=RUNTIME_IMAGE,
                           model_uri=f"models:/{MODEL}@{ALIAS}", port=port,
                           metrics_port=metrics_port, resolver=resolver)

    recording = record(program, preview=True)
    (service,) = [c for c in recording.components if isinstance(c, ModelService)]
    (registry,) = [c for c in recording.components if isinstance(c, ModelRegistry)]
    return Rendered(recording, service, registry)


@contextlib.contextmanager
def serving(rendered: Rendered, store: Registry, root: Path) -> Iterator[RunningWorkload]:
    """Start the serving command the component rendered, with its secret data."""
    # The service's own registry user, reconciled as its grant rendered it.
    hosts = rendered.hosts(store)
    users = store.reconcile(rendered.registry.grants.values(), root, hosts)
    workload = rendered.track.workload
    with run_workload(workload, store.client_secrets(workload, users), root, hosts=hosts,
                      timeout=120) as running:
        yield running


def resolver_for(store: Registry) -> ModelResolver:
    return mlops.registry_resolver(store.url, environ=store.env())


def predict(url: str, frame: pd.DataFrame) -> np.ndarray[Any, Any]:
    body = '{"dataframe_split": ' + frame.to_json(orient="split", index=False) + "}"
    response = requests.post(url + "/invocations", data=body, timeout=30,
                             headers={"Content-Type": "application/json"})
    assert response.status_code == 200, response.text
    return np.asarray(response.json()["predictions"]).ravel()


@contextlib.contextmanager
def champion_restored() -> Iterator[MlflowClient]:
    """Tests that move the alias put it back, so every test starts from version 1."""
    client = MlflowClient()
    before = client.get_model_version_by_alias(MODEL, ALIAS).version
    try:
        yield client
    finally:
        client.set_registered_model_alias(MODEL, ALIAS, before)


def served_model(url: str) -> dict[str, Any]:
    """What the server says it serves: its Open Inference Protocol model metadata's
    ``parameters`` (model name, version, alias, URI, run id)."""
    answer = requests.get(f"{url}/v2/models/{MODEL}", timeout=5)
    assert answer.status_code == 200, answer.text
    return dict(answer.json()["parameters"])


@pytest.mark.parametrize("kind", TARGETS)
def test_rendered_server_serves_the_pinned_version(kind: str, store: Registry,
                                                   tmp_path: Path) -> None:
    rendered = render(kind, store, port=free_port(), resolver=resolver_for(store))
    command = rendered.track.workload.command
    assert command[:4] == ("mlops", "serve", "--model-uri", f"models:/{MODEL}/1")
    # The in-network registry name, which only the hosts mapping makes reachable here.
    assert rendered.track.workload.env["MLFLOW_TRACKING_URI"] == rendered.registry.plan.tracking_uri
    assert "127.0.0.1" not in rendered.registry.plan.tracking_uri

    with serving(rendered, store, tmp_path) as server:
        version = served_model(server.url)
        assert (version["model_name"], version["model_version"], version["model_uri"]) == (
            MODEL, "1", f"models:/{MODEL}/1")
        # Pinned: the server never resolves the alias, but reports the one it was pinned from.
        assert version["model_alias"] == "champion"
        batch = _features().sample(60, random_state=7)
        expected = mlflow.pyfunc.load_model(f"models:/{MODEL}/1").predict(batch)
        np.testing.assert_array_equal(predict(server.url, batch), np.asarray(expected).ravel())
        # Metrics on their own port only; scoring never there.
        assert requests.get(server.url + "/metrics", timeout=5).status_code == 404
        assert requests.post(server.metrics_url + "/invocations", timeout=5,
                             json={"inputs": []}).status_code == 404
        metrics = requests.get(server.metrics_url + "/metrics", timeout=5).text
        assert (f'mlops_model_info{{model_alias="champion",model_name="{MODEL}",'
                f'model_uri="models:/{MODEL}/1",model_version="1"}} 1.0') in metrics


def _version_fields(rendered: Rendered) -> tuple[str, str, str]:
    track = rendered.track
    return (track.workload.command[3], track.labels["mlops.dev/model-version"],
            str(track.workload.env["MLOPS_MODEL_VERSION"]))


@pytest.mark.parametrize("kind", TARGETS)
def test_moving_the_alias_changes_only_the_pods(kind: str, store: Registry, version_two: str,
                                                tmp_path: Path) -> None:
    port, metrics_port = free_port(), free_port()
    before = render(kind, store, port=port, resolver=resolver_for(store),
                    metrics_port=metrics_port)
    assert _version_fields(before) == (f"models:/{MODEL}/1", "1", "1")
    with champion_restored() as client:
        v2 = version_two
        client.set_registered_model_alias(MODEL, ALIAS, v2)
        after = render(kind, store, port=port, resolver=resolver_for(store),
                       metrics_port=metrics_port)
        assert _version_fields(after) == (f"models:/{MODEL}/{v2}", v2, v2)

        diff = diff_stack_plans(build_stack_plan(before.recording),
                                build_stack_plan(after.recording))
        assert (diff.added, diff.removed) == ((), ())
        changed = {c.key: c for c in diff.changed}
        # What the service declares: its stable track moved from version 1 to 2.
        assert [(m.key, m.role, m.model, m.old, m.new) for m in diff.model_versions] == [
            (f"mlops:index:ModelService::{MODEL}", "stable", MODEL, "1", v2)]
        if kind == "kubernetes":
            # The Service, Secret, NetworkPolicy and the registry stay as they are; the
            # Deployment's selector too (it is immutable), so the change is a rolling update.
            assert set(changed) == {DEPLOYMENT}
            paths = {c.path for c in changed[DEPLOYMENT].fields}
            assert paths, "the Deployment must change"
            assert {p for p in paths if p[:2] != ("spec", "template")} == set()
            assert ("spec", "template", "metadata", "labels",
                    "mlops.dev/model-version") in paths
            assert ("spec", "template", "spec", "containers", Named("server"), "env",
                    Named("MLOPS_MODEL_VERSION"), "value") in paths
        else:
            # The network and the registry's container and volumes stay as they are.
            assert set(changed) == {CONTAINER}
            # Docker takes the environment as one list holding the password too, a secret
            # the plan redacts: the version shows in the command and the labels.
            assert {c.path[0] for c in changed[CONTAINER].fields} == {"entrypoints", "labels"}

        with serving(after, store, tmp_path) as server:
            version = served_model(server.url)
            assert (version["model_version"], version["run_id"]) == (
                v2, client.get_model_version(MODEL, v2).run_id)
            batch = _features().head(40)
            expected = mlflow.pyfunc.load_model(f"models:/{MODEL}/{v2}").predict(batch)
            np.testing.assert_array_equal(predict(server.url, batch),
                                          np.asarray(expected).ravel())


@pytest.mark.parametrize("kind", TARGETS)
def test_unreachable_registry_keeps_the_alias_for_start_up(
    kind: str, store: Registry, version_two: str, tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    dead = mlops.registry_resolver(f"http://127.0.0.1:{free_port()}", environ=store.env(),
                                   timeout=2)
    with caplog.at_level(logging.WARNING):
        rendered = render(kind, store, port=free_port(), resolver=dead)
    assert _version_fields(rendered) == (f"models:/{MODEL}@{ALIAS}", "unresolved", "")
    assert rendered.track.workload.env["MLOPS_MODEL_ALIAS"] == ALIAS
    # Under the mock runtime Pulumi's warnings go to Python logging.
    assert "keeps the alias and resolves it at start-up" in caplog.text

    # The alias moves after the render: the server serves what it names when it starts.
    with champion_restored() as client:
        client.set_registered_model_alias(MODEL, ALIAS, version_two)
        with serving(rendered, store, tmp_path) as server:
            version = served_model(server.url)
            assert (version["model_uri"], version["model_alias"], version["model_version"]) == (
                f"models:/{MODEL}@{ALIAS}", ALIAS, version_two)
            batch = _features().tail(25)
            expected = mlflow.pyfunc.load_model(f"models:/{MODEL}/{version_two}").predict(batch)
            np.testing.assert_array_equal(predict(server.url, batch),
                                          np.asarray(expected).ravel())
