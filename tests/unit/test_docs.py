"""Docs pages stay true to the code: every input documented, links resolve, figures match.

The Python examples of docs/model-service.md are executed (and their manifests checked) by
tests/render; its stack-config example by tests/unit/test_stack_config.py.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from pulumi_mlops.components.service import (
    DEFAULT_RUNTIME_IMAGE,
    Autoscaling,
    ModelServiceArgs,
    pod_lifecycle,
)

REPO = Path(__file__).resolve().parents[2]
DOCS = REPO / "docs"
SERVICE_DOC = DOCS / "model-service.md"


def _table_inputs(doc: str, heading: str) -> set[str]:
    """The first-column names of the table under ``heading``."""
    section = doc.split(heading, 1)[1].split("\n## ", 1)[0]
    return set(re.findall(r"^\| `([a-z_]+)` \|", section, re.M))


def test_every_model_service_input_is_documented_with_its_default() -> None:
    doc = SERVICE_DOC.read_text()

    assert _table_inputs(doc, "## Inputs (`ModelServiceArgs`)") == set(
        ModelServiceArgs.model_fields)
    for name in Autoscaling.model_fields:
        assert f"`{name}`" in doc


def test_the_documented_defaults_are_the_code_defaults() -> None:
    doc = SERVICE_DOC.read_text()
    pre_stop, grace = pod_lifecycle()

    assert DEFAULT_RUNTIME_IMAGE.rsplit(":", 1)[0] in doc
    assert f"`terminationGracePeriodSeconds` is {grace}" in doc
    assert f"`preStop` sleep of {pre_stop} s" in doc
    fields = ModelServiceArgs.model_fields
    for name, shown in [("port", "8080"), ("scratch_size", "`2Gi`"),
                        ("model_load_timeout", "300 seconds"),
                        ("monitoring_namespace", "`monitoring`")]:
        assert str(fields[name].default) in shown
        row = next(line for line in doc.splitlines() if line.startswith(f"| `{name}` |"))
        assert shown in row


@pytest.mark.parametrize("page", sorted(DOCS.glob("*.md")), ids=lambda p: p.name)
def test_relative_links_in_docs_resolve(page: Path) -> None:
    for target in re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", page.read_text()):
        assert (page.parent / target).exists(), f"{page.name} links to missing {target}"


def test_every_retrain_schedule_input_is_documented() -> None:
    from pulumi_mlops.components.retrain import RetrainScheduleArgs

    doc = (DOCS / "retrain-schedule.md").read_text()

    assert _table_inputs(doc, "## Inputs (`RetrainScheduleArgs`)") == set(
        RetrainScheduleArgs.model_fields)
    assert "kubectl -n <namespace> create job --from=cronjob/<name>-retrain" in doc


def test_the_readme_python_examples_run_as_one_program() -> None:
    """The README's Python blocks build on each other (the first declares `k8s`, `registry`)."""
    from pulumi_mlops.render import record

    readme = (REPO / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", readme, re.S)
    assert len(blocks) >= 3
    source = "\n".join(blocks)

    def program() -> None:
        exec(compile(source, "README.md", "exec"), {"__name__": "readme"})

    recording = record(program)
    kinds = {r.type for r in recording.resources}
    assert {"mlops:index:ModelRegistry", "mlops:index:ModelService",
            "mlops:index:RetrainSchedule"} <= kinds
    assert recording.get("kubernetes:batch/v1:CronJob", "fraud-nightly-retrain")
    assert recording.get("kubernetes:apps/v1:Deployment", "fraud-canary")
