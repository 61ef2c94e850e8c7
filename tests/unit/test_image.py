"""The runtime image: RuntimeImage under mocks, its validation, the Dockerfile and its pins."""

from __future__ import annotations

import importlib.util
import json
import re
import shlex
import sys
import tomllib
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from types import ModuleType
from typing import Any

import pulumi
import pytest
from packaging.requirements import Requirement
from pulumi.runtime import rpc

import pulumi_mlops as mlops
from pulumi_mlops.errors import InputError
from pulumi_mlops.plans.image import check_runtime_image, plan_runtime_image
from pulumi_mlops.plans.workload import RUN_AS_USER
from pulumi_mlops.render import Recording, harness, record, unwrap_secrets
from pulumi_mlops.render.manifests import redact
from tests.checkov import run_checkov_dockerfile
from tests.recording import failing

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "Dockerfile"
LOCK = REPO / "requirements" / "runtime.txt"
IMAGE = "docker:index/image:Image"
COMPONENT = "mlops:index:RuntimeImage"
CONTEXT = str(REPO)
TOKEN = "s3cr3t-registry-token"
VERSION = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]


def registry(**kwargs: Any) -> mlops.ImageRegistry:
    return mlops.ImageRegistry(**{"server": "registry.example.com", "namespace": "ml", **kwargs})


def k8s(**kwargs: Any) -> mlops.KubernetesTarget:
    return mlops.KubernetesTarget(namespace="ml", **kwargs)


def build(name: str = "rt", **kwargs: Any) -> Recording:
    def program() -> None:
        image = mlops.RuntimeImage(name, **{"context": CONTEXT, **kwargs})
        pulumi.export("image_ref", image.image_ref)
        pulumi.export("image_name", image.image_name)

    return record(program)


def image_inputs(rec: Recording, name: str = "rt-image") -> dict[str, Any]:
    return dict(rec.get(IMAGE, name).inputs)


# --- RuntimeImage under mocks ------------------------------------------------------------


def test_the_image_is_one_child_named_after_the_component() -> None:
    rec = build(target=k8s(image_registry=registry()))
    component = rec.get(COMPONENT, "rt")
    image = rec.get(IMAGE, "rt-image")
    assert [r.name for r in rec.resources] == ["rt", "rt-image"]
    assert rec.parent_of(image) is component
    assert rec.components[-1].plan.push is True


def test_target_registry_names_the_image_and_it_is_pushed() -> None:
    inputs = image_inputs(build(target=k8s(image_registry=registry())))
    assert inputs["imageName"] == f"registry.example.com/ml/mlops-runtime:{VERSION}"
    assert inputs["skipPush"] is False
    assert inputs["buildOnPreview"] is False
    assert unwrap_secrets(inputs["registry"]) == {"server": "registry.example.com"}
    assert inputs["build"] == {"context": CONTEXT, "dockerfile": f"{CONTEXT}/Dockerfile"}


def test_registry_password_stays_a_secret_in_the_recorded_inputs() -> None:
    for password in (TOKEN, pulumi.Output.secret(TOKEN)):
        rec = build(target=k8s(), registry=registry(username="ci-bot", password=password))
        inputs = image_inputs(rec)
        assert rpc.is_rpc_secret(inputs["registry"])
        assert TOKEN not in json.dumps(redact(inputs))
        assert unwrap_secrets(inputs["registry"]) == {
            "server": "registry.example.com", "username": "ci-bot", "password": TOKEN}


def test_explicit_registry_overrides_the_targets() -> None:
    other = mlops.ImageRegistry(server="localhost:5000")
    inputs = image_inputs(build(target=k8s(image_registry=registry()), registry=other))
    assert inputs["imageName"] == f"localhost:5000/mlops-runtime:{VERSION}"
    assert unwrap_secrets(inputs["registry"]) == {"server": "localhost:5000"}


def test_docker_target_without_registry_builds_locally_without_push() -> None:
    rec = build(target=mlops.DockerTarget())
    inputs = image_inputs(rec)
    assert inputs["imageName"] == f"mlops-runtime:{VERSION}"
    assert inputs["skipPush"] is True
    assert "registry" not in inputs
    assert rec.components[-1].plan.push is False


def test_docker_target_with_a_registry_pushes() -> None:
    inputs = image_inputs(build(target=mlops.DockerTarget(image_registry=registry())))
    assert inputs["skipPush"] is False
    assert inputs["imageName"].startswith("registry.example.com/ml/")


def test_registry_alone_needs_no_target() -> None:
    inputs = image_inputs(build(registry=registry(namespace=None), repository="team/serving",
                                tag="2024.06.1"))
    assert inputs["imageName"] == "registry.example.com/team/serving:2024.06.1"


