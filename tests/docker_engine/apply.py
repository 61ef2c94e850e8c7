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
from fractions import Fraction
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

# The input fields each resource type implements (pulumi-docker names, as recorded), with
# their shapes: "str", "bool", "num", ["str"] (a list of strings), {"*": "str"} (a map of
# strings), a dict of fields (one object) or [dict] (a list of objects).
_LABELS = [{"label": "str", "value": "str"}]
SCHEMA: dict[str, dict[str, Any]] = {
    NETWORK: {"name": "str", "labels": _LABELS, "driver": "str", "internal": "bool",
              "attachable": "bool"},
    VOLUME: {"name": "str", "labels": _LABELS, "driver": "str", "driverOpts": {"*": "str"}},
    REMOTE_IMAGE: {"name": "str", "keepLocally": "bool"},
    IMAGE: {"imageName": "str", "build": {"context": "str", "dockerfile": "str"},
            "skipPush": "bool", "buildOnPreview": "bool"},
    CONTAINER: {
        "name": "str", "image": "str", "entrypoints": ["str"], "command": ["str"],
        "envs": ["str"], "user": "str", "labels": _LABELS,
        "healthcheck": {"tests": ["str"], "interval": "str", "timeout": "str",
                        "startPeriod": "str", "startInterval": "str", "retries": "num"},
        "readOnly": "bool", "tmpfs": {"*": "str"},
        "capabilities": {"adds": ["str"], "drops": ["str"]}, "securityOpts": ["str"],
        "init": "bool",
        "volumes": [{"volumeName": "str", "containerPath": "str", "readOnly": "bool",
                     "hostPath": "str"}],
        "ports": [{"internal": "num", "external": "num", "ip": "str", "protocol": "str"}],
        "ulimits": [{"name": "str", "soft": "num", "hard": "num"}],
        "memory": "num", "memorySwap": "num", "cpus": "str", "restart": "str",
        "maxRetryCount": "num", "networkMode": "str",
        "networksAdvanced": [{"name": "str", "aliases": ["str"]}],
        "uploads": [{"file": "str", "content": "str", "contentBase64": "str",
                     "executable": "bool", "permissions": "str"}],
        "workingDir": "str", "hostname": "str", "start": "bool", "attach": "bool",
        "mustRun": "bool", "wait": "bool", "waitTimeout": "num",
        "destroyGraceSeconds": "num", "removeVolumes": "bool",
    },
}
IMPLEMENTED: dict[str, frozenset[str]] = {t: frozenset(fields) for t, fields in SCHEMA.items()}

CONTAINER_DEFAULTS: dict[str, Any] = {
    "start": True, "attach": False, "mustRun": True, "wait": False, "waitTimeout": 60,
    "restart": "no", "maxRetryCount": 0, "readOnly": False, "init": False,
    "removeVolumes": True, "networkMode": "bridge",
}
"""The provider schema's defaults: an input left out equals its default in a diff."""
CONTAINER_SETS = frozenset({"envs", "labels", "volumes", "ulimits", "securityOpts",
                            "networksAdvanced", "uploads"})
"""Container fields the provider's schema holds as sets (order is no change)."""
CONTAINER_UPDATABLE = frozenset({"restart", "maxRetryCount", "memory", "memorySwap"})
"""What the provider changes on the engine in place (``ContainerUpdate``)."""
CONTAINER_STATE_ONLY = frozenset({"tmpfs", "healthcheck", "init", "start", "attach", "mustRun",
                                  "wait", "waitTimeout", "destroyGraceSeconds",
                                  "removeVolumes"})
"""Neither ForceNew nor applied by the provider's update: a change reaches its state only,
and the running container keeps the old value (unless ``replaceOnChanges`` names it)."""


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
    retain_on_delete: bool = False


