"""A stack's resources as policies see them, wherever they come from.

CrossGuard hands a stack validation policy every resource with its type, name, URN, properties
and parent; `mlops plan --policy` has the same from its recording under mocks. Both are turned
into `PolicyResource` values, so one set of rule functions (`pulumi_mlops.policy.rules`) serves
`pulumi preview --policy-pack policy-pack` and `mlops plan --policy`.

This module and the rules import nothing but the standard library (and the PSS checker, which
imports nothing else either): the CrossGuard pack loads them in its own virtual environment,
beside pulumi-policy, without the SDK's dependencies.
"""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from pulumi_mlops.policy.pss import pod_spec_of

__all__ = [
    "DOCKER_CONTAINER",
    "DOCKER_REMOTE_IMAGE",
    "MODEL_REGISTRY",
    "MODEL_SERVICE",
    "MONITORING_STACK",
    "RETRAIN_SCHEDULE",
    "UNKNOWN",
    "Container",
    "PolicyResource",
    "StackResources",
    "containers_of",
    "docker_init_files",
    "is_unknown",
    "json_documents",
    "resources_from_recording",
]

MODEL_SERVICE = "mlops:index:ModelService"
MODEL_REGISTRY = "mlops:index:ModelRegistry"
MONITORING_STACK = "mlops:index:MonitoringStack"
RETRAIN_SCHEDULE = "mlops:index:RetrainSchedule"
DOCKER_CONTAINER = "docker:index/container:Container"
DOCKER_REMOTE_IMAGE = "docker:index/remoteImage:RemoteImage"

UNKNOWN = "04da6b54-80e4-46f7-96ec-b56ff0331ba9"
"""How a value computed at deployment (unknown at preview) is written here: the engine's
sentinel for an unknown string, as the mock runtime and pulumi-policy both use it."""

# The engine's sentinels for unknown values of each kind (pulumi-policy's `proxy` module; the
# Pulumi SDK's `rpc.UNKNOWN` is the string one).
_UNKNOWNS = frozenset({
    UNKNOWN,
    "1c4a061d-8072-4f0a-a4cb-0ff528b18fe7",
    "3eeb2bf0-c639-47a8-9e75-3b44932eb421",
    "6a19a0b0-7e62-4c92-b797-7f8e31da9cc2",
    "030794c1-ac77-496b-92df-f27374a8bd58",
    "e48ece36-62e2-4504-bad9-02848725956a",
    "dd056dcd-154b-4c76-9bd3-c8f88648b5ff",
})
# A secret on the wire: {<signature key>: <secret signature>, "value": ...} (Pulumi's
# serialization; the recording keeps secrets in this envelope).
_SIG_KEY = "4dabf18193072939515e22adb298388d"
_SECRET_SIG = "1b47061264138c4ac30d75fd1eb44270"


def is_unknown(value: Any) -> bool:
    """Whether ``value`` is computed at deployment (unknown at preview)."""
    return isinstance(value, str) and value in _UNKNOWNS


def _plain(value: Any) -> Any:
    """``value`` with secret envelopes removed: policies read secret inputs as CrossGuard
    shows them to a stack policy, in the clear (a policy never prints a secret's value)."""
    if isinstance(value, Mapping):
        if value.get(_SIG_KEY) == _SECRET_SIG:
            return _plain(value.get("value"))
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


@dataclass(frozen=True)
class PolicyResource:
    """One resource of a stack as the engine reports it.

    Attributes:
        type: Type token (``kubernetes:apps/v1:Deployment``, ``mlops:index:ModelService``).
        name: Logical name.
        urn: Its URN (``urn:pulumi:<stack>::<project>::<type chain>::<name>``).
        inputs: For a custom resource its inputs (at preview CrossGuard shows the planned
            state, which is the inputs); for a component the outputs it registered. Plain
            values, secrets in the clear, values unknown at preview as `UNKNOWN`.
        parent: The parent's URN; "" for none.
    """

    type: str
    name: str
    urn: str
    inputs: Mapping[str, Any] = field(default_factory=dict)
    parent: str = ""

    @property
    def label(self) -> str:
        """How messages name it: ``Deployment `fraud``` or ``ModelService 'fraud'``."""
        kind = self.type.rsplit(":", 1)[-1]
        if self.type.startswith("mlops:"):
            return f"{kind} {self.name!r}"
        return f"{kind} `{self.name}`"


