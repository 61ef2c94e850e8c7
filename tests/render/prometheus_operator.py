"""The Prometheus Operator's custom resources (``monitoring.coreos.com/v1``) as the render and
component tests check them: the CRDs' schemas (prometheus-operator v0.93
``example/prometheus-operator-crd``) for the fields MonitoringStack emits, closed like the
Gateway API check (`tests.render.gateway_api`): a field we start emitting must be added here
from the CRD first.
"""

from __future__ import annotations

from typing import Any

API_VERSION = "monitoring.coreos.com/v1"

_DURATION = (r"^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?"
             r"(([0-9]+)ms)?)$")
_STRINGS = {"type": "object", "additionalProperties": {"type": "string"}}


def _closed(properties: dict[str, Any], required: tuple[str, ...] = ()) -> dict[str, Any]:
    return {"type": "object", "properties": properties, "required": list(required),
            "additionalProperties": False}


_METADATA = _closed({"name": {"type": "string"}, "namespace": {"type": "string"},
                     "labels": _STRINGS}, ("name",))
_RELABEL = _closed({
    "action": {"enum": ["replace", "Replace", "keep", "Keep", "drop", "Drop", "hashmod",
                        "HashMod", "labelmap", "LabelMap", "labeldrop", "LabelDrop",
                        "labelkeep", "LabelKeep", "lowercase", "Lowercase", "uppercase",
                        "Uppercase", "keepequal", "KeepEqual", "dropequal", "DropEqual"]},
    "sourceLabels": {"type": "array",
                     "items": {"type": "string", "pattern": r"^[a-zA-Z_][a-zA-Z0-9_]*$"}},
    "targetLabel": {"type": "string"}, "replacement": {"type": "string"},
})
# core/v1 SecretKeySelector, in the monitor's namespace.
_SECRET_KEY = _closed({"name": {"type": "string"}, "key": {"type": "string"},
                       "optional": {"type": "boolean"}}, ("key",))
POD_MONITOR = _closed({
    "apiVersion": {"const": API_VERSION}, "kind": {"const": "PodMonitor"},
    "metadata": _METADATA,
    "spec": _closed({
        "selector": _closed({"matchLabels": _STRINGS}),
        "namespaceSelector": _closed({"matchNames": {"type": "array",
                                                      "items": {"type": "string"}}}),
        "podMetricsEndpoints": {"type": "array", "items": _closed({
            "port": {"type": "string"}, "path": {"type": "string"},
            "relabelings": {"type": "array", "items": _RELABEL},
            "basicAuth": _closed({"username": _SECRET_KEY, "password": _SECRET_KEY}),
            "interval": {"type": "string", "pattern": _DURATION},
            "scrapeTimeout": {"type": "string", "pattern": _DURATION}})},
    }, ("selector",)),
}, ("apiVersion", "kind", "metadata", "spec"))
PROMETHEUS_RULE = _closed({
    "apiVersion": {"const": API_VERSION}, "kind": {"const": "PrometheusRule"},
    "metadata": _METADATA,
    "spec": _closed({"groups": {"type": "array", "items": _closed({
        "name": {"type": "string", "minLength": 1},
        "rules": {"type": "array", "items": _closed({
            "record": {"type": "string"}, "alert": {"type": "string"},
            "expr": {"type": "string"},
            "for": {"type": "string", "pattern": _DURATION},
            "keep_firing_for": {"type": "string", "minLength": 1, "pattern": _DURATION},
            "labels": _STRINGS, "annotations": _STRINGS}, ("expr",))},
    }, ("name",))}}),
}, ("apiVersion", "kind", "metadata", "spec"))