def _check_shape(where: str, value: Any, shape: Any) -> None:
    if isinstance(shape, str):
        kinds = {"str": (str,), "bool": (bool,), "num": (int, float)}[shape]
        if not isinstance(value, kinds) or (shape == "num" and isinstance(value, bool)):
            raise UnsupportedInputError(f"{where}: expected a {shape}, got {type(value).__name__}")
    elif isinstance(shape, list):
        if not isinstance(value, list):
            raise UnsupportedInputError(f"{where}: expected a list, got {type(value).__name__}")
        for i, item in enumerate(value):
            _check_shape(f"{where}[{i}]", item, shape[0])
    elif set(shape) == {"*"}:
        if not isinstance(value, Mapping):
            raise UnsupportedInputError(f"{where}: expected a map, got {type(value).__name__}")
        for key, item in value.items():
            _check_shape(f"{where}.{key}", item, shape["*"])
    else:
        if not isinstance(value, Mapping):
            raise UnsupportedInputError(f"{where}: expected an object, got {type(value).__name__}")
        for key, item in value.items():
            if key not in shape:
                raise UnsupportedInputError(
                    f"{where}.{key}: not implemented by the apply harness; implement it as the "
                    "provider does, or stop declaring it")
            _check_shape(f"{where}.{key}", item, shape[key])


def check_supported(resource: RecordedResource) -> None:
    """Refuse a resource the harness would not apply as the provider does: an unknown type,
    an input field (at any depth) or shape it does not implement, resource options it does not
    model (custom timeouts, ignoreChanges, protect), an explicit provider (it would target
    another engine)."""
    what = f"{resource.type} `{resource.name}`"
    if resource.type.startswith("pulumi:providers:docker"):
        raise UnsupportedInputError(f"{what}: an explicit Docker provider is not implemented by "
                                    "the apply harness (it applies to its own engine only)")
    shape = SCHEMA.get(resource.type)
    if shape is None:
        raise UnsupportedInputError(f"{what}: the apply harness does not implement this "
                                    "resource type")
    if resource.provider:
        raise UnsupportedInputError(f"{what}: registered with an explicit provider, which the "
                                    "apply harness does not implement")
    for option, value in (("customTimeouts", resource.custom_timeouts),
                          ("ignoreChanges", resource.ignore_changes),
                          ("protect", resource.protect)):
        if value:
            raise UnsupportedInputError(f"{what}: the resource option `{option}` is not "
                                        "implemented by the apply harness")
    _check_shape(what, unwrap_secrets(dict(resource.inputs)), shape)


_DURATION = re.compile(r"(\d*\.?\d*)(ns|us|µs|μs|ms|s|m|h)")
_UNIT_NS = {"ns": 1, "us": 1_000, "µs": 1_000, "μs": 1_000, "ms": 1_000_000,
            "s": 1_000_000_000, "m": 60_000_000_000, "h": 3_600_000_000_000}


def go_duration_ns(text: str) -> int:
    """A Go duration string (``"1m30s"``, ``"500ms"``, ``".5s"``) in nanoseconds, as Go's
    ``time.ParseDuration`` reads it (a sign is not accepted: the provider's validator refuses
    negative durations)."""
    if text == "0":
        return 0
    parts = _DURATION.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text or any(n in ("", ".")
                                                                    for n, _u in parts):
        raise UnsupportedInputError(f"{text!r} is not a Go duration")
    return int(sum(float(n) * _UNIT_NS[u] for n, u in parts))


def go_duration_string(ns: int) -> str:
    """Nanoseconds as Go's ``time.Duration.String()`` writes them (``300s`` → ``5m0s``), the
    form the provider's read writes back into its state. Whole seconds and sub-second values
    below one second; anything else is refused."""
    if ns == 0:
        return "0s"
    if ns < 1_000_000_000:
        for unit, size in (("ms", 1_000_000), ("µs", 1_000), ("ns", 1)):
            if ns >= size:
                return f"{ns / size:g}{unit}"
    seconds, rest = divmod(ns, 1_000_000_000)
    if rest:
        raise UnsupportedInputError(f"{ns}ns: fractional seconds above one second are not "
                                    "implemented by the apply harness")
    hours, seconds = divmod(seconds, 3600)
    minutes, seconds = divmod(seconds, 60)
    if hours:
        return f"{hours}h{minutes}m{seconds}s"
    if minutes:
        return f"{minutes}m{seconds}s"
    return f"{seconds}s"


def nano_cpus(text: str) -> int:
    """``cpus`` (``"0.25"``) as NanoCPUs, as the provider's ``opts.ParseCPUs`` (which refuses a
    value finer than one nano-CPU)."""
    nano = Fraction(text) * 10**9
    if nano.denominator != 1 or nano < 0:
        raise UnsupportedInputError(f"cpus {text!r}: not a whole number of nano-CPUs")
    return int(nano)


