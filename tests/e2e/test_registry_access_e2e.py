"""Least privilege in a real registry: the reconcile `ModelRegistry.grant_read` and
`grant_write` render, run as rendered against a real MLflow server (SQLite and PostgreSQL)
whose `default_permission` is NO_PERMISSIONS, and what each user can and cannot do afterwards,
through MLflow's own client."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from mlflow.tracking import MlflowClient

from pulumi_mlops.local import run_job
from pulumi_mlops.plans.registry import Permission
from pulumi_mlops.plans.registry_access import grant_secret_data, plan_grant
from pulumi_mlops.plans.registry_ref import RegistryClient
from tests.e2e.registry import BACKENDS, Registry, running_registry

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

SERVICE = RegistryClient("fraud-service", read=("fraud",))
TRAINER = RegistryClient("fraud-retrain", write=("fraud",), experiments=("retrain-fraud",))
PASSWORDS = {c.user: secrets.token_urlsafe(24) for c in (SERVICE, TRAINER)}


def reconcile(registry: Registry, client: RegistryClient, root: Path) -> list[str]:
    """Run the grant's rendered reconcile once; the lines it printed."""
    plan = plan_grant(registry.plan, client)
    run = run_job(plan.workload, grant_secret_data(registry.password, PASSWORDS[client.user]),
                  root / f"{client.user}-{secrets.token_hex(4)}", hosts=registry.hosts,
                  timeout=180)
    assert run.returncode == 0, run.stdout + run.stderr
    return run.stdout.splitlines()


def as_user(registry: Registry, user: str) -> dict[str, str]:
    return {"MLFLOW_TRACKING_URI": registry.url, "MLFLOW_TRACKING_USERNAME": user,
            "MLFLOW_TRACKING_PASSWORD": PASSWORDS[user]}


@pytest.fixture(scope="module", params=BACKENDS)
def registry(request: pytest.FixtureRequest,
             tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Registry, Path]]:
    """A registry where nobody may do anything nobody granted, the service's grant reconciled
    before the trainer's (as on a fresh stack: the model does not exist yet), and a model of
    another team registered by the admin."""
    root = tmp_path_factory.mktemp(request.param)
    with running_registry(root, request.param, Permission.NO_PERMISSIONS) as running:
        first = {c.user: reconcile(running, c, root) for c in (SERVICE, TRAINER)}
        assert all("changed" in line for line in first[SERVICE.user][:-1])
        with pytest.MonkeyPatch.context() as patch:
            for key, value in running.env().items():
                patch.setenv(key, value)
            admin = MlflowClient(running.url)
            admin.create_registered_model("other-team")
        yield running, root


def _train_and_register(registry: Registry) -> str:
    """As the trainer: log a run in its experiment, register a version, move `champion`."""
    code = (
        "import mlflow\n"
        "from sklearn.datasets import load_breast_cancer\n"
        "from sklearn.linear_model import LogisticRegression\n"
        "X, y = load_breast_cancer(return_X_y=True)\n"
        "mlflow.set_experiment('retrain-fraud')\n"
        "with mlflow.start_run():\n"
        "    info = mlflow.sklearn.log_model(LogisticRegression(max_iter=50).fit(X, y),\n"
        "                                    name='model', registered_model_name='fraud')\n"
        "mlflow.MlflowClient().set_registered_model_alias('fraud', 'champion',\n"
        "                                                 info.registered_model_version)\n"
        "print(info.registered_model_version)\n")
    run = subprocess.run([sys.executable, "-c", code], env={**os.environ,
                         **as_user(registry, TRAINER.user)}, capture_output=True, text=True,
                         timeout=300, check=False)
    assert run.returncode == 0, run.stderr[-3000:]
    return run.stdout.split()[-1]


