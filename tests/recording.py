"""Helpers for tests that record programs under Pulumi's mocks."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pulumi.runtime import rpc

import pulumi_mlops as mlops
from pulumi_mlops.render import Recording, record

RUNTIME_IMAGE = "registry.example.com/ml/mlops-runtime:0.1.0"
"""The runtime image tests pass as ``image=`` (components imply none)."""


def failing(build: Callable[[], object]) -> tuple[mlops.ValidationError, Recording]:
    """The ValidationError ``build`` raised under the mock engine, and what was declared."""
    caught: list[mlops.ValidationError] = []

    def program() -> None:
        try:
            build()
        except mlops.ValidationError as err:
            caught.append(err)

    rec = record(program)
    assert caught, "no ValidationError raised"
    return caught[0], rec


def secret_values(recording: Recording) -> set[str]:
    """Every string that travelled as a Pulumi secret (inputs and stack outputs), long enough
    to be meaningful."""
    found: set[str] = set()

    def walk(value: Any, secret: bool) -> None:
        if rpc.is_rpc_secret(value):
            walk(rpc.unwrap_rpc_secret(value), True)
        elif isinstance(value, dict):
            for v in value.values():
                walk(v, secret)
        elif isinstance(value, list):
            for v in value:
                walk(v, secret)
        elif secret and isinstance(value, str) and len(value) >= 8:
            found.add(value)

    for resource in recording.resources:
        walk(dict(resource.inputs), False)
    walk(recording.outputs, False)
    return found


def external_egress(*ports: int, cidrs: tuple[str, ...] = ()) -> dict[str, Any]:
    """A NetworkPolicy egress rule to an endpoint outside the cluster, as recorded: to
    ``cidrs``, or anywhere but the link-local ranges (cloud metadata) when none is declared."""
    to = ([{"ipBlock": {"cidr": c}} for c in cidrs] if cidrs else
          [{"ipBlock": {"cidr": "0.0.0.0/0", "except": ["169.254.0.0/16"]}},
           {"ipBlock": {"cidr": "::/0", "except": ["fe80::/10", "fd00:ec2::254/128"]}}])
    return {"to": to, "ports": [{"protocol": "TCP", "port": p} for p in ports]}
