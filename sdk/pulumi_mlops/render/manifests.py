"""Turn a recording into Kubernetes manifests and a redacted resource listing."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml

from pulumi_mlops import _pulumi_compat as compat
from pulumi_mlops.render.harness import RecordedResource, Recording

__all__ = ["REDACTED", "UNKNOWN", "is_kubernetes", "redact", "to_manifest", "write_render"]

REDACTED = "[secret]"
UNKNOWN = "[computed]"


def is_kubernetes(resource: RecordedResource) -> bool:
    """Whether the resource is a Kubernetes object (not a provider or a component)."""
    return resource.type.startswith("kubernetes:") and not resource.type.startswith(
        "pulumi:providers:"
    ) and "kind" in resource.inputs


def redact(value: Any) -> Any:
    """The value with every secret replaced by ``[secret]`` and unknowns by ``[computed]``.

    A secret mapping keeps its keys (a Secret's ``stringData`` shows which keys it holds).
    Whole numbers that travelled as floats become ints again.
    """
    if compat.is_secret_envelope(value):
        inner = compat.unwrap_secret_envelope(value)
        if isinstance(inner, dict):
            return {k: REDACTED for k in inner}
        return REDACTED
    if compat.is_unknown(value):
        return UNKNOWN
    if isinstance(value, dict):
        return {k: redact(v) for k, v in value.items()}
    if isinstance(value, list):
        return [redact(v) for v in value]
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def to_manifest(resource: RecordedResource) -> dict[str, Any]:
    """The Kubernetes object as ``kubectl apply`` would take it, secrets redacted."""
    body = redact(dict(resource.inputs))
    manifest = {"apiVersion": body.pop("apiVersion"), "kind": body.pop("kind")}
    manifest.update(body)
    return manifest


def _file_name(manifest: dict[str, Any]) -> str:
    meta = manifest.get("metadata") or {}
    parts = [meta.get("namespace", "_cluster"), manifest["kind"].lower(), meta.get("name", "x")]
    return "-".join(str(p) for p in parts) + ".yaml"


def manifests(recording: Recording) -> list[dict[str, Any]]:
    """Every Kubernetes object of the recording, in declaration order."""
    return [to_manifest(r) for r in recording.resources if is_kubernetes(r)]


def resources_listing(resources: Iterable[RecordedResource]) -> list[dict[str, Any]]:
    """Every resource (Docker and components included) with redacted inputs."""
    return [
        {"type": r.type, "name": r.name, "urn": r.urn, "parent": r.parent,
         "inputs": redact(dict(r.inputs))}
        for r in resources
    ]


def write_render(recording: Recording, out_dir: Path) -> list[Path]:
    """Write one YAML file per Kubernetes object and ``resources.json``; return the YAML paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for manifest in manifests(recording):
        path = out_dir / _file_name(manifest)
        path.write_text(yaml.safe_dump(manifest, sort_keys=False))
        written.append(path)
    listing = {"resources": resources_listing(recording.resources),
               "outputs": redact(recording.outputs)}
    (out_dir / "resources.json").write_text(json.dumps(listing, indent=2, sort_keys=True) + "\n")
    return written