def decimal_cpus(nano: int) -> str:
    """NanoCPUs as the provider's read writes ``cpus`` back (kreuzwerker's
    ``nanoInt64ToDecimalString``: ``1e9`` → ``"1.0"``, ``2.5e8`` → ``"0.25"``)."""
    if nano == 0:
        return "0"
    whole, frac = divmod(nano, 10**9)
    nine = f"{whole}.{frac:09d}"
    if nine.count("0") == 9:
        return f"{whole}.{frac // 10**8}"
    return nine.rstrip("0")


def read_back(inputs: Mapping[str, Any]) -> dict[str, Any]:
    """A container's inputs as the provider's state holds them after its read: ``cpus`` and
    the health check's durations in the engine's canonical spelling."""
    state = dict(inputs)
    if "cpus" in state:
        state["cpus"] = decimal_cpus(nano_cpus(str(state["cpus"])))
    if state.get("healthcheck"):
        check = dict(state["healthcheck"])
        for key in ("interval", "timeout", "startPeriod", "startInterval"):
            if key in check:
                check[key] = go_duration_string(go_duration_ns(check[key]))
        state["healthcheck"] = check
    return state


def _comparable(inputs: Mapping[str, Any]) -> dict[str, str]:
    """Each field as the provider's diff sees it: defaults filled in, an empty list or map the
    same as none, set fields without order. JSON per field, for comparing."""
    values = {**CONTAINER_DEFAULTS, **inputs}
    out = {}
    for key, value in values.items():
        if value in ([], {}, None):
            continue
        if key in CONTAINER_SETS:
            value = sorted(json.dumps(v, sort_keys=True) for v in value)
        out[key] = json.dumps(value, sort_keys=True)
    return out


def container_change(state: Mapping[str, Any], inputs: Mapping[str, Any],
                     replace_on_changes: Iterable[str] = ()) -> tuple[str, frozenset[str]]:
    """What the provider does with a container whose state is ``state`` (as `read_back` left
    it) when the program now declares ``inputs``: ``"none"``, ``"state"`` (its state changes,
    the container does not), ``"update"`` (``ContainerUpdate``) or ``"replace"``; and the
    fields that differ."""
    old, new = _comparable(state), _comparable(inputs)
    changed = frozenset(k for k in set(old) | set(new) if old.get(k) != new.get(k))
    if not changed:
        return "none", changed
    if changed - CONTAINER_UPDATABLE - CONTAINER_STATE_ONLY or changed & set(replace_on_changes):
        return "replace", changed
    if changed & CONTAINER_UPDATABLE:
        return "update", changed
    return "state", changed


def _labels(value: Iterable[Mapping[str, str]] | None) -> dict[str, str]:
    return {item["label"]: item["value"] for item in value or []}


