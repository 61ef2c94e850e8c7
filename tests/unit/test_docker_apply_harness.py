"""The Docker apply harness's mapping from pulumi-docker inputs to the Engine API, and its
refusals, without an engine (tests/e2e/test_docker_engine_e2e.py runs it on one).

Expected values follow the provider's own mapping (kreuzwerker/terraform-provider-docker v4.5,
which pulumi-docker 5.x bridges): memory in MB, ``cpus`` as NanoCPUs, Go durations, binds
``name:path:rw|ro``, ``init`` always sent, default network mode ``bridge``, restart ``no``.
"""

from __future__ import annotations

import dataclasses
import inspect

import docker
import pytest
from hypothesis import given
from hypothesis import strategies as st

import pulumi_mlops as mlops
from pulumi_mlops.render import record
from tests.docker_engine.apply import (
    CONTAINER,
    IMPLEMENTED,
    UnsupportedInputError,
    check_supported,
    container_config,
    docker_resources,
    go_duration_ns,
    nano_cpus,
)
from tests.recording import RUNTIME_IMAGE

API = docker.APIClient(base_url="unix:///nonexistent.sock", version="1.41")


def _dev_like() -> object:
    def program() -> None:
        target = mlops.DockerTarget()
        registry = mlops.ModelRegistry("registry", target=target)
        mlops.ModelService("svc", target=target, registry=registry, image=RUNTIME_IMAGE,
                           model_uri="models:/m@champion")

    return record(program)


def test_a_recorded_docker_program_uses_only_implemented_fields() -> None:
    # Every Docker resource the targets declare today passes the refusal check; a field a
    # materializer starts to set fails here (and in the e2e apply) until the harness has it.
    resources = docker_resources(_dev_like())  # type: ignore[arg-type]
    assert {r.type for r in resources} >= {CONTAINER, "docker:index/network:Network",
                                          "docker:index/volume:Volume"}


def test_unknown_container_field_is_refused_naming_it() -> None:
    recording = _dev_like()
    (service,) = [r for r in recording.resources  # type: ignore[attr-defined]
                  if r.type == CONTAINER and r.name == "svc"]
    bad = dataclasses.replace(service, inputs={**service.inputs, "gpus": "all"})
    with pytest.raises(UnsupportedInputError, match="`gpus`"):
        check_supported(bad)
    nested = {**service.inputs, "healthcheck": {**service.inputs["healthcheck"], "bogus": 1}}
    with pytest.raises(UnsupportedInputError, match=r"`healthcheck\.bogus`"):
        check_supported(dataclasses.replace(service, inputs=nested))


def test_unknown_resource_type_is_refused() -> None:
    recording = _dev_like()
    network = recording.of_type("docker:index/network:Network")[0]  # type: ignore[attr-defined]
    with pytest.raises(UnsupportedInputError, match="does not implement this resource type"):
        check_supported(dataclasses.replace(network, type="docker:index/plugin:Plugin"))


def test_dependencies_come_before_dependents() -> None:
    resources = docker_resources(_dev_like())  # type: ignore[arg-type]
    position = {r.urn: i for i, r in enumerate(resources)}
    for resource in resources:
        for dep in resource.dependencies:
            if dep in position:
                assert position[dep] < position[resource.urn], resource.name
    names = [r.name for r in resources]
    assert names.index("registry-mlflow-init") < names.index("registry-mlflow") < names.index("svc")


def test_container_inputs_map_as_the_provider_maps_them() -> None:
    config = container_config(API, {
        "name": "svc", "image": "img:1", "entrypoints": ["mlops", "serve"], "envs": ["A=1"],
        "user": "10001:10001", "readOnly": True, "memory": 1024, "cpus": "0.25",
        "tmpfs": {"/tmp": "rw,size=1m"}, "capabilities": {"drops": ["ALL"], "adds": ["CHOWN"]},
        "securityOpts": ["no-new-privileges:true"],
        "volumes": [{"volumeName": "data", "containerPath": "/d"},
                    {"volumeName": "cfg", "containerPath": "/etc/x", "readOnly": True}],
        "ports": [{"internal": 8080, "external": 18080, "ip": "127.0.0.1"}],
        "ulimits": [{"name": "nproc", "soft": 32, "hard": 64}],
        "labels": [{"label": "a", "value": "b"}],
        "healthcheck": {"tests": ["CMD", "true"], "interval": "10s", "timeout": "1m30s",
                        "startPeriod": "300s", "startInterval": "500ms", "retries": 3},
    })
    host = config["host_config"]
    assert host["Memory"] == 1024 * 1024 * 1024
    assert host["NanoCpus"] == 250_000_000
    assert host["ReadonlyRootfs"] is True
    assert host["Init"] is False  # always sent: the daemon default does not apply
    assert host["NetworkMode"] == "bridge"
    assert host["RestartPolicy"] == {"Name": "no", "MaximumRetryCount": 0}
    assert host["Binds"] == ["data:/d:rw", "cfg:/etc/x:ro"]
    assert host["PortBindings"] == {"8080/tcp": [{"HostIp": "127.0.0.1", "HostPort": "18080"}]}
    assert host["CapDrop"] == ["ALL"] and host["CapAdd"] == ["CHOWN"]
    assert host["Ulimits"] == [{"Name": "nproc", "Soft": 32, "Hard": 64}]
    assert config["entrypoint"] == ["mlops", "serve"]
    assert config["labels"] == {"a": "b"}
    assert config["healthcheck"] == {"Test": ["CMD", "true"], "Interval": 10 * 10**9,
                                     "Timeout": 90 * 10**9, "StartPeriod": 300 * 10**9,
                                     "StartInterval": 500 * 10**6, "Retries": 3}


@pytest.mark.parametrize(("text", "ns"), [("0s", 0), ("1h", 3600 * 10**9), ("1.5s", 1_500_000_000),
                                          ("2m3s", 123 * 10**9), ("250us", 250_000)])
def test_go_durations(text: str, ns: int) -> None:
    assert go_duration_ns(text) == ns


@pytest.mark.parametrize("text", ["10", "1d", "s", "1s junk"])
def test_not_a_go_duration_is_refused(text: str) -> None:
    with pytest.raises(UnsupportedInputError):
        go_duration_ns(text)


@given(st.decimals(min_value=0, max_value=64, places=3))
def test_cpus_are_nano_cpus(cpus: object) -> None:
    assert nano_cpus(str(cpus)) == round(float(str(cpus)) * 1e9)


def test_every_implemented_container_field_is_mapped_or_a_lifecycle_flag() -> None:
    lifecycle = {"start", "attach", "mustRun", "wait", "waitTimeout",
                 "destroyGraceSeconds", "removeVolumes", "networksAdvanced", "uploads"}
    source = inspect.getsource(container_config)
    for key in IMPLEMENTED[CONTAINER] - lifecycle:
        assert f'"{key}"' in source, key
