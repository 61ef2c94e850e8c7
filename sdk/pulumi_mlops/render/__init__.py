"""Render Pulumi programs under the mock runtime: the recording harness, the manifest writer,
and plans (`mlops plan`) with their diff (`mlops diff`)."""

from pulumi_mlops.render.diff import StackPlanDiff, diff_stack_plans
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
from pulumi_mlops.render.stack_plan import (
    PlanFormatError,
    build_stack_plan,
    dump_stack_plan,
    load_stack_plan,
    plan_stack,
)

__all__ = [
    "PlanFormatError",
    "ProgramConfigError",
    "RecordedResource",
    "Recording",
    "SecretOutput",
    "StackPlanDiff",
    "build_stack_plan",
    "diff_stack_plans",
    "dump_stack_plan",
    "format_markdown",
    "format_text",
    "load_secure_config",
    "load_stack_plan",
    "manifests",
    "plan_stack",
    "record",
    "record_program",
    "redact",
    "unwrap_secrets",
    "write_render",
]
