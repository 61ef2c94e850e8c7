"""The Gateway API ``HTTPRoute`` (gateway.networking.k8s.io/v1) as the render tests check it.

kubernetes-validate knows only built-in kinds, so the HTTPRoute that ModelService declares for
weighted canaries and shadow traffic is checked here against the part of the published CRD
that we emit: the standard channel's v1 schema, from the Gateway API's Go types
(``apis/v1/httproute_types.go``, ``shared_types.go``, ``object_reference_types.go``; the
``requestMirror.percent`` field is standard since Gateway API v1.3, GEP-3171). Patterns, lengths,
bounds and enums are copied from the ``+kubebuilder:validation`` markers. The CRD's CEL rules
(``x-kubernetes-validations``), which a JSON schema cannot express, are checked by
`cel_violations`.

The schema is closed (``additionalProperties: false``) at every level we write, like
kubernetes-validate's ``strict=True``: a field we start emitting must be added here, from the
Gateway API source, before the test accepts it.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

API_VERSION = "gateway.networking.k8s.io/v1"

_DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
_SECTION_NAME = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
_HOSTNAME = r"^(\*\.)?[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
_GROUP = r"^$|^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
_KIND = r"^[a-zA-Z]([-a-zA-Z0-9]*[a-zA-Z0-9])?$"


def _closed(properties: dict[str, Any], required: tuple[str, ...] = ()) -> dict[str, Any]:
    return {"type": "object", "properties": properties, "required": list(required),
            "additionalProperties": False}


_GROUP_FIELD = {"type": "string", "maxLength": 253, "pattern": _GROUP}
_KIND_FIELD = {"type": "string", "minLength": 1, "maxLength": 63, "pattern": _KIND}
_NAME_FIELD = {"type": "string", "minLength": 1, "maxLength": 253}
_NAMESPACE_FIELD = {"type": "string", "minLength": 1, "maxLength": 63, "pattern": _DNS_LABEL}
_PORT_FIELD = {"type": "integer", "minimum": 1, "maximum": 65535}

# BackendObjectReference: a Service (group "" and kind Service by default) and its port.
_BACKEND_OBJECT_REFERENCE = {
    "group": _GROUP_FIELD,
    "kind": _KIND_FIELD,
    "name": _NAME_FIELD,
    "namespace": _NAMESPACE_FIELD,
    "port": _PORT_FIELD,
}

# ParentReference: the Gateway (and listener) the route attaches to.
_PARENT_REFERENCE = _closed({
    "group": _GROUP_FIELD,
    "kind": _KIND_FIELD,
    "namespace": _NAMESPACE_FIELD,
    "name": _NAME_FIELD,
    "sectionName": {"type": "string", "minLength": 1, "maxLength": 253,
                    "pattern": _SECTION_NAME},
}, required=("name",))

_HTTP_BACKEND_REF = _closed({
    **_BACKEND_OBJECT_REFERENCE,
    "weight": {"type": "integer", "minimum": 0, "maximum": 1000000},
}, required=("name",))

_PATH_MATCH = _closed({
    "type": {"enum": ["Exact", "PathPrefix", "RegularExpression"]},
    "value": {"type": "string", "maxLength": 1024},
})

_REQUEST_MIRROR = _closed({
    "backendRef": _closed(_BACKEND_OBJECT_REFERENCE, required=("name",)),
    "percent": {"type": "integer", "minimum": 0, "maximum": 100},
}, required=("backendRef",))

_FILTER = _closed({
    "type": {"enum": ["RequestHeaderModifier", "ResponseHeaderModifier", "RequestMirror",
                      "RequestRedirect", "URLRewrite", "ExtensionRef", "CORS"]},
    "requestMirror": _REQUEST_MIRROR,
}, required=("type",))

_RULE = _closed({
    "matches": {"type": "array", "maxItems": 64, "items": _closed({"path": _PATH_MATCH})},
    "filters": {"type": "array", "maxItems": 16, "items": _FILTER},
    "backendRefs": {"type": "array", "maxItems": 16, "items": _HTTP_BACKEND_REF},
})

HTTP_ROUTE_SCHEMA: dict[str, Any] = _closed({
    "apiVersion": {"const": API_VERSION},
    "kind": {"const": "HTTPRoute"},
    # ObjectMeta is checked by kubernetes-validate (see the render tests).
    "metadata": {"type": "object"},
    "spec": _closed({
        "parentRefs": {"type": "array", "maxItems": 32, "items": _PARENT_REFERENCE},
        "hostnames": {"type": "array", "maxItems": 16, "items": {
            "type": "string", "minLength": 1, "maxLength": 253, "pattern": _HOSTNAME}},
        "rules": {"type": "array", "minItems": 1, "maxItems": 16, "items": _RULE},
    }),
}, required=("apiVersion", "kind", "metadata", "spec"))


def backend_refs(spec: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """Every Service reference of a route spec (backends and mirrors), with where it is."""
    for i, rule in enumerate(spec.get("rules", [])):
        for j, ref in enumerate(rule.get("backendRefs", [])):
            yield f"rules[{i}].backendRefs[{j}]", ref
        for j, f in enumerate(rule.get("filters", [])):
            if "requestMirror" in f:
                yield f"rules[{i}].filters[{j}].requestMirror.backendRef", \
                    f["requestMirror"]["backendRef"]


def cel_violations(route: dict[str, Any]) -> list[str]:
    """The CRD's CEL rules that the route breaks (the ones that apply to the fields we write)."""
    found: list[str] = []
    spec = route.get("spec", {})
    for where, ref in backend_refs(spec):
        # BackendObjectReference: "Must have port for Service reference".
        if ref.get("group", "") == "" and ref.get("kind", "Service") == "Service" \
                and "port" not in ref:
            found.append(f"{where}: Must have port for Service reference")
    for i, rule in enumerate(spec.get("rules", [])):
        for j, f in enumerate(rule.get("filters", [])):
            where = f"rules[{i}].filters[{j}]"
            mirror = f.get("requestMirror")
            if (mirror is not None) != (f["type"] == "RequestMirror"):
                found.append(f"{where}: filter.requestMirror must be specified for (only) "
                             "RequestMirror filter.type")
            if mirror is not None and "percent" in mirror and "fraction" in mirror:
                found.append(f"{where}: Only one of percent or fraction may be specified")
        for j, match in enumerate(rule.get("matches", [])):
            path = match.get("path", {})
            value = path.get("value", "/")
            if path.get("type", "PathPrefix") in ("Exact", "PathPrefix") and (
                    not value.startswith("/") or "//" in value):
                found.append(f"rules[{i}].matches[{j}].path: value must be an absolute path "
                             "without '//'")
    return found
