"""Render Pulumi programs under the mock runtime: the recording harness, the manifest writer,
and plans (`mlops plan`) with their diff (`mlops diff`)."""

from pulumi_mlops.render.diff import PlanDiff, diff_plans
from pulumi_mlops.render.diff_format import format_markdown, format_text
from pulumi_mlops.render.harness import (
    ProgramConfigError,
    RecordedResource,
    Recording,
    SecretOutput,
    load_secure_config,
    record,
    record_program,
    unwrap_secrets,
)
from pulumi_mlops.render.manifests import manifests, redact, write_render
from pulumi_mlops.render.plan import (
    PlanFormatError,
    build_plan,
    dump_plan,
    load_plan,
    plan_program,
)

__all__ = [
    "PlanDiff",
    "PlanFormatError",
    "ProgramConfigError",
    "RecordedResource",
    "Recording",
    "SecretOutput",
    "build_plan",
    "diff_plans",
    "dump_plan",
    "format_markdown",
    "format_text",
    "load_plan",
    "load_secure_config",
    "manifests",
    "plan_program",
    "record",
    "record_program",
    "redact",
    "unwrap_secrets",
    "write_render",
]