def test_the_trainer_registers_and_moves_aliases_and_the_service_loads_that_version(
        registry: tuple[Registry, Path]) -> None:
    running, _ = registry
    version = _train_and_register(running)
    code = ("import mlflow, sys\n"
            "m = mlflow.pyfunc.load_model('models:/fraud@champion')\n"
            "print(m.metadata.run_id)\n")
    loaded = subprocess.run([sys.executable, "-c", code], env={**os.environ,
                            **as_user(running, SERVICE.user)}, capture_output=True, text=True,
                            timeout=300, check=False)
    assert loaded.returncode == 0, loaded.stderr[-3000:]
    trainer = MlflowClient(running.url)
    with pytest.MonkeyPatch.context() as patch:
        for key, value in as_user(running, TRAINER.user).items():
            patch.setenv(key, value)
        assert loaded.stdout.strip() == trainer.get_model_version("fraud", version).run_id


def test_the_service_cannot_write_its_model_or_read_another(
        registry: tuple[Registry, Path]) -> None:
    running, _ = registry
    auth = (SERVICE.user, PASSWORDS[SERVICE.user])
    api = running.url + "/api/2.0/mlflow"
    assert requests.get(f"{api}/registered-models/get", params={"name": "fraud"}, auth=auth,
                        timeout=10).status_code == 200
    for method, path, body in [
            ("POST", "registered-models/alias", {"name": "fraud", "alias": "x", "version": "1"}),
            ("PATCH", "registered-models/update", {"name": "fraud", "description": "x"}),
            ("DELETE", "registered-models/delete", {"name": "fraud"})]:
        response = requests.request(method, f"{api}/{path}", json=body, auth=auth, timeout=10)
        assert response.status_code == 403, (path, response.text)
    other = requests.get(f"{api}/registered-models/get", params={"name": "other-team"},
                         auth=auth, timeout=10)
    assert other.status_code == 403


def test_the_trainer_writes_its_model_only(registry: tuple[Registry, Path]) -> None:
    running, _ = registry
    auth = (TRAINER.user, PASSWORDS[TRAINER.user])
    api = running.url + "/api/2.0/mlflow"
    assert requests.patch(f"{api}/registered-models/update", json={
        "name": "fraud", "description": "retrained nightly"}, auth=auth,
        timeout=10).status_code == 200
    for method, path, body in [
            ("PATCH", "registered-models/update", {"name": "other-team", "description": "x"}),
            ("POST", "registered-models/alias", {"name": "other-team", "alias": "champion",
                                                 "version": "1"}),
            ("POST", "model-versions/create", {"name": "other-team",
                                               "source": "models:/m-0123456789abcdef"})]:
        response = requests.request(method, f"{api}/{path}", json=body, auth=auth, timeout=10)
        assert response.status_code == 403, (path, response.text)
    assert requests.get(f"{api}/registered-models/get", params={"name": "other-team"},
                        auth=auth, timeout=10).status_code == 403
    # Never an owner of its model: it may not delete it or grant others.
    assert requests.delete(f"{api}/registered-models/delete", json={"name": "fraud"},
                           auth=auth, timeout=10).status_code == 403


def test_a_second_reconcile_changes_nothing(registry: tuple[Registry, Path]) -> None:
    running, root = registry
    for client in (SERVICE, TRAINER):
        (line,) = reconcile(running, client, root)
        assert line.startswith(f"{client.user}: 0 changed, ")


def test_a_changed_password_is_set_and_the_old_one_refused(
        registry: tuple[Registry, Path]) -> None:
    running, root = registry
    old = PASSWORDS[SERVICE.user]
    PASSWORDS[SERVICE.user] = secrets.token_urlsafe(24)
    try:
        lines = reconcile(running, SERVICE, root)
        assert f"changed: user {SERVICE.user}: password set" in lines
        api = running.url + "/api/2.0/mlflow/users/current"
        assert requests.get(api, auth=(SERVICE.user, old), timeout=10).status_code == 401
        assert requests.get(api, auth=(SERVICE.user, PASSWORDS[SERVICE.user]),
                            timeout=10).status_code == 200
    finally:
        PASSWORDS[SERVICE.user] = old
        reconcile(running, SERVICE, root)


def test_an_admin_username_is_refused(registry: tuple[Registry, Path]) -> None:
    running, root = registry
    plan = plan_grant(running.plan, RegistryClient("admin", read=("fraud",)))
    run = run_job(plan.workload, grant_secret_data(running.password, "x" * 20),
                  root / "admin-grant", hosts=running.hosts, timeout=180)
    assert run.returncode != 0
    assert "is an admin of the registry" in run.stderr
