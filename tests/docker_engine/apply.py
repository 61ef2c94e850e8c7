"""Apply a recorded program's Docker resources to a real engine, as pulumi-docker would.

The Pulumi engine and the pulumi-docker provider cannot run here; this harness stands in for
them, so that what the Docker target declares runs for real. It takes a `Recording` (the inputs
the provider would receive) and drives the engine through the Docker SDK's low-level API with
the mapping the provider uses: pulumi-docker 5.x (``provider/resources.go``: the container is
``DeleteBeforeReplace``; ``provider/image.go``: the native ``Image``), which bridges
kreuzwerker/terraform-provider-docker v4.5 (``internal/provider/resource_docker_container*.go``,
``resource_docker_network*.go``, ``resource_docker_volume.go``, ``resource_docker_image*.go``):

- Containers: created with the image's entrypoint/command, env, user, labels, health check
  (durations as Go parses them), read-only root, tmpfs, capabilities, security options, ``init``
  (always sent), volumes as binds (``name:path:rw|ro``), published ports, ulimits, memory (MB) and
  ``cpus`` (NanoCPUs), restart policy. ``networksAdvanced`` are connected after create and
  before start, after disconnecting ``bridge``; ``uploads`` are copied in before start.
  ``attach`` waits for the container to stop and does not fail on its exit code (the provider
  ignores it; the tests assert it). ``wait`` polls the health status every second until
  ``healthy`` or ``waitTimeout`` (default 60 s) and then fails, leaving the container in place.
  Replacing a container deletes it first (pulumi-docker sets DeleteBeforeReplace); changing only
  ``restart``, ``memory`` and the other updatable limits updates it in place. A container that
  ``mustRun`` (the default) and has stopped is started again by the next apply, as the
  provider's read-then-update does.
- Networks and volumes: created by name with their labels; any change would replace them, which
  the harness refuses (replacing a volume loses its data; the tests must never need it).
- ``docker.Image`` (build, ``skipPush`` only: no registry is reachable): built from
  ``build.context`` and ``build.dockerfile``, both relative to the program's directory, tagged
  ``imageName``; outputs ``repoDigest`` as the local image ID, as the provider does without a
  push. Built with the classic builder on the host network (the test daemon has no bridge).
- ``RemoteImage``: the image must already be local (the provider then does not pull); it is
  never pulled here, and ``keepLocally`` images are left on destroy.

Any input field the harness does not implement is refused with `UnsupportedInputError`, so a new
field a materializer starts to set can never be silently ignored. Secrets are unwrapped in
memory from the recording and handed to the engine only; nothing here writes or logs inputs.

Outputs that the mocks made up (a `RemoteImage`'s ``imageId``) are mapped to the real ones: every
input string equal to a recorded output of a resource applied before is replaced by that
resource's real output.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import io
import json
import re
import tarfile
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import docker
from docker.types import Ulimit

from pulumi_mlops.render import RecordedResource, Recording, unwrap_secrets

NETWORK = "docker:index/network:Network"
VOLUME = "docker:index/volume:Volume"
REMOTE_IMAGE = "docker:index/remoteImage:RemoteImage"
IMAGE = "docker:index/image:Image"
CONTAINER = "docker:index/container:Container"

ATTACH_TIMEOUT = 20 * 60.0
"""The provider's default create timeout, which bounds ``attach``."""