@dataclass(frozen=True)
class Container:
    """A container a resource declares (a Kubernetes pod's, or a Docker container).

    Attributes:
        where: How messages name it: ``Deployment `fraud` container `server```.
        image: Its image reference (`UNKNOWN` when computed at deployment, "" when unset).
        env: Environment variable → its literal value, or None when it comes from a
            reference (a Secret's key) or is unknown.
        env_refs: Environment variable → the ``(secret name, key)`` it is read from.
        command: Command line (Kubernetes ``command`` + ``args``; Docker ``entrypoints`` +
            ``command``), None when unknown.
    """

    where: str
    image: str
    env: Mapping[str, str | None]
    env_refs: Mapping[str, tuple[str, str]]
    command: tuple[str, ...] | None


def _kubernetes_containers(resource: PolicyResource) -> list[Container]:
    manifest = resource.inputs
    if not isinstance(manifest.get("kind"), str):
        return []
    try:
        pod_spec = pod_spec_of(manifest)
    except ValueError:
        return []
    if not isinstance(pod_spec, Mapping):
        return []
    found = []
    for group in ("initContainers", "containers"):
        containers = pod_spec.get(group)
        if not isinstance(containers, list):
            continue
        for container in containers:
            if not isinstance(container, Mapping):
                continue
            env: dict[str, str | None] = {}
            refs: dict[str, tuple[str, str]] = {}
            entries = container.get("env")
            for entry in entries if isinstance(entries, list) else []:
                if not isinstance(entry, Mapping) or not isinstance(entry.get("name"), str):
                    continue
                value = entry.get("value")
                env[entry["name"]] = value if isinstance(value, str) and not is_unknown(
                    value) else None
                ref = entry.get("valueFrom")
                secret = ref.get("secretKeyRef") if isinstance(ref, Mapping) else None
                if isinstance(secret, Mapping):
                    refs[entry["name"]] = (str(secret.get("name")), str(secret.get("key")))
            parts = [container.get("command") or [], container.get("args") or []]
            command = (None if any(not isinstance(p, list) for p in parts)
                       else tuple(str(a) for p in parts for a in p))
            image = container.get("image")
            found.append(Container(
                where=f"{resource.label} container `{container.get('name')}`",
                image=image if isinstance(image, str) else "",
                env=env, env_refs=refs, command=command))
    return found


def _docker_container(resource: PolicyResource) -> Container:
    inputs = resource.inputs
    env: dict[str, str | None] = {}
    envs = inputs.get("envs")
    for entry in envs if isinstance(envs, list) else []:
        if isinstance(entry, str) and not is_unknown(entry):
            key, _, value = entry.partition("=")
            env[key] = value
    parts = [inputs.get("entrypoints") or [], inputs.get("command") or []]
    command = (None if any(not isinstance(p, list) for p in parts)
               else tuple(str(a) for p in parts for a in p))
    image = inputs.get("image")
    return Container(where=resource.label, image=image if isinstance(image, str) else "",
                     env=env, env_refs={}, command=command)


def containers_of(resource: PolicyResource) -> list[Container]:
    """The containers a resource declares: a Kubernetes workload's pod template (init
    containers first), or a Docker container; none for other resources."""
    if resource.type == DOCKER_CONTAINER:
        return [_docker_container(resource)]
    if resource.type.startswith("kubernetes:"):
        return _kubernetes_containers(resource)
    return []


_SECRET_FILE = re.compile(r"\$MLOPS_FILE_\d+")


def docker_init_files(inputs: Mapping[str, Any]) -> dict[str, str]:
    """The config files a Docker init container writes (``sh -c`` with a ``printf %s VALUE >
    PATH`` per file, as the Docker target renders it): path to content. A literal file's
    content is in the script; a secret one's in the container's ``MLOPS_FILE_<n>``
    environment variable, left out when unknown (a secret the policy engine hides)."""
    entrypoints = inputs.get("entrypoints")
    if not (isinstance(entrypoints, list) and len(entrypoints) == 3
            and entrypoints[:2] == ["sh", "-c"] and isinstance(entrypoints[2], str)):
        return {}
    envs = inputs.get("envs")
    env = dict(e.partition("=")[::2] for e in envs if isinstance(e, str)) if isinstance(
        envs, list) else {}
    try:
        tokens = shlex.split(entrypoints[2])
    except ValueError:
        return {}
    files: dict[str, str] = {}
    for i in range(len(tokens) - 4):
        if tokens[i] == "printf" and tokens[i + 1] == "%s" and tokens[i + 3] == ">":
            value: str | None = tokens[i + 2]
            if value is not None and _SECRET_FILE.fullmatch(value):
                value = env.get(value[1:])
            if value is not None and not is_unknown(value):
                files[tokens[i + 4]] = value
    return files


