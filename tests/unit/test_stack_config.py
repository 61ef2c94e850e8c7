"""The reference stack program rejects malformed stack config with the key the user wrote.

Each case copies the project (Pulumi.yaml and stacks/) into a temporary directory, writes one
bad ``stacks/Pulumi.bad.yaml`` and runs the program under the mock harness, as `mlops render`
does.
"""

from __future__ import annotations

import asyncio
import gc
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from pulumi.runtime import settings

import pulumi_mlops as mlops
from pulumi_mlops.render.harness import ProgramConfigError, record_program

PROJECT = Path(__file__).resolve().parents[2]
URI_PASSWORD = "hunter2-db-secret"


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A copy of the reference project, safe to rewrite."""
    shutil.copy(PROJECT / "Pulumi.yaml", tmp_path / "Pulumi.yaml")
    shutil.copytree(PROJECT / "stacks", tmp_path / "stacks",
                    ignore=shutil.ignore_patterns("__pycache__"))
    return tmp_path


@pytest.fixture
def forget_failed_outputs() -> Iterator[None]:
    """Drop outputs a failed deployment left behind (harness bug, see test_registry_validation)."""
    yield
    settings.SETTINGS.outputs.clear()
    # Mark the failed futures' errors as seen. Otherwise asyncio logs them, with a traceback,
    # whenever the garbage collector happens to run; inside pytest's own traceback formatting
    # that re-enters ast.parse, which Python 3.11 aborts with a SystemError (INTERNALERROR).
    for obj in gc.get_objects():
        if isinstance(obj, asyncio.Future) and obj.done() and not obj.cancelled():
            obj.exception()


def write_stack(project: Path, config: dict[str, Any], stack: str = "bad") -> str:
    (project / "stacks" / f"Pulumi.{stack}.yaml").write_text(yaml.safe_dump({"config": config}))
    return stack


K8S = {"mlops:target": "kubernetes"}





# (config, accepted input paths, a secret that must not be echoed). Where the value is checked
# by a component rather than by the stack's config model, the message names the component's
# input; both spellings are accepted so that naming the config key later stays green.
CASES = [
    pytest.param({"mlops:target": "openshift"}, ("mlops:target",), None,
                 id="unknown-target"),
    pytest.param({"mlops:namespace": "ml"}, ("mlops:target",), None, id="missing-target"),
    pytest.param({"target": "openshift"}, ("mlops:target",), None,
                 id="unknown-target-without-project-prefix"),
    pytest.param({**K8S, "mlops:registry": {"replicas": -1}}, ("mlops:registry.replicas",), None,
                 id="replicas-negative"),
    pytest.param({**K8S, "mlops:registry": {"replicas": "two"}}, ("mlops:registry.replicas",),
                 None, id="replicas-not-a-number"),
    pytest.param({**K8S, "mlops:registery": {"replicas": 2}}, ("mlops:registery",), None,
                 id="unknown-key-typo"),
    pytest.param({**K8S, "mlops:registry": {"replica": 2}}, ("mlops:registry.replica",), None,
                 id="unknown-nested-key-typo"),
    pytest.param({**K8S, "mlops:registry": "big"}, ("mlops:registry",), None,
                 id="registry-not-a-mapping"),
    pytest.param({**K8S, "mlops:registry": {"database": "mongo"}}, ("mlops:registry.database",),
                 None, id="database-unknown-kind"),
    pytest.param({**K8S, "mlops:registry": {"database": "external"}}, ("mlops:databaseUri",),
                 None, id="external-database-without-uri"),
    pytest.param({**K8S, "mlops:registry": {"defaultPermission": "ALL"}},
                 ("mlops:registry.defaultPermission",), None, id="default-permission-unknown"),
    pytest.param({**K8S, "mlops:registry": {"artifactsDestination": "ftp://x"}},
                 ("mlops:registry.artifactsDestination", "artifacts_destination"), None,
                 id="artifacts-destination-ftp"),
    pytest.param({"mlops:target": "docker", "mlops:registry": {"replicas": 2}},
                 ("mlops:registry.replicas", "replicas"), None, id="replicas-2-on-docker"),
    pytest.param({**K8S, "mlops:registry": {"database": "sqlite"}},
                 ("mlops:registry.database", "database"), None, id="sqlite-on-kubernetes"),
    pytest.param({**K8S, "mlops:registry": {"resources": {"cpuLimit": "lots"}}},
                 ("mlops:registry.resources.cpuLimit", "cpu_limit"), None,
                 id="cpu-limit-not-a-quantity"),
    pytest.param({**K8S, "mlops:namespace": "Bad_NS"}, ("mlops:namespace", "namespace"), None,
                 id="namespace-not-dns-label"),
    pytest.param({**K8S, "mlops:storageClass": "Fast_SSD"},
                 ("mlops:storageClass", "storage_class"), None, id="storage-class-not-dns-name"),
    pytest.param({"mlops:target": "docker", "mlops:publishHost": "everywhere"},
                 ("mlops:publishHost", "publish_host"), None, id="publish-host-not-an-address"),
    pytest.param({**K8S, "mlops:registry": {"database": "postgres", "databaseStorage": "10 GB"}},
                 ("mlops:registry.databaseStorage", "storage_size"), None,
                 id="database-storage-not-a-quantity"),
    pytest.param({**K8S, "mlops:registry": {"ingressHost": "Not A Host"}},
                 ("mlops:registry.ingressHost", "host"), None, id="ingress-host-not-dns-name"),
    pytest.param(
        {**K8S, "mlops:registry": {"database": "external"},
         "mlops:databaseUri": f"postgresql://mlflow:{URI_PASSWORD}@:5432/mlflow"},
        ("mlops:databaseUri", "uri"), URI_PASSWORD, id="plaintext-database-uri-without-host"),
]


@pytest.mark.parametrize(("config", "paths", "secret"), CASES)
def test_malformed_stack_config_is_rejected_with_the_key(
    project: Path, config: dict[str, Any], paths: tuple[str, ...], secret: str | None
) -> None:
    stack = write_stack(project, config)

    with pytest.raises(mlops.ValidationError) as raised:
        record_program(project, stack)

    message = str(raised.value)
    assert any(f"`{p}`" in message for p in paths), message
    assert {p.path for p in raised.value.problems} & set(paths), message
    assert "Fix:" in message
    if secret is not None:
        assert secret not in message


@pytest.mark.parametrize("stack", ["dev", "staging", "prod"])
def test_shipped_stacks_record_and_declare_resources(project: Path, stack: str) -> None:
    recording = record_program(project, stack)

    assert recording.resources
    assert recording.of_type("mlops:index:ModelRegistry")
    assert "tracking_uri" in recording.outputs


def test_unknown_stack_lists_the_known_ones(project: Path) -> None:
    with pytest.raises(ProgramConfigError, match=r"known stacks are dev, prod, staging"):
        record_program(project, "qa")


@pytest.mark.usefixtures("forget_failed_outputs")
def test_external_database_with_secret_uri_renders(project: Path) -> None:
    stack = write_stack(project, {
        **K8S,
        "mlops:registry": {"database": "external"},
        "mlops:databaseUri": {"secure": "v1:AAAAAAAAAAAAAAAA:BBBBBBBBBBBBBBBBBBBBBBBBBBBB"},
    })

    recording = record_program(project, stack)

    assert recording.of_type("mlops:index:ModelRegistry")


def test_numeric_namespace_is_a_namespace(project: Path) -> None:
    stack = write_stack(project, {**K8S, "mlops:namespace": "123"})

    recording = record_program(project, stack)

    assert recording.of_type("mlops:index:ModelRegistry")