# Input fields each resource type implements (pulumi-docker names, as recorded).
IMPLEMENTED: dict[str, frozenset[str]] = {
    NETWORK: frozenset({"name", "labels", "driver", "internal", "attachable"}),
    VOLUME: frozenset({"name", "labels", "driver"}),
    REMOTE_IMAGE: frozenset({"name", "keepLocally"}),
    IMAGE: frozenset({"imageName", "build", "skipPush", "buildOnPreview"}),
    CONTAINER: frozenset({
        "name", "image", "entrypoints", "command", "envs", "user", "labels", "healthcheck",
        "readOnly", "tmpfs", "capabilities", "securityOpts", "init", "volumes", "ports",
        "ulimits", "memory", "memorySwap", "cpus", "restart", "maxRetryCount", "networkMode",
        "networksAdvanced", "uploads", "workingDir", "hostname", "start", "attach", "mustRun",
        "wait", "waitTimeout", "destroyGraceSeconds", "removeVolumes",
    }),
}
NESTED: dict[str, frozenset[str]] = {
    "build": frozenset({"context", "dockerfile"}),
    "healthcheck": frozenset({"tests", "interval", "timeout", "startPeriod", "startInterval",
                              "retries"}),
    "capabilities": frozenset({"adds", "drops"}),
    "volumes": frozenset({"volumeName", "containerPath", "readOnly", "hostPath"}),
    "ports": frozenset({"internal", "external", "ip", "protocol"}),
    "ulimits": frozenset({"name", "soft", "hard"}),
    "networksAdvanced": frozenset({"name", "aliases"}),
    "uploads": frozenset({"file", "content", "contentBase64", "executable", "permissions"}),
    "labels": frozenset({"label", "value"}),
}
CONTAINER_UPDATABLE = frozenset({"restart", "maxRetryCount", "memory", "memorySwap"})
"""What the provider changes in place (``ContainerUpdate``); any other change replaces."""


class UnsupportedInputError(ValueError):
    """A recorded input the harness does not implement (so would silently ignore)."""


class ApplyError(RuntimeError):
    """The engine refused or a resource did not reach its declared state."""


@dataclass
class Applied:
    """One resource as it exists on the engine."""

    type: str
    name: str
    inputs: dict[str, Any]
    real_id: str
    outputs: dict[str, Any] = field(default_factory=dict)
    exit_code: int | None = None


def check_supported(resource: RecordedResource) -> None:
    """Refuse a Docker resource with a type or input field the harness does not implement."""
    allowed = IMPLEMENTED.get(resource.type)
    if allowed is None:
        raise UnsupportedInputError(
            f"{resource.type} `{resource.name}`: the apply harness does not implement this "
            "resource type")
    for key, value in resource.inputs.items():
        if key not in allowed:
            raise UnsupportedInputError(
                f"{resource.type} `{resource.name}`: input `{key}` is not implemented by the "
                "apply harness; implement it as the provider does, or stop declaring it")
        items = value if isinstance(value, list) else [value]
        for item in items:
            if key in NESTED and isinstance(item, Mapping):
                unknown = set(item) - NESTED[key]
                if unknown:
                    raise UnsupportedInputError(
                        f"{resource.type} `{resource.name}`: `{key}.{sorted(unknown)[0]}` is "
                        "not implemented by the apply harness")


_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)")
_UNIT_NS = {"ns": 1, "us": 1_000, "µs": 1_000, "ms": 1_000_000, "s": 1_000_000_000,
            "m": 60_000_000_000, "h": 3_600_000_000_000}


def go_duration_ns(text: str) -> int:
    """A Go duration string (``"1m30s"``, ``"500ms"``) in nanoseconds, as ``time.ParseDuration``."""
    if text in ("0", ""):
        return 0
    parts = _DURATION.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise UnsupportedInputError(f"{text!r} is not a Go duration")
    return int(sum(float(n) * _UNIT_NS[u] for n, u in parts))


def nano_cpus(text: str) -> int:
    """``cpus`` (``"0.25"``) as NanoCPUs, as the provider's ``opts.ParseCPUs``."""
    return round(float(text) * 1e9)


def _labels(value: Iterable[Mapping[str, str]] | None) -> dict[str, str]:
    return {item["label"]: item["value"] for item in value or []}


