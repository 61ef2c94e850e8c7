"""Docs pages stay true to the code: every input table generated from its args model, links
resolve, figures match, the README opens with a program that runs.

The Python examples of docs/model-service.md are executed (and their manifests checked) by
tests/render; its stack-config example by tests/unit/test_stack_config.py; every Python example
of the README and docs/ is planned by tests/unit/test_documented_programs.py.
"""

from __future__ import annotations

import importlib.util
import re
import sys
from enum import StrEnum
from pathlib import Path
from types import ModuleType
from typing import Annotated

import pytest
from pydantic import BaseModel, Field

from pulumi_mlops.plans.service import Autoscaling, pod_lifecycle

REPO = Path(__file__).resolve().parents[2]
DOCS = REPO / "docs"
SERVICE_DOC = DOCS / "model-service.md"
COMPONENT_PAGES = ["model-registry.md", "model-service.md", "monitoring-stack.md",
                   "retrain-schedule.md", "runtime-image.md"]


def _docs_tables() -> ModuleType:
    path = REPO / "scripts" / "docs_tables.py"
    spec = importlib.util.spec_from_file_location("docs_tables", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


docs_tables = _docs_tables()


def test_every_component_page_has_a_generated_inputs_table() -> None:
    assert sorted(docs_tables.PAGES) == COMPONENT_PAGES


@pytest.mark.parametrize("page", COMPONENT_PAGES)
def test_the_inputs_table_is_the_one_generated_from_the_args_model(page: str) -> None:
    difference = docs_tables.first_difference(page)

    if difference is not None:
        pytest.fail(f"docs/{page}: the Inputs table differs from the one generated from "
                    f"{docs_tables.PAGES[page].__name__} ({difference}). Run `make docs`.",
                    pytrace=False)


class _Colour(StrEnum):
    RED = "red"
    BLUE = "blue"


class _Toy(BaseModel):
    """Inputs of a toy.

    Attributes:
        size: How big, in ``units``. Default: 3.
        colour: Its colour. Default: red.
        tags: Labels | kept as given.
            Default: none.
        names: Who owns it. Default: nobody.
    """

    size: Annotated[int, Field(ge=1, le=9)] = 3
    colour: _Colour = _Colour.RED
    tags: list[str] = Field(default_factory=list)
    names: list[str] = Field(default_factory=lambda: ["a", "b"])
    required: str


def test_a_generated_row_holds_the_name_type_default_and_docstring_text() -> None:
    rows = docs_tables.table(_Toy)[3:]

    assert rows == [
        "| `size` | `int`: 1\N{EN DASH}9 | `3` | How big, in `units`. Default: 3. |",
        "| `colour` | `_Colour`: one of `RED`, `BLUE` | `_Colour.RED` | Its colour. "
        "Default: red. |",
        "| `tags` | `list[str]` | `[]` | Labels \\| kept as given. Default: none. |",
        '| `names` | `list[str]` | `["a", "b"]` | Who owns it. Default: nobody. |',
        "| `required` | `str` | required |  |",
    ]
    assert docs_tables.gaps(_Toy) == ["`required`: not in the `Attributes:` section"]


def test_every_model_service_sub_input_is_documented() -> None:
    doc = SERVICE_DOC.read_text()

    for name in Autoscaling.model_fields:
        assert f"`{name}`" in doc


def test_no_doc_implies_an_image_the_project_does_not_build() -> None:
    for page in [REPO / "README.md", *sorted(DOCS.glob("*.md"))]:
        assert "ghcr.io/pulumi-mlops" not in page.read_text(), page.name


def test_the_documented_lifecycle_is_the_code_lifecycle() -> None:
    doc = SERVICE_DOC.read_text()
    pre_stop, grace = pod_lifecycle()

    assert f"`terminationGracePeriodSeconds` is {grace}" in doc
    assert f"`preStop` sleep of {pre_stop} s" in doc


@pytest.mark.parametrize("page", [REPO / "README.md", *sorted(DOCS.glob("*.md"))],
                         ids=lambda p: p.name)
def test_relative_links_in_docs_resolve(page: Path) -> None:
    for target in re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", page.read_text()):
        assert (page.parent / target).exists(), f"{page.name} links to missing {target}"


def test_the_retrain_schedule_page_says_how_to_run_a_job_now() -> None:
    doc = (DOCS / "retrain-schedule.md").read_text()

    assert "kubectl -n <namespace> create job --from=cronjob/<name>-retrain" in doc


def test_the_readme_opens_with_a_program_then_the_two_commands_then_the_docs() -> None:
    readme = (REPO / "README.md").read_text()

    program = readme.index("```python")
    commands = readme.index("make up ")
    links = [readme.index(f"(docs/{page})") for page in COMPONENT_PAGES]
    assert program < commands < min(links)
    assert readme.index("\n## ") > program  # the program comes before the first section


def test_the_readme_program_declares_a_registry_and_a_service_in_a_few_lines() -> None:
    from pulumi_mlops.render import record

    readme = (REPO / "README.md").read_text()
    source = re.findall(r"```python\n(.*?)```", readme, re.S)[0]
    assert len(source.splitlines()) <= 12

    def program() -> None:
        exec(compile(source, "README.md", "exec"), {"__name__": "readme"})

    recording = record(program)
    kinds = [r.type for r in recording.resources if r.type.startswith("mlops:index:")]
    # The service's own registry user is the registry's child.
    assert sorted(kinds) == ["mlops:index:ModelRegistry", "mlops:index:ModelService",
                             "mlops:index:RegistryGrant"]
    assert recording.get("kubernetes:apps/v1:Deployment", "fraud")