def test_platform_dockerfile_and_build_args_reach_the_build() -> None:
    inputs = image_inputs(build(target=mlops.DockerTarget(), platform="linux/amd64",
                                dockerfile="./Dockerfile", build_args={"REVISION": "abc123"}))
    assert inputs["build"] == {
        "context": CONTEXT, "dockerfile": f"{CONTEXT}/Dockerfile", "platform": "linux/amd64",
        "args": {"REVISION": "abc123"}}


def test_relative_context_keeps_the_dockerfile_relative_to_the_working_directory(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # pulumi-docker resolves `dockerfile` against the working directory, not the context.
    for cwd, context, dockerfile in ((REPO / "stacks", "..", "../Dockerfile"),
                                     (REPO, ".", "Dockerfile")):
        monkeypatch.chdir(cwd)
        plan = plan_runtime_image("runtime", mlops.RuntimeImageArgs(context=context,
                                                         target=mlops.DockerTarget()))
        assert (plan.context, plan.dockerfile) == (context, dockerfile)


def test_image_ref_is_the_pushed_digest(monkeypatch: pytest.MonkeyPatch) -> None:
    digest = "sha256:" + "ab" * 32
    new_resource = harness._Mocks.new_resource

    def with_digest(self: Any, args: pulumi.runtime.MockResourceArgs) -> tuple[str, dict[str, Any]]:
        rid, state = new_resource(self, args)
        if args.typ == IMAGE:
            repository = str(args.inputs["imageName"]).rpartition(":")[0]
            state["repoDigest"] = f"{repository}@{digest}"
        return rid, state

    monkeypatch.setattr(harness._Mocks, "new_resource", with_digest)
    outputs = build(target=k8s(image_registry=registry())).outputs
    assert outputs == {
        "image_ref": f"registry.example.com/ml/mlops-runtime@{digest}",
        "image_name": f"registry.example.com/ml/mlops-runtime:{VERSION}",
    }


def test_a_local_build_is_referenced_by_its_image_id() -> None:
    # Without a push the provider reports the local image ID as `repoDigest` (the mocks make
    # one up): containers run exactly that build, and a rebuild replaces them.
    outputs = build(target=mlops.DockerTarget()).outputs
    assert outputs["image_name"] == f"mlops-runtime:{VERSION}"
    assert re.fullmatch(r"sha256:[0-9a-f]{64}", outputs["image_ref"])


def test_image_ref_falls_back_to_the_name_when_the_engine_reports_no_digest(
        monkeypatch: pytest.MonkeyPatch) -> None:
    new_resource = harness._Mocks.new_resource

    def without_digest(self: Any,
                       args: pulumi.runtime.MockResourceArgs) -> tuple[str, dict[str, Any]]:
        rid, state = new_resource(self, args)
        state.pop("repoDigest", None)
        return rid, state

    monkeypatch.setattr(harness._Mocks, "new_resource", without_digest)
    outputs = build(target=mlops.DockerTarget()).outputs
    assert outputs["image_ref"] == outputs["image_name"] == f"mlops-runtime:{VERSION}"


def test_components_take_a_prebuilt_image_pinned_or_an_output() -> None:
    pinned = "registry.example.com/ml/mlops-runtime@sha256:" + "0" * 64
    assert check_runtime_image(pinned) == pinned
    assert check_runtime_image("registry.example.com/ml/mlops-runtime:0.1.0")
    ref = pulumi.Output.from_input("x")
    assert check_runtime_image(ref) is ref
    for bad in ("registry.example.com/ml/mlops-runtime", "mlops-runtime:latest", 42):
        with pytest.raises(InputError):
            check_runtime_image(bad)


# --- validation --------------------------------------------------------------------------


def runtime(**kwargs: Any) -> mlops.RuntimeImage:
    return mlops.RuntimeImage("rt", **{"context": CONTEXT, **kwargs})


RT = "RuntimeImage 'rt'"
K8S_PLAIN = mlops.KubernetesTarget(namespace="ml")


def case(name: str, make: Callable[[], object], where: str, path: str,
         secret: str | None = None) -> Any:
    return pytest.param(make, where, path, secret, id=name)


CASES = [
    case("server-with-scheme", lambda: registry(server="https://registry.example.com"),
         "ImageRegistry", "server"),
    case("server-with-path", lambda: registry(server="registry.example.com/ml"),
         "ImageRegistry", "server"),
    case("server-bare-word", lambda: registry(server="myregistry"), "ImageRegistry", "server"),
    case("server-uppercase", lambda: registry(server="Registry.Example.com"),
         "ImageRegistry", "server"),
    case("server-port-out-of-range", lambda: registry(server="registry.example.com:99999"),
         "ImageRegistry", "server"),
    case("server-with-space", lambda: registry(server="registry example.com"),
         "ImageRegistry", "server"),
    case("server-in-mapping", lambda: runtime(registry={"server": "https://r.example.com"}),
         RT, "registry.server"),
    case("namespace-uppercase", lambda: registry(namespace="ML"), "ImageRegistry", "namespace"),
    case("username-without-password", lambda: registry(username="ci-bot"),
         "ImageRegistry", "password"),
    case("password-without-username", lambda: registry(password=TOKEN),
         "ImageRegistry", "username", TOKEN),
    case("password-empty", lambda: registry(username="ci-bot", password=""),
         "ImageRegistry", "password"),
    case("password-not-a-string", lambda: registry(username="ci-bot", password=12345678),
         "ImageRegistry", "password", "12345678"),
    case("target-registry-server-bad",
         lambda: k8s(image_registry={"server": "myregistry"}), "KubernetesTarget",
         "image_registry.server"),
    case("kubernetes-without-registry", lambda: runtime(target=K8S_PLAIN), RT, "registry"),
    case("no-target-no-registry", lambda: runtime(), RT, "registry"),
    case("context-missing", lambda: runtime(context="/nonexistent/mlops", target=K8S_PLAIN),
         RT, "context"),
    case("dockerfile-missing",
         lambda: runtime(target=mlops.DockerTarget(), dockerfile="Dockerfile.nope"),
         RT, "dockerfile"),
    case("tag-latest", lambda: runtime(target=mlops.DockerTarget(), tag="latest"), RT, "tag"),
    case("tag-with-colon", lambda: runtime(target=mlops.DockerTarget(), tag="1:2"), RT, "tag"),
    case("repository-uppercase",
         lambda: runtime(target=mlops.DockerTarget(), repository="Runtime"), RT, "repository"),
    case("platform-free-form",
         lambda: runtime(target=mlops.DockerTarget(), platform="amd64"), RT, "platform"),
    case("build-arg-name", lambda: runtime(target=mlops.DockerTarget(), build_args={"A B": "1"}),
         RT, "build_args"),
    case("unknown-input", lambda: runtime(target=mlops.DockerTarget(), push=False), RT, "push"),
    case("name-uppercase",
         lambda: mlops.RuntimeImage("RT", context=CONTEXT, target=mlops.DockerTarget()),
         "RuntimeImage 'RT'", "name"),
]


@pytest.mark.parametrize(("make", "where", "path", "secret"), CASES)
def test_malformed_input_is_rejected_with_its_path_and_nothing_declared(
    make: Callable[[], object], where: str, path: str, secret: str | None,
) -> None:
    err, rec = failing(make)
    message = str(err)
    assert message.startswith(where), message
    assert f"`{path}`" in message, message
    assert path in {p.path for p in err.problems}, message
    assert "Fix:" in message
    if secret is not None:
        assert secret not in message and secret not in repr(err.problems)
    assert rec.resources == []


def test_good_registry_hosts_are_accepted() -> None:
    for server in ("registry.example.com", "localhost:5000", "10.0.0.5:5000", "localhost",
                   "registry.example.com:443", "[::1]:5000"):
        assert mlops.ImageRegistry(server=server).server == server


# --- the Dockerfile ----------------------------------------------------------------------


def instructions(path: Path = DOCKERFILE) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", path.read_text())
    found = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            found.append((keyword.upper(), " ".join(rest.split())))
    return found


def final_stage() -> list[tuple[str, str]]:
    steps = instructions()
    start = max(i for i, (k, _) in enumerate(steps) if k == "FROM")
    return steps[start:]


def test_base_image_is_pinned_to_a_patch_release_of_the_tested_python() -> None:
    stages: list[str] = []
    for keyword, args in instructions():
        if keyword != "FROM":
            continue
        image, _, alias = args.partition(" AS ")
        if image in stages:
            continue
        match = re.fullmatch(r"python:(\d+)\.(\d+)\.\d+-slim-bookworm(@sha256:[0-9a-f]{64})?",
                             image)
        assert match, f"unpinned or unexpected base image {image!r}"
        assert (int(match[1]), int(match[2])) == sys.version_info[:2]
        stages.append(alias)


def test_image_runs_as_the_workloads_non_root_user() -> None:
    stage = final_stage()
    users = [args for keyword, args in stage if keyword == "USER"]
    assert users == [f"{RUN_AS_USER}:{RUN_AS_USER}"]
    runs = " ".join(args for keyword, args in stage if keyword == "RUN")
    assert f"--uid {RUN_AS_USER}" in runs and f"--gid {RUN_AS_USER}" in runs
    # Nothing after USER runs as root again.
    after = stage[[k for k, _ in stage].index("USER"):]
    assert all(keyword != "RUN" for keyword, _ in after)


def test_image_installs_exactly_the_pinned_requirements_and_no_pulumi() -> None:
    steps = instructions()
    copied = [args for keyword, args in steps if keyword == "COPY" and "--from" not in args]
    assert any(args.startswith("requirements/runtime.txt ") for args in copied)
    installs = [shlex.split(args) for keyword, args in steps
                if keyword == "RUN" and "pip install" in args]
    requirement_install = next(i for i in installs if "-r" in i)
    assert requirement_install[requirement_install.index("-r") + 1].endswith(
        "requirements/runtime.txt")
    assert "--no-deps" in requirement_install and "--only-binary=:all:" in requirement_install
    assert "check" in requirement_install  # `pip check` of the pinned set
    project_install = next(i for i in installs if "-r" not in i)
    assert "--no-deps" in project_install
    for words in installs:
        assert not any(w.startswith("pulumi") for w in words), words


def test_image_has_oci_labels_an_entrypoint_and_a_healthcheck() -> None:
    stage = final_stage()
    keywords = [k for k, _ in stage]
    labels = " ".join(args for keyword, args in stage if keyword == "LABEL")
    for key in ("title", "description", "version", "revision", "licenses", "base.name"):
        assert f"org.opencontainers.image.{key}=" in labels
    assert ("ARG", f"VERSION={VERSION}") in stage
    assert ("ENTRYPOINT", '["mlops"]') in stage
    assert "HEALTHCHECK" in keywords


def test_dockerignore_lets_through_only_what_the_dockerfile_copies() -> None:
    patterns = [line.strip() for line in (REPO / ".dockerignore").read_text().splitlines()
                if line.strip() and not line.startswith("#")]
    assert patterns[0] == "*"
    allowed = {p[1:].rstrip("/") for p in patterns if p.startswith("!")}
    sources = {src.rstrip("/") for keyword, args in instructions()
               if keyword == "COPY" and "--from" not in args for src in args.split()[:-1]}
    assert sources == allowed


@pytest.mark.slow
def test_checkov_finds_nothing_in_the_dockerfile() -> None:
    result = run_checkov_dockerfile(DOCKERFILE)
    assert result.failed == [], result.failed
    assert result.skipped == []
    assert result.passed > 0


# --- the pinned requirements -------------------------------------------------------------


def _lock_module() -> ModuleType:
    path = REPO / "scripts" / "lock_runtime_requirements.py"
    spec = importlib.util.spec_from_file_location("lock_runtime_requirements", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def pins() -> dict[str, str]:
    found = {}
    for line in LOCK.read_text().splitlines():
        text = line.split("#", 1)[0].strip()
        if text:
            req = Requirement(text)
            (spec,) = req.specifier
            assert spec.operator == "==", f"{text}: pins must be exact"
            found[req.name] = spec.version
    return found


def test_every_pin_is_the_version_the_tests_run_with() -> None:
    pinned = pins()
    installed = {name: metadata.version(name) for name in pinned}
    assert pinned == installed


def test_pins_are_the_complete_current_closure_of_the_runtime_requirements() -> None:
    lock = _lock_module()
    assert lock.render(lock.resolve(lock.read_roots())) == LOCK.read_text(), (
        "requirements/runtime.txt is stale: run `make lock-runtime`")


def test_runtime_pins_leave_out_pulumi_and_the_mlflow_server() -> None:
    pinned = pins()
    assert not [n for n in pinned if n.startswith("pulumi")]
    assert "mlflow-skinny" in pinned
    assert not {"mlflow", "flask", "sqlalchemy", "alembic", "gunicorn"} & set(pinned)
    # What the serving runtime imports (and MLflow needs to load scikit-learn models).
    assert {"skops", "cloudpickle", "scikit-learn", "numpy", "pandas", "uvicorn", "uvloop",
            "httptools", "orjson", "prometheus-client", "pyyaml", "pydantic"} <= set(pinned)


# --- the docs ----------------------------------------------------------------------------


def test_docs_example_declares_a_pushed_image(monkeypatch: pytest.MonkeyPatch) -> None:
    text = (REPO / "docs" / "runtime-image.md").read_text()
    (example,) = re.findall(r"```python\n(.*?)```", text, re.S)
    monkeypatch.chdir(REPO / "stacks")  # where Pulumi runs the reference program
    rec = record(lambda: exec(example, {}), config={"mlops:registryPassword": TOKEN},
                 secret_keys=["mlops:registryPassword"])
    inputs = image_inputs(rec, "runtime-image")
    assert inputs["imageName"] == f"registry.example.com/ml-platform/mlops-runtime:{VERSION}"
    assert inputs["build"]["platform"] == "linux/amd64"
    assert rpc.is_rpc_secret(inputs["registry"])
    assert rec.outputs["runtime_image"]