def container_config(client: docker.APIClient, inputs: Mapping[str, Any]) -> dict[str, Any]:
    """The ``create_container`` keyword arguments for a recorded container's inputs."""
    host: dict[str, Any] = {
        "read_only": bool(inputs.get("readOnly", False)),
        "init": bool(inputs.get("init", False)),
        "network_mode": inputs.get("networkMode", "bridge"),
        "restart_policy": {"Name": inputs.get("restart", "no"),
                           "MaximumRetryCount": int(inputs.get("maxRetryCount", 0))},
    }
    if "tmpfs" in inputs:
        host["tmpfs"] = dict(inputs["tmpfs"])
    caps = inputs.get("capabilities") or {}
    if caps.get("adds"):
        host["cap_add"] = list(caps["adds"])
    if caps.get("drops"):
        host["cap_drop"] = list(caps["drops"])
    if inputs.get("securityOpts"):
        host["security_opt"] = list(inputs["securityOpts"])
    if "memory" in inputs:
        host["mem_limit"] = int(inputs["memory"]) * 1024 * 1024
    if "memorySwap" in inputs:
        swap = int(inputs["memorySwap"])
        host["memswap_limit"] = swap * 1024 * 1024 if swap > 0 else swap
    if "cpus" in inputs:
        host["nano_cpus"] = nano_cpus(str(inputs["cpus"]))
    if inputs.get("ulimits"):
        host["ulimits"] = [Ulimit(name=u["name"], soft=int(u["soft"]), hard=int(u["hard"]))
                           for u in inputs["ulimits"]]
    binds, volume_paths = [], []
    for volume in inputs.get("volumes") or []:
        source = volume.get("hostPath") or volume["volumeName"]
        mode = "ro" if volume.get("readOnly") else "rw"
        binds.append(f"{source}:{volume['containerPath']}:{mode}")
        volume_paths.append(volume["containerPath"])
    if binds:
        host["binds"] = binds
    exposed, bindings = [], {}
    for port in inputs.get("ports") or []:
        key = f"{int(port['internal'])}/{port.get('protocol', 'tcp')}"
        exposed.append(key)
        bindings[key] = [(port.get("ip", "0.0.0.0"), str(int(port.get("external", 0))))]
    if bindings:
        host["port_bindings"] = bindings
    config: dict[str, Any] = {
        "image": inputs["image"],
        "name": inputs.get("name"),
        "host_config": client.create_host_config(**host),
    }
    for key, arg in (("entrypoints", "entrypoint"), ("command", "command")):
        if inputs.get(key):
            config[arg] = list(inputs[key])
    for key, arg in (("envs", "environment"), ("user", "user"), ("workingDir", "working_dir"),
                     ("hostname", "hostname")):
        if inputs.get(key):
            config[arg] = inputs[key]
    if inputs.get("labels"):
        config["labels"] = _labels(inputs["labels"])
    if exposed:
        config["ports"] = [tuple(p.split("/")) for p in exposed]
    if volume_paths:
        config["volumes"] = volume_paths
    check = inputs.get("healthcheck")
    if check:
        config["healthcheck"] = {
            "Test": list(check["tests"]),
            "Interval": go_duration_ns(check.get("interval", "0s")),
            "Timeout": go_duration_ns(check.get("timeout", "0s")),
            "StartPeriod": go_duration_ns(check.get("startPeriod", "0s")),
            # API 1.44 and later; an older engine ignores it, as it would the provider's.
            "StartInterval": go_duration_ns(check.get("startInterval", "0s")),
            "Retries": int(check.get("retries", 0)),
        }
    return config