def json_documents(value: Any) -> Iterator[Mapping[str, Any]]:
    """Every JSON object written as a string anywhere in ``value`` (a config file in a
    ConfigMap's data, or one a Docker init container writes: see `docker_init_files`)."""
    if isinstance(value, Mapping):
        for v in value.values():
            yield from json_documents(v)
    elif isinstance(value, list):
        for v in value:
            yield from json_documents(v)
    elif isinstance(value, str) and "{" in value:
        text = value[value.index("{"):]
        try:
            doc = json.loads(text)
        except ValueError:
            return
        if isinstance(doc, Mapping):
            yield doc


class StackResources:
    """The resources of one stack, with the lookups rules need (type, parent, children).

    Args:
        resources: Every resource of the stack (the stack resource itself may be included).
    """

    def __init__(self, resources: Iterable[PolicyResource]) -> None:
        self.resources: tuple[PolicyResource, ...] = tuple(resources)
        self._by_urn = {r.urn: r for r in self.resources}
        self._children: dict[str, list[PolicyResource]] = {}
        for r in self.resources:
            self._children.setdefault(r.parent, []).append(r)

    @property
    def stack(self) -> str:
        """The stack's name, read from the URNs ("" when there are none)."""
        for r in self.resources:
            if r.urn.startswith("urn:pulumi:"):
                return r.urn.removeprefix("urn:pulumi:").split("::", 1)[0]
        return ""

    def of_type(self, type_: str) -> list[PolicyResource]:
        """The resources of one type token, in the order given."""
        return [r for r in self.resources if r.type == type_]

    def get(self, urn: str) -> PolicyResource | None:
        """The resource with this URN, if it is in the stack."""
        return self._by_urn.get(urn)

    def descendants(self, resource: PolicyResource) -> list[PolicyResource]:
        """Its children, their children, and so on (depth first)."""
        found: list[PolicyResource] = []
        for child in self._children.get(resource.urn, []):
            found.append(child)
            found.extend(self.descendants(child))
        return found

    def ancestors(self, resource: PolicyResource) -> list[PolicyResource]:
        """Its parent, the parent's parent, and so on up to the stack."""
        found: list[PolicyResource] = []
        parent = self._by_urn.get(resource.parent)
        while parent is not None and parent not in found:
            found.append(parent)
            parent = self._by_urn.get(parent.parent)
        return found


def _component_outputs(component: Any) -> dict[str, Any]:
    """The outputs a component registers that rules read. The mock monitor records what
    components register as inputs only (none); these are taken from the component as it
    registers them (`MonitoringStack.watched_services`, `ModelService.model_promotions`)."""
    kind = getattr(component, "type_token", None)
    if kind == MONITORING_STACK:
        return {"watched_services": sorted(
            s.component_name for s in component.args.services)}
    if kind == MODEL_SERVICE:
        return {"model_promotions": _plain(dict(component.declared_promotions()))}
    return {}


def resources_from_recording(recording: Any) -> list[PolicyResource]:
    """The resources of a recording (`pulumi_mlops.render.record` / `record_program`) as a
    stack policy sees them.

    Args:
        recording: A `pulumi_mlops.render.Recording`.
    """
    outputs = {(getattr(c, "type_token", None), getattr(c, "component_name", None)):
               _component_outputs(c) for c in recording.components}
    found = []
    for r in recording.resources:
        inputs = (_plain(dict(r.inputs)) if r.custom
                  else {**_plain(dict(r.inputs)), **outputs.get((r.type, r.name), {})})
        found.append(PolicyResource(type=r.type, name=r.name, urn=r.urn, inputs=inputs,
                                    parent=r.parent or ""))
    return found
