"""ModelRegistry rejects malformed inputs before it declares anything.

Every case builds a registry the way a user would write it, inside the mock harness, and checks
the one error type, who it blames (the component instance, or the object that was built wrong),
the input path in backticks, the fix, that secrets are not echoed, and that no resource reached
the engine.
"""

from __future__ import annotations

import asyncio
import copy
import gc
from collections.abc import Callable, Iterator
from typing import Any

import pulumi
import pydantic
import pytest
from pulumi.runtime import settings
from pydantic import BaseModel

import pulumi_mlops as mlops
from pulumi_mlops import errors
from pulumi_mlops._validation import ArgsModel
from pulumi_mlops.render.harness import record
from tests.recording import RUNTIME_IMAGE, failing

K8S = mlops.KubernetesTarget(namespace="ml")
DOCKER = mlops.DockerTarget()
REG = "ModelRegistry 'reg'"
URI_PASSWORD = "hunter2-db-secret"
ADMIN_PASSWORD = "short-secret"


def registry(name: str = "reg", args: Any = None, **kwargs: Any) -> mlops.ModelRegistry:
    return mlops.ModelRegistry(name, args, **kwargs)


def validation_error_in_chain(exc: BaseException) -> mlops.ValidationError | None:
    """Pulumi wraps errors raised inside an apply; find ours among the causes."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, mlops.ValidationError):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


@pytest.fixture
def forget_failed_outputs() -> Iterator[None]:
    """Drop outputs a failed deployment left behind, so the next recording starts clean.

    `record()` clears them itself; this also keeps pytest's own process tidy.
    """
    yield
    settings.SETTINGS.outputs.clear()
    # Mark the failed futures' errors as seen. Otherwise asyncio logs them, with a traceback,
    # whenever the garbage collector happens to run; inside pytest's own traceback formatting
    # that re-enters ast.parse, which Python 3.11 aborts with a SystemError (INTERNALERROR).
    for obj in gc.get_objects():
        if isinstance(obj, asyncio.Future) and obj.done() and not obj.cancelled():
            obj.exception()






def case(
    name: str, build: Callable[[], object], where: str, paths: tuple[str, ...],
    secret: str | None = None, *marks: pytest.MarkDecorator,
) -> Any:
    return pytest.param(build, where, paths, secret, id=name, marks=marks)


# Who is blamed: the component instance, or the object the user built wrong (it cannot know which
# component it was meant for). `secret`: a value that must not appear in the message.
CASES = [
    case("replicas-zero", lambda: registry(target=K8S, replicas=0), REG, ("replicas",),
         None),
    case("replicas-negative", lambda: registry(target=K8S, replicas=-1), REG, ("replicas",),
         None),
    case("replicas-above-maximum", lambda: registry(target=K8S, replicas=21), REG,
         ("replicas",)),
    case("replicas-2-on-docker",
         lambda: registry(target=DOCKER, replicas=2, database=mlops.Database.postgres()),
         REG, ("replicas",)),
    case("sqlite-on-kubernetes", lambda: registry(target=K8S, database=mlops.Database.sqlite()),
         REG, ("database",)),
    case("replicas-2-with-sqlite",
         lambda: registry(target=DOCKER, replicas=2, database=mlops.Database.sqlite()),
         REG, ("replicas",)),
    case("artifacts-ftp-scheme", lambda: registry(target=K8S, artifacts_destination="ftp://x"),
         REG, ("artifacts_destination",)),
    case("artifacts-local-path",
         lambda: registry(target=K8S, artifacts_destination="/local/path"),
         REG, ("artifacts_destination",)),
    case("artifacts-s3-without-bucket",
         lambda: registry(target=K8S, artifacts_destination="s3://"),
         REG, ("artifacts_destination",), None,),
    case("external-db-not-a-uri",
         lambda: registry(target=K8S, database=mlops.Database.external("not-a-uri")),
         "Database", ("uri",), "not-a-uri"),
    case("external-db-sqlite-uri",
         lambda: registry(target=K8S, database=mlops.Database.external("sqlite:///x.db")),
         "Database", ("uri",), "sqlite:///x.db"),
    case("external-db-without-host",
         lambda: registry(target=K8S, database=mlops.Database.external(
             f"postgresql://mlflow:{URI_PASSWORD}@:5432/mlflow")),
         "Database", ("uri",), URI_PASSWORD),
    case("external-db-mapping-without-host",
         lambda: registry(target=K8S, database={
             "kind": "external", "uri": f"postgresql://mlflow:{URI_PASSWORD}@:5432/mlflow"}),
         REG, ("database.uri",), URI_PASSWORD),
    case("admin-password-too-short", lambda: registry(target=K8S, admin_password=ADMIN_PASSWORD),
         REG, ("admin_password",), ADMIN_PASSWORD),
    case("admin-password-mlflow-default",
         lambda: registry(admin_password="password1234", target=K8S),
         REG, ("admin_password",), "password1234"),
    case("admin-password-not-a-string",
         lambda: registry(target=K8S, admin_password=1234567890123456789),
         REG, ("admin_password",), "1234567890123456789"),
    case("weak-password-policy-override", lambda: registry(target=K8S, admin_password_length=8),
         REG, ("admin_password_length",)),
    case("image-latest", lambda: registry(target=K8S, image="ghcr.io/mlflow/mlflow:latest"),
         REG, ("image",)),
    case("image-untagged", lambda: registry(target=K8S, image="ghcr.io/mlflow/mlflow"),
         REG, ("image",)),
    case("image-mlflow-older-than-3.17",
         lambda: registry(target=K8S, image="ghcr.io/mlflow/mlflow:v2.20.0"),
         REG, ("image",)),
    case("unknown-keyword-typo", lambda: registry(target=K8S, replica=2), REG, ("replica",),
         None),
    case("target-unknown-string", lambda: registry(target="kubernetes"), REG, ("target",),
         None),
    case("target-none", lambda: registry(target=None), REG, ("target",)),
    case("target-missing", lambda: registry(), REG, ("target",)),
    case("namespace-not-dns-label",
         lambda: registry(target=mlops.KubernetesTarget(namespace="Bad_NS")),
         "KubernetesTarget", ("namespace",)),
    case("namespace-not-dns-label-in-mapping",
         lambda: registry(target={"kind": "kubernetes", "namespace": "Bad_NS"}),
         REG, ("target.namespace",)),
    case("name-with-space", lambda: registry("Bad Name", target=K8S),
         "ModelRegistry 'Bad Name'", ("name",)),
    case("name-uppercase", lambda: registry("UPPER", target=K8S), "ModelRegistry 'UPPER'",
         ("name",)),
    case("name-too-long", lambda: registry("r" * 41, target=K8S), "ModelRegistry", ("name",)),
    case("port-below-1024", lambda: registry(target=K8S, port=80), REG, ("port",)),
    case("workers-zero", lambda: registry(target=K8S, workers=0), REG, ("workers",)),
    case("allowed-host-with-space",
         lambda: registry(target=K8S, allowed_hosts=["mlflow.example.com", "a b"]),
         REG, ("allowed_hosts[1]",)),
    case("cpu-limit-not-a-quantity",
         lambda: registry(target=K8S, resources=mlops.Resources(cpu_limit="lots")),
         "Resources", ("cpu_limit",)),
    case("cpu-limit-not-a-quantity-in-mapping",
         lambda: registry(target=K8S, resources={"cpu_limit": "lots"}),
         REG, ("resources.cpu_limit",)),
    case("cpu-request-above-limit",
         lambda: registry(target=K8S, resources=mlops.Resources(cpu_request="4", cpu_limit="1")),
         "Resources", ("cpu_request", "cpu_limit"), None),
    case("fractional-cpu-request-above-limit",
         lambda: registry(target=K8S,
                          resources=mlops.Resources(cpu_request="1.5", cpu_limit="1")),
         "Resources", ("cpu_request", "cpu_limit"), None),
    case("ingress-on-docker",
         lambda: registry(target=DOCKER, ingress=mlops.RegistryIngress(host="mlflow.example.com")),
         REG, ("ingress",)),
    case("ingress-host-not-dns",
         lambda: registry(target=K8S, ingress=mlops.RegistryIngress(host="not a host")),
         "RegistryIngress", ("host",)),
    case("ingress-host-not-dns-in-mapping",
         lambda: registry(target=K8S, ingress={"host": "not a host"}),
         REG, ("ingress.host",)),
    case("args-object-and-keywords",
         lambda: registry(args=mlops.ModelRegistryArgs(target=K8S), replicas=2), REG, ("args",)),
    case("args-not-an-args-object", lambda: registry(args={"target": K8S}), REG, ("args",)),
    case("postgres-storage-size-not-a-quantity",
         lambda: registry(target=K8S, database=mlops.Database.postgres(storage_size="ten gigs")),
         "Database", ("storage_size",)),
    case("postgres-storage-size-not-a-quantity-in-mapping",
         lambda: registry(target=K8S, database={"kind": "postgres", "storage_size": "ten gigs"}),
         REG, ("database.storage_size",)),
    case("postgres-image-unpinned",
         lambda: registry(target=K8S, database=mlops.Database.postgres(image="postgres")),
         "Database", ("image",)),
    case("default-permission-unknown", lambda: registry(target=K8S, default_permission="ALL"),
         REG, ("default_permission",)),
]


@pytest.mark.parametrize(("build", "where", "paths", "secret"), CASES)
def test_malformed_input_is_rejected_with_its_path_and_nothing_declared(
    build: Callable[[], object], where: str, paths: tuple[str, ...], secret: str | None
) -> None:
    err, rec = failing(build)
    message = str(err)

    if secret is not None:
        assert secret not in message
        assert secret not in repr(err.problems)
    assert err.where.startswith(where), message
    assert message.startswith(where), message
    assert any(f"`{p}`" in message for p in paths), message
    assert {p.path for p in err.problems} & set(paths), message
    assert "Fix:" in message
    assert rec.resources == []


def test_every_bad_input_is_reported_at_once() -> None:
    err, rec = failing(lambda: registry(target=K8S, replicas=0, port=80))

    assert {p.path for p in err.problems} == {"replicas", "port"}
    assert "`replicas`" in str(err) and "`port`" in str(err)
    assert rec.resources == []


@pytest.mark.parametrize("target", [K8S, DOCKER], ids=["kubernetes", "docker"])
def test_valid_registry_declares_resources(target: mlops.Target) -> None:
    caught: list[Exception] = []

    def program() -> None:
        try:
            registry(target=target)
        except mlops.ValidationError as err:
            caught.append(err)

    recording = record(program)

    assert caught == []
    assert recording.resources, "a valid registry declared nothing"
    assert recording.of_type("mlops:index:ModelRegistry")


@pytest.mark.usefixtures("forget_failed_outputs")
def test_malformed_secret_database_uri_fails_at_deployment_without_echoing_it() -> None:
    uri = f"postgresql://mlflow:{URI_PASSWORD}@:5432/mlflow"

    def program() -> None:
        registry(target=K8S, database=mlops.Database.external(pulumi.Output.secret(uri)))

    with pytest.raises(ValueError) as raised:
        record(program)

    err = validation_error_in_chain(raised.value)
    assert err is not None, f"not a ValidationError: {raised.value!r}"
    assert err.where == REG
    assert [p.path for p in err.problems] == ["database.uri"]
    assert "`database.uri`" in str(err) and "Fix:" in str(err)
    for text in (str(err), str(raised.value)):
        assert uri not in text
        assert URI_PASSWORD not in text


@pytest.mark.usefixtures("forget_failed_outputs")
def test_external_database_without_uri_is_rejected() -> None:
    err, rec = failing(
        lambda: registry(target=K8S, database={"kind": "external"}))

    assert "`database.uri`" in str(err)
    assert rec.resources == []


@pytest.mark.usefixtures("forget_failed_outputs")
def test_weak_secret_admin_password_fails_at_deployment() -> None:
    def program() -> None:
        registry(target=K8S, admin_password=pulumi.Output.secret("password1234"))

    with pytest.raises(ValueError) as raised:
        record(program)

    err = validation_error_in_chain(raised.value)
    assert err is not None
    assert "`admin_password`" in str(err)
    assert "password1234" not in str(raised.value)


@pytest.mark.usefixtures("forget_failed_outputs")
def test_a_deployment_time_failure_does_not_leak_into_the_next_recording() -> None:
    def failing() -> None:
        registry(target=K8S, database=mlops.Database.external(pulumi.Output.secret("not-a-uri")))

    with pytest.raises(ValueError):
        record(failing)

    recording = record(lambda: registry(target=K8S))

    assert recording.resources


# --------------------------------------------------------------------------- secrets, by type

SECRET = "s3cret-sentinel"  # 15 characters: too short for a password, not a URI
SECRET_NUMBER = 424242424242424242  # not a string: what a secret input must be
SECRET_VALID = "s3cret-sentinel-long-enough"  # a valid password
CANDIDATES: list[Any] = [SECRET, SECRET_NUMBER, {"Bad Header": SECRET}, [SECRET], SECRET_VALID]
SECRET_TEXTS = (SECRET, str(SECRET_NUMBER))
ENDPOINT = mlops.RegistryEndpoint(tracking_uri="http://registry-mlflow:5000")
# Inputs each model with a secret input accepts, so that a bad secret is the only error (a
# model-level rule about it runs only when its other inputs are valid).
VALID: dict[str, dict[str, Any]] = {
    "ModelRegistryArgs": {"target": {"kind": "kubernetes"}},
    "Database": {"kind": "external"},
    "ImageRegistry": {"server": "registry.example.com", "username": "ci"},
    "RegistryEndpoint": {"tracking_uri": "http://registry-mlflow:5000"},
    "KubernetesTarget": {"kind": "kubernetes"},
    "DockerTarget": {"kind": "docker"},
    "ModelServiceArgs": {"registry": ENDPOINT, "target": {"kind": "kubernetes"},
                         "model_uri": "models:/fraud/1", "image": RUNTIME_IMAGE},
    "RetrainScheduleArgs": {"registry": ENDPOINT, "target": {"kind": "kubernetes"},
                            "image": RUNTIME_IMAGE,
                            "schedule": "0 3 * * *", "model_name": "fraud",
                            "dataset": "https://data.example.com/fraud.csv",
                            "target_column": "label",
                            "estimator": "sklearn.linear_model.LogisticRegression"},
    "RuntimeImageArgs": {"context": "."},
    # Field validation only: what `services` holds is the component's check.
    "MonitoringStackArgs": {"target": {"kind": "kubernetes"}, "services": ["fraud"]},
    "Alertmanager": {"page": {"kind": "webhook", "url": "https://hooks.example.com/x"}},
    "Grafana": {},
    "Receiver": {"kind": "email", "to": "a@example.com", "from_address": "b@example.com",
                 "smarthost": "smtp.example.com:587", "username": "u",
                 "url": "https://hooks.example.com/x", "password": "p"},
}


def args_models() -> list[type[BaseModel]]:
    """Every args model of the package (each `ValidatedModel`), components' and nested."""
    for name in ("ModelRegistry", "ModelService", "MonitoringStack", "RetrainSchedule",
                 "RuntimeImage"):
        getattr(mlops, name)  # import each component's args
    return [m for models in errors._MODELS.values() for m in models
            if m.__module__.startswith("pulumi_mlops.")]