def _upload_archive(uploads: Iterable[Mapping[str, Any]]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for upload in uploads:
            if "contentBase64" in upload:
                data = base64.b64decode(upload["contentBase64"])
            else:
                data = str(upload["content"]).encode()
            info = tarfile.TarInfo(str(upload["file"]).lstrip("/"))
            info.size = len(data)
            if upload.get("permissions"):
                info.mode = int(str(upload["permissions"]), 8)
            else:
                info.mode = 0o744 if upload.get("executable") else 0o644
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def _replace_strings(value: Any, mapping: Mapping[str, str]) -> Any:
    if isinstance(value, str):
        return mapping.get(value, value)
    if isinstance(value, dict):
        return {k: _replace_strings(v, mapping) for k, v in value.items()}
    if isinstance(value, list):
        return [_replace_strings(v, mapping) for v in value]
    return value


def _digest(inputs: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(inputs, sort_keys=True, default=str).encode()).hexdigest()


def docker_resources(recording: Recording) -> list[RecordedResource]:
    """The recording's Docker resources in dependency order (registration order breaks ties)."""
    docker_types = [r for r in recording.resources if r.type.startswith("docker:")]
    for resource in docker_types:
        check_supported(resource)
    by_urn = {r.urn: r for r in recording.resources}
    children: dict[str, list[str]] = {}
    for r in recording.resources:
        if r.parent:
            children.setdefault(r.parent, []).append(r.urn)

    def expand(urn: str) -> set[str]:
        # A dependency on a component is a dependency on everything under it.
        found = {urn}
        for child in children.get(urn, []):
            found |= expand(child)
        return found

    ordered: list[RecordedResource] = []
    done: set[str] = set()
    visiting: set[str] = set()

    def visit(resource: RecordedResource) -> None:
        if resource.urn in done:
            return
        if resource.urn in visiting:
            raise ApplyError(f"dependency cycle through `{resource.name}`")
        visiting.add(resource.urn)
        for dep in resource.dependencies:
            for urn in sorted(expand(dep)):
                if urn in by_urn and by_urn[urn].type.startswith("docker:"):
                    visit(by_urn[urn])
        visiting.discard(resource.urn)
        done.add(resource.urn)
        ordered.append(resource)

    for resource in docker_types:
        visit(resource)
    return ordered


class DockerStack:
    """The state of one stack on one engine, across applies (as Pulumi's state would be).

    Args:
        client: A Docker SDK client for the engine.
        program_dir: The Pulumi program's directory (relative build paths resolve from it).
        log: Where progress lines go (resource names and outcomes; never inputs).
    """

    def __init__(self, client: docker.DockerClient, program_dir: Path,
                 log: Callable[[str], None] = print) -> None:
        self.client = client
        self.api: docker.APIClient = client.api
        self.program_dir = program_dir.resolve()
        self.log = log
        self.state: dict[str, Applied] = {}
        self.events: list[tuple[str, str]] = []
        """(operation, resource name) for each change made, in order."""
        self.durations: dict[str, float] = {}
        """Seconds each resource's last create took (an image's build, a container's wait)."""

    # --- the apply loop ---------------------------------------------------------------------

    def apply(self, recording: Recording) -> None:
        """Bring the engine to what ``recording`` declares: create, update, replace, delete."""
        resources = docker_resources(recording)
        wanted = {r.urn for r in resources}
        for urn in [u for u in reversed(list(self.state)) if u not in wanted]:
            self._delete(urn)
        substitutions: dict[str, str] = {}
        for resource in resources:
            inputs = _replace_strings(unwrap_secrets(dict(resource.inputs)), substitutions)
            applied = self.state.get(resource.urn)
            if applied is None:
                applied = self._create(resource, inputs)
            elif _digest(applied.inputs) == _digest(inputs):
                if resource.type == CONTAINER:
                    self._start_if_stopped(applied)
            else:
                changed = {k for k in set(applied.inputs) | set(inputs)
                           if applied.inputs.get(k) != inputs.get(k)}
                if resource.type == CONTAINER and changed <= CONTAINER_UPDATABLE:
                    self._update_container(applied, inputs)
                elif resource.type in (CONTAINER, IMAGE):
                    self._delete(resource.urn)
                    applied = self._create(resource, inputs)
                else:
                    raise ApplyError(
                        f"{resource.type} `{resource.name}` would be replaced (changed: "
                        f"{sorted(changed)}); replacing a network or volume is refused here")
            for key, recorded in unwrap_secrets(dict(resource.outputs)).items():
                real = applied.outputs.get(key)
                if isinstance(recorded, str) and isinstance(real, str) and recorded != real:
                    substitutions[recorded] = real

    def remove_containers(self) -> None:
        """Remove every container of the stack (as deleting them by hand would) and forget them."""
        for urn in [u for u in reversed(list(self.state)) if self.state[u].type == CONTAINER]:
            self._delete(urn)

    def destroy(self) -> None:
        """Delete everything the stack created, in reverse order."""
        for urn in reversed(list(self.state)):
            self._delete(urn)

    def container(self, name: str) -> Any:
        """The engine's container object for the stack's container ``name``."""
        for applied in self.state.values():
            if applied.type == CONTAINER and applied.name == name:
                return self.client.containers.get(applied.real_id)
        raise KeyError(name)

    def applied(self, name: str) -> Applied:
        """The stack's state for the container ``name``."""
        for applied in self.state.values():
            if applied.type == CONTAINER and applied.name == name:
                return applied
        raise KeyError(name)

    # --- per type -----------------------------------------------------------------------------

    def _create(self, resource: RecordedResource, inputs: dict[str, Any]) -> Applied:
        create = {NETWORK: self._create_network, VOLUME: self._create_volume,
                  REMOTE_IMAGE: self._create_remote_image, IMAGE: self._create_image,
                  CONTAINER: self._create_container}[resource.type]
        started = time.monotonic()
        applied = create(resource, inputs)
        self.state[resource.urn] = applied
        self.events.append(("create", resource.name))
        self.durations[resource.name] = time.monotonic() - started
        self.log(f"created {resource.type.rsplit(':', 1)[-1]} {resource.name} "
                 f"({self.durations[resource.name]:.1f}s)")
        return applied

    def _create_network(self, resource: RecordedResource, inputs: dict[str, Any]) -> Applied:
        network = self.client.networks.create(
            inputs["name"], driver=inputs.get("driver") or None,
            labels=_labels(inputs.get("labels")),
            internal=bool(inputs.get("internal", False)),
            attachable=bool(inputs.get("attachable", False)))
        return Applied(resource.type, resource.name, inputs, network.id,
                       {"id": network.id, "name": inputs["name"]})

    def _create_volume(self, resource: RecordedResource, inputs: dict[str, Any]) -> Applied:
        # Creating a volume that exists returns it (the engine's create is idempotent by name):
        # a volume outlives a lost state, as on a host.
        name = inputs["name"]
        volume = self.client.volumes.create(name, driver=inputs.get("driver") or "local",
                                            labels=_labels(inputs.get("labels")))
        return Applied(resource.type, resource.name, inputs, volume.id,
                       {"id": volume.id, "name": name,
                        "mountpoint": volume.attrs.get("Mountpoint", "")})

    def _create_remote_image(self, resource: RecordedResource, inputs: dict[str, Any]) -> Applied:
        name = inputs["name"]
        try:
            image = self.client.images.get(name)
        except docker.errors.ImageNotFound:
            raise ApplyError(
                f"RemoteImage `{resource.name}`: {name} is not on the engine and no registry is "
                "reachable here; build its stand-in first (tests/docker_engine/images.py)"
            ) from None
        digests = image.attrs.get("RepoDigests") or []
        return Applied(resource.type, resource.name, inputs, image.id,
                       {"imageId": image.id, "repoDigest": digests[0] if digests else ""})

    def _create_image(self, resource: RecordedResource, inputs: dict[str, Any]) -> Applied:
        if not inputs.get("skipPush"):
            raise UnsupportedInputError(
                f"Image `{resource.name}`: only `skipPush: true` can be applied (no registry "
                "is reachable here)")
        build = inputs.get("build") or {}
        context = (self.program_dir / build.get("context", ".")).resolve()
        dockerfile = (self.program_dir / build["dockerfile"]).resolve() if "dockerfile" in build \
            else context / "Dockerfile"
        try:
            relative = dockerfile.relative_to(context)
        except ValueError:
            raise UnsupportedInputError(
                f"Image `{resource.name}`: a Dockerfile outside the build context is not "
                "implemented by the apply harness") from None
        try:
            image, _ = self.client.images.build(
                path=str(context), dockerfile=str(relative), tag=inputs["imageName"], rm=True,
                forcerm=True, network_mode="host", pull=False)
        except docker.errors.BuildError as exc:
            lines = "".join(str(line.get("stream", line)) for line in exc.build_log)
            raise ApplyError(f"Image `{resource.name}` failed to build: {exc}\n"
                             f"{lines[-3000:]}") from exc
        return Applied(resource.type, resource.name, inputs, image.id,
                       {"imageName": inputs["imageName"], "baseImageName": inputs["imageName"],
                        "repoDigest": image.id})

    def _create_container(self, resource: RecordedResource, inputs: dict[str, Any]) -> Applied:
        config = container_config(self.api, inputs)
        created = self.api.create_container(**config)
        container_id = created["Id"]
        applied = Applied(resource.type, resource.name, inputs, container_id,
                          {"id": container_id, "name": inputs.get("name", "")})
        # From here on the container exists: a failure leaves it, as the provider does.
        self.state[resource.urn] = applied
        networks = inputs.get("networksAdvanced") or []
        if networks:
            # Not connected (no default bridge): ignored, as the provider ignores it.
            with contextlib.suppress(docker.errors.APIError):
                self.api.disconnect_container_from_network(container_id, "bridge")
            for network in networks:
                self.api.connect_container_to_network(
                    container_id, network["name"], aliases=list(network.get("aliases") or []))
        if inputs.get("uploads"):
            self.api.put_archive(container_id, "/", _upload_archive(inputs["uploads"]))
        if inputs.get("start", True):
            self.api.start(container_id)
            if inputs.get("wait", False):
                self._wait_healthy(resource.name, container_id,
                                   float(inputs.get("waitTimeout", 60)))
        if inputs.get("attach", False):
            result = self.api.wait(container_id, timeout=ATTACH_TIMEOUT)
            applied.exit_code = int(result.get("StatusCode", -1))
        state = self.api.inspect_container(container_id)["State"]
        if not state["Running"]:
            applied.exit_code = int(state["ExitCode"])
        return applied

    def _wait_healthy(self, name: str, container_id: str, timeout: float) -> None:
        state = self.api.inspect_container(container_id)["State"]
        if state.get("Health") is None:
            raise ApplyError(f"Container `{name}`: `wait` is set but the container has no "
                             "health check (the provider fails the same way)")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            state = self.api.inspect_container(container_id)["State"]
            if (state.get("Health") or {}).get("Status") == "healthy":
                return
            time.sleep(1)
        logs = self.api.logs(container_id, tail=40).decode(errors="replace")
        raise ApplyError(f"Container `{name}` failed to be in healthy state within "
                         f"{timeout:.0f}s (status {state.get('Status')}, health "
                         f"{(state.get('Health') or {}).get('Status')}); last lines:\n{logs}")

    def _start_if_stopped(self, applied: Applied) -> None:
        if not applied.inputs.get("mustRun", True) or not applied.inputs.get("start", True):
            return
        if not self.api.inspect_container(applied.real_id)["State"]["Running"]:
            self.api.start(applied.real_id)
            self.events.append(("start", applied.name))
            self.log(f"started stopped Container {applied.name}")

    def _update_container(self, applied: Applied, inputs: dict[str, Any]) -> None:
        swap = int(inputs.get("memorySwap", 0))
        self.api.update_container(
            applied.real_id,
            mem_limit=int(inputs["memory"]) * 1024 * 1024 if "memory" in inputs else None,
            memswap_limit=(swap * 1024 * 1024 if swap > 0 else swap)
            if "memorySwap" in inputs else None,
            restart_policy={"Name": inputs.get("restart", "no"),
                            "MaximumRetryCount": int(inputs.get("maxRetryCount", 0))})
        applied.inputs = inputs
        self.events.append(("update", applied.name))
        self.log(f"updated Container {applied.name}")

    def _delete(self, urn: str) -> None:
        applied = self.state.pop(urn)
        if applied.type == CONTAINER:
            inputs = applied.inputs
            try:
                if not inputs.get("attach", False):
                    self.api.stop(applied.real_id,
                                  timeout=int(inputs.get("destroyGraceSeconds", 0)))
                self.api.remove_container(applied.real_id, force=True,
                                          v=bool(inputs.get("removeVolumes", True)))
            except docker.errors.NotFound:
                pass
        elif applied.type == NETWORK:
            self.client.networks.get(applied.real_id).remove()
        elif applied.type == VOLUME:
            self.client.volumes.get(applied.real_id).remove()
        elif applied.type == REMOTE_IMAGE and not applied.inputs.get("keepLocally", False):
            self.client.images.remove(applied.inputs["name"])
        # docker.Image: the provider's delete leaves the local image.
        self.events.append(("delete", applied.name))
        self.log(f"deleted {applied.type.rsplit(':', 1)[-1]} {applied.name}")