def container_config(client: docker.APIClient, inputs: Mapping[str, Any]) -> dict[str, Any]:
    """The Engine API's container create body (``Config`` with its ``HostConfig``) for a
    recorded container's inputs."""
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
        "command": None,
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
    body: dict[str, Any] = client.create_container_config(**config)
    check = inputs.get("healthcheck")
    if check:
        # Set on the body itself: the SDK's Healthcheck type would drop StartInterval (API
        # 1.44), which the provider sends (an engine older than 1.44 ignores it).
        body["Healthcheck"] = {
            "Test": list(check["tests"]),
            "Interval": go_duration_ns(check.get("interval", "0s")),
            "Timeout": go_duration_ns(check.get("timeout", "0s")),
            "StartPeriod": go_duration_ns(check.get("startPeriod", "0s")),
            "StartInterval": go_duration_ns(check.get("startInterval", "0s")),
            "Retries": int(check.get("retries", 0)),
        }
    return body


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
    for resource in recording.resources:
        if resource.type.startswith(("docker:", "pulumi:providers:docker")):
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

    def apply(self, recording: Recording, *, refresh: bool = False) -> None:
        """Bring the engine to what ``recording`` declares, as ``pulumi up`` would: create what
        is new, update or replace what changed (as the provider decides, see
        `container_change`), then delete what the program no longer declares.

        Args:
            recording: The program's registrations.
            refresh: Read the engine first, as ``pulumi up --refresh`` (and ``make up``) does:
                a container removed by hand is created again, a stopped one that ``mustRun``
                is started. Without it the state is trusted, as plain ``pulumi up`` trusts it.
        """
        if refresh:
            self._refresh()
        resources = docker_resources(recording)
        substitutions: dict[str, str] = {}
        for resource in resources:
            inputs = _replace_strings(unwrap_secrets(dict(resource.inputs)), substitutions)
            applied = self.state.get(resource.urn)
            if applied is None:
                applied = self._create(resource, inputs)
            elif resource.type == CONTAINER:
                applied = self._change_container(resource, applied, inputs)
            elif resource.type == IMAGE:
                # The provider rebuilds when the build context's digest changed; the engine's
                # cache makes an unchanged context the same image, so the built ID stands in
                # for that digest (a new ID replaces the containers that run it).
                rebuilt = self._create_image(resource, inputs)
                if rebuilt.real_id != applied.real_id or inputs != applied.inputs:
                    self.state[resource.urn] = applied = rebuilt
                    self._event("replace", resource.name)
            elif _digest(applied.inputs) != _digest(inputs):
                raise ApplyError(
                    f"{resource.type} `{resource.name}` would be replaced (every input of a "
                    "network, volume or remote image forces a replacement); the apply harness "
                    "refuses it: replacing a volume loses its data")
            for key, recorded in unwrap_secrets(dict(resource.outputs)).items():
                real = applied.outputs.get(key)
                if isinstance(recorded, str) and isinstance(real, str) and recorded != real:
                    substitutions[recorded] = real
        # Deletes come last, as Pulumi orders them.
        wanted = {r.urn for r in resources}
        for urn in [u for u in reversed(list(self.state)) if u not in wanted]:
            self._delete(urn)

    def _change_container(self, resource: RecordedResource, applied: Applied,
                          inputs: dict[str, Any]) -> Applied:
        change, fields = container_change(applied.inputs, inputs, resource.replace_on_changes)
        if change == "replace":
            self.log(f"replacing Container {resource.name} (changed: {', '.join(sorted(fields))})")
            self._delete(resource.urn)  # the provider's DeleteBeforeReplace
            return self._create(resource, inputs)
        if change == "update":
            self._update_container(applied, inputs)
        if change in ("update", "state"):
            applied.inputs = read_back(inputs)
            self._event(change, resource.name)
        return applied

    def _refresh(self) -> None:
        for urn, applied in list(self.state.items()):
            if applied.type != CONTAINER:
                continue
            try:
                state = self.api.inspect_container(applied.real_id)["State"]
            except docker.errors.NotFound:
                del self.state[urn]  # gone: the next apply creates it
                self._event("refresh-gone", applied.name)
                continue
            if (not state["Running"] and applied.inputs.get("mustRun", True)
                    and applied.inputs.get("start", True)):
                # The read sets mustRun false; the update that follows starts the container.
                self.api.start(applied.real_id)
                self._event("refresh-start", applied.name)

    def _event(self, operation: str, name: str) -> None:
        self.events.append((operation, name))
        self.log(f"{operation} {name}")

    def remove_containers(self) -> None:
        """Remove every container of the stack from the engine behind the state's back, as
        ``docker rm -f`` by hand would (the state still lists them)."""
        for applied in self.state.values():
            if applied.type == CONTAINER:
                self.api.remove_container(applied.real_id, force=True)

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
        applied.retain_on_delete = resource.retain_on_delete
        if resource.type == CONTAINER:
            applied.inputs = read_back(inputs)
        self.state[resource.urn] = applied
        self.durations[resource.name] = time.monotonic() - started
        self._event("create", resource.name)
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
                                            driver_opts=inputs.get("driverOpts") or None,
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
        created = self.api.create_container_from_config(container_config(self.api, inputs),
                                                        inputs.get("name"))
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

    def _update_container(self, applied: Applied, inputs: dict[str, Any]) -> None:
        swap = int(inputs.get("memorySwap", 0))
        self.api.update_container(
            applied.real_id,
            mem_limit=int(inputs["memory"]) * 1024 * 1024 if "memory" in inputs else None,
            memswap_limit=(swap * 1024 * 1024 if swap > 0 else swap)
            if "memorySwap" in inputs else None,
            restart_policy={"Name": inputs.get("restart", "no"),
                            "MaximumRetryCount": int(inputs.get("maxRetryCount", 0))})

    def _delete(self, urn: str) -> None:
        applied = self.state.pop(urn)
        if applied.retain_on_delete:
            self._event("retain", applied.name)  # forgotten, left on the engine
            return
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
        self._event("delete", applied.name)