SECRET_INPUTS = [pytest.param(model, path, id=f"{model.__name__}.{path}")
                 for model in args_models() for path in errors.secret_inputs(model)]


def with_input(model: type[BaseModel], path: str, value: Any) -> dict[str, Any]:
    """`VALID` inputs of ``model`` with ``value`` at ``path``, nested models built from theirs."""
    inputs: dict[str, Any] = copy.deepcopy(VALID[model.__name__])
    here, annotations = inputs, [model]
    *parents, last = path.split(".")
    for i, name in enumerate([*parents, last]):
        if name == last and i == len(parents):
            here[name] = value
            break
        step = errors.step_into(annotations, name)
        assert step is not None
        annotations = step[0]
        nested = [t for a in annotations for t, _ in errors.input_types(a) if errors.is_model(t)
                  and path.split(".")[i + 1] in t.model_fields]
        if not isinstance(here.get(name), dict):
            here[name] = copy.deepcopy(VALID.get(nested[0].__name__, {}))
        here = here[name]
    return inputs


@pytest.mark.parametrize(("model", "path"), SECRET_INPUTS)
def test_a_secret_input_never_appears_in_an_error_message(
    model: type[BaseModel], path: str
) -> None:
    assert model.__name__ in VALID, f"give VALID inputs of {model.__name__} to test {path}"
    reported = False
    for candidate in CANDIDATES:
        inputs = with_input(model, path, candidate)
        try:
            args = model.model_validate(inputs)
        except pydantic.ValidationError as exc:
            # As a component reports it: the model found by the error's title.
            err = mlops.ValidationError.from_pydantic("X", exc)
            texts = [str(err), repr(err.problems)]
            reported |= any(p.path == path or p.path.startswith(f"{path}.")
                            for p in err.problems)
            with pytest.raises(mlops.ValidationError) as direct:
                model(**inputs)
            texts.append(str(direct.value))
        else:
            problems = args.problems() if isinstance(args, ArgsModel) else []
            texts = [repr(args), mlops.ValidationError("X", problems).args[0] if problems
                     else ""]
            assert SECRET_VALID not in repr(args)
        for text in texts:
            assert not any(secret in text for secret in SECRET_TEXTS), text
    assert reported, f"no candidate value was rejected at {path}: the test proves nothing"


