"""Render Pulumi programs under the mock runtime: the recording harness and manifest writer."""

from pulumi_mlops.render.harness import (
    ProgramConfigError,
    RecordedResource,
    Recording,
    record,
    record_program,
    unwrap_secrets,
)
from pulumi_mlops.render.manifests import manifests, redact, write_render

__all__ = [
    "ProgramConfigError",
    "RecordedResource",
    "Recording",
    "manifests",
    "record",
    "record_program",
    "redact",
    "unwrap_secrets",
    "write_render",
]
