"""The Docker apply harness's mapping from pulumi-docker inputs to the Engine API, and its
refusals, without an engine (tests/e2e/test_docker_engine_e2e.py runs it on one).

Expected values follow the provider's own mapping (kreuzwerker/terraform-provider-docker v4.5,
which pulumi-docker 5.x bridges): memory in MB, ``cpus`` as NanoCPUs, Go durations, binds
``name:path:rw|ro``, ``init`` always sent, default network mode ``bridge``, restart ``no``.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import docker
import pytest

import pulumi_mlops as mlops
from pulumi_mlops.render import record, record_program, unwrap_secrets
from pulumi_mlops.targets.docker._containers import cpus as docker_cpus
from pulumi_mlops.targets.docker._containers import go_duration
from tests.docker_engine.apply import (
    CONTAINER,
    UnsupportedInputError,
    check_supported,
    container_change,
    container_config,
    decimal_cpus,
    docker_resources,
    go_duration_ns,
    go_duration_string,
    nano_cpus,
    read_back,
)
from tests.recording import RUNTIME_IMAGE

REPO = Path(__file__).resolve().parents[2]

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
    with pytest.raises(UnsupportedInputError, match=r"`svc`\.gpus: not implemented"):
        check_supported(bad)
    nested = {**service.inputs, "healthcheck": {**service.inputs["healthcheck"], "bogus": 1}}
    with pytest.raises(UnsupportedInputError, match=r"healthcheck\.bogus: not implemented"):
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
    body = container_config(API, {
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
                        "startPeriod": "5m0s", "startInterval": "500ms", "retries": 3},
    })
    host = body["HostConfig"]
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
    assert host["Tmpfs"] == {"/tmp": "rw,size=1m"}
    assert body["Image"] == "img:1" and body["User"] == "10001:10001"
    assert body["Entrypoint"] == ["mlops", "serve"] and body["Env"] == ["A=1"]
    assert body["Labels"] == {"a": "b"}
    assert body["ExposedPorts"] == {"8080/tcp": {}}
    assert body["Healthcheck"] == {"Test": ["CMD", "true"], "Interval": 10 * 10**9,
                                   "Timeout": 90 * 10**9, "StartPeriod": 300 * 10**9,
                                   "StartInterval": 500 * 10**6, "Retries": 3}


@pytest.mark.parametrize(("text", "ns"), [("0s", 0), ("0", 0), ("1h", 3600 * 10**9),
                                          ("1.5s", 1_500_000_000), ("2m3s", 123 * 10**9),
                                          ("250us", 250_000), (".5s", 500_000_000),
                                          ("1.s", 10**9), ("3μs", 3_000)])
def test_go_durations(text: str, ns: int) -> None:
    assert go_duration_ns(text) == ns


@pytest.mark.parametrize("text", ["10", "1d", "s", "1s junk", "-1s", ""])
def test_not_a_go_duration_is_refused(text: str) -> None:
    with pytest.raises(UnsupportedInputError):
        go_duration_ns(text)


@pytest.mark.parametrize(("seconds", "text"), [(0, "0s"), (2, "2s"), (10, "10s"), (60, "1m0s"),
                                               (300, "5m0s"), (3661, "1h1m1s")])
def test_durations_read_back_as_go_writes_them(seconds: int, text: str) -> None:
    assert go_duration_string(seconds * 10**9) == text
    assert go_duration(seconds) == text  # what the materializer emits: no diff on re-read


# The provider's own expectations for nanoInt64ToDecimalString (helpers_test.go).
@pytest.mark.parametrize(("nano", "text"), [(10**9, "1.0"), (2 * 10**9, "2.0"),
                                            (250_000_000, "0.25"), (500_000_000, "0.5"),
                                            (1_500_000_000, "1.5"), (0, "0")])
def test_cpus_read_back_as_the_provider_writes_them(nano: int, text: str) -> None:
    assert decimal_cpus(nano) == text
    assert nano_cpus(text) == nano


@pytest.mark.parametrize("text", ["0.0000000001", "-1"])
def test_cpus_finer_than_a_nano_cpu_are_refused(text: str) -> None:
    with pytest.raises(UnsupportedInputError):
        nano_cpus(text)


@pytest.mark.parametrize("quantity", ["1", "2", "250m", "500m", "1500m", "4"])
def test_the_materializer_writes_cpus_as_the_provider_reads_them_back(quantity: str) -> None:
    written = docker_cpus(quantity)
    assert decimal_cpus(nano_cpus(written)) == written


def test_every_declared_container_has_no_diff_against_its_own_read_back() -> None:
    # A spelling the provider reads back differently (cpus "1" → "1.0", "300s" → "5m0s") is a
    # diff on every `pulumi up`, and for a ForceNew field a replacement every time.
    for stack in ("dev", "staging", "prod"):
        recording = record_program(REPO, stack, preview=False)
        for container in recording.of_type(CONTAINER):
            inputs = unwrap_secrets(dict(container.inputs))
            assert container_change(read_back(inputs), inputs)[0] == "none", container.name


def _service_inputs() -> dict[str, Any]:
    recording = _dev_like()
    (service,) = [r for r in recording.resources  # type: ignore[attr-defined]
                  if r.type == CONTAINER and r.name == "svc"]
    return dict(unwrap_secrets(dict(service.inputs)))


@pytest.mark.parametrize(("change", "expected"), [
    ({"cpus": "0.5"}, "replace"),
    ({"entrypoints": ["mlops", "serve", "--workers", "2"]}, "replace"),
    ({"image": "other:2"}, "replace"),
    ({"memory": 2048}, "update"),
    ({"restart": "always"}, "update"),
    ({"tmpfs": {"/tmp": "rw,size=1"}}, "state"),
    ({"waitTimeout": 999}, "state"),
    ({"mustRun": True}, "none"),      # the default, now spelled out
])
def test_container_changes_are_decided_as_the_provider_decides(change: dict[str, Any],
                                                               expected: str) -> None:
    inputs = _service_inputs()
    assert container_change(read_back(inputs), {**inputs, **change})[0] == expected


def test_replace_on_changes_turns_a_state_only_change_into_a_replacement() -> None:
    inputs = _service_inputs()
    changed = {**inputs, "tmpfs": {"/tmp": "rw,size=1"}}
    assert container_change(read_back(inputs), changed, ["tmpfs"])[0] == "replace"


def test_set_fields_in_another_order_are_no_change() -> None:
    inputs = _service_inputs()
    reordered = {**inputs, "envs": list(reversed(inputs["envs"])),
                 "labels": list(reversed(inputs["labels"]))}
    assert container_change(read_back(inputs), reordered)[0] == "none"


@pytest.mark.parametrize(("inputs", "message"), [
    ({"healthcheck": "x"}, "expected an object"),
    ({"volumes": [[{"volumeName": "v"}]]}, r"volumes\[0\]: expected an object"),
    ({"tmpfs": {"/x": {"size": 1}}}, r"tmpfs\./x: expected a str"),
    ({"ports": [{"internal": "8080"}]}, "expected a num"),
    ({"networksAdvanced": [{"name": "n", "ipv4Address": "10.0.0.2"}]},
     r"networksAdvanced\[0\]\.ipv4Address: not implemented"),
])
def test_wrong_shapes_are_refused_at_any_depth(inputs: dict[str, Any], message: str) -> None:
    recording = _dev_like()
    (service,) = [r for r in recording.resources  # type: ignore[attr-defined]
                  if r.type == CONTAINER and r.name == "svc"]
    with pytest.raises(UnsupportedInputError, match=message):
        check_supported(dataclasses.replace(service, inputs={**service.inputs, **inputs}))


@pytest.mark.parametrize("options", [
    {"custom_timeouts": {"create": "5m"}}, {"ignore_changes": ("envs",)}, {"protect": True},
    {"provider": "urn:pulumi:dev::p::pulumi:providers:docker::x::id"}])
def test_resource_options_the_harness_does_not_model_are_refused(options: dict[str, Any]) -> None:
    recording = _dev_like()
    network = recording.of_type("docker:index/network:Network")[0]  # type: ignore[attr-defined]
    with pytest.raises(UnsupportedInputError):
        check_supported(dataclasses.replace(network, **options))


def test_an_explicit_docker_provider_is_refused() -> None:
    recording = _dev_like()
    network = recording.of_type("docker:index/network:Network")[0]  # type: ignore[attr-defined]
    with pytest.raises(UnsupportedInputError, match="explicit Docker provider"):
        check_supported(dataclasses.replace(network, type="pulumi:providers:docker"))