def test_every_secret_input_is_tested() -> None:
    secret_inputs = {(m.__name__, p) for m in args_models() for p in errors.secret_inputs(m)}

    assert {("ModelRegistryArgs", "admin_password"), ("Database", "uri"),
            ("ModelRegistryArgs", "database.uri"), ("ImageRegistry", "password"),
            ("RegistryEndpoint", "password"), ("RetrainScheduleArgs", "dataset_headers"),
            ("ModelServiceArgs", "target.image_registry.password")} <= secret_inputs


def test_a_missing_input_does_not_echo_the_secrets_beside_it() -> None:
    err, rec = failing(lambda: registry(admin_password=SECRET_VALID))

    assert str(err) == (f"{REG}: `target` is required (got None). Fix: provide `target`.")
    assert rec.resources == []


def test_a_mapping_shown_in_an_error_has_its_secrets_redacted() -> None:
    err, _ = failing(lambda: registry(target=K8S, database=[
        {"kind": "external", "uri": f"postgresql://mlflow:{URI_PASSWORD}@db:5432/mlflow"}]))

    assert URI_PASSWORD not in str(err)
    assert "'uri': '[redacted]'" in str(err)


@pytest.mark.parametrize(("build", "shown"), [
    pytest.param(lambda: mlops.ModelService("fraud", image=RUNTIME_IMAGE, registry=ENDPOINT,
                                            target=K8S, model_uri="s3://bucket/fraud-model"),
                 "s3://bucket/fraud-model", id="model_uri"),
    pytest.param(lambda: mlops.Rollout(kind="canary", model_uri="s3://bucket/challenger"),
                 "s3://bucket/challenger", id="rollout.model_uri"),
    pytest.param(lambda: mlops.RegistryEndpoint(tracking_uri="file:///tmp/uri"),
                 "file:///tmp/uri", id="tracking_uri"),
    pytest.param(lambda: mlops.KubernetesTarget(labels={"password": "Not A Label!"}),
                 "Not A Label!", id="a-label-keyed-password"),
    pytest.param(lambda: registry(target=K8S, admin_password_length=8), "(got 8)",
                 id="admin_password_length"),
])
def test_an_input_named_like_a_secret_but_not_marked_one_is_shown(
    build: Callable[[], object], shown: str
) -> None:
    err, _ = failing(build)

    assert shown in str(err)
    assert "[redacted]" not in str(err)


