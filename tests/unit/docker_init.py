"""What a Docker init container writes, read from its recorded inputs."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pulumi_mlops.policy.resources import docker_init_files
from pulumi_mlops.render import unwrap_secrets


def init_files(inputs: Mapping[str, Any]) -> dict[str, str]:
    """Config file path → content, for a recorded init container's inputs (secrets unwrapped)."""
    return docker_init_files(unwrap_secrets(dict(inputs)))
