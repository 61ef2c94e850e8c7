"""Grafana of a standalone MonitoringStack: the generated dashboards and the stack's Prometheus
as its data source, provisioned from files (Grafana's file provisioning, ``apiVersion: 1``), its
admin password a secret read from a file (Grafana's ``__FILE`` environment variables).

In operator mode kube-prometheus-stack's Grafana loads the dashboards from ConfigMaps instead.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Annotated, Any

import yaml
from pydantic import Field, field_validator

from pulumi_mlops._validation import ArgsModel, Secret, check_secret_input
from pulumi_mlops.errors import InputError
from pulumi_mlops.plans.workload import ConfigFile, HttpCheck, Mount, SecretRef, Workload

__all__ = [
    "DATASOURCE_UID",
    "GRAFANA_ADMIN_PASSWORD",
    "GRAFANA_DASHBOARDS",
    "GRAFANA_PROVISIONING",
    "Grafana",
    "grafana_workload",
]

GRAFANA_PROVISIONING = "/etc/mlops-grafana/provisioning"
GRAFANA_DASHBOARDS = "/etc/mlops-grafana/dashboards"
_PASSWORD_FILE = "/etc/mlops-grafana/secrets/admin-password"
_DATA = "/var/lib/mlops-grafana"
GRAFANA_ADMIN_PASSWORD = "grafana-admin-password"
"""The key of the admin password in the Grafana workload's secret data."""
DATASOURCE_UID = "mlops-prometheus"
"""The provisioned Prometheus data source (the default one, which the dashboards'
``$datasource`` variable starts on)."""


def _password(value: str) -> None:
    if len(value) < 12:
        raise InputError("must be at least 12 characters", "use a longer password, or leave "
                         "it unset to have one generated.")


class Grafana(ArgsModel):
    """A Grafana of the MonitoringStack's own (standalone Prometheus only).

    Attributes:
        image: The Grafana image, pinned. Default: ``grafana/grafana:11.6.1``.
        port: The port it serves on. Default: 3000.
        admin_user: The admin's login. Default: ``admin``.
        admin_password: The admin's password, a secret of at least 12 characters. Default:
            generated (the component's ``grafana_admin_password`` output).
        storage_size: Its data volume (users, preferences; the dashboards are provisioned).
            Default: ``1Gi``.
    """

    image: str = "grafana/grafana:11.6.1"
    port: Annotated[int, Field(ge=1, le=65535)] = 3000
    admin_user: Annotated[str, Field(pattern=r"^[A-Za-z][A-Za-z0-9_.-]{1,63}$")] = "admin"
    admin_password: Secret[Any] = None
    storage_size: str = "1Gi"

    @field_validator("admin_password")
    @classmethod
    def _admin_password(cls, value: Any) -> Any:
        return check_secret_input(value, _password)


def grafana_workload(name: str, grafana: Grafana, prometheus_url: str,
                     dashboards: Mapping[str, dict[str, Any]]) -> Workload:
    """Grafana: its image's own start script, configured by environment (no sign-up, no
    anonymous access, no phoning home), the data source and dashboards provisioned, the
    admin password from a secret file."""
    datasources = {"apiVersion": 1, "datasources": [{
        "name": "Prometheus", "type": "prometheus", "uid": DATASOURCE_UID, "access": "proxy",
        "url": prometheus_url, "isDefault": True, "editable": False}]}
    providers = {"apiVersion": 1, "providers": [{
        "name": "mlops", "type": "file", "disableDeletion": True, "allowUiUpdates": False,
        "options": {"path": GRAFANA_DASHBOARDS}}]}
    return Workload(
        name=f"{name}-grafana",
        image=grafana.image,
        command=("/run.sh",),
        env={
            "GF_SERVER_HTTP_PORT": str(grafana.port),
            "GF_PATHS_PROVISIONING": GRAFANA_PROVISIONING,
            "GF_PATHS_DATA": _DATA,
            "GF_PATHS_LOGS": f"{_DATA}/log",
            "GF_PATHS_PLUGINS": f"{_DATA}/plugins",
            "GF_SECURITY_ADMIN_USER": grafana.admin_user,
            "GF_SECURITY_ADMIN_PASSWORD__FILE": _PASSWORD_FILE,
            "GF_SECURITY_DISABLE_GRAVATAR": "true",
            "GF_USERS_ALLOW_SIGN_UP": "false",
            "GF_AUTH_ANONYMOUS_ENABLED": "false",
            "GF_ANALYTICS_REPORTING_ENABLED": "false",
            "GF_ANALYTICS_CHECK_FOR_UPDATES": "false",
            "GF_ANALYTICS_CHECK_FOR_PLUGIN_UPDATES": "false",
            "GF_NEWS_NEWS_FEED_ENABLED": "false",
        },
        port=grafana.port,
        health=HttpCheck.wget("/api/health", grafana.port),
        files=(
            # Names unique across directories: a ConfigMap keys its files by name.
            ConfigFile(f"{GRAFANA_PROVISIONING}/datasources/mlops-datasources.yaml",
                       yaml.safe_dump(datasources, sort_keys=False)),
            ConfigFile(f"{GRAFANA_PROVISIONING}/dashboards/mlops-dashboards.yaml",
                       yaml.safe_dump(providers, sort_keys=False)),
            *(ConfigFile(f"{GRAFANA_DASHBOARDS}/{uid}.json", json.dumps(doc, sort_keys=True))
              for uid, doc in sorted(dashboards.items())),
            ConfigFile(_PASSWORD_FILE, SecretRef(GRAFANA_ADMIN_PASSWORD)),
        ),
        mounts=(Mount("data", _DATA, "data", grafana.storage_size),
                Mount("tmp", "/tmp", "scratch", "64Mi")),
        startup_seconds=120,
    )
