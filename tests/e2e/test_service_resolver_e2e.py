"""registry_resolver against a real MLflow registry (run from ModelRegistry's rendered command,
with basic auth): aliases resolve to versions, unknown aliases are input errors, an unreachable
or unauthorized registry leaves the alias for start-up, and a ModelService pins what it got."""

from __future__ import annotations

import datetime
import logging
from collections.abc import Iterator

import mlflow
import pytest
from mlflow.tracking import MlflowClient
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression

import pulumi_mlops as mlops
from pulumi_mlops.components.resolver import registry_resolver
from pulumi_mlops.components.service import ModelService
from pulumi_mlops.contracts.lineage import APPROVAL_TAGS
from pulumi_mlops.errors import InputError
from pulumi_mlops.policy import Violation, evaluate, resources_from_recording, rule_named
from pulumi_mlops.render import Recording, record, redact
from pulumi_mlops.runtime.promote import Approval
from tests.e2e.ports import free_port
from tests.e2e.registry import Registry, registry_client
from tests.recording import RUNTIME_IMAGE

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

MODEL = "fraud"


def _register() -> str:
    x, y = load_iris(return_X_y=True)
    with mlflow.start_run():
        info = mlflow.sklearn.log_model(LogisticRegression(max_iter=500).fit(x, y),
                                        name="model", registered_model_name=MODEL)
    return str(info.registered_model_version)


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    """A registry holding `fraud` versions 1 and 2, alias `champion` on version 1."""
    with registry_client(tmp_path_factory.mktemp("registry")) as running:
        mlflow.set_experiment("resolver-e2e")
        assert (_register(), _register()) == ("1", "2")
        MlflowClient().set_registered_model_alias(MODEL, "champion", "1")
        yield running


def test_an_alias_resolves_to_its_version_and_follows_it(registry: Registry) -> None:
    resolve = registry_resolver(registry.url, environ=registry.env())

    assert resolve(MODEL, "champion") == "1"
    client = MlflowClient()
    client.set_registered_model_alias(MODEL, "challenger", "2")
    try:
        assert resolve(MODEL, "challenger") == "2"
        client.set_registered_model_alias(MODEL, "challenger", "1")
        assert resolve(MODEL, "challenger") == "1"
    finally:
        client.delete_registered_model_alias(MODEL, "challenger")


def test_the_approval_mlops_promote_records_reaches_the_policy_through_the_resolver(
    registry: Registry
) -> None:
    client = MlflowClient()
    approval = Approval(by="alice", reason="CHG-42 soak passed")
    for key, value in approval.tags("champion", datetime.datetime(2026, 11, 30, 9, 0,
                                                                  tzinfo=datetime.UTC)).items():
        client.set_model_version_tag(MODEL, "2", key, value)

    def prod_violations(alias: str) -> list[Violation]:
        resolver = registry_resolver(registry.url, environ=registry.env())

        def program() -> None:
            reg = mlops.ModelRegistry("reg", target=mlops.KubernetesTarget(namespace="ml"))
            ModelService("fraud", target=mlops.KubernetesTarget(namespace="ml"), registry=reg,
                         image=RUNTIME_IMAGE, model_uri=f"models:/{MODEL}@{alias}",
                         resolver=resolver)

        found = evaluate(resources_from_recording(record(program, stack="prod")),
                         rules=[rule_named("promotion-approved")])
        assert resolver.promotion(MODEL, alias) is not None
        return found

    try:
        # Version 1 carries no approval; version 2 one for `champion`, not for `release`.
        assert len(prod_violations("champion")) == 1
        client.set_registered_model_alias(MODEL, "champion", "2")
        assert prod_violations("champion") == []
        client.set_registered_model_alias(MODEL, "release", "2")
        assert len(prod_violations("release")) == 0  # not a protected alias
        resolver = registry_resolver(registry.url, environ=registry.env())
        assert resolver(MODEL, "champion") == "2"
        assert resolver.promotion(MODEL, "champion") == {
            "version": "2", "alias": "champion", "approved_by": "alice",
            "approved_at": "2026-11-30T09:00:00+00:00", "reason": "CHG-42 soak passed",
            "gates_passed": False}
        assert resolver(MODEL, "release") == "2"
        assert resolver.promotion(MODEL, "release")["approved_by"] is None  # type: ignore[index]
    finally:
        client.set_registered_model_alias(MODEL, "champion", "1")
        client.delete_registered_model_alias(MODEL, "release")
        for key in APPROVAL_TAGS:
            client.delete_model_version_tag(MODEL, "2", key)


@pytest.mark.parametrize(("name", "alias"), [(MODEL, "nobody"), ("no-such-model", "champion")])
def test_an_alias_or_model_the_registry_lacks_is_an_input_error(
    registry: Registry, name: str, alias: str
) -> None:
    resolve = registry_resolver(registry.url, environ=registry.env())

    with pytest.raises(InputError) as raised:
        resolve(name, alias)

    assert f"names alias {alias!r} of model {name!r}" in raised.value.rule
    assert "pin a version" in raised.value.fix


def test_an_unreachable_registry_resolves_nothing(registry: Registry) -> None:
    resolve = registry_resolver(f"http://127.0.0.1:{free_port()}", environ=registry.env(),
                                timeout=2)

    assert resolve(MODEL, "champion") is None


def test_without_credentials_the_alias_is_left_for_start_up(registry: Registry) -> None:
    # CI without the registry's credentials: refused, so treated as not reachable.
    anonymous = {"MLFLOW_TRACKING_URI": registry.url}
    wrong = {**registry.env(), "MLFLOW_TRACKING_PASSWORD": "not-the-password"}

    assert registry_resolver(environ=anonymous)(MODEL, "champion") is None
    assert registry_resolver(environ=wrong)(MODEL, "champion") is None


def _render(resolver: object = None) -> Recording:
    def program() -> None:
        ModelService("fraud", registry=mlops.RegistryEndpoint(
            tracking_uri="http://registry-mlflow.ml.svc.cluster.local:5000"),
            target=mlops.KubernetesTarget(namespace="ml"), image=RUNTIME_IMAGE,
            model_uri=f"models:/{MODEL}@champion", resolver=resolver)

    return record(program)


def _pinned(rec: Recording) -> tuple[str, str]:
    template = redact(dict(rec.get("kubernetes:apps/v1:Deployment", "fraud").inputs))[
        "spec"]["template"]
    command = template["spec"]["containers"][0]["command"]
    return command[command.index("--model-uri") + 1], template["metadata"]["labels"][
        "mlops.dev/model-version"]


def test_a_service_pins_the_version_the_registry_of_the_environment_names(
    registry: Registry, caplog: pytest.LogCaptureFixture
) -> None:
    # The default resolver reads MLFLOW_TRACKING_* (set by the fixture), as `pulumi preview`
    # would where it has the credentials.
    with caplog.at_level(logging.WARNING):
        rec = _render()

    assert _pinned(rec) == (f"models:/{MODEL}/1", "1")
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_a_service_keeps_the_alias_when_the_registry_cannot_be_reached(
    registry: Registry, caplog: pytest.LogCaptureFixture
) -> None:
    dead = registry_resolver(f"http://127.0.0.1:{free_port()}", environ={}, timeout=2)

    with caplog.at_level(logging.WARNING):
        rec = _render(dead)

    assert _pinned(rec) == (f"models:/{MODEL}@champion", "unresolved")
    assert any("keeps the alias and resolves it at start-up" in r.getMessage()
               for r in caplog.records)