# --------------------------------------------------------------------------- related inputs


def test_a_nested_rule_names_its_related_inputs_by_their_full_paths() -> None:
    err, _ = failing(lambda: registry(target=K8S, resources={"cpu_request": "4",
                                                             "cpu_limit": "1"}))

    [problem] = err.problems
    assert (problem.path, problem.related) == ("resources.cpu_request", ("resources.cpu_limit",))
    assert str(err) == (
        f"{REG}: `resources.cpu_request` must not exceed `resources.cpu_limit` (got '4'). "
        "Fix: lower `resources.cpu_request` or raise `resources.cpu_limit`.")


def test_a_problem_renamed_renames_its_inputs_where_rule_and_fix_name_them() -> None:
    problem = errors.Problem("model_uri", "Only one of `model_uri` or `rollout.active` can be "
                            "provided", "models:/a/1", "drop `model_uri` or `rollout.active`; "
                            "`rollout` is fine.", related=("rollout.active",))

    renamed = problem.renamed(lambda p: f"cfg.{p}")

    assert renamed == errors.Problem(
        "cfg.model_uri", "Only one of `cfg.model_uri` or `cfg.rollout.active` can be provided",
        "models:/a/1", "drop `cfg.model_uri` or `cfg.rollout.active`; `rollout` is fine.",
        related=("cfg.rollout.active",))
