"""Alert routing of a standalone MonitoringStack: an Alertmanager of its own, sending ``page``
alerts to one receiver and ``ticket`` alerts to another (the generated alerts carry a
``severity`` label of either value).

Receivers' URLs and passwords are secrets (a webhook or Slack URL carries its token), so the
whole Alertmanager configuration is secret data: `alertmanager_config` renders it from the
secret values when they are known (at deployment), and the container reads it from a Secret
(Kubernetes) or a secret file written by its init container (Docker). No ``*_file`` option is
needed, so any Alertmanager since 0.22 reads it (``url_file`` of webhooks came later).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any

import yaml
from pydantic import Field, field_validator, model_validator

from pulumi_mlops._validation import ArgsModel, Secret, check_secret_input
from pulumi_mlops.errors import InputError
from pulumi_mlops.plans.workload import ConfigFile, HttpCheck, Mount, SecretRef, Workload

__all__ = [
    "ALERTMANAGER_CONFIG",
    "ALERTMANAGER_CONFIG_KEY",
    "ALERTMANAGER_DATA",
    "Alertmanager",
    "Receiver",
    "alertmanager_config",
    "alertmanager_workload",
    "secret_fields",
]

_DURATION = r"^[0-9]+(ms|s|m|h|d)$"
ALERTMANAGER_CONFIG = "/etc/mlops-alertmanager/alertmanager.yml"
ALERTMANAGER_CONFIG_KEY = "alertmanager.yml"
"""The key of the rendered configuration in the Alertmanager workload's secret data."""
ALERTMANAGER_DATA = "/var/lib/mlops-alertmanager"
"""Silences and the notification log (not the image's own directory, for the reason
`~pulumi_mlops.plans.monitoring.PROMETHEUS_DATA` gives)."""
_KINDS = ("webhook", "slack", "email")


def _no_check(_: str) -> None:
    """Any text: a URL or password is the receiver's to judge."""


class Receiver(ArgsModel):
    """Where alerts of one severity go; build it with a factory method.

    Attributes:
        kind: ``webhook``, ``slack`` or ``email``.
        url: webhook: the URL alerts are POSTed to (Alertmanager's JSON); slack: the incoming
            webhook URL. A secret.
        channel: slack: the channel. Default: the webhook's own.
        to: email: the address alerts go to.
        from_address: email: the sender address.
        smarthost: email: the SMTP server, ``host:port``.
        username: email: the SMTP user. Default: none (no authentication).
        password: email: the SMTP password, a secret.
    """

    kind: str
    url: Secret[Any] = None
    channel: str | None = None
    to: str | None = None
    from_address: str | None = None
    smarthost: Annotated[str, Field(pattern=r"^[A-Za-z0-9.-]+:[0-9]{1,5}$")] | None = None
    username: str | None = None
    password: Secret[Any] = None

    @classmethod
    def webhook(cls, url: Any) -> Receiver:
        """POST alerts (Alertmanager's webhook JSON) to ``url``."""
        return cls(kind="webhook", url=url)

    @classmethod
    def slack(cls, url: Any, channel: str | None = None) -> Receiver:
        """Post alerts to Slack through an incoming webhook ``url``."""
        return cls(kind="slack", url=url, channel=channel)

    @classmethod
    def email(cls, to: str, from_address: str, smarthost: str, username: str | None = None,
              password: Any = None) -> Receiver:
        """Mail alerts to ``to`` through ``smarthost`` (STARTTLS required)."""
        return cls(kind="email", to=to, from_address=from_address, smarthost=smarthost,
                   username=username, password=password)

    @field_validator("url", "password")
    @classmethod
    def _text(cls, value: Any) -> Any:
        return check_secret_input(value, _no_check)

    @model_validator(mode="after")
    def _complete(self) -> Receiver:
        if self.kind not in _KINDS:
            raise InputError("must be `webhook`, `slack` or `email`",
                             "build it with Receiver.webhook(), .slack() or .email().",
                             field="kind")
        needed = {"webhook": ("url",), "slack": ("url",),
                  "email": ("to", "from_address", "smarthost")}[self.kind]
        for name in needed:
            if getattr(self, name) is None:
                raise InputError(f"is required by a {self.kind} receiver",
                                 f"give `{name}`.", field=name)
        if self.kind == "email" and (self.username is None) != (self.password is None):
            raise InputError("needs both `username` and `password`, or neither",
                             "give the SMTP user with its password.", field="password",
                             related=("username",))
        return self


class Alertmanager(ArgsModel):
    """An Alertmanager of the MonitoringStack's own, routing by severity.

    Attributes:
        page: Where ``severity="page"`` alerts go (someone acts now).
        ticket: Where ``severity="ticket"`` alerts go. Default: the `page` receiver.
        image: The Alertmanager image, pinned. Default: ``prom/alertmanager:v0.27.0``.
        port: The port it serves on. Default: 9093.
        group_wait: How long the first alert of a group waits for others. Default: ``30s``.
        group_interval: How long before a group's new alerts are sent. Default: ``5m``.
        repeat_interval: How often a firing alert is sent again. Default: ``4h``.
        egress_ports: Kubernetes: the TCP ports it may connect out to, anywhere (the
            receivers' URLs are secrets, unknown at plan time). Default: 443, 465 and 587
            (HTTPS, SMTPS, submission); add a webhook's own port.
    """

    page: Receiver
    ticket: Receiver | None = None
    image: str = "prom/alertmanager:v0.27.0"
    port: Annotated[int, Field(ge=1, le=65535)] = 9093
    group_wait: Annotated[str, Field(pattern=_DURATION)] = "30s"
    group_interval: Annotated[str, Field(pattern=_DURATION)] = "5m"
    repeat_interval: Annotated[str, Field(pattern=_DURATION)] = "4h"
    egress_ports: tuple[Annotated[int, Field(ge=1, le=65535)], ...] = (443, 465, 587)


def _receivers(alerting: Alertmanager) -> dict[str, Receiver]:
    return {"page": alerting.page, "ticket": alerting.ticket or alerting.page}


def secret_fields(alerting: Alertmanager) -> dict[str, Any]:
    """The receivers' secret inputs, by the key `alertmanager_config` reads them under
    (``page.url``, ``ticket.password`` ...)."""
    return {f"{severity}.{name}": value
            for severity, receiver in _receivers(alerting).items()
            for name in ("url", "password")
            if (value := getattr(receiver, name)) is not None}


def _receiver_config(receiver: Receiver, secrets: Mapping[str, str],
                     severity: str) -> dict[str, Any]:
    send_resolved = {"send_resolved": True}
    if receiver.kind == "webhook":
        return {"webhook_configs": [{"url": secrets[f"{severity}.url"], **send_resolved}]}
    if receiver.kind == "slack":
        slack = {"api_url": secrets[f"{severity}.url"], **send_resolved}
        if receiver.channel is not None:
            slack["channel"] = receiver.channel
        return {"slack_configs": [slack]}
    email: dict[str, Any] = {"to": receiver.to, "from": receiver.from_address,
                             "smarthost": receiver.smarthost, "require_tls": True,
                             **send_resolved}
    if receiver.username is not None:
        email |= {"auth_username": receiver.username,
                  "auth_password": secrets[f"{severity}.password"]}
    return {"email_configs": [email]}


def alertmanager_config(alerting: Alertmanager, secrets: Mapping[str, str]) -> str:
    """Alertmanager's configuration: ``page`` alerts to the page receiver, everything else to
    the ticket one, grouped by alert and service, a service's page silencing its tickets;
    ``secrets`` are the values of `secret_fields`."""
    receivers = _receivers(alerting)
    config = {
        "route": {
            "receiver": "ticket",
            "group_by": ["alertname", "service", "registry", "schedule", "cronjob"],
            "group_wait": alerting.group_wait,
            "group_interval": alerting.group_interval,
            "repeat_interval": alerting.repeat_interval,
            "routes": [{"matchers": ['severity="page"'], "receiver": "page"}],
        },
        # A page of a service silences its tickets (its drift or replica tickets while it is
        # down, the ticket burn rate while the page one fires).
        "inhibit_rules": [{"source_matchers": ['severity="page"', 'service=~".+"'],
                           "target_matchers": ['severity="ticket"'],
                           "equal": ["service"]}],
        "receivers": [{"name": severity, **_receiver_config(r, secrets, severity)}
                      for severity, r in receivers.items()],
    }
    return yaml.safe_dump(config, sort_keys=False)


def alertmanager_workload(name: str, alerting: Alertmanager) -> Workload:
    """The Alertmanager: command line, its (secret) configuration file, data volume."""
    return Workload(
        name=f"{name}-alertmanager",
        image=alerting.image,
        command=("alertmanager", f"--config.file={ALERTMANAGER_CONFIG}",
                 f"--storage.path={ALERTMANAGER_DATA}",
                 f"--web.listen-address=0.0.0.0:{alerting.port}",
                 # One replica: no gossip with peers.
                 "--cluster.listen-address="),
        env={},
        port=alerting.port,
        health=HttpCheck.wget("/-/ready", alerting.port),
        files=(ConfigFile(ALERTMANAGER_CONFIG, SecretRef(ALERTMANAGER_CONFIG_KEY)),),
        mounts=(Mount("data", ALERTMANAGER_DATA, "data", "1Gi"),),
        startup_seconds=60,
    )
